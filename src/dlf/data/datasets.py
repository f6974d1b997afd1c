"""Train/val/test splits and the dataset shapes models train on.

``WordDataset``: every (context window, next character) pair of a lines dataset,
as the makemore lectures build them. ``SequenceDataset``: each line of a lines
dataset as one padded sequence, every position a target (makemore's format).
``TextDataset``: one token stream from which random blocks are drawn, as in nanoGPT.

Every dataset has ``targets_per_row``: the mean number of predicted characters in
one row of a batch (1 for windows, block_size for text, the mean name length + 1
for sequences), so the trainer can count tokens.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal, get_args

import torch

from dlf.data.tokenizer import CharTokenizer
from dlf.errors import DlfError

IGNORE_INDEX = -1  # target id of padding: left out of the loss (cross_entropy ignore_index)
Layout = Literal["windows", "sequences"]  # the two shapes of a lines dataset (data.layout)
LAYOUTS = get_args(Layout)


def count_targets(y: torch.Tensor) -> int:
    """The number of positions of `y` that carry a target (padding left out)."""
    return int((y != IGNORE_INDEX).sum())


def split_lines(words: Sequence[str], seed: int = 42) -> tuple[list[str], list[str], list[str]]:
    """Shuffle a copy with ``random.Random(seed)`` and cut 80/10/10 into (train, val, test).

    Same order as the lectures' ``random.seed(42); random.shuffle(words)``.
    """
    words = list(words)
    random.Random(seed).shuffle(words)
    n1 = int(0.8 * len(words))
    n2 = int(0.9 * len(words))
    return words[:n1], words[n1:n2], words[n2:]


def split_text(text: str) -> tuple[str, str]:
    """The first 90% of ``text`` as train, the rest as val."""
    n = int(0.9 * len(text))
    return text[:n], text[n:]


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DlfError(f"{name} must be a positive integer, got {value!r}")


class WordDataset:
    """Context windows of a lines dataset.

    ``X``: (N, block_size) int64 contexts, ``Y``: (N,) int64 next characters; one
    row per character of each word plus one for the closing boundary. Contexts
    start as all boundary (id 0), exactly as in the makemore lectures.
    """

    def __init__(self, words: Sequence[str], tokenizer: CharTokenizer, block_size: int):
        _check_positive("block size", block_size)
        if tokenizer.boundary is None:
            raise DlfError("a word dataset needs a lines tokenizer (one with a boundary token)")
        if len(words) == 0:
            raise DlfError("a word dataset needs at least one word")
        self.block_size = block_size
        ids = torch.tensor(tokenizer.encode("".join(words)), dtype=torch.long)
        lengths = torch.tensor([len(w) for w in words], dtype=torch.long)
        # Lay the words out as [boundary]*block_size + word + [boundary], back to back;
        # the boundary id is 0, so only the characters need writing.
        padded = lengths + block_size + 1
        starts = torch.cumsum(padded, 0) - padded  # (W,)
        flat = torch.zeros(int(padded.sum()), dtype=torch.long)
        word_of_char = torch.repeat_interleave(torch.arange(len(words)), lengths)  # (C,)
        char_offset = torch.arange(len(ids)) - (torch.cumsum(lengths, 0) - lengths)[word_of_char]
        flat[starts[word_of_char] + block_size + char_offset] = ids
        # Targets: each character and the closing boundary; context: the block before.
        n_targets = lengths + 1
        word_of_target = torch.repeat_interleave(torch.arange(len(words)), n_targets)  # (N,)
        target_offset = (
            torch.arange(int(n_targets.sum()))
            - (torch.cumsum(n_targets, 0) - n_targets)[word_of_target]
        )
        target_pos = starts[word_of_target] + block_size + target_offset  # (N,)
        windows = flat.unfold(0, block_size, 1)  # (len(flat) - block_size + 1, block_size)
        self.X = windows[target_pos - block_size].contiguous()  # (N, block_size)
        self.Y = flat[target_pos]  # (N,)
        self.targets_per_row = 1.0

    def __len__(self) -> int:
        return len(self.Y)

    def batch(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random rows, with replacement: (B, block_size) contexts and (B,) targets."""
        _check_positive("batch size", batch_size)
        ix = torch.randint(len(self), (batch_size,), generator=generator)
        return self.X[ix], self.Y[ix]


class SequenceDataset:
    """Each line as one sequence: boundary + line + boundary, padded to ``length + 1``.

    ``X``: (N, length) inputs, boundary then the characters, padded with boundary;
    ``Y``: (N, length) targets, the characters then the closing boundary, padded
    with ``IGNORE_INDEX``. Position t predicts character t + 1 from characters <= t,
    so one row trains every target of its line at once; the targets are exactly the
    ``WordDataset`` targets of the same lines. ``length`` defaults to the longest
    line + 1 (pass the corpus-wide value so every split has the same width).
    """

    def __init__(self, words: Sequence[str], tokenizer: CharTokenizer, length: int | None = None):
        if tokenizer.boundary is None:
            raise DlfError("a sequence dataset needs a lines tokenizer (one with a boundary token)")
        if len(words) == 0:
            raise DlfError("a sequence dataset needs at least one word")
        longest = max(len(w) for w in words)
        length = longest + 1 if length is None else length
        _check_positive("sequence length", length)
        if length < longest + 1:
            raise DlfError(f"sequence length {length} is shorter than the longest line + 1 "
                           f"({longest + 1})")
        self.block_size = length
        self.X = torch.full((len(words), length), tokenizer.boundary, dtype=torch.long)
        self.Y = torch.full((len(words), length), IGNORE_INDEX, dtype=torch.long)
        for i, w in enumerate(words):
            ids = torch.tensor(tokenizer.encode(w), dtype=torch.long)
            self.X[i, 1 : 1 + len(ids)] = ids
            self.Y[i, : len(ids)] = ids
            self.Y[i, len(ids)] = tokenizer.boundary
        self.lengths = (self.Y != IGNORE_INDEX).sum(1)  # (N,) targets per row: len + 1
        self.num_targets = int(self.lengths.sum())
        self.targets_per_row = self.num_targets / len(words)

    def __len__(self) -> int:
        return len(self.Y)

    def batch(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random rows, with replacement: (B, T) inputs and (B, T) targets, T the longest
        row of the batch + 1. The columns cut off hold only padding targets, and position
        t never sees later ones, so the loss is the same as at full width, for less work."""
        _check_positive("batch size", batch_size)
        ix = torch.randint(len(self), (batch_size,), generator=generator)
        T = int(self.lengths[ix].max())
        return self.X[ix, :T], self.Y[ix, :T]


class TextDataset:
    """One token stream; ``batch`` draws random blocks and their one-step-shifted targets.
    Any tokenizer with ``encode`` (characters or BPE)."""

    def __init__(self, text: str, tokenizer, block_size: int):
        _check_positive("block size", block_size)
        self.block_size = block_size
        self.data = torch.tensor(tokenizer.encode(text), dtype=torch.long)  # (M,)
        if len(self.data) <= block_size:
            raise DlfError(
                f"block size {block_size} is longer than the data ({len(self.data)} tokens)"
            )
        self.targets_per_row = float(block_size)

    def __len__(self) -> int:
        return len(self.data)

    def batch(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) inputs and (B, T) targets, the targets shifted one token ahead."""
        _check_positive("batch size", batch_size)
        ix = torch.randint(len(self.data) - self.block_size, (batch_size,), generator=generator)
        offsets = ix[:, None] + torch.arange(self.block_size)  # (B, T)
        return self.data[offsets], self.data[offsets + 1]
