"""dlf.micro, scalar autograd: every gradient against torch.autograd in float64 (single ops,
random expression trees, the MLP and its training step), backward's accumulation, deep
graphs, domain errors, the moons data against its closed form, and the figures."""

import ast
import gc
import io
import math
import random
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dlf.errors import DlfError
from dlf.micro import (
    MLP,
    DomainError,
    Layer,
    Module,
    Neuron,
    Value,
    accuracy,
    draw,
    draw_boundary,
    hinge_loss,
    make_moons,
    topological_order,
    train,
    train_moons,
)
from dlf.micro.figures import (
    ARROW,
    BEND,
    BOUNDARY_SIZE,
    BOX,
    BOX_H,
    BOX_W,
    CIRCLE,
    CLASSES,
    COLUMN,
    DPI,
    INNER,
    LEAF,
    MARGIN,
    MAX_NODES,
    OP,
    OP_DX,
    OP_R,
    OP_TEXT,
    POINT,
    REGION_ALPHA,
    ROOT,
    ROW,
    SIDE,
    TEXT,
    TITLE,
    TITLE_H,
    decision_grid,
    layout,
)
from dlf.micro.moons import DATA_SEED, INIT_SEED, SIZES, STEPS

REPO = Path(__file__).resolve().parents[1]
MICRO = REPO / "src" / "dlf" / "micro"


def close(a: float, b: float) -> bool:
    # float64 on both sides; only the order of the additions differs
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def leaf(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64, requires_grad=True)


# --------------------------------------------------------------------------- layering


def test_import_needs_neither_torch_nor_matplotlib():
    code = ("import sys, dlf.micro\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'matplotlib')]\n"
            "assert not bad, bad\n"
            "dlf.micro.draw(dlf.micro.Value(1.0) * 2)\n"
            "assert 'matplotlib' in sys.modules and 'matplotlib.pyplot' not in sys.modules\n"
            "assert 'torch' not in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


def test_micro_imports_only_the_bottom_layer():
    """DESIGN.md: micro sits beside errors, fileio and plots; no torch, no pyplot."""
    for path in MICRO.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in ("torch", "numpy"), (path.name, name)
                assert name != "matplotlib.pyplot", path.name
                if name.startswith("dlf"):
                    assert name in ("dlf.errors", "dlf.fileio") or \
                        name.startswith("dlf.micro"), (path.name, name)
        assert ".use(" not in path.read_text(), path.name  # no global matplotlib backend


# --------------------------------------------------------------------------- single operations

UNARY = {
    "neg": lambda a: -a,
    "exp": lambda a: a.exp(),
    "log": lambda a: a.log(),
    "tanh": lambda a: a.tanh(),
    "relu": lambda a: a.relu(),
    "sigmoid": lambda a: a.sigmoid(),
    "square": lambda a: a**2,
    "cube": lambda a: a**3,
    "sqrt": lambda a: a**0.5,
    "inverse": lambda a: a**-1,
    "pow -1.5": lambda a: a**-1.5,
    "pow 0": lambda a: a**0,
    "pow 1": lambda a: a**1,
    "2 + a": lambda a: 2 + a,
    "a + 2": lambda a: a + 2,
    "1 - a": lambda a: 1 - a,
    "a - 1": lambda a: a - 1,
    "2 * a": lambda a: 2 * a,
    "a * 2": lambda a: a * 2,
    "3 / a": lambda a: 3 / a,
    "a / 4": lambda a: a / 4,
}
BINARY = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
}
POSITIVE_ONLY = {"log", "sqrt", "pow -1.5"}


@pytest.mark.parametrize("name,x", [(name, x) for name in sorted(UNARY)
                                    for x in (-1.7, -0.3, 0.4, 2.5)
                                    if x > 0 or name not in POSITIVE_ONLY])  # domain: below
def test_each_unary_operation_and_its_derivative_equal_torch(name, x):
    f = UNARY[name]
    a, t = Value(x), leaf(x)
    out, ref = f(a), f(t)
    out.backward()
    ref.backward()
    assert close(out.data, ref.item())
    assert close(a.grad, t.grad.item())
    assert out.grad == 1.0


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("x,y", [(1.5, -0.5), (-2.0, 3.0), (0.25, 0.25)])
def test_each_binary_operation_and_its_derivatives_equal_torch(name, x, y):
    a, b = Value(x), Value(y)
    ta, tb = leaf(x), leaf(y)
    out, ref = BINARY[name](a, b), BINARY[name](ta, tb)
    out.backward()
    ref.backward()
    assert close(out.data, ref.item())
    assert close(a.grad, ta.grad.item()) and close(b.grad, tb.grad.item())


@pytest.mark.parametrize("x", [0.0, -5.0, -800.0, 800.0])
def test_relu_and_sigmoid_at_zero_and_far_out(x):
    """relu's slope at 0 is 0 (as torch); sigmoid far out neither overflows nor loses s."""
    for name in ("relu", "sigmoid"):
        a, t = Value(x), leaf(x)
        out, ref = UNARY[name](a), UNARY[name](t)
        out.backward()
        ref.backward()
        assert close(out.data, ref.item()) and close(a.grad, t.grad.item()), name


def test_zero_to_the_zeroth_power_is_one_and_flat():
    a, t = Value(0.0), leaf(0.0)
    out, ref = a**0, t**0
    out.backward()
    ref.backward()
    assert out.data == ref.item() == 1.0 and a.grad == t.grad.item() == 0.0


def test_a_negative_base_to_an_integer_power():
    for n in (2, 3, 2.0, -1):
        a, t = Value(-1.5), leaf(-1.5)
        (a**n).backward()
        (t**n).backward()
        assert close(a.grad, t.grad.item()), n


