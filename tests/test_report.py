"""`dlf report --quick` end to end on tiny synthetic data, then again reusing every stage."""

import dataclasses
import json
import math

import pytest

from dlf import presets as P
from dlf import report
from dlf.cli import main
from dlf.report import EXPERIMENTS, STAGES, TOKENIZER_PAIR, _tokenizer_rows, stage_config


@pytest.fixture
def few_steps(monkeypatch):
    """`--quick` on budgets of a few steps, and the two many-run experiments on fewer runs:
    the end-to-end test checks what the report runs, reuses and writes, not what the models
    learn in their quick budgets (the test below checks that those budgets are what each
    stage and experiment gets; test_experiments.py runs every variant and every zoo model)."""
    from dlf import experiments

    monkeypatch.setattr(report, "STAGES", [dataclasses.replace(s, quick_steps=min(s.quick_steps, 4))
                                           for s in STAGES])
    monkeypatch.setattr(report, "QUICK_EXPERIMENT_STEPS", 3)
    monkeypatch.setattr(report, "MICRO_QUICK_STEPS", 1)
    variants = experiments.recipe_variants()
    monkeypatch.setattr(experiments, "recipe_variants",
                        lambda: {k: variants[k] for k in ("baseline", "all", "default")})
    monkeypatch.setattr(experiments, "ZOO", [z for z in experiments.ZOO
                                             if z[0] in ("names-bigram", "names-mlp", "names-gru")])


def test_quick_budgets_shorten_each_stage_and_experiment(monkeypatch, names_file, text_file):
    for stage in STAGES:
        full = P.load_preset(stage.preset).train
        t = stage_config(stage, True, str(names_file), str(text_file)).train
        assert t.max_steps == min(full.max_steps, stage.quick_steps), stage.preset
        assert t.eval_interval == max(1, t.max_steps) and t.eval_iters <= 4
        assert stage_config(stage, False, None, None).train.max_steps == full.max_steps
    calls = []
    monkeypatch.setattr("dlf.experiments.run_experiment",
                        lambda name, out, **kw: calls.append((name, kw["steps"])) or {})
    report.run_experiment_stage("mlp-init", names_file.parent / "x", True, None, None, False)
    report.run_experiment_stage("mlp-init", names_file.parent / "y", False, None, None, False)
    assert calls == [("mlp-init", report.QUICK_EXPERIMENT_STEPS), ("mlp-init", None)]


@pytest.mark.slow
def test_quick_report_runs_and_resumes(tmp_path, names_file, text_file, capsys, few_steps):
    out = tmp_path / "report"
    argv = ["report", "--quick", "--out", str(out), "--names", str(names_file),
            "--text", str(text_file), "--quiet"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("trained") == len(STAGES) and "experiment mlp-init: ran" in err
    md = (out / "REPORT.md").read_text()
    for stage in STAGES:
        assert f"`{stage.preset}`" in md
        result = json.loads((out / "runs" / stage.preset / "result.json").read_text())
        assert f"{result['val_loss']:.4f}" in md  # the table shows the run's own figure
    for image in ("names_loss.png", "runs/shakespeare-transformer-cpu/loss.png",
                  "experiments/mlp-init/loss_curves.png",
                  "experiments/wavenet-vs-flat/loss_curves.png", "experiments/names-zoo/zoo.png",
                  "experiments/gpt-recipe/val_seconds.png"):
        assert f"]({image})" in md and (out / image).stat().st_size > 0
    assert "Experiment: mlp-init" in md and "Samples (seed 0)" in md and "torch" in md
    assert "## Characters or BPE tokens" in md
    for preset in TOKENIZER_PAIR:  # nats per character side by side
        result = json.loads((out / "runs" / preset / "result.json").read_text())
        assert f"| {result['val_nats_per_char']:.4f} | {result['val_bits_per_char']:.4f} |" in md
    for model in ("names-rnn", "names-gru", "names-bow", "Experiment: names-zoo",
                  "Experiment: gpt-recipe"):
        assert model in md

    # an interrupted report: one stage lost its result, one never finished
    (out / "runs" / "names-mlp" / "result.json").unlink()
    before = (out / "runs" / "names-bigram" / "model.safetensors").read_bytes()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "names-mlp: resumed" in err
    # every other stage and the experiments
    assert err.count("reused") == len(STAGES) - 1 + len(EXPERIMENTS)
    assert (out / "runs" / "names-bigram" / "model.safetensors").read_bytes() == before


def test_the_tokenizer_rows_compare_per_character():
    """The character and the BPE model in one table: context in tokens and in characters
    (tokens x the characters per token of the evaluated val targets)."""
    rows = []
    for preset, per_token, per_char, vocab in ((TOKENIZER_PAIR[0], 1.8, 1.8, 65),
                                               (TOKENIZER_PAIR[1], 3.4, 1.7, 512)):
        stage = next(s for s in STAGES if s.preset == preset)
        rows.append((stage, P.load_preset(preset), {
            "val_loss": per_token, "val_nats_per_char": per_char, "vocab_size": vocab,
            "val_bits_per_char": per_char / math.log(2), "steps": 900, "train_seconds": 40.4}))
    md = "\n".join(_tokenizer_rows(rows))
    assert ("| char (`shakespeare-transformer-cpu-gpt2`) | 65 | 32 tokens, ~32 chars | 900 | 40 s "
            "| 1.8000 | 1.8000 | 2.5969 |") in md
    assert ("| bpe (`shakespeare-transformer-cpu-bpe`) | 512 | 16 tokens, ~32 chars | 900 | "
            "40 s | 3.4000 | 1.7000 | 2.4526 |") in md
    assert _tokenizer_rows(rows[:1]) == []  # a report without the pair has no such table
