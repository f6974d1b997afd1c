"""Runs on disk: a saved run opened for use, its config, tokenizer and weights ready to
sample from, evaluate or diagnose (`dlf sample`, `dlf eval`, `dlf.load_run`); and a run
that a new one builds on (resumed, or started from with --init-from), with the checks
that the new run fits it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from dlf import config as C
from dlf import presets
from dlf.data.tokenizer import CharTokenizer, load_tokenizer
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


# ----------------------------------------------------------------------- building on a run


@dataclass(frozen=True)
class SavedRun:
    """A run on disk that a new run builds on: the run a resumed run continues, or the run
    whose weights and tokenizer --init-from starts from; its directory, config.toml and
    tokenizer. `checkpoint` False: a run of the same config stopped before its first
    checkpoint, which starts over (`--resume auto`); its tokenizer is learned again."""

    path: Path
    config: C.RunConfig
    tokenizer: object  # CharTokenizer or BPETokenizer, as tokenizer.json holds; or None
    checkpoint: bool = True


def check_same_run(requested: C.RunConfig, resume: SavedRun) -> None:
    """Resuming: training settings may change (e.g. more steps); the model and data may not."""
    saved = resume.config
    if saved.model.type != requested.model.type:
        raise DlfError(f"{resume.path} holds a {saved.model.type} run, "
                       f"not {requested.model.type}")
    if requested.model != saved.model or requested.data != saved.data:
        raise DlfError(f"cannot resume {resume.path}: its model or data config differs from "
                       "the requested one (see its config.toml)")


# Model settings that change no weight: a run may start from another's weights with its own
NOT_IN_THE_WEIGHTS = ("dropout", "attention", "fused")


def check_same_architecture(requested: C.RunConfig, source: SavedRun) -> None:
    """--init-from: the source's weights fit the requested model only if both have one
    architecture: the same model type and every model setting but dropout, the attention
    kernel and fusing. The vocabulary is the source's tokenizer's on both sides."""
    saved = source.config.model
    chars = isinstance(source.tokenizer, CharTokenizer)
    if chars != (requested.data.tokenizer == "char"):
        raise DlfError(f"--init-from {source.path}: its tokenizer is "
                       f"{'characters' if chars else 'byte-level BPE'} and data.tokenizer is "
                       f"{requested.data.tokenizer} here; set data.tokenizer = "
                       f"{'char' if chars else 'pretrained'} to train on its tokens")
    if saved.type != requested.model.type:
        raise DlfError(f"--init-from {source.path} holds a {saved.type} model, not "
                       f"{requested.model.type}")
    for f in dataclasses.fields(saved):
        mine, theirs = getattr(requested.model, f.name), getattr(saved, f.name)
        if f.name not in NOT_IN_THE_WEIGHTS and mine != theirs:
            raise DlfError(f"--init-from {source.path}: model.{f.name} is {mine!r} here and "
                           f"{theirs!r} in its config.toml; its weights need the same "
                           f"architecture (--set model.{f.name}={theirs})")
