"""Loss of a model on a split, always in eval mode (BatchNorm on running statistics,
dropout off), without gradients."""

from __future__ import annotations

import torch

from dlf.data.datasets import SequenceDataset, WordDataset, count_targets
from dlf.engine import distributed
from dlf.engine.device import autocast

# Rows per forward when a whole line-data split is evaluated: bounds the memory of one
# (rows, vocab) logits tensor (a sequence row holds a whole padded name), and does not
# change the result.
EVAL_CHUNK = 8192
SEQUENCE_EVAL_CHUNK = 512


@torch.no_grad()
def evaluate(model, ds, *, device, dtype="fp32", batch_size=32, iters=20, seed=0,
             group: distributed.Group = distributed.SINGLE) -> float:
    """Mean cross-entropy in nats per predicted character. Line data (windows or
    sequences): exact over the whole split, every target weighted equally (a chunk's
    mean loss times its number of non-padding targets). Text data: mean over `iters`
    random batches drawn with a fixed seed, so the same batches are used at every
    evaluation.

    In a data-parallel job (`group`) each rank evaluates a shard (word data: a contiguous share of
    the rows; text data: every world_size-th batch, all ranks drawing every batch so the
    generator stays in step) and the sums are all-reduced: the figure equals the
    1-process one up to the order of the float64 additions."""
    was_training = model.training
    model.eval()
    try:
        if isinstance(ds, (WordDataset, SequenceDataset)):
            chunk = EVAL_CHUNK if isinstance(ds, WordDataset) else SEQUENCE_EVAL_CHUNK
            total, n = 0.0, 0
            lo, hi = group.span(len(ds))
            for i in range(lo, hi, chunk):
                x = ds.X[i : min(i + chunk, hi)].to(device)
                y = ds.Y[i : min(i + chunk, hi)].to(device)
                with autocast(device, dtype):
                    _, loss = model(x, y)
                count = count_targets(y)
                total += loss.item() * count
                n += count
            total, n = group.sum_floats(total, float(n))
            return total / n
        g = torch.Generator().manual_seed(seed)
        total = 0.0
        for i in range(iters):
            x, y = ds.batch(batch_size, g)
            if i % group.world_size != group.rank:
                continue
            with autocast(device, dtype):
                _, loss = model(x.to(device), y.to(device))
            total += loss.item()
        return group.sum_floats(total)[0] / iters
    finally:
        model.train(was_training)


# Evaluation batches of text data come from their own generator, seeded train.seed + 2,
# so every evaluation of a run (and `dlf eval` afterwards) sees the same batches.
EVAL_SEED_OFFSET = 2
# Text batches per evaluation forward when the run itself trains full-batch (batch_size 0).
FULL_BATCH_EVAL_BATCH = 32


def evaluate_split(model, ds, t, device, group: distributed.Group = distributed.SINGLE) -> float:
    """evaluate() with a run's train settings (dtype, batch size, eval_iters, seed)."""
    return evaluate(model, ds, device=device, dtype=t.dtype,
                    batch_size=t.batch_size or FULL_BATCH_EVAL_BATCH, iters=t.eval_iters,
                    seed=t.seed + EVAL_SEED_OFFSET, group=group)


def evaluate_losses(model, data, t, device,
                    group: distributed.Group = distributed.SINGLE) -> dict[str, float]:
    """The train and val losses that a run logs at each evaluation."""
    return {"train_loss": evaluate_split(model, data.train, t, device, group),
            "val_loss": evaluate_split(model, data.val, t, device, group)}
