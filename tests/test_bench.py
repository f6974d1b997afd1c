"""dlf bench: the figures are produced and consistent (speed itself is never asserted)."""

import json

from dlf.cli import main


def test_bench_train_reports_mfu(capsys):
    assert main(["bench", "train", "--preset", "shakespeare-transformer-cpu", "--steps", "1",
                 "--batch-size", "2", "--set", "model.n_layer=1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("tokens_per_second", "gflops", "peak_gflops", "mfu"):
        assert r[key] > 0
    assert abs(r["mfu"] - r["gflops"] / r["peak_gflops"]) < 1e-9
    assert r["block_size"] == 32 and r["batch_size"] == 2


def test_bench_sample_cached_equals_uncached(capsys):
    assert main(["bench", "sample", "--preset", "shakespeare-transformer-cpu",
                 "--new-tokens", "70", "--json"]) == 0  # past block 32: the window slides
    r = json.loads(capsys.readouterr().out)
    assert r["identical_tokens"] is True
    ratio = r["cached_tokens_per_second"] / r["uncached_tokens_per_second"]
    assert abs(r["speedup"] - ratio) < 1e-6 * ratio


def test_bench_rejects_bad_arguments(capsys):
    assert main(["bench", "sample", "--preset", "names-mlp"]) == 2
    assert "needs a transformer preset" in capsys.readouterr().err
    assert main(["bench", "train", "--steps", "0"]) == 2
