"""Run configuration: the dataclasses, `--set key=value` overrides, and writing a config as
TOML. Reading TOML files and the packaged presets is dlf.presets (it needs the models'
config classes, which sit above this module).

A run is described by three sections plus a name:

    name = "names-mlp"
    description = "one line for `dlf presets`"
    [data]   -> DataConfig
    [model]  -> the model's own config dataclass, chosen by `type`
    [train]  -> TrainConfig

The resolved config (every field, vocab size filled in) is written to the run
directory as `config.toml`, so a run can be reproduced from that file alone.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from dlf.data.datasets import Layout
from dlf.data.sources import Format
from dlf.data.tokenizer import TokenizerKind
from dlf.errors import DlfError
from dlf.optim import OptimizerName, Schedule
from dlf.rules import AtLeast, Within, check_fields, one_of

# The precisions a run may compute in (bf16: autocast), as dlf.engine.device maps them
DType = Literal["fp32", "bf16"]
DEVICES = ("auto", "cpu", "cuda")  # and "cuda:N"


@dataclass
class DataConfig:
    dataset: str = "names"  # a registered name (names, shakespeare) or a path to a UTF-8 file
    # "lines" | "text"; empty = the registry's format ("lines" for other files)
    format: Literal["", Format] = ""
    # lines data: "windows" = one (block_size context, next char) row per target;
    # "sequences" = one padded row per line, every position a target (sequence models)
    layout: Layout = "windows"
    # "char": one token per character (the data's characters); "bpe": byte-level BPE
    # (dlf.data.bpe) learned from the train split, for text data; "pretrained": the run's
    # own tokenizer.json, which came with imported weights (dlf.hub)
    tokenizer: TokenizerKind = "char"
    vocab_size: int = 0  # bpe: 256 bytes + the merges to learn; char: 0 (the data decides)
    bpe_pattern: str = "gpt4"  # bpe: the split regex, gpt4 | gpt2 | none (dlf.data.bpe)
    # text data: tokens per training window; 0 = model.block_size. Shorter windows than the
    # model's positions fine-tune a long-context model (GPT-2's 1024) at a fraction of the cost
    context: Annotated[int, AtLeast(0, "0 = model.block_size")] = 0


@dataclass
class TrainConfig:
    max_steps: Annotated[int, AtLeast(0)] = 1000
    # also stop once the optimizer steps took this long; 0 = no limit
    max_seconds: Annotated[float, AtLeast(0, "0 = no time limit")] = 0.0
    # 0 = the whole train split every step (full-batch gradient descent)
    batch_size: Annotated[int, AtLeast(0, "0 = full batch")] = 32
    grad_accum: Annotated[int, AtLeast(1)] = 1  # batches per optimizer step (gradients accumulated)
    # rows per forward/backward pass: a batch runs as batch_size / micro_batch passes
    # with the same gradient; 0 = the whole batch; "auto" = resolve_auto's rule
    micro_batch: Annotated[int | str, AtLeast(0, '0 = the whole batch, or "auto"')] = "auto"
    # "auto" settings measured by a short probe on a CPU, cached per machine and shape
    # (dlf.engine.probe); false: the rules that need no measuring
    probe: bool = True
    optimizer: OptimizerName = "sgd"  # sgd | adamw | muon: Muon (dlf.optim.Muon) for the
    # hidden matrices, AdamW (beta1, beta2, eps 1e-8) for embeddings, head, gains and biases
    lr: Annotated[float, AtLeast(0)] = 0.1  # muon: the AdamW part's lr
    muon_lr: Annotated[float, AtLeast(0)] = 0.02  # muon: the hidden matrices' lr; the
    # schedule scales both alike (at each step muon_lr * scheduled lr / lr)
    muon_ns_dtype: Literal["auto", DType] = "auto"  # muon: the Newton-Schulz iteration's
    # dtype, fp32 | bf16 | "auto" = the plan's choice by device (resolve_auto)
    schedule: Schedule = "constant"  # constant | step | cosine | wsd
    milestones: list[int] = field(default_factory=list)  # step schedule: lr *= gamma at each
    gamma: float = 0.1
    warmup_steps: int = 0  # cosine and wsd schedules
    min_lr: float = 0.0  # cosine and wsd schedules
    decay_fraction: float = 0.2  # wsd schedule: the last fraction of max_steps decays to min_lr
    momentum: Annotated[float, Within(0, 1)] = 0.0  # sgd; muon (Nesterov; the reference uses 0.95)
    beta1: Annotated[float, Within(0, 1)] = 0.9  # adamw
    beta2: Annotated[float, Within(0, 1)] = 0.999  # adamw
    # adamw, muon: decoupled (p *= 1 - lr * weight_decay, with each group's own lr); sgd:
    # L2; matrices only, never biases, norm gains or embedding tables
    # (optim.param_groups_for_decay)
    weight_decay: Annotated[float, AtLeast(0)] = 0.0
    grad_clip: Annotated[float, AtLeast(0, "0 = off")] = 0.0  # max global grad norm
    eval_interval: Annotated[int, AtLeast(1)] = 1000
    # steps between checkpoints (state.safetensors), besides those at the end and at a stop:
    # at most what a killed or restarted run loses. 50: under a minute of work on the CPU
    # presets (steps of up to about 0.7 s on the 2-core CPUs they were tuned on);
    # benchmarks/checkpoint.py prints what the writes cost against the steps
    checkpoint_interval: Annotated[int, AtLeast(1)] = 50
    # text data: batches per loss estimate (line data is exact)
    eval_iters: Annotated[int, AtLeast(1)] = 20
    log_interval: Annotated[int, AtLeast(1)] = 100
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: DType = "fp32"  # fp32 | bf16 (autocast)
    compile: bool = False  # torch.compile the training forward pass
    # also write the logged records as TensorBoard scalars into RUN/tensorboard/ (needs the
    # tensorboard extra: pip install 'dlf[tensorboard]')
    tensorboard: bool = False
    # torch intra-op threads; 0 = torch's default (one per core)
    threads: Annotated[int, AtLeast(0, "0 = one per core")] = 0
    num_samples: Annotated[int, AtLeast(0)] = 20  # samples written to samples.txt at the end
    # tokens per sample for text data (characters, for char)
    sample_tokens: Annotated[int, AtLeast(1)] = 500


@dataclass
class RunConfig:
    name: str
    description: str
    data: DataConfig
    model: Any  # a model config dataclass; its class carries the model type
    train: TrainConfig

    @property
    def model_type(self) -> str:
        return self.model.type


# ---------------------------------------------------------------------------- parsing


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert a TOML or command-line value to the dataclass field type.
    `int | str` fields take an integer or the word "auto"."""
    origin = typing.get_origin(tp)
    if origin is Literal:  # one of its choices: dlf.rules.check_fields says which
        return _coerce(value, type(typing.get_args(tp)[0]), key)
    if set(typing.get_args(tp)) == {int, str}:
        if value == "auto":
            return value
        if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
            raise DlfError(f"{key} must be an integer or \"auto\", got {value!r}")
        return _coerce(value, int, key)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise DlfError(f"{key} must be a list, got {value!r}")
        return [_coerce(v, inner, key) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise DlfError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise DlfError(f"{key} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                pass
        raise DlfError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise DlfError(f"{key} must be a number, got {value!r}")
        number = None
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                pass
        if number is None:
            raise DlfError(f"{key} must be a number, got {value!r}")
        if not math.isfinite(number):  # NaN fails a range check with a misleading message; inf passes it
            raise DlfError(f"{key} must be a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise DlfError(f"{key} must be a string, got {value!r}")
    raise AssertionError(f"unsupported config type {tp} for {key}")


def _fields(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def build_section(cls, section: dict, prefix: str):
    """One TOML section (a dict) as the dataclass `cls`, every value checked and converted;
    an unknown key names the valid ones."""
    types = _fields(cls)
    unknown = sorted(set(section) - set(types))
    if unknown:
        valid = ", ".join(f"{prefix}.{k}" for k in types)
        raise DlfError(f"unknown config key {prefix}.{unknown[0]}; valid keys: {valid}")
    kwargs = {k: _coerce(v, types[k], f"{prefix}.{k}") for k, v in section.items()}
    return cls(**kwargs)


def to_dict(cfg: RunConfig) -> dict:
    return {
        "name": cfg.name,
        "description": cfg.description,
        "data": dataclasses.asdict(cfg.data),
        "model": {"type": cfg.model.type, **dataclasses.asdict(cfg.model)},
        "train": dataclasses.asdict(cfg.train),
    }


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def to_toml(cfg: RunConfig) -> str:
    """Serialise to TOML (flat sections of scalars and lists: all our configs need)."""
    d = to_dict(cfg)
    lines = [f"name = {_toml_value(d['name'])}", f"description = {_toml_value(d['description'])}"]
    for section in ("data", "model", "train"):
        lines += ["", f"[{section}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in d[section].items()]
    return "\n".join(lines) + "\n"


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply `section.key=value` strings (the section may be left out when unambiguous)."""
    sections = {"data": cfg.data, "model": cfg.model, "train": cfg.train}
    valid = [f"{s}.{k}" for s, obj in sections.items() for k in _fields(type(obj))]
    for item in overrides:
        if "=" not in item:
            raise DlfError(f"--set expects key=value, got {item!r}")
        key, value = (s.strip() for s in item.split("=", 1))
        if "." in key:
            section, name = key.split(".", 1)
        else:
            owners = [s for s, obj in sections.items() if name_in(obj, key)]
            if len(owners) != 1:
                hint = "ambiguous" if owners else "unknown"
                raise DlfError(f"{hint} config key {key!r}; valid keys: {', '.join(valid)}")
            section, name = owners[0], key
        obj = sections.get(section)
        if obj is None or not name_in(obj, name):
            raise DlfError(f"unknown config key {key!r}; valid keys: {', '.join(valid)}")
        tp = _fields(type(obj))[name]
        setattr(obj, name, _coerce(value, tp, f"{section}.{name}"))
    # a section's own checks (__post_init__) run again, as when the TOML is read back
    cfg.data, cfg.model, cfg.train = (dataclasses.replace(x)
                                      for x in (cfg.data, cfg.model, cfg.train))
    return cfg


def shorten(t: TrainConfig, steps: int) -> None:
    """Cut a run to `steps` optimizer steps, in place, its schedule shrunk with it: the
    milestones and the warm-up keep their share of the run."""
    full = max(1, t.max_steps)
    t.max_steps = steps
    t.milestones = [max(1, m * steps // full) for m in t.milestones]
    t.warmup_steps = t.warmup_steps * steps // full


def name_in(obj, key: str) -> bool:
    return key in _fields(type(obj))


def check_model_fields(model) -> None:
    """A model config's field rules (dlf.rules) and its filled-in vocabulary: what every
    model config's check() starts with."""
    check_fields(model, "model")
    if model.vocab_size < 2:
        raise DlfError(f"model.vocab_size must be >= 2, got {model.vocab_size}")


def validate(cfg: RunConfig) -> None:
    """Check every field of the three sections against its declared rule (dlf.rules)
    before anything is read or written; the model's own cross-field rules are its
    config's check(), run by the plan once the vocabulary is known."""
    check_fields(cfg.data, "data")
    check_fields(cfg.model, "model")
    check_fields(cfg.train, "train")
    device = cfg.train.device
    if device not in DEVICES and not device.startswith("cuda:"):
        raise DlfError(f"train.device must be {one_of(DEVICES)} (or cuda:N), got {device!r}")
