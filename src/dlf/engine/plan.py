"""The plan of a run: every decision about how a config trains, made once before anything
runs, and every refusal of a combination of config, model, data and world.

    plan, data = plan_run(cfg, world)

`Plan` is a frozen value: the resolved config (each "auto" replaced by this machine's
choice, the vocabulary size filled in, a too-long warm-up shortened), what the model class
declares it can do, the world, the device, the thread count and the learning-rate
schedule. The trainer, the loop, bench and the launcher read it; none of them decides or
checks again. What the plan changed is said in `plan.notes`, one line each.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import torch

from dlf import config as C
from dlf import optim
from dlf.engine import tensorboard
from dlf.engine.auto import default_threads, resolve_auto
from dlf.engine.device import pick_device
from dlf.engine.distributed import World
from dlf.engine.rundata import RunData, prepare_data
from dlf.engine.saved import SavedRun, check_same_architecture, check_same_run
from dlf.errors import DlfError, out_of_memory_means
from dlf.models import model_class
from dlf.models.protocol import Capabilities, capabilities

# Train settings that only the autograd regime reads; the others would silently ignore
# them, so a value other than the default is refused.
_MUON_FIELDS = ("muon_lr", "muon_ns_dtype")  # read by train.optimizer = "muon" only
_OPTIMIZER_FIELDS = ("optimizer", "momentum", "beta1", "beta2", "weight_decay", "grad_accum",
                     "grad_clip", "dtype", "compile", *_MUON_FIELDS)
_IGNORED = {
    "autograd": (),
    "manual": _OPTIMIZER_FIELDS,  # plain SGD on hand-written gradients, in fp32
    "fitted": _OPTIMIZER_FIELDS + ("lr", "schedule", "milestones", "warmup_steps", "min_lr",
                                   "decay_fraction", "batch_size", "max_seconds", "tensorboard"),
}
# When a run is too short for its warm-up, the warm-up becomes this share of the run.
SHORT_RUN_WARMUP = 0.1


@dataclass(frozen=True)
class Plan:
    cfg: C.RunConfig  # resolved: what config.toml records; read, never changed
    caps: Capabilities  # what the model class declares (regime, sequence targets, ...)
    world: World
    device: torch.device
    threads: int  # torch intra-op threads while the run trains
    schedule: object  # step -> learning rate (dlf.optim); None for a fitted model
    debug: bool = False  # DLF_DEBUG=1: check that data-parallel ranks hold equal weights
    notes: tuple[str, ...] = ()  # what the plan adapted, one line each

    @property
    def regime(self) -> str:
        return self.caps.regime


def plan_run(cfg: C.RunConfig, world: World | None = None, *,
             resume: SavedRun | None = None,
             init_from: SavedRun | None = None) -> tuple[Plan, RunData]:
    """Check `cfg` for `world`, read its data and decide everything; returns the plan and
    the data read to make it. `resume` is the run being continued: it must hold the same
    model and data, and its tokenizer is reused. `init_from` is the run a new run starts
    from (--init-from): its tokenizer is used, and its model must have the requested
    architecture. Raises DlfError with one line for anything that cannot run."""
    cfg = copy.deepcopy(cfg)  # the caller's config is never changed
    world = world or World()
    C.validate(cfg)
    check_tokenizer(cfg.data)
    caps = capabilities(model_class(cfg.model.type))
    check_regime(cfg.train, cfg.model.type, caps.regime)
    check_optimizer(cfg.train, cfg.model.type, caps)
    check_world(cfg, world, caps.regime)
    if cfg.train.tensorboard and not tensorboard.available():
        raise DlfError("train.tensorboard = true writes through torch.utils.tensorboard, which "
                       f"needs the tensorboard package: {tensorboard.EXTRA}")
    with out_of_memory_means(f"reading the data with model.block_size = "
                             f"{cfg.model.block_size}: lower model.block_size"):
        source = resume or init_from
        data = prepare_data(cfg, tokenizer=source.tokenizer if source else None)
    cfg.model.vocab_size = data.tokenizer.vocab_size
    cfg.model.check()
    if init_from is not None:
        check_same_architecture(cfg, init_from)
    check_model_fits_data(cfg, caps, data)
    check_batch_fits_memory(cfg.train.batch_size, cfg.data.context or cfg.model.block_size)
    device = _device(cfg.train.device, world)
    notes = adapt(cfg.train)
    if data.tokenizer.vocab_size < cfg.data.vocab_size:
        notes.append(f"data.vocab_size {cfg.data.vocab_size} -> {data.tokenizer.vocab_size}: "
                     "BPE found no more pairs to merge in the train split")
    threads = cfg.train.threads or default_threads(world)
    notes += resolve_auto(cfg, device, threads if world.size == 1 else 0)
    if resume is not None:
        check_same_run(cfg, resume)
    schedule = None if caps.regime == "fitted" else lr_schedule(cfg.train)
    plan = Plan(cfg, caps, world, device, threads, schedule,
                debug=os.environ.get("DLF_DEBUG", "0") == "1", notes=tuple(notes))
    return plan, data


def regime_of(model_type: str) -> str:
    """How a model type's parameters are set: "autograd", "manual" or "fitted"."""
    return capabilities(model_class(model_type)).regime


