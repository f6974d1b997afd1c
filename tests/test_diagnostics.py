"""Diagnostics: statistics against direct computation, update ratios against a hand-made SGD
step, and diagnose_run / train_with_diagnostics on tiny runs."""

from __future__ import annotations

import hashlib
import json
import math
import statistics

import pytest
import torch

from dlf import config as C
from dlf import optim
from dlf import presets as P
from dlf.diagnostics import (
    DIAGNOSTICS_JSON,
    UpdateRatioTracker,
    activation_stats,
    diagnose_run,
    gradient_stats,
    measure,
    record_activations,
    tanh_layers,
    train_with_diagnostics,
    weight_grad_stats,
)
from dlf.engine.tensor_io import load_tensors
from dlf.engine.trainer import Trainer
from dlf.errors import DlfError
from dlf.nn import BatchNorm1d, Linear, Module, Sequential, Tanh
from tolerances import fp32_tol, stats_tol

PNGS = ("activations.png", "activation_grads.png", "weight_grads.png", "update_ratio.png")


class TwoTanh(Module):
    """x (B, 4) -> Linear -> BatchNorm -> Tanh -> Linear -> Tanh; loss = sum(out * c)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.net = Sequential(Linear(4, 5, generator=g), BatchNorm1d(5), Tanh(),
                              Linear(5, 3, generator=g), Tanh())

    def forward(self, x, c):
        out = self.net(x)
        return out, (out * c).sum()


def tiny_cfg(names_file, preset="names-mlp", overrides=(), **train):
    cfg = P.load_preset(preset)
    cfg.data.dataset = str(names_file)
    if preset == "names-mlp":
        C.apply_overrides(cfg, ["model.block_size=3", "model.n_embd=4", "model.n_hidden=16",
                                "model.n_layer=2"])
    C.apply_overrides(cfg, list(overrides))
    t = {"max_steps": 20, "batch_size": 16, "eval_interval": 10, "log_interval": 1,
         "num_samples": 2, "schedule": "constant", "milestones": [], "threads": 1}
    t.update(train)
    for k, v in t.items():
        setattr(cfg.train, k, v)
    return cfg


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------ statistics


def test_activation_stats_match_direct_computation():
    model = TwoTanh()
    values = [0.99, -0.98, 0.97, 0.5, 0.0, -0.3, -0.999, 0.1]  # 0.97 itself is not saturated
    first, second = (layer for _, layer in tanh_layers(model))
    first.out = torch.tensor(values).view(2, 4)
    second.out = torch.full((3, 2), 0.98)
    rows = activation_stats(model)
    assert [r["name"] for r in rows] == ["net.2", "net.4"]
    assert [r["index"] for r in rows] == [0, 1]
    tol = stats_tol(len(values), scale=1.0)  # tanh outputs: |value| < 1
    assert rows[0]["mean"] == pytest.approx(statistics.fmean(values), abs=tol)
    assert rows[0]["std"] == pytest.approx(statistics.stdev(values), abs=tol)
    assert rows[0]["saturated"] == 3 / 8  # a count over 8: exact
    assert rows[1]["saturated"] == 1.0 and rows[1]["std"] == pytest.approx(0.0, abs=tol)


def test_gradient_and_weight_grad_stats_are_the_chain_rule():
    model = TwoTanh()
    record_activations(model, grads=True)
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    c = torch.randn(6, 3, generator=torch.Generator().manual_seed(2))
    out, loss = model(x, c)
    loss.backward()
    # d loss / d out = c exactly; the first tanh's gradient by hand through Linear 2
    w2 = model.net.layers[3].weight.detach()
    d_first = (c * (1 - out.detach() ** 2)) @ w2.T  # (6, 5)
    g = gradient_stats(model)
    tol = stats_tol(c.numel(), c.abs().max().item())
    assert g[1]["mean"] == pytest.approx(c.mean().item(), abs=tol)
    assert g[1]["std"] == pytest.approx(c.std().item(), abs=tol)
    # autograd and the hand-written chain rule also round the 3-term product differently
    tol = stats_tol(d_first.numel() + 3, d_first.abs().max().item())
    assert g[0]["mean"] == pytest.approx(d_first.mean().item(), abs=tol)
    assert g[0]["std"] == pytest.approx(d_first.std().item(), abs=tol)

    rows = weight_grad_stats(model)
    assert [r["name"] for r in rows] == ["net.0.weight", "net.3.weight"]  # 2-D only
    w = model.net.layers[3].weight
    grads = w.grad.flatten().tolist()
    assert rows[1]["shape"] == [5, 3]
    n = len(grads)
    assert rows[1]["mean"] == pytest.approx(statistics.fmean(grads),
                                            abs=stats_tol(n, max(map(abs, grads))))
    ratio = statistics.stdev(grads) / statistics.stdev(w.detach().flatten().tolist())
    # a ratio of two fp32 stds of spread-out values: each within 2n eps relative
    assert rows[1]["grad_data_ratio"] == pytest.approx(ratio, rel=2 * fp32_tol(2 * n))


def test_stats_need_a_forward_pass_and_tanh_layers():
    model = TwoTanh()
    with pytest.raises(DlfError, match="no recorded output"):
        activation_stats(model)
    record_activations(model)
    model(torch.randn(3, 4), torch.ones(3, 3))
    with pytest.raises(DlfError, match="retain_out_grad"):
        gradient_stats(model)  # retain_out_grad was not set
    plain = Sequential(Linear(2, 2))
    with pytest.raises(DlfError, match="diagnostics need a model with tanh layers"):
        tanh_layers(plain)


def test_measure_leaves_the_model_as_it_was():
    class Wrapped(TwoTanh):
        def forward(self, x, y):
            return super().forward(x, torch.nn.functional.one_hot(y, 3).float())

    model = Wrapped().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    stats = measure(model, x, y)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN buffers too
    assert "retain_out_grad" not in vars(model.net.layers[2])
    # the statistics are those of a training-mode pass (BatchNorm on batch statistics)
    model.train()
    out, loss = model(x, y)
    # fp32: the loss sums out * one_hot(y), len(y) nonzero terms of size < 1 (tanh)
    assert stats["loss"] == pytest.approx(loss.item(), abs=fp32_tol(out.numel()) * len(y))
    assert stats["activations"][1]["mean"] == pytest.approx(out.mean().item(),
                                                            abs=stats_tol(out.numel(), 1.0))


# ------------------------------------------------------------------------------ update ratios


def test_update_ratio_of_one_sgd_step_by_hand():
    model = TwoTanh()
    lr = 0.1
    opt = optim.SGD(model.parameters(), lr=lr)
    tracker = UpdateRatioTracker()
    tracker.snapshot(model)
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    _, loss = model(x, torch.ones(6, 3))
    loss.backward()
    expected = {}
    for name, p in model.named_parameters():
        if p.ndim == 2:
            new = p.detach() - lr * p.grad  # the SGD update written out
            expected[name] = math.log10((lr * p.grad).std().item() / new.std().item())
    opt.step()
    tracker.update(model, 1)
    assert tracker.steps == [1]
    assert set(tracker.ratios) == set(expected) == {"net.0.weight", "net.3.weight"}
    for name, value in expected.items():
        # log10 of a ratio of two fp32 stds: relative error 2 * 2n eps, divided by ln 10
        n = dict(model.named_parameters())[name].numel()
        assert tracker.ratios[name][0] == pytest.approx(value, abs=2 * fp32_tol(2 * n))
    # without a snapshot of the previous step nothing is recorded
    late = UpdateRatioTracker()
    late.update(model, 5)
    assert late.steps == []
    late.update(model, 6)
    assert late.steps == [6] and late.ratios["net.0.weight"][0] == -math.inf  # no change


def test_update_ratio_tracker_as_trainer_callback(tmp_path, names_file):
    tracker = UpdateRatioTracker(every=3)
    Trainer(tiny_cfg(names_file, max_steps=10), tmp_path / "run", progress=False,
            callback=tracker).fit()
    assert tracker.steps == [3, 6, 9]  # step 3 is recorded from the snapshot at step 2
    assert set(tracker.ratios) == {"wte.weight", "net.0.weight", "net.3.weight", "net.6.weight"}
    assert all(-6 < v < 0 for vs in tracker.ratios.values() for v in vs)
    with pytest.raises(DlfError, match=">= 1"):
        UpdateRatioTracker(every=0)


# ------------------------------------------------------------------------------ runs


def test_diagnose_run_writes_figures_and_leaves_the_run_alone(tmp_path, names_file):
    out = tmp_path / "run"
    Trainer(tiny_cfg(names_file), out, progress=False).fit()
    before = {f.name: digest(f) for f in out.iterdir()}
    files = diagnose_run(out, steps=5)
    assert sorted(f.name for f in files) == sorted([*PNGS, DIAGNOSTICS_JSON])
    for f in files:
        assert f.parent == out and f.stat().st_size > 0
    assert {f.name: digest(f) for f in out.iterdir() if f.name in before} == before
    assert {f.name for f in out.iterdir()} == set(before) | {f.name for f in files}
    report = json.loads((out / DIAGNOSTICS_JSON).read_text())
    assert [a["name"] for a in report["activations"]] == ["net.2", "net.5"]
    assert all(0 <= a["saturated"] <= 1 for a in report["activations"])
    assert len(report["activation_grads"]) == 2 and len(report["weight_grads"]) == 4
    assert report["update_ratio"]["steps"] == [21, 22, 23, 24, 25]  # continued after step 20
    # the measurement is repeatable: same weights, same fixed-seed batch
    again = diagnose_run(out, steps=0)
    assert len(again) == 4
    assert json.loads((out / DIAGNOSTICS_JSON).read_text())["loss"] == report["loss"]


def test_diagnose_wavenet_run(tmp_path, names_file):
    out = tmp_path / "wave"
    cfg = tiny_cfg(names_file, "names-wavenet", ["model.n_embd=4", "model.n_hidden=8"],
                   max_steps=6, eval_interval=6)
    Trainer(cfg, out, progress=False).fit()
    diagnose_run(out, steps=2)
    report = json.loads((out / DIAGNOSTICS_JSON).read_text())
    assert len(report["activations"]) == 3  # 8 -> 4 -> 2 -> 1: three tanh levels
    assert report["update_ratio"]["steps"] == [7, 8]


def test_model_without_tanh_is_refused(tmp_path, names_file):
    out = tmp_path / "bigram"
    cfg = tiny_cfg(names_file, "names-bigram-neural", max_steps=2, eval_interval=2)
    Trainer(cfg, out, progress=False).fit()
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(DlfError, match="diagnostics need a model with tanh layers"):
        diagnose_run(out)
    assert sorted(p.name for p in out.iterdir()) == before
    with pytest.raises(DlfError, match="run directory not found"):
        diagnose_run(tmp_path / "missing")


def test_train_with_diagnostics_does_not_change_training(tmp_path, names_file):
    plain, diag = tmp_path / "plain", tmp_path / "diag"
    Trainer(tiny_cfg(names_file, max_steps=12), plain, progress=False).fit()
    result = train_with_diagnostics(tiny_cfg(names_file, max_steps=12), diag, progress=False)
    assert sorted(p.rsplit("/", 1)[-1] for p in result["diagnostics_files"]) == \
        sorted([*PNGS, DIAGNOSTICS_JSON])
    for name in PNGS:
        assert (diag / name).stat().st_size > 0
    report = json.loads((diag / DIAGNOSTICS_JSON).read_text())
    assert report["update_ratio"]["steps"] == list(range(1, 13))
    assert (plain / "metrics.jsonl").read_text().count("\n") == \
        (diag / "metrics.jsonl").read_text().count("\n")
    a, b = load_tensors(plain / "model.safetensors")[0], load_tensors(diag / "model.safetensors")[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    plain_losses = [json.loads(line).get("loss") for line in
                    (plain / "metrics.jsonl").read_text().splitlines()]
    diag_losses = [json.loads(line).get("loss") for line in
                   (diag / "metrics.jsonl").read_text().splitlines()]
    assert plain_losses == diag_losses


def test_train_with_diagnostics_refuses_a_model_without_tanh(tmp_path, names_file):
    cfg = tiny_cfg(names_file, "names-bigram-neural", max_steps=2)
    with pytest.raises(DlfError, match="tanh layers"):
        train_with_diagnostics(cfg, tmp_path / "b", progress=False)
    assert not (tmp_path / "b" / "metrics.jsonl").exists()
