"""Loss of a model on a split, always in eval mode (BatchNorm on running statistics,
dropout off), without gradients."""

from __future__ import annotations

from typing import NamedTuple

import torch

from dlf import config as C
from dlf.data.datasets import IGNORE_INDEX, SequenceDataset, WordDataset, count_targets
from dlf.data.sources import load_corpus
from dlf.engine import distributed
from dlf.engine.device import autocast
from dlf.errors import DlfError

# Rows per forward when a whole line-data split is evaluated: bounds the memory of one
# (rows, vocab) logits tensor (a sequence row holds a whole padded name), and does not
# change the result.
EVAL_CHUNK = 8192
SEQUENCE_EVAL_CHUNK = 512


class Nats(NamedTuple):
    """A split's mean cross-entropy on two scales."""

    per_token: float  # nats per predicted token
    per_char: float  # nats per character of the predicted tokens' text


@torch.no_grad()
def mean_nats(model, ds, *, device, dtype="fp32", batch_size=32, iters=20, seed=0,
            group: distributed.Group = distributed.SINGLE,
            token_chars: torch.Tensor | None = None) -> Nats:
    """Mean cross-entropy of `model` on `ds` per token and per character. Line data
    (windows or sequences): exact over the whole split, every target weighted equally (a
    chunk's mean loss times its number of non-padding targets). Text data: mean over
    `iters` random batches drawn with a fixed seed, so the same batches are used at every
    evaluation.

    Per character: the summed loss of the evaluated targets divided by the characters
    they decode to, `token_chars[id]` for each target id ((V,) tensor; None: one
    character per token, and per_char is per_token). A character split between two tokens
    counts once, with the token that holds its first byte.

    In a data-parallel job (`group`) each rank evaluates a shard (word data: a contiguous
    share of the rows; text data: every world_size-th batch, all ranks drawing every batch
    so the generator stays in step) and the sums are all-reduced: the figures equal the
    1-process ones up to the order of the float64 additions."""
    was_training = model.training
    model.eval()
    chars_of = None if token_chars is None else token_chars.to(device=device, dtype=torch.float64)
    total, nats, chars = 0.0, 0.0, 0.0  # loss of each pass; loss summed over targets; chars

    def add(x, y) -> int:
        nonlocal total, nats, chars
        with autocast(device, dtype):
            _, loss = model(x, y)
        count = count_targets(y)
        total += loss.item()
        nats += loss.item() * count
        if chars_of is not None:
            chars += chars_of[y[y != IGNORE_INDEX]].sum().item()
        return count

    try:
        if isinstance(ds, (WordDataset, SequenceDataset)):
            chunk = EVAL_CHUNK if isinstance(ds, WordDataset) else SEQUENCE_EVAL_CHUNK
            n = 0
            lo, hi = group.span(len(ds))
            for i in range(lo, hi, chunk):
                n += add(ds.X[i : min(i + chunk, hi)].to(device),
                         ds.Y[i : min(i + chunk, hi)].to(device))
            nats, n, chars = group.sum_floats(nats, float(n), chars)
            per_token = nats / n
        else:
            g = torch.Generator().manual_seed(seed)
            for i in range(iters):
                x, y = ds.batch(batch_size, g)
                if i % group.world_size == group.rank:
                    add(x.to(device), y.to(device))
            total, nats, chars = group.sum_floats(total, nats, chars)
            per_token = total / iters  # every batch has batch_size x block_size targets
        return Nats(per_token, per_token if chars_of is None else nats / chars)
    finally:
        model.train(was_training)


