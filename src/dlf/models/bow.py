"""makemore's bag-of-words model: each position sees the average of everything before it.

    x   = wte[idx] + wpe[positions]                      (B, T, C)
    x   = x + causal_mean(x)                             every position: mean of x_0 .. x_t
    x   = x + c_proj(tanh(c_fc(x)))                      an MLP per position
    logits = lm_head(x)                                  (B, T, V)

The average throws away the order of the past (beyond what the position embeddings
carry into it): a baseline between the fixed-window MLP and attention, which learns
the weights that the average fixes to 1 / (t + 1). Generation keeps the running sum as
its cache (`prefill`, `advance`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch

from dlf.config import check_model_fields
from dlf.errors import DlfError
from dlf.models.protocol import Capabilities
from dlf.models.sequence import sequence_loss
from dlf.nn import Embedding, Linear, Module, Tanh
from dlf.rules import AtLeast


@dataclass
class BoWConfig:
    type: ClassVar[str] = "bow"
    vocab_size: int = 0  # filled in from the tokenizer
    block_size: Annotated[int, AtLeast(1)] = 16  # positions (the names need longest + 1 = 16)
    n_embd: Annotated[int, AtLeast(1)] = 64  # embedding / residual width
    n_hidden: Annotated[int, AtLeast(1)] = 64  # MLP hidden width (makemore's n_embd2)

    def check(self) -> None:
        """This config's own rules (the run's plan and the model call it)."""
        check_model_fields(self)


def causal_mean(x: torch.Tensor) -> torch.Tensor:
    """x (B, T, C) -> (B, T, C): position t holds the mean of x[:, :t + 1]."""
    T = x.shape[1]
    counts = torch.arange(1, T + 1, device=x.device, dtype=x.dtype)  # (T,)
    return x.cumsum(dim=1) / counts[:, None]  # (B, T, C)


class BoW(Module):
    """idx (B, T) with T <= block_size -> logits (B, T, vocab_size), loss
    (see dlf.models.sequence)."""

    capabilities = Capabilities(sequence_targets=True)

    def __init__(self, config: BoWConfig):
        super().__init__()
        config.check()
        c = config
        self.config = config
        self.block_size = c.block_size
        self.wte = Embedding(c.vocab_size, c.n_embd)
        self.wpe = Embedding(c.block_size, c.n_embd)
        self.c_fc = Linear(c.n_embd, c.n_hidden)
        self.tanh = Tanh()
        self.c_proj = Linear(c.n_hidden, c.n_embd)
        self.lm_head = Linear(c.n_embd, c.vocab_size)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        T = idx.shape[1]
        if T > self.block_size:
            raise DlfError(f"sequence length {T} is longer than the model's "
                           f"block_size {self.block_size}")
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = self.wte(idx) + self.wpe(pos)  # (B, T, C)
        x = x + causal_mean(x)  # (B, T, C)
        x = x + self.c_proj(self.tanh(self.c_fc(x)))  # (B, T, C)
        logits = self.lm_head(x)  # (B, T, V)
        loss = None if targets is None else sequence_loss(logits, targets)
        return logits, loss

    def prefill(self, idx: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, int]]:
        """Run a window idx (B, T) from position 0 -> (logits of the last position (B, V),
        the cache: the running sum of the embeddings x_0 + ... + x_{T-1} (B, C) and T)."""
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))  # (B, T, C)
        total = x.cumsum(dim=1)  # (B, T, C): the sums causal_mean divides
        return self._last(x[:, -1], total[:, -1], T), (total[:, -1], T)

    def advance(self, token: torch.Tensor, cache: tuple[torch.Tensor, int]):
        """One new token (B, 1) -> (its logits (B, V), the cache with its embedding added):
        the mean of the past is the running sum over the count, no pass over the window."""
        total, T = cache
        if T >= self.block_size:
            raise DlfError(f"position {T} is past the model's block_size {self.block_size}")
        x = self.wte(token)[:, 0] + self.wpe.weight[T]  # (B, C)
        total = total + x  # (B, C)
        return self._last(x, total, T + 1), (total, T + 1)

    def _last(self, x: torch.Tensor, total: torch.Tensor, count: int) -> torch.Tensor:
        """The forward of one position: x (B, C), the sum of x up to it (B, C) -> (B, V)."""
        x = x + total / count  # (B, C)
        x = x + self.c_proj(self.tanh(self.c_fc(x)))  # (B, C)
        return self.lm_head(x)  # (B, V)

    def extra_repr(self) -> str:
        c = self.config
        return (f"vocab_size={c.vocab_size}, block_size={c.block_size}, n_embd={c.n_embd}, "
                f"n_hidden={c.n_hidden}")
