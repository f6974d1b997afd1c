"""Layers written from tensor ops: Linear, Embedding, BatchNorm1d, LayerNorm, RMSNorm, Tanh,
ReLU, ReLU2, GELU, Dropout, FlattenConsecutive, and the recurrent cells RNNCell and GRUCell.

Shapes use B = batch, T = time, C = channels; ``...`` means any leading dimensions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dlf.errors import DlfError
from dlf.nn.collectives import all_reduce_sum, ranks
from dlf.nn.module import Module

__all__ = [
    "GELU",
    "BatchNorm1d",
    "Dropout",
    "Embedding",
    "FlattenConsecutive",
    "GRUCell",
    "LayerNorm",
    "Linear",
    "RMSNorm",
    "RNNCell",
    "ReLU",
    "ReLU2",
    "Tanh",
]


def _check_dim(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DlfError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_eps(eps: float) -> float:
    if not eps >= 0:
        raise DlfError(f"eps must be >= 0, got {eps!r}")
    return float(eps)


class _Recorder(Module):
    """Activation layers can keep their last output in ``self.out`` for diagnostics.

    Off by default: a kept output holds its autograd graph (a Transformer's (B, T, 4C)
    GELU output per layer) until the next step. Diagnostics set ``record_out = True``
    while they measure; ``retain_out_grad = True`` also keeps ``self.out.grad`` after
    backward."""

    record_out: bool = False
    retain_out_grad: bool = False

    def _record(self, out: torch.Tensor) -> torch.Tensor:
        if self.record_out:
            self.out = out
            if self.retain_out_grad and out.requires_grad:
                out.retain_grad()
        return out


class Linear(Module):
    """``y = x @ weight (+ bias)``. Input (..., fan_in) -> output (..., fan_out).

    ``weight`` has shape (fan_in, fan_out) (the transpose of torch.nn.Linear's), drawn
    N(0, 1) * gain / sqrt(fan_in) (Kaiming-style: gain 5/3 suits tanh, sqrt(2) ReLU);
    ``bias`` (fan_out,) starts at zero. ``fused=True`` computes the same ``x @ weight +
    bias`` as one ``torch.addmm`` (the bias is added inside the matmul kernel rather than
    in a second pass over the output; tested equal)."""

    def __init__(
        self,
        fan_in: int,
        fan_out: int,
        bias: bool = True,
        gain: float = 1.0,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        fused: bool = False,
    ) -> None:
        super().__init__()
        self.fan_in = _check_dim("fan_in", fan_in)
        self.fan_out = _check_dim("fan_out", fan_out)
        self.fused = fused
        # one-row inputs (cached decoding) as this many slice products (see `_matvec`);
        # 1 = the plain product. Set by whoever decodes (dlf.sample), never from global state.
        self.matvec_splits = 1
        w = torch.randn((fan_in, fan_out), generator=generator, device=device, dtype=dtype)
        self.weight = (w * (gain / fan_in**0.5)).requires_grad_()
        self.bias = (
            torch.zeros(fan_out, device=device, dtype=dtype).requires_grad_() if bias else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.matvec_splits > 1 and x.numel() == self.fan_in and x.device.type == "cpu":
            return self._matvec(x)
        if self.fused and self.bias is not None:
            out = torch.addmm(self.bias, x.reshape(-1, self.fan_in), self.weight)  # (N, fan_out)
            return out.view(*x.shape[:-1], self.fan_out)  # (..., fan_out)
        out = x @ self.weight
        if self.bias is not None:
            out = out + self.bias
        return out

    @staticmethod
    def splits_for(fan_in: int, threads: int) -> int:
        """How many slices `_matvec` should sum for a one-row product on `threads` threads
        (1: the plain product). The sampler sets `matvec_splits` from this while it decodes."""
        if threads < 2:  # one thread: the plain kernel is as fast or faster
            return 1
        return next((k for k in (16, 8, 4, 2) if fan_in % k == 0 and fan_in >= 16 * k), 1)

    def _matvec(self, x: torch.Tensor) -> torch.Tensor:
        """One input row (cached decoding): the same ``x @ weight + bias`` as k partial
        products over consecutive slices of x and of weight's rows, summed. torch's CPU
        kernel for a one-row matmul streams the weights on one thread, at a fraction of
        the memory bandwidth; ``bmm`` runs the k slices in parallel (the weights are read
        once either way; a view, no copy). Only the order of the additions differs."""
        k = self.matvec_splits
        xs = x.reshape(k, 1, self.fan_in // k)  # (k, 1, fan_in / k)
        ws = self.weight.view(k, self.fan_in // k, self.fan_out)  # (k, fan_in / k, fan_out)
        out = torch.bmm(xs, ws).sum(0)  # (1, fan_out)
        if self.bias is not None:
            out = out + self.bias
        return out.view(*x.shape[:-1], self.fan_out)  # (..., fan_out)

    def extra_repr(self) -> str:
        return f"fan_in={self.fan_in}, fan_out={self.fan_out}, bias={self.bias is not None}"


class Embedding(Module):
    """Lookup table. Integer input (...) -> output (..., embedding_dim).

    ``weight`` (num_embeddings, embedding_dim) is drawn N(0, 1)."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.num_embeddings = _check_dim("num_embeddings", num_embeddings)
        self.embedding_dim = _check_dim("embedding_dim", embedding_dim)
        self.weight = torch.randn(
            (num_embeddings, embedding_dim), generator=generator, device=device, dtype=dtype
        ).requires_grad_()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.weight[idx]

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class BatchNorm1d(Module):
    """Batch normalisation over channels, with torch.nn.BatchNorm1d's semantics.

    Input (N, C) or (N, L, C) -> output of the same shape. Statistics are per channel
    over dim 0 (2-D) or dims (0, 1) (3-D; channels last, unlike torch which wants
    (N, C, L)). Training normalises with the biased batch variance and updates
    ``running = (1 - momentum) * running + momentum * batch`` with the unbiased
    variance; eval normalises with the running statistics."""

    def __init__(
        self,
        dim: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.dim = _check_dim("dim", dim)
        self.eps = _check_eps(eps)
        if not 0.0 <= momentum <= 1.0:
            raise DlfError(f"momentum must be in [0, 1], got {momentum!r}")
        self.momentum = float(momentum)
        self.affine = affine
        if affine:
            self.weight = torch.ones(dim, device=device, dtype=dtype).requires_grad_()
            self.bias = torch.zeros(dim, device=device, dtype=dtype).requires_grad_()
        self.register_buffer("running_mean", torch.zeros(dim, device=device, dtype=dtype))
        self.register_buffer("running_var", torch.ones(dim, device=device, dtype=dtype))
        # the processes of a data-parallel job whose batches are normalised as one (the
        # trainer's dlf.engine.distributed.Group; dlf.nn.collectives); None: this batch alone
        self.group = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim not in (2, 3) or x.shape[-1] != self.dim:
            raise DlfError(
                f"BatchNorm1d({self.dim}) expects input (N, {self.dim}) or (N, L, {self.dim}), "
                f"got {tuple(x.shape)}"
            )
        if self.training:
            dims = (0,) if x.ndim == 2 else (0, 1)
            # values per channel in the global batch (data-parallel ranks hold equal slices)
            n = x.numel() // self.dim * ranks(self.group)
            if n < 2:
                raise DlfError("BatchNorm1d needs more than 1 value per channel when training")
            if ranks(self.group) > 1:  # data-parallel: statistics of the global batch
                mean, var = self._global_stats(x, dims, n, self.group)
            else:
                mean = x.mean(dims)  # (C,)
                var = x.var(dims, correction=0)  # (C,) biased: used to normalise
            with torch.no_grad():
                m = self.momentum
                unbiased = var.detach() * (n / (n - 1))
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * unbiased)
        else:
            mean, var = self.running_mean, self.running_var
        out = (x - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight + self.bias
        return out

    @staticmethod
    def _global_stats(x: torch.Tensor, dims: tuple, n: int, group):
        """Mean and biased variance (C,) over every rank's batch (n values per channel):
        the from-scratch SyncBatchNorm. Two passes (sum, then squared deviations from
        the global mean), as x.var does, and differentiable: the all_reduce's backward
        sends each rank's share of the gradient to the others."""
        mean = all_reduce_sum(x.sum(dims), group) / n  # (C,)
        var = all_reduce_sum(((x - mean) ** 2).sum(dims), group) / n  # (C,)
        return mean, var

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


class LayerNorm(Module):
    """Normalise over the last dimension (biased variance). Input (..., dim) -> same shape.

    ``weight`` starts at ones, ``bias`` at zeros (``bias=False``: no bias).
    ``fused=True`` computes the same formula with torch's one-pass kernel
    (``F.layer_norm``, tested equal): several times faster on a CPU, where the written-out
    version makes five passes over the activations."""

    def __init__(
        self,
        dim: int,
        eps: float = 1e-5,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        fused: bool = False,
    ) -> None:
        super().__init__()
        self.dim = _check_dim("dim", dim)
        self.eps = _check_eps(eps)
        self.fused = fused
        self.weight = torch.ones(dim, device=device, dtype=dtype).requires_grad_()
        self.bias = torch.zeros(dim, device=device, dtype=dtype).requires_grad_() if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)
        mean = x.mean(-1, keepdim=True)  # (..., 1)
        var = x.var(-1, keepdim=True, correction=0)  # (..., 1)
        out = (x - mean) * torch.rsqrt(var + self.eps) * self.weight
        if self.bias is not None:
            out = out + self.bias
        return out

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, bias={self.bias is not None}"


class RMSNorm(Module):
    """Root-mean-square normalisation over the last dimension (Zhang and Sennrich, 2019).
    Input (..., dim) -> same shape:

        y = x / sqrt(mean(x**2) + eps) * weight

    No mean is subtracted and there is no bias; ``weight`` starts at ones. As torch's
    ``RMSNorm``, the mean of squares is taken in float32 for bf16/fp16 input and the result
    is rounded once, to the input's dtype. ``fused=True`` computes the same formula with
    torch's ``F.rms_norm`` (tested equal) when the input and the weight share a dtype (under
    bf16 autocast they do not, and torch itself falls back to these written-out steps)."""

    def __init__(
        self,
        dim: int,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        fused: bool = False,
    ) -> None:
        super().__init__()
        self.dim = _check_dim("dim", dim)
        self.eps = _check_eps(eps)
        self.fused = fused
        self.weight = torch.ones(dim, device=device, dtype=dtype).requires_grad_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused and x.dtype == self.weight.dtype:
            return F.rms_norm(x, (self.dim,), self.weight, self.eps)
        # at least float32: a bf16 sum of dim squares keeps only 8 significant bits
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        rms_inv = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)  # (..., 1)
        return (xf * rms_inv * self.weight).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


