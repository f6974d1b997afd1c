"""Stopping a run cleanly on SIGINT and SIGTERM."""

from __future__ import annotations

import signal
import threading
import time
from typing import Self

# What stops a run cleanly (after the current step, with a checkpoint): Ctrl-C, and the
# SIGTERM that timeout, docker stop, batch schedulers and torchrun send.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """While entered: the first SIGINT (Ctrl-C) or SIGTERM (timeout, docker stop, batch
    schedulers, torchrun) sets `requested`, so the run stops cleanly after the current
    step and checkpoints; a second one aborts at once (KeyboardInterrupt). The previous
    handlers come back on exit. Only the main thread can take signals; elsewhere this
    does nothing.

    In a data-parallel job torchrun passes the terminal's Ctrl-C (and its own SIGTERM) on
    to its workers, which also received it: a second signal within a second of the first
    is the same one there (`grace`)."""

    def __init__(self, say, grace: bool = False):
        self.say = say  # (line) -> None: how the stop is announced
        self.grace = grace
        self.requested = False
        self._first: float | None = None
        self._old: dict = {}

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        now = time.monotonic()
        if self._first is not None:
            if not (self.grace and now - self._first < 1.0):
                raise KeyboardInterrupt
            return
        self._first = now
        self.requested = True
        self.say(f"\n{signal.Signals(signum).name}: stopping after this step and "
                 "checkpointing (a second signal aborts)...")

    def __exit__(self, *exc) -> bool:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}
        return False
