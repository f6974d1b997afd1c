"""loss.png, redrawn as a run goes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from dlf.plots import plot_loss

REDRAW_SECONDS = 10.0  # a drawing of thousands of records takes about a second


class LossPlot:
    """The metrics sink that draws loss.png from the records in memory: after an
    evaluation, at most once every `every` seconds, the first time `every` seconds after
    the plot starts (`now` is the clock, injectable for tests), and once more at the end if
    anything was logged since. Runs that evaluate every few steps would otherwise spend
    more time drawing than training, and a run shorter than `every` draws once."""

    def __init__(self, path: str | Path, title: str, records: list[dict] | None = None,
                 every: float = REDRAW_SECONDS, now: Callable[[], float] = time.monotonic):
        self.path, self.title = Path(path), title
        self.records = list(records or [])
        self.every, self.now = every, now
        self._drawn = 0  # how many records the file shows
        self._drawn_at = now()  # the start counts as a drawing: the first waits `every`

    def write(self, record: dict) -> None:
        self.records.append(record)
        if "val_loss" in record and self.now() - self._drawn_at >= self.every:
            self.draw()

    def draw(self) -> None:
        if self.records and self._drawn != len(self.records):
            plot_loss(self.records, self.path, title=self.title)
            self._drawn = len(self.records)
            self._drawn_at = self.now()

    def close(self) -> None:
        self.draw()
