"""metrics.jsonl: one JSON object per logged step, appended (see MetricsLog for what
survives a kill)."""

from __future__ import annotations

import json
from pathlib import Path

from dlf.fileio import atomic_write_text


class MetricsLog:
    """Append-only JSON-lines log. Records: {"step", "loss", "lr", ...} for training
    steps and {"step", "train_loss", "val_loss"} for evaluations."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, record: dict) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by a kill: everything after it is unreliable
        return out

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (a resumed run re-logs them)."""
        keep = [r for r in self.read() if r.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))


class MetricsFile:
    """The metrics sink that writes metrics.jsonl. Resuming from step s keeps the records up
    to s (a killed run may have logged past its checkpoint) and offers them as `kept`."""

    def __init__(self, path: str | Path, resume_step: int | None = None):
        self.log = MetricsLog(path)
        self.resume_step = resume_step
        self.kept: list[dict] = []
        if resume_step is not None:
            self.log.truncate_after(resume_step)
            self.kept = self.log.read()

    def write(self, record: dict) -> None:
        self.log.append(record)

    def close(self) -> None:
        pass
