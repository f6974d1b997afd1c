# %% [markdown]
# # 0. Backpropagation through scalars: an autograd engine from scratch
#
# Every later lesson ends a training step with `loss.backward()`: torch fills in the
# gradient of the loss with respect to every weight, and we step downhill. This lesson
# opens that box. We build, on plain Python floats, the whole machine that `backward()`
# runs: a graph of numbers that remembers how each was computed, the local derivative of
# each operation, and the chain rule applied in the right order. It is `dlf.micro`, a
# few hundred lines and no torch, and it is enough to train a small neural network.
#
# The plan: derivatives by nudging the input first (finite differences); then `Value`,
# one operation at a time, with its graph drawn; backpropagation by hand, then in
# topological order; a check against torch; an MLP that learns to separate two moons;
# and the bridge to the tensors of lesson 1.
#
# Budgets: by default the lesson's own; with the environment variable `DLF_QUICK=1` a
# tiny one (for CI), under which the numbers are not the lesson's.

# %%
import math
import random
import time

import torch

import dlf
from dlf.micro import (MLP, DomainError, Value, draw, draw_boundary, make_moons,
                       topological_order, train)

QUICK = dlf.quick()  # DLF_QUICK=1: tiny budgets for CI; the committed notebook is never quick
print(f"dlf {dlf.__version__}, budget: {'quick' if QUICK else 'full'}")

# %% [markdown]
# ## Derivatives by nudging
#
# The derivative of f at x says how much f changes when x changes a little: nudge x by
# a small h and measure the rise over the run, (f(x + h) - f(x)) / h. For
# f(x) = 3x² - 4x + 5 calculus says f'(x) = 6x - 4, so 14 at x = 3:

# %%
def parabola(x):
    return 3 * x**2 - 4 * x + 5


x = 3.0
for h in (0.1, 0.001, 0.00001):
    print(f"h = {h:<8} (f(x + h) - f(x)) / h = {(parabola(x + h) - parabola(x)) / h:.6f}")
assert abs((parabola(x + 1e-6) - parabola(x)) / 1e-6 - (6 * x - 4)) < 1e-4

# %% [markdown]
# With several inputs, each has its own derivative: nudge one, keep the others. For
# d = a·b + c, ∂d/∂a = b, ∂d/∂b = a and ∂d/∂c = 1:

# %%
def expression(a, b, c):
    return a * b + c


a, b, c, h = 2.0, -3.0, 10.0, 1e-6
slopes = {
    "a": (expression(a + h, b, c) - expression(a, b, c)) / h,
    "b": (expression(a, b + h, c) - expression(a, b, c)) / h,
    "c": (expression(a, b, c + h) - expression(a, b, c)) / h,
}
print({k: round(v, 4) for k, v in slopes.items()})
assert all(abs(slopes[k] - want) < 1e-4 for k, want in (("a", b), ("b", a), ("c", 1.0)))

# %% [markdown]
# Nudging works, but it costs one extra evaluation per input (a network has thousands
# of weights) and its answer is only approximate. Backpropagation gets every derivative
# exactly, in one pass backwards, for about the cost of the forward pass.
#
# ## `Value`: a number that remembers how it was made
#
# A `Value` holds a float (`data`), a gradient (`grad`, 0 until a backward pass), the
# Values it was computed from (`prev`), the operation (`op`), and for each parent the
# **local derivative**: how the result moves when that parent moves, with the other
# parents held still. Each operation computes that local derivative on the same line as
# its result. For a product out = a·b: ∂out/∂a = b and ∂out/∂b = a.

# %%
a = Value(2.0, label="a")
b = Value(-3.0, label="b")
e = a * b
print(e, "op:", e.op, "| parents:", [p.label for p in e.prev], "| local derivatives:", e.local)

