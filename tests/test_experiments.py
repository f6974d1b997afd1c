"""Experiments in quick mode on tiny synthetic names: files, tables, and the real effects."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dlf.errors import DlfError
from dlf.experiments import EXPERIMENTS, flat_mlp_matching, run_experiment

STEPS = 30


def _mean(values):
    return sum(values) / len(values)


def test_mlp_init_shows_what_bad_init_does(tmp_path, names_file):
    threads = torch.get_num_threads()
    out = tmp_path / "init"
    result = run_experiment("mlp-init", out, data=names_file, quick=True, steps=STEPS)
    assert torch.get_num_threads() == threads  # the Trainer's setting does not leak
    for f in ("results.json", "results.md", "loss_curves.png"):
        assert (out / f).stat().st_size > 0
    for variant in ("normal", "kaiming", "kaiming-batchnorm"):
        assert (out / variant / "result.json").exists()
        assert json.loads((out / variant / "result.json").read_text())["steps"] == STEPS
    assert json.loads((out / "results.json").read_text()) == result
    table = (out / "results.md").read_text()
    for variant in ("`normal`", "`kaiming`", "`kaiming-batchnorm`"):
        assert variant in table
    assert result["interpretation"] in table

    by = {r["variant"]: r for r in result["variants"]}
    naive, kai, bn = by["normal"], by["kaiming"], by["kaiming-batchnorm"]
    uniform = math.log(naive["vocab_size"])  # what a network that knows nothing scores
    # Kaiming (with the shrunk output layer) starts at the uniform guess; N(0, 1) far above it
    assert abs(kai["initial_loss"] - uniform) < 0.25
    assert abs(bn["initial_loss"] - uniform) < 0.25
    assert naive["initial_loss"] > 3 * kai["initial_loss"]
    assert naive["initial_loss"] > 3 * bn["initial_loss"]
    # and saturates its tanh units: most of them at init, far more than either fix
    assert len(naive["saturated_init"]) == 5
    assert _mean(naive["saturated_init"]) > 0.5
    assert _mean(naive["saturated_init"]) > _mean(kai["saturated_init"]) + 0.3
    assert _mean(naive["saturated_init"]) > _mean(bn["saturated_init"]) + 0.3
    assert _mean(bn["saturated_init"]) < 0.1  # BatchNorm puts every layer at unit scale
    assert f"{naive['initial_loss']:.2f}" in result["interpretation"]


def test_wavenet_vs_flat_matches_parameters(tmp_path, names_file):
    out = tmp_path / "wf"
    result = run_experiment("wavenet-vs-flat", out, data=names_file, steps=STEPS)
    assert [r["variant"] for r in result["variants"]] == ["wavenet", "flat-mlp"]
    w, f = result["variants"]
    assert abs(f["num_parameters"] / w["num_parameters"] - 1) < 0.10
    for r in (w, f):
        assert math.isfinite(r["val_loss"]) and r["steps"] == STEPS
        assert r["steps_per_second"] > 0
        saved = json.loads((out / r["variant"] / "result.json").read_text())
        assert saved["num_parameters"] == r["num_parameters"]
    table = (out / "results.md").read_text()
    assert "`wavenet`" in table and "`flat-mlp`" in table and f"{w['num_parameters']:,}" in table
    assert (out / "loss_curves.png").stat().st_size > 0
    # the same context: both runs saw 8 characters
    for variant in ("wavenet", "flat-mlp"):
        assert "block_size = 8" in (out / variant / "config.toml").read_text()


def test_flat_mlp_matching_is_the_closest_parameter_count():
    V, T, E, target = 27, 8, 24, 76_579

    def params(h):  # embedding + Linear (no bias) + BatchNorm gain/shift + output Linear
        return V * E + T * E * h + 2 * h + h * V + V

    cfg = flat_mlp_matching(target, T, E, V)
    h = cfg.n_hidden
    assert cfg.n_layer == 1 and cfg.block_size == T and cfg.n_embd == E
    assert abs(params(h) - target) <= min(abs(params(h - 1) - target),
                                          abs(params(h + 1) - target))
    assert abs(params(h) / target - 1) < 0.01


def test_unknown_experiment_and_existing_runs(tmp_path, names_file):
    with pytest.raises(DlfError, match="unknown experiment 'nope'; available: " +
                       ", ".join(EXPERIMENTS)):
        run_experiment("nope", tmp_path / "x")
    with pytest.raises(DlfError, match="at least 3 steps"):
        run_experiment("mlp-init", tmp_path / "x", data=names_file, steps=1)
    out = tmp_path / "again"
    run_experiment("wavenet-vs-flat", out, data=names_file, steps=3)
    with pytest.raises(DlfError, match="already holds a run"):
        run_experiment("wavenet-vs-flat", out, data=names_file, steps=3)
    result = run_experiment("wavenet-vs-flat", out, data=names_file, steps=4, force=True)
    assert result["steps"] == 4


def test_names_zoo_trains_every_model_and_draws_both_panels(tmp_path, names_file):
    out = tmp_path / "zoo"
    result = run_experiment("names-zoo", out, data=names_file, quick=True, steps=4)
    rows = {r["variant"]: r for r in result["variants"]}
    assert set(rows) == {"count-bigram", "mlp", "wavenet", "bow", "rnn", "gru", "transformer"}
    for variant, r in rows.items():
        saved = json.loads((out / variant / "result.json").read_text())
        assert r["test_loss"] == saved["test_loss"] and math.isfinite(r["test_loss"])
        assert saved["steps"] <= 4
    assert rows["gru"]["layout"] == "sequences" and rows["mlp"]["layout"] == "windows"
    assert (out / "zoo.png").stat().st_size > 0 and "zoo.png" in result["files"]
    table = (out / "results.md").read_text()
    assert all(f"`names-{k}`" in table for k in ("rnn", "gru", "bow", "transformer"))
    assert result["interpretation"] in table


@pytest.mark.slow
def test_gpt_recipe_trains_every_variant_and_reports_time_to_target(tmp_path, text_file):
    """Quick mode on a tiny text: one seed, every variant a run directory, the table and
    the figure of val against seconds; the figures in the table are the runs' own."""
    from dlf.experiments import RECIPE_TARGET, recipe_variants

    out = tmp_path / "recipe"
    result = run_experiment("gpt-recipe", out, data=text_file, quick=True, steps=8)
    assert (out / "val_seconds.png").stat().st_size > 0 and result["files"][3] == \
        "val_seconds.png"
    assert [r["variant"] for r in result["variants"]] == list(recipe_variants())
    table = (out / "results.md").read_text()
    for r in result["variants"]:
        (run,) = r["runs"]  # one seed in quick mode
        saved = json.loads((out / r["variant"] / f"seed-{run['seed']}" / "result.json")
                           .read_text())
        assert run["steps"] == saved["steps"] <= 8
        assert run["train_seconds"] == saved["train_seconds"]
        # evaluations every 2 steps (a quarter of the cap) and at the last step
        assert [s for s, _, _ in run["curve"]][:2] == [2, 4]
        seconds = [s for _, s, _ in run["curve"]]  # increasing, ending with the run's
        assert seconds == sorted(seconds) and seconds[-1] == pytest.approx(
            run["train_seconds"], abs=0.006)  # result.json rounds to 0.01 s
        assert r["val_loss"]["mean"] == run["val_loss"]
        assert f"`{r['variant']}`" in table and f"{run['val_loss']:.4f}" in table
        assert (run["seconds_to_target"] is None) == (min(v for *_, v in run["curve"])
                                                     > RECIPE_TARGET)
    assert result["settings"]["seeds"] == [1337]
    assert result["interpretation"] in table


