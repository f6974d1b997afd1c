"""Data: dataset registry and loading, the tokenizers, splits and datasets.

The byte-level BPE tokenizer is the submodule ``dlf.data.bpe``; it needs the ``regex``
package, so it is not imported here (``load_tokenizer`` imports it for a BPE file).
"""

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
from dlf.data.tokenizer import CharTokenizer, load_tokenizer

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
    "load_tokenizer",
    "packaged_file",
    "read_text",
    "resolve",
    "sha256_file",
    "split_lines",
    "split_text",
]
