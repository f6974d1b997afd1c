"""Controlled experiments: train variants that differ in one design choice, side by side.

``run_experiment(name, out_dir)`` writes into ``out_dir``:

- ``<variant>/``       one ordinary run directory per variant (the Trainer's files)
- ``results.json``     settings, one row of figures per variant, the interpretation
- ``results.md``       the same as a markdown table with an interpretation line under it
- ``loss_curves.png``  every variant's training loss (running mean) on one plot

Experiments:

- ``mlp-init``: the lecture-3 deep MLP (5 x [Linear -> Tanh], n_hidden 100) with naive
  N(0, 1) init, with Kaiming init, and with Kaiming init + BatchNorm. Bad init starts at
  a huge loss with saturated tanh units; the fixes start near ln(vocab).
- ``wavenet-vs-flat``: the hierarchical WaveNet against a one-hidden-layer MLP that sees
  the same 8 characters with about the same number of parameters.
- ``names-zoo``: every names model (count bigram, MLP, WaveNet, BoW, RNN, GRU,
  Transformer) from its preset, each trained for the same wall-clock budget on one
  thread; ``zoo.png`` plots test loss against parameter count and the training loss
  against training time.
- ``gpt-recipe``: the ``shakespeare-transformer-cpu-gpt2`` Transformer on Shakespeare as it is,
  with each later design choice alone (RoPE, RMSNorm, QK-norm, squared ReLU, a tied head,
  Muon, the WSD schedule) and with all of them, each for the same training seconds and
  several seeds; ``val_seconds.png`` plots validation loss against training seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

from dlf import config as C
from dlf import presets
from dlf.diagnostics import fixed_batch, measure
from dlf.engine.clock import Clock
from dlf.engine.device import machine
from dlf.engine.evaluate import evaluate
from dlf.engine.metrics import MetricsLog
from dlf.engine.plan import regime_of
from dlf.engine.state import TrainState
from dlf.engine.tensor_io import write_json
from dlf.engine.trainer import Trainer, train
from dlf.errors import DlfError
from dlf.fileio import atomic_write_text
from dlf.models import build_model
from dlf.models.mlp import MLPConfig
from dlf.models.wavenet import WaveNetConfig
from dlf.plots import plot_loss_curves, plot_val_vs_seconds, plot_zoo
from dlf.tables import markdown_table

__all__ = ["EXPERIMENTS", "Experiment", "flat_mlp_matching", "run_experiment"]

QUICK_STEPS = 100
MEASURE_BATCH = 512  # the fixed batch that initial loss and saturation are measured on
MEASURE_SEED = 0


@dataclass(frozen=True)
class Options:
    """How one experiment runs: where, on what data, for how long, and how it shows."""

    name: str
    out: Path  # the experiment's directory; each variant is a run directory inside it
    data: str  # a dataset name or a path
    steps: int  # steps per variant (a budget of seconds, where there is one, may end it first)
    quick: bool = False  # a smoke run: tiny budgets, not the figures
    progress: bool = False  # progress bars
    force: bool = False  # replace the variants' existing runs


class Outcome(NamedTuple):
    """What an experiment found: a row per variant, the computed interpretation, the
    results table (header first) and the settings it ran with."""

    rows: list[dict]
    text: str
    table: list[list[str]]
    settings: dict


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    full_steps: int  # steps per variant in a full run
    run: Callable[[Options], Outcome]
    log_loss_axis: bool = False  # for losses that span an order of magnitude
    figure: str = "loss_curves.png"  # the figure a report shows
    dataset: str = "names"  # what it trains on unless given other data


def _train_cfg(steps: int, *, log_every: int = 1, **kw) -> C.TrainConfig:
    # One evaluation, at the end: the best weights are the final ones.
    # One thread: steps of these small models (batch 32) are too small to gain from a
    # second core, and one thread gives every variant the same compute.
    return C.TrainConfig(max_steps=steps, eval_interval=steps, log_interval=log_every,
                         num_samples=10, threads=1, **kw)


def _run_cfg(name: str, variant: str, data: str, model, train: C.TrainConfig) -> C.RunConfig:
    return C.RunConfig(name=f"{name}/{variant}", description=f"experiment {name}: {variant}",
                       data=C.DataConfig(dataset=data), model=model, train=train)


class _Seconds:
    """Training callback: the run's training seconds (TrainState.train_seconds, what its
    Clock measured) after each step."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}

    def __call__(self, step: int, state: TrainState, model) -> None:
        self.at[step] = state.train_seconds

    def steps_per_second(self) -> float | None:
        """Steps per second of optimizer-step time after the first step (which also
        allocates and warms up)."""
        if len(self.at) < 2:
            return None
        (a, ta), (b, tb) = min(self.at.items()), max(self.at.items())
        return (b - a) / (tb - ta) if tb > ta else None


