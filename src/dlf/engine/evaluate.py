"""Loss of a model on a split, always in eval mode (BatchNorm on running statistics,
dropout off), without gradients."""

from __future__ import annotations

import torch

from dlf.data.datasets import WordDataset
from dlf.engine.device import autocast

# Rows per forward when a whole line-data split is evaluated: bounds the memory of one
# (rows, vocab) logits tensor, and does not change the result.
EVAL_CHUNK = 8192


@torch.no_grad()
def evaluate(model, ds, *, device, dtype="fp32", batch_size=32, iters=20, seed=0) -> float:
    """Mean cross-entropy in nats. Word data: exact over the whole split.
    Text data: mean over `iters` random batches drawn with a fixed seed, so the
    same batches are used at every evaluation."""
    was_training = model.training
    model.eval()
    try:
        if isinstance(ds, WordDataset):
            total, n = 0.0, len(ds)
            for i in range(0, n, EVAL_CHUNK):
                x = ds.X[i : i + EVAL_CHUNK].to(device)
                y = ds.Y[i : i + EVAL_CHUNK].to(device)
                with autocast(device, dtype):
                    _, loss = model(x, y)
                total += loss.item() * len(y)
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


# Evaluation batches of text data come from their own generator, seeded train.seed + 2,
# so every evaluation of a run (and `dlf eval` afterwards) sees the same batches.
EVAL_SEED_OFFSET = 2
# Text batches per evaluation forward when the run itself trains full-batch (batch_size 0).
FULL_BATCH_EVAL_BATCH = 32


def evaluate_split(model, ds, t, device) -> float:
    """evaluate() with a run's train settings (dtype, batch size, eval_iters, seed)."""
    return evaluate(model, ds, device=device, dtype=t.dtype, batch_size=t.batch_size or FULL_BATCH_EVAL_BATCH,
                    iters=t.eval_iters, seed=t.seed + EVAL_SEED_OFFSET)
