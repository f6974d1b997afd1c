"""Neuron, Layer and MLP on scalar Values: the network of the micrograd lecture.

The conventions are dlf.nn's: `parameters()`, `zero_grad()`, and `train()` / `eval()`
switching a `training` flag (nothing here behaves differently in the two modes; the flag
is kept so that code written for dlf.nn reads the same). Weights are drawn uniform in
[-1, 1) from a `random.Random` the caller seeds; biases start at 0.
"""

from __future__ import annotations

import random

from dlf.errors import DlfError
from dlf.micro.engine import Value

__all__ = ["MLP", "Layer", "Module", "Neuron"]


class Module:
    """Base class: parameters(), zero_grad(), train() and eval()."""

    training: bool = True

    def parameters(self) -> list[Value]:
        return []

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = 0.0

    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            m.training = bool(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def modules(self) -> list[Module]:
        """This module and every module inside it."""
        return [self]


class Neuron(Module):
    """x (list of nin numbers or Values) -> relu(w . x + b), or w . x + b if not nonlin."""

    def __init__(self, nin: int, nonlin: bool = True, rng: random.Random | None = None):
        if not isinstance(nin, int) or isinstance(nin, bool) or nin < 1:
            raise DlfError(f"a Neuron needs nin >= 1 inputs, got {nin!r}")
        rng = rng or random.Random()
        self.w = [Value(rng.uniform(-1, 1)) for _ in range(nin)]
        self.b = Value(0.0)
        self.nonlin = nonlin

    def __call__(self, x) -> Value:
        if len(x) != len(self.w):
            raise DlfError(f"a Neuron of {len(self.w)} inputs got {len(x)}")
        act = sum((wi * xi for wi, xi in zip(self.w, x)), self.b)
        return act.relu() if self.nonlin else act

    def parameters(self) -> list[Value]:
        return self.w + [self.b]

    def __repr__(self) -> str:
        return f"{'ReLU' if self.nonlin else 'Linear'}Neuron({len(self.w)})"


class Layer(Module):
    """nout Neurons on the same nin inputs: a list of nout Values (one Value if nout is 1)."""

    def __init__(self, nin: int, nout: int, nonlin: bool = True,
                 rng: random.Random | None = None):
        if not isinstance(nout, int) or isinstance(nout, bool) or nout < 1:
            raise DlfError(f"a Layer needs nout >= 1 neurons, got {nout!r}")
        rng = rng or random.Random()
        self.neurons = [Neuron(nin, nonlin, rng) for _ in range(nout)]

    def __call__(self, x):
        out = [n(x) for n in self.neurons]
        return out[0] if len(out) == 1 else out

    def parameters(self) -> list[Value]:
        return [p for n in self.neurons for p in n.parameters()]

    def modules(self) -> list[Module]:
        return [self, *self.neurons]

    def __repr__(self) -> str:
        return f"Layer of [{', '.join(str(n) for n in self.neurons)}]"


class MLP(Module):
    """Layers of sizes nin -> nouts[0] -> ... -> nouts[-1]; ReLU after all but the last."""

    def __init__(self, nin: int, nouts: list[int], seed: int | None = None):
        if not nouts:
            raise DlfError("an MLP needs at least one layer size")
        rng = random.Random(seed)
        sizes = [nin, *nouts]
        self.layers = [Layer(sizes[i], sizes[i + 1], nonlin=i != len(nouts) - 1, rng=rng)
                       for i in range(len(nouts))]

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def parameters(self) -> list[Value]:
        return [p for layer in self.layers for p in layer.parameters()]

    def modules(self) -> list[Module]:
        return [self, *(m for layer in self.layers for m in layer.modules())]

    def __repr__(self) -> str:
        return f"MLP of [{', '.join(str(layer) for layer in self.layers)}]"
