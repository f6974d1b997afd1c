"""Run directories: the files of a run, claiming a directory, and opening a run again.
This module knows files only; what goes into them is decided by the trainer's parts.

A run directory holds config.toml (the resolved config), tokenizer.json,
model.safetensors (best validation weights), state.safetensors (last step: weights,
optimizer moments, RNG states, step), metrics.jsonl, result.json, loss.png and
samples.txt; bigram runs add counts.png or probs.png.

What is atomic: every file except metrics.jsonl is written whole through
dlf.fileio (temporary file in the same directory, fsync, rename), so a killed
process leaves the old file or the new one. metrics.jsonl is appended one line per
record; a kill can tear its last line, which MetricsLog.read drops and a resume
rewrites (MetricsLog.truncate_after), so a resumed run logs each step once.

Who may write: one process at a time. A run holds DIR/.lock (flock) from its claim to
its end (RunDir.claim, RunDir.release); a second run on the same directory is refused.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from dlf import config as C
from dlf import presets
from dlf.data.tokenizer import load_tokenizer
from dlf.engine.checkpoint import load_tensors, save_tensors, section
from dlf.engine.device import pick_device
from dlf.engine.plan import Resumed
from dlf.errors import DlfError
from dlf.fileio import atomic_write_text
from dlf.models import build_model

RUN_FILES = ("config.toml", "tokenizer.json", "model.safetensors", "state.safetensors",
             "metrics.jsonl", "result.json", "loss.png", "samples.txt", "counts.png",
             "probs.png")
CHECKPOINT_FORMAT = "dlf-1"
# Held (flock) by the process that trains into the directory, removed when it is done.
LOCK_FILE = ".lock"


class RunDir:
    """The files of one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = None  # the open DIR/.lock while this process holds the directory

    def claim(self, force: bool, *, resume: bool = False, lock: bool = True,
              why: str = "--force") -> None:
        """Make the directory ours for this process's lifetime (see `lock`), then refuse an
        existing run unless `resume` continues it or `force` replaces it. The lock comes
        first, so two runs started at once on one directory give one run and one refusal.
        `lock=False`: only check (the other ranks of a data-parallel job, which never
        write). `why` names what replaces a run in the line that lists its files."""
        if self.path.exists() and not self.path.is_dir():
            raise DlfError(f"--out {self.path} exists and is not a directory")
        if lock:
            self.lock()
        if resume:
            return
        existing = self.existing()
        if existing and not force:
            self.release()
            raise DlfError(f"{self.path} already holds a run ({existing[0]}); "
                           "use --resume to continue it, --force to replace it, or another --out")
        if not lock:
            return
        if existing:
            print(f"dlf: {why}: replacing the run in {self.path}: {', '.join(existing)}",
                  file=sys.stderr)
        for f in existing:
            (self.path / f).unlink(missing_ok=True)

    def existing(self) -> list[str]:
        """The run files the directory holds."""
        return [f for f in RUN_FILES if (self.path / f).exists()]

    def lock(self) -> None:
        """Take DIR/.lock with flock (exclusive, non-blocking) and keep it until `release`
        or the process ends. The kernel drops a dead process's flock, so a stale lock file
        never blocks; its text (pid and host) only serves the refusal message."""
        if self._lock is not None:
            return
        f = None
        try:  # the lock file is also the proof that the directory can be written
            self.path.mkdir(parents=True, exist_ok=True)
            f = self._flock(self.path / LOCK_FILE)
            f.truncate(0)
            f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            f.flush()
        except OSError as e:
            if f is not None:
                f.close()
            raise DlfError(f"--out {self.path} cannot be written: {e.strerror}") from None
        self._lock = f

    def _flock(self, lock_path: Path):
        """lock_path opened and flocked, or the refusal naming its holder."""
        while True:
            f = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the run)
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                f.close()
                raise DlfError(f"{self.path} is in use by another dlf run ({holder}); wait for "
                               "it to finish or use another --out") from None
            # A releasing holder unlinks the file: if ours was unlinked between open and
            # flock, we hold a lock nobody else sees, so take the new file instead.
            try:
                same = os.stat(lock_path).st_ino == os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return f
            f.close()

    def release(self) -> None:
        """Give the directory back (the lock file goes; a finished run leaves no trace)."""
        if self._lock is None:
            return
        (self.path / LOCK_FILE).unlink(missing_ok=True)  # before unlocking: see `lock`
        self._lock.close()  # closing drops the flock
        self._lock = None

    def begin(self, cfg: C.RunConfig, tokenizer) -> None:
        """config.toml and tokenizer.json: what sample, eval and resume read back."""
        atomic_write_text(self.path / "config.toml", C.to_toml(cfg))
        tokenizer.save(self.path / "tokenizer.json")

    def resumable(self, auto: bool = False) -> Resumed | None:
        """The run to continue: its config and tokenizer (refused without a checkpoint).
        `auto` (--resume auto): None, to start afresh, when the directory holds no run; a
        run stopped before its first checkpoint (config.toml, no result) starts over once
        the plan has checked that it is a run of the same config."""
        if not (self.path / "state.safetensors").exists():
            existing = self.existing()
            if auto and not existing:
                return None
            if auto and "config.toml" in existing and "result.json" not in existing:
                return Resumed(self.path, presets.load_toml(self.path / "config.toml"), None,
                               checkpoint=False)
            if auto:
                raise DlfError(f"--resume auto: {self.path} holds a run ({existing[0]}) but no "
                               "checkpoint (state.safetensors) to continue; use --force to "
                               "replace it, or another --out")
            raise DlfError(f"cannot resume: {self.path}/state.safetensors not found")
        return Resumed(self.path, presets.load_toml(self.path / "config.toml"),
                       load_tokenizer(self.path / "tokenizer.json"))

    # ------------------------------------------------------------------- checkpoints

    def save_weights(self, model, model_type: str) -> None:
        """model.safetensors: the weights sample and eval use (the best on validation);
        `model` is a model or its state_dict."""
        tensors = model if isinstance(model, dict) else model.state_dict()
        save_tensors(self.path / "model.safetensors", tensors, _meta(model_type))

    def load_weights(self, model) -> None:
        tensors, _ = load_tensors(self.path / "model.safetensors")
        model.load_state_dict(tensors)

    def save_state(self, tensors: dict[str, torch.Tensor], model_type: str) -> None:
        save_tensors(self.path / "state.safetensors", tensors, _meta(model_type))

    def load_state(self, model_type: str) -> dict[str, torch.Tensor]:
        tensors, meta = load_tensors(self.path / "state.safetensors")
        if meta.get("model_type") != model_type:
            raise DlfError(f"{self.path}/state.safetensors holds a {meta.get('model_type')} "
                           f"model, not {model_type}")
        return tensors


