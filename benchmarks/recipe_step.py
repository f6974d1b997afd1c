"""What each gpt-recipe change costs per training step, timed alternately in one process.

    python benchmarks/recipe_step.py [--json] [--preset NAME] [--rounds 8] [--steps 5]
                                     [--threads N]

For the preset (shakespeare-transformer-cpu-gpt2 unless --preset) and every variant of the
gpt-recipe experiment (dlf.experiments.recipe_variants: the baseline, each change alone,
all together), the trainer's own step (dlf.engine.steps.AutogradStep: forward, backward,
clip, the optimizer) on random tokens, with each variant's plan as `dlf train` makes it.
Each round runs --steps steps of every variant back to back and each variant keeps its
best round, so a busy machine slows them alike; the ratio to the baseline is what an
equal-time comparison pays per step.

A second table times Muon's optimizer step alone (the momentum, Newton-Schulz and update
of every hidden matrix, AdamW for the rest) with the Newton-Schulz iteration in fp32 and
in bf16, against AdamW's step on the same model: the figures behind the plan's choice of
train.muon_ns_dtype on a CPU.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from dlf import config as C
from dlf import presets
from dlf.bench import machine
from dlf.engine.plan import plan_run
from dlf.engine.steps import AutogradStep, make_optimizer
from dlf.experiments import recipe_variants
from dlf.models import build_model


def planned(preset: str, overrides: list[str], threads: int):
    cfg = C.apply_overrides(presets.load_preset(preset), overrides)
    cfg.train.threads = threads
    plan, _ = plan_run(cfg)
    torch.manual_seed(0)
    return plan, build_model(plan.cfg.model)


def best_rounds(fns: dict, rounds: int, steps: int) -> dict[str, float]:
    """Best seconds per call of each function over `rounds` rounds of `steps` calls."""
    for fn in fns.values():  # warm-up: allocations, kernel selection
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / steps)
    return best


def step_times(preset: str, rounds: int, steps: int, threads: int) -> list[dict]:
    fns, labels = {}, {}
    for variant, (label, overrides) in recipe_variants().items():
        plan, model = planned(preset, overrides, threads)
        t = plan.cfg.train
        V, B, T = plan.cfg.model.vocab_size, t.batch_size, plan.cfg.model.block_size
        x = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(0))
        batch = (x, x, x.numel())
        step = AutogradStep(model, t, plan.device)
        model.train()
        fns[variant] = lambda step=step, batch=batch, lr=t.lr: step(lambda: batch, lr)
        labels[variant] = label
    best = best_rounds(fns, rounds, steps)
    return [{"variant": v, "label": labels[v], "ms_per_step": 1e3 * s,
             "vs_baseline": s / best["baseline"]} for v, s in best.items()]


def optimizer_times(preset: str, rounds: int, steps: int, threads: int) -> list[dict]:
    cases = {"adamw": [], "muon, fp32 Newton-Schulz": ["train.optimizer=muon",
                                                       "train.muon_ns_dtype=fp32"],
             "muon, bf16 Newton-Schulz": ["train.optimizer=muon", "train.muon_ns_dtype=bf16"]}
    fns = {}
    for name, overrides in cases.items():
        plan, model = planned(preset, ["train.momentum=0.95", *overrides], threads)
        if not overrides:
            plan, model = planned(preset, [], threads)
        opt = make_optimizer(model, plan.cfg.train)
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g) * 1e-3
        fns[name] = opt.step
    best = best_rounds(fns, rounds, steps)
    return [{"optimizer": k, "ms_per_step": 1e3 * s, "vs_adamw": s / best["adamw"]}
            for k, s in best.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="shakespeare-transformer-cpu-gpt2")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="0: torch's default")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    out = {"preset": args.preset, "threads": threads, "machine": machine(),
           "steps": step_times(args.preset, args.rounds, args.steps, threads),
           "optimizer": optimizer_times(args.preset, args.rounds, args.steps, threads)}
    if args.json:
        print(json.dumps(out))
        return
    m = out["machine"]
    print(f"{args.preset}, {threads} thread(s), {m['cpu']}, torch {m['torch']}; best of "
          f"{args.rounds} rounds of {args.steps} steps")
    print(f"\n{'variant':<28} {'ms/step':>8} {'vs baseline':>12}")
    for r in out["steps"]:
        print(f"{r['variant']:<28} {r['ms_per_step']:8.1f} {r['vs_baseline']:11.2f}x")
    print(f"\n{'optimizer step alone':<28} {'ms/step':>8} {'vs adamw':>12}")
    for r in out["optimizer"]:
        print(f"{r['optimizer']:<28} {r['ms_per_step']:8.1f} {r['vs_adamw']:11.2f}x")


if __name__ == "__main__":
    main()
