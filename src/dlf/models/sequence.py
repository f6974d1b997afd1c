"""What the sequence models (transformer, rnn, gru, bow) share: one loss rule.

A sequence model maps idx (B, T) to logits (B, T, V), position t predicting token t + 1
from tokens <= t. It trains in either shape of data:

    targets (B, T)  every position (text streams; whole lines, padding = IGNORE_INDEX);
    targets (B,)    the last position only (line data as fixed context windows).

The loss is the mean cross-entropy over the non-padding targets, so a batch of padded
lines gives the loss per predicted character, exactly like the window models'.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dlf.data.datasets import IGNORE_INDEX
from dlf.errors import DlfError


def sequence_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits (B, T, V) and targets (B, T) or (B,) -> mean cross-entropy (scalar)."""
    B, T, V = logits.shape
    if targets.shape == (B,):
        return F.cross_entropy(logits[:, -1, :], targets)
    if targets.shape == (B, T):
        return F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T),
                               ignore_index=IGNORE_INDEX)
    raise DlfError(f"targets must have shape ({B}, {T}) or ({B},), got {tuple(targets.shape)}")
