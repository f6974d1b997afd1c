"""Run directories and the data a run trains on.

A run directory holds: config.toml, tokenizer.json, model.safetensors (best
validation weights), state.safetensors (last step: weights, optimizer moments,
RNG states, step), metrics.jsonl, result.json, loss.png, samples.txt.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from dlf import config as C
from dlf.data.datasets import (
    IGNORE_INDEX,
    SequenceDataset,
    TextDataset,
    WordDataset,
    split_lines,
    split_text,
)
from dlf.data.sources import load_corpus
from dlf.data.tokenizer import CharTokenizer
from dlf.engine.checkpoint import load_tensors, section
from dlf.errors import DlfError
from dlf.models import build_model
from dlf.models.protocol import capabilities

RUN_FILES = ("config.toml", "tokenizer.json", "model.safetensors", "state.safetensors",
             "metrics.jsonl", "result.json", "loss.png", "samples.txt")


@dataclass
class RunData:
    """Tokenizer and split datasets. `test` is None for text data (90/10 split)."""

    format: str  # "lines" | "text"
    tokenizer: CharTokenizer
    train: WordDataset | SequenceDataset | TextDataset
    val: WordDataset | SequenceDataset | TextDataset
    test: WordDataset | SequenceDataset | TextDataset | None
    train_items: list[str] | str  # the raw train split (names, or text)
    layout: str = "windows"  # lines data: "windows" | "sequences" (data.layout)


def prepare_data(cfg: C.RunConfig, tokenizer: CharTokenizer | None = None) -> RunData:
    """Read, split, tokenize. A given tokenizer (from a run directory) is reused."""
    items, fmt = load_corpus(cfg.data.dataset, format=cfg.data.format or None)
    block_size = cfg.model.block_size
    if fmt == "lines":
        train, val, test = split_lines(items)
        tok = tokenizer or CharTokenizer.from_lines(train + val + test)
        if cfg.data.layout == "sequences":
            length = max(len(w) for w in items) + 1  # one width for every split
            ds = [SequenceDataset(s, tok, length) for s in (train, val, test)]
        else:
            ds = [WordDataset(s, tok, block_size) for s in (train, val, test)]
        return RunData(fmt, tok, ds[0], ds[1], ds[2], train, cfg.data.layout)
    if cfg.data.layout == "sequences":
        raise DlfError("data.layout = sequences is for line data (format = lines); a text "
                       "stream is already trained at every position")
    train, val = split_text(items)
    tok = tokenizer or CharTokenizer.from_text(items)
    for name, part in (("train", train), ("val", val)):
        if len(part) <= block_size:
            raise DlfError(f"block size {block_size} is longer than the {name} split "
                           f"({len(part)} characters) of {cfg.data.dataset}")
    return RunData(fmt, tok, TextDataset(train, tok, block_size), TextDataset(val, tok, block_size),
                   None, train)


def check_model_fits_data(model, data: RunData) -> None:
    sequence = capabilities(model).sequence_targets
    if data.format == "text" and not sequence:
        raise DlfError(f"model type {model.config.type!r} predicts one next character from a "
                       "fixed window and trains on line data (format = lines); for a text "
                       "stream use the transformer")
    if data.layout == "sequences":
        if not sequence:
            raise DlfError(f"model type {model.config.type!r} predicts one next character from "
                           "a fixed window; data.layout = sequences needs a sequence model "
                           "(transformer, rnn, gru, bow)")
        if data.train.block_size > model.block_size:
            raise DlfError(f"the longest line needs {data.train.block_size} positions but "
                           f"model.block_size is {model.block_size}; raise model.block_size")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DlfError(f"device {name!r} requested but CUDA is not available here")
    return torch.device(name)


def autocast(device: torch.device, dtype: str):
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(model, ds, *, device, dtype="fp32", batch_size=32, iters=20, seed=0) -> float:
    """Mean cross-entropy in nats per predicted character. Line data (windows or
    sequences): exact over the whole split, every target weighted equally (a chunk's
    mean loss times its number of non-padding targets). Text data: mean over `iters`
    random batches drawn with a fixed seed, so the same batches are used at every
    evaluation."""
    was_training = model.training
    model.eval()
    try:
        if isinstance(ds, (WordDataset, SequenceDataset)):
            total, n = 0.0, 0
            chunk = 8192 if isinstance(ds, WordDataset) else 512  # rows
            for i in range(0, len(ds), chunk):
                x = ds.X[i : i + chunk].to(device)
                y = ds.Y[i : i + chunk].to(device)
                with autocast(device, dtype):
                    _, loss = model(x, y)
                count = int((y != IGNORE_INDEX).sum())
                total += loss.item() * count
                n += count
            return total / n
        g = torch.Generator().manual_seed(seed)
        losses = []
        for _ in range(iters):
            x, y = ds.batch(batch_size, g)
            with autocast(device, dtype):
                _, loss = model(x.to(device), y.to(device))
            losses.append(loss.item())
        return sum(losses) / len(losses)
    finally:
        model.train(was_training)


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
