"""dlf.nn against torch.nn (forward and backward) and against the Module contract."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from dlf.errors import DlfError
from dlf.nn import (
    GELU,
    BatchNorm1d,
    Dropout,
    Embedding,
    FlattenConsecutive,
    GRUCell,
    LayerNorm,
    Linear,
    Module,
    ModuleList,
    ReLU,
    ReLU2,
    RMSNorm,
    RNNCell,
    Sequential,
    Tanh,
)
from tolerances import assert_close_to_scale, eps, fp32_tol

HYP = settings(max_examples=12, deadline=None, derandomize=True)

# Tolerances. Linear is checked entry by entry against the summation bound of tolerances.py
# (n terms differ by at most n * eps * sum |terms|, and sum |terms| is |x| @ |W| exactly).
# The other layers keep torch.testing.assert_close's float32 defaults (rtol 1.3e-6, about
# 11 eps; atol 1e-5): they are elementwise, or normalise over at most 24 values whose terms
# are O(1) after centring, where the bound fp32_tol(24) * 3 = 8.6e-6 stays under atol.


def assert_within_sum_bound(actual, expected, n_terms: int, abs_terms: torch.Tensor) -> None:
    """|actual - expected| <= fp32_tol(n_terms) * abs_terms, entry by entry, where abs_terms
    holds each entry's sum of |terms| (see tolerances.py)."""
    bound = fp32_tol(n_terms) * abs_terms.detach()
    diff = (actual.detach() - expected.detach()).abs()
    assert bool((diff <= bound).all()), f"max excess {(diff - bound).max().item():.3g}"


def _leaf(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).requires_grad_()


def _twin(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_()


def _backward(out: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """Backpropagate a fixed random upstream gradient; returns it."""
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    out.backward(g)
    return g


# -- Linear --------------------------------------------------------------------------------


def _check_linear(fan_in: int, fan_out: int, lead: tuple[int, ...], bias: bool) -> None:
    ours = Linear(fan_in, fan_out, bias=bias, generator=torch.Generator().manual_seed(3))
    ref = torch.nn.Linear(fan_in, fan_out, bias=bias)
    with torch.no_grad():
        ref.weight.copy_(ours.weight.T)
        if bias:
            ref.bias.copy_(ours.bias)
    x = _leaf(*lead, fan_in)
    xr = _twin(x)
    out, out_ref = ours(x), ref(xr)
    assert out.shape == (*lead, fan_out)
    W = ours.weight.detach()  # (fan_in, fan_out)
    b_abs = ours.bias.detach().abs() if bias else 0.0
    assert_within_sum_bound(out, out_ref, fan_in + 1, x.detach().abs() @ W.abs() + b_abs)
    g = _backward(out)
    _backward(out_ref)
    rows = math.prod(lead)
    g2, x2 = g.reshape(rows, fan_out), x.detach().reshape(rows, fan_in)
    assert_within_sum_bound(x.grad, xr.grad, fan_out, g.abs() @ W.abs().T)
    assert_within_sum_bound(ours.weight.grad, ref.weight.grad.T, rows, x2.abs().T @ g2.abs())
    if bias:
        assert_within_sum_bound(ours.bias.grad, ref.bias.grad, rows, g2.abs().sum(0))


def test_linear_matches_torch_forward_and_backward():
    _check_linear(5, 3, (4,), bias=True)
    _check_linear(6, 2, (2, 3), bias=False)


@HYP
@given(
    fan_in=st.integers(1, 12),
    fan_out=st.integers(1, 12),
    lead=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    bias=st.booleans(),
)
def test_linear_parity_random_shapes(fan_in, fan_out, lead, bias):
    _check_linear(fan_in, fan_out, tuple(lead), bias)


def test_linear_init_scale_and_shapes():
    lin = Linear(400, 300, gain=5 / 3, generator=torch.Generator().manual_seed(0))
    assert lin.weight.shape == (400, 300) and lin.bias.shape == (300,)
    assert lin.weight.is_leaf and lin.weight.requires_grad
    assert torch.equal(lin.bias, torch.zeros(300))
    expected_std = (5 / 3) / math.sqrt(400)
    assert abs(lin.weight.std().item() / expected_std - 1) < 0.02
    assert abs(lin.weight.mean().item()) < 0.02 * expected_std
    # the generator makes initialisation reproducible
    again = Linear(400, 300, gain=5 / 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(lin.weight, again.weight)


@pytest.mark.parametrize("args", [(-1, 3), (3, 0), (2.5, 3)])
def test_linear_rejects_bad_dims(args):
    with pytest.raises(DlfError):
        Linear(*args)


# -- Embedding -----------------------------------------------------------------------------


def test_embedding_matches_torch():
    ours = Embedding(11, 5, generator=torch.Generator().manual_seed(0))
    assert ours.weight.shape == (11, 5)
    ref = torch.nn.Embedding(11, 5)
    with torch.no_grad():
        ref.weight.copy_(ours.weight)
    idx = torch.tensor([[0, 3, 3, 10], [7, 0, 1, 2], [5, 5, 5, 5]])
    out, out_ref = ours(idx), ref(idx)
    assert out.shape == (3, 4, 5)
    assert_close(out, out_ref)
    _backward(out)
    _backward(out_ref)
    assert_close(ours.weight.grad, ref.weight.grad)


def test_embedding_init_is_standard_normal():
    w = Embedding(1000, 64, generator=torch.Generator().manual_seed(1)).weight
    assert abs(w.mean().item()) < 0.01 and abs(w.std().item() - 1) < 0.01


# -- BatchNorm1d ---------------------------------------------------------------------------


def _bn_pair(C: int, momentum: float = 0.1, affine: bool = True):
    ours = BatchNorm1d(C, momentum=momentum, affine=affine)
    ref = torch.nn.BatchNorm1d(C, momentum=momentum, affine=affine)
    if affine:
        g = torch.Generator().manual_seed(7)
        with torch.no_grad():
            ours.weight.copy_(torch.rand(C, generator=g) + 0.5)
            ours.bias.copy_(torch.randn(C, generator=g))
            ref.weight.copy_(ours.weight)
            ref.bias.copy_(ours.bias)
    return ours, ref


def _bn_ref_call(ref, x):
    # torch wants channels in dim 1: (N, C, L); ours takes channels last (N, L, C)
    return ref(x) if x.ndim == 2 else ref(x.transpose(1, 2)).transpose(1, 2)


def _check_batchnorm(shape: tuple[int, ...], momentum: float, affine: bool, steps: int) -> None:
    C = shape[-1]
    ours, ref = _bn_pair(C, momentum, affine)
    for step in range(steps):
        x = _leaf(*shape, seed=100 + step) * 3 + 1
        x = x.detach().requires_grad_()
        xr = _twin(x)
        out, out_ref = ours(x), _bn_ref_call(ref, xr)
        assert out.shape == x.shape
        assert_close(out, out_ref)
        _backward(out, seed=step)
        _backward(out_ref, seed=step)
        assert_close(x.grad, xr.grad)
        if affine:
            assert_close(ours.weight.grad, ref.weight.grad)
            assert_close(ours.bias.grad, ref.bias.grad)
            ours.zero_grad()
            ref.zero_grad()
        assert_close(ours.running_mean, ref.running_mean)
        assert_close(ours.running_var, ref.running_var)
    ours.eval()
    ref.eval()
    x = _leaf(*shape, seed=999)
    xr = _twin(x)
    out, out_ref = ours(x), _bn_ref_call(ref, xr)
    assert_close(out, out_ref)
    _backward(out)
    _backward(out_ref)
    assert_close(x.grad, xr.grad)
    before = ours.running_mean.clone()
    ours(x)
    assert torch.equal(ours.running_mean, before), "eval must not update running stats"


def test_batchnorm_2d_matches_torch_train_eval_and_running_stats():
    _check_batchnorm((16, 6), momentum=0.1, affine=True, steps=5)


def test_batchnorm_3d_matches_torch_on_transposed_input():
    _check_batchnorm((4, 5, 6), momentum=0.1, affine=True, steps=5)


def test_batchnorm_without_affine_has_only_buffers():
    bn = BatchNorm1d(3, affine=False)
    assert bn.parameters() == []
    assert [n for n, _ in bn.named_buffers()] == ["running_mean", "running_var"]
    _check_batchnorm((8, 3), momentum=0.1, affine=False, steps=2)


@HYP
@given(
    n=st.integers(2, 6),
    length=st.one_of(st.none(), st.integers(1, 4)),
    c=st.integers(1, 5),
    momentum=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
)
def test_batchnorm_parity_random_shapes(n, length, c, momentum):
    shape = (n, c) if length is None else (n, length, c)
    _check_batchnorm(shape, momentum=momentum, affine=True, steps=2)


def test_batchnorm_input_errors():
    bn = BatchNorm1d(4)
    one_row, wrong_width = torch.randn(1, 4), torch.randn(3, 5)
    with pytest.raises(DlfError, match="more than 1 value"):
        bn(one_row)
    with pytest.raises(DlfError, match="expects input"):
        bn(wrong_width)
    with pytest.raises(DlfError):
        BatchNorm1d(4, momentum=1.5)
    bn.eval()
    assert bn(one_row).shape == (1, 4)  # eval needs no batch statistics


# -- LayerNorm -----------------------------------------------------------------------------


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(4, 8), (2, 3, 8)])
def test_layernorm_matches_torch(shape, bias, fused):
    C = shape[-1]
    ours = LayerNorm(C, bias=bias, fused=fused)
    ref = torch.nn.LayerNorm(C, bias=bias)
    assert torch.equal(ours.weight, torch.ones(C))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        ours.weight.copy_(torch.randn(C, generator=g))
        ref.weight.copy_(ours.weight)
        if bias:
            ours.bias.copy_(torch.randn(C, generator=g))
            ref.bias.copy_(ours.bias)
    x = _leaf(*shape)
    xr = _twin(x)
    out, out_ref = ours(x), ref(xr)
    assert_close(out, out_ref)
    _backward(out)
    _backward(out_ref)
    assert_close(x.grad, xr.grad)
    assert_close(ours.weight.grad, ref.weight.grad)
    if bias:
        assert_close(ours.bias.grad, ref.bias.grad)
    else:
        assert ours.bias is None and len(ours.parameters()) == 1


# -- RMSNorm -------------------------------------------------------------------------------


def _rmsnorm_pair(C: int, fused: bool, eps: float = 1e-5):
    """Our RMSNorm and torch.nn.RMSNorm with the same random gain and the same eps."""
    ours, ref = RMSNorm(C, eps=eps, fused=fused), torch.nn.RMSNorm(C, eps=eps)
    assert torch.equal(ours.weight, torch.ones(C))
    with torch.no_grad():
        ours.weight.copy_(torch.randn(C, generator=torch.Generator().manual_seed(5)))
        ref.weight.copy_(ours.weight)
    return ours, ref


@pytest.mark.parametrize("fused", [False, True], ids=["written-out", "fused"])
@pytest.mark.parametrize("shape", [(6, 16), (2, 5, 16)], ids=["2d", "3d"])
def test_rmsnorm_matches_torch_fp32(shape, fused):
    """Forward and gradients against torch.nn.RMSNorm. The mean of C squares (positive terms)
    is within fp32_tol(C) of exact relative to itself; rsqrt halves that and three roundings
    follow, so outputs agree to fp32_tol(C + 3) entry by entry. The input gradient sums C
    terms of both signs and the gain's sums N rows: each is compared against its terms."""
    C, N = shape[-1], math.prod(shape[:-1])
    ours, ref = _rmsnorm_pair(C, fused)
    x = _leaf(*shape) * 3
    x = x.detach().requires_grad_()
    xr = _twin(x)
    out, out_ref = ours(x), ref(xr)
    torch.testing.assert_close(out, out_ref, rtol=fp32_tol(C + 3), atol=0.0)
    g = _backward(out)
    _backward(out_ref)
    assert_close_to_scale(x.grad, xr.grad, fp32_tol(2 * C + 8), "dx")
    x_hat = (xr * torch.rsqrt(xr.pow(2).mean(-1, keepdim=True) + 1e-5)).detach()
    scale = (g.abs() * x_hat.abs()).reshape(N, C).sum(0).max().item()
    assert_close_to_scale(ours.weight.grad, ref.weight.grad, fp32_tol(N + 3), "dw", scale)


# torch.nn.RMSNorm warns that it cannot use its kernel for bf16 input with a float32 gain
@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")
@pytest.mark.parametrize("fused", [False, True], ids=["written-out", "fused"])
@pytest.mark.parametrize("shape", [(6, 16), (2, 5, 16)], ids=["2d", "3d"])
def test_rmsnorm_matches_torch_under_bf16_autocast(shape, fused):
    """bf16 activations, float32 gain, as in a model under autocast. Both sides compute in
    float32 and round once to bf16, so outputs and input gradients differ by at most one bf16
    rounding (eps(bf16) relative) plus the float32 differences; the gain's gradient stays
    float32 (a sum over N rows)."""
    C, N = shape[-1], math.prod(shape[:-1])
    ours, ref = _rmsnorm_pair(C, fused)
    h = (_leaf(*shape) * 3).detach().to(torch.bfloat16).requires_grad_()
    hr = _twin(h)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, out_ref = ours(h), ref(hr)
    assert out.dtype == out_ref.dtype == torch.bfloat16
    tol = eps(torch.bfloat16) + fp32_tol(C + 3)
    torch.testing.assert_close(out.float(), out_ref.float(), rtol=tol, atol=0.0)
    g = _backward(out.float())
    out_ref.backward(g.to(torch.bfloat16))
    assert h.grad.dtype == torch.bfloat16 and ours.weight.grad.dtype == torch.float32
    assert_close_to_scale(h.grad.float(), hr.grad.float(),
                          eps(torch.bfloat16) + fp32_tol(2 * C + 8), "dh")
    hf = hr.detach().float()
    x_hat = hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + 1e-5)
    gb = g.to(torch.bfloat16).float()
    scale = (gb.abs() * x_hat.abs()).reshape(N, C).sum(0).max().item()
    assert_close_to_scale(ours.weight.grad, ref.weight.grad, fp32_tol(N + 3), "dw", scale)


