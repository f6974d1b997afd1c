"""The names MLP (Bengio et al. 2003) from our own layers.

Embed the previous block_size characters, concatenate, then n_layer blocks of
[Linear -> BatchNorm1d -> Tanh], then the output Linear.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import torch
import torch.nn.functional as F

from dlf.config import check_model_fields
from dlf.errors import DlfError
from dlf.nn import BatchNorm1d, Embedding, Linear, Module, Sequential, Tanh
from dlf.rules import AtLeast

TANH_GAIN = 5 / 3  # Kaiming gain for tanh: keeps activations at unit scale
# How the hidden weights start: Kaiming's gain for tanh, or plain N(0, 1) (the bad init)
Init = Literal["kaiming", "normal"]


@dataclass
class MLPConfig:
    type: ClassVar[str] = "mlp"
    vocab_size: int = 0
    block_size: Annotated[int, AtLeast(1)] = 3  # characters of context
    n_embd: Annotated[int, AtLeast(1)] = 10  # embedding size per character
    n_hidden: Annotated[int, AtLeast(1)] = 200
    n_layer: Annotated[int, AtLeast(1)] = 1  # hidden [Linear -> BatchNorm1d -> Tanh] blocks
    batchnorm: bool = True
    linear_bias: bool = False  # a bias before BatchNorm is redundant (BN subtracts the mean)
    init: Init = "kaiming"  # kaiming (gain 5/3 / sqrt(fan_in)) | normal (plain N(0, 1): the bad init)
    last_layer_scale: float = 0.1  # shrink the output layer so the initial loss is ~ln(V)

    def check(self) -> None:
        """This config's rules (the run's plan and the model call it)."""
        check_model_fields(self)


def hidden_block(fan_in: int, c) -> list[Module]:
    """Linear -> [BatchNorm1d] -> Tanh with the configured init."""
    gain = TANH_GAIN if c.init == "kaiming" else fan_in**0.5  # "normal": weights ~ N(0, 1)
    layers: list[Module] = [Linear(fan_in, c.n_hidden, bias=c.linear_bias or not c.batchnorm,
                                   gain=gain)]
    if c.batchnorm:
        layers.append(BatchNorm1d(c.n_hidden))
    layers.append(Tanh())
    return layers


def output_layer(c) -> Linear:
    out = Linear(c.n_hidden, c.vocab_size)
    with torch.no_grad():
        out.weight *= c.last_layer_scale
    return out


class MLP(Module):
    """idx (B, block_size) -> logits (B, vocab_size)."""

    def __init__(self, config: MLPConfig):
        super().__init__()
        config.check()
        self.config = config
        self.block_size = config.block_size
        self.wte = Embedding(config.vocab_size, config.n_embd)
        layers: list[Module] = []
        fan_in = config.block_size * config.n_embd
        for _ in range(config.n_layer):
            layers += hidden_block(fan_in, config)
            fan_in = config.n_hidden
        layers.append(output_layer(config))
        self.net = Sequential(*layers)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        if T != self.block_size:
            raise DlfError(f"MLP expects {self.block_size} context characters, got {T}")
        x = self.wte(idx).view(B, -1)  # (B, block_size * n_embd)
        logits = self.net(x)  # (B, V)
        loss = None if targets is None else F.cross_entropy(logits, targets)
        return logits, loss
