"""Run configuration: dataclasses, packaged TOML presets, `--set key=value` overrides.

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
import tomllib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from dlf.errors import DlfError


@dataclass
class DataConfig:
    dataset: str = "names"  # a registered name (names, shakespeare) or a path to a UTF-8 file
    format: str = ""  # "lines" | "text"; empty = the registry's format ("lines" for other files)
    # lines data: "windows" = one (block_size context, next char) row per target;
    # "sequences" = one padded row per line, every position a target (sequence models)
    layout: str = "windows"


@dataclass
class TrainConfig:
    max_steps: int = 1000
    max_seconds: float = 0.0  # also stop once the optimizer steps took this long; 0 = no limit
    batch_size: int = 32  # 0 = the whole train split every step (full-batch gradient descent)
    grad_accum: int = 1  # batches per optimizer step (gradients accumulated)
    # rows per forward/backward pass: a batch runs as batch_size / micro_batch passes
    # with the same gradient; 0 = the whole batch; "auto" = resolve_auto's rule
    micro_batch: int | str = "auto"
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    schedule: str = "constant"  # constant | step | cosine | wsd
    milestones: list[int] = field(default_factory=list)  # step schedule: lr *= gamma at each
    gamma: float = 0.1
    warmup_steps: int = 0  # cosine schedule
    min_lr: float = 0.0  # cosine schedule
    decay_fraction: float = 0.2  # wsd schedule: the last fraction of max_steps decays to min_lr
    momentum: float = 0.0  # sgd
    beta1: float = 0.9  # adamw
    beta2: float = 0.999  # adamw
    weight_decay: float = 0.0  # adamw: decoupled; sgd: L2; matrices only, never biases,
    # norm gains or embedding tables (optim.param_groups_for_decay)
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    eval_interval: int = 1000
    eval_iters: int = 20  # text data: batches per loss estimate (line data is exact)
    log_interval: int = 100
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "fp32"  # fp32 | bf16 (autocast)
    compile: bool = False  # torch.compile the training forward pass
    threads: int = 0  # torch intra-op threads; 0 = torch's default (one per core)
    num_samples: int = 20  # samples written to samples.txt at the end
    sample_tokens: int = 500  # characters per sample for text data


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
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise DlfError(f"{key} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise DlfError(f"{key} must be a string, got {value!r}")
    raise AssertionError(f"unsupported config type {tp} for {key}")


def _fields(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _build(cls, section: dict, prefix: str):
    types = _fields(cls)
    unknown = sorted(set(section) - set(types))
    if unknown:
        valid = ", ".join(f"{prefix}.{k}" for k in types)
        raise DlfError(f"unknown config key {prefix}.{unknown[0]}; valid keys: {valid}")
    kwargs = {k: _coerce(v, types[k], f"{prefix}.{k}") for k, v in section.items()}
    return cls(**kwargs)


def from_dict(d: dict, source: str = "config") -> RunConfig:
    from dlf.models import model_config_class

    d = dict(d)
    allowed = {"name", "description", "data", "model", "train"}
    extra = sorted(set(d) - allowed)
    if extra:
        raise DlfError(f"{source}: unknown top-level key {extra[0]!r}; valid: {sorted(allowed)}")
    model = dict(d.get("model") or {})
    if "type" not in model:
        raise DlfError(f"{source}: [model] needs a type")
    mcls = model_config_class(str(model.pop("type")))
    return RunConfig(
        name=str(d.get("name", Path(source).stem)),
        description=str(d.get("description", "")),
        data=_build(DataConfig, d.get("data") or {}, "data"),
        model=_build(mcls, model, "model"),
        train=_build(TrainConfig, d.get("train") or {}, "train"),
    )


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


def load_toml(path: str | Path) -> RunConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DlfError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DlfError(f"cannot read config {path}: {e}") from None
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise DlfError(f"{path} is not valid TOML: {e}") from None
    return from_dict(d, source=str(path))


# ---------------------------------------------------------------------------- presets


def preset_names() -> list[str]:
    files = resources.files("dlf.presets").iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".toml"))


def load_preset(name: str) -> RunConfig:
    if name not in preset_names():
        raise DlfError(f"unknown preset {name!r}; available: {', '.join(preset_names())}")
    text = resources.files("dlf.presets").joinpath(f"{name}.toml").read_text(encoding="utf-8")
    return from_dict(tomllib.loads(text), source=name)


def list_presets() -> list[tuple[str, str]]:
    return [(n, load_preset(n).description) for n in preset_names()]


def resolve(spec: str) -> RunConfig:
    """A preset name or a path to a TOML config file."""
    if spec.endswith(".toml") or Path(spec).is_file():
        return load_toml(spec)
    return load_preset(spec)


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


def name_in(obj, key: str) -> bool:
    return key in _fields(type(obj))


def validate(cfg: RunConfig) -> None:
    """Reject impossible training settings before anything is written."""
    t = cfg.train
    checks = [
        (t.max_steps >= 0, "train.max_steps must be >= 0"),
        (t.batch_size >= 0, "train.batch_size must be >= 0 (0 = full batch)"),
        (t.grad_accum >= 1, "train.grad_accum must be >= 1"),
        (t.micro_batch == "auto" or t.micro_batch >= 0,
         "train.micro_batch must be >= 0 (0 = the whole batch) or \"auto\""),
        (t.lr >= 0, "train.lr must be >= 0"),
        (t.optimizer in ("sgd", "adamw"), f"train.optimizer must be sgd or adamw, got {t.optimizer!r}"),
        (t.schedule in ("constant", "step", "cosine", "wsd"),
         f"train.schedule must be constant, step, cosine or wsd, got {t.schedule!r}"),
        (t.eval_interval >= 1, "train.eval_interval must be >= 1"),
        (t.eval_iters >= 1, "train.eval_iters must be >= 1"),
        (t.log_interval >= 1, "train.log_interval must be >= 1"),
        (t.device in ("auto", "cpu", "cuda") or t.device.startswith("cuda:"),
         f"train.device must be auto, cpu or cuda, got {t.device!r}"),
        (t.dtype in ("fp32", "bf16"), f"train.dtype must be fp32 or bf16, got {t.dtype!r}"),
        (t.grad_clip >= 0, "train.grad_clip must be >= 0"),
        (t.threads >= 0, "train.threads must be >= 0 (0 = one per core)"),
        (0 <= t.momentum < 1, "train.momentum must be in [0, 1)"),
        (0 <= t.beta1 < 1 and 0 <= t.beta2 < 1, "train.beta1 and train.beta2 must be in [0, 1)"),
        (t.weight_decay >= 0, "train.weight_decay must be >= 0"),
        (t.num_samples >= 0 and t.sample_tokens >= 1, "train.num_samples/sample_tokens out of range"),
        (cfg.data.format in ("", "lines", "text"), "data.format must be lines or text"),
        (cfg.data.layout in ("windows", "sequences"),
         f"data.layout must be windows or sequences, got {cfg.data.layout!r}"),
        (t.max_seconds >= 0, "train.max_seconds must be >= 0 (0 = no time limit)"),
    ]
    for ok, msg in checks:
        if not ok:
            raise DlfError(msg)


# ---------------------------------------------------------------------------- "auto"


def last_level_cache_bytes(default: int = 32 * 2**20) -> int:
    """Size of the CPU's largest cache (Linux sysfs), or `default` where unknown."""
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        try:
            text = entry.read_text().strip()
        except OSError:
            continue
        units = {"K": 2**10, "M": 2**20, "G": 2**30}
        if text[-1:] in units and text[:-1].isdigit():
            sizes.append(int(text[:-1]) * units[text[-1]])
        elif text.isdigit():
            sizes.append(int(text))
    return max(sizes, default=default)