def test_rmsnorm_fused_equals_written_out_and_eps_reaches_both():
    """The switch changes the kernel, not the maths (float32, and bf16 input with a bf16
    gain, where torch's kernel applies); a large eps (0.1) changes the output visibly."""
    x = _leaf(4, 3, 8) * 0.3
    for eps_ in (1e-5, 0.1):
        fused, written = RMSNorm(8, eps=eps_, fused=True), RMSNorm(8, eps=eps_)
        with torch.no_grad():
            fused.weight.normal_(generator=torch.Generator().manual_seed(1))
        written.load_state_dict(fused.state_dict())
        torch.testing.assert_close(fused(x), written(x), rtol=fp32_tol(8 + 3), atol=0.0)
        ref = torch.nn.RMSNorm(8, eps=eps_)
        with torch.no_grad():
            ref.weight.copy_(fused.weight)
        torch.testing.assert_close(written(x), ref(x), rtol=fp32_tol(8 + 3), atol=0.0)
    bf = RMSNorm(8, dtype=torch.bfloat16, fused=True)
    xb = x.detach().to(torch.bfloat16)
    tol = eps(torch.bfloat16) + fp32_tol(8 + 3)
    torch.testing.assert_close(bf(xb).float(), RMSNorm(8, dtype=torch.bfloat16)(xb).float(),
                               rtol=tol, atol=0.0)


def test_rmsnorm_kernel_is_torch_only_when_fused_and_dtypes_agree(monkeypatch):
    """fused=True calls F.rms_norm; under autocast (bf16 input, float32 gain) it writes the
    formula out, which is what torch itself falls back to there (and torch warns)."""
    calls = []
    original = torch.nn.functional.rms_norm

    def spy(*args, **kwargs):
        calls.append(args[0].dtype)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "rms_norm", spy)
    x = _leaf(2, 4, seed=1)
    RMSNorm(4)(x)
    assert calls == []
    RMSNorm(4, fused=True)(x)
    assert calls == [torch.float32]
    RMSNorm(4, fused=True)(x.to(torch.bfloat16))
    assert calls == [torch.float32]