def _train(cfg: C.RunConfig, out: Path, opt: Options, measure_saturation: bool = False) -> dict:
    """Train one variant; returns its result dict plus measured extras."""
    if regime_of(cfg.model.type) == "fitted":  # counted in one pass
        result = train(cfg, out, force=opt.force)
        return {**result, "train_steps_per_second": None, "vocab_size": None}
    timer = _Seconds()
    trainer = Trainer(cfg, out, progress=opt.progress, force=opt.force, callback=timer)
    extra: dict = {}
    if measure_saturation:
        x, y = fixed_batch(trainer.data.train, MEASURE_BATCH, MEASURE_SEED)
        at_init = measure(trainer.model, x, y)
        extra["initial_loss"] = at_init["loss"]
        extra["saturated_init"] = [a["saturated"] for a in at_init["activations"]]
    result = trainer.fit()
    if measure_saturation:  # the model now holds the final (best = last) weights
        extra["saturated_end"] = [a["saturated"] for a in measure(trainer.model, x, y)
                                  ["activations"]]
    return {**result, **extra, "train_steps_per_second": timer.steps_per_second(),
            "vocab_size": trainer.cfg.model.vocab_size}


# ------------------------------------------------------------------------------ mlp-init

MLP_INIT_HIDDEN = 100
_INIT_VARIANTS = {
    # variant -> (label, MLPConfig overrides). The output Linear is drawn N(0, 1) / sqrt(fan_in);
    # last_layer_scale sqrt(fan_in) makes it plain N(0, 1) too, so every weight of the naive
    # variant is N(0, 1), as in the lecture's starting point.
    "normal": ("naive N(0,1) init", {"init": "normal", "batchnorm": False,
                                     "last_layer_scale": MLP_INIT_HIDDEN**0.5}),
    "kaiming": ("Kaiming init", {"init": "kaiming", "batchnorm": False, "last_layer_scale": 0.1}),
    "kaiming-batchnorm": ("Kaiming init + BatchNorm",
                          {"init": "kaiming", "batchnorm": True, "last_layer_scale": 0.1}),
}


def _pct(values: list[float]) -> str:
    return " / ".join(f"{100 * v:.0f}" for v in values) + " %"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _mlp_init(opt: Options) -> Outcome:
    rows = []
    for variant, (label, overrides) in _INIT_VARIANTS.items():
        model = MLPConfig(block_size=3, n_embd=10, n_hidden=MLP_INIT_HIDDEN, n_layer=5,
                          **overrides)
        train = _train_cfg(opt.steps, batch_size=32, optimizer="sgd", lr=0.1, seed=42)
        r = _train(_run_cfg(opt.name, variant, opt.data, model, train), opt.out / variant, opt,
                   measure_saturation=True)
        rows.append({"variant": variant, "label": label, "initial_loss": r["initial_loss"],
                     "train_loss": r["train_loss"], "val_loss": r["val_loss"],
                     "saturated_init": r["saturated_init"], "saturated_end": r["saturated_end"],
                     "num_parameters": r["num_parameters"], "steps": r["steps"],
                     "vocab_size": r["vocab_size"]})
    header = ["variant", "initial loss", "final train loss", "final val loss",
              "saturated tanh at init (layers 1-5)", "saturated tanh at end (layers 1-5)"]
    table = [[f"{r['label']} (`{r['variant']}`)", f"{r['initial_loss']:.2f}",
              f"{r['train_loss']:.4f}", f"{r['val_loss']:.4f}", _pct(r["saturated_init"]),
              _pct(r["saturated_end"])] for r in rows]
    by = {r["variant"]: r for r in rows}
    naive, kai, bn = by["normal"], by["kaiming"], by["kaiming-batchnorm"]
    uniform = math.log(naive["vocab_size"])
    text = (
        f"Naive N(0,1) init starts at loss {naive['initial_loss']:.2f} vs "
        f"ln({naive['vocab_size']}) = {uniform:.2f} for a uniform guess (Kaiming: "
        f"{kai['initial_loss']:.2f}, Kaiming + BatchNorm: {bn['initial_loss']:.2f}); "
        f"{100 * _mean(naive['saturated_init']):.0f}% of its tanh units are saturated at init "
        f"vs {100 * _mean(kai['saturated_init']):.0f}% and "
        f"{100 * _mean(bn['saturated_init']):.0f}%. After {naive['steps']} steps its val loss "
        f"is {naive['val_loss']:.3f} vs {kai['val_loss']:.3f} (Kaiming) and "
        f"{bn['val_loss']:.3f} (Kaiming + BatchNorm), with "
        f"{100 * _mean(naive['saturated_end']):.0f}% of its units still saturated."
    )
    settings = {"model": "mlp block_size 3, n_embd 10, n_hidden 100, n_layer 5",
                "train": "batch 32, SGD lr 0.1 constant, seed 42",
                "measured_on": f"a fixed batch of {MEASURE_BATCH} training windows, "
                               f"training mode (saturated: |tanh| > 0.97)"}
    return Outcome(rows, text, [header, *table], settings)


# ------------------------------------------------------------------------------ wavenet-vs-flat


def _num_params(model_cfg) -> int:
    return build_model(model_cfg).num_parameters()


