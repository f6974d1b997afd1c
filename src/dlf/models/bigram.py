"""Bigram language models: a table of counts, and a one-layer network that learns the same table.

Both predict the next character from the previous one only (block_size 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F

from dlf.config import check_model_fields
from dlf.errors import DlfError
from dlf.models.protocol import Capabilities
from dlf.nn import Module
from dlf.rules import AtLeast


@dataclass
class CountBigramConfig:
    type: ClassVar[str] = "count-bigram"
    vocab_size: int = 0  # filled in from the tokenizer
    block_size: int = 1  # a bigram sees one previous character
    smoothing: Annotated[float, AtLeast(0)] = 1.0  # add-k: every pair gets k fake counts

    def check(self) -> None:
        """This config's own rules (the run's plan and the model call it)."""
        _check(self)


@dataclass
class NeuralBigramConfig:
    type: ClassVar[str] = "neural-bigram"
    vocab_size: int = 0
    block_size: int = 1
    l2: float = 0.0  # penalty l2 * mean(W**2), the analogue of smoothing (training only)
    compare_smoothing: float = 1.0  # k of the count model the result is compared with

    def check(self) -> None:
        """This config's own rules (the run's plan and the model call it)."""
        _check(self)


def _check(config) -> None:
    check_model_fields(config)
    if config.block_size != 1:
        raise DlfError(f"a bigram model has block_size 1, got model.block_size={config.block_size}")


class CountBigram(Module):
    """P(next | prev) = (N[prev, next] + k) / sum_j (N[prev, j] + k), fitted by counting.

    forward: idx (B, 1) -> logits (B, V) = log P[idx[:, -1]].
    """

    block_size = 1
    capabilities = Capabilities(regime="fitted", bigram_tables=True)

    def __init__(self, config: CountBigramConfig):
        super().__init__()
        config.check()
        self.config = config
        V = config.vocab_size
        self.register_buffer("counts", torch.zeros(V, V))

    def fit(self, X: torch.Tensor, Y: torch.Tensor) -> None:
        """Count every (previous, next) pair of the training windows X (N, 1), Y (N,)."""
        V = self.config.vocab_size
        prev = X[:, -1].to(self.counts.device)
        pairs = torch.bincount(prev * V + Y.to(prev.device), minlength=V * V)
        self.counts.copy_(pairs.view(V, V).to(self.counts.dtype))

    def probs(self) -> torch.Tensor:
        """(V, V) row-stochastic matrix of smoothed probabilities."""
        N = self.counts + self.config.smoothing
        sums = N.sum(dim=1, keepdim=True)
        if (sums == 0).any():
            raise DlfError("a character never occurs as a previous character and smoothing is 0")
        return N / sums

    def forward(self, idx, targets=None):
        logits = self.probs().log()[idx[:, -1]]  # (B, V)
        loss = None if targets is None else F.cross_entropy(logits, targets)
        return logits, loss

    def num_parameters(self) -> int:
        return self.counts.numel()  # the table is the model

    def probability_table(self) -> torch.Tensor:
        return self.probs()


class NeuralBigram(Module):
    """logits = onehot(prev) @ W, written as the equivalent row lookup W[prev]
    (index_select, whose backward adds rows: on the full names set, a step is about twice
    as fast on 2 threads as with W[prev], whose backward is a general scatter).

    forward: idx (B, 1) -> logits (B, V); loss = cross-entropy (+ l2 * mean(W^2) in
    training mode only, so evaluated losses are plain NLL comparable with counts).
    """

    block_size = 1
    capabilities = Capabilities(bigram_tables=True)

    def __init__(self, config: NeuralBigramConfig):
        super().__init__()
        config.check()
        self.config = config
        V = config.vocab_size
        self.W = torch.randn(V, V).requires_grad_()

    def forward(self, idx, targets=None):
        logits = self.W.index_select(0, idx[:, -1])  # (B, V) == one_hot(prev) @ W
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits, targets)
            if self.training and self.config.l2 > 0:
                loss = loss + self.config.l2 * (self.W**2).mean()
        return logits, loss

    @torch.no_grad()
    def probability_table(self) -> torch.Tensor:
        """(V, V): softmax(W), the network's P(next | prev)."""
        return torch.softmax(self.W.detach().float(), dim=1)


def kl_divergence_rows(P: torch.Tensor, Q: torch.Tensor, weights: torch.Tensor) -> float:
    """sum_i w_i KL(P_i || Q_i) / sum_i w_i, in nats; rows with weight 0 are ignored."""
    kl_rows = (P * (P.clamp_min(1e-30).log() - Q.clamp_min(1e-30).log())).sum(dim=1)  # (V,)
    return float((kl_rows * weights).sum() / weights.sum())