def test_rmsnorm_is_not_layernorm_and_refuses_bad_settings():
    """A constant offset changes RMSNorm's output (no mean is subtracted), unlike LayerNorm's;
    the closed form on a constant row c of width C is c / sqrt(c**2 + eps)."""
    x = torch.full((1, 4), 2.0)
    assert_close(RMSNorm(4, eps=0.0)(x), torch.ones(1, 4))
    assert_close(RMSNorm(4, eps=1.0)(x), torch.full((1, 4), 2.0 / math.sqrt(5.0)))
    assert_close(LayerNorm(4)(x), torch.zeros(1, 4))
    assert repr(RMSNorm(4)) == "RMSNorm(4, eps=1e-05)"
    assert [p.shape for p in RMSNorm(4).parameters()] == [(4,)]
    assert RMSNorm(3, dtype=torch.float64).weight.dtype == torch.float64
    for bad, message in ((lambda: RMSNorm(0), "dim must be a positive integer, got 0"),
                         (lambda: RMSNorm(4, eps=-1.0), "eps must be >= 0, got -1.0")):
        with pytest.raises(DlfError) as e:
            bad()
        assert str(e.value) == message


# -- activations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "ref"),
    [
        (Tanh(), torch.nn.Tanh()),
        (ReLU(), torch.nn.ReLU()),
        (GELU(), torch.nn.GELU()),
        (GELU("tanh"), torch.nn.GELU(approximate="tanh")),
        (GELU(fused=True), torch.nn.GELU()),
        (GELU("tanh", fused=True), torch.nn.GELU(approximate="tanh")),
    ],
    ids=["tanh", "relu", "gelu", "gelu-tanh", "gelu-fused", "gelu-tanh-fused"],
)
def test_activations_match_torch(ours, ref):
    x = torch.cat(
        [torch.randn(3, 7, generator=torch.Generator().manual_seed(0)) * 4, torch.zeros(1, 7)]
    ).requires_grad_()  # includes exact zeros (ReLU kink)
    xr = _twin(x)
    out, out_ref = ours(x), ref(xr)
    assert_close(out, out_ref)
    _backward(out)
    _backward(out_ref)
    assert_close(x.grad, xr.grad)
    assert "out" not in vars(ours)  # nothing kept unless diagnostics ask
    ours.record_out = True
    assert ours(x) is ours.out


@HYP
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), approx=st.booleans())
def test_gelu_parity_random_shapes(shape, approx):
    approximate = "tanh" if approx else "none"
    x = _leaf(*shape) * 3
    x = x.detach().requires_grad_()
    xr = _twin(x)
    out, out_ref = GELU(approximate)(x), torch.nn.functional.gelu(xr, approximate=approximate)
    assert_close(out, out_ref)
    _backward(out)
    _backward(out_ref)
    assert_close(x.grad, xr.grad)


def test_fused_kernels_equal_written_out_formulas():
    """The fused switch changes the kernel, not the maths: compare the two paths directly."""
    x = _leaf(6, 16) * 3
    for approximate in ("none", "tanh"):
        torch.testing.assert_close(GELU(approximate, fused=True)(x), GELU(approximate)(x))
    a, b = LayerNorm(16, fused=True), LayerNorm(16)
    with torch.no_grad():
        a.weight.normal_()
        a.bias.normal_()
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(x), b(x))


def test_relu2_closed_form_and_gradient():
    """max(x, 0)**2 and its gradient 2 * max(x, 0), written in closed form; exact zeros
    (the kink) get gradient 0. Both are exact in float32 (one product, one doubling)."""
    x = torch.cat([_leaf(3, 7) * 4, torch.zeros(1, 7)]).detach().requires_grad_()
    layer = ReLU2()
    out = layer(x)
    xd = x.detach()
    assert torch.equal(out, torch.where(xd > 0, xd * xd, torch.zeros_like(xd)))
    g = _backward(out)
    assert torch.equal(x.grad, g * 2 * xd.clamp(min=0))
    xr = _twin(x)
    torch.autograd.gradcheck(ReLU2(), (xr.double() + 0.1,))  # finite differences agree
    assert "out" not in vars(layer) and layer.parameters() == []
    layer.record_out = True
    assert layer(x) is layer.out


def test_tanh_retains_output_grad_only_when_asked():
    x = _leaf(5, 4)
    layer = Tanh()
    layer.record_out = True
    out = layer(x)
    _backward(out)
    assert not layer.out.retains_grad
    layer.retain_out_grad = True
    out = layer(x)
    g = _backward(out)
    assert_close(layer.out.grad, g)
    layer.record_out = False
    layer(x.detach() + 1)
    assert layer.out is out  # not overwritten any more
    assert layer.parameters() == []


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(DlfError):
        GELU("fast")


# -- Dropout -------------------------------------------------------------------------------


def test_dropout_identity_cases():
    x = _leaf(10, 10)
    assert Dropout(0.0)(x) is x
    d = Dropout(0.5).eval()
    assert d(x) is x


def test_dropout_training_statistics_and_gradient():
    p = 0.3
    d = Dropout(p)
    x = torch.ones(200_000, requires_grad=True)
    torch.manual_seed(0)
    out = d(x)
    zero_frac = (out == 0).float().mean().item()
    assert abs(zero_frac - p) < 0.005
    assert abs(out.mean().item() - 1.0) < 0.01  # inverted dropout preserves the mean
    kept = out[out != 0]
    assert_close(kept, torch.full_like(kept, 1 / (1 - p)))
    out.sum().backward()
    assert_close(x.grad, out.detach())  # d out / d x = mask / (1 - p)
    # global seeding controls the mask
    torch.manual_seed(0)
    assert torch.equal(d(x), out)


def test_dropout_rejects_bad_probability():
    for p in (-0.1, 1.5):
        with pytest.raises(DlfError):
            Dropout(p)
    assert torch.equal(Dropout(1.0)(torch.ones(4)), torch.zeros(4))


# -- FlattenConsecutive --------------------------------------------------------------------


