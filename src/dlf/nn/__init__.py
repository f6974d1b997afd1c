"""dlf.nn: modules and layers built from tensor ops (none of PyTorch's Module or layer classes)."""

from dlf.nn.layers import (
    GELU,
    BatchNorm1d,
    Dropout,
    Embedding,
    FlattenConsecutive,
    GRUCell,
    LayerNorm,
    Linear,
    ReLU,
    RNNCell,
    Tanh,
)
from dlf.nn.module import Module, ModuleList, Sequential

__all__ = [
    "GELU",
    "BatchNorm1d",
    "Dropout",
    "Embedding",
    "FlattenConsecutive",
    "GRUCell",
    "LayerNorm",
    "Linear",
    "Module",
    "ModuleList",
    "RNNCell",
    "ReLU",
    "Sequential",
    "Tanh",
]
