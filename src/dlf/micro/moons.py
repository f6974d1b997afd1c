"""Two moons, and an MLP of Values trained on them with a max-margin loss and L2.

`make_moons` is the data set of the micrograd lecture (scikit-learn's `make_moons`,
written out on Python's `random`). `train` is plain gradient descent on the whole set,
the lecture's recipe: hinge loss max(0, 1 - y * score) averaged over the points, plus
alpha * sum(p^2) over the parameters, learning rate decayed linearly from 1.0 to 0.1.
The loop uses only what any scalar autograd engine offers (+, *, relu, backward), so
benchmarks/micro_vs_micrograd.py runs the same function on both engines.
"""

from __future__ import annotations

import gc
import math
import random
import time
from dataclasses import dataclass

from dlf.errors import DlfError
from dlf.micro.nn import MLP

__all__ = ["MoonsResult", "accuracy", "hinge_loss", "make_moons", "train", "train_moons"]

# The lecture's network and budget: 2-16-16-1 on 100 points for 100 steps. With these
# seeds every point is classified right within the first 40 steps (from step 35 on) and
# still at the end (tests/test_micro.py checks both).
SIZES = [16, 16, 1]
STEPS = 100
DATA_SEED = 1337
INIT_SEED = 1337


def make_moons(n: int = 100, noise: float = 0.1, seed: int = DATA_SEED):
    """Two interleaved half circles: X (n lists [x1, x2]), y (n labels, -1 or +1).

    The upper moon (label -1) is (cos t, sin t), the lower one (label +1) is
    (1 - cos t, 0.5 - sin t), t evenly spaced in [0, pi]; Gaussian noise of standard
    deviation `noise` is added to each coordinate and the points are shuffled."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise DlfError(f"make_moons needs n >= 2 points, got {n!r}")
    if not noise >= 0:
        raise DlfError(f"make_moons needs noise >= 0, got {noise!r}")
    rng = random.Random(seed)
    n_upper = n // 2
    n_lower = n - n_upper
    points = []
    for count, label in ((n_upper, -1), (n_lower, 1)):
        for i in range(count):
            t = math.pi * i / max(count - 1, 1)
            x1, x2 = (math.cos(t), math.sin(t)) if label < 0 else (1 - math.cos(t),
                                                                   0.5 - math.sin(t))
            points.append(([x1 + rng.gauss(0, noise), x2 + rng.gauss(0, noise)], label))
    rng.shuffle(points)
    return [p for p, _ in points], [label for _, label in points]


def hinge_loss(model, X, y, alpha: float = 1e-4):
    """(loss Value, train accuracy): mean max(0, 1 - y * score) + alpha * sum(p^2)."""
    scores = [model(x) for x in X]
    losses = [(1 + -yi * s).relu() for yi, s in zip(y, scores)]
    data_loss = sum(losses) * (1.0 / len(losses))
    reg_loss = alpha * sum(p * p for p in model.parameters())
    correct = sum((yi > 0) == (s.data > 0) for yi, s in zip(y, scores))
    return data_loss + reg_loss, correct / len(y)


def accuracy(model, X, y) -> float:
    """The share of points whose score has the sign of their label."""
    return sum((yi > 0) == (model(x).data > 0) for x, yi in zip(X, y)) / len(y)


def train(model, X, y, steps: int = STEPS, alpha: float = 1e-4, log=None,
          pause_gc: bool = True) -> list[dict]:
    """Gradient descent on the whole set; one record {step, loss, accuracy} per step (the
    loss and accuracy of the weights before that step's update).

    A step builds a graph of about 75,000 Values. Python's cycle collector, which runs
    every few hundred new objects, would scan those live Values again and again: two
    thirds of the training time. A Value only refers to its parents, so the graph holds
    no reference cycle and reference counting frees it when the next step drops `loss`.
    `pause_gc` (the default) therefore pauses automatic collection while training and
    collects the newest objects once per step instead, which also frees the cycles of an
    engine whose graph has them (micrograd's closures refer to their own Value).
    `pause_gc=False` trains as a plain loop would (benchmarks/micro_vs_micrograd.py)."""
    history = []
    automatic = gc.isenabled()
    if pause_gc:
        gc.disable()
    try:
        for k in range(steps):
            loss, acc = hinge_loss(model, X, y, alpha)
            model.zero_grad()
            loss.backward()
            lr = 1.0 - 0.9 * k / steps
            for p in model.parameters():
                p.data -= lr * p.grad
            history.append({"step": k, "loss": loss.data, "accuracy": acc})
            if log:
                log(history[-1])
            if pause_gc:
                del loss
                gc.collect(0)
    finally:
        if pause_gc and automatic:
            gc.enable()
    return history


@dataclass
class MoonsResult:
    model: MLP
    X: list
    y: list
    history: list[dict]
    accuracy: float  # train accuracy of the final weights
    steps: int
    seconds: float  # wall time of the training loop

    @property
    def first_perfect_step(self) -> int | None:
        """The first step whose weights classified every point, or None."""
        return next((r["step"] for r in self.history if r["accuracy"] == 1.0), None)


def train_moons(steps: int = STEPS, n: int = 100, seed: int = INIT_SEED,
                data_seed: int = DATA_SEED, log=None) -> MoonsResult:
    """The lecture's experiment: a 2-16-16-1 MLP trained on n moons points."""
    X, y = make_moons(n, seed=data_seed)
    model = MLP(2, SIZES, seed=seed)
    t0 = time.perf_counter()
    history = train(model, X, y, steps, log=log)
    seconds = time.perf_counter() - t0
    return MoonsResult(model, X, y, history, accuracy(model, X, y), steps, seconds)
