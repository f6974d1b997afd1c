"""The lesson notebooks: committed with full-budget outputs, and executable.

The committed .ipynb files are checked as files (fast); each lesson is also built from
its source and executed through nbclient with DLF_QUICK=1 (tiny budgets)."""

import importlib.util
import json
import os
import re
from pathlib import Path

import pytest

import dlf

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
LESSONS = ["00-micrograd", "01-bigram", "02-mlp-two-ways", "03-wavenet", "04-transformer",
           "05-tokenizer", "06-gpt2"]
MAX_BYTES = 2 * 1024 * 1024
VERSION_LINE = re.compile(r"^dlf (\S+), budget: (full|quick)$", re.MULTILINE)


def _build_module():
    pytest.importorskip("nbformat")
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOKS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outputs(nb: dict) -> list[dict]:
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]


def _text(output: dict) -> str:
    text = output.get("text", "")
    return "".join(text) if isinstance(text, list) else text


def test_the_lesson_list_matches_the_folder():
    assert sorted(p.stem for p in (NOTEBOOKS / "lessons").glob("*.py")) == LESSONS
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == LESSONS
    readme = (NOTEBOOKS / "README.md").read_text(encoding="utf-8")
    assert all(f"{name}.ipynb" in readme for name in LESSONS)


@pytest.mark.parametrize("name", LESSONS)
def test_committed_notebook(name):
    """Run with the full budget, no error output, a figure and an assert, built from
    its current source, at most 2 MB."""
    path = NOTEBOOKS / f"{name}.ipynb"
    assert path.stat().st_size <= MAX_BYTES
    nb = json.loads(path.read_text(encoding="utf-8"))
    outputs = _outputs(nb)
    errors = [o for o in outputs if o["output_type"] == "error"]
    assert not errors, f"{name} holds an error output: {errors[0].get('ename')}"
    assert not any("Traceback" in _text(o) for o in outputs), f"{name} printed a traceback"
    runs = [m for o in outputs if o["output_type"] == "stream"
            for m in VERSION_LINE.findall(_text(o))]
    assert len(runs) == 1, f"{name} does not record the dlf version it ran with"
    assert runs[0][1] == "full", (f"{name} was executed with DLF_QUICK=1: run `make notebooks` "
                                  "to execute it with the lesson's budget")
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code), f"{name} has unexecuted cells"
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{name} shows no figure"
    assert any(re.search(r"^assert ", "".join(c["source"]), re.MULTILINE) for c in code)
    built = _build_module().parse((NOTEBOOKS / "lessons" / f"{name}.py").read_text("utf-8"))
    assert ["".join(c["source"]) for c in nb["cells"]] == [c["source"] for c in built], (
        f"{name}.ipynb is not built from lessons/{name}.py: run `make notebooks`")


@pytest.mark.slow
@pytest.mark.parametrize("name", LESSONS)
def test_notebook_executes_with_the_quick_budget(name, tmp_path, monkeypatch):
    """The lesson, built from its source, runs through nbclient without an error, its
    asserts included. (A failing cell raises CellExecutionError with its traceback.)"""
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    build = _build_module()
    monkeypatch.setenv("DLF_QUICK", "1")
    # the kernel imports this checkout's dlf, installed or not
    src = str(ROOT / "src")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [src, os.environ.get(
        "PYTHONPATH")])))
    monkeypatch.setattr(build, "HERE", tmp_path)  # write the built notebook there
    path = build.build(NOTEBOOKS / "lessons" / f"{name}.py")
    build.execute(path, cwd=tmp_path, timeout=600)
    nb = json.loads(path.read_text(encoding="utf-8"))
    runs = [m for o in _outputs(nb) if o["output_type"] == "stream"
            for m in VERSION_LINE.findall(_text(o))]
    assert runs == [(dlf.__version__, "quick")]
    assert any("image/png" in o.get("data", {}) for o in _outputs(nb))
