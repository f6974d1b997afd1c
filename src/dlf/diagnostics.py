"""Health checks of a deep tanh network (makemore part 3): activation and gradient
statistics per layer, gradient:data and update:data ratios per weight, and their plots.

One *measurement* is a training-mode forward and backward pass on a fixed batch. It
leaves the model as it found it: BatchNorm running statistics, train/eval mode and
parameter gradients are restored afterwards, and no weight changes.

Figures (PNG, written atomically):

- ``activations.png``       histogram of every Tanh output, legend: mean, std, saturated %
- ``activation_grads.png``  histogram of the gradient at every Tanh output
- ``weight_grads.png``      histogram of the gradient of every 2-D weight, legend: grad:data
- ``update_ratio.png``      log10(update std / weight std) per 2-D weight over steps, with
                            the 1e-3 guide line (-3): far below it learns too slowly, far
                            above it changes too fast
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
from pathlib import Path

import torch

from dlf.engine.checkpoint import read_checkpoint
from dlf.engine.rundir import (
    ACTIVATION_GRADS_PNG,
    ACTIVATIONS_PNG,
    ATTENTION_PNG,
    DIAGNOSTICS_JSON,
    UPDATE_RATIO_PNG,
    WEIGHT_GRADS_PNG,
)
from dlf.engine.tensor_io import write_json
from dlf.errors import DlfError
from dlf.nn import Tanh
from dlf.plots import draw_update_ratios, plot_histograms

__all__ = [
    "ACTIVATIONS_PNG",
    "ACTIVATION_GRADS_PNG",
    "ATTENTION_PNG",
    "DIAGNOSTICS_JSON",
    "SATURATION",
    "UPDATE_RATIO_PNG",
    "WEIGHT_GRADS_PNG",
    "DiagnosticsCallback",
    "UpdateRatioTracker",
    "activation_stats",
    "attention_figure",
    "diagnosable",
    "diagnose_run",
    "fixed_batch",
    "gradient_stats",
    "measure",
    "plot_activation_grads",
    "plot_activations",
    "plot_update_ratios",
    "plot_weight_grads",
    "tanh_layers",
    "train_with_diagnostics",
    "weight_grad_stats",
]

SATURATION = 0.97  # |tanh| above this: the unit passes almost no gradient (1 - t^2 < 0.06)
UPDATE_RATIO_GUIDE = -3.0  # log10(1e-3), the lecture's rule of thumb


# ------------------------------------------------------------------------------ statistics


def tanh_layers(model) -> list[tuple[str, Tanh]]:
    """(dotted name, layer) of every Tanh in the model, in forward order."""
    named = getattr(model, "named_modules", None)
    found = [(n, m) for n, m in named() if isinstance(m, Tanh)] if callable(named) else []
    if not found:
        kind = getattr(getattr(model, "config", None), "type", type(model).__name__)
        raise DlfError(f"diagnostics need a model with tanh layers; a {kind} model has none")
    return found


def record_activations(model, grads: bool = False, on: bool = True) -> None:
    """Make every Tanh layer keep its next outputs (``layer.out``) and, with ``grads``,
    their gradients -- what the statistics and plots below read. ``on=False`` stops it."""
    for _, layer in tanh_layers(model):
        layer.record_out = on
        layer.retain_out_grad = on and grads
        if not on:
            vars(layer).pop("out", None)


def _recorded(layer: Tanh, name: str) -> torch.Tensor:
    out = getattr(layer, "out", None)
    if out is None:
        raise DlfError(f"tanh layer {name} has no recorded output: call "
                       "record_activations(model), then run a forward pass")
    return out


def activation_stats(model) -> list[dict]:
    """Per Tanh layer, from its last output ``layer.out``: index (position among the tanh
    layers), name, mean, std and ``saturated`` (share of |t| > 0.97, in [0, 1])."""
    rows = []
    for i, (name, layer) in enumerate(tanh_layers(model)):
        t = _recorded(layer, name).detach().float()
        rows.append({"index": i, "name": name, "mean": t.mean().item(), "std": t.std().item(),
                     "saturated": (t.abs() > SATURATION).float().mean().item()})
    return rows


def gradient_stats(model) -> list[dict]:
    """Per Tanh layer, from ``layer.out.grad`` (set ``retain_out_grad = True`` before the
    forward pass, then backward): index, name, mean, std."""
    rows = []
    for i, (name, layer) in enumerate(tanh_layers(model)):
        out = _recorded(layer, name)
        g = out.grad if (out.is_leaf or out.retains_grad) else None
        if g is None:
            raise DlfError(f"tanh layer {name} kept no output gradient: call "
                           "record_activations(model, grads=True) before the forward pass "
                           "(it sets retain_out_grad), then backward")
        g = g.float()
        rows.append({"index": i, "name": name, "mean": g.mean().item(), "std": g.std().item()})
    return rows


def _weights(model) -> list[tuple[str, torch.Tensor]]:
    # 2-D parameters only: embedding tables and Linear weights (biases and BatchNorm
    # gains are 1-D and behave differently; the lecture leaves them out too)
    return [(n, p) for n, p in model.named_parameters() if p.ndim == 2]


def weight_grad_stats(model) -> list[dict]:
    """Per 2-D weight with a gradient: name, shape, gradient mean and std, and
    ``grad_data_ratio`` = grad.std() / weight.std()."""
    rows = []
    for name, p in _weights(model):
        if p.grad is None:
            continue
        g = p.grad.float()
        rows.append({"name": name, "shape": list(p.shape), "mean": g.mean().item(),
                     "std": g.std().item(),
                     "grad_data_ratio": (g.std() / p.detach().float().std()).item()})
    return rows


# ------------------------------------------------------------------------------ measuring


def fixed_batch(dataset, batch_size: int, seed: int = 0):
    """The same (x, y) batch every time for a given dataset, size and seed."""
    return dataset.batch(batch_size, torch.Generator().manual_seed(seed))


_LAYER_STATE = ("retain_out_grad", "record_out", "out")


@contextlib.contextmanager
def _untouched(model, tanhs):
    """Restore mode, buffers (BatchNorm running stats), gradients and the tanh layers'
    recording flags and recorded outputs on exit."""
    was_training = model.training
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    grads = [(p, p.grad) for p in model.parameters()]
    saved = [(layer, {k: vars(layer)[k] for k in _LAYER_STATE if k in vars(layer)})
             for _, layer in tanhs]
    try:
        yield
    finally:
        model.train(was_training)
        with torch.no_grad():
            for b, before in buffers:
                b.copy_(before)
        for p, g in grads:
            p.grad = g
        for layer, state in saved:
            for k in _LAYER_STATE:
                vars(layer).pop(k, None)
            vars(layer).update(state)


def measure(model, x: torch.Tensor, y: torch.Tensor, plot_dir: str | Path | None = None) -> dict:
    """One training-mode forward/backward on (x, y); returns the loss and every statistic.

    With ``plot_dir``, also writes activations.png, activation_grads.png and
    weight_grads.png there. The model is left as it was (see the module docstring)."""
    tanhs = tanh_layers(model)
    device = model.parameters()[0].device
    with _untouched(model, tanhs):
        model.train()
        for _, layer in tanhs:
            layer.retain_out_grad = True
            layer.record_out = True
        for p in model.parameters():
            p.grad = None
        _, loss = model(x.to(device), y.to(device))
        loss.backward()
        stats = {"loss": loss.item(), "batch_size": len(y),
                 "activations": activation_stats(model), "activation_grads": gradient_stats(model),
                 "weight_grads": weight_grad_stats(model)}
        if plot_dir is not None:
            plot_dir = Path(plot_dir)
            plot_activations(model, plot_dir / ACTIVATIONS_PNG)
            plot_activation_grads(model, plot_dir / ACTIVATION_GRADS_PNG)
            plot_weight_grads(model, plot_dir / WEIGHT_GRADS_PNG)
    return stats


class UpdateRatioTracker:
    """Trainer callback: how big each optimizer step is relative to the weights.

    For every 2-D weight W and step t it records

        log10( std(W_t - W_{t-1}) / std(W_t) )

    where W_t is the weight after step t. ``W_t - W_{t-1}`` is the update the optimizer
    actually applied (``-lr * grad`` for plain SGD; with momentum, weight decay, AdamW or
    clipping it is whatever they produced), so the figure is exact for any optimizer. It
    needs the previous step's weights: call ``snapshot(model)`` before training, or the
    first call only takes the snapshot. ``every = k`` records steps k, 2k, ... and only
    copies weights on the step before each of those."""

    def __init__(self, every: int = 1):
        if every < 1:
            raise DlfError(f"update-ratio interval must be >= 1, got {every}")
        self.every = every
        self.steps: list[int] = []
        self.ratios: dict[str, list[float]] = {}  # weight name -> log10 ratio per step
        self.shapes: dict[str, list[int]] = {}
        self._prev: dict[str, torch.Tensor] | None = None
        self._prev_step: int | None = None

    def snapshot(self, model, step: int = 0) -> None:
        """Remember the model's weights as those after ``step``."""
        self.start({n: p.detach().clone() for n, p in _weights(model)}, step)

    def start(self, weights: dict[str, torch.Tensor], step: int) -> None:
        """Remember ``weights`` (name -> tensor, e.g. from a checkpoint) as those after
        ``step``; names that are not 2-D model weights are ignored."""
        self._prev = dict(weights)
        self._prev_step = step

    def __call__(self, step: int, state, model) -> None:
        """As a training callback (dlf.engine.loop): the step just taken."""
        self.update(model, step)

    @torch.no_grad()
    def update(self, model, step: int) -> None:
        """Record the step that just happened (if the previous weights are known)."""
        if self._prev is not None and self._prev_step == step - 1:
            self.steps.append(step)
            for name, p in _weights(model):
                w = p.detach().float()
                ratio = ((w - self._prev[name].float()).std() / w.std()).item()
                self.ratios.setdefault(name, []).append(
                    math.log10(ratio) if ratio > 0 else -math.inf)
                self.shapes[name] = list(p.shape)
        self._prev = None
        if (step + 1) % self.every == 0:
            self.snapshot(model, step)

    def summary(self) -> list[dict]:
        """Per weight: shape, and the mean log10 ratio over the last half of the record."""
        rows = []
        for name, values in self.ratios.items():
            tail = [v for v in values[len(values) // 2:] if math.isfinite(v)]
            rows.append({"name": name, "shape": self.shapes[name],
                         "mean_log10_update_ratio": sum(tail) / len(tail) if tail else None})
        return rows

    def to_dict(self) -> dict:
        clean = {n: [v if math.isfinite(v) else None for v in vs] for n, vs in self.ratios.items()}
        return {"steps": self.steps, "log10_update_ratio": clean, "summary": self.summary()}


# ------------------------------------------------------------------------------ plots


def plot_activations(model, path: str | Path) -> None:
    """Histogram of each Tanh layer's last output; legend: mean, std, saturated share."""
    layers = tanh_layers(model)
    stats = activation_stats(model)
    series = [(_recorded(layer, name), (f"{name}: mean {s['mean']:+.2f}, std {s['std']:.2f}, "
                                        f"saturated {100 * s['saturated']:.1f}%"))
              for (name, layer), s in zip(layers, stats, strict=True)]
    plot_histograms(series, f"activation distribution (tanh outputs; saturated: |t| > "
                      f"{SATURATION})", "tanh output", path)


def plot_activation_grads(model, path: str | Path) -> None:
    """Histogram of the gradient at each Tanh output (needs retain_out_grad + backward)."""
    layers = tanh_layers(model)
    stats = gradient_stats(model)
    series = [(_recorded(layer, name).grad, f"{name}: mean {s['mean']:+.2e}, std {s['std']:.2e}")
              for (name, layer), s in zip(layers, stats, strict=True)]
    plot_histograms(series, "gradient distribution at the tanh outputs",
                      "d loss / d tanh output", path)


def plot_weight_grads(model, path: str | Path) -> None:
    """Histogram of each 2-D weight's gradient; legend: shape, std, grad:data ratio."""
    named = dict(_weights(model))
    series = [(named[s["name"]].grad, (f"{s['name']} {tuple(s['shape'])}: std {s['std']:.2e}, "
                                       f"grad:data {s['grad_data_ratio']:.2e}"))
              for s in weight_grad_stats(model)]
    if not series:
        raise DlfError("no 2-D weight has a gradient: run backward first")
    plot_histograms(series, "weight gradient distribution", "gradient", path)


def plot_update_ratios(tracker: UpdateRatioTracker, path: str | Path) -> None:
    """log10(update std / weight std) per 2-D weight over steps, with the 1e-3 guide."""
    if not tracker.steps:
        raise DlfError("no update ratios recorded: train at least two steps")
    labels = {name: f"{name} {tuple(tracker.shapes[name])}" for name in tracker.ratios}
    draw_update_ratios(tracker.steps, tracker.ratios, labels, UPDATE_RATIO_GUIDE, path)


# ------------------------------------------------------------------------------ runs


# Full-batch runs (batch_size 0) are measured on a large ordinary batch instead.
FULL_BATCH_MEASURE = 512


def _measure_batch_size(train_cfg, batch_size: int | None) -> int:
    if batch_size is not None:
        if batch_size < 1:
            raise DlfError(f"--batch-size must be >= 1, got {batch_size}")
        return batch_size
    return train_cfg.batch_size or FULL_BATCH_MEASURE


class DiagnosticsCallback:
    """Training callback for a run with diagnostics: records update ratios every step and,
    after step `last`, measures the model on a fixed batch of `dataset` and writes all
    four figures and ``diagnostics.json`` into the run directory `out`."""

    def __init__(self, dataset, out: Path, last: int, batch_size: int, seed: int = 0,
                 every: int = 1):
        self.tracker = UpdateRatioTracker(every)
        self.dataset, self.out, self.last = dataset, Path(out), last
        self.batch_size, self.seed = batch_size, seed
        self.files: list[Path] = []

    def __call__(self, step: int, state, model) -> None:
        self.tracker.update(model, step)
        if step == self.last:
            self.files = self.finish(model)

    def finish(self, model) -> list[Path]:
        out = self.out
        x, y = fixed_batch(self.dataset, self.batch_size, self.seed)
        stats = measure(model, x, y, plot_dir=out)
        files = [out / ACTIVATIONS_PNG, out / ACTIVATION_GRADS_PNG, out / WEIGHT_GRADS_PNG]
        if self.tracker.steps:
            plot_update_ratios(self.tracker, out / UPDATE_RATIO_PNG)
            files.append(out / UPDATE_RATIO_PNG)
        write_json(out / DIAGNOSTICS_JSON, {"step": self.last, "weights": "last step",
                                            "seed": self.seed, **stats,
                                            "update_ratio": self.tracker.to_dict()})
        return [*files, out / DIAGNOSTICS_JSON]


def diagnosable(plan, model) -> None:
    """What --diagnostics refuses, before anything is written: several processes (it
    records one process's gradients) and a model without tanh layers."""
    if plan.world.size > 1:
        raise DlfError("--diagnostics records one process's gradients: run it in one process "
                       "(without --nproc or torchrun)")
    tanh_layers(model)


def train_with_diagnostics(cfg, out_dir: str | Path, **trainer_kwargs) -> dict:
    """Train like ``Trainer(cfg, out_dir, **trainer_kwargs).fit()`` and also write the
    diagnostics figures and diagnostics.json (see DiagnosticsCallback). Returns the
    trainer's result dict with ``diagnostics_files`` added."""
    from dlf.engine.trainer import Trainer

    trainer = Trainer(cfg, out_dir, checks=(diagnosable,), **trainer_kwargs)
    t = trainer.cfg.train
    callback = DiagnosticsCallback(trainer.data.train, trainer.out, t.max_steps,
                                   _measure_batch_size(t, None))
    if not trainer.resume:
        callback.tracker.snapshot(trainer.model)  # the initial weights: step 1 is recorded
    trainer.callback = callback
    result = trainer.fit()
    result["diagnostics_files"] = [str(p) for p in callback.files]
    return result


def _continue_copy(run_dir: Path, steps: int) -> UpdateRatioTracker:
    """Resume a scratch copy of the run's last checkpoint (weights, optimizer moments,
    RNG, schedule position) for ``steps`` steps and record the update ratios."""
    from dlf import presets
    from dlf.engine.trainer import Trainer

    tracker = UpdateRatioTracker()
    with tempfile.TemporaryDirectory(prefix="dlf-diagnose-") as tmp:
        scratch = Path(tmp)
        for name in ("config.toml", "tokenizer.json", "model.safetensors", "state.safetensors"):
            if not (run_dir / name).exists():
                raise DlfError(f"{run_dir} has no {name}; cannot continue it to measure updates")
            shutil.copy2(run_dir / name, scratch / name)
        cfg = presets.load_toml(scratch / "config.toml")
        checkpoint = read_checkpoint(scratch, cfg.model.type)
        start = checkpoint.state.step
        # the checkpoint's weights are those before the first continued step
        tracker.start({k: v for k, v in checkpoint.weights().items() if v.ndim == 2}, start)
        t = cfg.train
        t.max_steps = start + steps
        t.eval_interval = t.max_steps
        t.log_interval = t.max_steps
        t.num_samples = 0
        Trainer(cfg, scratch, resume=True, progress=False, callback=tracker).fit()
    return tracker


def diagnose_run(run_dir: str | Path, steps: int = 200, *, batch_size: int | None = None,
                 seed: int = 0, device: str = "auto") -> list[Path]:
    """Write the diagnostics of a trained run into its directory; returns the written paths.

    The first three figures measure the best weights (model.safetensors) on one fixed-seed
    training batch (``batch_size``: the run's, or FULL_BATCH_MEASURE for full-batch runs). For
    update_ratio.png a scratch copy of the last checkpoint (state.safetensors, with its
    optimizer state and schedule) trains ``steps`` more steps in a temporary directory;
    ``steps = 0`` skips it. Only the PNGs and diagnostics.json are written to ``run_dir``.
    (A cosine schedule is stretched to the longer total, so its lr differs slightly.)"""
    from dlf.engine.rundata import prepare_data
    from dlf.engine.saved import load_run

    if steps < 0:
        raise DlfError(f"steps must be >= 0, got {steps}")
    run = load_run(run_dir, device=device)
    tanh_layers(run.model)
    data = prepare_data(run.config, tokenizer=run.tokenizer)
    bs = _measure_batch_size(run.config.train, batch_size)
    x, y = fixed_batch(data.train, bs, seed)
    out = run.path
    stats = measure(run.model, x, y, plot_dir=out)
    files = [out / ACTIVATIONS_PNG, out / ACTIVATION_GRADS_PNG, out / WEIGHT_GRADS_PNG]
    report = {"weights": "model.safetensors (best validation)", "seed": seed, **stats}
    if steps > 0:
        tracker = _continue_copy(out, steps)
        plot_update_ratios(tracker, out / UPDATE_RATIO_PNG)
        files.append(out / UPDATE_RATIO_PNG)
        report["update_ratio"] = {"source": f"state.safetensors continued for {steps} steps",
                                  **tracker.to_dict()}
    write_json(out / DIAGNOSTICS_JSON, report)
    return [*files, out / DIAGNOSTICS_JSON]


# ------------------------------------------------------------------------------ attention




def attention_figure(run_dir: str | Path, prompt: str, layer: int | None = None,
                     out: str | Path | None = None, device: str = "auto") -> Path:
    """Draw every head's attention probabilities for `prompt` (one row per layer, or only
    `layer`) from a Transformer run's best weights; writes `out` (default
    RUN/attention.png) and returns its path."""
    from dlf.engine.saved import load_run
    from dlf.plots import plot_attention

    run = load_run(run_dir, device=device)
    if run.config.model.type != "transformer":
        raise DlfError(f"attention maps need a transformer run; {run.path} holds a "
                       f"{run.config.model.type} model")
    if not prompt:
        raise DlfError("--prompt is empty: give the text whose attention to draw")
    ids = run.tokenizer.encode(prompt)  # a DlfError names an unknown character
    if len(ids) > run.model.block_size:
        raise DlfError(f"the prompt has {len(ids)} tokens; the model sees at most "
                       f"{run.model.block_size}")
    n_layer = run.config.model.n_layer
    if layer is not None and not 0 <= layer < n_layer:
        raise DlfError(f"--layer {layer} is out of range: the model has layers 0..{n_layer - 1}")
    idx = torch.tensor([ids], dtype=torch.long, device=run.device)  # (1, T)
    maps = [m[0] for m in run.model.attention_maps(idx)]  # per layer (nh, T, T)
    layers = list(range(n_layer)) if layer is None else [layer]
    path = Path(out) if out is not None else run.path / ATTENTION_PNG
    labels = [run.tokenizer.decode([i]) for i in ids]  # one per token: a character, or BPE's
    plot_attention([maps[i] for i in layers], labels, path, layers=layers,
                   title=f"attention for {prompt!r} ({run.path.name})")
    return path
