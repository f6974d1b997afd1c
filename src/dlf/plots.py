"""Every figure dlf draws: run loss curves, bigram tables, diagnostics histograms and
update ratios, experiment and report comparisons.

Figures are data in, PNG out (written atomically); nothing here trains or reads a run.
Every figure is its own matplotlib Figure (the object API, see `subplots`): drawing one
never switches the backend or touches pyplot's figures. matplotlib is imported late, so
`dlf --help` stays fast.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import torch

from dlf.fileio import atomic_write_bytes


def subplots(*grid, figsize, dpi, **kw):
    """A figure of its own and its axes, through matplotlib's object API: no pyplot, no
    global figure list and no backend switch, so a notebook's own figures are untouched.
    Imported late: `dlf --help` stays fast."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)  # draws to PNG
    return fig, fig.subplots(*grid, **kw)


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
    """Training loss (thin, with a running mean) and evaluated train/val loss (markers), in
    nats per token."""
    steps = [r["step"] for r in records if "loss" in r]
    losses = [r["loss"] for r in records if "loss" in r]
    evals = [r for r in records if "val_loss" in r]
    fig, ax = subplots(figsize=(8, 4.5), dpi=100)
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
    ax.set_ylabel("loss (nats per token: a character, or a BPE token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    # fixed margins that fit these labels: tight_layout would draw the figure once more
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.11, top=0.93)
    save_figure(fig, path)


def save_figure(fig, path: str | Path) -> None:
    """Write a matplotlib figure as PNG atomically and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())

def _labels(tokenizer) -> list[str]:
    return [repr(c)[1:-1] if c.isprintable() else repr(c) for c in tokenizer.itos]


def plot_counts(counts: torch.Tensor, tokenizer, path: Path) -> None:
    """The makemore picture: every cell shows its character pair and count."""

    N = counts.cpu().long()
    V = N.size(0)
    labels = _labels(tokenizer)
    size = max(6, 0.6 * V)
    fig, ax = subplots(figsize=(size, size), dpi=80)
    shade = N.float().log1p()
    ax.imshow(shade.numpy(), cmap="Blues")
    fs = max(4, min(8, 200 // max(V, 1)))
    dark = float(shade.max()) * 0.6  # above this the cell is dark: write in white
    for i in range(V):
        for j in range(V):
            color = "white" if shade[i, j] > dark else "black"
            ax.text(j, i, labels[i] + labels[j], ha="center", va="bottom", color=color, fontsize=fs)
            ax.text(j, i, str(N[i, j].item()), ha="center", va="top", color=color, fontsize=fs)
    ax.set_xlabel("next character")
    ax.set_ylabel("previous character")
    ax.set_title("bigram counts (train split)")
    ax.set_xticks([])
    ax.set_yticks([])
    # fixed margins: tight_layout would measure each of the 2 V^2 texts once more
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.04, top=0.96)
    save_figure(fig, path)


def plot_prob_tables(P: torch.Tensor, Q: torch.Tensor, tokenizer, path: Path) -> None:
    """Count-model probabilities beside the network's softmax(W), same colour scale."""

    labels = _labels(tokenizer)
    V = P.size(0)
    fig, axes = subplots(1, 2, figsize=(14, 7), dpi=80)
    vmax = float(max(P.max(), Q.max()))
    for ax, M, title in ((axes[0], P, "counts: P(next | prev)"),
                         (axes[1], Q, "network: softmax(W)[prev]")):
        im = ax.imshow(M.numpy(), cmap="viridis", vmin=0, vmax=vmax)
        ax.set_title(title)
        ax.set_xticks(range(V), labels, fontsize=7)
        ax.set_yticks(range(V), labels, fontsize=7)
        ax.set_xlabel("next")
        ax.set_ylabel("previous")
    fig.colorbar(im, ax=axes, shrink=0.7)
    save_figure(fig, path)


def plot_histograms(series, title: str, xlabel: str, path: str | Path) -> None:
    """series: (tensor, legend label) pairs drawn as density curves on one axis."""
    fig, ax = subplots(figsize=(10, 4.5), dpi=100)
    for t, label in series:
        t = t.detach().float().cpu().flatten()
        lo, hi = t.min().item(), t.max().item()
        if hi <= lo:  # a constant tensor: widen the range so the histogram exists
            lo, hi = lo - 1e-8, hi + 1e-8
        bins = int(min(100, max(10, math.sqrt(t.numel()))))  # fewer bins for small samples
        hy, hx = torch.histogram(t, bins=bins, range=(lo, hi), density=True)
        centres = (hx[:-1] + hx[1:]) / 2
        ax.plot(centres.numpy(), hy.numpy(), label=label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)