@pytest.mark.slow
def test_speedrun_runs_both_presets_and_times_them_from_the_start(tmp_path, text_file):
    """Quick mode: one seed of each preset, shrunk; the table's figures are the runs' own,
    the curve's seconds count from before each run was planned, and the machine is named."""
    from dlf.experiments import SPEEDRUN_BASELINE, SPEEDRUN_PRESET, SPEEDRUN_TARGET

    out = tmp_path / "speedrun"
    result = run_experiment("speedrun", out, data=text_file, quick=True)
    assert (out / "val_seconds.png").stat().st_size > 0
    assert [r["preset"] for r in result["variants"]] == [SPEEDRUN_PRESET, SPEEDRUN_BASELINE]
    table = (out / "results.md").read_text()
    for r in result["variants"]:
        (run,) = r["runs"]
        records = [json.loads(line) for line in
                   (out / r["preset"] / "seed-1337" / "metrics.jsonl").read_text().splitlines()]
        evals = [(x["step"], x["val_loss"]) for x in records if "val_loss" in x]
        assert [(s, v) for s, _, v in run["curve"]] == evals and evals
        seconds = [s for _, s, _ in run["curve"]]
        saved = json.loads((out / r["preset"] / "seed-1337" / "result.json").read_text())
        # from before the run was planned: more than the run's own steps took
        assert seconds == sorted(seconds) and run["wall_seconds"] >= saved["train_seconds"]
        assert run["val_loss"] == min(v for _, v in evals) == r["val_loss"]["mean"]
        assert (run["seconds_to_target"] is None) == (run["val_loss"] > SPEEDRUN_TARGET)
        assert f"{run['val_loss']:.4f}" in table
    assert result["interpretation"] in table
    assert result["settings"]["machine"] in table