def test_each_result_records_its_parents_operation_and_local_derivatives():
    a, b = Value(2.0), Value(-3.0)
    c = a * b
    assert c.prev == (a, b) and c.op == "*" and c.local == (-3.0, 2.0)
    d = 2 * a  # the constant becomes a leaf Value on the left
    assert d.prev[1] is a and d.prev[0].data == 2 and d.op == "*"
    e = 1 - a
    assert e.prev[1] is a and e.prev[0].data == 1 and e.op == "-" and e.local == (1.0, -1.0)
    assert (a**3).op == "**3" and (a / b).op == "/" and (-a).op == "neg"
    assert [a.exp().op, a.log().op, a.tanh().op, a.relu().op, a.sigmoid().op] == \
        ["exp", "log", "tanh", "relu", "sigmoid"]
    assert (a + b).op == "+" and (a - b).op == "-" and (3 / a).op == "/" and (3 + a).op == "+"
    assert Value(1.0, label="x").label == "x" and Value(1.0).label == ""
    assert Value(1.0).prev == () and Value(1.0).op == "" and Value(1.0).grad == 0.0
    assert repr(Value(2.5)) == "Value(data=2.5, grad=0.0)"


def test_operations_on_non_numbers_are_type_errors():
    a = Value(2.0)
    with pytest.raises(TypeError, match="exponent must be a constant int or float, got Value"):
        a ** Value(2.0)
    with pytest.raises(TypeError, match="got str"):
        a ** "2"


# --------------------------------------------------------------------------- domain errors


@pytest.mark.parametrize("make,message", [
    (lambda: Value(0.0).log(), "log(0.0): the logarithm needs a positive number"),
    (lambda: Value(-2.0).log(), "log(-2.0): the logarithm needs a positive number"),
    (lambda: Value(float("nan")).log(), "log(nan)"),
    (lambda: Value(-8.0) ** (1 / 3),
     ("pow(-8.0, 0.3333333333333333): a negative base to a non-integer power is not a real "
      "number")),
    (lambda: Value(-2.0) ** 0.5, "pow(-2.0, 0.5): a negative base"),
    (lambda: Value(0.0) ** -1, "pow(0.0, -1): zero to a negative power divides by zero"),
    (lambda: Value(0.0) ** -0.5, "pow(0.0, -0.5): zero to a negative power"),
    (lambda: Value(0.0) ** 0.5,
     r"pow(0.0, 0.5): the derivative n * x**(n-1) is infinite at zero"),
    (lambda: Value(10.0) ** 400, "pow(10.0, 400): the result overflows a float"),
    (lambda: Value(1e-200) ** -1, "pow(1e-200, -1): the result overflows a float"),
    (lambda: Value(1.0) / Value(0.0), "div(1.0, 0.0): division by zero"),
    (lambda: Value(3.0) / 0, "div(3.0, 0): division by zero"),
    (lambda: 1 / Value(0.0), "div(1, 0.0): division by zero"),
    (lambda: Value(1000.0).exp(), "exp(1000.0): the result overflows a float"),
])
def test_domain_errors_name_the_operation_and_the_value(make, message):
    with pytest.raises(DomainError) as err:
        make()
    assert str(err.value).startswith(message)
    assert isinstance(err.value, DlfError) and isinstance(err.value, ValueError)
    assert err.value.__context__ is None or err.value.__suppress_context__  # one error shown


def test_the_edges_of_the_domains_are_inside():
    assert Value(1e-300).log().data == math.log(1e-300)
    assert Value(0.0) ** 1 is not None and (Value(0.0) ** 2).data == 0.0
    assert (Value(0.0) ** 1.5).local == (0.0,)  # 1.5 * 0 ** 0.5: no error, a flat slope
    assert (Value(-8.0) ** 3.0).data == -512.0  # an integer-valued float exponent
    assert Value(709.0).exp().data == math.exp(709.0)
    assert Value(-1000.0).exp().data == 0.0


# --------------------------------------------------------------------------- backward


def test_a_value_used_twice_gets_both_paths():
    x = Value(3.0)
    y = x * x + x  # dy/dx = 2x + 1
    y.backward()
    assert x.grad == 7.0
    a = Value(-2.0)
    b = a + a  # the same parent twice in one operation
    b.backward()
    assert a.grad == 2.0


def test_backward_twice_accumulates_like_torch_and_zero_grad_resets():
    """Every Value accumulates, as torch does for leaves and for retain_grad() tensors."""
    def graph(a, b):
        c = a * b
        d = c.tanh() + a
        return c, d, d * d

    a, b = Value(0.7), Value(-1.3)
    ta, tb = leaf(0.7), leaf(-1.3)
    c, d, e = graph(a, b)
    tc, td, te = graph(ta, tb)
    for t in (tc, td, te):
        t.retain_grad()
    e.backward()
    te.backward(retain_graph=True)
    once = [v.grad for v in (a, b, c, d, e)]
    e.backward()
    te.backward()
    for v, t in zip((a, b, c, d, e), (ta, tb, tc, td, te)):
        assert close(v.grad, t.grad.item())
    assert [v.grad for v in (a, b, c, d, e)] == [2 * g for g in once]
    e.zero_grad()
    assert [v.grad for v in (a, b, c, d, e)] == [0.0] * 5
    e.backward()
    assert [v.grad for v in (a, b, c, d, e)] == once


def test_backward_of_a_leaf_adds_one():
    x = Value(4.0)
    x.backward()
    x.backward()
    assert x.grad == 2.0


def test_zero_grad_reaches_only_the_graph_below():
    a, b = Value(1.0), Value(2.0)
    c = a * b
    other = Value(5.0)
    other.grad = 3.0
    c.backward()
    c.zero_grad()
    assert (a.grad, b.grad, c.grad, other.grad) == (0.0, 0.0, 0.0, 3.0)


def test_a_chain_of_ten_thousand_nodes():
    limit = sys.getrecursionlimit()
    x = Value(0.5)
    y = x
    for _ in range(10_000):
        y = y + x * 1.0  # each step: one multiplication, one addition
    y.backward()
    assert x.grad == 10_001.0
    assert len(topological_order(y)) == 1 + 10_000 * 3  # x, and per step: 1.0, x * 1.0, y
    assert sys.getrecursionlimit() == limit


def test_topological_order_puts_every_value_after_its_parents():
    a, b = Value(1.0), Value(2.0)
    c = a * b
    d = c + a
    e = d * c
    order = topological_order(e)
    assert order[-1] is e and len(order) == len(set(order)) == 5
    where = {v: i for i, v in enumerate(order)}
    for v in order:
        assert all(where[p] < where[v] for p in v.prev)
    assert order == [a, b, c, d, e]  # depth first, parents in their written order


# ---------------------------------------------------------------------- random expression trees

