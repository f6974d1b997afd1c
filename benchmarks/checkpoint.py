"""What train.checkpoint_interval costs and saves, per preset: the seconds of one training
step, the seconds of one checkpoint write (state.safetensors, atomic: temporary file,
fsync, rename), and for an interval of N steps the work a kill or a restart loses at most
(N steps) and the share of the time spent writing checkpoints.

    python benchmarks/checkpoint.py [--json] [--interval N] [--steps 5] [--repeat 3]
                                    [PRESET ...]

Each preset is planned as `dlf train` plans it (its "auto" settings resolved for this
machine) and trained on its own data in this process, a few steps after one warm-up
step; the checkpoint is the trainer's own (Checkpointer), written --repeat times into a
temporary directory beside the runs (runs/) and the best time kept. Default presets:
every trained preset (the count bigram is fitted in one pass and has no steps).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from dlf import config as C
from dlf import presets
from dlf.bench import machine
from dlf.engine.batches import Batches
from dlf.engine.checkpoint import STATE_FILE, Checkpointer
from dlf.engine.plan import plan_run, regime_of
from dlf.engine.state import TrainState
from dlf.engine.steps import STEPS
from dlf.models import build_model


def measure(preset: str, interval: int, steps: int, repeat: int, where: Path) -> dict:
    cfg = presets.load_preset(preset)
    cfg.train.device = "cpu"
    plan, data = plan_run(cfg)
    t = plan.cfg.train
    torch.manual_seed(t.seed)
    model = build_model(plan.cfg.model)
    step_fn = STEPS[plan.regime](model, t, plan.device)
    batches = Batches(data.train, t.batch_size, t.seed, plan.device)
    model.train()
    step_fn(batches.next, t.lr)  # warm-up; also creates the optimizer's moments
    t0 = time.perf_counter()
    for _ in range(steps):
        step_fn(batches.next, t.lr)
    step_seconds = (time.perf_counter() - t0) / steps

    with tempfile.TemporaryDirectory(dir=where, prefix="dlf-checkpoint-bench-") as d:
        checkpoints = Checkpointer(Path(d), model, step_fn, batches, plan.device)
        write_seconds = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            checkpoints.save(TrainState(step=1))
            write_seconds = min(write_seconds, time.perf_counter() - t0)
        size = (Path(d) / STATE_FILE).stat().st_size
    return {"preset": preset, "parameters": model.num_parameters(), "state_bytes": size,
            "step_seconds": step_seconds, "write_seconds": write_seconds,
            "interval": interval, "lost_seconds": interval * step_seconds,
            "overhead": write_seconds / (interval * step_seconds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("presets", nargs="*", metavar="PRESET")
    ap.add_argument("--interval", type=int, default=C.TrainConfig().checkpoint_interval,
                    help="checkpoint_interval to evaluate (default: the config's default)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per preset")
    ap.add_argument("--repeat", type=int, default=3, help="checkpoint writes per preset")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    names = args.presets or [n for n, _ in presets.list_presets()
                             if regime_of(presets.load_preset(n).model.type) != "fitted"]
    where = Path("runs")
    where.mkdir(exist_ok=True)
    rows = [measure(n, args.interval, args.steps, args.repeat, where) for n in names]
    if args.json:
        print(json.dumps({"machine": machine(), "rows": rows}))
        return
    m = machine()
    print(f"{m['cpu']}, {m['threads']} threads, torch {m['torch']}; checkpoint every "
          f"{args.interval} steps")
    print(f"{'preset':<34} {'params':>10} {'state':>9} {'step':>9} {'write':>9} "
          f"{'lost':>8} {'overhead':>8}")
    for r in rows:
        print(f"{r['preset']:<34} {r['parameters']:>10,} {r['state_bytes'] / 2**20:>7.2f}MB "
              f"{r['step_seconds'] * 1e3:>7.1f}ms {r['write_seconds'] * 1e3:>7.1f}ms "
              f"{r['lost_seconds']:>7.1f}s {r['overhead']:>8.1%}")


if __name__ == "__main__":
    main()