# ----------------------------------------------------------------------------- refusals


def check_regime(t: C.TrainConfig, model_type: str, regime: str) -> None:
    """Refuse train settings that `regime` would ignore."""
    default = C.TrainConfig()
    for name in _IGNORED[regime]:
        if getattr(t, name) != getattr(default, name):
            how = ("is fitted by counting, not trained" if regime == "fitted" else
                   "trains with plain SGD on its hand-written gradients, in fp32")
            raise DlfError(f"train.{name} = {getattr(t, name)!r} has no effect: a "
                           f"{model_type} model {how}; remove the setting")
    if regime == "fitted" and t.max_steps != 0:
        raise DlfError(f"a {model_type} model is fitted in one counting pass: "
                       f"set train.max_steps = 0 (got {t.max_steps})")


def check_optimizer(t: C.TrainConfig, model_type: str, caps: Capabilities) -> None:
    """Refuse Muon's settings without Muon, and Muon where it cannot split the model."""
    for name in _MUON_FIELDS if t.optimizer != "muon" else ():
        if getattr(t, name) != getattr(C.TrainConfig, name):
            raise DlfError(f"train.{name} = {getattr(t, name)!r} has no effect: "
                           f"train.optimizer is {t.optimizer}, not muon; remove the setting")
    if t.optimizer == "muon" and t.lr <= 0:
        raise DlfError(f"train.optimizer = muon scales train.muon_lr by the schedule's share of "
                       f"train.lr: train.lr must be > 0, got {t.lr}")
    if t.optimizer == "muon" and not caps.output_weights:
        raise DlfError(f"train.optimizer = muon keeps the output layer on AdamW, and a "
                       f"{model_type} model does not name its output layer: use adamw")


def check_tokenizer(d: C.DataConfig) -> None:
    """Refuse tokenizer settings that cannot apply (prepare_data refuses BPE on line data)."""
    if d.tokenizer in ("char", "pretrained"):
        whose = ("a character tokenizer's vocabulary is the data's characters"
                 if d.tokenizer == "char" else "a pretrained tokenizer is its tokenizer.json")
        for name, value in (("vocab_size", d.vocab_size), ("bpe_pattern", d.bpe_pattern)):
            if value != getattr(C.DataConfig, name):
                raise DlfError(f"data.{name} = {value!r} is for data.tokenizer = bpe; {whose}")
        return
    from dlf.data.bpe import PATTERNS  # needs regex: only a BPE run imports it

    if d.vocab_size < 256:
        raise DlfError(f"data.vocab_size = {d.vocab_size}: a byte-level BPE vocabulary is the "
                       "256 bytes and the merges learned on top; set at least 256 (e.g. 512)")
    if d.bpe_pattern not in PATTERNS:
        raise DlfError(f"data.bpe_pattern must be {', '.join(PATTERNS)}, got {d.bpe_pattern!r}")