# Each step: (operation, which recent node is the first operand (0 = the newest), which
# node is the second (any, so subexpressions are shared), a constant).
OPS = ["+", "-", "*", "/", "neg", "exp", "log", "tanh", "relu", "sigmoid", "pow",
       "c+", "c-", "c*", "c/", "+c", "-c", "*c", "/c"]
EXPONENTS = [2, 3, -1, -2, 0.5, 1.5, -0.5]
CONSTANTS = [-2.0, -0.5, 0.75, 1.0, 3.0]
steps_strategy = st.lists(
    st.tuples(st.sampled_from(OPS), st.integers(0, 1), st.integers(0, 1000),
              st.integers(0, len(EXPONENTS) - 1)),
    min_size=10, max_size=30)
leaves_strategy = st.lists(st.floats(-2.0, 2.0, allow_nan=False), min_size=1, max_size=4)


# op -> f(u, v, c, n): u, v the operands, c a constant, n an exponent
APPLY = {
    "+": lambda u, v, c, n: u + v, "-": lambda u, v, c, n: u - v,
    "*": lambda u, v, c, n: u * v, "/": lambda u, v, c, n: u / v,
    "neg": lambda u, v, c, n: -u, "exp": lambda u, v, c, n: u.exp(),
    "log": lambda u, v, c, n: u.log(), "tanh": lambda u, v, c, n: u.tanh(),
    "relu": lambda u, v, c, n: u.relu(), "sigmoid": lambda u, v, c, n: u.sigmoid(),
    "pow": lambda u, v, c, n: u**n,
    "c+": lambda u, v, c, n: c + u, "c-": lambda u, v, c, n: c - u,
    "c*": lambda u, v, c, n: c * u, "c/": lambda u, v, c, n: c / u,
    "+c": lambda u, v, c, n: u + c, "-c": lambda u, v, c, n: u - c,
    "*c": lambda u, v, c, n: u * c, "/c": lambda u, v, c, n: u / c,
}


def both(f, *pairs):
    """Apply f to the dlf.micro operands and to the torch ones."""
    return f(*(p[0] for p in pairs)), f(*(p[1] for p in pairs))


def build(steps, xs):
    """The same expression DAG in dlf.micro and in torch: a list of (Value, tensor) pairs,
    the leaves first, the root last. Operands are moved into their operation's domain by
    the dlf.micro value (the same decision for both): a denominator near zero becomes
    d * d + 1, a log's argument x <= 0.25 becomes exp(x), a fractional or negative power's
    base x <= 0.25 becomes sigmoid(x) + 0.5; a result beyond 3 in magnitude is scaled
    back to 2 (so that 30 levels neither overflow nor vanish)."""
    nodes = [(Value(x), leaf(x)) for x in xs]
    for op, back, other, k in steps:
        a = nodes[max(0, len(nodes) - 1 - back)]
        b = nodes[other % len(nodes)]
        c, n = CONSTANTS[k % len(CONSTANTS)], EXPONENTS[k]
        if op == "/" and abs(b[0].data) < 0.25:
            b = both(lambda v: v * v + 1, b)
        if op == "c/" and abs(a[0].data) < 0.25:
            a = both(lambda v: v * v + 1, a)
        if op == "log" and a[0].data <= 0.25:
            a = both(lambda v: v.exp(), a)
        if op == "pow" and not (float(n).is_integer() and n > 0) and a[0].data <= 0.25:
            a = both(lambda v: v.sigmoid() + 0.5, a)
        out = both(lambda u, v: APPLY[op](u, v, c, n), a, b)  # noqa: B023 (called at once)
        if abs(out[0].data) > 3:
            scale = 2.0 / abs(out[0].data)
            out = (out[0] * scale, out[1] * scale)
        nodes.append(out)
    return nodes


def depth(v: Value) -> int:
    d = {}
    for u in topological_order(v):
        d[u] = 1 + max((d[p] for p in u.prev), default=-1)
    return d[v]


@settings(max_examples=120, deadline=None, derandomize=True)
@given(steps_strategy, leaves_strategy)
@example([("tanh", 0, 0, 0)] * 30, [0.3])  # a chain 30 deep
@example([(op, 0, 1, 2) for op in OPS] + [("pow", 0, 0, k) for k in range(7)], [0.5, -1.0])
def test_gradients_equal_torch_autograd_on_random_expression_trees(steps, xs):
    nodes = build(steps, xs)
    root, troot = nodes[-1]
    for _, t in nodes:
        if not t.is_leaf:
            t.retain_grad()
    root.backward()
    troot.backward()
    for v, t in nodes:
        assert close(v.data, t.item())
        assert close(v.grad, 0.0 if t.grad is None else t.grad.item())


def test_the_tree_generator_reaches_depth_thirty_and_every_operation():
    nodes = build([("tanh", 0, 0, 0)] * 30, [0.3])
    assert depth(nodes[-1][0]) == 30
    nodes = build([(op, 0, 1, 2) for op in OPS] + [("pow", 0, 0, k) for k in range(7)],
                  [0.5, -1.0])
    made = {v.op for v, _ in nodes}
    assert {"+", "-", "*", "/", "neg", "exp", "log", "tanh", "relu", "sigmoid"} <= made
    assert {f"**{n}" for n in EXPONENTS} <= made


# --------------------------------------------------------------------------- the network


def torch_mlp(model: MLP):
    """The model's weights as float64 tensors: [(W (nin, nout), b (nout,), relu?)]."""
    layers = []
    for layer in model.layers:
        W = leaf(0.0).new_tensor([[n.w[i].data for n in layer.neurons]
                                  for i in range(len(layer.neurons[0].w))]).requires_grad_()
        b = leaf(0.0).new_tensor([n.b.data for n in layer.neurons]).requires_grad_()
        layers.append((W, b, layer.neurons[0].nonlin))
    return layers


def torch_scores(layers, X) -> torch.Tensor:
    h = torch.tensor(X, dtype=torch.float64)
    for W, b, nonlin in layers:
        h = h @ W + b  # (N, nout)
        h = h.relu() if nonlin else h
    return h[:, 0]


