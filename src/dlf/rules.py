"""Rules for config fields, declared on the field's type and checked by one validator.

    n_layer: Annotated[int, AtLeast(1)] = 6          # at least 1
    dropout: Annotated[float, Within(0, 1)] = 0.2     # in [0, 1)
    position: Position = "learned"                    # Position = Literal["learned", "rope"]

`check_fields(config, "model")` checks every field of a config dataclass: a Literal
field's value is one of its choices, an Annotated field's value keeps its rules, and a
float is finite. The allowed values of a choice are declared once, as a Literal in the
module that owns them (the schedules in dlf.optim, the attention kernels in
dlf.models.transformer, ...), and imported wherever else they are needed. Rules that
relate two fields stay with the config (its `check()`) or, across sections, the plan.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Literal

from dlf.errors import DlfError

__all__ = ["Above", "AtLeast", "Within", "check_fields", "choices", "one_of"]

# What a value of each plain field type must be, and how a refusal says it
_KINDS = {bool: ("true or false", (bool,)), int: ("an integer", (int,)),
          float: ("a number", (int, float)), str: ("a string", (str,))}


@dataclass(frozen=True)
class AtLeast:
    """value >= lo; `note` says what the bound means (e.g. "0 = the whole batch")."""

    lo: float
    note: str = ""

    def holds(self, value) -> bool:
        return value >= self.lo

    def says(self) -> str:
        return f"must be >= {self.lo:g}" + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class Above:
    """value > lo."""

    lo: float

    def holds(self, value) -> bool:
        return value > self.lo

    def says(self) -> str:
        return f"must be > {self.lo:g}"


@dataclass(frozen=True)
class Within:
    """lo <= value < hi; `closed`: value <= hi too; `above`: lo < value."""

    lo: float
    hi: float
    closed: bool = False
    above: bool = False

    def holds(self, value) -> bool:
        low = self.lo < value if self.above else self.lo <= value
        return low and (value <= self.hi if self.closed else value < self.hi)

    def says(self) -> str:
        return (f"must be in {'(' if self.above else '['}{self.lo:g}, {self.hi:g}"
                f"{']' if self.closed else ')'}")


def choices(tp) -> tuple | None:
    """The allowed values of a Literal type (None for any other type)."""
    if typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return typing.get_args(tp) if typing.get_origin(tp) is Literal else None


def one_of(values) -> str:
    """'a, b or c'."""
    values = [str(v) if v != "" else '""' for v in values]
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


def _kind_error(tp, value) -> str | None:
    """What `value` should have been, when it is not of the plain type `tp` (an int is
    not a bool here, nor a bool a number); None when it is, or `tp` is no plain type."""
    if typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) not in (None, typing.Union, types.UnionType):
        return None  # a Literal (checked as choices), a list, ...
    kinds = [_KINDS[t] for t in (typing.get_args(tp) or (tp,)) if t in _KINDS]
    if not kinds:
        return None
    ok = any(isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
             for _, types in kinds)
    return None if ok else " or ".join(name for name, _ in kinds)


def check_fields(config, prefix: str) -> None:
    """Check every field of the dataclass `config` against its declared type (see the
    module docstring); the first broken rule is a DlfError "prefix.field ...". Numeric
    rules apply to numbers only, so a field that also takes "auto" keeps it."""
    hints = typing.get_type_hints(type(config), include_extras=True)
    for f in dataclasses.fields(config):
        tp, value, key = hints[f.name], getattr(config, f.name), f"{prefix}.{f.name}"
        kind = _kind_error(tp, value)
        if kind is not None:
            raise DlfError(f"{key} must be {kind}, got {value!r}")
        allowed = choices(tp)
        if allowed is not None and value not in allowed:
            raise DlfError(f"{key} must be {one_of(allowed)}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise DlfError(f"{key} must be a finite number, got {value!r}")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        rules = typing.get_args(tp)[1:] if typing.get_origin(tp) is Annotated else ()
        for rule in rules:
            if number and not rule.holds(value):
                raise DlfError(f"{key} {rule.says()}, got {value!r}")
