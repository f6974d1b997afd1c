"""dlf bench: the figures are produced and consistent (speed itself is never asserted)."""

import json

import pytest

from dlf.cli import main
from tolerances import fp64_tol


def test_bench_train_reports_mfu(capsys):
    assert main(["bench", "train", "--preset", "shakespeare-transformer-cpu", "--steps", "1",
                 "--batch-size", "2", "--set", "model.n_layer=1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("tokens_per_second", "gflops", "peak_gflops", "mfu"):
        assert r[key] > 0
    # Python floats: one division each way
    assert r["mfu"] == pytest.approx(r["gflops"] / r["peak_gflops"], rel=fp64_tol(1))
    assert r["block_size"] == 32 and r["batch_size"] == 2


def test_bench_sample_cached_equals_uncached(capsys):
    assert main(["bench", "sample", "--preset", "shakespeare-transformer-cpu",
                 "--new-tokens", "70", "--json"]) == 0  # past block 32: the window slides
    r = json.loads(capsys.readouterr().out)
    assert r["identical_tokens"] is True
    ratio = r["cached_tokens_per_second"] / r["uncached_tokens_per_second"]
    # (n / t_c) / (n / t_u) against t_u / t_c: three float64 divisions
    assert r["speedup"] == pytest.approx(ratio, rel=fp64_tol(3))


def test_bench_rejects_bad_arguments(capsys):
    assert main(["bench", "sample", "--preset", "names-mlp"]) == 2
    assert "needs a transformer preset" in capsys.readouterr().err
    assert main(["bench", "train", "--steps", "0"]) == 2