def torch_loss(layers, X, y, alpha):
    scores = torch_scores(layers, X)
    yt = torch.tensor(y, dtype=torch.float64)
    reg = sum((W * W).sum() + (b * b).sum() for W, b, _ in layers)
    return (1 - yt * scores).relu().mean() + alpha * reg, scores


def test_mlp_scores_and_loss_gradients_equal_torch():
    X, y = make_moons(12, seed=5)
    model = MLP(2, [4, 3, 1], seed=0)
    layers = torch_mlp(model)
    loss, acc = hinge_loss(model, X, y, alpha=0.01)
    ref, scores = torch_loss(layers, X, y, alpha=0.01)
    loss.backward()
    ref.backward()
    assert close(loss.data, ref.item())
    assert acc == ((scores > 0) == (torch.tensor(y) > 0)).double().mean().item()
    for s, x in zip(scores.tolist(), X):
        assert close(model(x).data, s)
    for layer, (W, b, _) in zip(model.layers, layers):
        for j, n in enumerate(layer.neurons):
            assert all(close(n.w[i].grad, W.grad[i, j].item()) for i in range(len(n.w)))
            assert close(n.b.grad, b.grad[j].item())


def test_training_steps_equal_gradient_descent_in_torch():
    """Three steps of `train` against the same descent in torch: lr 1.0, 0.7, 0.4."""
    X, y = make_moons(10, seed=2)
    model = MLP(2, [3, 1], seed=4)
    layers = torch_mlp(model)
    records = []
    history = train(model, X, y, steps=3, alpha=0.001, log=records.append)
    for k in range(3):
        loss, scores = torch_loss(layers, X, y, 0.001)
        for W, b, _ in layers:
            W.grad = b.grad = None
        loss.backward()
        with torch.no_grad():
            for W, b, _ in layers:
                W -= (1.0 - 0.9 * k / 3) * W.grad
                b -= (1.0 - 0.9 * k / 3) * b.grad
        assert history[k]["step"] == k and close(history[k]["loss"], loss.item())
        correct = ((scores > 0) == (torch.tensor(y) > 0)).double().mean().item()
        assert history[k]["accuracy"] == correct
    assert records == history and len(history) == 3
    for layer, (W, b, _) in zip(model.layers, layers):
        for j, n in enumerate(layer.neurons):
            assert all(close(n.w[i].data, W[i, j].item()) for i in range(len(n.w)))
            assert close(n.b.data, b[j].item())
    final = torch_scores(layers, X)
    assert accuracy(model, X, y) == ((final > 0) == (torch.tensor(y) > 0)).double().mean().item()


def test_accuracy_counts_the_points_whose_score_has_their_labels_sign():
    def model(x):  # score 0 on x1 = 0.2: not positive
        return Value(x[0] - 0.2)

    X = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.2, 5.0]]
    assert accuracy(model, X, [-1, 1, -1, -1]) == 3 / 4
    assert accuracy(model, X, [-1, 1, 1, -1]) == 1.0
    _, acc = hinge_loss(MLP(2, [1], seed=0), X, [-1, 1, -1, -1])
    assert acc == accuracy(MLP(2, [1], seed=0), X, [-1, 1, -1, -1])


def test_train_defaults_are_the_lectures():
    X, y = make_moons(6, seed=1)
    a, b = MLP(2, [2, 1], seed=3), MLP(2, [2, 1], seed=3)
    assert hinge_loss(a, X, y)[0].data == hinge_loss(a, X, y, 1e-4)[0].data
    assert len(train(a, X, y)) == 100
    train(b, X, y, 100, 1e-4)
    assert [p.data for p in a.parameters()] == [p.data for p in b.parameters()]
    assert (STEPS, SIZES, DATA_SEED, INIT_SEED) == (100, [16, 16, 1], 1337, 1337)


class _Cycle:
    """An object that refers to itself: only the cycle collector frees it."""

    def __init__(self):
        self.me = self


def test_train_pauses_automatic_gc_and_collects_each_steps_cycles():
    X, y = make_moons(6, seed=1)
    seen, refs = [], []

    def log(record):  # after each step: is automatic collection on, what survived
        seen.append((gc.isenabled(), [r() is None for r in refs]))
        refs.append(weakref.ref(_Cycle()))  # garbage at once, a cycle: freed by a collection

    paused = train(MLP(2, [2, 1], seed=3), X, y, 3, log=log)
    assert gc.isenabled()  # restored
    # automatic collection off while training; each step collected the previous cycle
    assert seen == [(False, []), (False, [True]), (False, [True, True])]
    assert refs[-1]() is None  # ... and the last step's too

    seen.clear(), refs.clear()
    gc.collect()
    plain = train(MLP(2, [2, 1], seed=3), X, y, 3, log=log, pause_gc=False)
    assert [on for on, _ in seen] == [True, True, True] and gc.isenabled()
    assert plain == paused  # the same numbers either way

    gc.disable()  # a caller who turned automatic collection off keeps it off
    try:
        train(MLP(2, [2, 1], seed=3), X, y, 1)
        assert not gc.isenabled()
    finally:
        gc.enable()
    with pytest.raises(ZeroDivisionError):  # an error mid-training restores it too
        train(MLP(2, [2, 1], seed=3), X, y, 2, log=lambda r: 1 / 0)
    assert gc.isenabled()


def test_modules_hold_their_parameters_and_follow_dlf_nn_conventions():
    model = MLP(2, [16, 16, 1], seed=0)
    params = model.parameters()
    assert len(params) == (2 + 1) * 16 + (16 + 1) * 16 + (16 + 1) * 1 == 337
    assert len({id(p) for p in params}) == 337
    first = model.layers[0].neurons[0]
    assert params[:3] == [*first.w, first.b] and first.b.data == 0.0
    assert all(-1 <= p.data < 1 for p in params)
    assert [n.nonlin for layer in model.layers for n in layer.neurons[:1]] == [True, True, False]
    assert len(model.modules()) == 1 + 3 + 16 + 16 + 1
    assert model.training and model.eval() is model
    assert not any(m.training for m in model.modules())
    assert model.train() is model and all(m.training for m in model.modules())
    model.train(0)
    assert model.training is False
    for p in params:
        p.grad = 1.5
    model.zero_grad()
    assert all(p.grad == 0.0 for p in params)
    assert Module().parameters() == [] and Module().modules() and Module.training is True
    assert repr(Neuron(3, nonlin=False)) == "LinearNeuron(3)"
    assert repr(Layer(2, 2)) == "Layer of [ReLUNeuron(2), ReLUNeuron(2)]"
    assert repr(MLP(1, [1], seed=0)) == "MLP of [Layer of [LinearNeuron(1)]]"
    assert repr(MLP(1, [1, 1], seed=0)) == \
        "MLP of [Layer of [ReLUNeuron(1)], Layer of [LinearNeuron(1)]]"