def _flatten_reference(x: torch.Tensor, n: int) -> torch.Tensor:
    T = x.shape[1]
    groups = [torch.cat([x[:, i * n + j, :] for j in range(n)], dim=-1) for i in range(T // n)]
    return torch.stack(groups, dim=1)  # (B, T/n, C*n)


@pytest.mark.parametrize(("T", "n"), [(8, 2), (8, 4), (6, 3), (4, 1)])
def test_flatten_consecutive_concatenates_neighbours(T, n):
    x = _leaf(3, T, 5)
    xr = _twin(x)
    out = FlattenConsecutive(n)(x)
    assert out.shape == (3, T // n, 5 * n)
    ref = _flatten_reference(xr, n)
    assert_close(out, ref)
    _backward(out)
    _backward(ref)
    assert_close(x.grad, xr.grad)


def test_flatten_consecutive_squeezes_single_time_step():
    x = _leaf(3, 8, 2)
    out = FlattenConsecutive(8)(x)
    assert out.shape == (3, 16)
    assert_close(out, _flatten_reference(x, 8)[:, 0, :])


def test_flatten_consecutive_errors():
    flatten, odd_t, no_channels = FlattenConsecutive(2), torch.randn(3, 7, 4), torch.randn(3, 8)
    with pytest.raises(DlfError, match="not divisible"):
        flatten(odd_t)
    with pytest.raises(DlfError, match=r"\(B, T, C\)"):
        flatten(no_channels)
    with pytest.raises(DlfError):
        FlattenConsecutive(0)


# -- Module --------------------------------------------------------------------------------


class Block(Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln = LayerNorm(d)
        self.ff = Sequential(Linear(d, 2 * d), GELU(), Linear(2 * d, d), Dropout(0.1))

    def forward(self, x):
        return x + self.ff(self.ln(x))


class Net(Module):
    def __init__(self, vocab: int = 7, d: int = 4, n_blocks: int = 2) -> None:
        super().__init__()
        self.emb = Embedding(vocab, d)
        self.blocks = ModuleList([Block(d) for _ in range(n_blocks)])
        self.head = Sequential(Linear(d, d), BatchNorm1d(d), Tanh(), Linear(d, vocab))
        self.register_buffer("mask", torch.ones(3, 3), persistent=False)

    def forward(self, idx):
        x = self.emb(idx)  # (B, d)
        for block in self.blocks:
            x = block(x)
        return self.head(x)  # (B, vocab)


def test_named_parameters_follow_attribute_order_and_nesting():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == [
        "emb.weight",
        "blocks.0.ln.weight",
        "blocks.0.ln.bias",
        "blocks.0.ff.0.weight",
        "blocks.0.ff.0.bias",
        "blocks.0.ff.2.weight",
        "blocks.0.ff.2.bias",
        "blocks.1.ln.weight",
        "blocks.1.ln.bias",
        "blocks.1.ff.0.weight",
        "blocks.1.ff.0.bias",
        "blocks.1.ff.2.weight",
        "blocks.1.ff.2.bias",
        "head.0.weight",
        "head.0.bias",
        "head.1.weight",
        "head.1.bias",
        "head.3.weight",
        "head.3.bias",
    ]
    assert [n for n, _ in net.named_buffers()] == [
        "mask",
        "head.1.running_mean",
        "head.1.running_var",
    ]
    sd = net.state_dict()
    assert "mask" not in sd  # non-persistent
    assert set(sd) == set(names) | {"head.1.running_mean", "head.1.running_var"}
    assert all(not t.requires_grad for t in sd.values())
    # forward still works on the composed model
    assert net(torch.tensor([0, 1, 2])).shape == (3, 7)


def test_num_parameters_closed_form():
    d, vocab = 4, 7
    block = d + d + (d * 2 * d + 2 * d) + (2 * d * d + d)
    head = (d * d + d) + 2 * d + (d * vocab + vocab)
    assert Net(vocab, d, 2).num_parameters() == vocab * d + 2 * block + head
    assert Sequential(Linear(10, 20), BatchNorm1d(20)).num_parameters() == 10 * 20 + 20 + 40


def test_sequential_and_modulelist_containers():
    a, b, c = Linear(2, 3), Tanh(), Linear(3, 1)
    seq = Sequential(a, b, c)
    assert len(seq) == 3 and seq[0] is a and seq[-1] is c and list(seq) == [a, b, c]
    assert seq.layers == [a, b, c]
    assert isinstance(seq[1:], Sequential) and list(seq[1:]) == [b, c]
    x = torch.randn(5, 2)
    assert_close(seq(x), c(b(a(x))))
    ml = ModuleList()
    ml.append(a).append(c)
    assert len(ml) == 2 and ml[1] is c
    assert [n for n, _ in ml.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    nested = Sequential(Linear(2, 2), Sequential(Linear(2, 2), BatchNorm1d(2)))
    assert [n for n, _ in nested.named_parameters()] == [
        "0.weight",
        "0.bias",
        "1.0.weight",
        "1.0.bias",
        "1.1.weight",
        "1.1.bias",
    ]
    with pytest.raises(DlfError):
        ml.append("not a module")


def test_train_eval_recurse_and_return_self():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    assert net.train() is net
    assert all(m.training for m in net.modules())
    assert len(net.modules()) == len({id(m) for m in net.modules()})


def test_state_dict_round_trip_copies_in_place():
    torch.manual_seed(0)
    src, dst = Net(), Net()
    src.head[1].running_mean.add_(3.0)
    dst_params = dst.parameters()
    dst.load_state_dict(src.state_dict())
    assert [p is q for p, q in zip(dst.parameters(), dst_params)] == [True] * len(dst_params)
    assert all(p.is_leaf and p.requires_grad for p in dst.parameters())
    for (k, v), (k2, v2) in zip(src.state_dict().items(), dst.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    src.eval()
    dst.eval()
    idx = torch.tensor([1, 2, 3, 4])
    assert torch.equal(src(idx), dst(idx))


def test_strict_load_reports_every_problem_in_one_error():
    net = Net()
    sd = dict(net.state_dict())
    del sd["emb.weight"]
    sd["extra.weight"] = torch.zeros(2)
    sd["head.0.weight"] = torch.zeros(5, 5)
    with pytest.raises(DlfError) as info:
        net.load_state_dict(sd)
    msg = str(info.value)
    assert "\n" not in msg
    assert "missing keys: emb.weight" in msg
    assert "unexpected keys: extra.weight" in msg
    assert "head.0.weight: checkpoint (5, 5) vs model (4, 4)" in msg
    # non-strict forgives missing/unexpected keys but never a shape mismatch
    with pytest.raises(DlfError, match="shape mismatch"):
        net.load_state_dict(sd, strict=False)
    del sd["head.0.weight"]
    before = net.emb.weight.detach().clone()
    net.load_state_dict(sd, strict=False)
    assert torch.equal(net.emb.weight, before)
    with pytest.raises(DlfError):
        net.load_state_dict([1, 2])


def test_to_dtype_keeps_leaves_ties_and_integer_buffers():
    class Tied(Module):
        def __init__(self):
            super().__init__()
            self.a = Linear(3, 3)
            self.b = Linear(3, 3)
            self.b.weight = self.a.weight  # weight tying
            self.register_buffer("count", torch.zeros(2, dtype=torch.int64))

    m = Tied()
    assert len(m.parameters()) == 3  # tied weight counted once
    assert m.num_parameters() == 9 + 3 + 3
    assert set(m.state_dict()) == {"a.weight", "a.bias", "b.weight", "b.bias", "count"}
    same = m.parameters()
    m.to()  # nothing to change: the very same tensors stay
    assert all(p is q for p, q in zip(m.parameters(), same))
    m.a.weight.sum().backward()
    m.to(dtype=torch.float64)
    for p in m.parameters():
        assert p.dtype == torch.float64 and p.is_leaf and p.requires_grad and p.grad is None
    assert m.b.weight is m.a.weight
    assert m.count.dtype == torch.int64
    assert torch.equal(m.a.weight.float(), same[0].detach())
    x = torch.randn(2, 3, dtype=torch.float64)
    m.b(m.a(x)).sum().backward()
    assert m.a.weight.grad is not None
    with pytest.raises(DlfError):
        m.to(dtype=torch.int32)


def test_to_moves_buffers_including_non_persistent():
    net = Net().to(dtype=torch.float64)
    assert net.mask.dtype == torch.float64
    assert net.head[1].running_var.dtype == torch.float64
    assert net(torch.tensor([0, 1])).dtype == torch.float64


def test_zero_grad_frozen_parameters_and_plain_tensor_attributes():
    lin = Linear(3, 2)
    lin(torch.randn(4, 3)).sum().backward()
    assert lin.weight.grad is not None
    lin.zero_grad()
    assert lin.weight.grad is None and lin.bias.grad is None
    lin.bias.requires_grad_(False)  # frozen: still a parameter, still saved
    assert [n for n, _ in lin.named_parameters()] == ["weight", "bias"]
    lin.cache = lin.weight * 2  # a non-leaf tensor attribute is not a parameter
    assert [n for n, _ in lin.named_parameters()] == ["weight", "bias"]
    assert "cache" not in lin.state_dict()


def test_repr_is_readable():
    text = repr(Sequential(Linear(2, 3), Tanh(), BatchNorm1d(3)))
    assert text.splitlines() == [
        "Sequential(",
        "  (0): Linear(fan_in=2, fan_out=3, bias=True)",
        "  (1): Tanh()",
        "  (2): BatchNorm1d(3, eps=1e-05, momentum=0.1, affine=True)",
        ")",
    ]


def test_no_torch_nn_module_in_dlf_nn():
    import dlf.nn.layers
    import dlf.nn.module

    for mod in (dlf.nn.module, dlf.nn.layers):
        for obj in vars(mod).values():
            if isinstance(obj, type):
                assert not issubclass(obj, torch.nn.Module), obj


def test_transformer_keeps_no_activations_between_steps():
    """A (B, T, 4C) GELU output per layer must not outlive its step (issue: memory)."""
    from dlf.models.transformer import Transformer, TransformerConfig

    model = Transformer(TransformerConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2,
                                          n_embd=8, dropout=0.0))
    idx = torch.randint(0, 11, (3, 8), generator=torch.Generator().manual_seed(0))
    _, loss = model(idx, idx)
    loss.backward()
    kept = [name for name, m in model.named_modules() if "out" in vars(m)]
    assert kept == []


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_fused_dropout_is_the_same_function_of_its_mask(p):
    """Fused dropout as a function of whatever mask it drew: zeros where dropped,
    x / (1 - p) elsewhere, the rate p, and the gradient mask / (1 - p). (The GPU path,
    torch's kernel, is checked the same way in test_transformer.py.)"""
    x = torch.randn(100_000, requires_grad=True)
    torch.manual_seed(0)
    out = Dropout(p, fused=True)(x)
    keep = out != 0
    assert abs(1 - keep.float().mean().item() - p) < 0.01
    assert_close(out[keep], x[keep] / (1 - p))
    out.sum().backward()
    assert_close(x.grad, keep.float() / (1 - p))
    assert Dropout(p, fused=True).eval()(x) is x


@pytest.mark.parametrize("fused", [False, True])
def test_dropout_residual_adds_the_dropped_branch(fused):
    p = 0.3
    r = torch.randn(50_000, requires_grad=True)
    x = torch.randn(50_000, requires_grad=True)
    d = Dropout(p, fused=fused)
    out = d.residual(r, x)
    keep = (out - r).abs() > 1e-6  # x is almost surely non-zero
    assert abs(1 - keep.float().mean().item() - p) < 0.01
    assert_close(out, r + x * keep / (1 - p))
    out.sum().backward()
    assert_close(r.grad, torch.ones_like(r))
    assert_close(x.grad, keep.float() / (1 - p))
    assert torch.equal(d.eval().residual(r, x), r + x)


@pytest.mark.parametrize("shape", [(7, 5), (2, 3, 5)])
def test_fused_linear_equals_written_out(shape):
    a = Linear(5, 4, generator=torch.Generator().manual_seed(0))
    b = Linear(5, 4, fused=True, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a.bias.normal_()
        b.bias.copy_(a.bias)
    x = torch.randn(shape)
    ya, yb = a(x), b(x)
    assert_close(ya, yb)
    ya.square().sum().backward()
    yb.square().sum().backward()
    assert_close(a.weight.grad, b.weight.grad)
    assert_close(a.bias.grad, b.bias.grad)


# -- recurrent cells -----------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(
    ("ours_cls", "ref_cls"), [(RNNCell, torch.nn.RNNCell), (GRUCell, torch.nn.GRUCell)]
)
def test_cells_match_torch_cells(ours_cls, ref_cls, bias):
    """Two steps of the recurrence against torch.nn.RNNCell / GRUCell with the same weights
    (ours (in, out), torch's (out, in)); float64, so assert_close's defaults are ample."""
    torch.manual_seed(0)
    I, H, B = 3, 4, 2
    ours = ours_cls(I, H, bias=bias).to(dtype=torch.float64)
    ref = ref_cls(I, H, bias=bias).double()
    assert ours.ih.weight.shape == ref.weight_ih.T.shape
    assert ours.hh.weight.shape == ref.weight_hh.T.shape
    with torch.no_grad():
        ours.ih.weight.copy_(ref.weight_ih.T)
        ours.hh.weight.copy_(ref.weight_hh.T)
        if bias:
            ours.ih.bias.copy_(ref.bias_ih)
            ours.hh.bias.copy_(ref.bias_hh)
    assert len(ours.parameters()) == len(list(ref.parameters()))
    x = torch.randn(2, B, I, dtype=torch.float64)
    h0 = torch.randn(B, H, dtype=torch.float64)
    xs, hs = [_twin(x), _twin(x)], [_twin(h0), _twin(h0)]
    outs = []
    for cell, xi, h in ((ours, xs[0], hs[0]), (ref, xs[1], hs[1])):
        steps = []
        for t in range(2):
            h = cell(xi[t], h)
            steps.append(h)
        outs.append(torch.stack(steps))
    assert_close(outs[0], outs[1])
    w = torch.randn_like(outs[0])
    (outs[0] * w).sum().backward()
    (outs[1] * w).sum().backward()
    assert_close(xs[0].grad, xs[1].grad)
    assert_close(hs[0].grad, hs[1].grad)
    assert_close(ours.ih.weight.grad, ref.weight_ih.grad.T)
    assert_close(ours.hh.weight.grad, ref.weight_hh.grad.T)
    if bias:
        assert_close(ours.ih.bias.grad, ref.bias_ih.grad)
        assert_close(ours.hh.bias.grad, ref.bias_hh.grad)


def test_cells_repr_names_and_bad_sizes():
    assert repr(RNNCell(3, 4)).splitlines() == [
        "RNNCell(3, 4",
        "  (ih): Linear(fan_in=3, fan_out=4, bias=True)",
        "  (hh): Linear(fan_in=4, fan_out=4, bias=True)",
        "  (tanh): Tanh()",
        ")",
    ]
    gru = GRUCell(3, 4, bias=False)
    assert repr(gru).splitlines()[:3] == [
        "GRUCell(3, 4",
        "  (ih): Linear(fan_in=3, fan_out=12, bias=False)",
        "  (hh): Linear(fan_in=4, fan_out=12, bias=False)",
    ]
    assert (gru.input_size, gru.hidden_size) == (3, 4)
    assert [n for n, _ in gru.named_parameters()] == ["ih.weight", "hh.weight"]
    for cls in (RNNCell, GRUCell):
        assert [n for n, _ in cls(3, 4).named_parameters()] == [
            "ih.weight", "ih.bias", "hh.weight", "hh.bias"
        ]  # biases by default
        for args, message in (
            ((0, 4), "input_size must be a positive integer, got 0"),
            ((3, 0), "hidden_size must be a positive integer, got 0"),
            ((True, 4), "input_size must be a positive integer, got True"),
        ):
            with pytest.raises(DlfError) as info:
                cls(*args)
            assert str(info.value) == message


def test_cells_tanh_is_a_recorded_layer():
    """Diagnostics see the cell's tanh: its recorded output is the cell's candidate."""
    torch.manual_seed(0)
    cell = RNNCell(3, 4)
    cell.tanh.record_out = True
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    assert cell(x, h) is cell.tanh.out


# -- data-parallel BatchNorm and the collectives --------------------------------------------


class TwoRanks:
    """The group of one of two ranks that hold identical batches, as BatchNorm1d sees it
    (dlf.nn.collectives): the all_reduce of a tensor doubles it, in place, as the real one
    writes its result."""

    world_size = 2

    def __init__(self):
        self.calls = []

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        self.calls.append(t.shape)
        return t.mul_(2)


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4)])
def test_batchnorm_data_parallel_equals_torch_on_the_global_batch(shape):
    """Two ranks with the same batch x see the statistics of the global batch [x; x]:
    output, input gradient and running statistics equal torch.nn.BatchNorm1d's on the
    concatenation (the input gradient of one copy); the weight gradients are each rank's
    half of the global ones (the trainer's all_reduce of gradients adds them)."""
    C = shape[-1]
    ours, ref = _bn_pair(C, momentum=0.3)
    ours.group = group = TwoRanks()
    x = (_leaf(*shape, seed=11) * 2 + 1).detach().requires_grad_()
    a, b = _twin(x), _twin(x)
    out = ours(x)
    assert group.calls, "the global statistics must go through the group's all_reduce"
    out_ref = _bn_ref_call(ref, torch.cat([a, b]))
    assert_close(out, out_ref[: shape[0]])
    g = _backward(out, seed=3)
    out_ref.backward(torch.cat([g, g]))
    assert_close(x.grad, a.grad)
    assert_close(ours.weight.grad, ref.weight.grad / 2)
    assert_close(ours.bias.grad, ref.bias.grad / 2)
    assert_close(ours.running_mean, ref.running_mean)
    assert_close(ours.running_var, ref.running_var)


def test_batchnorm_data_parallel_counts_the_global_batch():
    """One row per rank is a global batch of two: training works (n = 2 values). Both
    values equal x, so the batch mean is x, the variance 0, the output the bias, and the
    running statistics move by momentum towards x and 0."""
    ours, _ = _bn_pair(3)
    ours.group = TwoRanks()
    x = _leaf(1, 3, seed=4)
    assert_close(ours(x), ours.bias.detach()[None])
    assert_close(ours.running_mean, 0.1 * x.detach()[0])
    assert_close(ours.running_var, torch.full((3,), 0.9))


def test_one_process_needs_no_collective():
    """Without a group, or with a group of one, the sum over the ranks is the tensor
    itself: no all_reduce is made."""
    from dlf.nn.collectives import all_reduce_sum, ranks

    class One(TwoRanks):
        world_size = 1

    x = torch.ones(2, requires_grad=True)
    one = One()
    assert all_reduce_sum(x, None) is x and all_reduce_sum(x, one) is x and not one.calls
    assert ranks(None) == 1 and ranks(one) == 1 and ranks(TwoRanks()) == 2


def test_all_reduce_sum_sums_forward_and_backward():
    from dlf.nn.collectives import all_reduce_sum

    x = torch.tensor([1.0, -2.0], requires_grad=True)
    y = all_reduce_sum(x, TwoRanks())
    assert torch.equal(y.detach(), torch.tensor([2.0, -4.0]))
    assert torch.equal(x.detach(), torch.tensor([1.0, -2.0]))  # the input is not reduced in place
    g = torch.tensor([0.5, 3.0])
    y.backward(g)
    assert torch.equal(x.grad, torch.tensor([1.0, 6.0]))
    assert torch.equal(g, torch.tensor([0.5, 3.0]))  # nor the incoming gradient


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (RuntimeError("Connection closed by peer\nat gloo/transport"), "Connection closed by peer"),
        (RuntimeError(), "RuntimeError"),
        ("DistError", "DistError"),
    ],
)
def test_failed_collective_names_the_rank_and_the_first_line(monkeypatch, error, reason):
    """BatchNorm's sum goes through the job's Group, whose failure is one line."""
    import torch.distributed as dist

    from dlf.engine.distributed import Group
    from dlf.nn.collectives import all_reduce_sum

    if error == "DistError":
        error = dist.DistError()

    def broken(t, *args, **kwargs):
        raise error

    monkeypatch.setattr(dist, "all_reduce", broken)
    with pytest.raises(DlfError) as info:
        all_reduce_sum(torch.ones(2), Group(rank=1, world_size=2))
    assert str(info.value) == (
        f"rank 1: a collective with the other processes failed ({reason}); another "
        "process has probably stopped: see its message"
    )
    assert info.value.__cause__ is None and info.value.__suppress_context__


