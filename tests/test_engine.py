"""Trainer, run directories, resume, config overrides, atomic checkpoints."""

import json
import math
import os
import re
from itertools import pairwise

import pytest
import torch

from dlf import config as C
from dlf import optim
from dlf import presets as P
from dlf.data import load_lines, split_lines
from dlf.engine import lossplot, tensor_io
from dlf.engine.auto import resolve_auto
from dlf.engine.clock import Clock
from dlf.engine.evaluate import evaluate_split
from dlf.engine.rundata import prepare_data
from dlf.engine.saved import load_run
from dlf.engine.state import TrainState
from dlf.engine.steps import grad_norm, scale_grads
from dlf.engine.trainer import Trainer, fit_counted, train
from dlf.errors import DlfError
from dlf.models import build_model
from runs import tiny_mlp
from tolerances import assert_close_to_scale, fp32_tol, network_terms


def losses(run_dir):
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in recs if "loss" in r], \
        [(r["step"], r["val_loss"]) for r in recs if "val_loss" in r]


def test_run_directory_has_every_file(tmp_path, names_file):
    out = tmp_path / "run"
    requested = C.to_dict(tiny_mlp(names_file))  # built independently of the one trained
    result = Trainer(tiny_mlp(names_file), out, progress=False).fit()
    for f in ("config.toml", "tokenizer.json", "model.safetensors", "state.safetensors",
              "metrics.jsonl", "result.json", "loss.png", "samples.txt"):
        assert (out / f).stat().st_size > 0, f
    saved = json.loads((out / "result.json").read_text())
    for key in ("train_loss", "val_loss", "test_loss", "steps", "wall_seconds", "num_parameters"):
        assert key in saved
    assert saved["steps"] == 30 == result["steps"]
    assert saved["num_parameters"] == sum(p.numel() for p in load_run(out).model.parameters())
    # config.toml is the requested config, every field, with only the vocab size filled in
    # and "auto" settings resolved to this machine's choice
    saved_cfg = C.to_dict(P.load_toml(out / "config.toml"))
    vocab = 1 + len(set("".join(names_file.read_text().split())))  # + the boundary token
    assert requested["model"]["vocab_size"] != vocab
    requested["model"]["vocab_size"] = vocab
    assert saved_cfg.keys() == requested.keys()
    for section, fields in requested.items():
        if isinstance(fields, dict):
            assert saved_cfg[section].keys() == fields.keys(), section
            for key, value in fields.items():
                if value == "auto" and key in ("attention", "micro_batch"):
                    assert saved_cfg[section][key] != "auto", f"{section}.{key}"
                else:
                    assert saved_cfg[section][key] == value, f"{section}.{key}"
        else:
            assert saved_cfg[section] == fields, section


@pytest.mark.parametrize("optimizer,schedule", [("adamw", "cosine"), ("sgd", "step")])
def test_resume_equals_uninterrupted(tmp_path, names_file, optimizer, schedule):
    extra = {"optimizer": optimizer, "schedule": schedule, "warmup_steps": 5,
             "lr": 0.01 if optimizer == "adamw" else 0.1, "milestones": [20],
             "momentum": 0.9 if optimizer == "sgd" else 0.0, "weight_decay": 0.1, "grad_clip": 1.0}
    a = tmp_path / "a"
    Trainer(tiny_mlp(names_file, **extra), a, progress=False).fit()

    b = tmp_path / "b"

    def stop_at_13(step, state, model):
        return step == 13

    r = Trainer(tiny_mlp(names_file, **extra), b, progress=False, callback=stop_at_13).fit()
    assert r == {"interrupted": True, "steps": 13}
    assert max(s for s, _ in losses(b)[0]) == 13
    Trainer(tiny_mlp(names_file, **extra), b, progress=False, resume=True).fit()
    # Bit for bit, on any CPU: both runs execute the same kernels on the same shapes and the
    # same restored values in one process, so there is no rounding difference to allow for.
    assert losses(a) == losses(b)  # every logged batch loss and val loss
    ra = json.loads((a / "result.json").read_text())
    rb = json.loads((b / "result.json").read_text())
    assert ra["val_loss"] == rb["val_loss"] and ra["test_loss"] == rb["test_loss"]


def test_existing_run_is_not_overwritten(tmp_path, names_file):
    out = tmp_path / "run"
    Trainer(tiny_mlp(names_file, max_steps=5), out, progress=False).fit()
    before = {f: f.read_bytes() for f in out.iterdir()}
    again = tiny_mlp(names_file, max_steps=5)
    with pytest.raises(DlfError, match="already holds a run"):
        Trainer(again, out, progress=False)
    assert {f: f.read_bytes() for f in out.iterdir()} == before


def test_resume_rejects_other_model_type(tmp_path, names_file):
    out = tmp_path / "run"
    Trainer(tiny_mlp(names_file, max_steps=5), out, progress=False).fit()
    other = P.load_preset("names-bigram-neural")
    other.data.dataset = str(names_file)
    with pytest.raises(DlfError, match="holds a mlp run"):
        Trainer(other, out, resume=True, progress=False)


