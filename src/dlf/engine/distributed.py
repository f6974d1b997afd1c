"""Data-parallel training on torch.distributed: N processes, one model replica each.

How a step stays equal to the 1-process step (see docs/distributed.md):
- every rank draws the same GLOBAL batch from the shared batch generator and trains on
  its slice (`Group.shard`): equal slices, so the mean loss over the global batch is the
  mean of the ranks' slice means, and its gradient the mean of their gradients;
- `GradReducer` (gradients.py) averages the gradients with all_reduce over flat buckets
  (on CUDA the buckets are sent while backward still runs, from post-accumulate-grad
  hooks);
- BatchNorm1d all-reduces its batch statistics over the job's Group, which
  `share_batch_statistics` hands it (dlf.nn.collectives);
- the loss that is logged and the stop request are agreed by one small all_reduce each
  per step (`Group.mean`, `Group.any`), so every rank takes the same decisions (log,
  evaluate, stop).

Started by torchrun (or `dlf train --nproc N`), which sets RANK, WORLD_SIZE, LOCAL_RANK
and the rendezvous address; without them (`WORLD_SIZE` unset or 1) everything here is
the identity and a run is the ordinary single process.
"""

from __future__ import annotations

import atexit
import os
import sys
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from dlf.engine import elastic
from dlf.errors import DlfError
from dlf.nn import BatchNorm1d

# Seconds a collective may wait for the other ranks before the job fails. A rank that
# stops (crash, Ctrl-C) makes the others fail at their next collective; the timeout
# bounds the wait when a rank hangs instead. DLF_DIST_TIMEOUT overrides it.
DEFAULT_TIMEOUT_S = 120


@dataclass(frozen=True)
class World:
    """Where this process sits in its job: rank of size processes, local_rank of the
    local_size processes on this machine. The default is a single process."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0
    local_size: int = 1

    @classmethod
    def from_env(cls) -> World:
        """The job torchrun started (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE), or a
        single process when WORLD_SIZE is unset or 1."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return cls()
        return cls(size, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")),
                   int(os.environ.get("LOCAL_WORLD_SIZE", str(size))))


def collective_failed(e: Exception, rank: int) -> DlfError:
    return DlfError(f"rank {rank}: a collective with the other processes failed "
                    f"({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                    "another process has probably stopped: see its message")


@dataclass
class Group:
    """This process's place in the job: rank r of world_size, and its device.

    A 1-process Group (the default) makes every method the identity, so the trainer
    needs no `if distributed` of its own."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # a gloo group beside NCCL, for the per-step stop flag: reading a flag all-reduced on
    # the GPU would make the host wait for every step to finish
    cpu_group: object = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    # ------------------------------------------------------------------ collectives

    def all_reduce(self, tensor: torch.Tensor, op=None) -> torch.Tensor:
        """In-place all_reduce (SUM by default) with a clear error when a peer is gone."""
        if self.active:
            try:
                dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
            except (RuntimeError, dist.DistError) as e:
                raise collective_failed(e, self.rank) from None
        return tensor

    def barrier(self) -> None:
        if self.active:
            self.all_reduce(torch.zeros(1, device=self.device))

    def sum_floats(self, *values: float) -> list[float]:
        """Sum python floats over the ranks (float64, so evaluation sums stay exact-ish)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        return self.all_reduce(t).tolist()

    def mean(self, loss):
        """The mean of a per-rank loss over the ranks (the global batch's loss)."""
        if not self.active:
            return loss
        loss_t = torch.as_tensor(loss, dtype=torch.float32).detach().reshape(1)  # (1,)
        return self.all_reduce(loss_t.to(self.device) / self.world_size)[0]

    def any(self, flag: bool) -> bool:
        """Whether any rank's flag is set (a stop request: Ctrl-C reaches one rank, or all
        ranks at slightly different times). On the CPU group: no wait for the GPU."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0])
        try:
            dist.all_reduce(t, group=self.cpu_group)
        except (RuntimeError, dist.DistError) as e:
            raise collective_failed(e, self.rank) from None
        return bool(t.item() > 0)

    # ------------------------------------------------------------------ data

    def shard(self, x: torch.Tensor, y: torch.Tensor):
        """This rank's slice of a global batch (dim 0), the same size on every rank."""
        if not self.active:
            return x, y
        b = x.size(0) // self.world_size  # divisibility checked by the plan (check_world)
        lo = self.rank * b
        return x[lo : lo + b], y[lo : lo + b]

    def span(self, n: int) -> tuple[int, int]:
        """This rank's contiguous share [lo, hi) of n items (shares differ by at most 1)."""
        lo = n * self.rank // self.world_size
        return lo, n * (self.rank + 1) // self.world_size

    # ------------------------------------------------------------------ checks

    def check_identical(self, params: list[torch.Tensor], what: str = "parameters") -> None:
        """Debug check: every rank holds the same values (max == min over the ranks)."""
        if not self.active:
            return
        flat = torch.cat([p.detach().reshape(-1).float() for p in params])
        hi, lo = flat.clone(), flat.clone()
        self.all_reduce(hi, dist.ReduceOp.MAX)
        self.all_reduce(lo, dist.ReduceOp.MIN)
        if not torch.equal(hi, lo):
            worst = (hi - lo).abs().max().item()
            raise DlfError(f"rank {self.rank}: the ranks' {what} differ (by up to {worst:.3g}); "
                           "the data-parallel step is broken")


SINGLE = Group()


def join(world: World, device: torch.device) -> Group:
    """This process's Group in `world` on `device`: the 1-process Group, or the job torchrun
    started (backend gloo for a CPU, NCCL for CUDA, with a gloo group beside NCCL for the
    per-step stop flag). Joining twice in one process joins once."""
    if world.size <= 1:
        return Group(device=device)
    timeout = timedelta(seconds=float(os.environ.get("DLF_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kw = {"device_id": device} if device.type == "cuda" else {}
        try:  # a job restarted by torchrun: this attempt's own keys in the agent's store
            kw.update(elastic.attempt_store(world.size, world.rank, timeout))
            dist.init_process_group(backend, timeout=timeout, **kw)
        except (RuntimeError, ValueError, dist.DistError) as e:
            raise DlfError(f"rank {world.rank}: cannot join the {world.size}-process job: "
                           f"{e}") from None
        atexit.register(shutdown)
    cpu_group = dist.new_group(backend="gloo", timeout=timeout) if device.type == "cuda" else None
    return Group(world.rank, world.size, world.local_rank, world.local_size, device, cpu_group)


def share_batch_statistics(model, group: Group) -> None:
    """Hand the job's group to the model's BatchNorm1d layers, so that they normalise with
    the statistics of the global batch, as one process would (one process: nothing to do)."""
    if group.active:
        for layer in model.modules():
            if isinstance(layer, BatchNorm1d):
                layer.group = group


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def say(group: Group, *args, **kw) -> None:
    """print on rank 0 only (to stderr unless file= says otherwise)."""
    if group.is_main:
        kw.setdefault("file", sys.stderr)
        print(*args, **kw)


def seed_rank_rng(group: Group, seed: int, step: int) -> None:
    """Ranks > 0 draw their dropout masks from their own torch RNG stream (rank 0 keeps
    the stream a 1-process run has, and its saved state on resume). A resumed rank > 0
    restarts its stream from (seed, rank, step): with dropout > 0 a resumed N-process
    run is statistically, not bitwise, the uninterrupted one; with dropout 0 it is exact."""
    if group.rank > 0:
        torch.manual_seed(seed + 1_000_003 * group.rank + 7_919 * step)
