"""Data: dataset registry and loading, the character tokenizer, splits and datasets."""

from dlf.data.datasets import TextDataset, WordDataset, split_lines, split_text
from dlf.data.sources import (
    DATASETS,
    FORMATS,
    Packaged,
    Source,
    cache_dir,
    download,
    load_corpus,
    load_lines,
    packaged_file,
    read_text,
    resolve,
    sha256_file,
)
from dlf.data.tokenizer import CharTokenizer

__all__ = [
    "DATASETS",
    "FORMATS",
    "CharTokenizer",
    "Packaged",
    "Source",
    "TextDataset",
    "WordDataset",
    "cache_dir",
    "download",
    "load_corpus",
    "load_lines",
    "packaged_file",
    "read_text",
    "resolve",
    "sha256_file",
    "split_lines",
    "split_text",
]
