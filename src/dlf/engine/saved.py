"""A saved run opened for use: its config, tokenizer and weights, ready to sample from,
evaluate or diagnose (`dlf sample`, `dlf eval`, `dlf.load_run`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dlf import config as C
from dlf import presets
from dlf.data.tokenizer import load_tokenizer
from dlf.engine.checkpoint import read_weights
from dlf.engine.device import pick_device
from dlf.errors import DlfError
from dlf.models import build_model


@dataclass
class Run:
    """A finished (or checkpointed) run, opened for sampling or evaluation."""

    path: Path
    config: C.RunConfig
    tokenizer: object  # CharTokenizer or BPETokenizer (dlf.data.load_tokenizer)
    model: object
    device: torch.device


def load_run(run_dir: str | Path, device: str = "auto", weights: str = "model") -> Run:
    """Load a run directory's config, tokenizer and weights (`model` = the best on
    validation, `state` = the last checkpoint's), the model in eval mode on `device`."""
    path = Path(run_dir)
    if not path.is_dir():
        raise DlfError(f"run directory not found: {path}")
    if not (path / "config.toml").exists():
        raise DlfError(f"{path} is not a run directory (no config.toml)")
    cfg = presets.load_toml(path / "config.toml")
    tok = load_tokenizer(path / "tokenizer.json")
    dev = pick_device(device)
    tensors = read_weights(path, cfg.model.type, weights)
    model = build_model(cfg.model)
    model.load_state_dict(tensors)
    model.to(dev)
    model.eval()
    return Run(path, cfg, tok, model, dev)
