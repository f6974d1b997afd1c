"""Watching the loss for divergence."""

from __future__ import annotations

import math

import torch

from dlf.engine.state import TrainState
from dlf.errors import DlfError

# A step whose loss exceeds this multiple of the run's first step's loss marks the run as
# diverging (a warning on the progress line and in result.json, not a stop).
DIVERGENCE_FACTOR = 10.0


class Diverged(DlfError):
    """A loss or gradient norm that is not finite: the run stops at that step, before
    anything of it is saved. The session that ran it (dlf.engine.session) completes the
    line with where the last good checkpoint is."""

    def __init__(self, what: str, step: int):
        self.what, self.step = what, step
        super().__init__(self.line("see the run directory"))

    def line(self, kept: str) -> str:
        return (f"{self.what} at step {self.step}; training stopped ({kept}); lower train.lr "
                "or set train.grad_clip")


class Divergence:
    """Stops the run on a loss or gradient norm that is not finite (`Diverged`: exit 2),
    so the last checkpoint stays good; flags a loss far above the first step's
    (TrainState.initial_loss), without stopping. Its own state, the first step flagged and
    the warning for this step, lasts one session."""

    def __init__(self):
        self.diverged_at: int | None = None
        self.warning: str | None = None  # set for the one step that first passes the factor

    def check(self, state: TrainState, loss, grad_norm) -> float:
        """The loss of the step just taken (state.step) as a float, read with the
        gradient norm in one device sync. Raises Diverged if either is not finite; sets
        `warning` for the step whose loss first passes DIVERGENCE_FACTOR x the first
        step's, which it records in state.initial_loss."""
        step = state.step
        if grad_norm is None:
            loss_v, norm_v = float(loss), 0.0
        else:
            loss_v, norm_v = torch.stack([loss.float(), grad_norm.float()]).tolist()
        if not math.isfinite(loss_v) or not math.isfinite(norm_v):
            raise Diverged(f"loss became {loss_v}" if not math.isfinite(loss_v)
                           else f"gradient norm became {norm_v}", step)
        self.warning = None
        if state.initial_loss is None:
            state.initial_loss = loss_v
        elif self.diverged_at is None and loss_v > DIVERGENCE_FACTOR * state.initial_loss:
            self.diverged_at = step
            self.warning = _too_high(loss_v, step, state.initial_loss)
        return loss_v

    def warnings(self, state: TrainState, train_loss: float) -> list[str]:
        """result.json's "warnings": divergence seen during training or in the final loss."""
        first = state.initial_loss
        if self.diverged_at is not None:
            return [(f"diverging: the loss exceeded {DIVERGENCE_FACTOR:g}x the first step's "
                     f"({first:.4g}) from step {self.diverged_at}; lower train.lr")]
        if first is not None and train_loss > DIVERGENCE_FACTOR * first:
            return [_too_high(train_loss, state.step, first)]
        return []


def _too_high(loss: float, step: int, first: float) -> str:
    return (f"loss {loss:.4g} at step {step} is more than {DIVERGENCE_FACTOR:g}x the first "
            f"step's {first:.4g}: the run is diverging; lower train.lr")