def test_text_data_rejects_window_model(tmp_path, text_file):
    cfg = tiny_mlp(text_file)
    cfg.data.format = "text"
    with pytest.raises(DlfError, match="fixed window"):
        Trainer(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_overrides_are_type_checked():
    cfg = P.load_preset("names-mlp")
    C.apply_overrides(cfg, ["train.lr=0.5", "n_hidden=64", "milestones=1,2"])
    assert cfg.train.lr == 0.5 and cfg.model.n_hidden == 64 and cfg.train.milestones == [1, 2]
    with pytest.raises(DlfError, match="valid keys: .*train.lr"):
        C.apply_overrides(cfg, ["train.learning_rate=1"])
    with pytest.raises(DlfError, match="must be an integer"):
        C.apply_overrides(cfg, ["model.n_hidden=big"])
    with pytest.raises(DlfError, match="must be true or false"):
        C.apply_overrides(cfg, ["train.compile=maybe"])


def test_toml_round_trip():
    for name in P.preset_names():
        cfg = P.load_preset(name)
        again = P.from_dict(__import__("tomllib").loads(C.to_toml(cfg)))
        assert C.to_dict(again) == C.to_dict(cfg)


@pytest.mark.parametrize("bad,message", [
    ("train.lr=-1", "train.lr must be >= 0"),
    ("train.batch_size=-2", "train.batch_size must be >= 0"),
    ("train.optimizer=adam", "train.optimizer must be sgd, adamw or muon"),
    ("model.n_hidden=0", "n_hidden"),
    ("train.dtype=fp8", "train.dtype must be fp32 or bf16"),
])
def test_impossible_hyperparameters(tmp_path, names_file, bad, message):
    cfg = C.apply_overrides(tiny_mlp(names_file), [bad])  # well-typed, so accepted here
    with pytest.raises(DlfError, match=message):
        Trainer(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_atomic_save_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    tensor_io.save_tensors(path, {"w": torch.ones(3)}, {"model_type": "mlp"})
    good = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        tensor_io.save_tensors(path, {"w": torch.zeros(3)})
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left


def test_saved_tensors_read_back_by_the_safetensors_library(tmp_path):
    """The streamed writer against safetensors' own reader: every dtype a run saves, views
    and transposes, a scalar, an empty tensor and two names for one tensor (tied)."""
    from safetensors import safe_open

    w = torch.randn(4, 6)
    tensors = {"w": w, "tied": w, "wt": w.T, "col": w[:, 1], "half": torch.randn(5).half(),
               "bf": torch.randn(3, 2, dtype=torch.bfloat16), "scalar": torch.tensor(2.5),
               "empty": torch.zeros(0, 3), "steps": torch.arange(7), "i8": torch.tensor(
                   [-3, 4], dtype=torch.int8), "rng": torch.randint(0, 255, (9,), dtype=torch.uint8),
               "mask": torch.tensor([True, False, True]), "f64": torch.randn(2).double()}
    path = tmp_path / "t.safetensors"
    tensor_io.save_tensors(path, tensors, {"model_type": "mlp", "step": 3})
    with safe_open(path, framework="pt") as f:
        assert f.metadata() == {"model_type": "mlp", "step": "3"}
        assert sorted(f.keys()) == sorted(tensors)
        for name, t in tensors.items():
            got = f.get_tensor(name)
            assert got.dtype == t.dtype and torch.equal(got, t), name
    assert tensor_io.tensor_shapes(path) == {k: tuple(v.shape) for k, v in tensors.items()}
    loaded, _ = tensor_io.load_tensors(path)
    path.write_bytes(b"")  # loaded tensors are copies: the file may change under them
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())


def test_tensor_shapes_refuses_a_truncated_file(tmp_path):
    path = tmp_path / "m.safetensors"
    tensor_io.save_tensors(path, {"w": torch.ones(100)})
    data = path.read_bytes()
    path.write_bytes(data[:-1])
    with pytest.raises(DlfError, match=r"corrupt or truncated checkpoint .*: 4\d\d bytes, "
                       r"its header describes 4\d\d"):
        tensor_io.tensor_shapes(path)
    path.write_bytes(b"\xff" * 8)
    with pytest.raises(DlfError, match="corrupt or truncated checkpoint"):
        tensor_io.tensor_shapes(path)


def test_corrupt_checkpoint_is_clear_error(tmp_path):
    path = tmp_path / "m.safetensors"
    tensor_io.save_tensors(path, {"w": torch.ones(100)}, {"model_type": "mlp"})
    tensors, meta = tensor_io.load_tensors(path)
    assert torch.equal(tensors["w"], torch.ones(100)) and meta == {"model_type": "mlp"}
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DlfError, match="corrupt or truncated"):
        tensor_io.load_tensors(path)
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(DlfError, match="corrupt or truncated"):
        tensor_io.load_tensors(path)


def clip_grad_norm(params, max_norm: float) -> float:
    """The step's clipping: the global norm, then every gradient scaled by at most 1."""
    norm = grad_norm(params)
    scale_grads(params, norm, max_norm)
    return norm.item()