@torch.no_grad()
def measure_stream(model, ids: torch.Tensor, *, device, dtype="fp32", batch_size=8,
                   token_chars: torch.Tensor | None = None) -> Nats:
    """Mean cross-entropy of every token of the stream ids (M,) after the first, each
    predicted once: the stream is cut into consecutive windows of block_size targets, and
    a target sees the tokens before it in its window (the last window is shorter)."""
    T, M = model.block_size, len(ids)
    if M < 2:
        raise DlfError("the text is one token long: nothing to predict")
    was_training = model.training
    model.eval()
    nats = chars = 0.0
    starts = list(range(0, M - 1, T))
    full = [s for s in starts if s + T + 1 <= M]
    try:
        for i in range(0, len(full), batch_size):  # whole windows, batch_size at a time
            rows = torch.stack([ids[s : s + T + 1] for s in full[i : i + batch_size]])
            nats, chars = _add_rows(model, rows.to(device), dtype, token_chars, nats, chars)
        if len(full) < len(starts):  # the shorter last window
            nats, chars = _add_rows(model, ids[starts[-1]:][None].to(device), dtype,
                                    token_chars, nats, chars)
    finally:
        model.train(was_training)
    per_token = nats / (M - 1)
    return Nats(per_token, per_token if token_chars is None else nats / chars)


def _add_rows(model, rows, dtype, token_chars, nats, chars):
    """rows (B, L + 1) of tokens: the summed loss of their B * L targets added to nats,
    and their characters to chars."""
    x, y = rows[:, :-1], rows[:, 1:]  # (B, L) each
    with autocast(rows.device, dtype):
        _, loss = model(x, y)
    nats += loss.double().item() * y.numel()
    if token_chars is not None:
        chars += token_chars.to(torch.float64)[y.cpu()].sum().item()
    return nats, chars


def file_nats(model, tokenizer, data: C.DataConfig, path, device, dtype="fp32") -> tuple[
        Nats, int]:
    """A run's loss on a whole UTF-8 file (no split): (Nats, targets). Text runs read it
    as one stream (`measure_stream`); line runs as lines, each target once, laid out as the
    run was trained (data.layout)."""
    chars = torch.tensor(tokenizer.token_chars())  # (V,) characters of each token id
    items, fmt = load_corpus(str(path), format=data.format or None)
    if fmt == "text":
        ids = torch.tensor(tokenizer.encode(items), dtype=torch.long)  # (M,)
        return measure_stream(model, ids, device=device, dtype=dtype, token_chars=chars), \
            len(ids) - 1
    if data.layout == "sequences":
        ds = SequenceDataset(items, tokenizer)
    else:
        ds = WordDataset(items, tokenizer, model.block_size)
    return mean_nats(model, ds, device=device, dtype=dtype, token_chars=chars), count_targets(ds.Y)


def evaluate(model, ds, **kw) -> float:
    """Mean cross-entropy in nats per predicted token (`mean_nats`' per_token)."""
    return mean_nats(model, ds, **kw).per_token


# Evaluation batches of text data come from their own generator, seeded train.seed + 2,
# so every evaluation of a run (and `dlf eval` afterwards) sees the same batches.
EVAL_SEED_OFFSET = 2
# Text batches per evaluation forward when the run itself trains full-batch (batch_size 0).
FULL_BATCH_EVAL_BATCH = 32


def split_nats(model, ds, t, device, group: distributed.Group = distributed.SINGLE,
                  token_chars: torch.Tensor | None = None) -> Nats:
    """mean_nats() with a run's train settings (dtype, batch size, eval_iters, seed)."""
    return mean_nats(model, ds, device=device, dtype=t.dtype,
                   batch_size=t.batch_size or FULL_BATCH_EVAL_BATCH, iters=t.eval_iters,
                   seed=t.seed + EVAL_SEED_OFFSET, group=group, token_chars=token_chars)


def evaluate_split(model, ds, t, device, group: distributed.Group = distributed.SINGLE) -> float:
    """Nats per token with a run's train settings (`split_nats`'s per_token)."""
    return split_nats(model, ds, t, device, group).per_token


def evaluate_losses(model, data, t, device,
                    group: distributed.Group = distributed.SINGLE) -> dict[str, float]:
    """The train and val losses that a run logs at each evaluation."""
    return {"train_loss": evaluate_split(model, data.train, t, device, group),
            "val_loss": evaluate_split(model, data.val, t, device, group)}
