"""The training batches of a run."""

from __future__ import annotations

import torch

from dlf.data.datasets import count_targets
from dlf.engine import distributed

# The training batches come from their own generator, seeded train.seed + 1, so that
# evaluation or sampling never shifts which batches training sees.
BATCH_SEED_OFFSET = 1


class Batches:
    """Every rank draws the same global batch of train.batch_size rows from one generator
    and takes its slice (`Group.shard`); train.batch_size = 0 is the whole train split at
    every step (full-batch gradient descent, one process).

    `next()` -> (x, y, n_targets): this rank's slice on the device, and the number of
    targets in the whole global batch, padding left out (what each pass's loss is weighed
    by; every rank counts the same batch, so this needs no communication). The generator's
    state is part of a checkpoint (`state`, `load_state`)."""

    def __init__(self, dataset, batch_size: int, seed: int, device: torch.device,
                 group: distributed.Group = distributed.SINGLE):
        self.dataset, self.batch_size, self.device, self.group = dataset, batch_size, device, group
        self.gen = torch.Generator().manual_seed(seed + BATCH_SEED_OFFSET)
        self._full = None  # the full batch: moved to the device and counted once

    def next(self):
        ds = self.dataset
        if self.batch_size == 0:
            if self._full is None:
                self._full = (ds.X.to(self.device), ds.Y.to(self.device), count_targets(ds.Y))
            return self._full
        x, y = ds.batch(self.batch_size, self.gen)
        n = count_targets(y)
        x, y = self.group.shard(x, y)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True), n

    def tokens_per_batch(self) -> int:
        """Targets a global batch holds on average (a full batch: the whole split)."""
        rows = self.batch_size or len(self.dataset)
        return round(rows * self.dataset.targets_per_row)

    def state(self) -> torch.Tensor:
        return self.gen.get_state()

    def load_state(self, state: torch.Tensor) -> None:
        self.gen.set_state(state)