def test_clip_grad_norm_matches_torch():
    torch.manual_seed(0)
    ps = [torch.randn(5, 3, requires_grad=True), torch.randn(7, requires_grad=True)]
    refs = [p.detach().clone().requires_grad_() for p in ps]
    for p, r in zip(ps, refs):
        g = torch.randn_like(p) * 3
        p.grad, r.grad = g.clone(), g.clone()
    n1 = clip_grad_norm(ps, 1.0)
    n2 = torch.nn.utils.clip_grad_norm_(refs, 1.0)
    assert n1 == pytest.approx(n2.item(), rel=1e-6)
    for p, r in zip(ps, refs):
        torch.testing.assert_close(p.grad, r.grad)



def tiny_transformer(text_file, model=(), **train):
    cfg = P.load_preset("shakespeare-transformer-cpu-gpt2")
    cfg.data.dataset = str(text_file)
    C.apply_overrides(cfg, ["model.block_size=16", "model.n_layer=1", "model.n_embd=16",
                            "model.n_head=2", "model.attention=manual", "train.dtype=fp32",
                            "train.num_samples=0",
                            *model])
    t = {"max_steps": 4, "eval_interval": 4, "log_interval": 1, "eval_iters": 2,
         "warmup_steps": 1}
    t.update(train)
    for k, v in t.items():
        setattr(cfg.train, k, v)
    return cfg


def record_sgd_gradients(monkeypatch) -> list[dict[int, torch.Tensor]]:
    """Make every optim.SGD.step first copy the gradients it is about to apply (the
    accumulated, clipped gradient of that step), keyed by id(parameter); returns the list."""
    steps: list[dict[int, torch.Tensor]] = []
    step = optim.SGD.step

    def recording_step(self):
        steps.append({id(p): p.grad.detach().clone()
                      for g in self.param_groups for p in g["params"]})
        step(self)

    monkeypatch.setattr(optim.SGD, "step", recording_step)
    return steps


@pytest.mark.parametrize("grad_accum", [2, 4])
def test_grad_accum_equals_one_big_batch(tmp_path, text_file, monkeypatch, grad_accum):
    """grad_accum micro-batches draw the same rows as one batch of 16 (same generator), so the
    accumulated gradient is the one-batch gradient summed in another order: equal within the
    fp32 summation bound, compared directly before any update. Plain SGD (no momentum, decay or
    clipping) then keeps the few following losses equal too; AdamW would not, because it
    divides by sqrt(v) + eps and turns last-bit noise on a zero gradient (attention's key bias)
    into a full lr-sized step."""
    sgd = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0,
           "grad_clip": 0.0, "schedule": "constant", "warmup_steps": 0, "max_steps": 3,
           "eval_interval": 3}
    grads = record_sgd_gradients(monkeypatch)
    big = Trainer(tiny_transformer(text_file, batch_size=16, **sgd), tmp_path / "big",
                  progress=False)
    big.fit()
    big_grads, grads[:] = list(grads), []
    acc = Trainer(tiny_transformer(text_file, batch_size=16 // grad_accum,
                                   grad_accum=grad_accum, **sgd), tmp_path / "acc",
                  progress=False)
    acc.fit()
    assert len(big_grads) == len(grads) == 3
    m = big.cfg.model
    # each gradient entry sums B*T per-token terms, each through one block (widest sum 4C)
    tol = fp32_tol(network_terms(16 * m.block_size, m.n_layer, 4 * m.n_embd))
    pairs = zip(big.model.named_parameters(), acc.model.named_parameters(), strict=True)
    for (name, p_big), (_, p_acc) in pairs:
        assert_close_to_scale(grads[0][id(p_acc)], big_grads[0][id(p_big)], tol, msg=name)
    for (s1, l1), (s2, l2) in zip(losses(tmp_path / "big")[0], losses(tmp_path / "acc")[0],
                                  strict=True):
        assert s1 == s2 and l1 == pytest.approx(l2, rel=tol)


def test_manual_mlp_trains_through_the_trainer(tmp_path, names_file):
    cfg = P.load_preset("names-mlp-manual")
    cfg.data.dataset = str(names_file)
    C.apply_overrides(cfg, ["model.n_hidden=32", "train.max_steps=60", "train.eval_interval=30",
                            "train.milestones=40", "train.log_interval=10"])
    r = Trainer(cfg, tmp_path / "m", progress=False).fit()
    _, batch_losses = zip(*losses(tmp_path / "m")[0], strict=True)
    assert r["steps"] == 60 and batch_losses[-1] < batch_losses[0]
    assert load_run(tmp_path / "m").model.state_dict().keys() >= {"C", "W1", "bngain"}


def test_transformer_resume_with_dropout_and_bf16(tmp_path, text_file):
    """Dropout masks come from the global RNG: resume must restore it exactly."""
    kw = {"max_steps": 12, "eval_interval": 6, "dtype": "bf16", "model": ["model.dropout=0.2"]}
    Trainer(tiny_transformer(text_file, **kw), tmp_path / "a", progress=False).fit()

    def stop(step, state, model):
        return step == 7

    Trainer(tiny_transformer(text_file, **kw), tmp_path / "b", progress=False,
            callback=stop).fit()
    Trainer(tiny_transformer(text_file, **kw), tmp_path / "b", progress=False,
            resume=True).fit()
    # bit for bit even in bf16: the same kernels, shapes and restored state in one process
    assert losses(tmp_path / "a") == losses(tmp_path / "b")


