"""A differentiable all_reduce, for layers whose forward mixes the ranks' batches
(BatchNorm1d's statistics in data-parallel training).

If every rank r computes y = sum over ranks of x_r, then the loss of the whole job,
L = sum over ranks of L_r(y), has dL/dx_r = sum over ranks of dL_r/dy: the backward of
an all_reduce-sum is an all_reduce-sum of the incoming gradients. Every rank reaches
the backward's all_reduce at the same point of its (identical) graph.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from dlf.errors import DlfError


def world_size() -> int:
    """Processes in the current torch.distributed job (1 when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    try:
        dist.all_reduce(t)
    except (RuntimeError, dist.DistError) as e:
        raise DlfError(f"rank {dist.get_rank()}: a collective with the other processes failed "
                       f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); another "
                       "process has probably stopped: see its message") from None
    return t


class AllReduceSum(torch.autograd.Function):
    """y = sum over ranks of x (every rank gets y); backward: the same for the gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return _all_reduce(x.clone())

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _all_reduce(grad.clone())


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Differentiable sum of `x` over the ranks (the identity in one process)."""
    return AllReduceSum.apply(x) if world_size() > 1 else x