# %% [markdown]
# The other operations, with their local derivatives (d out / d x):
#
# | operation | result | local derivative |
# |---|---|---|
# | a + b | a + b | 1, 1 |
# | a - b | a - b | 1, -1 |
# | a · b | a·b | b, a |
# | a / b | a / b | 1/b, -a/b² |
# | x ** n (n a constant) | xⁿ | n·xⁿ⁻¹ |
# | exp(x) | eˣ | eˣ |
# | log(x) | ln x | 1/x |
# | tanh(x) | t = tanh x | 1 - t² |
# | sigmoid(x) | s = 1/(1 + e⁻ˣ) | s(1 - s) |
# | relu(x) | max(0, x) | 1 if x > 0 else 0 |
#
# A plain number on either side becomes a Value too, so `2 * a` and `1 - a` work. We
# build the lecture's example, L = (a·b + c)·f, and draw it: each box is a Value (data
# and grad), each circle the operation that made the box to its right.

# %%
c = Value(10.0, label="c")
f = Value(-2.0, label="f")
e = a * b
e.label = "e"
d = e + c
d.label = "d"
L = d * f
L.label = "L"
print(L)
dlf.show(draw, L, title="forward: every grad still 0")

# %% [markdown]
# Outside its domain an operation stops with an error that names it and its input,
# instead of passing a NaN along:

# %%
for bad in (lambda: Value(-1.0).log(), lambda: Value(-8.0) ** (1 / 3),
            lambda: Value(1.0) / 0, lambda: Value(1000.0).exp()):
    try:
        bad()
    except DomainError as err:
        print("DomainError:", err)

# %% [markdown]
# ## Backpropagation by hand
#
# We want dL/dv for every Value v. Start at the output: dL/dL = 1. Then walk backwards
# with the **chain rule**: if v feeds into out, then dL/dv = (d out / d v) · dL/d out:
# the local derivative stored in `out.local`, times the gradient already known at
# `out`. By hand, one line per edge of the graph:

# %%
L.grad = 1.0
# L = d * f: local derivatives (f, d)
d.grad += L.local[0] * L.grad
f.grad += L.local[1] * L.grad
# d = e + c: local derivatives (1, 1)
e.grad += d.local[0] * d.grad
c.grad += d.local[1] * d.grad
# e = a * b: local derivatives (b, a)
a.grad += e.local[0] * e.grad
b.grad += e.local[1] * e.grad
by_hand = {v.label: v.grad for v in (a, b, c, d, e, f, L)}
print(by_hand)
dlf.show(draw, L, title="after backpropagation by hand")

# %% [markdown]
# Nudging each input agrees with the chain rule:

# %%
def lecture_L(a, b, c, f):
    return (a * b + c) * f


inputs = {"a": 2.0, "b": -3.0, "c": 10.0, "f": -2.0}
for name, value in inputs.items():
    nudged = {**inputs, name: value + 1e-6}
    slope = (lecture_L(**nudged) - lecture_L(**inputs)) / 1e-6
    print(f"dL/d{name}: chain rule {by_hand[name]:8.4f}, nudging {slope:8.4f}")
    assert abs(slope - by_hand[name]) < 1e-3

# %% [markdown]
# ## Backpropagation in topological order
#
# By hand we visited the Values in an order that made it work: a Value passes its
# gradient on to its parents only once its own gradient is complete, that is, once
# every Value computed from it has passed its share back. Such an order is a reverse
# **topological order** of the graph: list the Values so that each comes after all of
# its parents, then walk the list backwards. `topological_order` builds it by a
# depth-first search (with an explicit stack instead of recursion, so that a chain of
# 10,000 operations cannot hit Python's recursion limit).

# %%
print([v.label for v in topological_order(L)])

# %% [markdown]
# `backward()` is that walk: for each Value from the output back, `parent.grad +=
# local · grad` for each of its parents. Here it reproduces the hand computation:

# %%
L.zero_grad()  # gradients accumulate (next cell): start from 0
L.backward()
assert {v.label: v.grad for v in (a, b, c, d, e, f, L)} == by_hand
print({v.label: v.grad for v in (a, b, c, d, e, f)})

