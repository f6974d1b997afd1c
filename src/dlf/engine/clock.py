"""Where a run's time goes."""

from __future__ import annotations

import contextlib
import time


class Clock:
    """Seconds spent in optimizer steps (`train_seconds`, what train.max_seconds budgets)
    and in the whole run (`wall`), both carried over a resume (`before`), and the
    training throughput between two logged steps."""

    def __init__(self, max_steps: int, max_seconds: float, tokens_per_step: int,
                 train_seconds: float = 0.0, wall_before: float = 0.0, step: int = 0,
                 now=None):
        self.max_steps, self.max_seconds = max_steps, max_seconds
        self.tokens_per_step = tokens_per_step
        self.train_seconds, self.wall_before = train_seconds, wall_before
        # seconds on a monotonic clock; looked up here, not as a default, so that a test
        # can replace this module's clock
        self.now = now or time.perf_counter
        self.t0 = self.now()
        self._mark = (self.t0, step)  # the last throughput reading: (time, step)

    @contextlib.contextmanager
    def step(self):
        """Time what runs inside as optimizer-step time."""
        t = self.now()
        try:
            yield
        finally:
            self.train_seconds += self.now() - t

    def wall(self) -> float:
        """Wall-clock seconds of the run, the time before a resume included."""
        return self.wall_before + self.now() - self.t0

    def out_of_time(self) -> bool:
        return 0 < self.max_seconds <= self.train_seconds

    def schedule_position(self, step: int) -> int:
        """The step the learning-rate schedule reads. With a time budget the schedule runs
        on the share of the budget spent, so it ends with the budget."""
        if self.max_seconds <= 0:
            return step
        share = int(self.max_steps * self.train_seconds / self.max_seconds)
        return min(self.max_steps, max(step, share))

    def tokens_per_second(self, step: int) -> float:
        """Training throughput since the last reading (wall clock, evaluations included)."""
        now = self.now()
        (then, before), self._mark = self._mark, (now, step)
        return self.tokens_per_step * (step - before) / max(now - then, 1e-9)
