"""Rotary position embedding: relative positions, a complex-number reference, the cache offset."""

from __future__ import annotations

import math

import pytest
import torch

from dlf.errors import DlfError
from dlf.nn import apply_rope, rope_tables
from tolerances import assert_close_to_scale, eps, fp32_tol, fp64_tol

F64 = torch.float64


def _randn(*shape: int, seed: int = 0, dtype=F64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def complex_rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0):
    """The reference: pair j of x (..., T, hs) is the complex number x[j] + i x[j + hs/2],
    multiplied by exp(i p theta_j), theta_j = base ** (-2j / hs)."""
    hs = x.shape[-1]
    theta = 1.0 / base ** (torch.arange(0, hs, 2, dtype=F64) / hs)  # (hs/2,)
    z = torch.complex(x[..., : hs // 2], x[..., hs // 2:])
    z = z * torch.polar(torch.ones(len(positions), hs // 2, dtype=F64),
                        positions[:, None].to(F64) * theta)  # (T, hs/2) unit rotations
    return torch.cat([z.real, z.imag], dim=-1)


@pytest.mark.parametrize("start", [0, 5, 1000])
def test_rope_equals_multiplying_each_pair_by_a_complex_rotation(start):
    """float64 tables: both sides are elementwise products of a rotation, so they agree to a
    few eps of the vector's magnitude."""
    B, nh, T, hs = 2, 3, 7, 16
    cos, sin = rope_tables(hs, 2048, dtype=F64)
    assert cos.shape == sin.shape == (2048, hs // 2)
    x = _randn(B, nh, T, hs)
    ours = apply_rope(x, cos, sin, start=start)
    ref = complex_rope(x, torch.arange(start, start + T))
    assert ours.shape == x.shape and ours.dtype == F64
    # the angle p * theta reaches 1007 radians: its float64 rounding (1007 * eps) moves the
    # result by that much relative to |x|
    assert_close_to_scale(ours, ref, fp64_tol(8) * (start + T), scale=x.abs().max().item())
    # a rotation keeps each pair's length
    pairs = x[..., : hs // 2] ** 2 + x[..., hs // 2:] ** 2
    out_pairs = ours[..., : hs // 2] ** 2 + ours[..., hs // 2:] ** 2
    assert_close_to_scale(out_pairs, pairs, fp64_tol(8), scale=pairs.max().item())


def test_position_zero_is_the_identity_and_halves_are_paired():
    cos, sin = rope_tables(4, 3, dtype=F64)
    x = _randn(1, 1, 1, 4)
    assert torch.equal(apply_rope(x, cos, sin), x)
    # position 1, head size 4: theta = (1, 1/100); pair 0 is (x[0], x[2]), pair 1 (x[1], x[3])
    e0 = torch.tensor([[[[1.0, 0.0, 0.0, 0.0]]]], dtype=F64)
    out = apply_rope(e0, cos, sin, start=1)
    assert torch.allclose(out, torch.tensor([math.cos(1.0), 0.0, math.sin(1.0), 0.0],
                                            dtype=F64), rtol=0, atol=fp64_tol(2))
    e1 = torch.tensor([[[[0.0, 1.0, 0.0, 0.0]]]], dtype=F64)
    out = apply_rope(e1, cos, sin, start=1)
    assert torch.allclose(out, torch.tensor([0.0, math.cos(0.01), 0.0, math.sin(0.01)],
                                            dtype=F64), rtol=0, atol=fp64_tol(2))


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["fp64", "fp32"])
def test_scores_depend_only_on_the_relative_position(dtype):
    """q at position m and k at position n: q . k after rotation is the same for every pair
    (m, n) with the same m - n. A dot product of hs terms: two of them differ by at most
    fp_tol(hs) of sum |q_i k_i|, plus the rounding of the tables (angles up to 600 rad, one
    rounding of cos and sin each, relative eps)."""
    hs, max_pos = 32, 640
    cos, sin = rope_tables(hs, max_pos, dtype=dtype)
    q, k = _randn(hs, seed=1, dtype=dtype), _randn(hs, seed=2, dtype=dtype)

    def rotated(v, p):
        return apply_rope(v.view(1, 1, 1, hs), cos, sin, start=p).view(hs)

    scale = (q.abs() * k.abs()).sum().item()
    tol = (fp64_tol(hs) if dtype == F64 else fp32_tol(hs)) + 4 * eps(dtype)
    for delta in (0, 1, -3, 17, 300):
        scores = torch.stack([rotated(q, m) @ rotated(k, m - delta)
                              for m in (max(delta, 0), 40, 319, 600) if 0 <= m - delta < max_pos])
        assert len(scores) >= 3
        assert (scores - scores[0]).abs().max().item() <= tol * scale, delta
    # and they do depend on it: the rotation is not the identity in disguise
    s = [(rotated(q, d) @ rotated(k, 0)).item() for d in (0, 1, 5)]
    assert min(abs(s[0] - s[1]), abs(s[0] - s[2])) > 100 * tol * scale


def test_cached_positions_equal_the_full_sequence():
    """The cache case: rotating the last tokens with start = number of earlier tokens gives
    the rows a full-sequence rotation gives (the same table rows, the same arithmetic)."""
    cos, sin = rope_tables(8, 16)
    x = _randn(2, 2, 10, 8, dtype=torch.float32)
    full = apply_rope(x, cos, sin)
    for t0 in (0, 3, 9):
        assert torch.equal(apply_rope(x[:, :, t0:], cos, sin, start=t0), full[:, :, t0:])
    one = apply_rope(x[:, :, 6:7], cos, sin, start=6)
    assert torch.equal(one, full[:, :, 6:7])


def test_bf16_input_keeps_its_dtype():
    cos, sin = rope_tables(8, 16)
    x = _randn(1, 2, 5, 8, dtype=torch.float32)
    out = apply_rope(x.to(torch.bfloat16), cos, sin)
    assert out.dtype == torch.bfloat16
    # bf16 tables and input: each output is two bf16 products and a sum, so within a few
    # bf16 roundings of |x|
    assert_close_to_scale(out.float(), apply_rope(x, cos, sin), 4 * eps(torch.bfloat16),
                          scale=x.abs().max().item())


ODD = "RoPE rotates pairs: head_size must be a positive even integer, got "


@pytest.mark.parametrize("build,message", [
    (lambda: rope_tables(7, 4), ODD + "7"),
    (lambda: rope_tables(0, 4), ODD + "0"),
    (lambda: rope_tables(8, 0), "max_positions must be a positive integer, got 0"),
    (lambda: rope_tables(8, 4, base=1.0), "RoPE base must be > 1, got 1.0"),
    (lambda: apply_rope(torch.zeros(1, 1, 3, 8), *rope_tables(8, 4), start=2),
     "positions 2..4 lie outside the RoPE tables (max_positions 4)"),
    (lambda: apply_rope(torch.zeros(1, 1, 3, 6), *rope_tables(8, 4)),
     "RoPE tables (4, 4) do not fit head size 6"),
])
def test_rope_refusals(build, message):
    with pytest.raises(DlfError) as e:
        build()
    assert str(e.value) == message
