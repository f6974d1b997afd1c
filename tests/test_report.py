"""`dlf report --quick` end to end on tiny synthetic data, then again reusing every stage."""

import json

import pytest

from dlf.cli import main
from dlf.report import EXPERIMENTS, STAGES


@pytest.mark.slow
def test_quick_report_runs_and_resumes(tmp_path, names_file, text_file, capsys):
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
