"""Comparison tolerances derived from the dtype and the operation, never from one machine.

Two correct computations of the same quantity differ when they round in a different order:
micro-batches against one batch, one thread against two, one CPU's kernels against another's
(AVX-512 on AMD EPYC, AMX on Intel Xeon), fused against unfused under torch.compile. The
classical bound for a sum of n floating-point terms (Higham, *Accuracy and Stability of
Numerical Algorithms*, 2nd ed., section 4.2) is

    |computed - exact| <= (n - 1) * u * sum(|terms|),      u = eps / 2 (unit roundoff),

whatever the order. Two orders each obey it, so they differ by less than

    n * eps * sum(|terms|).

That is `sum_tol(n, dtype)`: a bound *relative to the magnitude of the terms*, not to the
result. When terms cancel (a gradient that is near zero, or exactly zero mathematically,
such as the key bias of attention) the result is pure rounding noise and a tolerance relative
to it means nothing; compare against the scale of the terms instead (`assert_close_to_scale`).

eps (torch.finfo(dtype).eps) is 2**-52 for float64, 2**-23 for float32 and 2**-7 for bfloat16
(unit roundoff 2**-8: bf16 keeps 8 significant bits).
"""

from __future__ import annotations

import torch


def eps(dtype: torch.dtype = torch.float32) -> float:
    """Machine epsilon of `dtype`: the gap between 1.0 and the next number."""
    return torch.finfo(dtype).eps


def sum_tol(n_terms: int, dtype: torch.dtype = torch.float32) -> float:
    """Largest relative difference (relative to sum |terms|) of two summation orders of
    `n_terms` terms in `dtype`: n * eps (see the module docstring)."""
    return max(int(n_terms), 1) * eps(dtype)


def fp32_tol(n_terms: int) -> float:
    """sum_tol for float32: n * 2**-23."""
    return sum_tol(n_terms, torch.float32)


def fp64_tol(n_terms: int) -> float:
    """sum_tol for float64: n * 2**-52."""
    return sum_tol(n_terms, torch.float64)


def bf16_tol(n_terms: int) -> float:
    """sum_tol for bfloat16: n * 2**-7."""
    return sum_tol(n_terms, torch.bfloat16)


def network_terms(tokens: int, n_layer: int, width: int) -> int:
    """Rounding steps behind one gradient entry (or the loss) of a small network.

    The entry sums `tokens` per-token contributions (the batch reduction of the weight
    gradient, or the mean of the loss); each contribution passed through `n_layer` layers
    whose reductions are at most `width` terms long, once forward and once backward. Errors
    of a composition add to first order, so the bound counts `tokens + 2 * n_layer * width`
    terms.
    """
    return tokens + 2 * n_layer * width


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, tol: float,
                          msg: str = "", scale: float | None = None) -> None:
    """|actual - expected| <= tol * scale elementwise.

    `scale` stands for sum |terms| of the module docstring. By default it is max |expected|
    over the whole tensor, which is of that size when the tensor has entries whose terms do
    not cancel. Pass it explicitly for a tensor that is zero by mathematics (the bias before
    a BatchNorm): then only the terms know the scale.
    """
    assert actual.shape == expected.shape, (msg, actual.shape, expected.shape)
    if scale is None:
        scale = expected.detach().abs().max().item()
    diff = (actual.detach() - expected.detach()).abs().max().item()
    assert diff <= tol * scale, (f"{msg}: max |diff| {diff:.3g} > {tol:.3g} * scale "
                                 f"{scale:.3g}")


def stats_tol(n_values: int, scale: float, dtype: torch.dtype = torch.float32) -> float:
    """Absolute tolerance for the mean or standard deviation of `n_values` numbers of size at
    most `scale`, computed in `dtype`, against a float64 reference.

    The mean is one n-term sum; the variance a second pass over the deviations, whose error
    (at most n * eps * scale**2) changes the std by that over 2 * std. For spread-out test
    values (std of order scale) both stay below 2n * eps * scale; values all equal give a
    std of at most eps * scale instead of 0.
    """
    return sum_tol(2 * n_values, dtype) * scale
