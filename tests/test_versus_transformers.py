"""benchmarks/versus_transformers.py: its JSON, and that both sides time the same model
(the greedy tokens of dlf's import and of transformers agree)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "versus_transformers.py"


@pytest.fixture(scope="module")
def vt():
    spec = importlib.util.spec_from_file_location("versus_transformers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_json(vt, capsys):
    assert vt.main(["--quick", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r) == {"model", "parameters", "sample", "train", "machine"}
    s = r["sample"]
    assert s["identical_tokens"] is True and s["new_tokens"] == 20
    assert math.isclose(s["ratio"], s["dlf_tokens_per_second"]
                        / s["transformers_tokens_per_second"], rel_tol=1e-9)
    assert [t["dtype"] for t in r["train"]] == ["fp32", "bf16"]
    for t in r["train"]:
        assert math.isclose(t["ratio"], t["dlf_tokens_per_second"]
                            / t["transformers_tokens_per_second"], rel_tol=1e-9)
        assert t["dlf_attention"] in ("manual", "sdpa") and t["dlf_micro_batch"] >= 1
    assert r["machine"]["transformers"] and len(r["machine"]["load_average"]) == 3
