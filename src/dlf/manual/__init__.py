"""Manual backprop (makemore part 4): an MLP whose every gradient is written by hand."""

from dlf.manual.mlp import (
    GRAD_NAMES,
    GRADCHECK_LIMIT,
    PARAM_NAMES,
    ManualMLP,
    ManualMLPConfig,
    format_gradcheck_table,
    gradcheck,
    train_manual,
)

__all__ = [
    "GRADCHECK_LIMIT",
    "GRAD_NAMES",
    "PARAM_NAMES",
    "ManualMLP",
    "ManualMLPConfig",
    "format_gradcheck_table",
    "gradcheck",
    "train_manual",
]
