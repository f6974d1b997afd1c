"""Where a run's time goes."""

from __future__ import annotations

import contextlib
import time

from dlf.engine.state import TrainState


class Clock:
    """Reads the time for a run: seconds spent in optimizer steps
    (TrainState.train_seconds, what train.max_seconds budgets) and in the whole run
    (TrainState.wall_seconds, every session of it), and the training throughput between
    two logged steps. The seconds live in the TrainState; the clock adds to them."""

    def __init__(self, max_steps: int, max_seconds: float, tokens_per_step: int,
                 state: TrainState, now=None):
        self.max_steps, self.max_seconds = max_steps, max_seconds
        self.tokens_per_step = tokens_per_step
        # seconds on a monotonic clock; looked up here, not as a default, so that a test
        # can replace this module's clock
        self.now = now or time.perf_counter
        self.t0 = self.now()
        self.wall_before = state.wall_seconds  # the sessions before this one
        self._mark = (self.t0, state.step)  # the last throughput reading: (time, step)

    @contextlib.contextmanager
    def step(self, state: TrainState):
        """Time what runs inside as optimizer-step time."""
        t = self.now()
        try:
            yield
        finally:
            state.train_seconds += self.now() - t

    def tick(self, state: TrainState) -> TrainState:
        """Bring state.wall_seconds up to now; returns `state`."""
        state.wall_seconds = self.wall_before + self.now() - self.t0
        return state

    def out_of_time(self, state: TrainState) -> bool:
        return 0 < self.max_seconds <= state.train_seconds

    def schedule_position(self, state: TrainState) -> int:
        """The step the learning-rate schedule reads. With a time budget the schedule runs
        on the share of the budget spent, so it ends with the budget."""
        if self.max_seconds <= 0:
            return state.step
        share = int(self.max_steps * state.train_seconds / self.max_seconds)
        return min(self.max_steps, max(state.step, share))

    def tokens_per_second(self, step: int) -> float:
        """Training throughput since the last reading (wall clock, evaluations included)."""
        now = self.now()
        (then, before), self._mark = self._mark, (now, step)
        return self.tokens_per_step * (step - before) / max(now - then, 1e-9)
