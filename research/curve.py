"""Val-loss curves of run directories: each evaluation's (step, train, val), the first
crossing of a target (linear between the evaluations around it) and the best val.

    python research/curve.py RUN_DIR... [--target 1.47] [--all]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def curve(run: Path) -> list[tuple[int, float, float]]:
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "val_loss" in r:
            rows.append((r["step"], r["train_loss"], r["val_loss"]))
    return rows


def crossing(rows, target: float):
    for i, (step, _, val) in enumerate(rows):
        if val <= target:
            if i == 0:
                return float(step)
            s0, _, v0 = rows[i - 1]
            return s0 + (v0 - target) / (v0 - val) * (step - s0)
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--target", type=float, default=1.47)
    ap.add_argument("--all", action="store_true", help="print every evaluation")
    args = ap.parse_args()
    for run in args.runs:
        try:
            rows = curve(run)
        except FileNotFoundError:
            print(f"{run}: no metrics")
            continue
        if not rows:
            print(f"{run}: no evaluation yet")
            continue
        hit = crossing(rows, args.target)
        best = min(rows, key=lambda r: r[2])
        last = rows[-1]
        print(f"{run.name}: steps to {args.target}: "
              f"{'-' if hit is None else f'{hit:.0f}'}; best val {best[2]:.4f} at {best[0]}; "
              f"last {last[0]}: train {last[1]:.4f} val {last[2]:.4f}")
        if args.all:
            print("   " + " ".join(f"{s}:{v:.3f}" for s, _, v in rows))


if __name__ == "__main__":
    main()
