"""dlf.nn: modules and layers built from tensor ops (none of PyTorch's Module or layer classes)."""

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
