"""Checkpoints: what state.safetensors holds, written during a run and read to resume it,
and model.safetensors, the best weights on validation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dlf.engine import distributed
from dlf.engine.checkpoint import section
from dlf.errors import DlfError


@dataclass
class Counters:
    """The figures a checkpoint carries besides tensors with state of their own."""

    step: int = 0
    best_val: float = math.inf
    wall_seconds: float = 0.0
    train_seconds: float = 0.0
    initial_loss: float | None = None


def restore(files, model_type: str, model, step_fn, batches, group: distributed.Group,
            seed: int, device: torch.device) -> Counters:
    """Load state.safetensors into the model, the optimizer, the RNGs and the batch
    generator (every rank); returns the counters to continue from."""
    tensors = files.load_state(model_type)
    try:
        model.load_state_dict(section(tensors, "model"))
        step_fn.load_state_dict(section(tensors, "optim"))
        torch.set_rng_state(tensors["rng.torch"])
        batches.load_state(tensors["rng.data"])
        if "rng.cuda" in tensors and device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], device)
        counters = Counters(int(tensors["step"]), float(tensors["best_val"]),
                            float(tensors["wall_seconds"]), float(tensors["train_seconds"]),
                            float(tensors["initial_loss"]) if "initial_loss" in tensors
                            else None)
    except KeyError as e:
        raise DlfError(f"{files.path}/state.safetensors is incomplete (missing {e})") from None
    # rank 0 continues the saved stream; other ranks' dropout streams restart
    distributed.seed_rank_rng(group, seed, counters.step)
    return counters


class Checkpointer:
    """Writes state.safetensors: the weights, the optimizer's moments, the RNG states
    (torch, CUDA, the batch generator), the step, the best validation loss, the seconds
    spent and the first step's loss, so that a resumed run continues as if it had never
    stopped. `files` is the run directory (RunDir) on the writing rank and None on the
    others, which only keep count; `path` is the directory's path on every rank."""

    def __init__(self, files, path, model_type: str, model, step_fn, batches, clock,
                 divergence, best, device: torch.device, saved_step: int | None = None):
        self.files, self.path, self.model_type, self.device = files, path, model_type, device
        self.model, self.step_fn, self.batches = model, step_fn, batches
        self.clock, self.divergence, self.best = clock, divergence, best
        self.saved_step = saved_step  # the step of the last checkpoint written or loaded

    def save(self, step: int) -> None:
        if self.files is not None:
            self.files.save_state(self._tensors(step), self.model_type)
        self.saved_step = step

    def _tensors(self, step: int) -> dict[str, torch.Tensor]:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"optim.{k}": v for k, v in self.step_fn.state_dict().items()})
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.data"] = self.batches.state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        f64 = torch.float64
        tensors["step"] = torch.tensor(step, dtype=torch.int64)
        tensors["best_val"] = torch.tensor(self.best.val, dtype=f64)
        tensors["wall_seconds"] = torch.tensor(self.clock.wall(), dtype=f64)
        tensors["train_seconds"] = torch.tensor(self.clock.train_seconds, dtype=f64)
        if self.divergence.initial_loss is not None:
            tensors["initial_loss"] = torch.tensor(self.divergence.initial_loss, dtype=f64)
        return tensors

    def kept(self) -> str:
        """Where the last good checkpoint is, for a message that stops the run."""
        if self.saved_step is None:
            return "no checkpoint had been written"
        return f"the last good checkpoint (step {self.saved_step}) is {self.path}/state.safetensors"


class Best:
    """The best validation loss so far; its weights go to model.safetensors (what sample and
    eval read), on the writing rank (`files`; None elsewhere)."""

    def __init__(self, files, model_type: str, val: float = math.inf):
        self.files, self.model_type, self.val = files, model_type, val
        self.losses: dict | None = None  # the best evaluation of this session

    def update(self, losses: dict, model) -> None:
        if losses["val_loss"] < self.val:
            self.val, self.losses = losses["val_loss"], losses
            if self.files is not None:
                self.files.save_weights(model, self.model_type)
