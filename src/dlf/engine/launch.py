"""Starting a data-parallel job on this machine: `dlf train --nproc N` runs torchrun
(torch.distributed.run) with N processes, each running the same dlf command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from dlf.engine.distributed import World
from dlf.engine.plan import Plan
from dlf.engine.session import open_session
from dlf.errors import DlfError

# The options that go to the launcher (torchrun), not to each launched process.
LAUNCH_OPTIONS = ("--nproc", "--max-restarts")


def strip_launch_options(argv: list[str]) -> list[str]:
    """argv without its --nproc and --max-restarts options (what each launched process
    runs)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in LAUNCH_OPTIONS:
            skip = True
        elif not a.startswith(tuple(f"{o}=" for o in LAUNCH_OPTIONS)):
            out.append(a)
    return out


def launch_command(nproc: int, dlf_args: list[str], max_restarts: int = 0) -> list[str]:
    """torchrun on this machine: `nproc` processes each running `python -m dlf dlf_args`;
    the whole job restarted up to `max_restarts` times when a process fails."""
    restarts = [f"--max-restarts={max_restarts}"] if max_restarts else []
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", *restarts, "-m", "dlf", *dlf_args]


def check_job(cfg, out, nproc: int, *, resume: bool | str, force: bool,
              init_from=None, max_restarts: int = 0, checks=()) -> Plan:
    """Every refusal the job's processes would make, made before any starts: the session
    of `nproc` processes opened without changing anything (the plan, the caller's
    `checks`, the run directory `out`: its run, that it can be written)."""
    if nproc < 1:
        raise DlfError(f"--nproc must be >= 1, got {nproc}")
    if max_restarts < 0:
        raise DlfError(f"--max-restarts must be >= 0, got {max_restarts}")
    if max_restarts and not resume:
        raise DlfError("--max-restarts restarts the same command: add --resume auto, so that "
                       "a restart continues from the last checkpoint")
    session = open_session(cfg, out, resume=resume, force=force, init_from=init_from,
                           checks=checks,
                           world=World(size=nproc, local_size=nproc), check_only=True)
    return session.plan


def launch_local(nproc: int, dlf_args: list[str], threads: int, max_restarts: int = 0) -> int:
    """Run `dlf dlf_args` in `nproc` processes on this machine (torch.distributed.run) and
    return the job's exit status. Ctrl-C reaches the workers from the terminal (and from
    torchrun): they stop after the current step and checkpoint; this process only waits.
    A failed process (killed, out of memory) makes torchrun restart all of them, up to
    `max_restarts` times; `--resume auto` among dlf_args makes each restart continue."""
    if World.from_env().size > 1 or "TORCHELASTIC_RUN_ID" in os.environ:
        raise DlfError("--nproc or --max-restarts inside a torchrun job: use one or the other")
    env = dict(os.environ)
    # torchrun would set 1 thread per worker; `threads` is the plan's share of the cores
    env.setdefault("OMP_NUM_THREADS", str(threads))
    proc = subprocess.Popen(launch_command(nproc, dlf_args, max_restarts), env=env)
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return proc.wait()
    finally:
        signal.signal(signal.SIGINT, old)