def test_training_sets_its_thread_count_and_restores_the_callers(tmp_path, names_file):
    """train.threads holds while the run trains; afterwards the caller's count is back.
    threads = 0 trains on the caller's count."""
    before = torch.get_num_threads()
    other = 2 if before == 1 else 1
    seen = []

    def record(step, state, model):
        seen.append(torch.get_num_threads())

    Trainer(tiny_mlp(names_file, threads=other, max_steps=2), tmp_path / "a", progress=False,
            callback=record).fit()
    assert seen == [other, other] and torch.get_num_threads() == before
    seen.clear()
    Trainer(tiny_mlp(names_file, threads=0, max_steps=2), tmp_path / "b", progress=False,
            callback=record).fit()
    assert seen == [before, before] and torch.get_num_threads() == before


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path, text_file):
    """train.compile wraps the training forward in torch.compile. Inductor fuses kernels and
    may reorder reductions, so the fp32 losses of plain SGD steps agree within the summation
    bound rather than bit for bit."""
    sgd = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0,
           "grad_clip": 0.0, "schedule": "constant", "warmup_steps": 0, "max_steps": 3}
    eager = tmp_path / "eager"
    cfg = tiny_transformer(text_file, **sgd)
    Trainer(cfg, eager, progress=False).fit()
    compiled = tmp_path / "compiled"
    Trainer(tiny_transformer(text_file, compile=True, **sgd), compiled, progress=False).fit()
    m, t = cfg.model, cfg.train
    tol = fp32_tol(network_terms(t.batch_size * m.block_size, m.n_layer, 4 * m.n_embd))
    for (s1, l1), (s2, l2) in zip(losses(eager)[0], losses(compiled)[0], strict=True):
        assert s1 == s2 and l1 == pytest.approx(l2, rel=tol)


NO_BIAS = ("model.bias=false",)


def test_micro_batches_equal_one_pass(tmp_path, text_file):
    """micro_batch splits each batch into passes with the same gradient, and the run's
    config.toml records the resolved value. No biases: see the grad_accum test."""
    one = Trainer(tiny_transformer(text_file, NO_BIAS, batch_size=12, micro_batch=0),
                  tmp_path / "one", progress=False)
    one.fit()
    split = Trainer(tiny_transformer(text_file, NO_BIAS, batch_size=12, micro_batch=4),
                    tmp_path / "split", progress=False)
    split.fit()
    for (s1, l1), (s2, l2) in zip(losses(tmp_path / "one")[0], losses(tmp_path / "split")[0],
                                  strict=True):
        assert s1 == s2 and l1 == pytest.approx(l2, rel=1e-5)
    for (n, a), (_, b) in zip(one.model.named_parameters(), split.model.named_parameters(),
                              strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=n)
    auto = Trainer(tiny_transformer(text_file, batch_size=12), tmp_path / "auto", progress=False)
    auto.fit()
    saved = P.load_toml(tmp_path / "auto" / "config.toml")
    assert saved.train.micro_batch == auto.cfg.train.micro_batch != "auto"
    assert saved.model.attention in ("manual", "sdpa")


def test_resolve_auto_rules():
    """The one place "auto" is resolved. Without measuring: the attention kernel by
    device, dtype and dropout, the whole batch in one pass."""
    cfg = P.load_preset("shakespeare-transformer")
    assert cfg.model.attention == "auto" and cfg.train.micro_batch == "auto"
    assert resolve_auto(cfg, torch.device("cuda"), 2) == []
    assert cfg.model.attention == "sdpa" and cfg.train.micro_batch == 0
    for dtype, dropout, kind in (("bf16", 0.0, "manual"), ("fp32", 0.2, "manual"),
                                 ("fp32", 0.0, "sdpa")):
        cfg = P.load_preset("shakespeare-transformer")
        cfg.train.dtype, cfg.model.dropout, cfg.train.probe = dtype, dropout, False
        assert resolve_auto(cfg, torch.device("cpu"), 2) == []
        assert cfg.model.attention == kind and cfg.train.micro_batch == 0
    cfg = P.load_preset("names-mlp")
    resolve_auto(cfg, torch.device("cpu"), 2)
    assert cfg.train.micro_batch == 0  # no attention: the whole batch
    assert C.to_toml(cfg).count("micro_batch = 0") == 1
    C.apply_overrides(cfg, ["train.micro_batch=auto"])
    assert cfg.train.micro_batch == "auto"
    C.apply_overrides(cfg, ["train.micro_batch=8"])
    assert cfg.train.micro_batch == 8
    with pytest.raises(DlfError, match="micro_batch"):
        C.apply_overrides(cfg, ["train.micro_batch=big"])


# --------------------------------------------------------------------- edges and exact values


def count_bigram(names_file):
    cfg = P.load_preset("names-bigram")
    cfg.data.dataset = str(names_file)
    cfg.train.num_samples = 3
    return cfg


