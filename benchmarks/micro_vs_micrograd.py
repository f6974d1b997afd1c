"""dlf.micro against the `micrograd` package: the same training, side by side, one process.

    python benchmarks/micro_vs_micrograd.py [--steps 100] [--repeats 3] [--plain-gc]

Both engines train the same 2-16-16-1 MLP (micrograd's weights are copied from dlf.micro's
seeded draw) on the same 100 moons points for the same steps, through the same loop
(`dlf.micro.moons.train`: hinge loss, L2, whole-set gradient descent). The engines take
turns, alternating which goes first, and each repeat prints both times and their ratio
(dlf.micro / micrograd: below 1 is faster). The final losses must agree (the same
arithmetic up to rounding), or the script fails.

The loop pauses Python's automatic cycle collection and collects once per step (see
`train`); `--plain-gc` trains with automatic collection on, as a plain loop does. There
micrograd pays for its closures: each refers to its own Value, so its graphs are reference
cycles that only the collector frees.

micrograd is a benchmark-only dependency: `pip install -c constraints.txt -e '.[bench]'`.
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import sys
import time

from dlf.micro.moons import DATA_SEED, INIT_SEED, SIZES, make_moons, train
from dlf.micro.nn import MLP


def micrograd_copy(model: MLP):
    """micrograd's MLP with the same architecture and the same weights as `model`."""
    from micrograd.nn import MLP as MicrogradMLP

    other = MicrogradMLP(2, SIZES)
    params, mine = other.parameters(), model.parameters()
    assert len(params) == len(mine)
    for p, q in zip(params, mine):
        p.data = q.data
    return other


def timed_training(model, X, y, steps: int, pause_gc: bool = True) -> tuple[float, float]:
    """(seconds, final loss) of `steps` steps of dlf.micro.moons.train on `model`."""
    gc.collect()  # neither engine inherits the other's garbage
    t0 = time.perf_counter()
    history = train(model, X, y, steps, pause_gc=pause_gc)
    return time.perf_counter() - t0, history[-1]["loss"]


def run(steps: int = 100, repeats: int = 3, n: int = 100, out=print,
        pause_gc: bool = True) -> dict:
    """Train both engines `repeats` times; returns the times and ratios."""
    X, y = make_moons(n, seed=DATA_SEED)
    rows = []
    for r in range(repeats):
        ours = MLP(2, SIZES, seed=INIT_SEED)
        theirs = micrograd_copy(ours)
        order = [("dlf.micro", ours), ("micrograd", theirs)]
        if r % 2:
            order.reverse()  # neither engine always runs first (caches, a neighbour's load)
        times, losses = {}, {}
        for name, model in order:
            times[name], losses[name] = timed_training(model, X, y, steps, pause_gc)
        if not math.isclose(losses["dlf.micro"], losses["micrograd"], rel_tol=1e-6,
                            abs_tol=1e-9):
            raise SystemExit(f"the engines disagree: final loss {losses['dlf.micro']!r} "
                             f"(dlf.micro) vs {losses['micrograd']!r} (micrograd)")
        ratio = times["dlf.micro"] / times["micrograd"]
        rows.append({"dlf.micro": times["dlf.micro"], "micrograd": times["micrograd"],
                     "ratio": ratio, "loss": losses["dlf.micro"]})
        out(f"repeat {r + 1}/{repeats}: dlf.micro {times['dlf.micro']:.3f} s, "
            f"micrograd {times['micrograd']:.3f} s, ratio {ratio:.3f} "
            f"(final loss {losses['dlf.micro']:.6f})")
    ratios = [row["ratio"] for row in rows]
    summary = {"steps": steps, "points": n, "pause_gc": pause_gc, "repeats": rows,
               "ratio_min": min(ratios), "ratio_median": statistics.median(ratios),
               "ratio_max": max(ratios)}
    gc_mode = "collection once per step" if pause_gc else "automatic collection"
    out(f"{steps} steps on {n} points ({gc_mode}), {repeats} repeats: ratio dlf.micro / micrograd "
        f"median {summary['ratio_median']:.3f} (min {summary['ratio_min']:.3f}, "
        f"max {summary['ratio_max']:.3f})")
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100, help="training steps (default 100)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of both engines (default 3)")
    ap.add_argument("--points", type=int, default=100, help="moons points (default 100)")
    ap.add_argument("--plain-gc", action="store_true",
                    help="keep Python's automatic cycle collection on while training (the "
                         "default pauses it and collects once per step)")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or args.points < 2:
        ap.error("--steps and --repeats must be >= 1, --points >= 2")
    try:
        import micrograd  # noqa: F401
    except ImportError:
        ap.error("the micrograd package is not installed: pip install -c constraints.txt "
                 "-e '.[bench]'")
    run(args.steps, args.repeats, args.points, pause_gc=not args.plain_gc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
