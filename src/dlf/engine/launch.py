"""Starting a data-parallel job on this machine: `dlf train --nproc N` runs torchrun
(torch.distributed.run) with N processes, each running the same dlf command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from dlf.engine.distributed import World
from dlf.errors import DlfError


def strip_nproc(argv: list[str]) -> list[str]:
    """argv without its --nproc option (what each launched process runs)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def launch_command(nproc: int, dlf_args: list[str]) -> list[str]:
    """torchrun on this machine: `nproc` processes each running `python -m dlf dlf_args`."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "dlf", *dlf_args]


def launch_local(nproc: int, dlf_args: list[str], threads: int) -> int:
    """Run `dlf dlf_args` in `nproc` processes on this machine (torch.distributed.run) and
    return the job's exit status. Ctrl-C reaches the workers from the terminal (and from
    torchrun): they stop after the current step and checkpoint; this process only waits."""
    if nproc < 1:
        raise DlfError(f"--nproc must be >= 1, got {nproc}")
    if World.from_env().size > 1:
        raise DlfError("--nproc inside a torchrun job: use one or the other")
    env = dict(os.environ)
    # torchrun would set 1 thread per worker; `threads` is the plan's share of the cores
    env.setdefault("OMP_NUM_THREADS", str(threads))
    proc = subprocess.Popen(launch_command(nproc, dlf_args), env=env)
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return proc.wait()
    finally:
        signal.signal(signal.SIGINT, old)
