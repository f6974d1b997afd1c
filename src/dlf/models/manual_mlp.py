"""The hand-written-backward MLP of `dlf.manual`, registered as a model.

`dlf.manual` sits below `dlf.models` (it is the lesson, usable on its own), so the
declaration of how the trainer drives it lives here.
"""

from __future__ import annotations

from dlf.manual.mlp import ManualMLP as _ManualMLP
from dlf.manual.mlp import ManualMLPConfig
from dlf.models.protocol import Capabilities

__all__ = ["ManualMLP", "ManualMLPConfig"]


class ManualMLP(_ManualMLP):
    """`dlf.manual.ManualMLP`, trained by its own `manual_step` (no autograd)."""

    capabilities = Capabilities(regime="manual")
