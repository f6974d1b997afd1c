"""dlf bench: the figures are produced and consistent (speed itself is never asserted)."""

import json

import pytest
import torch
import torch.nn.functional as F

from dlf import bench
from dlf import config as C
from dlf.cli import main
from dlf.data.datasets import IGNORE_INDEX
from dlf.engine.steps import STEPS, AutogradStep
from dlf.models import build_model
from dlf.models.rnn import GRUConfig
from tolerances import fp64_tol


def test_bench_train_reports_mfu(capsys):
    assert main(["bench", "train", "--preset", "shakespeare-transformer-cpu-gpt2", "--steps", "1",
                 "--batch-size", "2", "--set", "model.n_layer=1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("tokens_per_second", "gflops", "peak_gflops", "mfu"):
        assert r[key] > 0
    # Python floats: one division each way
    assert r["mfu"] == pytest.approx(r["gflops"] / r["peak_gflops"], rel=fp64_tol(1))
    assert r["block_size"] == 32 and r["batch_size"] == 2


def test_bench_sample_cached_equals_uncached(capsys):
    assert main(["bench", "sample", "--preset", "shakespeare-transformer-cpu-gpt2",
                 "--new-tokens", "70", "--json"]) == 0  # past block 32: the window slides
    r = json.loads(capsys.readouterr().out)
    assert r["identical_tokens"] is True
    ratio = r["cached_tokens_per_second"] / r["uncached_tokens_per_second"]
    # (n / t_c) / (n / t_u) against t_u / t_c: three float64 divisions
    assert r["speedup"] == pytest.approx(ratio, rel=fp64_tol(3))


def test_bench_rejects_bad_arguments(capsys):
    assert main(["bench", "sample", "--preset", "names-mlp"]) == 2
    assert "needs a sequence model" in capsys.readouterr().err
    assert main(["bench", "train", "--steps", "0"]) == 2


def test_bench_times_the_trainers_own_step(monkeypatch):
    """`dlf bench train` runs the step the training loop runs (STEPS["autograd"]), on a
    batch that counts its targets as the trainer's batches do."""
    batches = []

    class Recording(AutogradStep):
        def __call__(self, next_batch, lr):
            batches.append(next_batch())
            return super().__call__(next_batch, lr)

    assert STEPS["autograd"] is AutogradStep
    monkeypatch.setattr(bench, "AutogradStep", Recording)
    bench.bench_train("shakespeare-transformer-cpu-gpt2", steps=2, batch_size=3,
                      overrides=["model.n_layer=1"])
    assert len(batches) == 3  # a warm-up and two timed steps
    x, y, n = batches[0]
    assert x.shape == y.shape == (3, 32) and n == y.numel()


def test_the_step_on_micro_batches_of_padded_rows_equals_one_autograd_pass():
    """The one step implementation (what training and bench run): passes of 2 + 2 + 1 padded
    rows give the loss and gradients of plain autograd on the whole batch, the mean over
    its non-padding targets."""
    torch.manual_seed(0)
    V, T = 7, 6
    model = build_model(GRUConfig(vocab_size=V, block_size=T, n_embd=4, n_hidden=5))
    ref = build_model(GRUConfig(vocab_size=V, block_size=T, n_embd=4, n_hidden=5))
    ref.load_state_dict(model.state_dict())
    x = torch.randint(0, V, (5, T))
    y = torch.randint(0, V, (5, T))
    for row, length in enumerate((6, 2, 4, 1, 3)):  # rows of different lengths
        y[row, length:] = IGNORE_INDEX
    t = C.TrainConfig(optimizer="sgd", lr=0.0, micro_batch=2)  # lr 0: the gradients stay
    step = AutogradStep(model, t, torch.device("cpu"))
    captured = {}
    step.optimizer.zero_grad = lambda: captured.update(
        {n: p.grad.clone() for n, p in model.named_parameters()})
    loss, norm = step(lambda: (x, y, int((y != IGNORE_INDEX).sum())), 0.0)
    logits, _ = ref(x)
    want = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1), ignore_index=IGNORE_INDEX)
    want.backward()
    torch.testing.assert_close(loss, want.detach(), rtol=1e-6, atol=1e-7)
    # the step's gradient norm: the global L2 norm of the reference's gradients
    ref_norm = torch.cat([p.grad.reshape(-1) for p in ref.parameters()]).norm()
    torch.testing.assert_close(norm, ref_norm, rtol=1e-5, atol=1e-7)
    for name, p in ref.named_parameters():
        torch.testing.assert_close(captured[name], p.grad, rtol=1e-5, atol=1e-7, msg=name)