# %% [markdown]
# Why `+=` and not `=`? A Value used twice receives the gradient of both uses. In
# y = x·x + x, x reaches y three ways (twice through the product, once directly), and
# dy/dx = 2x + 1:

# %%
x = Value(3.0, label="x")
y = x * x + x
y.label = "y"
y.backward()
print(f"dy/dx = {x.grad} (2x + 1 = {2 * 3.0 + 1})")
assert x.grad == 7.0
dlf.show(draw, y, title="x used three times: its gradient is the sum")

# %% [markdown]
# The same `+=` means a second `backward()` **adds** to the gradients rather than
# replacing them: torch does the same, which is why a training step starts with
# `zero_grad()`. What happens when backward runs twice:

# %%
y.backward()
print("after a second backward:", x.grad)
assert x.grad == 14.0
y.zero_grad()
y.backward()
print("after zero_grad and backward:", x.grad)
assert x.grad == 7.0

# %% [markdown]
# And the order matters. Below, the same chain rule visits the Values of y = x·x + x
# in two orders: the sum before the product (reverse topological order), and the
# product before the sum. In the second, the product passes its gradient on to x while
# that gradient is still 0 (the sum has not yet given it its share), and x ends up
# with 1 instead of 7.

# %%
def backprop_in(order, out):
    """The chain rule applied to the Values of `order`, in that order, from scratch."""
    out.zero_grad()
    out.grad = 1.0
    for v in order:
        for parent, local in zip(v.prev, v.local):
            parent.grad += local * v.grad


xx = y.prev[0]  # the product x * x
backprop_in([y, xx], y)
print("sum, then product:", x.grad)
assert x.grad == 7.0
backprop_in([xx, y], y)
print("product, then sum:", x.grad)
assert x.grad == 1.0

# %% [markdown]
# ## A neuron, and a check against torch
#
# A neuron weighs its inputs, adds a bias and squashes the sum: tanh(x1·w1 + x2·w2 + b)
# (the lecture's numbers). `backward()` gives the gradient of the output with respect
# to every input and weight:

# %%
x1, x2 = Value(2.0, label="x1"), Value(0.0, label="x2")
w1, w2 = Value(-3.0, label="w1"), Value(1.0, label="w2")
bias = Value(6.8813735870195432, label="b")
n = x1 * w1 + x2 * w2 + bias
n.label = "n"
o = n.tanh()
o.label = "o"
o.backward()
dlf.show(draw, o, title="a neuron: o = tanh(x1 w1 + x2 w2 + b)")

# %% [markdown]
# torch's autograd on the same numbers, in float64, gives the same gradients:

# %%
tx = {v.label: torch.tensor(v.data, dtype=torch.float64, requires_grad=True)
      for v in (x1, x2, w1, w2, bias)}
to = (tx["x1"] * tx["w1"] + tx["x2"] * tx["w2"] + tx["b"]).tanh()
to.backward()
for v in (x1, x2, w1, w2, bias):
    print(f"d o/d {v.label:2}: dlf.micro {v.grad:+.6f}, torch {tx[v.label].grad.item():+.6f}")
    assert math.isclose(v.grad, tx[v.label].grad.item(), rel_tol=1e-12, abs_tol=1e-15)

# %% [markdown]
# (`tests/test_micro.py` does this on hundreds of random expressions of every operation,
# up to 30 deep with shared subexpressions.)
#
# ## A network: two moons
#
# `Neuron`, `Layer` and `MLP` wrap Values in the conventions of `dlf.nn` (`parameters()`,
# `zero_grad()`, `train()` / `eval()`). The data are the lecture's two interleaved half
# moons, 100 points labelled -1 and +1; the network is 2-16-16-1 with ReLU, 337
# parameters. The loss is the **max-margin** (hinge) loss max(0, 1 - y·score), averaged,
# plus a small L2 penalty on the weights; each step computes it on all points, runs
# `backward()` and moves every weight against its gradient.

