"""loss.png, redrawn as a run goes."""

from __future__ import annotations

from pathlib import Path

from dlf.plots import plot_loss


class LossPlot:
    """The metrics sink that draws loss.png from the records in memory: after every
    evaluation, and once more at the end if anything was logged since."""

    def __init__(self, path: str | Path, title: str, records: list[dict] | None = None):
        self.path, self.title = Path(path), title
        self.records = list(records or [])
        self._drawn = 0  # how many records the file shows

    def write(self, record: dict) -> None:
        self.records.append(record)
        if "val_loss" in record:
            self.draw()

    def draw(self) -> None:
        if self.records and self._drawn != len(self.records):
            plot_loss(self.records, self.path, title=self.title)
            self._drawn = len(self.records)

    def close(self) -> None:
        self.draw()