# -- Module details: messages, deletion, devices, nesting ----------------------------------


def test_load_state_dict_messages_name_every_key_and_type():
    net = Sequential(Linear(2, 2), Linear(2, 1))
    with pytest.raises(DlfError) as info:
        net.load_state_dict([1, 2])
    assert str(info.value) == "state_dict must be a dict, got list"
    sd = dict(net.state_dict())
    del sd["0.weight"], sd["1.bias"]
    sd["0.bias"] = 3
    sd["1.weight"] = torch.zeros(1, 2)
    sd["2.weight"] = sd["3.weight"] = torch.zeros(1)
    with pytest.raises(DlfError) as info:
        net.load_state_dict(sd)
    assert str(info.value) == (
        "cannot load state_dict into Sequential: missing keys: 0.weight, 1.bias"
        " | unexpected keys: 2.weight, 3.weight"
        " | shape mismatch: 0.bias: checkpoint value is int, not a tensor;"
        " 1.weight: checkpoint (1, 2) vs model (2, 1)"
    )


def test_to_messages_and_device():
    lin = Linear(2, 3)
    with pytest.raises(DlfError) as info:
        lin.to(dtype=torch.int64)
    assert str(info.value) == "Module.to(dtype=...) needs a floating-point dtype, got torch.int64"
    # the meta device exists in every build: a move that changes only the device
    bn = BatchNorm1d(3)
    assert bn.to(device="meta") is bn
    for t in (*bn.parameters(), *bn.buffers()):
        assert t.device.type == "meta" and t.dtype == torch.float32
    assert all(p.is_leaf and p.requires_grad for p in bn.parameters())
    assert not any(b.requires_grad for b in bn.buffers())


