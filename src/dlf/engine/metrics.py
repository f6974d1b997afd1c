"""metrics.jsonl (one JSON object per logged step) and the loss plot drawn from it."""

from __future__ import annotations

import json
from pathlib import Path

from dlf.engine.checkpoint import atomic_write_bytes, atomic_write_text


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


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (imported late: `dlf --help` stays fast)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def running_mean(values: list[float], k: int) -> list[float]:
    """Mean of the last k values at each position (fewer at the start)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= k:
            total -= values[i - k]
        out.append(total / min(i + 1, k))
    return out


def plot_loss(records: list[dict], path: str | Path, title: str = "") -> None:
    """Training loss (thin, with a running mean) and evaluated train/val loss (markers)."""
    plt = pyplot()
    steps = [r["step"] for r in records if "loss" in r]
    losses = [r["loss"] for r in records if "loss" in r]
    evals = [r for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    if steps:
        ax.plot(steps, losses, lw=0.6, alpha=0.35, color="C0", label="batch loss")
        k = max(1, len(losses) // 50)
        if k > 1:
            ax.plot(steps, running_mean(losses, k), lw=1.2, color="C0", label=f"batch loss, mean of {k}")
    if evals:
        es = [r["step"] for r in evals]
        ax.plot(es, [r["train_loss"] for r in evals], "o-", ms=3, color="C1", label="train (eval)")
        ax.plot(es, [r["val_loss"] for r in evals], "s-", ms=3, color="C2", label="val (eval)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/char)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig, path: str | Path) -> None:
    """Write a matplotlib figure as PNG atomically and close it."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
