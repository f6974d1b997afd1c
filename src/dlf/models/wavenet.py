"""WaveNet-style hierarchical model (van den Oord et al. 2016, as in makemore part 5).

Characters are fused two at a time: 8 -> 4 -> 2 -> 1 positions, each level a
FlattenConsecutive(2) -> Linear -> BatchNorm1d -> Tanh, then the output Linear.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

import torch.nn.functional as F

from dlf.config import check_model_fields
from dlf.errors import DlfError
from dlf.models.mlp import Init, hidden_block, output_layer
from dlf.nn import Embedding, FlattenConsecutive, Module, Sequential
from dlf.rules import AtLeast


@dataclass
class WaveNetConfig:
    type: ClassVar[str] = "wavenet"
    vocab_size: int = 0
    block_size: Annotated[int, AtLeast(1)] = 8  # a power of `group`
    n_embd: Annotated[int, AtLeast(1)] = 24
    n_hidden: Annotated[int, AtLeast(1)] = 128
    group: Annotated[int, AtLeast(2)] = 2  # positions fused per level
    batchnorm: bool = True
    linear_bias: bool = False
    init: Init = "kaiming"
    last_layer_scale: float = 0.1

    def check(self) -> None:
        """This config's own rules (the run's plan and the model call it)."""
        check_model_fields(self)
        if self.levels() == 0:
            raise DlfError(f"model.block_size must be a power of model.group={self.group} "
                           f"(e.g. 8 for group 2), got {self.block_size}")

    def levels(self) -> int:
        """How many times block_size divides by group down to 1 (0: it does not)."""
        levels, n = 0, self.block_size
        while n > 1 and n % self.group == 0:
            n //= self.group
            levels += 1
        return levels if n == 1 else 0


class WaveNet(Module):
    """idx (B, block_size) -> logits (B, vocab_size)."""

    def __init__(self, config: WaveNetConfig):
        super().__init__()
        config.check()
        c = config
        levels = c.levels()
        self.config = config
        self.block_size = c.block_size
        layers: list[Module] = [Embedding(c.vocab_size, c.n_embd)]
        fan_in = c.n_embd
        for _ in range(levels):
            layers.append(FlattenConsecutive(c.group))
            layers += hidden_block(fan_in * c.group, c)
            fan_in = c.n_hidden
        layers.append(output_layer(c))
        self.net = Sequential(*layers)

    def forward(self, idx, targets=None):
        if idx.shape[1] != self.block_size:
            raise DlfError(f"WaveNet expects {self.block_size} context characters, "
                           f"got {idx.shape[1]}")
        logits = self.net(idx)  # (B, T, n_embd) -> ... -> (B, V)
        loss = None if targets is None else F.cross_entropy(logits, targets)
        return logits, loss