def test_modules_draw_from_the_seed():
    same = [p.data for p in MLP(2, [3, 1], seed=7).parameters()]
    assert same == [p.data for p in MLP(2, [3, 1], seed=7).parameters()]
    assert same != [p.data for p in MLP(2, [3, 1], seed=8).parameters()]
    rng = random.Random(9)
    w = [rng.uniform(-1, 1) for _ in range(2)]
    assert [p.data for p in Neuron(2, rng=random.Random(9)).w] == w
    layer = Layer(2, 2, rng=random.Random(9))
    assert [p.data for p in layer.neurons[0].w] == w
    assert [p.data for p in layer.neurons[1].w] != w
    assert Layer(2, 1, nonlin=False, rng=random.Random(0)).neurons[0].nonlin is False
    assert Layer(2, 1, rng=random.Random(0))([1.0, 2.0]).op == "relu"  # one neuron: a Value
    assert len(Layer(2, 3)([1.0, 2.0])) == 3
    assert Neuron(2)([1.0, 1.0]).op == "relu" and Neuron(2, nonlin=False)([1.0, 1.0]).op == "+"


@pytest.mark.parametrize("make,message", [
    (lambda: Neuron(0), "a Neuron needs nin >= 1 inputs, got 0"),
    (lambda: Neuron(True), "a Neuron needs nin >= 1 inputs, got True"),
    (lambda: Neuron(2.0), "a Neuron needs nin >= 1 inputs, got 2.0"),
    (lambda: Layer(2, 0), "a Layer needs nout >= 1 neurons, got 0"),
    (lambda: Layer(2, False), "a Layer needs nout >= 1 neurons, got False"),
    (lambda: Layer(2, 1.0), "a Layer needs nout >= 1 neurons, got 1.0"),
    (lambda: MLP(2, []), "an MLP needs at least one layer size"),
    (lambda: Neuron(2)([1.0]), "a Neuron of 2 inputs got 1"),
    (lambda: make_moons(1), "make_moons needs n >= 2 points, got 1"),
    (lambda: make_moons(True), "make_moons needs n >= 2 points, got True"),
    (lambda: make_moons(5.0), "make_moons needs n >= 2 points, got 5.0"),
    (lambda: make_moons(10, noise=-0.1), "make_moons needs noise >= 0, got -0.1"),
    (lambda: make_moons(10, noise=float("nan")), "make_moons needs noise >= 0, got nan"),
])
def test_refusals(make, message):
    with pytest.raises(DlfError) as err:
        make()
    assert str(err.value) == message


# --------------------------------------------------------------------------- moons


def test_moons_without_noise_lie_on_their_half_circles():
    X, y = make_moons(9, noise=0.0, seed=3)
    assert len(X) == len(y) == 9 and y.count(-1) == 4 and y.count(1) == 5
    angles = {-1: [], 1: []}
    for (x1, x2), label in zip(X, y):
        if label < 0:  # the upper moon: (cos t, sin t)
            assert close(x1 * x1 + x2 * x2, 1.0) and x2 >= -1e-12
            angles[-1].append(math.atan2(x2, x1))
        else:  # the lower one: (1 - cos t, 0.5 - sin t)
            assert close((x1 - 1) ** 2 + (x2 - 0.5) ** 2, 1.0) and x2 <= 0.5 + 1e-12
            angles[1].append(math.atan2(0.5 - x2, 1 - x1))
    for label, count in ((-1, 4), (1, 5)):  # t evenly spaced over [0, pi], ends included
        want = [math.pi * i / (count - 1) for i in range(count)]
        assert all(close(a, b) for a, b in zip(sorted(angles[label]), want))
    assert y != sorted(y)  # shuffled
    X, y = make_moons(4, noise=0.0)  # t = 0 and pi on each moon
    want = {(-1, 1.0, 0.0), (-1, -1.0, 0.0), (1, 0.0, 0.5), (1, 2.0, 0.5)}
    assert {(t, round(a, 12) + 0.0, round(b, 12) + 0.0) for (a, b), t in zip(X, y)} == want
    assert make_moons(2, noise=0.0) == ([[1.0, 0.0], [0.0, 0.5]], [-1, 1]) or \
        make_moons(2, noise=0.0) == ([[0.0, 0.5], [1.0, 0.0]], [1, -1])


def test_moons_noise_is_gaussian_with_the_given_deviation():
    clean, y0 = make_moons(2000, noise=0.0, seed=11)
    noisy, y1 = make_moons(2000, noise=0.1, seed=11)
    assert y0 == y1  # the same draws: noise only moves the points
    d = [b[i] - a[i] for a, b in zip(clean, noisy) for i in (0, 1)]
    mean = sum(d) / len(d)
    std = (sum((v - mean) ** 2 for v in d) / len(d)) ** 0.5
    assert abs(mean) < 0.01 and 0.095 < std < 0.105
    assert make_moons(50, seed=4) == make_moons(50, seed=4) != make_moons(50, seed=5)
    assert make_moons() == make_moons(100, 0.1, DATA_SEED)


@pytest.mark.slow
def test_the_lecture_mlp_reaches_every_point_of_the_moons():
    """100% train accuracy on 100 points, reached within 40 of the 100 steps (moons.py)."""
    result = train_moons()
    assert result.accuracy == 1.0 and result.steps == 100 and len(result.history) == 100
    assert result.first_perfect_step is not None and result.first_perfect_step < 40
    assert result.history[-1]["accuracy"] == 1.0  # its clock: test_train_moons_defaults_...
    assert len(result.X) == 100 and result.model.parameters()[0].data != 0