def by_hand_bigram_nll(words, k=1.0):
    """Add-k count bigram by hand (Python dicts), its mean -log p over `words`' own pairs."""
    vocab = ["<b>", *sorted(set("".join(words)))]
    counts = {}
    seqs = [["<b>", *w, "<b>"] for w in words]
    for s in seqs:
        for a, b in pairwise(s):
            counts[a, b] = counts.get((a, b), 0) + 1
    rows = {a: sum(counts.get((a, c), 0) + k for c in vocab) for a in vocab}
    nll = [-math.log((counts[a, b] + k) / rows[a]) for s in seqs for a, b in pairwise(s)]
    return sum(nll) / len(nll)


def test_loss_plot_redraws_after_evaluations_at_most_every_few_seconds(tmp_path, monkeypatch):
    drawn, clock = [], [100.0]
    monkeypatch.setattr(lossplot, "plot_loss",
                        lambda records, path, title="": drawn.append(len(records)))
    plot = lossplot.LossPlot(tmp_path / "loss.png", "run", records=[{"step": 0, "loss": 3.0}],
                             every=10.0, now=lambda: clock[0])
    plot.write({"step": 1, "loss": 2.9})  # no evaluation: nothing drawn
    clock[0] = 109.9
    plot.write({"step": 2, "val_loss": 2.8})  # an evaluation 9.9 s after the start: waits
    assert drawn == []
    clock[0] = 110.0
    plot.write({"step": 3, "val_loss": 2.7})  # 10 s after the start: draws every record
    assert drawn == [4]
    clock[0] = 119.9
    plot.write({"step": 4, "val_loss": 2.6})  # 9.9 s after that drawing: waits
    assert drawn == [4]
    clock[0] = 120.0
    plot.write({"step": 5, "loss": 2.5})  # 10 s later, but no evaluation: waits
    assert drawn == [4]
    plot.write({"step": 6, "val_loss": 2.4})  # an evaluation 10 s later: draws
    assert drawn == [4, 7]
    plot.write({"step": 7, "loss": 2.3})
    plot.close()  # the end draws what came since
    plot.close()  # ... once
    assert drawn == [4, 7, 8]


def test_a_loss_plot_shorter_than_its_interval_draws_once_at_the_end(tmp_path):
    clock = [0.0]
    plot = lossplot.LossPlot(tmp_path / "loss.png", "run", every=10.0, now=lambda: clock[0])
    plot.close()  # nothing logged: no file
    assert not (tmp_path / "loss.png").exists()
    for step in range(3):
        clock[0] = step
        plot.write({"step": step, "loss": 3.0 - step, "train_loss": 3.0, "val_loss": 3.1})
    assert not (tmp_path / "loss.png").exists()
    plot.close()
    assert (tmp_path / "loss.png").read_bytes().startswith(b"\x89PNG")


def test_train_fits_a_counted_model_into_its_run_directory(tmp_path, names_file, monkeypatch):
    """train() on a fitted model: one counting pass, logged as step 0, its loss the
    closed-form count-bigram NLL of the train split; a refit (resume) replaces the log."""
    from dlf.engine import clock

    monkeypatch.setattr(clock, "time", Ticks())  # the fit's Clock reads this clock
    out = tmp_path / "run"
    titles = []
    plot = lossplot.plot_loss
    monkeypatch.setattr(lossplot, "plot_loss",
                        lambda records, path, title="": titles.append(title) or plot(
                            records, path, title=title))
    result = train(count_bigram(names_file), out)  # no keywords: every default
    words = split_lines(load_lines(names_file.read_text()))[0]
    assert result["train_loss"] == pytest.approx(by_hand_bigram_nll(words), rel=1e-5)
    assert result["steps"] == 0 and result["train_seconds"] == 0.0
    assert result["steps_per_second"] is None and result["tokens_per_second"] is None
    assert result["wall_seconds"] == 0.25  # two readings of the clock: start and end
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert recs == [{"step": 0, "train_loss": result["train_loss"],
                     "val_loss": result["val_loss"]}]
    tensors, meta = tensor_io.load_tensors(out / "state.safetensors")
    assert int(tensors["step"]) == 0 and meta["model_type"] == "count-bigram"
    assert tensor_io.load_tensors(out / "model.safetensors")[1]["model_type"] == "count-bigram"
    assert titles == ["names-bigram"]  # loss.png is titled with the run's name
    with pytest.raises(DlfError, match="already holds a run"):
        train(count_bigram(names_file), out)  # force is off by default
    # callback and progress are for trained models: accepted and ignored
    again = train(count_bigram(names_file), out, resume=True, progress=False,
                  callback=lambda *a: pytest.fail("a fitted model has no steps"))
    assert again["train_loss"] == result["train_loss"]
    assert [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] \
        == recs  # replaced, not appended to


def test_fit_counted_refuses_a_trained_model(tmp_path, names_file):
    with pytest.raises(DlfError, match="^a mlp model is trained, not fitted: use train\\(\\)$"):
        fit_counted(tiny_mlp(names_file), tmp_path / "run")


def test_train_passes_its_keywords_to_the_trainer(tmp_path, names_file):
    steps = []
    r = train(tiny_mlp(names_file, max_steps=3, eval_interval=3), tmp_path / "run",
              progress=False, callback=lambda step, state, model: steps.append(step))
    assert steps == [1, 2, 3] and r["steps"] == 3