def flat_mlp_matching(target: int, block_size: int, n_embd: int, vocab_size: int) -> MLPConfig:
    """The one-hidden-layer MLP (Kaiming, BatchNorm) whose parameter count is closest to
    ``target``; the count is measured on built models (binary search over n_hidden)."""
    def cfg(h: int) -> MLPConfig:
        return MLPConfig(vocab_size=vocab_size, block_size=block_size, n_embd=n_embd,
                         n_hidden=h, n_layer=1)

    lo, hi = 1, 1
    while _num_params(cfg(hi)) < target:
        hi *= 2
    while lo < hi:  # smallest h with params >= target
        mid = (lo + hi) // 2
        if _num_params(cfg(mid)) < target:
            lo = mid + 1
        else:
            hi = mid
    best = min((h for h in (lo - 1, lo) if h >= 1),
               key=lambda h: abs(_num_params(cfg(h)) - target))
    return cfg(best)


def _wavenet_vs_flat(opt: Options) -> Outcome:
    wavenet = WaveNetConfig(block_size=8, n_embd=24, n_hidden=128)
    milestone = max(1, (3 * opt.steps) // 4)
    # vocab_size is filled in by the Trainer; build one run first to learn it
    rows = []
    results = {}
    train = _train_cfg(opt.steps, log_every=1, batch_size=32, optimizer="sgd", lr=0.1,
                       schedule="step", milestones=[milestone], gamma=0.1, seed=42)
    results["wavenet"] = _train(_run_cfg(opt.name, "wavenet", opt.data, wavenet, train),
                                opt.out / "wavenet", opt)
    flat = flat_mlp_matching(results["wavenet"]["num_parameters"], wavenet.block_size,
                             wavenet.n_embd, results["wavenet"]["vocab_size"])
    results["flat-mlp"] = _train(_run_cfg(opt.name, "flat-mlp", opt.data, flat, replace(train)),
                                 opt.out / "flat-mlp", opt)
    labels = {"wavenet": f"WaveNet (3 levels, n_hidden {wavenet.n_hidden})",
              "flat-mlp": f"flat MLP (1 layer, n_hidden {flat.n_hidden})"}
    for variant, r in results.items():
        rows.append({"variant": variant, "label": labels[variant],
                     "num_parameters": r["num_parameters"], "train_loss": r["train_loss"],
                     "val_loss": r["val_loss"], "steps": r["steps"],
                     "steps_per_second": r["train_steps_per_second"],
                     "n_hidden": wavenet.n_hidden if variant == "wavenet" else flat.n_hidden})
    header = ["model", "params", "train loss", "val loss", "steps/s"]
    table = [[f"{r['label']} (`{r['variant']}`)", f"{r['num_parameters']:,}",
              f"{r['train_loss']:.4f}", f"{r['val_loss']:.4f}",
              "n/a" if r["steps_per_second"] is None else f"{r['steps_per_second']:.0f}"]
             for r in rows]
    w, f = rows
    diff = f["val_loss"] - w["val_loss"]
    better = "WaveNet" if diff > 0 else "the flat MLP"
    speed = ""
    if w["steps_per_second"] and f["steps_per_second"]:
        speed = (f" The flat MLP trains {f['steps_per_second'] / w['steps_per_second']:.1f}x as "
                 f"many steps per second.")
    text = (f"With the same 8-character context, {w['num_parameters']:,} vs "
            f"{f['num_parameters']:,} parameters ({100 * (f['num_parameters'] / w['num_parameters'] - 1):+.1f}%) "
            f"and {w['steps']} steps each, {better} reaches the lower val loss "
            f"({w['val_loss']:.4f} WaveNet vs {f['val_loss']:.4f} flat, difference "
            f"{abs(diff):.4f} nats).{speed}")
    settings = {"wavenet": "block_size 8, n_embd 24, n_hidden 128, BatchNorm, Kaiming",
                "flat_mlp": f"block_size 8, n_embd 24, n_layer 1, n_hidden {flat.n_hidden} "
                            "(chosen for the closest parameter count), BatchNorm, Kaiming",
                "train": f"batch 32, SGD lr 0.1, x0.1 at step {milestone}, seed 42"}
    return Outcome(rows, text, [header, *table], settings)


# ------------------------------------------------------------------------------ names-zoo

ZOO = [  # (preset, label)
    ("names-bigram", "count bigram"),
    ("names-mlp", "MLP"),
    ("names-wavenet", "WaveNet"),
    ("names-bow", "BoW"),
    ("names-rnn", "RNN"),
    ("names-gru", "GRU"),
    ("names-transformer", "Transformer"),
]
ZOO_SECONDS = 60.0  # training budget per model in a full run (optimizer steps only)
ZOO_QUICK_SECONDS = 1.0  # quick runs: the step cap usually ends them first


def _zoo_cfg(preset: str, data: str, steps: int, seconds: float) -> C.RunConfig:
    cfg = presets.load_preset(preset)
    cfg.data.dataset = data
    t = cfg.train
    if steps < t.max_steps:  # the preset's schedule shrunk to `steps`, as `report --quick` does
        C.shorten(t, steps)
        t.log_interval = max(1, steps // 100)
    # The preset's recipe, cut by the budget; the lr schedule runs on the share of the
    # budget spent (see Trainer), so every model ends its schedule with the budget.
    if regime_of(cfg.model.type) == "fitted":
        return cfg  # counted in one pass: no steps to budget
    t.max_seconds = seconds
    t.eval_interval = max(1, t.max_steps)  # one evaluation, at the end
    t.threads = 1  # the same compute for every model
    t.num_samples = 10
    return cfg


def _names_zoo(opt: Options) -> Outcome:
    seconds = ZOO_QUICK_SECONDS if opt.quick else ZOO_SECONDS
    rows, steps = [], opt.steps
    for preset, label in ZOO:
        cfg = _zoo_cfg(preset, opt.data, steps, seconds)
        r = _train(cfg, opt.out / cfg.model.type, opt)
        rows.append({"variant": cfg.model.type, "label": label, "preset": preset,
                     "layout": cfg.data.layout, "num_parameters": r["num_parameters"],
                     "steps": r["steps"], "train_seconds": r["train_seconds"],
                     "train_loss": r["train_loss"], "val_loss": r["val_loss"],
                     "test_loss": r["test_loss"]})
    header = ["model", "data layout", "params", "steps", "train s", "train loss", "val loss",
              "test loss"]
    table = [[f"{r['label']} (`{r['preset']}`)", r["layout"], f"{r['num_parameters']:,}",
              f"{r['steps']:,}", f"{r['train_seconds']:.1f}", f"{r['train_loss']:.4f}",
              f"{r['val_loss']:.4f}", f"{r['test_loss']:.4f}"] for r in rows]
    ranked = sorted(rows, key=lambda r: r["test_loss"])
    best, worst = ranked[0], ranked[-1]
    smallest_beating_mlp = min(
        (r for r in rows if r["test_loss"] < next(x for x in rows if x["variant"] == "mlp")
         ["test_loss"]), key=lambda r: r["num_parameters"], default=None)
    text = (f"With {seconds:g} s of training each (one thread), the {best['label']} reaches the "
            f"lowest test loss, {best['test_loss']:.4f} ({best['num_parameters']:,} parameters, "
            f"{best['steps']:,} steps), and the {worst['label']} the highest, "
            f"{worst['test_loss']:.4f}. Order, best first: "
            + ", ".join(f"{r['label']} {r['test_loss']:.3f}" for r in ranked) + ".")
    if smallest_beating_mlp is not None:
        text += (f" The smallest model that beats the MLP is the {smallest_beating_mlp['label']} "
                 f"({smallest_beating_mlp['num_parameters']:,} parameters).")
    curves = {r["variant"]: MetricsLog(opt.out / r["variant"] / "metrics.jsonl").read()
              for r in rows}
    plot_zoo(rows, curves, opt.out / "zoo.png", seconds)
    settings = {"budget_seconds": seconds,
                "steps_note": f"{seconds:g} s of training per model"
                              + (f" (at most {steps} steps)" if steps < 1_000_000 else ""),
                "train": f"each preset's recipe, stopped after {seconds:g} s of optimizer "
                         "steps (lr schedule on the share of the budget), one thread",
                "models": ", ".join(p for p, _ in ZOO)}
    return Outcome(rows, text, [header, *table], settings)


# ------------------------------------------------------------------------------ gpt-recipe

RECIPE_PRESET = "shakespeare-transformer-cpu-gpt2"
RECIPE_TARGET = 1.88  # the val loss the preset reaches at the end of its schedule
RECIPE_SECONDS = 60.0  # training seconds (optimizer steps) per run in a full run
RECIPE_QUICK_SECONDS = 1.0  # quick runs: the step cap usually ends them first
RECIPE_SEEDS = (1337, 1338, 1339)
RECIPE_EVAL_EVERY = 20  # steps between evaluations: often enough to find the target's crossing
RECIPE_EVAL_ITERS = 10  # val batches per evaluation during training
RECIPE_FINAL_ITERS = 100  # val batches of the final figure, the same for every run
RECIPE_VAL_SEED = 0  # ... drawn with this seed
MUON = ["train.optimizer=muon", "train.momentum=0.95", "train.muon_lr=0.02",
        "train.weight_decay=0.0"]
RECIPE_CHANGES = {  # variant -> (label, overrides of the preset), one design choice each
    "rope": ("RoPE (no position table)", ["model.position=rope"]),
    "rmsnorm": ("RMSNorm", ["model.norm=rms"]),
    "qk-norm": ("QK-norm", ["model.qk_norm=true"]),
    "relu2": ("squared ReLU", ["model.mlp_activation=relu2"]),
    "tied-head": ("tied head", ["model.tie_weights=true"]),
    "muon": ("Muon (hidden matrices)", MUON),
    "wsd": ("WSD schedule", ["train.schedule=wsd"]),
}


RECIPE_DEFAULT = "shakespeare-transformer-cpu"  # the default recipe, as its own preset


def recipe_variants() -> dict[str, tuple[str, list[str]]]:
    """The baseline (the preset as it is), each change alone, all changes together, and
    the default recipe (its own preset: the changes that pay, with its own batch and
    learning rates)."""
    everything = [o for _, overrides in RECIPE_CHANGES.values() for o in overrides]
    return {"baseline": ("the preset as it is", []), **RECIPE_CHANGES,
            "all": ("all changes", everything),
            "default": (f"the default recipe ({RECIPE_DEFAULT})", [])}


def _recipe_cfg(variant: str, overrides: list[str], data: str, seed: int, seconds: float,
                steps: int, quick: bool) -> C.RunConfig:
    """The preset with `overrides`, trained for `seconds` of optimizer steps (at most
    `steps`): the lr schedule runs on the share of the budget spent, its warm-up keeping
    its share of the preset's steps, so every variant ends its schedule with the budget."""
    cfg = presets.load_preset(RECIPE_DEFAULT if variant == "default" else RECIPE_PRESET)
    cfg.name, cfg.description = f"gpt-recipe/{variant}", f"experiment gpt-recipe: {variant}"
    cfg.data = C.DataConfig(dataset=data, format="text")
    C.apply_overrides(cfg, overrides)
    t = cfg.train
    t.warmup_steps = t.warmup_steps * steps // t.max_steps
    t.max_steps, t.max_seconds, t.seed = steps, seconds, seed
    t.eval_interval = min(RECIPE_EVAL_EVERY, max(1, steps // 4))
    t.eval_iters = RECIPE_EVAL_ITERS
    t.log_interval = 1 if quick else 5
    t.num_samples, t.sample_tokens = 1, 200
    if quick:  # a smoke run: the same files, little compute
        t.eval_iters, t.sample_tokens, t.threads = 2, 50, 1
    return cfg


def crossing(curve: list[tuple[int, float, float]], target: float):
    """(step, seconds) where val first reaches `target`, linear between the two evaluations
    around it; curve: (step, seconds, val) per evaluation. None if it never does."""
    for i, (step, sec, val) in enumerate(curve):
        if val <= target:
            if i == 0:
                return float(step), sec
            s0, t0, v0 = curve[i - 1]
            f = (v0 - target) / (v0 - val)
            return s0 + f * (step - s0), t0 + f * (sec - t0)
    return None


def _stats(values: list[float]) -> dict | None:
    """Mean and sample standard deviation (0 for one value); None for no values."""
    if not values:
        return None
    m = _mean(values)
    var = sum((v - m) ** 2 for v in values) / max(1, len(values) - 1)
    return {"mean": m, "std": math.sqrt(var), "n": len(values)}


def _over_seeds(variant: str, label: str, runs: list[dict], first_seed: int) -> dict:
    """A variant's row from its seeds' runs: the figures as mean and std, the seeds that
    reached the target, and the runs themselves."""
    hits = [r for r in runs if r["seconds_to_target"] is not None]
    return {"variant": variant, "label": label, "curve_run": f"{variant}/seed-{first_seed}",
            "num_parameters": runs[0]["num_parameters"],
            "val_loss": _stats([r["val_loss"] for r in runs if r["val_loss"] is not None]),
            "seconds_to_target": _stats([r["seconds_to_target"] for r in hits]),
            "steps_to_target": _stats([r["steps_to_target"] for r in hits]),
            "reached": len(hits), "runs": runs}


def _pm(stats: dict | None, digits: int) -> str:
    if stats is None:
        return "-"
    m, s = stats["mean"], stats["std"]
    return f"{m:.{digits}f} ± {s:.{digits}f}" if stats["n"] > 1 else f"{m:.{digits}f}"


def _recipe_run(cfg: C.RunConfig, out: Path, opt: Options) -> dict:
    seconds = _Seconds()
    trainer = Trainer(cfg, out, progress=opt.progress, force=opt.force, callback=seconds)
    result = trainer.fit()
    t = trainer.cfg.train
    # the run's best-validation weights (model.safetensors), on the same batches for every run
    val = evaluate(trainer.model, trainer.data.val, device=trainer.plan.device, dtype=t.dtype,
                   batch_size=t.batch_size, iters=t.eval_iters if opt.quick else RECIPE_FINAL_ITERS,
                   seed=RECIPE_VAL_SEED)
    curve = [(r["step"], round(seconds.at[r["step"]], 3), r["val_loss"])
             for r in MetricsLog(out / "metrics.jsonl").read() if "val_loss" in r]
    hit = crossing(curve, RECIPE_TARGET)
    return {"seed": t.seed, "steps": result["steps"], "train_seconds": result["train_seconds"],
            "val_loss": val, "steps_to_target": None if hit is None else round(hit[0], 1),
            "seconds_to_target": None if hit is None else round(hit[1], 2),
            "num_parameters": result["num_parameters"], "curve": curve}


def _gpt_recipe(opt: Options) -> Outcome:
    quick, steps = opt.quick, opt.steps
    seconds = RECIPE_QUICK_SECONDS if quick else RECIPE_SECONDS
    seeds = RECIPE_SEEDS[:1] if quick else RECIPE_SEEDS
    rows = []
    for variant, (label, overrides) in recipe_variants().items():
        runs = [_recipe_run(_recipe_cfg(variant, overrides, opt.data, seed, seconds, steps,
                                        quick), opt.out / variant / f"seed-{seed}", opt)
                for seed in seeds]
        rows.append({**_over_seeds(variant, label, runs, seeds[0]), "overrides": overrides,
                     "steps": _stats([r["steps"] for r in runs])})
    base = rows[0]["val_loss"]["mean"]
    header = ["variant", "params", f"val after {seconds:g} s", "vs baseline", "steps",
              f"seconds to val {RECIPE_TARGET}", f"steps to val {RECIPE_TARGET}", "reached"]
    table = [[f"{r['label']} (`{r['variant']}`)", f"{r['num_parameters']:,}",
              _pm(r["val_loss"], 4), f"{r['val_loss']['mean'] - base:+.4f}",
              _pm(r["steps"], 0), _pm(r["seconds_to_target"], 1),
              _pm(r["steps_to_target"], 0), f"{r['reached']}/{len(r['runs'])}"]
             for r in rows]
    text = _recipe_text(rows, seconds, len(seeds))
    plot_val_vs_seconds({r["label"]: [[(s, v) for _, s, v in x["curve"]] for x in r["runs"]]
                         for r in rows}, opt.out / "val_seconds.png", RECIPE_TARGET,
                        f"gpt-recipe: val loss vs training seconds ({len(seeds)} seed(s) each)")
    budget = f"{seconds:g} s of training (optimizer steps) per run"
    t = _recipe_cfg("baseline", [], opt.data, seeds[0], seconds, steps, quick).train
    final_iters = t.eval_iters if quick else RECIPE_FINAL_ITERS
    settings = {"preset": RECIPE_PRESET, "budget_seconds": seconds, "seeds": list(seeds),
                "target_val": RECIPE_TARGET,
                "steps_note": f"{budget}, seeds {', '.join(map(str, seeds))}",
                "train": f"the {RECIPE_PRESET} preset with each variant's overrides; the lr "
                         f"schedule runs on the share of the budget spent; val every "
                         f"{t.eval_interval} steps on {t.eval_iters} batches (the crossing "
                         "of the target interpolated between two evaluations), the final "
                         f"val of the best weights on {final_iters} fixed batches; mean ± "
                         "std over seeds",
                "variants": {r["variant"]: r["overrides"] for r in rows}}
    return Outcome(rows, text, [header, *table], settings)


def _recipe_text(rows: list[dict], seconds: float, n_seeds: int) -> str:
    by = {r["variant"]: r for r in rows}
    base, full = by["baseline"]["val_loss"]["mean"], by["all"]["val_loss"]["mean"]
    singles = sorted((r for r in rows if r["variant"] in RECIPE_CHANGES),
                     key=lambda r: r["val_loss"]["mean"])
    text = (f"After {seconds:g} s of training each ({n_seeds} seed(s)), the baseline reaches "
            f"val {base:.4f} and all changes together {full:.4f} ({full - base:+.4f}). "
            "Each change alone, best first: "
            + ", ".join(f"{r['label']} {r['val_loss']['mean'] - base:+.3f}" for r in singles)
            + ".")
    b = by["baseline"]["seconds_to_target"]
    times = [(by[v]["label"], by[v]["seconds_to_target"]) for v in ("all", "default") if v in by]
    if b and all(t for _, t in times):
        text += (f" Time to val {RECIPE_TARGET}: baseline {b['mean']:.1f} s, "
                 + ", ".join(f"{label} {t['mean']:.1f} s ({t['mean'] / b['mean']:.2f}x the "
                             "baseline's)" for label, t in times) + ".")
    missed = [r["label"] for r in rows if r["reached"] < len(r["runs"])]
    if len(missed) == len(rows):
        text += f" No run reached val {RECIPE_TARGET} within the budget."
    elif missed:
        text += (f" Not every seed reached val {RECIPE_TARGET} within the budget: "
                 + ", ".join(missed) + ".")
    return text


# ------------------------------------------------------------------------------ speedrun

SPEEDRUN_PRESET = "shakespeare-transformer-speedrun"
SPEEDRUN_BASELINE = "shakespeare-transformer-6x256"  # the GPT-2 design, 6 x 256
SPEEDRUN_TARGET = 1.47  # nanoGPT's character-level Shakespeare run reaches 1.4697
SPEEDRUN_LIMIT = 15 * 60.0  # the goal: the target within this many wall seconds
SPEEDRUN_CAP = 20 * 60.0  # wall seconds after which a run is stopped
SPEEDRUN_SEEDS = (1337, 1338, 1339)
SPEEDRUN_BASELINE_EVAL = 250  # the GPT-2 design's evaluations, often enough to draw a curve
SPEEDRUN_QUICK = ["model.n_layer=1", "model.block_size=32", "train.eval_iters=2",
                  "train.num_samples=0", "train.threads=1", "train.eval_interval=2"]
SPEEDRUN_QUICK_STEPS = 4


class _WallCurve:
    """Training callback: the wall seconds since `clock` started (before the run was
    planned: data, model and every step count) at each evaluation; stops the run at the
    cap, and once val reaches the target when `stop_at_target`."""

    def __init__(self, clock: Clock, cap: float, stop_at_target: bool):
        self.clock, self.state = clock, TrainState()
        self.cap, self.stop_at_target = cap, stop_at_target
        self.at: dict[int, float] = {}

    def seconds(self) -> float:
        return self.clock.tick(self.state).wall_seconds

    def __call__(self, step: int, state: TrainState, model) -> bool:
        wall = self.seconds()
        self.at[step] = wall
        reached = self.stop_at_target and state.best_val <= SPEEDRUN_TARGET
        return wall >= self.cap or reached


def _speedrun_cfg(preset: str, data: str, seed: int, opt: Options) -> C.RunConfig:
    cfg = presets.load_preset(preset)
    cfg.data = replace(cfg.data, dataset=data, format="text")
    t = cfg.train
    t.seed = seed
    if preset == SPEEDRUN_BASELINE:
        t.eval_interval = SPEEDRUN_BASELINE_EVAL
    steps = min(opt.steps, SPEEDRUN_QUICK_STEPS) if opt.quick else opt.steps
    if steps < t.max_steps:  # a shorter run: the schedule shrunk with it
        C.shorten(t, steps)
        t.eval_interval = min(t.eval_interval, max(1, steps // 2))
    if opt.quick:
        C.apply_overrides(cfg, SPEEDRUN_QUICK)
    return cfg


def _speedrun_run(cfg: C.RunConfig, out: Path, opt: Options, stop_at_target: bool) -> dict:
    watch = _WallCurve(Clock(0, 0.0, 0, TrainState()), SPEEDRUN_CAP, stop_at_target)
    trainer = Trainer(cfg, out, progress=opt.progress, force=opt.force, callback=watch)
    result = trainer.fit()
    wall = watch.seconds()
    curve = [(r["step"], round(watch.at[r["step"]], 1), r["val_loss"])
             for r in MetricsLog(out / "metrics.jsonl").read() if "val_loss" in r]
    hit = next(((step, sec) for step, sec, val in curve if val <= SPEEDRUN_TARGET), None)
    return {"seed": cfg.train.seed, "steps": curve[-1][0] if curve else 0,
            "val_loss": min((v for _, _, v in curve), default=None),
            "wall_seconds": round(wall, 1), "stopped": bool(result.get("interrupted")),
            "steps_to_target": None if hit is None else hit[0],
            "seconds_to_target": None if hit is None else hit[1],
            "num_parameters": trainer.model.num_parameters(), "curve": curve}


def _speedrun(opt: Options) -> Outcome:
    seeds = SPEEDRUN_SEEDS[:1] if opt.quick else SPEEDRUN_SEEDS
    variants = {SPEEDRUN_PRESET: ("speedrun recipe", False),
                SPEEDRUN_BASELINE: ("GPT-2 design", True)}
    rows = []
    for preset, (label, stop_at_target) in variants.items():
        runs = [_speedrun_run(_speedrun_cfg(preset, opt.data, seed, opt),
                              opt.out / preset / f"seed-{seed}", opt, stop_at_target)
                for seed in seeds]
        rows.append({**_over_seeds(preset, label, runs, seeds[0]), "preset": preset,
                     "wall_seconds": _stats([r["wall_seconds"] for r in runs])})
    header = ["preset", "params", f"wall s to val {SPEEDRUN_TARGET}",
              f"steps to val {SPEEDRUN_TARGET}", "reached", "best val", "run wall s"]
    table = [[f"{r['label']} (`{r['preset']}`)", f"{r['num_parameters']:,}",
              _pm(r["seconds_to_target"], 0), _pm(r["steps_to_target"], 0),
              f"{r['reached']}/{len(r['runs'])}", _pm(r["val_loss"], 4),
              _pm(r["wall_seconds"], 0)] for r in rows]
    plot_val_vs_seconds({r["label"]: [[(s, v) for _, s, v in x["curve"]] for x in r["runs"]]
                         for r in rows}, opt.out / "val_seconds.png", SPEEDRUN_TARGET,
                        f"speedrun: val loss vs wall seconds ({len(seeds)} seed(s) each)",
                        xlabel="wall time since `dlf train` started (s)")
    settings = {"target_val": SPEEDRUN_TARGET, "limit_seconds": SPEEDRUN_LIMIT,
                "cap_seconds": SPEEDRUN_CAP, "seeds": list(seeds),
                "steps_note": f"{len(seeds)} seed(s) per preset, at most "
                              f"{SPEEDRUN_CAP / 60:g} min each",
                "train": (f"each preset as it is; wall seconds from before the run is planned "
                          f"to each evaluation; the GPT-2 design evaluates every "
                          f"{SPEEDRUN_BASELINE_EVAL} steps and stops at val "
                          f"{SPEEDRUN_TARGET}; best val is the best evaluation on the "
                          "preset's evaluation batches; mean ± std over seeds")}
    return Outcome(rows, _speedrun_text(rows), [header, *table], settings)


def _speedrun_text(rows: list[dict]) -> str:
    run, base = rows
    parts = []
    for r in rows:
        if r["reached"]:
            parts.append(f"the {r['label']} reaches val {SPEEDRUN_TARGET} in "
                         f"{r['seconds_to_target']['mean']:.0f} s of wall time "
                         f"({r['reached']}/{len(r['runs'])} seeds)")
        else:
            parts.append(f"the {r['label']} does not reach val {SPEEDRUN_TARGET} within "
                         f"{SPEEDRUN_CAP / 60:g} minutes (best val {r['val_loss']['mean']:.4f})")
    text = "On this machine " + " and ".join(parts) + "."
    within = [x for x in run["runs"]
              if x["seconds_to_target"] is not None and x["wall_seconds"] <= SPEEDRUN_LIMIT]
    text += (f" {len(within)} of {len(run['runs'])} speedrun seeds end their whole run within "
             f"{SPEEDRUN_LIMIT / 60:g} minutes at or below the target.")
    if run["reached"] and base["reached"]:
        ratio = run["seconds_to_target"]["mean"] / base["seconds_to_target"]["mean"]
        text += f" The recipe takes {ratio:.2f}x the GPT-2 design's time."
    return text


EXPERIMENTS: dict[str, Experiment] = {
    "mlp-init": Experiment(
        "mlp-init", "how initialisation and BatchNorm change the start of training of a "
        "deep tanh MLP", full_steps=10_000, run=_mlp_init, log_loss_axis=True),
    "wavenet-vs-flat": Experiment(
        "wavenet-vs-flat", "hierarchical WaveNet vs a flat MLP with the same context and "
        "parameter budget", full_steps=50_000, run=_wavenet_vs_flat),
    "names-zoo": Experiment(
        "names-zoo", "every names model, each trained for the same wall-clock budget",
        full_steps=1_000_000, run=_names_zoo, figure="zoo.png"),
    "speedrun": Experiment(
        "speedrun", f"the speedrun recipe and the GPT-2 design to val {SPEEDRUN_TARGET} on "
        "Shakespeare, in wall time on this machine", full_steps=1_000_000, run=_speedrun,
        figure="val_seconds.png", dataset="shakespeare"),
    "gpt-recipe": Experiment(
        "gpt-recipe", "later Transformer design choices (RoPE, RMSNorm, QK-norm, squared "
        "ReLU, tied head, Muon, WSD), alone and together, at equal training time",
        full_steps=1_000_000, run=_gpt_recipe, figure="val_seconds.png",
        dataset="shakespeare"),
}


# ------------------------------------------------------------------------------ output


def _markdown(exp: Experiment, table: list[list[str]], text: str, footer: str) -> str:
    header, *body = table
    lines = [f"# {exp.name}: {exp.description}", "", *markdown_table(header, body)]
    return "\n".join([*lines, "", text, "", footer]) + "\n"


def run_experiment(name: str, out_dir: str | Path, *, data: str | Path | None = None,
                   quick: bool = False, steps: int | None = None, progress: bool = False,
                   force: bool = False) -> dict:
    """Run experiment ``name`` into ``out_dir``; returns what results.json holds.

    ``data``: a data file, or None for the experiment's dataset (names; Shakespeare for
    gpt-recipe). ``quick``: ~100 steps per variant (and a budget of seconds where there
    is one); ``steps`` overrides both step counts. ``force`` replaces existing variant
    runs."""
    if name not in EXPERIMENTS:
        raise DlfError(f"unknown experiment {name!r}; available: {', '.join(EXPERIMENTS)}")
    exp = EXPERIMENTS[name]
    n_steps = steps if steps is not None else (QUICK_STEPS if quick else exp.full_steps)
    if n_steps < 3:
        raise DlfError(f"an experiment needs at least 3 steps per variant, got {n_steps}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DlfError(f"experiment output {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    dataset = exp.dataset if data is None else str(data)
    whole = TrainState()
    clock = Clock(n_steps, 0.0, 0, whole)  # the wall time of every variant together
    rows, text, table, settings = exp.run(Options(name, out, dataset, n_steps, quick, progress,
                                                  force))
    wall = clock.tick(whole).wall_seconds

    curves = {}
    for r in rows:
        records = MetricsLog(out / r.get("curve_run", r["variant"]) / "metrics.jsonl").read()
        curves[r["label"]] = [(rec["step"], rec["loss"]) for rec in records if "loss" in rec]
    k = plot_loss_curves(curves, out / "loss_curves.png", name, exp.log_loss_axis)
    steps_note = settings.get("steps_note", f"{n_steps} steps per variant")
    m = machine()
    settings.setdefault("machine", f"{m['cpu']} ({m['cores']} cores), torch {m['torch']}")
    footer = (f"{steps_note} on {dataset}; {settings.get('train', '')}; "
              f"measured on {settings['machine']}; total wall time {wall:.0f} s. "
              f"Curves: loss_curves.png (running mean of {k}). "
              f"Runs: " + ", ".join(f"`{r['variant']}/`" for r in rows) + ".")
    result = {"experiment": name, "description": exp.description, "data": dataset,
              "quick": quick, "steps": n_steps, "settings": settings, "variants": rows,
              "interpretation": text, "wall_seconds": round(wall, 1),
              "files": ["results.json", "results.md", "loss_curves.png",
                        *([exp.figure] if exp.figure != "loss_curves.png" else []),
                        *(f"{r['variant']}/" for r in rows)]}
    write_json(out / "results.json", result)
    atomic_write_text(out / "results.md", _markdown(exp, table, text, footer))
    return result
