"""A scalar autograd engine: a `Value` is one Python float that remembers how it was made.

Every operation returns a new Value holding its result, its parents and the local
derivative of the result with respect to each parent (d out / d parent, a float computed
in the forward, on the line that computes the result). `backward()` then walks the graph
from the output back to the inputs in reverse topological order and applies the chain rule

    parent.grad += (d out / d parent) * out.grad

so a Value used twice receives the sum of both paths. Nothing else is stored per node: no
closure, no dict (`__slots__`), which keeps the engine fast enough to train a small MLP.

Gradients accumulate, as in torch: `backward()` adds d root / d v to the `.grad` of every
Value v in the graph (torch does this for leaves, and for non-leaves that `retain_grad()`),
so calling it twice doubles every gradient. `zero_grad()` sets them back to 0.

An operation outside its domain (the log of a non-positive number, a negative base to a
fractional power, division by zero, an overflowing exp) raises `DomainError` naming the
operation and its input, rather than passing on a NaN or an infinity.
"""

from __future__ import annotations

import math

from dlf.errors import DlfError

__all__ = ["DomainError", "Value", "topological_order"]


class DomainError(DlfError, ValueError):
    """An operation got an input outside its domain; the message names both."""


class Value:
    """A scalar, its gradient, and the operation (`op`) and parents (`prev`) that made it."""

    __slots__ = ("data", "grad", "label", "local", "op", "prev")

    def __init__(self, data: float, prev: tuple = (), local: tuple = (), op: str = "",
                 label: str = ""):
        self.data = data
        self.grad = 0.0
        self.prev = prev  # the Values this one was computed from
        self.local = local  # d self / d prev[i], one float per parent
        self.op = op
        self.label = label  # a name for drawings; no effect on the maths

    def __repr__(self) -> str:
        return f"Value(data={self.data}, grad={self.grad})"

    # ------------------------------------------------------------------ operations
    # Each returns Value(result, parents, local derivatives, op): d/da and d/db side by side.

    def __add__(self, other) -> Value:
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data + other.data, (self, other), (1.0, 1.0), "+")

    def __sub__(self, other) -> Value:
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data - other.data, (self, other), (1.0, -1.0), "-")

    def __mul__(self, other) -> Value:
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data * other.data, (self, other), (other.data, self.data), "*")

    def __truediv__(self, other) -> Value:
        other = other if isinstance(other, Value) else Value(other)
        a, b = self.data, other.data
        if b == 0:
            raise DomainError(f"div({a!r}, {b!r}): division by zero")
        out = a / b
        return Value(out, (self, other), (1.0 / b, -out / b), "/")  # d(a/b)/db = -a/b^2

    def __pow__(self, n) -> Value:
        if isinstance(n, Value) or not isinstance(n, (int, float)):
            raise TypeError(f"pow: the exponent must be a constant int or float, "
                            f"got {type(n).__name__}")
        x = self.data
        if x < 0 and not float(n).is_integer():
            raise DomainError(f"pow({x!r}, {n!r}): a negative base to a non-integer power "
                              "is not a real number")
        if x == 0 and n < 0:
            raise DomainError(f"pow({x!r}, {n!r}): zero to a negative power divides by zero")
        if x == 0 and 0 < n < 1:
            raise DomainError(f"pow({x!r}, {n!r}): the derivative n * x**(n-1) is infinite "
                              "at zero")
        try:
            out = x**n
            dx = n * x ** (n - 1) if n != 0 else 0.0  # x**0 = 1 is flat, also at x = 0
        except OverflowError:
            raise DomainError(f"pow({x!r}, {n!r}): the result overflows a float") from None
        return Value(out, (self,), (dx,), f"**{n}")

    def __neg__(self) -> Value:
        return Value(-self.data, (self,), (-1.0,), "neg")

    def exp(self) -> Value:
        x = self.data
        try:
            e = math.exp(x)
        except OverflowError:
            raise DomainError(f"exp({x!r}): the result overflows a float") from None
        return Value(e, (self,), (e,), "exp")  # d e^x/dx = e^x

    def log(self) -> Value:
        x = self.data
        if not x > 0:
            raise DomainError(f"log({x!r}): the logarithm needs a positive number")
        return Value(math.log(x), (self,), (1.0 / x,), "log")

    def tanh(self) -> Value:
        t = math.tanh(self.data)
        return Value(t, (self,), (1.0 - t * t,), "tanh")

    def relu(self) -> Value:
        x = self.data
        return Value(x if x > 0 else 0.0, (self,), (1.0 if x > 0 else 0.0,), "relu")

    def sigmoid(self) -> Value:
        x = self.data
        # 1 / (1 + e^-x), written so that e^(...) never overflows
        s = 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
        return Value(s, (self,), (s * (1.0 - s),), "sigmoid")

    # reflected operators: 2 * v, 1 - v, 1 / v, ... (Python tries v's method second)
    def __radd__(self, other) -> Value:
        return Value(other) + self

    def __rsub__(self, other) -> Value:
        return Value(other) - self

    def __rmul__(self, other) -> Value:
        return Value(other) * self

    def __rtruediv__(self, other) -> Value:
        return Value(other) / self

    # ------------------------------------------------------------------ backpropagation

    def backward(self) -> None:
        """Add d self / d v to v.grad for every Value v that self was computed from."""
        topo = topological_order(self)
        before = [v.grad for v in topo]  # what earlier backward calls accumulated
        for v in topo:
            v.grad = 0.0
        self.grad = 1.0  # d self / d self
        for v in reversed(topo):  # each node after every node that uses it
            g = v.grad
            for parent, d in zip(v.prev, v.local):
                parent.grad += d * g  # the chain rule
        for v, g in zip(topo, before):
            v.grad += g

    def zero_grad(self) -> None:
        """Set .grad to 0 on this Value and on every Value it was computed from."""
        for v in topological_order(self):
            v.grad = 0.0


def topological_order(root: Value) -> list[Value]:
    """Every Value that root depends on, root last, each after all of its parents.

    A depth-first search, written with an explicit stack rather than recursion so that a
    graph of any depth (a chain of 10,000 additions) stays within Python's recursion limit.
    """
    topo, seen = [], {root}
    stack = [(root, iter(root.prev))]  # the path being explored: (Value, its unvisited parents)
    while stack:
        v, parents = stack[-1]
        for p in parents:
            if p not in seen:  # go deeper: p's own parents come first
                seen.add(p)
                stack.append((p, iter(p.prev)))
                break
        else:  # every parent of v is in topo: v can follow them
            stack.pop()
            topo.append(v)
    return topo