def test_train_moons_runs_the_lecture_setup_on_a_small_budget():
    result = train_moons(steps=2, n=8)
    X, y = make_moons(8, seed=DATA_SEED)
    model = MLP(2, SIZES, seed=INIT_SEED)
    history = train(model, X, y, 2)
    assert (result.X, result.y) == (X, y) and result.history == history
    assert [p.data for p in result.model.parameters()] == [p.data for p in model.parameters()]
    assert result.accuracy == accuracy(model, X, y) and result.steps == 2
    assert result.first_perfect_step == next(
        (r["step"] for r in history if r["accuracy"] == 1.0), None)
    seen = []
    other = train_moons(steps=1, n=4, seed=1, data_seed=2, log=seen.append)
    assert len(seen) == 1 and seen[0]["step"] == 0
    assert (other.X, other.y) == make_moons(4, seed=2)
    ref = MLP(2, SIZES, seed=1)
    train(ref, *make_moons(4, seed=2), 1)
    assert [p.data for p in other.model.parameters()] == [p.data for p in ref.parameters()]


def test_train_moons_defaults_and_its_clock(monkeypatch):
    from dlf.micro import moons

    ticks = iter([10.0, 12.5])
    monkeypatch.setattr(moons.time, "perf_counter", lambda: next(ticks))
    result = train_moons(steps=0)  # no training: the lecture's data and initial network
    assert (result.X, result.y) == make_moons(100, seed=DATA_SEED)
    assert [p.data for p in result.model.parameters()] == [
        p.data for p in MLP(2, SIZES, seed=INIT_SEED).parameters()]
    assert result.seconds == 2.5 and result.history == [] and result.steps == 0


# --------------------------------------------------------------------------- figures


def _artists(fig):
    from matplotlib.patches import Circle, FancyBboxPatch

    ax = fig.axes[0]
    boxes = [p for p in ax.patches if isinstance(p, FancyBboxPatch)]
    circles = [p for p in ax.patches if isinstance(p, Circle)]
    arrows = [t for t in ax.texts if t.get_text() == "" and t.arrow_patch]
    texts = [t for t in ax.texts if t.get_text()]
    return ax, boxes, circles, arrows, texts


def test_draw_places_every_value_operation_and_edge(tmp_path):
    from matplotlib.colors import to_rgba

    a, b = Value(2.0, label="a"), Value(-3.0, label="b")
    c = a * b
    c.label = "c"
    L = (c + a).tanh()  # a feeds * (next column) and + (two columns on): a bent edge
    L.backward()
    fig = draw(L, path=tmp_path / "g.png", title="the graph")
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax, boxes, circles, arrows, texts = _artists(fig)
    pos = layout(L)

    def centre(v):
        return pos[v][0] * COLUMN, -pos[v][1] * ROW

    # one box per Value, centred on its layout position, coloured by its role
    assert len(boxes) == len(pos) == 5
    found = {(round(p.get_x() + p.get_width() / 2, 9), round(p.get_y() + p.get_height() / 2, 9)):
             p for p in boxes}
    for v in pos:
        box = found[tuple(round(z, 9) for z in centre(v))]
        assert (box.get_width(), box.get_height()) == (BOX_W, BOX_H)
        role = LEAF if not v.prev else (ROOT if v is L else INNER)
        assert box.get_facecolor() == to_rgba(role)
    # one circle per operation, left of its result, and its op's name written in it
    ops = [v for v in pos if v.prev]
    assert sorted((round(p.center[0], 9), round(p.center[1], 9), p.radius) for p in circles) == \
        sorted((round(centre(v)[0] - OP_DX, 9), round(centre(v)[1], 9), OP_R) for v in ops)
    assert all(p.get_facecolor() == to_rgba(OP) for p in circles)
    written = {(t.get_text(), tuple(round(z, 9) for z in t.get_position())) for t in texts}
    for v in ops:
        x, y = centre(v)
        assert (v.op, (round(x - OP_DX, 9), round(y, 9))) in written
    for v in pos:  # each box: its label (if any), data and grad
        box = f"data {v.data:.4f}\ngrad {v.grad:.4f}"
        text = f"{v.label}\n{box}" if v.label else box
        assert (text, tuple(round(z, 9) for z in centre(v))) in written
    # edges: circle -> its result's box, each parent's box -> the circle; a parent two
    # columns back bends, and so does the second edge of a parent used twice
    want = set()
    for v in ops:
        x, y = centre(v)
        want.add(((x - OP_DX + OP_R, y), (x - BOX_W / 2, y), None))
        for p in v.prev:
            px, py = centre(p)
            bent = pos[v][0] - pos[p][0] > 1
            want.add(((px + BOX_W / 2, py), (x - OP_DX - OP_R, y), f"arc3,rad={BEND * bent}"))
    got = {(tuple(round(z, 9) for z in t.xyann), tuple(round(z, 9) for z in t.xy),
            t.arrowprops.get("connectionstyle")) for t in arrows}
    assert len(arrows) == 3 + 5 and got == {
        (tuple(round(z, 9) for z in p), tuple(round(z, 9) for z in q), s) for p, q, s in want}
    assert any(s == f"arc3,rad={BEND}" for _, _, s in want) and BEND != 0
    assert all(t.arrowprops == {**ARROW, **({"connectionstyle": t.arrowprops["connectionstyle"]}
                                            if "connectionstyle" in t.arrowprops else {})}
               for t in arrows)
    for box in boxes:
        assert box.get_edgecolor() == to_rgba(BOX["ec"]) and box.get_linewidth() == BOX["lw"]
        assert type(box.get_boxstyle()).__name__ == "Round"
    for circle in circles:
        assert circle.get_edgecolor() == to_rgba(CIRCLE["ec"])
        assert circle.get_linewidth() == CIRCLE["lw"]
    for t in texts:
        style = TITLE if t.get_text() == "the graph" else (
            OP_TEXT if t.get_text() in ("*", "+", "tanh") else TEXT)
        assert (t.get_ha(), t.get_va(), t.get_fontsize()) == (
            style["ha"], style["va"], style["fontsize"])
        if style is TEXT:
            assert t.get_fontfamily() == [TEXT["family"]]
    assert ax.get_position().bounds == (0, 0, 1, 1)  # the axes fill the figure
    # everything lies inside the picture, one data unit per inch, the title on top
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    assert tuple(fig.get_size_inches()) == pytest.approx((x1 - x0, y1 - y0))
    for p in boxes:
        assert x0 < p.get_x() and p.get_x() + p.get_width() < x1
        assert y0 < p.get_y() and p.get_y() + p.get_height() < y1
    assert x0 < min(p.center[0] - p.radius for p in circles)
    title = next(t for t in texts if t.get_text() == "the graph")
    top = max(p.get_y() + p.get_height() for p in boxes)
    assert top < title.get_position()[1] < y1
    assert title.get_position()[1] == pytest.approx(y1 - TITLE_H / 2)  # centred in its band
    assert title.get_position()[0] == pytest.approx((x0 + x1) / 2)
    assert not ax.axison
    buf = io.BytesIO()
    fig.savefig(buf, format="png")  # the figure renders on its own canvas
    png = buf.getvalue()
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (round((x1 - x0) * DPI), round((y1 - y0) * DPI))
    assert (tmp_path / "g.png").read_bytes() == png
    import matplotlib

    with matplotlib.rc_context({"figure.dpi": 50, "savefig.format": "svg"}):
        draw(L, path=tmp_path / "rc.png", title="the graph")  # notebooks change figure.dpi
    assert (tmp_path / "rc.png").read_bytes() == png


