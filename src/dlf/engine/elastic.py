"""A data-parallel job that torchrun restarts (--max-restarts): each attempt's processes
must find each other, not the processes of the attempt before."""

from __future__ import annotations

import os
from datetime import timedelta

import torch.distributed as dist


def attempt_store(size: int, rank: int, timeout: timedelta) -> dict:
    """init_process_group's keywords for this attempt of a job on one machine: the store of
    torchrun's agent under a prefix of its own; {} where torchrun's defaults are right.

    torchrun shares its rendezvous store with the processes it starts and keeps it over
    restarts (TORCHELASTIC_USE_AGENT_STORE=True), so a restarted process group can read
    the addresses the previous attempt left there, of processes that are gone, and fail
    to connect (pytorch/pytorch#135712). The attempt's number (TORCHELASTIC_RESTART_COUNT)
    keeps the attempts apart; it is the same for every process of one agent, hence on one
    machine. Across machines the agents count apart: there TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
    (given to torchrun) gives each attempt a store of its own instead."""
    env = os.environ
    restart = env.get("TORCHELASTIC_RESTART_COUNT")
    one_machine = env.get("LOCAL_WORLD_SIZE") == str(size)
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or restart is None or not one_machine:
        return {}
    agent = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), size, is_master=False,
                          timeout=timeout)
    return {"store": dist.PrefixStore(f"dlf/attempt_{restart}", agent), "rank": rank,
            "world_size": size}
