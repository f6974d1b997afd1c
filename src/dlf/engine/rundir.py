"""Run directories: claiming one, the files a run writes, and opening a finished run.

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
from dlf.data.tokenizer import CharTokenizer
from dlf.engine.checkpoint import load_tensors, save_tensors, section, write_json
from dlf.engine.device import pick_device
from dlf.engine.metrics import MetricsLog
from dlf.errors import DlfError
from dlf.fileio import atomic_write_text
from dlf.models import build_model
from dlf.models.bigram import CountBigram, CountBigramConfig, kl_divergence_rows
from dlf.models.protocol import capabilities
from dlf.plots import plot_counts, plot_loss, plot_prob_tables
from dlf.sample import write_samples

RUN_FILES = ("config.toml", "tokenizer.json", "model.safetensors", "state.safetensors",
             "metrics.jsonl", "result.json", "loss.png", "samples.txt", "counts.png",
             "probs.png")
CHECKPOINT_FORMAT = "dlf-1"
# Held (flock) by the process that trains into the directory, removed when it is done.
LOCK_FILE = ".lock"


class RunDir:
    """The files of one run. With `writer=False` every write is skipped, so a process
    that must not write (e.g. a second data-parallel process) needs no checks of its own."""

    def __init__(self, path: str | Path, *, writer: bool = True):
        self.path = Path(path)
        self.writer = writer
        self.metrics = MetricsLog(self.path / "metrics.jsonl")
        self._lock = None  # the open DIR/.lock while this process holds the directory

    def claim(self, force: bool, *, resume: bool = False) -> None:
        """Make the directory ours for this process's lifetime (see `lock`), then refuse an
        existing run unless `resume` continues it or `force` replaces it. The lock comes
        first, so two runs started at once on one directory give one run and one refusal."""
        if self.path.exists() and not self.path.is_dir():
            raise DlfError(f"--out {self.path} exists and is not a directory")
        if self.writer:
            self.lock()
        if resume:
            return
        existing = [f for f in RUN_FILES if (self.path / f).exists()]
        if existing and not force:
            self.release()
            raise DlfError(f"{self.path} already holds a run ({existing[0]}); "
                           "use --resume to continue it, --force to replace it, or another --out")
        if not self.writer:
            return
        if existing:
            print(f"dlf: --force: replacing the run in {self.path}: {', '.join(existing)}",
                  file=sys.stderr)
        for f in existing:
            (self.path / f).unlink(missing_ok=True)

    def lock(self) -> None:
        """Take DIR/.lock with flock (exclusive, non-blocking) and keep it until `release`
        or the process ends. The kernel drops a dead process's flock, so a stale lock file
        never blocks; its text (pid and host) only serves the refusal message."""
        if self._lock is not None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        lock_path = self.path / LOCK_FILE
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
                break
            f.close()
        f.truncate(0)
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        self._lock = f

    def release(self) -> None:
        """Give the directory back (the lock file goes; a finished run leaves no trace)."""
        if self._lock is None:
            return
        (self.path / LOCK_FILE).unlink(missing_ok=True)  # before unlocking: see `lock`
        self._lock.close()  # closing drops the flock
        self._lock = None

    def begin(self, cfg: C.RunConfig, tokenizer: CharTokenizer) -> None:
        """config.toml and tokenizer.json: what sample, eval and resume read back."""
        if self.writer:
            atomic_write_text(self.path / "config.toml", C.to_toml(cfg))
            tokenizer.save(self.path / "tokenizer.json")

    def saved_config(self) -> C.RunConfig:
        return C.load_toml(self.path / "config.toml")

    def saved_tokenizer(self) -> CharTokenizer:
        return CharTokenizer.load(self.path / "tokenizer.json")

    # ------------------------------------------------------------------- checkpoints

    def save_weights(self, model, model_type: str) -> None:
        """model.safetensors: the weights sample and eval use (the best on validation)."""
        if self.writer:
            save_tensors(self.path / "model.safetensors", model.state_dict(), _meta(model_type))

    def load_weights(self, model) -> None:
        tensors, _ = load_tensors(self.path / "model.safetensors")
        model.load_state_dict(tensors)

    def save_state(self, tensors: dict[str, torch.Tensor], model_type: str) -> None:
        if self.writer:
            save_tensors(self.path / "state.safetensors", tensors, _meta(model_type))

    def load_state(self, model_type: str) -> dict[str, torch.Tensor]:
        tensors, meta = load_tensors(self.path / "state.safetensors")
        if meta.get("model_type") != model_type:
            raise DlfError(f"{self.path}/state.safetensors holds a {meta.get('model_type')} "
                           f"model, not {model_type}")
        return tensors

    # ------------------------------------------------------------------- logs and figures

    def log(self, record: dict) -> None:
        if self.writer:
            self.metrics.append(record)

    def plot_loss(self, title: str) -> None:
        records = self.metrics.read()
        if self.writer and records:
            plot_loss(records, self.path / "loss.png", title=title)

    def finish(self, model, data, cfg: C.RunConfig, result: dict, device) -> dict:
        """samples.txt, the bigram tables and result.json for a model in its final
        weights; returns `result` with what they add (novel fraction, KL)."""
        if not self.writer:
            return result
        result = dict(result)
        result.update(write_samples(model, data, self.path / "samples.txt", cfg.train,
                                    device=device))
        if capabilities(model).bigram_tables:
            result.update(write_bigram_tables(model, data, self.path))
        write_json(self.path / "result.json", result)
        return result


def _meta(model_type: str) -> dict:
    return {"model_type": model_type, "format": CHECKPOINT_FORMAT}


def write_bigram_tables(model, data, out: Path) -> dict:
    """counts.png for a fitted table; for a learned one, probs.png (the count model
    beside the network's table) and the KL divergence from counts to network."""
    if capabilities(model).regime == "fitted":
        plot_counts(model.counts, data.tokenizer, out / "counts.png")
        return {"smoothing": model.config.smoothing}
    k = model.config.compare_smoothing
    counts = CountBigram(CountBigramConfig(vocab_size=model.config.vocab_size, smoothing=k))
    counts.fit(data.train.X, data.train.Y)
    P = counts.probability_table().cpu()
    Q = model.probability_table().cpu()
    prev_freq = torch.bincount(data.train.X[:, -1], minlength=P.size(0)).float()
    plot_prob_tables(P, Q, data.tokenizer, out / "probs.png")
    return {"kl_count_to_neural": kl_divergence_rows(P, Q, prev_freq), "compare_smoothing": k}


# ----------------------------------------------------------------------- opening runs


@dataclass
class Run:
    """A finished (or checkpointed) run, opened for sampling or evaluation."""

    path: Path
    config: C.RunConfig
    tokenizer: CharTokenizer
    model: object
    device: torch.device


def open_run(run_dir: str | Path, device: str = "auto", weights: str = "model") -> Run:
    """Load a run directory's config, tokenizer and weights (`model` = best, `state` = last)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise DlfError(f"run directory not found: {path}")
    if not (path / "config.toml").exists():
        raise DlfError(f"{path} is not a run directory (no config.toml)")
    cfg = C.load_toml(path / "config.toml")
    tok = CharTokenizer.load(path / "tokenizer.json")
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