def draw_update_ratios(steps: list[int], ratios: dict[str, list[float]], labels: dict[str, str],
                       guide: float, path: str | Path) -> None:
    """log10(update std / weight std) per weight over steps, with a horizontal guide."""
    fig, ax = subplots(figsize=(10, 4.5), dpi=100)
    for name, values in ratios.items():
        ax.plot(steps, values, lw=0.8, label=labels[name])
    ax.axhline(guide, color="k", ls="--", lw=1, label=f"1e{guide:g} guide")
    ax.set_title("update : data ratio per step")
    ax.set_xlabel("step")
    ax.set_ylabel("log10(update std / weight std)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)



def plot_loss_curves(curves: dict[str, list[tuple[int, float]]], path: Path, title: str,
                     log_axis: bool = False) -> int:
    """One line per variant: training batch loss, running mean. Returns the window."""
    from matplotlib.ticker import FuncFormatter


    n = max((len(c) for c in curves.values()), default=1)
    k = max(1, n // 40)
    fig, ax = subplots(figsize=(8, 4.5), dpi=100)
    for label, pts in curves.items():
        if pts:
            ax.plot([s for s, _ in pts], running_mean([v for _, v in pts], k), lw=1.2, label=label)
    if log_axis:
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (nats/char" + (", log scale)" if log_axis else ")"))
    ax.set_title(f"{title} (running mean of {k} logged steps)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    return k


def plot_names_curves(runs: dict[str, list[dict]], path: Path) -> None:
    """Training loss (running mean) and validation loss of every names model, per step.

    runs: label -> the run's metrics.jsonl records."""
    fig, ax = subplots(figsize=(8, 4.5), dpi=100)
    for label, recs in runs.items():
        batch = [(r["step"], r["loss"]) for r in recs if "loss" in r]
        evals = [(r["step"], r["val_loss"]) for r in recs if "val_loss" in r]
        if batch:
            k = max(1, len(batch) // 40)
            xs = [s for s, _ in batch][k - 1:]
            ys = running_mean([v for _, v in batch], k)[k - 1:]  # full windows only
            line, = ax.plot(xs, ys, lw=1.2, label=f"{label} (train, mean of {k})")
            ax.plot([s for s, _ in evals], [v for _, v in evals], "o", ms=3, color=line.get_color())
        elif evals:
            ax.axhline(evals[-1][1], ls="--", lw=1, label=f"{label} (fitted, val)")
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("step (log scale)")
    ax.set_ylabel("loss (nats/char)")
    ax.set_ylim(top=3.5)
    ax.set_title("names models: training loss (lines) and validation loss (dots)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


# ------------------------------------------------------------------------------ notebooks


class PNG:
    """A drawn figure's PNG bytes; Jupyter shows it inline (through `_repr_png_`)."""

    def __init__(self, data: bytes):
        self.data = data

    def _repr_png_(self) -> bytes:
        return self.data

    def __repr__(self) -> str:
        return f"<PNG image, {len(self.data):,} bytes>"

    def save(self, path: str | Path) -> None:
        atomic_write_bytes(path, self.data)


def show(draw, *args, **kwargs) -> PNG:
    """Call any figure function of dlf (which writes a PNG to its `path` argument) and
    return the image instead, to show in a notebook: `show(plot_counts, N, tokenizer)`."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dlf-show-") as tmp:
        path = Path(tmp) / "figure.png"
        draw(*args, path=path, **kwargs)
        return PNG(path.read_bytes())


def plot_attention(maps: list[torch.Tensor], tokens: list[str], path: str | Path,
                   layers: list[int] | None = None, title: str = "") -> None:
    """A grid of attention patterns: one row per layer, one column per head.

    maps: per layer, (n_head, T, T) probabilities (row t: how much position t attends to
    each position <= t); tokens: the T characters; layers: the row labels (default 0..)."""
    n_rows, n_head = len(maps), maps[0].shape[0]
    T = len(tokens)
    layers = list(range(n_rows)) if layers is None else layers
    cell = max(2.0, min(4.0, 0.18 * T))
    fig, axes = subplots(n_rows, n_head, figsize=(cell * n_head, cell * n_rows + 0.6),
                             dpi=80, squeeze=False)
    labels = [repr(c)[1:-1] if c.isprintable() else repr(c) for c in tokens]
    fs = max(5, min(9, 240 // max(T, 1)))
    for r, (m, layer) in enumerate(zip(maps, layers, strict=True)):
        for h in range(n_head):
            ax = axes[r][h]
            ax.imshow(m[h].detach().float().cpu().numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_title(f"layer {layer}, head {h}", fontsize=9)
            ax.set_xticks(range(T), labels, fontsize=fs)
            ax.set_yticks(range(T), labels, fontsize=fs)
            if r == n_rows - 1:  # lower rows would run into the titles below them
                ax.set_xlabel("attends to (key position)", fontsize=8)
            if h == 0:
                ax.set_ylabel("query position", fontsize=8)
    fig.suptitle(title or "attention probabilities per head (rows sum to 1)")
    fig.tight_layout()
    save_figure(fig, path)


def plot_zoo(rows: list[dict], curves: dict[str, list[dict]], path: Path,
             seconds: float) -> None:
    """Two panels: test loss vs parameter count; training loss (running mean) vs
    training seconds, with each model's test loss as a dot where its training ended.

    rows: one result per model (variant, label, num_parameters, test_loss,
    train_seconds); curves: variant -> its metrics.jsonl records."""
    fig, (ax1, ax2) = subplots(1, 2, figsize=(12, 4.8), dpi=100)
    import matplotlib

    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, r in enumerate(rows):
        c = colors[i % len(colors)]
        ax1.scatter(r["num_parameters"], r["test_loss"], color=c, s=30)
        ax1.annotate(r["label"], (r["num_parameters"], r["test_loss"]), fontsize=8,
                     xytext=(4, 4), textcoords="offset points")
        recs = curves[r["variant"]]
        pts = [(rec["train_seconds"], rec["loss"]) for rec in recs
               if "loss" in rec and "train_seconds" in rec]
        if pts:
            k = max(1, len(pts) // 40)
            ax2.plot([t for t, _ in pts], running_mean([v for _, v in pts], k), lw=1.1,
                     color=c, label=f"{r['label']} (train, mean of {k})")
        ax2.plot([r["train_seconds"]], [r["test_loss"]], "o", ms=5, color=c,
                 **({} if pts else {"label": f"{r['label']} (test)"}))
    ax1.set_xscale("log")
    ax1.set_xlabel("parameters (log scale)")
    ax1.set_ylabel("test loss (nats/char)")
    ax1.set_title("test loss vs model size")
    ax2.set_xlabel("training time (s, optimizer steps only)")
    ax2.set_ylabel("loss (nats/char)")
    ax2.set_ylim(top=3.0)
    ax2.set_title(f"loss vs training time (budget {seconds:g} s; dots: test loss)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3, which="both")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def plot_val_vs_seconds(curves: dict[str, list[list[tuple[float, float]]]], path: Path,
                        target: float, title: str,
                        xlabel: str = "training time (s, optimizer steps only)") -> None:
    """Validation loss against seconds: one colour per variant, one line per seed, and
    the target as a dashed line. curves: label -> per seed, (seconds, val)."""
    import matplotlib

    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = subplots(figsize=(9, 5), dpi=100)
    for i, (label, runs) in enumerate(curves.items()):
        style = {"color": colors[i % len(colors)], "ls": "-" if i < len(colors) else "--"}
        for j, pts in enumerate(runs):
            ax.plot([s for s, _ in pts], [v for _, v in pts], lw=1.0, alpha=0.8,
                    label=label if j == 0 else None, **style)
    ax.axhline(target, color="0.3", ls=":", lw=1.0, label=f"val {target:g}")
    vals = [v for runs in curves.values() for pts in runs for _, v in pts]
    ends = [pts[-1][1] for runs in curves.values() for pts in runs if pts]
    if vals:  # from the best value to a little above the target or every run's end
        ax.set_ylim(min(*vals, target) - 0.05, max(target + 0.6, *(e + 0.1 for e in ends)))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("val loss (nats/char)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_figure(fig, path)