def test_draw_sizes_the_picture_to_the_graph():
    x = Value(0.5, label="x")
    y = x * x + x  # x twice in one operation: the second edge bends
    fig = draw(y)
    arrows = _artists(fig)[3]
    bends = sorted(t.arrowprops.get("connectionstyle") or "" for t in arrows)
    straight, bent = f"arc3,rad={BEND * False}", f"arc3,rad={BEND}"
    # circle -> box twice (no bend); x -> * straight, then bent (its second edge);
    # x * x -> + straight; x -> + bent (it skips a column)
    assert bends == sorted(["", "", straight, bent, straight, bent])
    width, height = fig.get_size_inches()
    assert width == pytest.approx(2 * (BOX_W / 2 + SIDE) + 2 * COLUMN)  # three columns
    assert height == pytest.approx(BOX_H + 2 * MARGIN)  # one row, no title
    titled = draw(y, title="t")
    assert titled.get_size_inches()[1] == pytest.approx(BOX_H + 2 * MARGIN + TITLE_H)
    assert [t.get_text() for t in titled.axes[0].texts if t.get_text() == "t"] == ["t"]
    a, b = Value(1.0), Value(2.0)
    two_rows = draw(a + b)
    assert two_rows.get_size_inches()[1] == pytest.approx(ROW + BOX_H + 2 * MARGIN)
    _, boxes, _, _, _ = _artists(two_rows)
    ys = sorted(p.get_y() for p in boxes)
    lo, hi = two_rows.axes[0].get_ylim()
    assert ys[0] - lo == pytest.approx(MARGIN) and hi - (ys[-1] + BOX_H) == pytest.approx(MARGIN)


