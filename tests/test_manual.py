"""Manual backprop MLP (makemore part 4): hand-written gradients against autograd."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dlf.errors import DlfError
from dlf.manual import (
    GRAD_NAMES,
    ManualMLP,
    ManualMLPConfig,
    format_gradcheck_table,
    gradcheck,
    train_manual,
)
from tolerances import assert_close_to_scale, fp64_tol, network_terms

# The limit `dlf gradcheck` states (README) for float64 hand-written gradients. The rounding
# bound of these shapes is far below it: reductions of at most batch * n_hidden = 32 * 200
# terms of size < 1 give fp64_tol(6400) ~ 1.4e-12; anything near 1e-10 is a wrong formula.
TOL = 1e-10


def _batch(cfg, batch, seed=123):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, cfg.vocab_size, (batch, cfg.block_size), generator=g)
    targets = torch.randint(0, cfg.vocab_size, (batch,), generator=g)
    return idx, targets


def _autograd_grads(model, idx, targets):
    """Reference parameter gradients from autograd on forward_cache's loss."""
    params = dict(model.named_parameters())
    for p in params.values():
        p.requires_grad_(True)
    cache = model.forward_cache(idx, targets, update_running=False)
    cache["loss"].backward()
    ref = {"d" + k: p.grad.clone() for k, p in params.items()}
    for p in params.values():
        p.requires_grad_(False)
        p.grad = None
    return cache, ref


# ---------------------------------------------------------------------- gradcheck
def test_gradcheck_default_shapes_float64():
    rows = gradcheck()
    names = [r["name"] for r in rows]
    assert names[: len(GRAD_NAMES)] == list(GRAD_NAMES)
    fast = {"fast:d" + n for n in ("C", "W1", "b1", "W2", "b2", "bngain", "bnbias")}
    assert fast <= set(names)
    assert {"dlogits (fused)", "dhprebn (fused)"} <= set(names)
    for r in rows:
        assert r["approx"], r
        assert r["max_abs_diff"] < TOL, r
    # the steps the lecture shows as bit-exact stay bit-exact
    exact = {r["name"] for r in rows if r["exact"]}
    assert {"dlogprobs", "dprobs", "dlogits", "dW2", "db2"} <= exact


def test_gradcheck_without_b1():
    rows = gradcheck(batch_size=8, config=ManualMLPConfig(n_hidden=16, bias1=False))
    names = {r["name"] for r in rows}
    assert "db1" not in names and "fast:db1" not in names
    assert all(r["max_abs_diff"] < TOL for r in rows)


@settings(max_examples=15, deadline=None, derandomize=True, database=None)
@given(
    batch=st.integers(2, 24),
    block=st.integers(1, 5),
    n_embd=st.integers(1, 8),
    n_hidden=st.integers(1, 16),
    vocab=st.integers(2, 30),
    bias1=st.booleans(),
    seed=st.integers(0, 2**16),
)
@example(batch=2, block=1, n_embd=1, n_hidden=1, vocab=2, bias1=True, seed=0)
@example(batch=2, block=5, n_embd=8, n_hidden=16, vocab=30, bias1=True, seed=1)
def test_gradcheck_random_shapes(batch, block, n_embd, n_hidden, vocab, bias1, seed):
    cfg = ManualMLPConfig(
        vocab_size=vocab, block_size=block, n_embd=n_embd, n_hidden=n_hidden, bias1=bias1
    )
    rows = gradcheck(batch_size=batch, seed=seed, config=cfg)
    assert len(rows) == len(GRAD_NAMES) - (not bias1) + 6 + bias1 + 2
    for r in rows:
        assert r["max_abs_diff"] < TOL, (r, cfg, batch)


def test_batch_of_one_is_an_error_in_training_mode():
    cfg = ManualMLPConfig(n_hidden=8)
    model = ManualMLP(cfg, generator=torch.Generator().manual_seed(0))
    idx, targets = _batch(cfg, 1)
    with pytest.raises(DlfError):
        gradcheck(batch_size=1, config=cfg)
    with pytest.raises(DlfError):
        model.forward_cache(idx, targets)
    with pytest.raises(DlfError):
        model(idx, targets)
    with pytest.raises(DlfError):
        model.step(idx, targets, 0.1)
    logits, loss = model.eval()(idx, targets)  # eval uses running stats: fine
    assert logits.shape == (1, cfg.vocab_size) and torch.isfinite(loss)


