"""Character-level tokenizer, and reading any saved tokenizer (``load_tokenizer``).

For a ``lines`` dataset index 0 is the boundary token (start and end of a word,
as in makemore) and the data characters follow, sorted, at 1..V-1. For a
``text`` dataset there is no boundary token: the sorted characters are 0..V-1.

Both tokenizers (this one and ``dlf.data.bpe.BPETokenizer``) offer ``encode``,
``decode``, ``vocab_size``, ``boundary`` (None for text), ``token_chars()`` and
``incremental_decoder()``. The BPE module needs the ``regex`` package, so it is imported
only where a BPE tokenizer is made or read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from dlf.data.sources import FORMATS
from dlf.errors import DlfError
from dlf.fileio import atomic_write_text

# Display symbols for the boundary token, first one not in the data wins. "." is the
# lectures' choice; the rest are rare in text, printable and not whitespace.
BOUNDARY_MARKERS = (".", "|", "#", "~", "^", "¶", "␃", "§", "¤", "•", "◊", "∅", "⟂")
# What makes a run's tokens (data.tokenizer): the data's characters, byte-level BPE learned
# from the train split, or a tokenizer that came with imported weights
TokenizerKind = Literal["char", "bpe", "pretrained"]
_MAX_SHOWN = 60


def _show_chars(chars: Iterable[str]) -> str:
    """The known characters as one repr, truncated when long."""
    joined = "".join(chars)
    if len(joined) <= _MAX_SHOWN:
        return repr(joined)
    return f"{joined[:_MAX_SHOWN]!r}... ({len(joined) - _MAX_SHOWN} more)"


def load_json(path: str | os.PathLike, from_json):
    """``from_json`` of the JSON object in the file ``path``; a missing, unreadable or
    malformed file is a ``DlfError`` that names it."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DlfError(f"tokenizer file {path} does not exist") from None
    except OSError as e:
        raise DlfError(f"could not read tokenizer file {path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DlfError(f"tokenizer file {path} is not valid JSON: {e}") from None
    try:
        return from_json(obj)
    except DlfError as e:
        raise DlfError(f"tokenizer file {path}: {e}") from None


def load_tokenizer(path: str | os.PathLike):
    """The tokenizer saved in ``path``, of the class its JSON names: a BPE file has
    ``"format": "dlf-bpe"``, a character tokenizer's has ``"kind"``."""
    return load_json(path, tokenizer_from_json)


def tokenizer_from_json(obj: object):
    if isinstance(obj, dict) and "format" in obj:
        from dlf.data import bpe  # needs regex: only a BPE run imports it

        return bpe.BPETokenizer.from_json(obj)
    return CharTokenizer.from_json(obj)


class CharTokenizer:
    """Maps characters to integer ids and back.

    ``chars`` are the data characters; ``itos``/``stoi`` cover every id, including
    the boundary (id 0, shown as ``boundary_symbol``) for a ``lines`` tokenizer.
    The boundary symbol is never a data character, so encoding is unambiguous.
    """

    def __init__(self, chars: Iterable[str], kind: str, boundary_symbol: str | None = None):
        chars = list(chars)
        if kind not in FORMATS:
            raise DlfError(f"unknown tokenizer kind {kind!r}; use 'lines' or 'text'")
        if not chars:
            raise DlfError("cannot build a tokenizer from data with no characters")
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise DlfError(f"tokenizer entry {c!r} is not a single character")
        if len(set(chars)) != len(chars):
            raise DlfError("tokenizer characters contain duplicates")
        if kind == "lines":
            if not isinstance(boundary_symbol, str) or len(boundary_symbol) != 1:
                raise DlfError(
                    f"boundary symbol {boundary_symbol!r} of a lines tokenizer "
                    "must be one character"
                )
            if boundary_symbol in chars:
                raise DlfError(f"boundary symbol {boundary_symbol!r} is also a data character")
        elif boundary_symbol is not None:
            raise DlfError("a text tokenizer has no boundary symbol")
        self.kind = kind
        self.chars = chars
        self.boundary_symbol = boundary_symbol
        self.boundary = 0 if kind == "lines" else None
        self.itos = ([boundary_symbol] if kind == "lines" else []) + chars
        self.stoi = {s: i for i, s in enumerate(self.itos)}

    @classmethod
    def from_lines(cls, words: Iterable[str]) -> CharTokenizer:
        """Boundary at 0, then the sorted unique characters of ``words``."""
        chars = sorted(set("".join(words)))
        free = [m for m in BOUNDARY_MARKERS if m not in chars]
        if not free:
            raise DlfError(
                "every boundary marker "
                f"{''.join(BOUNDARY_MARKERS)!r} occurs in the data; none is free"
            )
        return cls(chars, "lines", free[0])

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The sorted unique characters of ``text``; no boundary token."""
        return cls(sorted(set(text)), "text")

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, s: str) -> list[int]:
        """Ids of the characters of ``s``; the boundary symbol encodes to the boundary."""
        stoi = self.stoi
        try:
            return [stoi[c] for c in s]
        except KeyError as e:
            c = e.args[0]
            raise DlfError(
                f"character {c!r} (U+{ord(c):04X}) at position {s.index(c)} is not in "
                f"the vocabulary; known characters: {_show_chars(self.itos)}"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        """Characters for ``ids`` (a list or 1-D tensor); the boundary shows as its symbol."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        itos = self.itos
        out = []
        for i in ids:
            if not 0 <= i < len(itos):
                raise DlfError(f"token id {i} is out of range for vocab size {len(itos)}")
            out.append(itos[i])
        return "".join(out)

    def token_chars(self) -> list[int]:
        """Characters each id stands for: one (the boundary stands for a line's end)."""
        return [1] * self.vocab_size

    def incremental_decoder(self) -> PlainDecoder:
        return PlainDecoder(self)

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "chars": list(self.chars),
            "boundary_symbol": self.boundary_symbol,
        }

    @classmethod
    def from_json(cls, obj: object) -> CharTokenizer:
        """Inverse of ``to_json``; ``DlfError`` when a field is missing or malformed."""
        if not isinstance(obj, dict):
            raise DlfError("tokenizer JSON must be an object")
        missing = [k for k in ("kind", "chars", "boundary_symbol") if k not in obj]
        if missing:
            raise DlfError(f"tokenizer JSON is missing {', '.join(missing)}")
        if not isinstance(obj["chars"], list):
            raise DlfError("tokenizer JSON field 'chars' must be a list of characters")
        return cls(obj["chars"], obj["kind"], obj["boundary_symbol"])

    def save(self, path: str | os.PathLike) -> None:
        """Write JSON atomically (temp file in the same directory, fsync, rename)."""
        atomic_write_text(path, json.dumps(self.to_json(), ensure_ascii=False, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> CharTokenizer:
        return load_json(path, cls.from_json)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CharTokenizer):
            return NotImplemented
        return self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash((self.kind, tuple(self.chars), self.boundary_symbol))

    def __repr__(self) -> str:
        return f"CharTokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"


class PlainDecoder:
    """Text from a stream of ids of a tokenizer whose every token is whole characters;
    the same interface as ``dlf.data.bpe.IncrementalDecoder``."""

    def __init__(self, tokenizer: CharTokenizer):
        self.tokenizer = tokenizer

    def decode(self, ids: Iterable[int], final: bool = False) -> str:
        return self.tokenizer.decode(ids)
