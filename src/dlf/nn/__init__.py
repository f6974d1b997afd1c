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
    ReLU2,
    RMSNorm,
    RNNCell,
    Tanh,
)
from dlf.nn.module import Module, ModuleList, Sequential
from dlf.nn.rope import apply_rope, rope_tables

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
    "RMSNorm",
    "RNNCell",
    "ReLU",
    "ReLU2",
    "Sequential",
    "Tanh",
    "apply_rope",
    "rope_tables",
]