def test_format_gradcheck_table():
    rows = gradcheck(batch_size=4, config=ManualMLPConfig(n_hidden=4))
    table = format_gradcheck_table(rows)
    lines = table.splitlines()
    assert lines[0].split(" | ")[0].strip() == "name"
    assert [c.strip() for c in lines[0].split("|")] == ["name", "exact", "approx", "maxdiff"]
    assert len(lines) == len(rows) + 2
    assert len({len(line) for line in lines}) == 1  # aligned
    assert "dhprebn (fused)" in table


# ---------------------------------------------------------------------- fast backward
@pytest.mark.parametrize("bias1", [True, False])
def test_backward_fast_matches_autograd(bias1):
    cfg = ManualMLPConfig(bias1=bias1)
    model = ManualMLP(cfg, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    idx, targets = _batch(cfg, 32)
    cache, ref = _autograd_grads(model, idx, targets)
    fast = model.backward_fast(cache, idx, targets)
    assert set(fast) == set(ref)
    for name, grad in fast.items():
        assert grad.shape == ref[name].shape, name
        assert (grad - ref[name]).abs().max() < TOL, name
    full = model.backward(cache, idx, targets)
    for name in fast:
        assert torch.allclose(full[name], fast[name], rtol=0, atol=TOL), name


def test_compact_forward_matches_forward_cache():
    cfg = ManualMLPConfig(n_hidden=32)
    model = ManualMLP(cfg, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    idx, targets = _batch(cfg, 16)
    cache = model.forward_cache(idx, targets, update_running=False)
    logits, loss = model(idx, targets)
    tol = fp64_tol(network_terms(16, 2, cfg.n_hidden))  # float64, two layers, 16 rows
    assert_close_to_scale(logits, cache["logits"], tol, msg="logits")
    assert_close_to_scale(loss, cache["loss"], tol, msg="loss")
    assert model(idx)[1] is None


# ---------------------------------------------------------------------- running stats / eval
def test_eval_is_deterministic_and_uses_running_stats():
    cfg = ManualMLPConfig(n_hidden=16, momentum=0.1)
    model = ManualMLP(cfg, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    expected_mean = torch.zeros(1, cfg.n_hidden, dtype=torch.float64)
    expected_var = torch.ones(1, cfg.n_hidden, dtype=torch.float64)
    for _ in range(5):
        idx, targets = _batch(cfg, 16, seed=int(torch.randint(0, 10**6, (1,), generator=g)))
        hprebn = model.C[idx].view(16, -1) @ model.W1 + model.b1
        expected_mean = 0.9 * expected_mean + 0.1 * hprebn.mean(0, keepdim=True)
        expected_var = 0.9 * expected_var + 0.1 * hprebn.var(0, keepdim=True, unbiased=True)
        model.step(idx, targets, 0.1)
    # float64: five updates of a mean / variance over 16 rows of a (block * n_embd)-term matmul
    tol = fp64_tol(5 * network_terms(16, 1, cfg.block_size * cfg.n_embd))
    assert_close_to_scale(model.bnmean_running, expected_mean, tol, msg="mean")
    assert_close_to_scale(model.bnvar_running, expected_var, tol, msg="var")

    model.eval()
    before = (model.bnmean_running.clone(), model.bnvar_running.clone())
    idx, _ = _batch(cfg, 8, seed=99)
    a, _ = model(idx)
    b, _ = model(idx)
    assert torch.equal(a, b)
    assert torch.equal(model.bnmean_running, before[0])  # eval does not touch the buffers
    assert torch.equal(model.bnvar_running, before[1])
    # eval logits are exactly the running-stat formula, row by row (batch independent)
    hprebn = model.C[idx].view(8, -1) @ model.W1 + model.b1
    bnraw = (hprebn - model.bnmean_running) * (model.bnvar_running + cfg.eps) ** -0.5
    manual = torch.tanh(model.bngain * bnraw + model.bnbias) @ model.W2 + model.b2
    tol = fp64_tol(network_terms(0, 2, cfg.n_hidden))  # per row: two layers, no batch sum
    assert_close_to_scale(a, manual, tol)
    assert_close_to_scale(model(idx[:1])[0], a[:1], tol)


def test_training_call_updates_running_stats_and_forward_cache_flag():
    cfg = ManualMLPConfig(n_hidden=8, momentum=0.5)
    model = ManualMLP(cfg, generator=torch.Generator().manual_seed(0))
    idx, targets = _batch(cfg, 8)
    model.forward_cache(idx, targets, update_running=False)
    assert torch.equal(model.bnmean_running, torch.zeros(1, 8))
    model(idx, targets)
    assert not torch.equal(model.bnmean_running, torch.zeros(1, 8))


def test_calibrate_running_stats():
    cfg = ManualMLPConfig(n_hidden=8)
    model = ManualMLP(cfg, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    idx, _ = _batch(cfg, 50)
    model.calibrate_running_stats(idx)
    hprebn = model.C[idx].view(50, -1) @ model.W1 + model.b1
    tol = fp64_tol(network_terms(50, 1, cfg.block_size * cfg.n_embd))
    assert_close_to_scale(model.bnmean_running, hprebn.mean(0, keepdim=True), tol)
    assert_close_to_scale(model.bnvar_running, hprebn.var(0, keepdim=True), tol)


# ---------------------------------------------------------------------- training
def _tiny_dataset(cfg, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randint(0, cfg.vocab_size, (n, cfg.block_size), generator=g)
    Y = (X[:, -1] + 1) % cfg.vocab_size  # learnable: next id after the last one
    return X, Y


def test_step_decreases_loss():
    cfg = ManualMLPConfig(vocab_size=11, n_hidden=64)
    model = ManualMLP(cfg, generator=torch.Generator().manual_seed(0))
    X, Y = _tiny_dataset(cfg)
    with torch.no_grad():
        initial = float(model.eval()(X, Y)[1])
    losses = train_manual(
        model,
        X,
        Y,
        steps=200,
        batch_size=32,
        lr_schedule=lambda i: 0.1 if i < 150 else 0.01,
        generator=torch.Generator().manual_seed(1),
    )
    assert len(losses) == 200 and all(isinstance(x, float) for x in losses)
    model.calibrate_running_stats(X)
    final = float(model.eval()(X, Y)[1])
    assert final < initial - 1.0, (initial, final)
    assert sum(losses[-20:]) / 20 < losses[0] - 1.0


def test_train_manual_is_deterministic_and_calls_back():
    cfg = ManualMLPConfig(vocab_size=7, n_hidden=16)
    X, Y = _tiny_dataset(cfg, n=32)
    runs, seen = [], []
    for _ in range(2):
        model = ManualMLP(cfg, generator=torch.Generator().manual_seed(0))
        runs.append(
            train_manual(
                model,
                X,
                Y,
                10,
                8,
                lambda i: 0.1,
                torch.Generator().manual_seed(5),
                callback=lambda i, loss: seen.append((i, loss)),
            )
        )
    assert runs[0] == runs[1]
    assert seen[:10] == list(enumerate(runs[0]))  # (step, its loss)
    with pytest.raises(DlfError):
        train_manual(model, X, Y, 1, 1, lambda i: 0.1, None)
    short = Y[:-1]
    with pytest.raises(DlfError):
        train_manual(model, X, short, 1, 4, lambda i: 0.1, None)


# ---------------------------------------------------------------------- model contract
def test_parameters_and_state_dict_round_trip():
    cfg = ManualMLPConfig()
    model = ManualMLP(cfg, generator=torch.Generator().manual_seed(0))
    names = [n for n, _ in model.named_parameters()]
    assert names == ["C", "W1", "b1", "W2", "b2", "bngain", "bnbias"]
    assert model.parameters()[1] is model.W1
    V, E, H, T = 27, 10, 200, 3
    assert model.num_parameters() == V * E + T * E * H + H + H * V + V + 2 * H
    assert model.block_size == 3 and model.training
    assert model.W1.shape == (T * E, H) and model.bngain.shape == (1, H)
    no_b1 = ManualMLP(ManualMLPConfig(bias1=False))
    assert "b1" not in dict(no_b1.named_parameters())
    assert no_b1.num_parameters() == model.num_parameters() - H

    X, Y = _tiny_dataset(cfg)
    train_manual(model, X, Y, 5, 16, lambda i: 0.1, torch.Generator().manual_seed(0))
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    assert set(sd) == set(names) | {"bnmean_running", "bnvar_running"}
    other = ManualMLP(cfg, generator=torch.Generator().manual_seed(42))
    other.load_state_dict(sd)
    model.eval()
    other.eval()
    assert torch.equal(model(X)[0], other(X)[0])
    for k, v in other.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_load_state_dict_errors_list_every_problem():
    model = ManualMLP(ManualMLPConfig(n_hidden=8))
    sd = dict(model.state_dict())
    del sd["W2"]
    sd["extra"] = torch.zeros(1)
    sd["C"] = torch.zeros(3, 3)
    with pytest.raises(DlfError) as info:
        model.load_state_dict(sd)
    msg = str(info.value)
    assert "W2" in msg and "extra" in msg and "C" in msg and "(3, 3)" in msg


def test_bad_inputs_raise_dlf_error():
    cfg = ManualMLPConfig(n_hidden=8)
    model = ManualMLP(cfg)
    idx, targets = _batch(cfg, 4)
    for bad in (idx.float(), idx[:, :2], idx.view(-1), idx + cfg.vocab_size, idx - 100):
        with pytest.raises(DlfError):
            model(bad)
    short, out_of_range = targets[:2], targets + cfg.vocab_size
    with pytest.raises(DlfError):
        model(idx, short)
    with pytest.raises(DlfError):
        model(idx, out_of_range)
    with pytest.raises(DlfError):
        model.step(idx, targets, float("nan"))
    for kwargs in ({"n_hidden": 0}, {"vocab_size": 2.5}, {"eps": 0.0}, {"momentum": 1.5}):
        with pytest.raises(DlfError):
            ManualMLPConfig(**kwargs)


def test_trainer_hooks_type_to_and_manual_step():
    cfg = ManualMLPConfig(n_hidden=8)
    assert cfg.type == "manual-mlp"
    assert "type" not in {f.name for f in dataclasses.fields(ManualMLPConfig)}
    model = ManualMLP(cfg, generator=torch.Generator().manual_seed(0))
    twin = ManualMLP(cfg, generator=torch.Generator().manual_seed(0))
    idx, targets = _batch(cfg, 8)
    assert model.manual_step(idx, targets, 0.1) == twin.step(idx, targets, 0.1)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))
    assert model.to("cpu") is model
    model.to(torch.float64)
    assert model.dtype == torch.float64
    assert all(t.dtype == torch.float64 for t in model.state_dict().values())
    assert isinstance(model.step(idx, targets, 0.1), float)


# ---------------------------------------------------------------------- against torch's BatchNorm
def _torch_reference(model, idx, targets, training):
    """The model's forward from torch.nn.functional (embedding, linear, batch_norm,
    cross_entropy) with its weights. Training mode with the lecture's Bessel-corrected
    batch variance is not a torch.nn.BatchNorm1d, so it is written as the closed form."""
    cfg = model.config
    n = idx.shape[0]
    hprebn = F.linear(F.embedding(idx, model.C).view(n, -1), model.W1.T, model.b1)
    gain, bias = model.bngain.view(-1), model.bnbias.view(-1)
    rm, rv = model.bnmean_running.view(-1).clone(), model.bnvar_running.view(-1).clone()
    if training and cfg.bessel:
        mean, var = hprebn.mean(0), hprebn.var(0, unbiased=True)
        hpreact = (hprebn - mean) / torch.sqrt(var + cfg.eps) * gain + bias
        F.batch_norm(hprebn, rm, rv, training=True, momentum=cfg.momentum)  # buffers only
    else:
        hpreact = F.batch_norm(hprebn, rm, rv, gain, bias, training=training,
                               momentum=cfg.momentum, eps=cfg.eps)
    logits = F.linear(torch.tanh(hpreact), model.W2.T, model.b2)
    return logits, F.cross_entropy(logits, targets), rm.view(1, -1), rv.view(1, -1)


@pytest.mark.parametrize("bessel", [True, False])
def test_forward_and_running_stats_match_torch_batch_norm(bessel):
    """Training forward (compact and cached), the running-statistics update (unbiased
    variance whatever the normalisation, as torch) and the eval forward against
    torch.nn.functional.batch_norm; float64."""
    cfg = ManualMLPConfig(vocab_size=7, n_embd=3, n_hidden=6, momentum=0.25, bessel=bessel,
                          eps=1e-3)
    tol = fp64_tol(network_terms(5, 2, cfg.n_hidden))
    for cached in (False, True):
        model = ManualMLP(cfg, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        with torch.no_grad():
            model.bnmean_running.normal_()
            model.bnvar_running.uniform_(0.5, 2.0)
        idx, targets = _batch(cfg, 5)
        logits_ref, loss_ref, rm, rv = _torch_reference(model, idx, targets, training=True)
        if cached:
            cache = model.forward_cache(idx, targets)
            logits, loss = cache["logits"], cache["loss"]
        else:
            logits, loss = model(idx, targets)
        assert_close_to_scale(logits, logits_ref, tol, msg="train logits")
        assert_close_to_scale(loss, loss_ref, tol, msg="train loss")
        assert_close_to_scale(model.bnmean_running, rm, tol, msg="running mean")
        assert_close_to_scale(model.bnvar_running, rv, tol, msg="running var")
    model.eval()
    logits_ref, loss_ref, _, _ = _torch_reference(model, idx, targets, training=False)
    logits, loss = model(idx, targets)
    assert_close_to_scale(logits, logits_ref, tol, msg="eval logits")
    assert_close_to_scale(loss, loss_ref, tol, msg="eval loss")


def test_gradcheck_with_torch_variance():
    """bessel=False (1/n, torch's normalisation): every hand-written and fused gradient
    against autograd."""
    cfg = ManualMLPConfig(vocab_size=6, block_size=2, n_embd=3, n_hidden=5, bessel=False)
    rows = gradcheck(batch_size=4, seed=3, config=cfg)
    assert len(rows) == len(GRAD_NAMES) + 7 + 2
    for r in rows:
        assert r["max_abs_diff"] < TOL, r


def test_step_is_sgd_with_autograd_gradients():
    """step(): forward, fast backward and p -= lr * grad, against autograd's gradients
    and the same update written out; it also puts the model in training mode."""
    cfg = ManualMLPConfig(vocab_size=6, n_embd=2, n_hidden=5, momentum=0.5)
    model = ManualMLP(cfg, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    idx, targets = _batch(cfg, 6)
    before = [p.clone() for p in model.parameters()]
    cache, ref = _autograd_grads(model, idx, targets)
    model.eval()
    loss = model.step(idx, targets, 0.5)
    assert model.training
    assert loss == float(cache["loss"].detach())
    for (name, p), p0 in zip(model.named_parameters(), before):
        assert_close_to_scale(p, p0 - 0.5 * ref["d" + name], fp64_tol(1000), msg=name)
    assert not torch.equal(model.bnmean_running, torch.zeros(1, 5))  # step updates them
    assert isinstance(model.step(idx, targets, 1), float)  # an int learning rate is fine


# ---------------------------------------------------------------------- initialisation
def test_initialisation_draws_in_the_documented_order():
    """C, W1, b1, W2, b2, bngain, bnbias from one generator, with the lecture's scales;
    init="standard" keeps the draws but zeroes b2 and bnbias, sets bngain to 1 and shrinks
    W2 ten times more."""
    cfg = ManualMLPConfig(vocab_size=5, block_size=2, n_embd=3, n_hidden=4)
    g = torch.Generator().manual_seed(9)
    C = torch.randn(5, 3, generator=g)
    W1 = torch.randn(6, 4, generator=g) * (5 / 3) / 6**0.5
    b1 = torch.randn(4, generator=g) * 0.1
    W2 = torch.randn(4, 5, generator=g) * 0.1
    b2 = torch.randn(5, generator=g) * 0.1
    bngain = torch.randn(1, 4, generator=g) * 0.1 + 1.0
    bnbias = torch.randn(1, 4, generator=g) * 0.1
    model = ManualMLP(cfg, generator=torch.Generator().manual_seed(9))
    expected = {"C": C, "W1": W1, "b1": b1, "W2": W2, "b2": b2, "bngain": bngain,
                "bnbias": bnbias, "bnmean_running": torch.zeros(1, 4),
                "bnvar_running": torch.ones(1, 4)}
    assert list(model.state_dict()) == list(expected)
    for name, t in model.state_dict().items():
        assert torch.allclose(t, expected[name], rtol=1e-6, atol=0), name
    std = ManualMLP(dataclasses.replace(cfg, init="standard"),
                    generator=torch.Generator().manual_seed(9))
    assert torch.equal(std.C, model.C) and torch.equal(std.W1, model.W1)
    assert torch.allclose(std.W2, W2 * 0.1, rtol=1e-6, atol=0)
    assert torch.equal(std.b2, torch.zeros(5)) and torch.equal(std.bnbias, torch.zeros(1, 4))
    assert torch.equal(std.bngain, torch.ones(1, 4))
    no_b1 = ManualMLP(dataclasses.replace(cfg, bias1=False))
    assert no_b1.b1 is None and list(no_b1.state_dict())[:3] == ["C", "W1", "W2"]


def test_dtype_device_and_to():
    cfg = ManualMLPConfig(vocab_size=5, n_embd=2, n_hidden=3)
    model = ManualMLP(cfg, dtype=torch.float64)
    assert model.dtype == torch.float64 and model.device == torch.device("cpu")
    assert all(t.dtype == torch.float64 for t in model.state_dict().values())
    assert model.to(dtype=torch.float32) is model
    assert all(t.dtype == torch.float32 for t in model.state_dict().values())
    # the meta device exists in every build: to(device) moves every tensor, dtype kept
    # (no arithmetic on meta tensors here: the first one loads torch's meta kernels, slowly)
    model.to("meta")
    assert model.device == torch.device("meta") and model.dtype == torch.float32
    assert all(t.device.type == "meta" and t.dtype == torch.float32
               for t in model.state_dict().values())


# ---------------------------------------------------------------------- messages
def _message(call, *args, **kwargs) -> str:
    with pytest.raises(DlfError) as info:
        call(*args, **kwargs)
    return str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vocab_size": 0}, "ManualMLPConfig.vocab_size must be >= 1, got 0"),
        ({"block_size": True}, "ManualMLPConfig.block_size must be an integer, got True"),
        ({"n_embd": 1.0}, "ManualMLPConfig.n_embd must be an integer, got 1.0"),
        ({"n_hidden": -2}, "ManualMLPConfig.n_hidden must be >= 1, got -2"),
        ({"bias1": 1}, "ManualMLPConfig.bias1 must be true or false, got 1"),
        ({"eps": 0.0}, "ManualMLPConfig.eps must be > 0, got 0.0"),
        ({"eps": "1e-5"}, "ManualMLPConfig.eps must be a number, got '1e-5'"),
        ({"eps": float("inf")}, "ManualMLPConfig.eps must be a finite number, got inf"),
        ({"init": "xavier"}, "ManualMLPConfig.init must be check or standard, got 'xavier'"),
        ({"momentum": -0.1}, "ManualMLPConfig.momentum must be in [0, 1], got -0.1"),
        ({"momentum": 1.5}, "ManualMLPConfig.momentum must be in [0, 1], got 1.5"),
        ({"momentum": True}, "ManualMLPConfig.momentum must be a number, got True"),
        ({"momentum": "0.1"}, "ManualMLPConfig.momentum must be a number, got '0.1'"),
    ],
)
def test_config_messages(kwargs, message):
    assert _message(ManualMLPConfig, **kwargs) == message


def test_config_accepts_its_boundaries():
    for kwargs in ({"momentum": 0.0}, {"momentum": 1.0}, {"momentum": 1}, {"eps": 1},
                   {"init": "standard"}, {"bias1": False}, {"vocab_size": 1}):
        ManualMLPConfig(**kwargs)


def test_model_and_input_messages():
    cfg = ManualMLPConfig(vocab_size=5, block_size=2, n_embd=2, n_hidden=3)
    assert _message(ManualMLP, {"n_hidden": 3}) == "config must be a ManualMLPConfig, got dict"
    assert _message(ManualMLP, cfg, dtype=torch.int32) == (
        "dtype must be a floating-point torch.dtype, got torch.int32")
    assert _message(ManualMLP, cfg, dtype="float32") == (
        "dtype must be a floating-point torch.dtype, got 'float32'")
    model = ManualMLP(cfg)
    idx = torch.tensor([[0, 1], [2, 4], [3, 3]])
    targets = torch.tensor([0, 4, 2])
    assert _message(model, [[0, 1]]) == "idx must be a tensor, got list"
    assert _message(model, idx.float()) == "idx must hold integer token ids, got dtype torch.float32"
    assert _message(model, idx.to(torch.complex64)) == (
        "idx must hold integer token ids, got dtype torch.complex64")
    assert _message(model, idx.bool()) == "idx must hold integer token ids, got dtype torch.bool"
    assert _message(model, idx[:, :1]) == "idx must have shape (B, 2), got (3, 1)"
    assert _message(model, idx.view(-1)) == "idx must have shape (B, 2), got (6,)"
    assert _message(model, idx[:0]) == "idx is an empty batch"
    assert _message(model, idx - 1) == "idx holds token ids outside [0, 5)"
    assert _message(model, idx + 1) == "idx holds token ids outside [0, 5)"
    assert _message(model, idx, targets.tolist()) == "targets must be a tensor, got list"
    assert _message(model, idx, targets.double()) == (
        "targets must hold integer token ids, got dtype torch.float64")
    assert _message(model, idx, targets.to(torch.complex64)) == (
        "targets must hold integer token ids, got dtype torch.complex64")
    assert _message(model, idx, targets.bool()) == (
        "targets must hold integer token ids, got dtype torch.bool")
    assert _message(model, idx, targets[:2]) == "targets must have shape (3,), got (2,)"
    assert _message(model, idx, targets.view(3, 1)) == "targets must have shape (3,), got (3, 1)"
    assert _message(model, idx, targets - 1) == "targets hold token ids outside [0, 5)"
    assert _message(model, idx, targets + 1) == "targets hold token ids outside [0, 5)"
    assert _message(model.forward_cache, idx[:1], targets[:1]) == (
        "BatchNorm on batch statistics needs a batch of at least 2 in training mode, got 1 "
        "(use eval() for single examples)")
    assert _message(model.calibrate_running_stats, idx[:1]).startswith(
        "BatchNorm on batch statistics needs a batch of at least 2")
    # the smallest valid inputs pass: ids 0 and V - 1, int32, a batch of two
    logits, loss = model(torch.tensor([[0, 4], [4, 0]], dtype=torch.int32),
                         torch.tensor([4, 0], dtype=torch.int32))
    assert logits.shape == (2, 5) and torch.isfinite(loss)
    assert _message(model.to, dtype=torch.int64) == (
        "dtype must be a floating-point torch.dtype, got torch.int64")
    assert _message(model.to, torch.int64) == (
        "dtype must be a floating-point torch.dtype, got torch.int64")
    assert _message(model.step, idx, targets, "0.1") == (
        "learning rate must be a finite number, got '0.1'")
    assert _message(model.step, idx, targets, float("inf")) == (
        "learning rate must be a finite number, got inf")
    grads = model.backward_fast(model.forward_cache(idx, targets), idx, targets)
    del grads["dW2"]
    assert _message(model.sgd_update, grads, 0.1) == "missing gradient 'dW2' for parameter 'W2'"


def test_load_state_dict_message_lists_every_problem_in_order():
    model = ManualMLP(ManualMLPConfig(vocab_size=5, block_size=2, n_embd=2, n_hidden=3))
    assert _message(model.load_state_dict, [1]) == "state_dict must be a dict, got list"
    sd = dict(model.state_dict())
    del sd["W2"], sd["bnbias"]
    sd["zeta"], sd["alpha"] = torch.zeros(1), torch.zeros(1)
    sd["C"] = torch.zeros(3, 3)
    sd["b1"] = [0.0, 0.0, 0.0]
    sd["b2"] = torch.zeros(2)  # after a missing key: every key is still checked
    assert _message(model.load_state_dict, sd) == (
        "cannot load state_dict into ManualMLP: missing keys: W2, bnbias; "
        "unexpected keys: alpha, zeta; C: shape (3, 3) does not match model (5, 2); "
        "b1: expected a tensor, got list; b2: shape (2,) does not match model (5,)")


def test_train_manual_messages():
    cfg = ManualMLPConfig(vocab_size=5, block_size=2, n_embd=2, n_hidden=3)
    model = ManualMLP(cfg)
    X, Y = torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, dtype=torch.long)
    lr = lambda i: 0.1
    assert _message(train_manual, "model", X, Y, 1, 2, lr) == (
        "train_manual needs a ManualMLP, got str")
    for steps in (-1, True, 1.0):
        assert _message(train_manual, model, X, Y, steps, 2, lr) == (
            f"steps must be a non-negative integer, got {steps!r}")
    for batch_size in (1, True, 2.0):
        assert _message(train_manual, model, X, Y, 1, batch_size, lr) == (
            f"batch_size must be an integer >= 2, got {batch_size!r}")
    assert _message(train_manual, model, X, Y, 1, 2, 0.1) == (
        "lr_schedule must be callable: step -> learning rate")
    assert _message(train_manual, model, X.tolist(), Y, 1, 2, lr) == "X and Y must be tensors"
    assert _message(train_manual, model, X, Y.tolist(), 1, 2, lr) == "X and Y must be tensors"
    bad = ((X.view(-1), Y), (X.view(4, 2, 1), Y), (X, Y.view(4, 1)), (X, Y.view(2, 2)),
           (X, Y[:3]), (X[:0], Y[:0]))
    for bad_x, bad_y in bad:
        assert _message(train_manual, model, bad_x, bad_y, 1, 2, lr) == (
            f"X must be (N, block_size) and Y (N,) with N > 0, got {tuple(bad_x.shape)} "
            f"and {tuple(bad_y.shape)}")
    assert train_manual(model, X, Y, 0, 2, lr) == []  # zero steps: nothing to do


def test_train_manual_samples_rows_with_its_generator_and_schedule():
    """Step i trains on rows randint(0, N, (batch,)) drawn from the generator, with
    lr_schedule(i): the same as calling step() by hand."""
    cfg = ManualMLPConfig(vocab_size=5, block_size=2, n_embd=2, n_hidden=3)
    X, Y = _tiny_dataset(cfg, n=9)
    a = ManualMLP(cfg, generator=torch.Generator().manual_seed(0))
    b = ManualMLP(cfg, generator=torch.Generator().manual_seed(0))
    lrs = []
    losses = train_manual(a, X, Y, 3, 4, lambda i: lrs.append(i) or 0.1 * (i + 1),
                          torch.Generator().manual_seed(8))
    assert lrs == [0, 1, 2]
    g = torch.Generator().manual_seed(8)
    by_hand = []
    for i in range(3):
        ix = torch.randint(0, 9, (4,), generator=g)
        by_hand.append(b.step(X[ix], Y[ix], 0.1 * (i + 1)))
    assert losses == by_hand
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


# ---------------------------------------------------------------------- gradcheck helpers
def test_gradcheck_rows_and_compare():
    assert _message(gradcheck, batch_size=True) == "batch_size must be an integer, got True"
    assert _message(gradcheck, batch_size=4.0) == "batch_size must be an integer, got 4.0"
    rows = gradcheck(batch_size=3, seed=1,
                     config=ManualMLPConfig(vocab_size=4, block_size=1, n_embd=2, n_hidden=2))
    assert [r["name"] for r in rows][-9:] == [
        "fast:dC", "fast:dW1", "fast:db1", "fast:dW2", "fast:db2", "fast:dbngain",
        "fast:dbnbias", "dlogits (fused)", "dhprebn (fused)"]
    assert all(set(r) == {"name", "exact", "approx", "max_abs_diff"} for r in rows)
    # a wrong gradient is reported as such
    from dlf.manual.mlp import _compare

    ref = torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert _compare("x", ref.clone(), ref) == {
        "name": "x", "exact": True, "approx": True, "max_abs_diff": 0.0}
    assert _compare("x", ref + 1e-12, ref) == {
        "name": "x", "exact": False, "approx": True, "max_abs_diff": pytest.approx(1e-12)}
    assert _compare("x", ref * 2, ref) == {
        "name": "x", "exact": False, "approx": False, "max_abs_diff": 2.0}
    assert _compare("x", ref, None) == {
        "name": "x", "exact": False, "approx": False, "max_abs_diff": 2.0}
    assert _compare("x", torch.zeros(2, dtype=torch.float64), None)["exact"]
    assert _compare("x", ref, ref[:1]) == {
        "name": "x", "exact": False, "approx": False, "max_abs_diff": float("inf")}
    assert _compare("x", torch.zeros(0), torch.zeros(0))["max_abs_diff"] == 0.0


def test_format_gradcheck_table_exact_layout():
    rows = [{"name": "dW1", "exact": True, "approx": True, "max_abs_diff": 0.0},
            {"name": "fast:dbngain", "exact": False, "approx": True, "max_abs_diff": 1.5e-17}]
    assert format_gradcheck_table(rows).splitlines() == [
        "name         | exact | approx |   maxdiff",
        "-------------+-------+--------+----------",
        "dW1          |  True |   True | 0.000e+00",
        "fast:dbngain | False |   True | 1.500e-17",
    ]


def test_gradcheck_rows_are_the_comparison_on_the_documented_model_and_data():
    """gradcheck(batch, seed, config) builds the model and draws idx, then targets, from one
    generator seeded with seed (seed 0 by default) and compares ManualMLP.backward with
    autograd: the same comparison done by hand gives the same rows, bit for bit."""
    cfg = ManualMLPConfig(vocab_size=5, block_size=2, n_embd=3, n_hidden=4)
    from dlf.manual.mlp import _compare

    for seed, rows in ((0, gradcheck(batch_size=6, config=cfg)),
                       (5, gradcheck(batch_size=6, seed=5, config=cfg))):
        g = torch.Generator().manual_seed(seed)
        model = ManualMLP(cfg, generator=g, dtype=torch.float64)
        idx = torch.randint(0, 5, (6, 2), generator=g)
        targets = torch.randint(0, 5, (6,), generator=g)
        cache, ref = _autograd_grads(model, idx, targets)
        grads = model.backward(cache, idx, targets)
        by_name = {r["name"]: r for r in rows}
        for name in ref:
            assert by_name[name] == _compare(name, grads[name], ref[name]), (seed, name)
    assert rows != gradcheck(batch_size=6, seed=0, config=cfg)  # the seed matters


def test_default_config_device_and_any_integer_ids():
    """ManualMLP() uses ManualMLPConfig()'s defaults; device="cpu" is accepted; ids of any
    integer dtype (uint8 too, which plain indexing would take for a mask) are token ids."""
    model = ManualMLP(generator=torch.Generator().manual_seed(0), device="cpu")
    assert model.config == ManualMLPConfig() and model.device == torch.device("cpu")
    assert model.C.shape == (27, 10) and model.W1.shape == (30, 200)
    idx, targets = _batch(model.config, 4)
    logits, loss = model(idx, targets)
    for dtype in (torch.uint8, torch.int8, torch.int16, torch.int32):
        other, other_loss = model(idx.to(dtype), targets.to(dtype))
        assert torch.equal(other, logits) and torch.equal(other_loss, loss), dtype