def check_world(cfg: C.RunConfig, world: World, regime: str) -> None:
    """Refuse what N > 1 processes cannot train equal to one process."""
    if world.size <= 1:
        return
    t = cfg.train
    if regime == "fitted":
        raise DlfError(f"a {cfg.model.type} model is fitted in one counting pass, which is "
                       "not split over processes: train it without --nproc / torchrun")
    if regime == "manual":
        raise DlfError(f"a {cfg.model.type} model trains with its hand-written backward, "
                       "whose gradients and BatchNorm statistics are not all-reduced: "
                       "train it in one process (without --nproc / torchrun)")
    if t.batch_size == 0:
        raise DlfError("train.batch_size = 0 (full batch) cannot be split into equal "
                       "slices over processes: set a batch size divisible by "
                       f"{world.size}")
    if t.max_seconds > 0:
        raise DlfError("train.max_seconds (a time budget) is measured by each process, so "
                       "the processes could stop at different steps: use train.max_steps "
                       "with several processes")
    if t.batch_size % world.size:
        raise DlfError(f"train.batch_size = {t.batch_size} is the global batch and must be "
                       f"divisible by the number of processes ({world.size})")


def check_model_fits_data(cfg: C.RunConfig, caps: Capabilities, data: RunData) -> None:
    sequence = caps.sequence_targets
    if data.format == "text" and not sequence:
        raise DlfError(f"model type {cfg.model.type!r} predicts one next character from a "
                       "fixed window and trains on line data (format = lines); for a text "
                       "stream use the transformer")
    if data.layout == "sequences":
        if not sequence:
            raise DlfError(f"model type {cfg.model.type!r} predicts one next character from "
                           "a fixed window; data.layout = sequences needs a sequence model "
                           "(transformer, rnn, gru, bow)")
        if data.train.block_size > cfg.model.block_size:
            raise DlfError(f"the longest line needs {data.train.block_size} positions but "
                           f"model.block_size is {cfg.model.block_size}; raise model.block_size")
    if cfg.data.context > cfg.model.block_size:
        raise DlfError(f"data.context = {cfg.data.context} is longer than the model's "
                       f"model.block_size = {cfg.model.block_size} positions")
    if cfg.train.batch_size == 0 and data.format != "lines":
        raise DlfError("train.batch_size = 0 (full batch) needs line data")


def check_batch_fits_memory(batch_size: int, block_size: int) -> None:
    """Refuse a batch whose token ids alone (inputs and targets, int64) exceed this
    machine's memory: it could never be drawn, and the run would fail only after its
    directory was claimed. (A batch that fits here may still run out of memory in the
    step: the model's activations are not known before it runs.)"""
    need = 2 * 8 * batch_size * max(block_size, 1)
    have = physical_memory()
    if have and need > have:
        raise DlfError(f"train.batch_size = {batch_size}: one batch's token ids alone need "
                       f"{need / 2**30:,.0f} GiB, more than this machine's "
                       f"{have / 2**30:,.0f} GiB of memory; lower train.batch_size")


def physical_memory() -> int | None:
    """Bytes of memory this machine has (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _device(name: str, world: World) -> torch.device:
    device = pick_device(name)
    if device.type == "cuda" and world.size > 1:
        if torch.cuda.device_count() < world.local_size:
            raise DlfError(f"{world.local_size} processes on this machine but only "
                           f"{torch.cuda.device_count()} GPUs: one GPU per process")
        device = torch.device("cuda", world.local_rank)
    return device


def lr_schedule(t: C.TrainConfig):
    """The learning rate at each step (refusing a schedule that cannot be followed)."""
    return optim.make_schedule(t.schedule, t.lr, milestones=t.milestones, gamma=t.gamma,
                               warmup_steps=t.warmup_steps, total_steps=max(t.max_steps, 1),
                               min_lr=t.min_lr, decay_fraction=t.decay_fraction)


def adapt(t: C.TrainConfig) -> list[str]:
    """What a user expects to adapt rather than be refused, in place; one note each."""
    notes = []
    if t.schedule in ("cosine", "wsd") and t.warmup_steps > t.max_steps:
        warmup = int(t.max_steps * SHORT_RUN_WARMUP)
        notes.append(f"train.warmup_steps {t.warmup_steps} -> {warmup}: the run is "
                     f"{t.max_steps} steps, shorter than its warm-up")
        t.warmup_steps = warmup
    return notes