@pytest.mark.parametrize("preset", ["names-bigram", "names-mlp-manual"])
def test_several_processes_refuse_a_fitted_or_manual_model_before_starting(
        tmp_path, names_file, monkeypatch, preset):
    cfg = P.load_preset(preset)
    cfg.data.dataset = str(names_file)
    monkeypatch.setenv("WORLD_SIZE", "2")
    how = "fitted in one counting pass" if preset == "names-bigram" else "hand-written backward"
    with pytest.raises(DlfError, match=f"^a {cfg.model.type} model .*{how}"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_clip_grad_norm_leaves_a_small_gradient_alone():
    torch.manual_seed(0)
    ps = [torch.randn(5, 3, requires_grad=True), torch.randn(7, requires_grad=True)]
    refs = [p.detach().clone().requires_grad_() for p in ps]
    for p, r in zip(ps, refs):
        g = torch.randn_like(p)
        p.grad, r.grad = g.clone(), g.clone()
    n1 = clip_grad_norm(ps, 100.0)  # the norm is about 4.7: nothing to clip
    n2 = torch.nn.utils.clip_grad_norm_(refs, 100.0)
    assert n1 == pytest.approx(n2.item(), rel=1e-6) and n1 < 100
    for p, r in zip(ps, refs):
        torch.testing.assert_close(p.grad, r.grad)


def test_the_clock_counts_step_time_wall_time_and_throughput():
    """On a fake clock: step time is what ran inside `step()`, wall time runs from the
    start plus what the run spent before it was resumed, and tokens/s is the tokens of
    the steps since the last reading over the time since it."""
    ticks = iter([10.0, 11.0, 11.5, 12.0, 14.0, 15.0, 16.0, 20.0])
    state = TrainState(step=4, train_seconds=3.0, wall_seconds=7.0)
    clock = Clock(100, 0.0, tokens_per_step=32, state=state,
                  now=lambda: next(ticks))  # started at 10.0
    with clock.step(state):  # 11.0 .. 11.5
        pass
    with clock.step(state):  # 12.0 .. 14.0
        pass
    assert state.train_seconds == 3.0 + 0.5 + 2.0
    assert clock.tokens_per_second(6) == 32 * (6 - 4) / (15.0 - 10.0)
    assert clock.tokens_per_second(7) == 32 * 1 / (16.0 - 15.0)
    assert clock.tick(state) is state and state.wall_seconds == 7.0 + (20.0 - 10.0)
    assert not clock.out_of_time(state)
    spent = TrainState(train_seconds=2.0)
    assert Clock(10, 2.0, 1, spent).out_of_time(spent)


@pytest.mark.parametrize(("max_seconds", "spent", "step", "position"), [
    (0.0, 50.0, 10, 10),  # no time budget: the step itself
    (10.0, 2.5, 10, 25),  # a quarter of the budget spent: a quarter of the schedule
    (10.0, 2.5, 30, 30),  # ... but never behind the step
    (10.0, 20.0, 10, 100),  # past the budget: the schedule's end
    (0.5, 0.25, 0, 50),  # a budget under a second
])
def test_a_time_budget_runs_the_schedule_on_the_share_spent(
        tmp_path, names_file, max_seconds, spent, step, position):
    state = TrainState(step=step, train_seconds=spent)
    clock = Clock(100, max_seconds, tokens_per_step=32, state=state)
    assert clock.schedule_position(state) == position


def test_read_json(tmp_path):
    p = tmp_path / "r.json"
    p.write_text('{"name": "zoë", "loss": 2.5}\n', encoding="utf-8")
    assert tensor_io.read_json(p) == {"name": "zoë", "loss": 2.5}
    assert tensor_io.read_json(str(p)) == {"name": "zoë", "loss": 2.5}
    with pytest.raises(DlfError, match=f"^file not found: {tmp_path / 'gone.json'}$"):
        tensor_io.read_json(tmp_path / "gone.json")
    p.write_text("{cut", encoding="utf-8")
    with pytest.raises(DlfError, match=f"^cannot read {p}: Expecting property name"):
        tensor_io.read_json(p)


def test_saved_tensors_are_independent_contiguous_cpu_copies(tmp_path):
    """save_tensors copies each tensor to contiguous CPU memory of its own: a transposed view,
    a tensor that needs grad and two names for one tensor (tied weights) all round-trip."""
    w = torch.arange(12.0).reshape(3, 4)
    tensors = {"t": w.t(), "g": torch.ones(2, requires_grad=True), "a": w, "tied": w}
    path = tmp_path / "m.safetensors"
    tensor_io.save_tensors(path, tensors, {"model_type": "mlp", "step": 3})
    loaded, meta = tensor_io.load_tensors(path)
    assert loaded.keys() == tensors.keys()
    for k, v in tensors.items():
        assert torch.equal(loaded[k], v.detach()), k
    assert meta == {"model_type": "mlp", "step": "3"}  # metadata values are stored as text
    tensor_io.save_tensors(path, {"w": w})
    assert tensor_io.load_tensors(path)[1] == {}  # no metadata


def test_load_tensors_refusals_word_for_word(tmp_path):
    with pytest.raises(DlfError, match=f"^checkpoint not found: {tmp_path / 'gone'}$"):
        tensor_io.load_tensors(tmp_path / "gone")
    with pytest.raises(DlfError, match=f"^cannot read checkpoint {tmp_path}: Is a directory$"):
        tensor_io.load_tensors(tmp_path)


def test_write_json_is_indented_text_with_a_final_newline(tmp_path):
    path = tmp_path / "result.json"
    tensor_io.write_json(path, {"steps": 3, "warnings": []})
    assert path.read_text() == '{\n  "steps": 3,\n  "warnings": []\n}\n'


def test_metrics_log_appends_and_stops_at_a_torn_line(tmp_path):
    from dlf.engine.metrics import MetricsLog

    log = MetricsLog(str(tmp_path / "metrics.jsonl"))
    assert log.read() == []  # no file yet
    log.append({"step": 1, "loss": 3.5, "name": "zoë"})
    log.append({"step": 2, "loss": 3.25})
    assert log.read() == [{"step": 1, "loss": 3.5, "name": "zoë"}, {"step": 2, "loss": 3.25}]
    assert (tmp_path / "metrics.jsonl").read_bytes().decode("utf-8").count("\n") == 2
    # a kill tore line 3: what follows it is not trusted either
    with (tmp_path / "metrics.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"step": 3, "lo\n{"step": 4, "loss": 3.0}\n')
    assert [r["step"] for r in log.read()] == [1, 2]
    log.truncate_after(1)
    assert log.read() == [{"step": 1, "loss": 3.5, "name": "zoë"}]


class Ticks:
    """A stand-in for the time module whose clock moves 0.25 s at every reading."""

    def __init__(self):
        self.readings = []

    def perf_counter(self) -> float:
        self.readings.append(0.25 * len(self.readings))
        return self.readings[-1]


def test_records_and_result_of_a_trained_run(tmp_path, names_file, monkeypatch):
    """metrics.jsonl's step records (the schedule's lr, timings) and evaluations, and
    result.json's figures: the best evaluation's losses, the test loss of the saved weights,
    the step and token rates from the wall time."""
    from dlf.engine import clock

    ticks = Ticks()
    monkeypatch.setattr(clock, "time", ticks)  # the run's Clock reads this clock
    out = tmp_path / "run"
    cfg = tiny_mlp(names_file, max_steps=6, eval_interval=3, log_interval=2, lr=0.05,
                   schedule="cosine", warmup_steps=2, min_lr=0.01)
    result = Trainer(cfg, out, progress=False).fit()
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if "loss" in r]
    evals = [r for r in recs if "val_loss" in r]
    schedule = optim.make_schedule("cosine", 0.05, warmup_steps=2, total_steps=6, min_lr=0.01)
    assert [r["step"] for r in steps] == [2, 4, 6]
    for r in steps:
        assert r.keys() == {"step", "loss", "lr", "tokens_per_second", "train_seconds"}
        assert r["lr"] == schedule(r["step"] - 1)  # the lr the logged step trained with
        # what Clock measured: each step is two readings, one tick apart; throughput is
        # the batch's 16 targets a step over the ticks since the last logged step
        assert r["train_seconds"] == 0.25 * r["step"]
        assert any(r["tokens_per_second"] == round(16 * 2 / (0.25 * k), 1)
                   for k in range(1, len(ticks.readings)))
    assert [r["step"] for r in evals] == [3, 6] and all(r.keys() == {"step", "train_loss",
                                                                     "val_loss"} for r in evals)
    best = min(evals, key=lambda r: r["val_loss"])
    assert (result["train_loss"], result["val_loss"]) == (best["train_loss"], best["val_loss"])
    run = load_run(out)
    data = prepare_data(run.config, tokenizer=run.tokenizer)
    assert result["test_loss"] == evaluate_split(run.model, data.test, run.config.train,
                                                 torch.device("cpu"))
    assert result["steps"] == 6 and result["num_parameters"] == run.model.num_parameters()
    assert result["train_seconds"] == 1.5  # 6 steps of one tick
    assert result["wall_seconds"] in ticks.readings  # a reading since the start (0.0)
    assert result["steps_per_second"] == round(6 / result["wall_seconds"], 2)
    for key, digits in (("wall_seconds", 2), ("train_seconds", 2), ("steps_per_second", 2),
                        ("tokens_per_second", 1)):
        assert result[key] == round(result[key], digits), key
    # the rates divide by the unrounded wall time, within 0.005 s of the rounded one
    wall = result["wall_seconds"]
    for key, per_step, digits in (("steps_per_second", 1, 2), ("tokens_per_second", 16, 1)):
        lo, hi = 6 * per_step / (wall + 0.005), 6 * per_step / (wall - 0.005)  # batch of 16
        assert lo - 0.5 * 10**-digits <= result[key] <= hi + 0.5 * 10**-digits, key
    assert (result["name"], result["model_type"], result["dataset"]) == (
        cfg.name, "mlp", str(names_file))
    assert (result["device"], result["dtype"], result["torch"]) == ("cpu", "fp32",
                                                                    torch.__version__)
    assert json.loads((out / "result.json").read_text()) == result


@pytest.mark.parametrize(("preset", "setting", "message"), [
    ("names-bigram", "train.lr=0.5", ("train.lr = 0.5 has no effect: a count-bigram model is "
                                      "fitted by counting, not trained; remove the setting")),
    ("names-bigram", "train.max_steps=5", ("a count-bigram model is fitted in one counting "
                                           "pass: set train.max_steps = 0 (got 5)")),
    ("names-mlp-manual", "train.optimizer=adamw", (
        "train.optimizer = 'adamw' has no effect: a manual-mlp model trains with plain SGD on "
        "its hand-written gradients, in fp32; remove the setting")),
])
def test_settings_that_a_regime_would_ignore_are_refused(tmp_path, names_file, preset,
                                                         setting, message):
    cfg = C.apply_overrides(P.load_preset(preset), [setting])
    cfg.data.dataset = str(names_file)
    with pytest.raises(DlfError, match="^" + re.escape(message) + "$"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_full_batch_steps_on_the_whole_train_split(tmp_path, names_file):
    """train.batch_size = 0: every step's batch is the whole train split, so the first
    step's loss is the initial model's loss on all of it."""
    cfg = tiny_mlp(names_file, batch_size=0, max_steps=2, eval_interval=2)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    torch.manual_seed(cfg.train.seed)  # the initial weights, as prepare() draws them
    reference = build_model(trainer.cfg.model)
    _, loss = reference(trainer.data.train.X, trainer.data.train.Y)  # train mode, as a step
    result = trainer.fit()
    recs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text()
            .splitlines()]
    assert next(r["loss"] for r in recs if "loss" in r) == pytest.approx(loss.item(), rel=1e-6)
    n = len(trainer.data.train)  # targets per step: one per row of the split
    wall = result["wall_seconds"]
    assert 2 * n / (wall + 0.005) - 0.05 <= result["tokens_per_second"] <= \
        2 * n / (wall - 0.005) + 0.05


def test_full_batch_needs_line_data(tmp_path, text_file):
    cfg = tiny_transformer(text_file, batch_size=0)
    cfg.data.format = "text"
    with pytest.raises(DlfError, match=r"^train\.batch_size = 0 \(full batch\) needs line "
                                       r"data$"):
        Trainer(cfg, tmp_path / "run", progress=False).fit()


def test_divergence_names_the_first_step_past_ten_times_the_first_loss(tmp_path, names_file,
                                                                       capsys):
    out = tmp_path / "run"
    result = Trainer(tiny_mlp(names_file, lr=1e6, max_steps=20, grad_clip=0.0), out,
                     progress=False).fit()
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in recs if "loss" in r}  # every step (interval 1)
    first = losses[1]
    k = min(s for s, v in losses.items() if v > 10 * first)
    assert result["warnings"] == [(f"diverging: the loss exceeded 10x the first step's "
                                   f"({first:.4g}) from step {k}; lower train.lr")]
    err = capsys.readouterr().err
    assert err.count("warning:") == 1
    assert (f"warning: loss {losses[k]:.4g} at step {k} is more than 10x the first step's "
            f"{first:.4g}: the run is diverging; lower train.lr\n") in err


