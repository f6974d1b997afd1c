"""The end of a run: result.json, samples.txt and, for the bigrams, their probability
tables, all for the model in its final (best-validation) weights."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from dlf.engine.evaluate import split_nats
from dlf.engine.state import TrainState
from dlf.engine.tensor_io import write_json
from dlf.fileio import atomic_write_text
from dlf.models.bigram import CountBigram, CountBigramConfig, kl_divergence_rows
from dlf.plots import plot_counts, plot_prob_tables
from dlf.sample import sample


def base_result(plan, model, data, losses: dict, state: TrainState,
                tokens_per_step: int | None, group) -> dict:
    """result.json's figures: the losses (nats per token), val and test also in nats and
    bits per character (one scale for every tokenizer), the time and throughput (from the
    TrainState: steps, training and wall seconds)."""
    t = plan.cfg.train
    steps, wall = state.step, state.wall_seconds
    chars = torch.tensor(data.tokenizer.token_chars())  # (V,) characters of each token id
    val = split_nats(model, data.val, t, plan.device, group, chars)
    test = split_nats(model, data.test, t, plan.device, group, chars) \
        if data.test is not None else None
    return {
        "name": plan.cfg.name,
        "model_type": plan.cfg.model.type,
        "dataset": plan.cfg.data.dataset,
        "tokenizer": plan.cfg.data.tokenizer,
        "vocab_size": plan.cfg.model.vocab_size,
        "train_loss": losses["train_loss"],
        "val_loss": losses["val_loss"],
        "test_loss": None if test is None else test.per_token,
        **per_char("val", val.per_char),
        **per_char("test", None if test is None else test.per_char),
        "steps": steps,
        "wall_seconds": round(wall, 2),
        "train_seconds": round(state.train_seconds, 2),
        "steps_per_second": round(steps / wall, 2) if wall > 0 and steps else None,
        "tokens_per_second": round(steps * tokens_per_step / wall, 1)
        if wall > 0 and tokens_per_step else None,
        "num_parameters": model.num_parameters(),
        "device": str(plan.device),
        "dtype": t.dtype,
        "torch": torch.__version__,
    }


def per_char(split: str, nats: float | None) -> dict:
    """`{split}_nats_per_char` and `{split}_bits_per_char` (None where there is no split)."""
    return {f"{split}_nats_per_char": nats,
            f"{split}_bits_per_char": None if nats is None else nats / math.log(2)}


def write_results(out: Path, plan, model, data, result: dict) -> dict:
    """samples.txt, the bigram tables and result.json into the run directory `out`;
    returns `result` with what they add (novel fraction, KL divergence)."""
    result = {**result, **write_samples(out / "samples.txt", model, data, plan.cfg.train)}
    if plan.caps.bigram_tables:
        result.update(write_bigram_tables(out, plan.regime, model, data))
    write_json(out / "result.json", result)
    return result


def write_samples(path: Path, model, data, t) -> dict:
    """samples.txt: the run's own samples (train settings `t`: num_samples, seeded seed;
    sample_tokens characters of text), through the dlf.sample call `dlf sample` makes.
    Returns what result.json records of them (line data: the share not in the train split)."""
    if t.num_samples == 0:
        atomic_write_text(path, "")
        return {}
    if data.format == "lines":
        names = sample(model, data.tokenizer, layout=data.layout, n=t.num_samples, seed=t.seed)
        atomic_write_text(path, "\n".join(names) + "\n")
        train_set = set(data.train_items)
        return {"novel_fraction": sum(s not in train_set for s in names) / len(names)}
    (text,) = sample(model, data.tokenizer, seed=t.seed, max_new_tokens=t.sample_tokens)
    atomic_write_text(path, text + "\n")
    return {}


def write_bigram_tables(out: Path, regime: str, model, data) -> dict:
    """counts.png for a fitted table; for a learned one, probs.png (the count model
    beside the network's table) and the KL divergence from counts to network."""
    if regime == "fitted":
        plot_counts(model.counts, data.tokenizer, out / "counts.png")
        return {"smoothing": model.config.smoothing}
    k = model.config.compare_smoothing
    counts = CountBigram(CountBigramConfig(vocab_size=model.config.vocab_size, smoothing=k))
    counts.fit(data.train.X, data.train.Y)
    P = counts.probability_table().cpu()
    Q = model.probability_table().cpu()
    prev_freq = torch.bincount(data.train.X[:, -1], minlength=P.size(0)).float()
    plot_prob_tables(P, Q, data.tokenizer, out / "probs.png")
    return {"kl_count_to_neural": kl_divergence_rows(P, Q, prev_freq), "compare_smoothing": k}