# %%
X, y = make_moons(100, noise=0.1, seed=1337)
model = MLP(2, [16, 16, 1], seed=1337)
print(model.layers[0].neurons[0], "...", f"{len(model.parameters())} parameters")
dlf.show(draw_boundary, model, X, y, grid=12 if QUICK else 40, title="before training")

# %% [markdown]
# One step builds a graph of about 69,000 Values (every multiplication and addition of
# the network, for every point); the whole training is some 7 million. The lecture's
# budget is 100 steps; the quick budget trains 15.

# %%
def log(record):
    if record["step"] % 10 == 0:
        print(f"step {record['step']:3}  loss {record['loss']:.4f}  "
              f"accuracy {record['accuracy']:.0%}")


steps = 15 if QUICK else 100
t0 = time.perf_counter()
history = train(model, X, y, steps=steps, log=log)
seconds = time.perf_counter() - t0
perfect = next((r["step"] for r in history if r["accuracy"] == 1.0), None)
final = sum((yi > 0) == (model(xi).data > 0) for xi, yi in zip(X, y)) / len(y)
print(f"{steps} steps in {seconds:.1f} s; final train accuracy {final:.0%}; "
      f"first step with every point right: {perfect}")

# %% [markdown]
# The claim: 100% train accuracy within the lecture's 100 steps. (Under the quick
# budget, 15 steps: the loss must only have fallen.)

# %%
if QUICK:
    assert history[-1]["loss"] < history[0]["loss"]
else:
    assert final == 1.0 and perfect is not None
dlf.show(draw_boundary, model, X, y, grid=12 if QUICK else 40, title=f"after {steps} steps")

# %% [markdown]
# ## From scalars to tensors
#
# Each scalar multiplication above had its own node; a network of tensors does the same
# arithmetic in blocks. Take a linear layer Y = X·W on 3 points with 2 inputs and 2
# outputs, and any loss of Y. Each weight w_ij is used once per point, in
# Y_bj = Σ_i X_bi·w_ij, so its gradient sums X_bi·dY_bj over the points: the matrix
# product Xᵀ·dY. Computed by dlf.micro scalar by scalar, and by that one formula:

# %%
rng = random.Random(0)
Xs = [[rng.uniform(-1, 1) for _ in range(2)] for _ in range(3)]  # (3, 2)
W = [[Value(rng.uniform(-1, 1)) for _ in range(2)] for _ in range(2)]  # (2, 2)
Y = [[sum((Xs[b_][i] * W[i][j] for i in range(2)), Value(0.0)) for j in range(2)]
     for b_ in range(3)]  # (3, 2)
loss = sum((yv.tanh() for row in Y for yv in row), Value(0.0))
loss.backward()
dY = torch.tensor([[yv.grad for yv in row] for row in Y], dtype=torch.float64)  # (3, 2)
dW = torch.tensor(Xs, dtype=torch.float64).T @ dY  # (2, 3) @ (3, 2) -> (2, 2)
print("dlf.micro, scalar by scalar:", [[round(w.grad, 6) for w in row] for row in W])
print("X^T @ dY:                   ", [[round(v, 6) for v in row] for row in dW.tolist()])
assert all(math.isclose(W[i][j].grad, dW[i, j].item(), rel_tol=1e-12)
           for i in range(2) for j in range(2))

# %% [markdown]
# **What to take away.** Backpropagation is the chain rule, applied once per edge of the
# graph, in reverse topological order, adding up over every path. Each operation only
# has to know its own local derivative. Tensors change nothing but the bookkeeping:
# lesson 1 lets torch's autograd do it, and lesson 2's `dlf.manual` writes out the same
# rule for every tensor of an MLP: `dW2 = h.T @ dlogits` is the Xᵀ·dY above.
