"""The layers and what each may import, one training regime per model, decisions made
once in the plan, and the checks every regime shares."""

import ast
import copy
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from dlf import config as C
from dlf import presets as P
from dlf.cli import main
from dlf.engine.plan import check_regime
from dlf.engine.trainer import Trainer, train
from dlf.errors import DlfError
from dlf.models import model_class, model_types
from dlf.models.protocol import REGIMES, Capabilities, capabilities
from runs import records, train_cmd, without_timings, write_mlp_config

SRC = Path(__file__).resolve().parents[1] / "src" / "dlf"


# --------------------------------------------------------------------------- layering


def _dlf_imports(path: Path) -> set[str]:
    """Every dlf module a file imports, at any depth (lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dlf"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("dlf"))
    return found


def _package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports_of(package: str) -> dict[str, set[str]]:
    base = SRC / package
    files = list(base.rglob("*.py")) if base.is_dir() else [SRC / f"{package}.py"]
    return {str(f.relative_to(SRC)): {_package_of(m) for m in _dlf_imports(f)} for f in files}


# What each low layer may import (besides itself); DESIGN.md, Layers.
ALLOWED = {
    "errors": set(),
    "fileio": set(),
    "plots": {"fileio"},
    "nn": {"errors"},
    "optim": {"errors", "nn"},
    "data": {"errors", "fileio"},
    "manual": {"errors"},
    "models": {"errors", "nn", "data", "manual", "config"},
    "presets": {"errors", "config", "models"},
    "sample": {"errors", "fileio", "models", "nn"},
}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_low_layers_import_nothing_above_them(package):
    for file, imported in _imports_of(package).items():
        extra = imported - ALLOWED[package] - {package, ""}
        # a package's own submodules appear as the package name
        assert not extra, f"{file} imports {sorted(extra)}"


def test_models_never_import_engine_sample_report_or_cli():
    for file, imported in _imports_of("models").items():
        assert not imported & {"engine", "sample", "report", "cli", "plots", "bench"}, file


def test_engine_does_not_import_the_layers_above_it():
    above = {"diagnostics", "experiments", "bench", "report", "cli"}
    for file, imported in _imports_of("engine").items():
        assert not imported & above, file


def _calls(path: Path) -> set[str]:
    """The names of every function a file calls (f(...) and x.f(...))."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            names.add(f.id if isinstance(f, ast.Name) else getattr(f, "attr", ""))
    return names


def test_the_plan_alone_decides_regime_and_automatic_settings():
    """capabilities(...) (a model's declared regime and abilities) and resolve_auto (every
    "auto" setting) are called in the plan only; everything else reads the plan."""
    deciders = {"engine/plan.py", "models/protocol.py"}  # the plan; where capabilities lives
    callers = {str(f.relative_to(SRC)) for f in SRC.rglob("*.py")
               if _calls(f) & {"capabilities", "resolve_auto"}}
    assert callers <= deciders, sorted(callers - deciders)
    assert "engine/plan.py" in callers  # the check sees the calls it is about


def test_engine_files_stay_small():
    """Each engine file holds one concern: none over 300 lines, no class over 150."""
    for f in (SRC / "engine").glob("*.py"):
        tree = ast.parse(f.read_text())
        assert len(f.read_text().splitlines()) <= 300, f.name
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                assert node.end_lineno - node.lineno + 1 <= 150, (f.name, node.name)


def test_the_loop_writes_no_files_handles_no_signals_and_draws_nothing():
    """The loop calls its parts; it imports nothing that writes, plots or handles signals,
    and calls no builtin that opens or prints."""
    tree = ast.parse((SRC / "engine" / "loop.py").read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert modules <= {"__future__", "collections.abc", "dataclasses"}, modules
    assert not _calls(SRC / "engine" / "loop.py") & {"open", "print", "signal"}
