"""`dlf bench`: training throughput, achieved FLOP rate and MFU; sampling speed with and
without the KV cache. Measurements only: nothing here is asserted by tests.

MFU (model FLOPs utilisation) = achieved matmul FLOP/s of a training step divided by
the matmul peak measured in the same process, dtype and thread count, so the ratio
says how much of what this machine can do the training loop actually uses.
"""

from __future__ import annotations

import time

import torch

from dlf import config as C
from dlf import presets
from dlf.engine import distributed
from dlf.engine.device import TORCH_DTYPES, autocast, machine
from dlf.engine.launch import launch_command, strip_launch_options
from dlf.engine.plan import plan_run
from dlf.engine.steps import AutogradStep
from dlf.errors import DlfError
from dlf.models import build_model
from dlf.sample import generate_ids, next_token


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(dtype: str = "fp32", device="cpu", n: int = 2048, seconds: float = 1.5) -> float:
    """Best sustained GFLOP/s of an (n x n) @ (n x n) matmul in `dtype`."""
    device = torch.device(device)
    a = torch.randn(n, n, device=device).to(TORCH_DTYPES[dtype])
    b = torch.randn(n, n, device=device).to(TORCH_DTYPES[dtype])
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


def flops_per_token(model, caps) -> float:
    """Forward + backward matmul FLOPs per trained token (6 per weight, plus attention);
    `caps` is the model's declared capabilities (plan.caps)."""
    if caps.flop_count:
        return float(model.flops_per_token())
    return 6.0 * model.num_parameters()


def _plan(preset: str, overrides, device: str, **train):
    """The preset's plan as `dlf train` makes it (the same checks and "auto" choices),
    with `train` settings changed first, and its untrained model (speed does not depend on
    the weights)."""
    cfg = C.apply_overrides(presets.resolve(preset), list(overrides))
    cfg.train.device = device
    for key, value in train.items():
        setattr(cfg.train, key, value)
    plan, _ = plan_run(cfg, distributed.World.from_env())
    torch.manual_seed(0)
    return plan, build_model(plan.cfg.model).to(plan.device)


def bench_train(preset: str = "shakespeare-transformer", dtype: str = "bf16", steps: int = 10,
                batch_size: int | None = None, device: str = "auto", overrides=()) -> dict:
    """Time full training steps (the trainer's own step: forward, backward, clip, the
    preset's optimizer) on random tokens.

    Under torchrun each rank trains on its slice of the batch and the gradients are
    all-reduced as in training; tokens/s and GFLOP/s are the whole job's, the peak the
    sum of the ranks' peaks measured at the same time."""
    if dtype not in TORCH_DTYPES:
        raise DlfError(f"--dtype must be {' or '.join(TORCH_DTYPES)}, got {dtype!r}")
    if steps < 1:
        raise DlfError("--steps must be >= 1")
    if batch_size is not None and batch_size < 1:
        raise DlfError(f"bench train needs a batch size >= 1, got {batch_size}")
    train = {"dtype": dtype} | ({} if batch_size is None else {"batch_size": batch_size})
    plan, model = _plan(preset, overrides, device, **train)
    t = plan.cfg.train
    B, T = t.batch_size, plan.cfg.model.block_size
    if B < 1:
        raise DlfError(f"bench train needs a batch size >= 1, got {B} (a full-batch preset "
                       "needs --batch-size)")
    if plan.regime != "autograd":
        raise DlfError(f"bench train times the autograd step; a {plan.cfg.model.type} model "
                       f"is {plan.regime}")
    group = distributed.join(plan.world, plan.device)
    if group.active:
        torch.set_num_threads(plan.threads)
    dev, V = plan.device, plan.cfg.model.vocab_size
    x = torch.randint(0, V, (B, T), device=dev)
    y = torch.randint(0, V, (B, T) if plan.caps.sequence_targets else (B,), device=dev)
    batch = (*group.shard(x, y), y.numel())  # this rank's slice, the global batch's targets
    step = AutogradStep(model, t, dev, group)
    model.train()

    step(lambda: batch, t.lr)  # warm-up: allocations, kernel selection
    _sync(dev)
    # the peak is measured before and after the timed steps and the better kept: a shared
    # machine's passing slowdown during one 1.5 s measurement would otherwise inflate MFU
    first_peak = matmul_peak(dtype, dev)
    group.barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        step(lambda: batch, t.lr)
    _sync(dev)
    dt = group.sum_floats(time.perf_counter() - t0)[0] / group.world_size / steps
    tokens = B * (T if plan.caps.sequence_targets else 1)
    tps = tokens / dt
    gflops = flops_per_token(model, plan.caps) * tps / 1e9
    group.barrier()
    peak = group.sum_floats(max(first_peak, matmul_peak(dtype, dev)))[0]
    return {"preset": plan.cfg.name, "dtype": dtype, "device": str(dev), "batch_size": B,
            "micro_batch": t.micro_batch or B,
            "attention": getattr(plan.cfg.model, "attention", None),
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
    args = [*strip_launch_options(bench_args), "--json"]

    def run(cmd: list[str]) -> dict:
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise DlfError(f"benchmark failed: {' '.join(cmd)}\n{p.stderr.strip()[-2000:]}")
        return json.loads(p.stdout.strip().splitlines()[-1])

    one = run([sys.executable, "-m", "dlf", *args])
    many = run(launch_command(nproc, args))
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
    """Tokens/s generating `new_tokens` after a one-character prompt through dlf.sample's
    loop, with and without the model's cache, on the preset's untrained model."""
    if new_tokens < 1:
        raise DlfError("--new-tokens must be >= 1")
    plan, model = _plan(preset, (), device)
    if not plan.caps.sequence_targets:
        raise DlfError("bench sample needs a sequence model (transformer, rnn, gru, bow); "
                       f"{preset} is {plan.cfg.model.type}")
    dev = plan.device
    idx = torch.zeros((1, 1), dtype=torch.long, device=dev)

    def run(use_cache: bool, n: int, seed: int = 0) -> tuple[list[int], float]:
        g = torch.Generator().manual_seed(seed)
        t0 = time.perf_counter()
        with autocast(dev, dtype):
            (ids,) = generate_ids(model, idx, n, lambda lg: next_token(lg, 1.0, None, g),
                                  use_cache=use_cache)
        _sync(dev)
        return ids, time.perf_counter() - t0

    run(True, 20, seed=1)  # warm-up
    run(False, 2, seed=1)
    cached, t_cached = run(True, new_tokens)
    uncached, t_uncached = run(False, new_tokens)
    return {"preset": plan.cfg.name, "new_tokens": new_tokens,
            "block_size": plan.cfg.model.block_size, "dtype": dtype,
            "cached_tokens_per_second": new_tokens / t_cached,
            "uncached_tokens_per_second": new_tokens / t_uncached,
            "speedup": t_uncached / t_cached, "identical_tokens": cached == uncached,
            **machine()}
