"""The data a run trains on: read, split, tokenize (tokenizer reused on resume)."""

from __future__ import annotations

from dataclasses import dataclass

from dlf import config as C
from dlf.data.datasets import TextDataset, WordDataset, split_lines, split_text
from dlf.data.sources import load_corpus
from dlf.data.tokenizer import CharTokenizer
from dlf.errors import DlfError
from dlf.models.protocol import capabilities


@dataclass
class RunData:
    """Tokenizer and split datasets. `test` is None for text data (90/10 split)."""

    format: str  # "lines" | "text"
    tokenizer: CharTokenizer
    train: WordDataset | TextDataset
    val: WordDataset | TextDataset
    test: WordDataset | TextDataset | None
    train_items: list[str] | str  # the raw train split (names, or text)


def prepare_data(cfg: C.RunConfig, tokenizer: CharTokenizer | None = None) -> RunData:
    """Read, split, tokenize. A given tokenizer (from a run directory) is reused."""
    items, fmt = load_corpus(cfg.data.dataset, format=cfg.data.format or None)
    block_size = cfg.model.block_size
    if fmt == "lines":
        train, val, test = split_lines(items)
        tok = tokenizer or CharTokenizer.from_lines(train + val + test)
        ds = [WordDataset(s, tok, block_size) for s in (train, val, test)]
        return RunData(fmt, tok, ds[0], ds[1], ds[2], train)
    train, val = split_text(items)
    tok = tokenizer or CharTokenizer.from_text(items)
    for name, part in (("train", train), ("val", val)):
        if len(part) <= block_size:
            raise DlfError(f"block size {block_size} is longer than the {name} split "
                           f"({len(part)} characters) of {cfg.data.dataset}")
    return RunData(fmt, tok, TextDataset(train, tok, block_size), TextDataset(val, tok, block_size),
                   None, train)


def check_model_fits_data(model, fmt: str) -> None:
    if fmt == "text" and not capabilities(model).sequence_targets:
        raise DlfError(f"model type {model.config.type!r} predicts one next character from a "
                       "fixed window and trains on line data (format = lines); for a text "
                       "stream use the transformer")
