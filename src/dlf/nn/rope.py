"""Rotary position embedding (RoPE; Su et al., 2021, "RoFormer").

Each head's vector of size hs is read as hs / 2 pairs, and the pair j of the vector at
position p is rotated by the angle p * theta_j, theta_j = base ** (-2j / hs). A rotation
by p * theta of a query and by n * theta of a key leaves their dot product a function of
p - n only, so attention scores see relative positions; no position table is learned.

Pairing: the two halves, (x[j], x[j + hs/2]) for j < hs/2 (as GPT-NeoX and Hugging Face's
Llama; the original pairs neighbours (x[2j], x[2j+1]), a fixed permutation of the same
channels, so the two are the same model up to how q and k's output columns are ordered).
"""

from __future__ import annotations

import torch

from dlf.errors import DlfError

__all__ = ["apply_rope", "rope_tables"]


def rope_tables(
    head_size: int,
    max_positions: int,
    base: float = 10000.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every angle p * theta_j: two (max_positions, head_size // 2) tensors.

    The angles are computed in float64 (p * theta_j reaches thousands of radians, where
    float32 keeps about three decimal places) and rounded once to ``dtype``."""
    if isinstance(head_size, bool) or not isinstance(head_size, int) or head_size < 2 \
            or head_size % 2:
        raise DlfError(f"RoPE rotates pairs: head_size must be a positive even integer, "
                       f"got {head_size!r}")
    if isinstance(max_positions, bool) or not isinstance(max_positions, int) \
            or max_positions < 1:
        raise DlfError(f"max_positions must be a positive integer, got {max_positions!r}")
    if not base > 1:
        raise DlfError(f"RoPE base must be > 1, got {base!r}")
    j = torch.arange(head_size // 2, dtype=torch.float64, device=device)
    theta = base ** (-2.0 * j / head_size)  # (hs/2,) radians per position
    p = torch.arange(max_positions, dtype=torch.float64, device=device)
    angles = torch.outer(p, theta)  # (max_positions, hs/2)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               start: int = 0) -> torch.Tensor:
    """Rotate x (..., T, hs), e.g. queries or keys (B, nh, T, hs), whose T positions are
    start, start + 1, ...: pair (x1, x2) = (x[..., j], x[..., j + hs/2]) becomes
    (x1 cos - x2 sin, x1 sin + x2 cos). ``start`` is the number of positions already in a
    key/value cache. The tables are cast to x's dtype; the output has x's shape and dtype.

    Computed as x * [cos, cos] + [x2, x1] * [-sin, sin]: one product and one fused
    multiply-add over x instead of four products, two sums and a concatenation."""
    T, hs = x.shape[-2], x.shape[-1]
    if cos.shape != sin.shape or cos.ndim != 2 or 2 * cos.shape[1] != hs:
        raise DlfError(f"RoPE tables {tuple(cos.shape)} do not fit head size {hs}")
    if start < 0 or start + T > cos.shape[0]:
        raise DlfError(f"positions {start}..{start + T - 1} lie outside the RoPE tables "
                       f"(max_positions {cos.shape[0]})")
    cos = cos[start:start + T].to(x.dtype)  # (T, hs/2)
    sin = sin[start:start + T].to(x.dtype)
    swapped = x.roll(hs // 2, dims=-1)  # (..., T, hs): [x2, x1]
    return torch.addcmul(x * torch.cat([cos, cos], dim=-1), swapped,
                         torch.cat([-sin, sin], dim=-1))  # (..., T, hs)
