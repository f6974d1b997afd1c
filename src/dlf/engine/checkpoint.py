"""Checkpoints: the files a run resumes from and samples with.

state.safetensors, the last checkpoint, holds

    model.*       the weights
    optim.*       the optimizer's state (moments, momentum buffers)
    rng.torch     torch's generator (dropout)
    rng.data      the training batches' generator (dlf.engine.batches)
    rng.cuda      CUDA's generator, on a GPU
    step, best_val, initial_loss, train_seconds, wall_seconds    the TrainState

so that a resumed run continues as if it had never stopped. model.safetensors holds the
best weights on validation, what sample and eval read. Both name their model type and
format in their metadata: a checkpoint of another model is refused before any tensor of
it is loaded. Writes are atomic (dlf.fileio).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dlf.engine.state import TrainState
from dlf.engine.tensor_io import load_tensors, save_tensors, section
from dlf.errors import DlfError
from dlf.models import model_type

FORMAT = "dlf-1"
STATE_FILE, WEIGHTS_FILE = "state.safetensors", "model.safetensors"
# the TrainState fields a checkpoint stores (saved_step is the checkpoint's own step)
_SCALARS = ("step", "best_val", "initial_loss", "train_seconds", "wall_seconds")
_NEEDED = ("step", "best_val", "train_seconds", "wall_seconds", "rng.torch", "rng.data")


def _meta(model_type_: str) -> dict:
    return {"model_type": model_type_, "format": FORMAT}


def _checked(path: Path, model_type_: str) -> dict[str, torch.Tensor]:
    """The tensors of `path`, refused (DlfError) unless written for a `model_type_` model."""
    tensors, meta = load_tensors(path)
    saved = meta.get("model_type")
    if saved != model_type_:
        raise DlfError(f"{path} holds a {saved or 'unknown'} model, not {model_type_} "
                       "(the run's config.toml)")
    return tensors


# ------------------------------------------------------------------------ best weights


def save_weights(run: Path, weights: dict[str, torch.Tensor], model_type_: str) -> None:
    """model.safetensors: the weights sample and eval use (the best on validation), a
    `model_type_` model's state_dict."""
    save_tensors(run / WEIGHTS_FILE, weights, _meta(model_type_))


def read_weights(run: Path, model_type_: str, which: str = "model") -> dict[str, torch.Tensor]:
    """The weights of a run: the best (`which` = "model": model.safetensors) or the last
    checkpoint's ("state": state.safetensors), refused unless they are a `model_type_`."""
    if which == "state":
        return section(_checked(run / STATE_FILE, model_type_), "model")
    return _checked(run / WEIGHTS_FILE, model_type_)


class Best:
    """The best validation loss so far (TrainState.best_val) and its weights, written to
    model.safetensors in `run` (the writing rank's run directory; None elsewhere)."""

    def __init__(self, run: Path | None):
        self.run = run
        self.losses: dict | None = None  # the best evaluation of this session

    def update(self, state: TrainState, losses: dict, model) -> None:
        if losses["val_loss"] < state.best_val:
            state.best_val, self.losses = losses["val_loss"], losses
            if self.run is not None:
                save_weights(self.run, model.state_dict(), model_type(model))


def save_fitted(run: Path, model) -> None:
    """A fitted model's state.safetensors: its counts at step 0 (nothing to continue: a
    resumed fit counts again)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    save_tensors(run / STATE_FILE, tensors | {"step": torch.tensor(0)}, _meta(model_type(model)))


# ------------------------------------------------------------------------ state.safetensors


@dataclass
class Checkpoint:
    """A state.safetensors, read and checked: the TrainState it continues from, and its
    tensors (loaded into the model, optimizer and generators by `restore`)."""

    path: Path
    state: TrainState
    tensors: dict[str, torch.Tensor]

    def weights(self) -> dict[str, torch.Tensor]:
        return section(self.tensors, "model")


def read_checkpoint(run: Path, model_type_: str) -> Checkpoint:
    """state.safetensors of the run directory `run`. A missing, corrupt or incomplete
    file, or one of another model type, is a DlfError."""
    path = run / STATE_FILE
    tensors = _checked(path, model_type_)
    missing = [k for k in _NEEDED if k not in tensors]
    if missing:
        raise DlfError(f"{path} is incomplete (missing {missing[0]!r})")
    values = {k: tensors[k].item() for k in _SCALARS if k in tensors}
    state = TrainState(step=int(values["step"]), best_val=values["best_val"],
                       initial_loss=values.get("initial_loss"),
                       train_seconds=values["train_seconds"],
                       wall_seconds=values["wall_seconds"], saved_step=int(values["step"]))
    return Checkpoint(path, state, tensors)


def restore(checkpoint: Checkpoint, model, step_fn, batches, device: torch.device) -> None:
    """Load a checkpoint into the model, the optimizer, torch's generators and the batch
    generator (every rank of a data-parallel job)."""
    tensors = checkpoint.tensors
    model.load_state_dict(checkpoint.weights())
    step_fn.load_state_dict(section(tensors, "optim"))
    torch.set_rng_state(tensors["rng.torch"])
    batches.load_state(tensors["rng.data"])
    if "rng.cuda" in tensors and device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)


class Checkpointer:
    """Writes state.safetensors into `run`, the run directory on the writing rank (None on
    the others, which only keep count in TrainState.saved_step)."""

    def __init__(self, run: Path | None, model, step_fn, batches, device: torch.device):
        self.run, self.model, self.step_fn, self.batches = run, model, step_fn, batches
        self.device = device

    def save(self, state: TrainState) -> None:
        if self.run is not None:
            save_tensors(self.run / STATE_FILE, self._tensors(state),
                         _meta(model_type(self.model)))
        state.saved_step = state.step

    def _tensors(self, state: TrainState) -> dict[str, torch.Tensor]:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"optim.{k}": v for k, v in self.step_fn.state_dict().items()})
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.data"] = self.batches.state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        for name in _SCALARS:
            value = getattr(state, name)
            if value is not None:
                dtype = torch.int64 if name == "step" else torch.float64
                tensors[name] = torch.tensor(value, dtype=dtype)
        return tensors


def kept(run: Path, state: TrainState | None) -> str:
    """Where the last good checkpoint is, for a line that stops the run."""
    if state is None or state.saved_step is None:
        return "no checkpoint had been written"
    return f"the last good checkpoint (step {state.saved_step}) is {run}/{STATE_FILE}"
