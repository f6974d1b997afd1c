"""The few functions of the public API (see `dlf/__init__.py`) that are not another
module's function under a shorter name: sampling from a run or a model, a run's
metrics, and the budget switch of the notebooks."""

from __future__ import annotations

import os
from pathlib import Path

from dlf.engine.metrics import MetricsLog
from dlf.engine.saved import Run
from dlf.errors import DlfError
from dlf.sample import sample


def quick() -> bool:
    """True when the environment variable DLF_QUICK is 1: tiny budgets (tests, CI)."""
    value = os.environ.get("DLF_QUICK", "0")
    if value not in ("0", "1", ""):
        raise DlfError(f"DLF_QUICK must be 0 or 1, got {value!r}")
    return value == "1"


def read_metrics(run: Run | str | Path) -> list[dict]:
    """A run's metrics.jsonl records (one dict per logged step), oldest first."""
    path = run.path if isinstance(run, Run) else Path(run)
    if not (path / "metrics.jsonl").exists():
        raise DlfError(f"{path} has no metrics.jsonl")
    return MetricsLog(path / "metrics.jsonl").read()


def generate(source, tokenizer=None, *, n: int | None = None, seed: int = 0,
             temperature: float = 1.0, top_k: int | None = None, prompt: str = "",
             max_new_tokens: int | None = None, use_cache: bool = True,
             layout: str | None = None, stream=None) -> list[str]:
    """n samples from a run (dlf.load_run) or from a model and its tokenizer; `dlf sample`
    calls this too, so both give the same samples for the same arguments.

    A tokenizer with a boundary token (line data, e.g. names) gives n items, each ended
    by the boundary token (default n = 10); a text tokenizer gives n continuations of
    `prompt` (default n = 1), sample i seeded seed + i, each piece passed to `stream` as it
    is made. A run samples as it was trained (its data.layout); a bare model takes
    `layout` ("windows", the default, or "sequences"). `use_cache` lets a sequence model
    use its cache (the tokens are the same either way)."""
    if isinstance(source, Run):
        if layout is not None:
            raise DlfError("generate(run): the run's data.layout decides how it samples; "
                           "layout= is for a bare model")
        model, tokenizer, layout = source.model, tokenizer or source.tokenizer, \
            source.config.data.layout
    else:
        model = source
        if tokenizer is None:
            raise DlfError("generate(model, tokenizer): a model needs its tokenizer")
    return sample(model, tokenizer, layout=layout or "windows", n=n, seed=seed,
                  temperature=temperature, top_k=top_k, prompt=prompt,
                  max_new_tokens=max_new_tokens, use_cache=use_cache, stream=stream)
