"""tools/mutation.py's own arithmetic and bookkeeping (the mutation runs themselves are not
part of the suite: they take hours)."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("mutation_tool", ROOT / "tools" / "mutation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("k, n, lo, hi", [(0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0),
                                          (95, 100, 0.8882, 0.9785)])
def test_wilson_interval_matches_published_values(k, n, lo, hi):
    got = _tool().wilson(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_mutants_are_read_from_the_groups_meta_files(tmp_path):
    tool = _tool()
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    for name in ("a.py", "b.py", "notes.txt"):
        (tmp_path / "src" / "pkg" / name).write_text("")
    meta = tmp_path / "mutants" / "src" / "pkg"
    meta.mkdir(parents=True)
    (meta / "a.py.meta").write_text(json.dumps({"exit_code_by_key": {"a.x__mutmut_2": 1,
                                                                     "a.x__mutmut_1": 0}}))
    (meta / "b.py.meta").write_text(json.dumps({"exit_code_by_key": {"b.y__mutmut_1": 33}}))
    assert tool.all_mutants(tmp_path, ["src/pkg/*"]) == ["a.x__mutmut_1", "a.x__mutmut_2",
                                                         "b.y__mutmut_1"]
    assert tool.all_mutants(tmp_path, ["src/pkg/b.py"]) == ["b.y__mutmut_1"]
    assert tool.undetected(tmp_path, ["src/pkg/*"]) == ["a.x__mutmut_1", "b.y__mutmut_1"]
