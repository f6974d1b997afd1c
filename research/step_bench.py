"""Seconds per training step of several variants, timed alternately in one process.

    python research/step_bench.py VARIANTS.json [--rounds 4] [--steps 3] [--threads N]

VARIANTS.json maps a name to [preset or toml, [overrides...]]. Each variant's plan is made
as `dlf train` makes it (dlf.engine.plan.plan_run) and its step is the trainer's own
(dlf.engine.steps.AutogradStep) on random tokens. Each round runs --steps steps of every
variant back to back and each keeps its best round, so a busy machine slows them alike.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from dlf import config as C
from dlf import presets
from dlf.engine.plan import plan_run
from dlf.engine.steps import AutogradStep
from dlf.models import build_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("variants")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    threads = args.threads or torch.get_num_threads()
    variants = json.loads(open(args.variants).read())
    fns, info = {}, {}
    for name, (preset, overrides) in variants.items():
        cfg = C.apply_overrides(presets.resolve(preset), list(overrides))
        cfg.train.threads = threads
        plan, _ = plan_run(cfg)
        torch.manual_seed(0)
        model = build_model(plan.cfg.model)
        t = plan.cfg.train
        V, B, T = plan.cfg.model.vocab_size, t.batch_size, plan.cfg.model.block_size
        x = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(0))
        batch = (x, x, x.numel())
        step = AutogradStep(model, t, plan.device)
        model.train()
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        step(lambda batch=batch: batch, t.lr)  # warm-up (compiles when train.compile)
        first = time.perf_counter() - t0
        fns[name] = lambda step=step, batch=batch, lr=t.lr: step(lambda: batch, lr)
        info[name] = {"tokens": B * T, "micro_batch": t.micro_batch,
                      "attention": plan.cfg.model.attention, "first_step_s": round(first, 2),
                      "params": model.num_parameters()}
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(args.rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / args.steps)
    for name, s in best.items():
        i = info[name]
        print(json.dumps({"variant": name, "s_per_step": round(s, 4),
                          "tokens_per_s": round(i["tokens"] / s), **i, "threads": threads}))


if __name__ == "__main__":
    main()
