"""Recurrent language models (makemore's RNN and GRU) from our own cells.

Embed each character, run one cell over the sequence from a learned start state, and
read the logits of every position from its hidden state:

    h_0 = start;  h_t = cell(wte[idx_t], h_{t-1});  logits_t = h_t @ W_head + b_head

`rnn` uses dlf.nn.RNNCell (Elman, tanh), `gru` dlf.nn.GRUCell. They train on whole
lines (data.layout = "sequences"): every position of a name at once. The hidden
state is the cache of generation (`prefill`, `advance`): one cell step per new token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch

from dlf.config import check_model_fields
from dlf.models.protocol import Capabilities
from dlf.models.sequence import sequence_loss
from dlf.nn import Embedding, GRUCell, Linear, Module, RNNCell
from dlf.rules import AtLeast


@dataclass
class RNNConfig:
    type: ClassVar[str] = "rnn"
    vocab_size: int = 0  # filled in from the tokenizer
    block_size: Annotated[int, AtLeast(1)] = 16  # longest sequence fed at once (the names need longest + 1 = 16)
    n_embd: Annotated[int, AtLeast(1)] = 64  # character embedding size
    n_hidden: Annotated[int, AtLeast(1)] = 64  # hidden state size

    def check(self) -> None:
        """This config's own rules (the run's plan and the model call it)."""
        check_model_fields(self)


@dataclass
class GRUConfig(RNNConfig):
    type: ClassVar[str] = "gru"


def record_steps(tanh, outputs: list[torch.Tensor]) -> None:
    """Diagnostics: keep every time step of a cell's tanh as one (B, T, H) ``tanh.out``.

    The cell's Tanh layer records only its last call; this stacks the outputs of all
    calls. When the layer retains gradients, each step's full gradient (through the
    output layer and the later steps) is copied into ``tanh.out.grad`` during backward."""
    out = torch.stack([o.detach() for o in outputs], dim=1)  # (B, T, H), a leaf
    if tanh.retain_out_grad and outputs[0].requires_grad:
        out.grad = torch.zeros_like(out)
        for t, o in enumerate(outputs):
            o.register_hook(lambda g, t=t: out.grad[:, t].copy_(g))
    tanh.out = out


class RNN(Module):
    """idx (B, T) -> logits (B, T, vocab_size), loss (see dlf.models.sequence)."""

    capabilities = Capabilities(sequence_targets=True)
    cell_class: ClassVar[type] = RNNCell

    def __init__(self, config: RNNConfig):
        super().__init__()
        config.check()
        self.config = config
        self.block_size = config.block_size
        self.start = torch.zeros(1, config.n_hidden).requires_grad_()  # (1, H) learned h_0
        self.wte = Embedding(config.vocab_size, config.n_embd)
        self.cell = self.cell_class(config.n_embd, config.n_hidden)
        self.lm_head = Linear(config.n_hidden, config.vocab_size)

    def states(self, idx: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        """idx (B, T), h (B, H) the state before idx (None: the start state) -> (B, T, H)."""
        B, T = idx.shape
        emb = self.wte(idx)  # (B, T, n_embd)
        h = self.start.expand(B, -1) if h is None else h  # (B, H)
        hs, acts = [], []
        tanh = self.cell.tanh
        for t in range(T):
            h = self.cell(emb[:, t], h)  # (B, H)
            hs.append(h)
            if tanh.record_out:
                acts.append(tanh.out)
        if acts:
            record_steps(tanh, acts)
        return torch.stack(hs, dim=1)  # (B, T, H)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        logits = self.lm_head(self.states(idx))  # (B, T, V)
        loss = None if targets is None else sequence_loss(logits, targets)
        return logits, loss

    def prefill(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run a window idx (B, T) from the start state -> (logits of the last position
        (B, V), the cache: the hidden state after it, (B, H))."""
        h = self.states(idx)[:, -1]  # (B, H)
        return self.lm_head(h), h

    def advance(self, token: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One new token (B, 1) after hidden state h (B, H) -> (its logits (B, V), the new
        state): one cell step."""
        h = self.states(token, h)[:, -1]  # (B, H)
        return self.lm_head(h), h

    def extra_repr(self) -> str:
        c = self.config
        return f"vocab_size={c.vocab_size}, n_embd={c.n_embd}, n_hidden={c.n_hidden}"


class GRU(RNN):
    """The same model with a GRU cell."""

    cell_class: ClassVar[type] = GRUCell
