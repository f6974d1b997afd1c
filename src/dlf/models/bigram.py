"""Bigram language models: a table of counts, and a one-layer network that learns the same table.

Both predict the next character from the previous one only (block_size 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from dlf.errors import DlfError
from dlf.models.protocol import Capabilities
from dlf.nn import Module


@dataclass
class CountBigramConfig:
    type: ClassVar[str] = "count-bigram"
    vocab_size: int = 0  # filled in from the tokenizer
    block_size: int = 1  # a bigram sees one previous character
    smoothing: float = 1.0  # add-k: every pair gets k fake counts


@dataclass
class NeuralBigramConfig:
    type: ClassVar[str] = "neural-bigram"
    vocab_size: int = 0
    block_size: int = 1
    l2: float = 0.0  # penalty l2 * mean(W**2), the analogue of smoothing (training only)
    compare_smoothing: float = 1.0  # k of the count model the result is compared with


def _check(config) -> None:
    if config.vocab_size < 2:
        raise DlfError(f"model.vocab_size must be >= 2, got {config.vocab_size}")
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
        _check(config)
        if config.smoothing < 0:
            raise DlfError(f"model.smoothing must be >= 0, got {config.smoothing}")
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

    def extra_results(self, data, out_dir: Path) -> dict:
        plot_counts(self.counts, data.tokenizer, out_dir / "counts.png")
        return {"smoothing": self.config.smoothing}


class NeuralBigram(Module):
    """logits = onehot(prev) @ W, written as the equivalent row lookup W[prev].

    forward: idx (B, 1) -> logits (B, V); loss = cross-entropy (+ l2 * mean(W^2) in
    training mode only, so evaluated losses are plain NLL comparable with counts).
    """

    block_size = 1
    capabilities = Capabilities(bigram_tables=True)

    def __init__(self, config: NeuralBigramConfig):
        super().__init__()
        _check(config)
        self.config = config
        V = config.vocab_size
        self.W = torch.randn(V, V).requires_grad_()

    def forward(self, idx, targets=None):
        logits = self.W[idx[:, -1]]  # (B, V) == F.one_hot(prev, V).float() @ W
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits, targets)
            if self.training and self.config.l2 > 0:
                loss = loss + self.config.l2 * (self.W**2).mean()
        return logits, loss

    def extra_results(self, data, out_dir: Path) -> dict:
        """Compare with the count model fitted on the same train split."""
        counts = CountBigram(CountBigramConfig(vocab_size=self.config.vocab_size,
                                               smoothing=self.config.compare_smoothing))
        counts.fit(data.train.X, data.train.Y)
        P = counts.probs().cpu()
        with torch.no_grad():
            Q = torch.softmax(self.W.detach().float().cpu(), dim=1)
        prev_freq = torch.bincount(data.train.X[:, -1], minlength=P.size(0)).float()
        kl = kl_divergence_rows(P, Q, prev_freq)
        plot_prob_tables(P, Q, data.tokenizer, out_dir / "probs.png")
        return {"kl_count_to_neural": kl, "compare_smoothing": self.config.compare_smoothing}


def kl_divergence_rows(P: torch.Tensor, Q: torch.Tensor, weights: torch.Tensor) -> float:
    """sum_i w_i KL(P_i || Q_i) / sum_i w_i, in nats; rows with weight 0 are ignored."""
    kl_rows = (P * (P.clamp_min(1e-30).log() - Q.clamp_min(1e-30).log())).sum(dim=1)  # (V,)
    return float((kl_rows * weights).sum() / weights.sum())


def _labels(tokenizer) -> list[str]:
    return [repr(c)[1:-1] if c.isprintable() else repr(c) for c in tokenizer.itos]


def plot_counts(counts: torch.Tensor, tokenizer, path: Path) -> None:
    """The makemore picture: every cell shows its character pair and count."""
    from dlf.engine.metrics import pyplot, save_figure

    plt = pyplot()

    N = counts.cpu().long()
    V = N.size(0)
    labels = _labels(tokenizer)
    size = max(6, 0.6 * V)
    fig, ax = plt.subplots(figsize=(size, size), dpi=80)
    shade = N.float().log1p()
    ax.imshow(shade.numpy(), cmap="Blues")
    fs = max(4, min(8, 200 // max(V, 1)))
    dark = float(shade.max()) * 0.6  # above this the cell is dark: write in white
    for i in range(V):
        for j in range(V):
            color = "white" if shade[i, j] > dark else "black"
            ax.text(j, i, labels[i] + labels[j], ha="center", va="bottom", color=color, fontsize=fs)
            ax.text(j, i, str(N[i, j].item()), ha="center", va="top", color=color, fontsize=fs)
    ax.set_xlabel("next character")
    ax.set_ylabel("previous character")
    ax.set_title("bigram counts (train split)")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    save_figure(fig, path)


def plot_prob_tables(P: torch.Tensor, Q: torch.Tensor, tokenizer, path: Path) -> None:
    """Count-model probabilities beside the network's softmax(W), same colour scale."""
    from dlf.engine.metrics import pyplot, save_figure

    plt = pyplot()

    labels = _labels(tokenizer)
    V = P.size(0)
    fig, axes = plt.subplots(1, 2, figsize=(14, 7), dpi=80)
    vmax = float(max(P.max(), Q.max()))
    for ax, M, title in ((axes[0], P, "counts: P(next | prev)"),
                         (axes[1], Q, "network: softmax(W)[prev]")):
        im = ax.imshow(M.numpy(), cmap="viridis", vmin=0, vmax=vmax)
        ax.set_title(title)
        ax.set_xticks(range(V), labels, fontsize=7)
        ax.set_yticks(range(V), labels, fontsize=7)
        ax.set_xlabel("next")
        ax.set_ylabel("previous")
    fig.colorbar(im, ax=axes, shrink=0.7)
    save_figure(fig, path)