def test_draw_refuses_a_graph_too_big_to_read():
    x = Value(1.0)
    y = x
    for _ in range(MAX_NODES):
        y = y + 1
    with pytest.raises(DlfError) as err:
        draw(y)
    assert str(err.value) == (f"draw: the graph has {2 * MAX_NODES + 1} Values; at most "
                              f"{MAX_NODES} can be drawn legibly")
    z = x.tanh()
    for _ in range((MAX_NODES - 2) // 2):
        z = z + 1
    assert len(layout(z)) == MAX_NODES and draw(z) is not None


def test_layout_puts_leaves_beside_their_first_user_and_the_root_right():
    a, b, c = Value(1.0), Value(2.0), Value(3.0)
    d = a * b
    e = d + c
    f = e.tanh()
    pos = layout(f)
    assert pos[f][0] == 3 and pos[e][0] == 2 and pos[d][0] == 1
    assert pos[a][0] == pos[b][0] == 0 and pos[c][0] == 1  # c beside e, not at the far left
    assert pos[f][1] == 0.0 and pos[a][1] == -0.5 and pos[b][1] == 0.5  # centred, in order
    assert {pos[d][1], pos[c][1]} == {-0.5, 0.5}
    x = Value(1.0)
    assert layout(x) == {x: (0, 0.0)}
    p, q = Value(1.0), Value(1.0)
    r, s = p * 2, q * 3
    t = s + r  # the users' order decides: s's parents above r's
    pos = layout(t)
    assert pos[s][1] < pos[r][1] and pos[q][1] < pos[p][1]
    # a leaf used twice sits between its users: b (user row -1), a (users -1 and 0), c (0), e (1)
    a, b, c, e = Value(1.0), Value(2.0), Value(3.0), Value(4.0)
    u1, u2, u3 = a * b, c * a, e.tanh()
    root = (u1 + u2) + u3
    pos = layout(root)
    assert [pos[v] for v in (u1, u2, u3)] == [(1, -1.0), (1, 0.0), (1, 1.0)]
    assert [pos[v] for v in (b, a, c, e)] == [(0, -1.5), (0, -0.5), (0, 0.5), (0, 1.5)]


def test_decision_grid_is_the_sign_of_the_model_on_a_mesh():
    def model(x):  # positive right of x1 = 0.5; exactly 0 on it (not positive)
        return Value(x[0] - 0.5)

    X = [[0.0, -1.0], [1.0, 2.0]]
    g1, g2, side = decision_grid(model, X, grid=5)
    assert g1 == pytest.approx([-0.5, 0.0, 0.5, 1.0, 1.5])
    assert g2 == pytest.approx([-1.5, -0.5, 0.5, 1.5, 2.5])
    assert g1[2] == 0.5 and side == [[0.0, 0.0, 0.0, 1.0, 1.0]] * 5
    g1, g2, side = decision_grid(lambda x: Value(x[1] - 1.0), X, grid=2)
    assert side == [[0.0, 0.0], [1.0, 1.0]] and g2 == [-1.5, 2.5]
    g1, g2, side = decision_grid(model, X)
    assert len(g1) == len(g2) == len(side) == len(side[0]) == 40
    for bad in (1, 2.0):
        with pytest.raises(DlfError, match=f"draw_boundary needs grid >= 2, got {bad!r}"):
            decision_grid(model, X, bad)


def test_draw_boundary(tmp_path):
    from matplotlib.colors import to_rgba

    X, y = make_moons(20, seed=0)
    model = MLP(2, [4, 1], seed=0)
    fig = draw_boundary(model, X, y, path=tmp_path / "b.png", grid=6, title="moons")
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    ax = fig.axes[0]
    assert ax.get_title() == "moons" and (ax.get_xlabel(), ax.get_ylabel()) == ("x1", "x2")
    g1, g2, _ = decision_grid(model, X, 6)
    assert ax.get_xlim() == pytest.approx((g1[0], g1[-1]))
    assert ax.get_ylim() == pytest.approx((g2[0], g2[-1]))
    regions, *scatters = ax.collections
    # one level between side 0 and side 1: score < 0 in -1's light colour, > 0 in +1's
    lo, mid, hi = regions.levels
    assert lo < 0 < mid < 1 < hi
    assert [tuple(c) for c in regions.get_facecolor()] == [
        to_rgba(CLASSES[-1][1], REGION_ALPHA), to_rgba(CLASSES[1][1], REGION_ALPHA)]
    assert [len(sc.get_offsets()) for sc in scatters] == [y.count(-1), y.count(1)]
    for sc, label in zip(scatters, (-1, 1)):
        assert sorted(map(tuple, sc.get_offsets().tolist())) == sorted(
            tuple(p) for p, t in zip(X, y) if t == label)
        assert tuple(sc.get_facecolor()[0]) == to_rgba(CLASSES[label][0])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["y = -1", "y = +1"]
    for sc in scatters:
        assert list(sc.get_sizes()) == [POINT["s"]]
        assert tuple(sc.get_edgecolor()[0]) == to_rgba(POINT["edgecolors"])
    assert tuple(fig.get_size_inches()) == BOUNDARY_SIZE
    assert draw_boundary(model, X, y, grid=3).axes[0].get_title() == \
        "decision boundary: the sign of the score"


def test_draw_boundary_evaluates_the_mesh_it_is_given(monkeypatch):
    from dlf.micro import figures

    grids = []
    real = figures.decision_grid
    monkeypatch.setattr(figures, "decision_grid",
                        lambda model, X, grid: grids.append(grid) or real(model, X, grid))
    X, y = [[0.0, 0.0], [1.0, 1.0]], [-1, 1]
    draw_boundary(lambda x: Value(x[0] - 0.5), X, y, grid=3)
    draw_boundary(lambda x: Value(x[0] - 0.5), X, y)
    assert grids == [3, 40]


def test_the_boundary_regions_follow_the_model():
    """A model positive right of x1 = 0.2: the +1 region's colour fills the right."""
    X = [[0.0, 0.0], [1.0, 1.0]]
    fig = draw_boundary(lambda x: Value(x[0] - 0.2), X, [-1, 1], grid=20)
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())  # (H, W, 4)
    ax = fig.axes[0]
    left = ax.transData.transform((-0.3, 0.9))
    right = ax.transData.transform((1.3, 0.9))
    h = image.shape[0]
    px_left = image[h - int(left[1]), int(left[0])][:3]
    px_right = image[h - int(right[1]), int(right[0])][:3]
    from matplotlib.colors import to_rgb

    def mixed(color):  # the region colour at REGION_ALPHA over the white axes
        return [round(255 * (REGION_ALPHA * c + 1 - REGION_ALPHA)) for c in to_rgb(color)]

    assert all(abs(int(a) - b) <= 2 for a, b in zip(px_left, mixed(CLASSES[-1][1])))
    assert all(abs(int(a) - b) <= 2 for a, b in zip(px_right, mixed(CLASSES[1][1])))


# --------------------------------------------------------------------------- benchmark


def test_benchmark_smoke(capsys):
    pytest.importorskip("micrograd")
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "micro_vs_micrograd", REPO / "benchmarks" / "micro_vs_micrograd.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--steps", "1", "--repeats", "2", "--points", "6"]) == 0
    out = capsys.readouterr().out
    assert out.count("dlf.micro") >= 2 and "micrograd" in out and "ratio" in out
    summary = bench.run(steps=2, repeats=1, n=6, out=lambda s: None)
    row = summary["repeats"][0]
    assert row["ratio"] == pytest.approx(row["dlf.micro"] / row["micrograd"])
    X, y = make_moons(6, seed=DATA_SEED)
    model = MLP(2, SIZES, seed=INIT_SEED)
    assert row["loss"] == train(model, X, y, 2)[-1]["loss"]
    assert summary["pause_gc"] is True
    plain = bench.run(steps=2, repeats=1, n=6, out=lambda s: None, pause_gc=False)
    assert plain["pause_gc"] is False and plain["repeats"][0]["loss"] == row["loss"]
    assert bench.main(["--steps", "1", "--repeats", "1", "--points", "6", "--plain-gc"]) == 0
    assert "(automatic collection)" in capsys.readouterr().out


# --------------------------------------------------------------------------- dlf report's row


def test_the_report_trains_the_moons_mlp_and_tabulates_it(monkeypatch):
    from dlf import report

    calls = []
    monkeypatch.setattr("dlf.micro.train_moons", lambda *a, **k: calls.append((a, k)) or "r")
    assert report.run_micro(quick=True) == "r" and report.run_micro(quick=False) == "r"
    assert calls == [((report.MICRO_QUICK_STEPS,), {}), ((), {})]  # full: the lecture's 100
    monkeypatch.undo()
    result = train_moons(steps=2, n=8)
    result.seconds = 12.4
    lines = report.micro_table(result)
    first = "-" if result.first_perfect_step is None else str(result.first_perfect_step)
    assert lines[0] == "## Scalar autograd (`dlf.micro`, lesson 0)" and lines[-1] == ""
    assert lines[2].count("|") == lines[3].count("|") == lines[4].count("|") == 9
    assert lines[4] == ("| MLP 2-16-16-1 on scalar Values, hinge loss + L2 | moons (8 points) | "
                        f"337 | {result.accuracy:.1%} | 100% (micrograd demo) | 2 | {first} | "
                        "12 s |")
    result.history[0]["accuracy"] = 1.0
    assert "| 2 | 0 | 12 s |" in report.micro_table(result)[4]
