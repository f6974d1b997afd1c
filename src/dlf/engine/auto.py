"""The automatic settings of a run: what each "auto" in a config becomes on this machine,
and the thread count of a process. The plan (plan.py) calls them once; everything after
reads the plan."""

from __future__ import annotations

import os

import torch

from dlf import config as C
from dlf.data.sources import cache_dir
from dlf.engine.distributed import World
from dlf.engine.probe import PROBE_FILE, probe
from dlf.models.transformer import pick_attention


def resolve_auto(cfg: C.RunConfig, device: torch.device, n_threads: int) -> list[str]:
    """Replace every "auto" in `cfg` by the fastest correct choice for `device`, in place;
    returns a note when it measured one:

    - train.muon_ns_dtype (muon): "bf16" on CUDA, "fp32" elsewhere (benchmarks/recipe_step.py);
    - model.attention and train.micro_batch of a Transformer on a CPU: measured by a short
      probe of the candidates, cached per machine and shape (dlf.engine.probe), unless
      train.probe is false or the run has several processes;
    - otherwise model.attention by `dlf.models.transformer.pick_attention` (device, dtype,
      dropout) and train.micro_batch 0, the whole batch in one pass.

    Micro-batching leaves the gradient unchanged (each pass's mean loss is weighted by its
    share of the batch's targets), so only speed depends on it."""
    m, t = cfg.model, cfg.train
    if t.optimizer == "muon" and t.muon_ns_dtype == "auto":
        t.muon_ns_dtype = "bf16" if device.type == "cuda" else "fp32"
    rule = pick_attention(device.type, t.dtype, m.dropout) if hasattr(m, "attention") else None
    measured = (t.micro_batch == "auto" and device.type == "cpu" and t.probe and not t.compile
                and m.type == "transformer" and t.batch_size > 0 and n_threads > 0)
    notes = []
    if measured:
        micro, kernel, spent = probe(cfg, device, n_threads, rule)
        if spent:
            notes.append(f"measured train.micro_batch = {micro} and model.attention = "
                         f"{kernel} on this machine in {spent:.1f} s (cached: "
                         f"{cache_dir() / PROBE_FILE}; train.probe = false skips it)")
        t.micro_batch = micro
        if m.attention == "auto":
            m.attention = kernel
    if getattr(m, "attention", None) == "auto":
        m.attention = rule
    if t.micro_batch == "auto":
        t.micro_batch = 0
    return notes


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
