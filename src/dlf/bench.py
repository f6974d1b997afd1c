"""`dlf bench`: training throughput, achieved FLOP rate and MFU; sampling speed with and
without the KV cache. Measurements only: nothing here is asserted by tests.

MFU (model FLOPs utilisation) = achieved matmul FLOP/s of a training step divided by
the matmul peak measured in the same process, dtype and thread count, so the ratio
says how much of what this machine can do the training loop actually uses.
"""

from __future__ import annotations

import os
import platform
import time

import torch

from dlf import config as C
from dlf import optim
from dlf.engine import distributed
from dlf.engine.data import prepare_data
from dlf.engine.device import autocast, pick_device
from dlf.errors import DlfError
from dlf.models import build_model
from dlf.models.protocol import capabilities

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(dtype: str = "fp32", device="cpu", n: int = 2048, seconds: float = 1.5) -> float:
    """Best sustained GFLOP/s of an (n x n) @ (n x n) matmul in `dtype`."""
    device = torch.device(device)
    a = torch.randn(n, n, device=device).to(DTYPES[dtype])
    b = torch.randn(n, n, device=device).to(DTYPES[dtype])
    for _ in range(2):
        a @ b
    _sync(device)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        for _ in range(3):
            a @ b
        _sync(device)
        best = max(best, 3 * 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def flops_per_token(model) -> float:
    """Forward + backward matmul FLOPs per trained token (6 per weight, plus attention)."""
    if capabilities(model).flop_count:
        return float(model.flops_per_token())
    return 6.0 * model.num_parameters()


def _untrained_model(cfg: C.RunConfig, device: str):
    """The preset's model with random weights (speed does not depend on them)."""
    dev = pick_device(device)
    if cfg.model.vocab_size == 0:  # not fixed by the config: the preset's data decides it
        cfg.model.vocab_size = prepare_data(cfg).tokenizer.vocab_size
    torch.manual_seed(0)
    model = build_model(cfg.model)
    model.to(dev)
    return model, dev


def bench_train(preset: str = "shakespeare-transformer", dtype: str = "bf16", steps: int = 10,
                batch_size: int | None = None, device: str = "auto", overrides=()) -> dict:
    """Time full training steps (forward, backward, AdamW update) on random tokens.

    Under torchrun each rank trains on its slice of the batch and the gradients are
    all-reduced as in training; tokens/s and GFLOP/s are the whole job's, the peak the
    sum of the ranks' peaks measured at the same time."""
    if dtype not in DTYPES:
        raise DlfError(f"--dtype must be fp32 or bf16, got {dtype!r}")
    if steps < 1:
        raise DlfError("--steps must be >= 1")
    cfg = C.apply_overrides(C.resolve(preset), list(overrides))
    cfg.train.dtype = dtype
    if batch_size is not None:
        cfg.train.batch_size = batch_size
    B = cfg.train.batch_size
    if B < 1:
        raise DlfError(f"bench train needs a batch size >= 1, got {B} (a full-batch preset "
                       "needs --batch-size)")
    group = distributed.setup(device)
    if group.active:
        distributed.check_config(cfg, group.world_size, "autograd")
        if B % group.world_size:
            raise DlfError(f"batch {B} is not divisible by {group.world_size} processes")
        if torch.get_num_threads() != distributed.default_threads(group):
            torch.set_num_threads(distributed.default_threads(group))
    C.resolve_auto(cfg, group.device)  # the same choices as `dlf train`
    model, dev = _untrained_model(cfg, str(group.device))
    model.train()
    B = cfg.train.batch_size
    T = cfg.model.block_size
    sequence = capabilities(model).sequence_targets
    x = torch.randint(0, cfg.model.vocab_size, (B, T), device=dev)
    y = torch.randint(0, cfg.model.vocab_size, (B, T) if sequence else (B,), device=dev)
    opt = optim.AdamW(model.parameters(), lr=1e-4)
    reducer = distributed.GradReducer(group, model.parameters())
    ctx = autocast(dev, dtype)
    xs, ys = group.shard(x, y)

    m = cfg.train.micro_batch or B

    def step():
        passes = list(zip(xs.split(m), ys.split(m), strict=True))
        for i, (xm, ym) in enumerate(passes):
            reducer.communicate = i == len(passes) - 1  # only the last pass all-reduces
            with ctx:
                _, loss = model(xm, ym)
            (loss * (len(xm) / len(xs))).backward()
        reducer.finish()
        opt.step()
        opt.zero_grad()

    step()  # warm-up: allocations, kernel selection
    _sync(dev)
    # the peak is measured before and after the timed steps and the better kept: a shared
    # machine's passing slowdown during one 1.5 s measurement would otherwise inflate MFU
    first_peak = matmul_peak(dtype, dev)
    group.barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(dev)
    dt = group.sum_floats(time.perf_counter() - t0)[0] / group.world_size / steps
    tokens = B * (T if sequence else 1)
    tps = tokens / dt
    gflops = flops_per_token(model) * tps / 1e9
    group.barrier()
    peak = group.sum_floats(max(first_peak, matmul_peak(dtype, dev)))[0]
    return {"preset": cfg.name, "dtype": dtype, "device": str(dev), "batch_size": B,
            "micro_batch": m, "attention": getattr(cfg.model, "attention", None),
            "block_size": T, "num_parameters": model.num_parameters(),
            "seconds_per_step": dt, "tokens_per_second": tps, "gflops": gflops,
            "peak_gflops": peak, "mfu": gflops / peak, "processes": group.world_size,
            **machine()}


def bench_train_scaling(nproc: int, bench_args: list[str]) -> dict:
    """`dlf bench train --nproc N`: the same benchmark in 1 process and in N processes
    (torchrun) on this machine, one after the other.

    `speedup` = tokens/s of N processes over 1. On CPU the 1-process run uses every
    core (1 x C threads against N x C/N), so speedup says what splitting the same cores
    into processes gains; a third run, 1 process with C/N threads (`one_share`), gives
    the scaling efficiency = N-process tokens/s / (N x one_share's). On CUDA each process
    has a GPU, so efficiency = speedup / N."""
    import json
    import subprocess
    import sys

    if nproc < 2:
        raise DlfError(f"--nproc must be >= 2 to compare with 1 process, got {nproc}")
    args = [*distributed.strip_nproc(bench_args), "--json"]

    def run(cmd: list[str]) -> dict:
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise DlfError(f"benchmark failed: {' '.join(cmd)}\n{p.stderr.strip()[-2000:]}")
        return json.loads(p.stdout.strip().splitlines()[-1])

    one = run([sys.executable, "-m", "dlf", *args])
    many = run(distributed.launch_command(nproc, args))
    gpu = many["device"].startswith("cuda")
    share = None
    if not gpu:
        share = run([sys.executable, "-m", "dlf", *args, "--threads", str(many["threads"])])
    unit = one if gpu else share
    return {"one": one, "one_share": share, "many": many, "nproc": nproc,
            "speedup": many["tokens_per_second"] / one["tokens_per_second"],
            "efficiency": many["tokens_per_second"] / (nproc * unit["tokens_per_second"])}


def bench_sample(preset: str = "shakespeare-transformer", new_tokens: int = 1000,
                 dtype: str = "fp32", device: str = "auto") -> dict:
    """Tokens/s generating `new_tokens` after a one-character prompt, with and without the
    KV cache, on the preset's (untrained: speed does not depend on the weights) model."""
    from dlf.models.protocol import slide_window
    from dlf.sample import next_token

    if new_tokens < 1:
        raise DlfError("--new-tokens must be >= 1")
    cfg = C.resolve(preset)
    if cfg.model.type != "transformer":
        raise DlfError(f"bench sample needs a transformer preset, {preset} is {cfg.model.type}")
    model, dev = _untrained_model(cfg, device)
    model.eval()
    T = model.block_size
    idx = torch.zeros((1, 1), dtype=torch.long, device=dev)
    ctx = autocast(dev, dtype)

    def pick_from(g):
        return lambda logits: next_token(logits, 1.0, None, g).to(dev)

    with torch.no_grad(), ctx:
        model.generate_cached(idx, 20, pick_from(torch.Generator().manual_seed(1)))  # warm-up
        model(torch.zeros((1, T), dtype=torch.long, device=dev))
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        cached = model.generate_cached(idx, new_tokens, pick_from(g))
        _sync(dev)
        t_cached = time.perf_counter() - t0

        g = torch.Generator().manual_seed(0)
        pick = pick_from(g)
        seq, start = idx, 0
        t0 = time.perf_counter()
        for _ in range(new_tokens):
            start = slide_window(start, seq.shape[1], T)
            logits, _ = model(seq[:, start:])
            seq = torch.cat([seq, pick(logits[:, -1, :])], dim=1)
        _sync(dev)
        t_uncached = time.perf_counter() - t0
    same = cached == seq[0, 1:].tolist()
    return {"preset": cfg.name, "new_tokens": new_tokens, "block_size": T, "dtype": dtype,
            "cached_tokens_per_second": new_tokens / t_cached,
            "uncached_tokens_per_second": new_tokens / t_uncached,
            "speedup": t_uncached / t_cached, "identical_tokens": same, **machine()}
