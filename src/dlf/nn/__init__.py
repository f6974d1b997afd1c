"""dlf.nn: modules and layers built from tensor ops (no torch.nn.Module, no torch.nn layers)."""

from dlf.nn.layers import (
    GELU,
    BatchNorm1d,
    Dropout,
    Embedding,
    FlattenConsecutive,
    LayerNorm,
    Linear,
    ReLU,
    Tanh,
)
from dlf.nn.module import Module, ModuleList, Sequential

__all__ = [
    "GELU",
    "BatchNorm1d",
    "Dropout",
    "Embedding",
    "FlattenConsecutive",
    "LayerNorm",
    "Linear",
    "Module",
    "ModuleList",
    "ReLU",
    "Sequential",
    "Tanh",
]