def test_shared_buffer_is_listed_once():
    class Shared(Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = BatchNorm1d(2), BatchNorm1d(2)
            self.b.register_buffer("running_mean", self.a.running_mean)

    m = Shared()
    assert [n for n, _ in m.named_buffers()] == [
        "a.running_mean",
        "a.running_var",
        "b.running_var",
    ]
    assert len(m.buffers()) == 3
    # state_dict keeps every name (tied tensors under each)
    assert list(m.state_dict()) == [
        "a.weight", "a.bias", "a.running_mean", "a.running_var",
        "b.weight", "b.bias", "b.running_mean", "b.running_var",
    ]  # fmt: skip


def test_delattr_forgets_parameters_and_buffers():
    bn = BatchNorm1d(2)
    bn.register_buffer("scratch", torch.zeros(1), persistent=False)
    del bn.bias
    del bn.running_var
    del bn.scratch
    assert not hasattr(bn, "bias")
    assert [n for n, _ in bn.named_parameters()] == ["weight"]
    assert [n for n, _ in bn.named_buffers()] == ["running_mean"]
    assert list(bn.state_dict()) == ["weight", "running_mean"]
    # a name reused after deletion starts afresh: a plain tensor is no buffer, no parameter
    bn.running_var = torch.ones(2)
    bn.bias = torch.zeros(2)
    assert [n for n, _ in bn.named_buffers()] == ["running_mean"]
    assert [n for n, _ in bn.named_parameters()] == ["weight"]
    bn.scratch = torch.zeros(1, requires_grad=True)  # a parameter now: saved
    assert list(bn.state_dict()) == ["weight", "running_mean", "scratch"]


def test_register_buffer_rules():
    m = Module()
    with pytest.raises(DlfError) as info:
        m.register_buffer("mask", [1, 2])
    assert str(info.value) == "buffer 'mask' must be a torch.Tensor, got list"
    m.w = torch.zeros(2, requires_grad=True)
    assert [n for n, _ in m.named_parameters()] == ["w"]
    m.register_buffer("w", torch.ones(2))  # a parameter registered as a buffer is a buffer
    assert m.parameters() == [] and [n for n, _ in m.named_buffers()] == ["w"]
    m.w = torch.zeros(2, requires_grad=True)  # reassigning keeps it a buffer
    assert m.parameters() == [] and [n for n, _ in m.named_buffers()] == ["w"]
    m.register_buffer("t", torch.ones(1), persistent=False)
    assert list(m.state_dict()) == ["w"]
    m.register_buffer("t", torch.ones(1))  # registered again as persistent: saved
    assert list(m.state_dict()) == ["w", "t"]
    m.register_buffer("t", torch.ones(1), persistent=False)
    assert list(m.state_dict()) == ["w"]


def test_forward_is_required_and_containers_have_none():
    with pytest.raises(NotImplementedError) as info:
        Module()(torch.zeros(1))
    assert str(info.value) == "Module does not define forward()"
    ml = ModuleList().extend([Tanh(), ReLU()])
    assert [type(m) for m in ml] == [Tanh, ReLU]
    with pytest.raises(NotImplementedError) as info:
        ml(torch.zeros(1))
    assert str(info.value) == "ModuleList has no forward(); iterate over it instead"
    tail = ml[1:]
    assert type(tail) is ModuleList and list(tail) == [ml[1]]
    with pytest.raises(DlfError) as info:
        ml.append(3)
    assert str(info.value) == "ModuleList holds Modules, got int"


def test_nested_repr_indents_each_level():
    net = Sequential(Sequential(Linear(2, 2)), LayerNorm(4, bias=False), Embedding(5, 3))
    assert repr(net).splitlines() == [
        "Sequential(",
        "  (0): Sequential(",
        "    (0): Linear(fan_in=2, fan_out=2, bias=True)",
        "  )",
        "  (1): LayerNorm(4, eps=1e-05, bias=False)",
        "  (2): Embedding(5, 3)",
        ")",
    ]
    assert repr(GELU("tanh")) == "GELU(approximate='tanh')"
    assert repr(Dropout(0.25)) == "Dropout(p=0.25)"
    assert repr(FlattenConsecutive(2)) == "FlattenConsecutive(n=2)"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: FlattenConsecutive(0), "n must be a positive integer, got 0"),
        (lambda: Linear(2, True), "fan_out must be a positive integer, got True"),
        (lambda: Embedding(0, 2), "num_embeddings must be a positive integer, got 0"),
        (lambda: Embedding(2, -1), "embedding_dim must be a positive integer, got -1"),
        (lambda: LayerNorm(4, eps=-1.0), "eps must be >= 0, got -1.0"),
        (lambda: LayerNorm(4, eps=float("nan")), "eps must be >= 0, got nan"),
        (lambda: BatchNorm1d(0), "dim must be a positive integer, got 0"),
        (lambda: LayerNorm(0), "dim must be a positive integer, got 0"),
        (lambda: BatchNorm1d(2, momentum=-0.5), "momentum must be in [0, 1], got -0.5"),
        (lambda: Dropout(1.5), "dropout probability must be in [0, 1], got 1.5"),
        (lambda: GELU("fast"), "GELU approximate must be 'none' or 'tanh', got 'fast'"),
    ],
)
def test_constructor_messages(make, message):
    with pytest.raises(DlfError) as info:
        make()
    assert str(info.value) == message


