"""Where a run computes, on how many threads, and in which precision."""

from __future__ import annotations

import contextlib
import os
import platform

import torch

from dlf.errors import DlfError

# The precision names of train.dtype (dlf.config.DType) as torch dtypes
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def pick_device(name: str) -> torch.device:
    """"auto" -> cuda when available, else cpu; an unavailable cuda is a DlfError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DlfError(f"device {name!r} requested but CUDA is not available here")
    return torch.device(name)


def autocast(device: torch.device, dtype: str):
    """bf16 autocast for "bf16" (matmuls in bf16, reductions in fp32); nothing for "fp32"."""
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def threads(n: int):
    """torch's intra-op thread count is `n` inside, the caller's again after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def machine() -> dict:
    """What a measurement ran on: the CPU's name, its cores, torch's threads and version,
    and the GPU if there is one."""
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