def resolve_auto(cfg: RunConfig, device) -> RunConfig:
    """Replace every "auto" in `cfg` by the fastest correct choice for `device` (a
    torch.device or its type string), in place; returns cfg. The one place these rules live:

    - model.attention (Transformer): `dlf.models.transformer.pick_attention` -- by
      device, dtype and dropout;
    - train.micro_batch: on a CPU, the largest divisor m of batch_size whose attention
      scores, m * n_head * block_size**2 float32 values (softmax output in fp32 under bf16
      autocast too), fit in the last-level cache; past that, the scores of one pass
      spill to memory and throughput roughly halves. Elsewhere (CUDA, models without
      attention, full-batch training) 0: the whole batch in one pass.

    The thread count is not an "auto" field: train.threads = 0 already means one per
    core (torch's default). Micro-batching leaves the gradient unchanged (each pass's
    mean loss is weighted by its share of the batch), so only speed depends on it."""
    device_type = getattr(device, "type", str(device).split(":")[0])
    m, t = cfg.model, cfg.train
    if getattr(m, "attention", None) == "auto":
        from dlf.models.transformer import pick_attention  # config sits below models

        m.attention = pick_attention(device_type, t.dtype, m.dropout)
    if t.micro_batch == "auto":
        t.micro_batch = 0
        n_head, T = getattr(m, "n_head", 0), getattr(m, "block_size", 0)
        if device_type == "cpu" and n_head and t.batch_size > 0:
            budget = last_level_cache_bytes()
            fits = [d for d in range(1, t.batch_size + 1)
                    if t.batch_size % d == 0 and d * n_head * T * T * 4 <= budget]
            t.micro_batch = max(fits, default=1)
    return cfg
