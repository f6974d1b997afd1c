"""A differentiable all_reduce, for layers whose forward mixes the ranks' batches
(BatchNorm1d's statistics in data-parallel training).

If every rank r computes y = sum over ranks of x_r, then the loss of the whole job,
L = sum over ranks of L_r(y), has dL/dx_r = sum over ranks of dL_r/dy: the backward of
an all_reduce-sum is an all_reduce-sum of the incoming gradients. Every rank reaches
the backward's all_reduce at the same point of its (identical) graph.

The ranks are a `group`: any object with `world_size` and an in-place, summing
`all_reduce(tensor)` (what dlf.engine.distributed.Group offers; the trainer hands its
group to the layers that need one).
"""

from __future__ import annotations

import torch


class AllReduceSum(torch.autograd.Function):
    """y = sum over the group's ranks of x (every rank gets y); backward: the same for the
    gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        return group.all_reduce(x.clone())

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return ctx.group.all_reduce(grad.clone()), None


def all_reduce_sum(x: torch.Tensor, group) -> torch.Tensor:
    """Differentiable sum of `x` over the ranks of `group` (the identity for one rank)."""
    return AllReduceSum.apply(x, group) if group is not None and group.world_size > 1 else x


def ranks(group) -> int:
    """How many processes `group` holds (1 for None: this process alone)."""
    return 1 if group is None else group.world_size