def _meta(model_type: str) -> dict:
    return {"model_type": model_type, "format": CHECKPOINT_FORMAT}


# ----------------------------------------------------------------------- opening runs


@dataclass
class Run:
    """A finished (or checkpointed) run, opened for sampling or evaluation."""

    path: Path
    config: C.RunConfig
    tokenizer: object  # CharTokenizer or BPETokenizer (dlf.data.load_tokenizer)
    model: object
    device: torch.device


def open_run(run_dir: str | Path, device: str = "auto", weights: str = "model") -> Run:
    """Load a run directory's config, tokenizer and weights (`model` = best, `state` = last)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise DlfError(f"run directory not found: {path}")
    if not (path / "config.toml").exists():
        raise DlfError(f"{path} is not a run directory (no config.toml)")
    cfg = presets.load_toml(path / "config.toml")
    tok = load_tokenizer(path / "tokenizer.json")
    dev = pick_device(device)
    tensors, meta = load_tensors(path / f"{weights}.safetensors")
    if weights == "state":
        tensors = section(tensors, "model")
    saved_type = meta.get("model_type")
    if saved_type != cfg.model.type:
        raise DlfError(f"{path}/{weights}.safetensors holds a {saved_type or 'unknown'} model "
                       f"but config.toml describes a {cfg.model.type} model")
    model = build_model(cfg.model)
    model.load_state_dict(tensors)
    model.to(dev)
    model.eval()
    return Run(path, cfg, tok, model, dev)
