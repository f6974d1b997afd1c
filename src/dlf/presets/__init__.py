"""Reading run configs: the packaged presets (the TOML files beside this module) and any
TOML config file, each checked against the model's own config class.

    cfg = load_preset("names-mlp")       # a RunConfig; edit it, or apply_overrides
    cfg = resolve("runs/x/config.toml")  # a preset name or a path

This sits above dlf.models (a config's [model] section becomes the model type's config
dataclass) and below the engine.
"""

from __future__ import annotations

import json
import sys
import tomllib
from importlib import resources
from pathlib import Path

from dlf import config as C
from dlf.errors import DlfError
from dlf.models import model_config_class


def from_dict(d: dict, source: str = "config") -> C.RunConfig:
    """A RunConfig from a parsed TOML document; `source` names it in error messages."""
    d = dict(d)
    allowed = {"name", "description", "data", "model", "train"}
    extra = sorted(set(d) - allowed)
    if extra:
        raise DlfError(f"{source}: unknown top-level key {extra[0]!r}; valid: {sorted(allowed)}")
    model = dict(d.get("model") or {})
    if "type" not in model:
        raise DlfError(f"{source}: [model] needs a type")
    mcls = model_config_class(str(model.pop("type")))
    return C.RunConfig(
        name=str(d.get("name", Path(source).stem)),
        description=str(d.get("description", "")),
        data=C.build_section(C.DataConfig, d.get("data") or {}, "data"),
        model=C.build_section(mcls, model, "model"),
        train=C.build_section(C.TrainConfig, d.get("train") or {}, "train"),
    )


def load_toml(path: str | Path) -> C.RunConfig:
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


# Names presets had before, still accepted: old name -> (preset, the --set overrides that
# give the old preset). Loading one says what it became, in one line on stderr.
ALIASES = {
    "shakespeare-transformer-cpu-modern": ("shakespeare-transformer-cpu", ()),
    "shakespeare-transformer-cpu-5min": ("shakespeare-transformer-4x192", ()),
    "shakespeare-transformer-cpu-1h": ("shakespeare-transformer-6x256", ()),
    "shakespeare-transformer-cpu-15min": ("shakespeare-transformer-6x256",
                                          ("train.max_steps=1900", "train.warmup_steps=100",
                                           "train.eval_interval=475")),
}
# What the reference machine measured (dlf report; docs/results.md): `dlf presets` shows it.
MEASURED = "measured.json"


def preset_names() -> list[str]:
    files = resources.files(__name__).iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".toml"))


def load_preset(name: str) -> C.RunConfig:
    if name in ALIASES:
        target, overrides = ALIASES[name]
        sets = "".join(f" --set {o}" for o in overrides)
        print(f"dlf: preset {name} is now {target}{sets}", file=sys.stderr)
        cfg = C.apply_overrides(load_preset(target), list(overrides))
        if overrides:  # not the target's run: its own run directory
            cfg.name = f"{target}-{cfg.train.max_steps}-steps"
        return cfg
    if name not in preset_names():
        raise DlfError(f"unknown preset {name!r}; available: {', '.join(preset_names())}")
    text = resources.files(__name__).joinpath(f"{name}.toml").read_text(encoding="utf-8")
    return from_dict(tomllib.loads(text), source=name)


def list_presets() -> list[tuple[str, str]]:
    return [(n, load_preset(n).description) for n in preset_names()]


def measured() -> dict:
    """The reference machine's figures per preset ({"machine", "date", "command", "runs":
    {preset: {"val_loss", "train_seconds", "wall_seconds"}}}); empty runs if none."""
    f = resources.files(__name__).joinpath(MEASURED)
    if not f.is_file():
        return {"runs": {}}
    return json.loads(f.read_text(encoding="utf-8"))


def table() -> list[dict]:
    """One row per preset, as `dlf presets` prints it: name, model, parameters, data,
    steps, and the val loss and training time measured on the reference machine."""
    runs = measured()["runs"]
    rows = []
    for name in preset_names():
        cfg = load_preset(name)
        m = runs.get(name, {})
        rows.append({"name": name, "model": model_shape(cfg.model),
                     "parameters": count_parameters(cfg), "data": cfg.data.dataset,
                     "steps": cfg.train.max_steps, "val_loss": m.get("val_loss"),
                     "train_seconds": m.get("train_seconds")})
    return rows


def model_shape(m) -> str:
    """A model config in a few words: its type and sizes."""
    if m.type == "transformer":
        return f"transformer {m.n_layer}x{m.n_embd}, block {m.block_size}"
    if m.type in ("rnn", "gru", "bow"):
        return f"{m.type}, hidden {m.n_hidden}"
    if m.type in ("mlp", "manual-mlp", "wavenet"):
        layers = f"{m.n_layer}x" if hasattr(m, "n_layer") else ""
        return f"{m.type}, context {m.block_size}, hidden {layers}{m.n_hidden}"
    return m.type


GPT2_VOCAB = 50257  # GPT-2's tokens: 256 bytes, 50,000 merges and <|endoftext|>


def count_parameters(cfg: C.RunConfig) -> int:
    """The parameters of a preset's model, counted on torch's meta device (no memory, no
    training): the vocabulary is the data's characters, data.vocab_size for BPE, or the
    model's own vocab_size for a pretrained tokenizer (that of the run it starts from)."""
    import copy

    import torch

    from dlf.data.sources import load_corpus
    from dlf.models import build_model

    m = copy.deepcopy(cfg.model)
    if cfg.data.tokenizer == "bpe":
        m.vocab_size = cfg.data.vocab_size
    elif cfg.data.tokenizer == "pretrained":
        m.vocab_size = m.vocab_size or GPT2_VOCAB
    else:
        items, fmt = load_corpus(cfg.data.dataset, format=cfg.data.format or None)
        chars = set(items) if fmt == "text" else set().union(*map(set, items))
        m.vocab_size = len(chars) + (fmt == "lines")  # lines add the boundary token
    with torch.device("meta"):
        return build_model(m).num_parameters()


def resolve(spec: str) -> C.RunConfig:
    """A preset name or a path to a TOML config file."""
    if spec.endswith(".toml") or Path(spec).is_file():
        return load_toml(spec)
    return load_preset(spec)
