"""The TensorBoard sink (train.tensorboard = true, `dlf train --tensorboard`): every
number of every logged record as a scalar in RUN/tensorboard/, under the record's own
key (loss, lr, tokens_per_second, train_seconds, train_loss, val_loss), for
`tensorboard --logdir RUN/tensorboard`. It needs torch.utils.tensorboard's package,
the tensorboard extra; the plan refuses the setting without it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXTRA = "pip install 'dlf[tensorboard]'"


def available() -> bool:
    """Whether the tensorboard package can be imported."""
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardSink:
    """Writes the records as scalars into the folder `path`. Resuming from step s drops
    what a killed run logged past s (`resume_step`), as metrics.jsonl does."""

    def __init__(self, path: str | Path, resume_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        purge = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(str(path), purge_step=purge)

    def write(self, record: dict) -> None:
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self.writer.close()
