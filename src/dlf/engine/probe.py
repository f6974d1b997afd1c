"""Measuring the automatic settings of a CPU run: a few timed training steps of each
candidate, the fastest kept, once per machine and shape.

What the fastest micro-batch and attention kernel are depends on the CPU's caches and
matrix units, which a virtual machine reports wrongly or not at all (sysfs may show the
host's whole last-level cache). So the plan does not guess: for `train.micro_batch =
"auto"` (and `model.attention = "auto"`) on a CPU it times one warm-up and PROBE_STEPS
forward and backward passes of one micro-batch of random tokens for each candidate,
counts them up to a whole batch, and keeps the fastest (the optimizer's update is the
same for all of them). Candidates: the batch, and its halves down to an
eighth, each with both attention kernels when the attention is "auto". The result is
cached in the user cache directory (`$DLF_CACHE_DIR` or ~/.cache/dlf, probe.json), keyed
by the CPU, its cores, the thread count, torch's version and everything about the model
and its step that changes the time, so a machine probes a shape once. A model whose pass of
the whole batch takes longer than MAX_STEP_SECONDS is not probed (the whole batch in one pass, and the
kernel `pick_attention` names): the probe would cost more than it can save.
`train.probe = false` (`--no-probe`) skips the probe as well.

Micro-batching and the attention kernel leave the computation the same (tested equal),
so only the speed depends on the choice.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import torch

from dlf import config as C
from dlf.data.sources import cache_dir
from dlf.engine.device import autocast, machine, threads
from dlf.errors import is_out_of_memory
from dlf.fileio import atomic_write_text
from dlf.models import build_model

PROBE_FILE = "probe.json"
PROBE_STEPS = 2  # timed passes per candidate, after one warm-up pass (1 for a slow pass)
MAX_STEP_SECONDS = 20.0  # a slower pass of the whole batch is not probed
KERNELS = ("manual", "sdpa")  # dlf.models.transformer's attention kernels (Attention)


def candidates(batch_size: int) -> list[int]:
    """The batch and its halves down to an eighth (those that divide it), largest first."""
    return [batch_size >> k for k in range(4) if batch_size % (1 << k) == 0]


def probe_key(cfg: C.RunConfig, n_threads: int) -> str:
    """What the fastest setting depends on, as one string."""
    model = {k: v for k, v in dataclasses.asdict(cfg.model).items() if k != "attention"}
    t = cfg.train
    m = machine()
    return json.dumps({"cpu": m["cpu"], "cores": os.cpu_count(), "threads": n_threads,
                       "torch": m["torch"], "model": {"type": cfg.model.type, **model},
                       "attention": cfg.model.attention, "batch_size": t.batch_size,
                       "window": cfg.data.context or cfg.model.block_size, "dtype": t.dtype,
                       "optimizer": t.optimizer, "muon_ns_dtype": t.muon_ns_dtype,
                       "compile": t.compile}, sort_keys=True)


def _cached() -> dict:
    try:
        return json.loads((cache_dir() / PROBE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: probe again


def probe(cfg: C.RunConfig, device: torch.device, n_threads: int,
          rule: str) -> tuple[int, str, float]:
    """(micro_batch, attention, seconds the probe took: 0 when cached) for the Transformer
    run `cfg`, whose other "auto" settings are resolved, on `device` (a CPU) with
    `n_threads` threads; `rule` is the attention kernel to keep when the step is too slow
    to probe."""
    key = probe_key(cfg, n_threads)
    seen = _cached()
    if key in seen:
        return seen[key]["micro_batch"], seen[key]["attention"], 0.0
    t0 = time.perf_counter()
    with threads(n_threads):
        best = _measure(cfg, device, rule)
    spent = time.perf_counter() - t0
    seen[key] = {"micro_batch": best[0], "attention": best[1], "seconds": round(spent, 2)}
    try:
        atomic_write_text(cache_dir() / PROBE_FILE, json.dumps(seen, indent=1) + "\n")
    except OSError:
        pass  # a cache that cannot be written: the next run probes again
    return best[0], best[1], spent


def _measure(cfg: C.RunConfig, device: torch.device, rule: str) -> tuple[int, str]:
    m, t = cfg.model, cfg.train
    kernels = KERNELS if m.attention == "auto" else (m.attention,)
    window = cfg.data.context or m.block_size
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, m.vocab_size, (t.batch_size, window), generator=gen).to(device)
    y = torch.randint(0, m.vocab_size, (t.batch_size, window), generator=gen).to(device)
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(m, attention=kernels[0])).to(device)
    model.train()
    times = {}
    for kernel in kernels:
        for block in model.blocks:
            block.attn.attention = kernel
        for micro in candidates(t.batch_size):
            try:
                first = _pass(model, x[:micro], y[:micro], t.dtype, device)  # warm-up
                if micro == t.batch_size and first > MAX_STEP_SECONDS and not times:
                    return 0, rule  # too slow to be worth probing
                repeats = PROBE_STEPS if first < 0.5 else 1
                seconds = min(_pass(model, x[:micro], y[:micro], t.dtype, device)
                              for _ in range(repeats))
            except (MemoryError, RuntimeError) as e:
                if not is_out_of_memory(e):
                    raise
                seconds = float("inf")  # passes this large do not fit: smaller ones may
            times[(micro, kernel)] = seconds * (t.batch_size // micro)  # a whole batch
    micro, kernel = min(times, key=lambda c: (times[c], -c[0]))
    return (0 if micro == t.batch_size else micro), kernel


def _pass(model, x: torch.Tensor, y: torch.Tensor, dtype: str, device: torch.device) -> float:
    """Seconds of one forward and backward pass (what micro-batching splits; the update
    after it is the same for every candidate)."""
    start = time.perf_counter()
    with autocast(device, dtype):
        _, loss = model(x, y)
    loss.backward()
    model.zero_grad()
    return time.perf_counter() - start