class Tanh(_Recorder):
    """Elementwise tanh; any shape. Can keep ``self.out`` (saturation diagnostics)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._record(torch.tanh(x))


class ReLU(_Recorder):
    """Elementwise max(x, 0); any shape. Can keep ``self.out``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._record(torch.relu(x))


class ReLU2(_Recorder):
    """Squared ReLU, max(x, 0)**2 (So et al., 2021, "Primer"); any shape. Its gradient is
    2 * max(x, 0). Can keep ``self.out``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._record(torch.relu(x).square())


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


class GELU(_Recorder):
    """Gaussian error linear unit; any shape. Can keep ``self.out``.

    ``approximate='none'``: 0.5 * x * (1 + erf(x / sqrt(2))).
    ``approximate='tanh'``: 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3))).
    ``fused=True``: the same function from torch's kernel (``F.gelu``, tested equal)."""

    def __init__(self, approximate: str = "none", fused: bool = False) -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise DlfError(f"GELU approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            out = F.gelu(x, approximate=self.approximate)
        elif self.approximate == "tanh":
            out = 0.5 * x * (1.0 + torch.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))
        else:
            out = 0.5 * x * (1.0 + torch.erf(x * (1.0 / math.sqrt(2.0))))
        return self._record(out)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Dropout(Module):
    """Inverted dropout; any shape. Training zeroes each element with probability ``p`` and
    scales the rest by 1 / (1 - p); eval (or p == 0) returns the input unchanged.
    The mask comes from ``torch.rand``, so ``torch.manual_seed`` controls it.
    ``residual(r, x)`` returns ``r + dropout(x)``.

    ``fused=True`` on a GPU uses torch's dropout kernel (``F.dropout``, and one multiply-add
    pass for the residual form: the same distribution from another random stream; tested
    to be the same function of its mask). On a CPU it keeps the written-out mask: torch's
    ``F.dropout`` and ``bernoulli_`` were 1.3-1.9x slower there, forward and backward,
    than ``rand >= p`` and two multiplies (2-core AMD EPYC, bf16 and fp32)."""

    def __init__(self, p: float = 0.5, fused: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise DlfError(f"dropout probability must be in [0, 1], got {p!r}")
        self.p = float(p)
        self.fused = fused

    def _kernel(self, x: torch.Tensor) -> bool:
        """Whether to use torch's fused dropout kernel for x."""
        return self.fused and x.device.type != "cpu"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0
        if self._kernel(x):
            return F.dropout(x, self.p, training=True)
        keep = torch.rand(x.shape, device=x.device) >= self.p  # P(keep) = 1 - p
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))

    def residual(self, r: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """r + dropout(x), both (...,) of one shape."""
        if not self.training or self.p == 0.0 or self.p == 1.0 or not self._kernel(x):
            return r + self(x)
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p)  # 1 with P(keep) = 1 - p
        return torch.addcmul(r, x, keep, value=1.0 / (1.0 - self.p))  # r + x * keep / (1 - p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class FlattenConsecutive(Module):
    """Concatenate ``n`` consecutive time steps: (B, T, C) -> (B, T // n, C * n).

    When T // n == 1 the time axis is dropped: output (B, C * n). (WaveNet-style
    hierarchical merging.)"""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = _check_dim("n", n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3:
            raise DlfError(f"FlattenConsecutive expects input (B, T, C), got {tuple(x.shape)}")
        B, T, C = x.shape
        if T % self.n != 0:
            raise DlfError(
                f"FlattenConsecutive({self.n}): time length {T} is not divisible by {self.n}"
            )
        out = x.reshape(B, T // self.n, C * self.n)  # (B, T/n, C*n)
        if out.shape[1] == 1:
            out = out.squeeze(1)  # (B, C*n)
        return out

    def extra_repr(self) -> str:
        return f"n={self.n}"


class RNNCell(Module):
    """Elman recurrence, one time step: ``h' = tanh(x @ W_ih + b_ih + h @ W_hh + b_hh)``.

    x (B, input_size), h (B, hidden_size) -> h' (B, hidden_size). Two Linear layers
    (``ih``, ``hh``), each with its bias, as in torch.nn.RNNCell (whose weights are the
    transposes of ours). The tanh is a ``Tanh`` layer, so diagnostics see it."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        self.input_size = _check_dim("input_size", input_size)
        self.hidden_size = _check_dim("hidden_size", hidden_size)
        self.ih = Linear(input_size, hidden_size, bias=bias)
        self.hh = Linear(hidden_size, hidden_size, bias=bias)
        self.tanh = Tanh()

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.tanh(self.ih(x) + self.hh(h))  # (B, H)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


class GRUCell(Module):
    """Gated recurrent unit (Cho et al. 2014), one time step, as torch.nn.GRUCell:

        r  = sigmoid(x @ W_ir + b_ir + h @ W_hr + b_hr)        reset gate
        z  = sigmoid(x @ W_iz + b_iz + h @ W_hz + b_hz)        update gate
        n  = tanh(x @ W_in + b_in + r * (h @ W_hn + b_hn))     candidate state
        h' = (1 - z) * n + z * h

    x (B, input_size), h (B, hidden_size) -> h' (B, hidden_size). The three input
    projections are one Linear ``ih`` (input_size, 3H), the three hidden ones ``hh``
    (H, 3H), columns in the order r, z, n (torch's ``weight_ih`` / ``weight_hh`` are
    their transposes). The candidate's tanh is a ``Tanh`` layer, so diagnostics see it."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__()
        self.input_size = _check_dim("input_size", input_size)
        self.hidden_size = _check_dim("hidden_size", hidden_size)
        self.ih = Linear(input_size, 3 * hidden_size, bias=bias)
        self.hh = Linear(hidden_size, 3 * hidden_size, bias=bias)
        self.tanh = Tanh()

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        x_r, x_z, x_n = self.ih(x).chunk(3, dim=-1)  # 3 x (B, H)
        h_r, h_z, h_n = self.hh(h).chunk(3, dim=-1)  # 3 x (B, H)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = self.tanh(x_n + r * h_n)
        return (1 - z) * n + z * h

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"
