"""The automatic settings of a run: what each "auto" in a config becomes on this machine,
and the thread count of a process. The plan (plan.py) calls them once; everything after
reads the plan."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dlf import config as C
from dlf.engine.distributed import World
from dlf.models.transformer import pick_attention


def resolve_auto(cfg: C.RunConfig, device: torch.device) -> None:
    """Replace every "auto" in `cfg` by the fastest correct choice for `device`, in place:

    - model.attention (Transformer): `dlf.models.transformer.pick_attention`, by device,
      dtype and dropout;
    - train.micro_batch: on a CPU, the largest divisor m of batch_size whose attention
      scores, m * n_head * block_size**2 float32 values (softmax output in fp32 under bf16
      autocast too), fit in the last-level cache; past that, the scores of one pass
      spill to memory and throughput roughly halves. Elsewhere (CUDA, models without
      attention, full-batch training) 0: the whole batch in one pass;
    - train.muon_ns_dtype (muon): "bf16" on CUDA, "fp32" elsewhere (benchmarks/recipe_step.py).

    Micro-batching leaves the gradient unchanged (each pass's mean loss is weighted by its
    share of the batch's targets), so only speed depends on it."""
    m, t = cfg.model, cfg.train
    if getattr(m, "attention", None) == "auto":
        m.attention = pick_attention(device.type, t.dtype, m.dropout)
    if t.optimizer == "muon" and t.muon_ns_dtype == "auto":
        t.muon_ns_dtype = "bf16" if device.type == "cuda" else "fp32"
    if t.micro_batch == "auto":
        t.micro_batch = 0
        n_head, T = getattr(m, "n_head", 0), getattr(m, "block_size", 0)
        if device.type == "cpu" and n_head and t.batch_size > 0:
            most = last_level_cache_bytes() // (n_head * T * T * 4)  # rows whose scores fit
            fits = [d for d in range(1, min(t.batch_size, most) + 1) if t.batch_size % d == 0]
            t.micro_batch = max(fits, default=1)


def last_level_cache_bytes(default: int = 32 * 2**20,
                           caches: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int:
    """Size of the CPU's largest cache (Linux sysfs: index*/size, e.g. "32768K"), or
    `default` where unknown."""
    sizes, units = [], {"K": 2**10, "M": 2**20, "G": 2**30}
    for entry in caches.glob("index*/size"):
        try:
            text = entry.read_text().strip()
        except OSError:
            continue
        if text[-1:] in units and text[:-1].isdigit():
            sizes.append(int(text[:-1]) * units[text[-1]])
        elif text.isdigit():
            sizes.append(int(text))
    return max(sizes, default=default)


def default_threads(world: World) -> int:
    """Threads per process when train.threads = 0. One process: what torch uses now (its
    default is one per core; OMP_NUM_THREADS or the caller may have set another). A
    data-parallel job: the cores this process may use, shared equally by the job's
    processes on this machine."""
    if world.size <= 1:
        return torch.get_num_threads()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(world.local_size, 1))