def test_unfused_residual_is_r_plus_the_layer_with_the_same_mask():
    """Unfused, residual(r, x) is literally r + dropout(x): the same torch.rand mask for
    the same seed (the fused path draws its mask differently)."""
    r, x = _leaf(6, 5, seed=1).detach(), _leaf(6, 5, seed=2).detach()
    d = Dropout(0.4)
    torch.manual_seed(3)
    out = d.residual(r, x)
    torch.manual_seed(3)
    assert torch.equal(out, r + d(x))


@pytest.mark.parametrize("fused", [False, True])
def test_residual_without_randomness_draws_no_random_numbers(fused):
    """p == 0 or eval: r + x; p == 1: r (nothing of x survives). None of them draws from
    the global generator, so the random stream after them is the untouched one."""
    r, x = _leaf(4, 3, seed=1).detach(), _leaf(4, 3, seed=2).detach()
    torch.manual_seed(0)
    fresh = torch.rand(3)
    for d, expected in (
        (Dropout(0.0, fused=fused), r + x),
        (Dropout(0.5, fused=fused).eval(), r + x),
        (Dropout(1.0, fused=fused), r),
    ):
        torch.manual_seed(0)
        assert torch.equal(d.residual(r, x), expected)
        assert torch.equal(torch.rand(3), fresh)


@pytest.mark.parametrize("fused", [False, True])
def test_layernorm_eps_matches_torch(fused):
    """A large eps (0.1) changes the output visibly: it must reach both paths."""
    ours, ref = LayerNorm(6, eps=0.1, fused=fused), torch.nn.LayerNorm(6, eps=0.1)
    x = _leaf(3, 6, seed=2) * 0.3
    assert_close(ours(x), ref(x))


def test_layer_dtypes_and_devices():
    """dtype reaches every parameter and buffer; device too (the meta device exists in
    every build; Linear's scaled draw is left out: the first arithmetic on a meta tensor
    loads torch's meta kernels, which takes seconds)."""
    f64 = torch.float64
    for layer in (Linear(2, 3, dtype=f64), Embedding(4, 2, dtype=f64), BatchNorm1d(3, dtype=f64),
                  LayerNorm(3, dtype=f64)):
        assert {t.dtype for t in (*layer.parameters(), *layer.buffers())} == {f64}, layer
    for layer in (Embedding(4, 2, device="meta"), BatchNorm1d(3, device="meta"),
                  LayerNorm(3, device="meta")):
        tensors = (*layer.parameters(), *layer.buffers())
        assert {t.device.type for t in tensors} == {"meta"}, layer
        assert {t.dtype for t in tensors} == {torch.float32}, layer


def test_dropout_defaults_and_mask_source():
    """Dropout() is p = 0.5, unfused: mask torch.rand(shape) >= p, scale 1 / (1 - p);
    fused on a CPU, the same mask; fused with torch's kernel (the GPU path, forced here),
    the mask and the scaling are F.dropout's (the same seed gives the same output)."""
    x = _leaf(5, 4, seed=6).detach()
    d = Dropout()
    assert d.p == 0.5 and not d.fused
    torch.manual_seed(1)
    out = d(x)
    torch.manual_seed(1)
    assert torch.equal(out, x * (torch.rand(5, 4) >= 0.5) * 2.0)
    torch.manual_seed(1)
    out = Dropout(0.3, fused=True)(x)
    torch.manual_seed(1)
    assert torch.equal(out, x * (torch.rand(5, 4) >= 0.3) * (1 / 0.7))
    kernel = Dropout(0.3, fused=True)
    kernel._kernel = lambda x: True
    torch.manual_seed(1)
    out = kernel(x)
    torch.manual_seed(1)
    assert torch.equal(out, torch.nn.functional.dropout(x, 0.3, training=True))


def test_dropout_keeps_a_draw_equal_to_p(monkeypatch):
    """u ~ U[0, 1) is kept when u >= p, so P(keep) = 1 - p exactly: a draw of exactly p
    is kept, the float just below it dropped."""
    p = 0.25
    below = torch.nextafter(torch.tensor(p), torch.tensor(0.0)).item()  # in float32
    u = torch.tensor([0.0, p, below, 0.75])
    monkeypatch.setattr(torch, "rand", lambda *args, **kwargs: u.clone())
    out = Dropout(p)(torch.ones(4, dtype=torch.float64))
    assert out.dtype == torch.float64
    assert torch.equal(out, torch.tensor([0.0, 1 / 0.75, 0.0, 1 / 0.75], dtype=torch.float64))


def test_batchnorm_input_messages():
    bn = BatchNorm1d(4)
    with pytest.raises(DlfError) as info:
        bn(torch.randn(1, 4))
    assert str(info.value) == "BatchNorm1d needs more than 1 value per channel when training"
    for bad in (torch.randn(3, 5), torch.randn(2, 4, 3), torch.randn(4), torch.randn(2, 2, 2, 4)):
        with pytest.raises(DlfError) as info:
            bn(bad)
        assert str(info.value) == (
            f"BatchNorm1d(4) expects input (N, 4) or (N, L, 4), got {tuple(bad.shape)}"
        )
    bn(torch.randn(1, 2, 4))  # two values per channel: enough


def test_shared_submodule_is_visited_once_and_names_use_the_prefix():
    shared = Linear(2, 2)
    net = Sequential(shared, Tanh(), shared)
    assert net.named_modules() == [("", net), ("0", shared), ("1", net[1])]
    assert [n for n, _ in net.named_parameters()] == ["0.weight", "0.bias"]
    assert net.num_parameters() == 6
    assert [n for n, _ in net.named_modules(prefix="net")] == ["net", "net.0", "net.1"]


def test_zero_eps_is_allowed():
    assert LayerNorm(3, eps=0).eps == 0.0 and BatchNorm1d(3, eps=0.0).eps == 0.0


def test_layernorm_kernel_is_torch_only_when_fused(monkeypatch):
    """LayerNorm() writes the formula out; fused=True calls F.layer_norm (same result)."""
    calls = []
    original = torch.nn.functional.layer_norm

    def spy(*args, **kwargs):
        calls.append(args[1])
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "layer_norm", spy)
    x = _leaf(2, 4, seed=1)
    written = LayerNorm(4)(x)
    assert calls == []
    assert_close(LayerNorm(4, fused=True)(x), written)
    assert calls == [(4,)]