def test_progress_bar_shows_the_steps_last_loss_and_evaluations(tmp_path, names_file, capsys):
    out = tmp_path / "run"
    cfg = tiny_mlp(names_file, max_steps=4, eval_interval=2, log_interval=2)
    Trainer(cfg, out, progress=True).fit()
    captured = capsys.readouterr()
    err = captured.err
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for r in (r for r in recs if "val_loss" in r):  # above the bar (tqdm.write: stdout)
        line = f"step {r['step']}: train {r['train_loss']:.4f}, val {r['val_loss']:.4f}\n"
        assert line in captured.out + err
    last = [r for r in recs if "loss" in r][-1]
    final = err.rsplit("\r", 1)[-1]  # the bar as it was left
    # tqdm shows a rate as step/s, or as s/step when a step takes over a second
    assert "4/4" in final and ("step/s" in final or "s/step" in final), final
    assert f"loss={last['loss']:.4f}, lr={last['lr']:.2e}, tok_s=" in final, final
    assert "warning" not in err


def test_a_spent_time_budget_ends_the_run_after_that_step(tmp_path, names_file):
    """train.max_seconds is checked after every step: a budget of 1 ns ends the run after
    step 1, which is then logged, evaluated and checkpointed like a last step."""
    out = tmp_path / "run"
    cfg = tiny_mlp(names_file, max_steps=1000, max_seconds=1e-9, log_interval=100,
                   eval_interval=100, schedule="cosine", warmup_steps=10, lr=0.05)
    result = Trainer(cfg, out, progress=False).fit()
    assert result["steps"] == 1
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 1] and "loss" in recs[0] and "val_loss" in recs[1]
    schedule = optim.make_schedule("cosine", 0.05, warmup_steps=10, total_steps=1000)
    assert recs[0]["lr"] == schedule(0)  # no time spent before step 1: the schedule's start
    tensors, _ = tensor_io.load_tensors(out / "state.safetensors")
    assert int(tensors["step"]) == 1

