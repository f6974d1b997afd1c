"""Gradients of a data-parallel step: averaged over the ranks in flat buckets, so that
every rank updates with the gradient of the whole global batch (see distributed.py)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from dlf.engine.distributed import Group, collective_failed

# Gradient buckets: each one all_reduce; 25 MB as in torch's DistributedDataParallel.
BUCKET_BYTES = 25 * 2**20


class _Bucket:
    """Parameters whose gradients travel in one flat all_reduce."""

    def __init__(self, params: list[torch.Tensor]):
        self.params = params
        self.ready = 0  # gradients accumulated in this backward pass
        self.flat: torch.Tensor | None = None
        self.work = None  # the async all_reduce in flight

    def pack(self) -> torch.Tensor:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        self.flat = torch.cat([g.reshape(-1) for g in grads])  # (sum of numels,)
        return self.flat

    def unpack(self, scale: float) -> None:
        self.flat.mul_(scale)
        i = 0
        for p in self.params:
            n = p.numel()
            view = self.flat[i : i + n].view_as(p)  # (p's shape)
            if p.grad is None:
                p.grad = view.clone()
            else:
                p.grad.copy_(view)
            i += n
        self.flat, self.work, self.ready = None, None, 0


class GradReducer:
    """Average the gradients over the ranks with all_reduce over flat buckets.

    `overlap=True` (the default on CUDA) sends each bucket from a post-accumulate-grad
    hook as soon as backward has produced all of its gradients, so communication runs
    while backward computes the earlier layers; `finish()` waits for them. Without
    overlap, `finish()` sends every bucket after backward. Only a backward run while
    `communicate` is True sends anything: with grad_accum the earlier micro-steps just
    accumulate locally. Buckets follow the reverse parameter order, which is roughly the
    order backward produces gradients; the order is the same on every rank, as it must
    be for collectives."""

    def __init__(self, group: Group, params: list[torch.Tensor], overlap: bool | None = None,
                 bucket_bytes: int = BUCKET_BYTES):
        self.group = group
        self.overlap = group.device.type == "cuda" if overlap is None else overlap
        self.communicate = True
        self.buckets: list[_Bucket] = []
        current: list[torch.Tensor] = []
        size = 0
        for p in reversed([p for p in params if p.requires_grad]):
            current.append(p)
            size += p.numel() * p.element_size()
            if size >= bucket_bytes:
                self.buckets.append(_Bucket(current))
                current, size = [], 0
        if current:
            self.buckets.append(_Bucket(current))
        if self.overlap and group.active:
            for b in self.buckets:
                for p in b.params:
                    p.register_post_accumulate_grad_hook(self._hook(b))

    def _hook(self, bucket: _Bucket):
        def hook(param: torch.Tensor) -> None:
            if not self.communicate:
                return
            bucket.ready += 1
            if bucket.ready == len(bucket.params):
                self._send(bucket, async_op=True)
        return hook

    def _send(self, bucket: _Bucket, async_op: bool) -> None:
        try:
            bucket.work = dist.all_reduce(bucket.pack(), async_op=async_op)
        except (RuntimeError, dist.DistError) as e:
            raise collective_failed(e, self.group.rank) from None

    def finish(self) -> None:
        """After the last micro-step's backward: every gradient is the mean over ranks."""
        if not self.group.active:
            return
        for b in self.buckets:
            if b.flat is None:  # not sent by a hook (no overlap, or a parameter without grad)
                self._send(b, async_op=False)
            elif b.work is not None:
                try:
                    b.work.wait()
                except (RuntimeError, dist.DistError) as e:
                    raise collective_failed(e, self.group.rank) from None
            b.unpack(1.0 / self.group.world_size)
