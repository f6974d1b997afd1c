"""Reading run configs: the packaged presets (the TOML files beside this module) and any
TOML config file, each checked against the model's own config class.

    cfg = load_preset("names-mlp")       # a RunConfig; edit it, or apply_overrides
    cfg = resolve("runs/x/config.toml")  # a preset name or a path

This sits above dlf.models (a config's [model] section becomes the model type's config
dataclass) and below the engine.
"""

from __future__ import annotations

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


def preset_names() -> list[str]:
    files = resources.files(__name__).iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".toml"))


def load_preset(name: str) -> C.RunConfig:
    if name not in preset_names():
        raise DlfError(f"unknown preset {name!r}; available: {', '.join(preset_names())}")
    text = resources.files(__name__).joinpath(f"{name}.toml").read_text(encoding="utf-8")
    return from_dict(tomllib.loads(text), source=name)


def list_presets() -> list[tuple[str, str]]:
    return [(n, load_preset(n).description) for n in preset_names()]


def resolve(spec: str) -> C.RunConfig:
    """A preset name or a path to a TOML config file."""
    if spec.endswith(".toml") or Path(spec).is_file():
        return load_toml(spec)
    return load_preset(spec)
