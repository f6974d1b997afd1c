"""Run directories: which files a run holds, claiming a directory, and finding the run to
continue. This module knows files only: what goes into them is the trainer's parts'
(checkpoints: dlf.engine.checkpoint), and loading a run for use is dlf.engine.saved.

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

What it may remove: only files dlf writes (RUN_FILES, the figures of `dlf diagnose` and
`dlf attention`, the TensorBoard folder, an atomic write's leftover temporary file). A
directory that holds other files and no run is refused, so a run never mixes its files
with a user's.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import sys
from pathlib import Path

from dlf import config as C
from dlf import presets
from dlf.data.tokenizer import load_tokenizer
from dlf.engine.saved import SavedRun
from dlf.errors import DlfError
from dlf.fileio import atomic_write_text

RUN_FILES = ("config.toml", "tokenizer.json", "model.safetensors", "state.safetensors",
             "metrics.jsonl", "result.json", "loss.png", "samples.txt", "counts.png",
             "probs.png")
# What `dlf diagnose` and `dlf attention` add to a run directory, and the TensorBoard sink's
# folder (train.tensorboard)
ACTIVATIONS_PNG, ACTIVATION_GRADS_PNG = "activations.png", "activation_grads.png"
WEIGHT_GRADS_PNG, UPDATE_RATIO_PNG = "weight_grads.png", "update_ratio.png"
DIAGNOSTICS_JSON, ATTENTION_PNG = "diagnostics.json", "attention.png"
TENSORBOARD_DIR = "tensorboard"
ADDED_FILES = (ACTIVATIONS_PNG, ACTIVATION_GRADS_PNG, WEIGHT_GRADS_PNG, UPDATE_RATIO_PNG,
               DIAGNOSTICS_JSON, ATTENTION_PNG, TENSORBOARD_DIR)
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
        existing run unless `resume` continues it or `force` replaces it, and refuse a
        directory of files dlf did not write. The lock comes first, so two runs started at
        once on one directory give one run and one refusal. `lock=False`: only check (the
        other ranks of a data-parallel job, which never write, and the launcher). `why`
        names what replaces a run in the line that lists its files. Replacing removes
        dlf's files only."""
        if self.path.exists() and not self.path.is_dir():
            raise DlfError(f"--out {self.path} exists and is not a directory")
        if lock:
            self.lock()
        try:
            existing = [] if resume else self.refuse_others(force)
        except DlfError:
            self.release()
            raise
        if lock and existing:
            print(f"dlf: {why}: replacing the run in {self.path}: {', '.join(existing)}",
                  file=sys.stderr)
            for name in existing + self.leftovers():
                path = self.path / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)

    def refuse_others(self, force: bool, options: str = "use --resume to continue it, --force "
                      "to replace it, or another --out") -> list[str]:
        """The run files a new run would replace; refused (DlfError) without `force`, and
        for a directory whose only files are not dlf's. `options`: what the refusal
        offers instead."""
        existing = self.existing()
        if existing and not force:
            raise DlfError(f"{self.path} already holds a run ({existing[0]}); {options}")
        others = self.others()
        if others and not any(name in RUN_FILES for name in existing):
            raise DlfError(f"--out {self.path} holds files that are not a dlf run "
                           f"({others[0]}{', ...' if len(others) > 1 else ''}); "
                           "use an empty or new directory")
        return existing

    def existing(self) -> list[str]:
        """The files of a run the directory holds, and what dlf diagnose, dlf attention and
        the TensorBoard sink added to it."""
        return [f for f in RUN_FILES + ADDED_FILES if (self.path / f).exists()]

    def leftovers(self) -> list[str]:
        """Temporary files of atomic writes that a killed process left (.NAME.*.tmp)."""
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir()
                      if p.name.startswith(".") and p.name.endswith(".tmp"))

    def others(self) -> list[str]:
        """The directory's entries that dlf did not write."""
        if not self.path.is_dir():
            return []
        ours = {*RUN_FILES, *ADDED_FILES, LOCK_FILE, *self.leftovers()}
        return sorted(p.name for p in self.path.iterdir() if p.name not in ours)

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

    def resumable(self, auto: bool = False) -> SavedRun | None:
        """The run to continue: its config and tokenizer (refused without a checkpoint).
        `auto` (--resume auto): None, to start afresh, when the directory holds no run; a
        run stopped before its first checkpoint (config.toml, no result) starts over once
        the plan has checked that it is a run of the same config."""
        if not (self.path / "state.safetensors").exists():
            existing = self.existing()
            if auto and not existing:
                return None
            if auto and "config.toml" in existing and "result.json" not in existing:
                return SavedRun(self.path, presets.load_toml(self.path / "config.toml"), None,
                                checkpoint=False)
            if auto:
                raise DlfError(f"--resume auto: {self.path} holds a run ({existing[0]}) but no "
                               "checkpoint (state.safetensors) to continue; use --force to "
                               "replace it, or another --out")
            raise DlfError(f"cannot resume: {self.path}/state.safetensors not found")
        return SavedRun(self.path, presets.load_toml(self.path / "config.toml"),
                        load_tokenizer(self.path / "tokenizer.json"))

    def source(self) -> SavedRun:
        """The run this directory holds, for another run to start from (--init-from): its
        config and tokenizer (its best weights are model.safetensors)."""
        for name in ("config.toml", "tokenizer.json", "model.safetensors"):
            if not (self.path / name).exists():
                raise DlfError(f"--init-from {self.path}: not a run directory with weights "
                               f"(no {name})")
        return SavedRun(self.path, presets.load_toml(self.path / "config.toml"),
                        load_tokenizer(self.path / "tokenizer.json"))