def test_linear_and_gelu_kernels_are_torch_only_when_fused(monkeypatch):
    """Linear() is x @ W + b, GELU() the written formula; fused=True calls torch.addmm /
    F.gelu (same result); a fused Linear without bias has nothing to fuse: x @ W."""
    calls = []
    addmm, gelu = torch.addmm, torch.nn.functional.gelu

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            calls.append(name)
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(torch, "addmm", spy("addmm", addmm))
    monkeypatch.setattr(torch.nn.functional, "gelu", spy("gelu", gelu))
    x = _leaf(2, 3, seed=1)
    gen = torch.Generator
    plain = Linear(3, 2, generator=gen().manual_seed(0))
    fused = Linear(3, 2, fused=True, generator=gen().manual_seed(0))
    assert_close(fused(x), plain(x))
    assert_close(GELU(fused=True)(x), GELU()(x))
    assert calls == ["addmm", "gelu"]
    no_bias = Linear(3, 2, bias=False, fused=True, generator=gen().manual_seed(0))
    assert_close(no_bias(x), x @ plain.weight)
    assert calls == ["addmm", "gelu"]


def test_embedding_draws_from_its_generator():
    emb = Embedding(5, 3, generator=torch.Generator().manual_seed(4))
    assert torch.equal(emb.weight, torch.randn(5, 3, generator=torch.Generator().manual_seed(4)))
    assert (emb.num_embeddings, emb.embedding_dim) == (5, 3)


def test_linear_init_closed_form_and_no_bias():
    """weight = N(0, 1) draw * gain / sqrt(fan_in) from the generator (gain 1 by default),
    bias zeros; bias=False leaves no bias at all."""
    draw = torch.randn(4, 3, generator=torch.Generator().manual_seed(5))
    for kwargs, gain in (({}, 1.0), ({"gain": 5 / 3}, 5 / 3)):
        lin = Linear(4, 3, generator=torch.Generator().manual_seed(5), **kwargs)
        assert_close(lin.weight, draw * (gain / 2.0), rtol=0, atol=0)
    lin = Linear(4, 3, bias=False)
    assert lin.bias is None and [n for n, _ in lin.named_parameters()] == ["weight"]
    with pytest.raises(DlfError) as info:
        Linear(0, 3)
    assert str(info.value) == "fan_in must be a positive integer, got 0"


def test_modules_pass_keyword_arguments_to_forward():
    torch.manual_seed(0)
    cell = RNNCell(3, 4)
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    assert torch.equal(cell(x, h=h), cell(x, h))


# -- one-row products and dropout's kernel path -----------------------------------------


def test_one_row_split_matvec_equals_the_plain_product(monkeypatch):
    """A fused Linear told to split one-row products (matvec_splits = k, what the decoding
    loop sets on 2+ threads) sums k slice products (a bmm) instead of torch's one-row
    matmul: the same product and gradients, another addition order. Two rows, and a layer
    left at 1, take the plain product."""
    calls = []
    matvec = Linear._matvec
    monkeypatch.setattr(Linear, "_matvec",
                        lambda self, x: calls.append(self.matvec_splits) or matvec(self, x))
    torch.manual_seed(0)
    for fan_in, bias, k in ((384, True, 16), (1536, True, 16), (64, False, 4), (32, True, 2)):
        assert Linear.splits_for(fan_in, 2) == k
        lin = Linear(fan_in, 24, bias=bias, fused=True)
        assert lin.matvec_splits == 1  # nothing splits until a decoder asks
        lin.matvec_splits = k
        if bias:
            with torch.no_grad():
                lin.bias.normal_()
        x = torch.randn(1, 1, fan_in, requires_grad=True)
        ref_x = x.detach().clone().requires_grad_()
        want = ref_x @ lin.weight + (lin.bias if bias else 0)
        got = lin(x)
        assert calls == [k]
        assert got.shape == (1, 1, 24)
        abs_terms = ref_x.abs() @ lin.weight.abs() + (lin.bias.abs() if bias else 0)
        assert_within_sum_bound(got, want, fan_in + 1, abs_terms)
        w = torch.randn(1, 1, 24)
        (got * w).sum().backward()
        (want * w).sum().backward()
        torch.testing.assert_close(x.grad, ref_x.grad)
        calls.clear()
        lin(torch.randn(2, fan_in))
        Linear(fan_in, 24, fused=True)(x)
        assert calls == []
    assert Linear.splits_for(16, 2) == 1  # too narrow: under 16 inputs a slice
    assert Linear.splits_for(33, 2) == 1  # no k divides 33
    assert Linear.splits_for(384, 1) == 1  # one thread: the plain kernel


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_dropout_on_cpu_is_the_written_out_mask(dtype):
    """On a CPU, fused dropout keeps the written-out `rand >= p` mask (faster there than
    torch's kernel): under one seed the two give the same output and gradient."""
    x = torch.randn(4, 1000, dtype=dtype, requires_grad=True)
    r = torch.randn(4, 1000, dtype=dtype)
    for p in (0.1, 0.5):
        outs, grads = [], []
        for fused in (True, False):
            torch.manual_seed(3)
            d = Dropout(p, fused=fused)
            out = d(x) + d.residual(r, x)
            out.sum().backward()
            outs.append(out.detach())
            grads.append(x.grad)
            x.grad = None
        assert outs[0].dtype == dtype
        assert torch.equal(outs[0], outs[1])
        assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_kernel_path_is_the_same_function_of_its_mask(p, monkeypatch):
    """The GPU path (torch's kernel, forced here on the CPU) draws from another random
    stream: zeros where dropped, x / (1 - p) elsewhere, at rate p, in both forms; eval,
    p = 0 and p = 1 leave the kernel alone."""
    monkeypatch.setattr(Dropout, "_kernel", lambda self, x: True)
    d = Dropout(p, fused=True)
    x = torch.randn(100_000, requires_grad=True)
    r = torch.randn(100_000, requires_grad=True)
    for out in (d(x), d.residual(r, x) - r):
        keep = out != 0
        assert abs(1 - keep.float().mean().item() - p) < 0.01
        torch.testing.assert_close(out[keep], x[keep] / (1 - p))
        out.sum().backward()
        torch.testing.assert_close(x.grad, keep.float() / (1 - p))
        x.grad = None
    torch.testing.assert_close(r.grad, torch.zeros_like(r))  # + r - r
    y = torch.randn(10)
    assert torch.equal(Dropout(1.0, fused=True).residual(y, y), y)
    assert torch.equal(Dropout(0.0, fused=True).residual(y, y), 2 * y)
    assert torch.equal(d.eval().residual(y, y), 2 * y)


def test_dropout_uses_torchs_kernel_only_when_fused_off_the_cpu():
    x = torch.randn(3)
    assert Dropout(0.5, fused=True)._kernel(x) is False
    assert Dropout(0.5)._kernel(x) is False
    meta = torch.empty(3, device="meta")
    assert Dropout(0.5, fused=True)._kernel(meta) is True
    assert Dropout(0.5)._kernel(meta) is False


def test_state_dict_of_a_module_shared_at_two_places():
    """A module used twice is one module: its tensors are listed once, under its first
    name, and loading them sets both places (unlike a tensor tied between two modules,
    which is listed under each name)."""
    shared = Linear(2, 2)
    seq = Sequential(shared, shared)
    assert list(seq.state_dict()) == ["0.weight", "0.bias"]
    other = Sequential(Linear(2, 2, generator=torch.Generator().manual_seed(5)))
    seq.load_state_dict(other.state_dict())
    x = torch.randn(3, 2)
    torch.testing.assert_close(seq(x), other[0](other[0](x)))
    a, b = Linear(2, 2), Linear(2, 2)
    b.weight = a.weight  # tied tensor, two modules
    tied = Sequential(a, b)
    assert list(tied.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]

