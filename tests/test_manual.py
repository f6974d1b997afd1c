"""Manual backprop MLP (makemore part 4): hand-written gradients against autograd."""

import dataclasses

import pytest
import torch
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
    assert [i for i, _ in seen[:10]] == list(range(10))
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
