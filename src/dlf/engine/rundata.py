"""The data a run trains on: read, split, tokenize (tokenizer reused on resume)."""

from __future__ import annotations

from dataclasses import dataclass

from dlf import config as C
from dlf.data.datasets import (
    SequenceDataset,
    TextDataset,
    WordDataset,
    split_lines,
    split_text,
)
from dlf.data.sources import load_corpus
from dlf.data.tokenizer import CharTokenizer
from dlf.errors import DlfError


@dataclass
class RunData:
    """Tokenizer and split datasets. `test` is None for text data (90/10 split)."""

    format: str  # "lines" | "text"
    tokenizer: object  # CharTokenizer, or dlf.data.bpe.BPETokenizer (data.tokenizer = bpe)
    train: WordDataset | SequenceDataset | TextDataset
    val: WordDataset | SequenceDataset | TextDataset
    test: WordDataset | SequenceDataset | TextDataset | None
    train_items: list[str] | str  # the raw train split (names, or text)
    layout: str = "windows"  # lines data: "windows" | "sequences" (data.layout)


def prepare_data(cfg: C.RunConfig, tokenizer=None) -> RunData:
    """Read, split, tokenize. A given tokenizer (from a run directory) is reused."""
    items, fmt = load_corpus(cfg.data.dataset, format=cfg.data.format or None)
    block_size = cfg.model.block_size
    if fmt == "lines":
        if cfg.data.context:
            raise DlfError("data.context is the window of text data; line data is cut into "
                           "windows of model.block_size (or whole lines)")
        if cfg.data.tokenizer != "char":
            raise DlfError(f"data.tokenizer = {cfg.data.tokenizer} is for text data (format = "
                           "text); line data is tokenized by character, with a boundary token "
                           "that ends each line")
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
    tok = tokenizer or text_tokenizer(cfg.data, items, train)
    window = cfg.data.context or block_size
    for name, part in (("train", train), ("val", val)):
        if len(part) <= window:
            raise DlfError(f"block size {window} is longer than the {name} split "
                           f"({len(part)} characters) of {cfg.data.dataset}")
    return RunData(fmt, tok, TextDataset(train, tok, window), TextDataset(val, tok, window),
                   None, train)


def text_tokenizer(d: C.DataConfig, text: str, train: str):
    """The tokenizer data config `d` asks for: the characters of the whole `text`, or BPE
    merges learned from the `train` split alone (the validation text stays unseen)."""
    if d.tokenizer == "bpe":
        from dlf.data import bpe  # needs regex: only a BPE run imports it

        return bpe.train(train, d.vocab_size, d.bpe_pattern)
    if d.tokenizer == "pretrained":
        raise DlfError("data.tokenizer = pretrained is the tokenizer.json of the run the "
                       "weights come from (an imported GPT-2): it is read, never learned")
    return CharTokenizer.from_text(text)
