"""The training state: what a run has done so far, in one value.

The loop owns one `TrainState` and passes it to the parts that read or change it; a
checkpoint (dlf.engine.checkpoint) stores it beside the tensors that carry state of
their own (the weights, the optimizer's moments, the random generators)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class TrainState:
    step: int = 0  # optimizer steps taken
    best_val: float = math.inf  # the best validation loss so far (its weights: model.safetensors)
    initial_loss: float | None = None  # the first step's loss, what divergence is judged against
    train_seconds: float = 0.0  # seconds in optimizer steps (what train.max_seconds budgets)
    wall_seconds: float = 0.0  # seconds of the whole run, every session of it
    saved_step: int | None = None  # the step of the last checkpoint written or loaded
