"""Watching the loss for divergence."""

from __future__ import annotations

import math

import torch

from dlf.errors import DlfError

# A step whose loss exceeds this multiple of the run's first step's loss marks the run as
# diverging (a warning on the progress line and in result.json, not a stop).
DIVERGENCE_FACTOR = 10.0


class Divergence:
    """A loss or gradient norm that is not finite stops the run at that step (DlfError:
    exit 2) before anything of it is saved, so the last checkpoint stays good. A loss far
    above the first step's is flagged, not stopped. State: the first step's loss (part of
    a checkpoint) and the first step flagged."""

    def __init__(self, kept, initial_loss: float | None = None):
        self.kept = kept  # () -> where the last good checkpoint is, for the stop message
        self.initial_loss = initial_loss
        self.diverged_at: int | None = None
        self.warning: str | None = None  # set for the one step that first passes the factor

    def check(self, step: int, loss, grad_norm) -> float:
        """The step's loss as a float (with the gradient norm: the one device sync per
        step). Raises DlfError if either is not finite; sets `warning` for the step whose
        loss first passes DIVERGENCE_FACTOR x the first step's."""
        if grad_norm is None:
            loss_v, norm_v = float(loss), 0.0
        else:
            loss_v, norm_v = torch.stack([loss.float(), grad_norm.float()]).tolist()
        if not math.isfinite(loss_v) or not math.isfinite(norm_v):
            what = (f"loss became {loss_v}" if not math.isfinite(loss_v)
                    else f"gradient norm became {norm_v}")
            raise DlfError(f"{what} at step {step}; training stopped ({self.kept()}); "
                           "lower train.lr or set train.grad_clip")
        self.warning = None
        if self.initial_loss is None:
            self.initial_loss = loss_v
        elif self.diverged_at is None and loss_v > DIVERGENCE_FACTOR * self.initial_loss:
            self.diverged_at = step
            self.warning = self._too_high(loss_v, step)
        return loss_v

    def _too_high(self, loss: float, step: int) -> str:
        return (f"loss {loss:.4g} at step {step} is more than {DIVERGENCE_FACTOR:g}x the first "
                f"step's {self.initial_loss:.4g}: the run is diverging; lower train.lr")

    def warnings(self, train_loss: float, step: int) -> list[str]:
        """result.json's "warnings": divergence seen during training or in the final loss."""
        if self.diverged_at is not None:
            return [(f"diverging: the loss exceeded {DIVERGENCE_FACTOR:g}x the first step's "
                     f"({self.initial_loss:.4g}) from step {self.diverged_at}; lower train.lr")]
        if self.initial_loss is not None and train_loss > DIVERGENCE_FACTOR * self.initial_loss:
            return [self._too_high(train_loss, step)]
        return []
