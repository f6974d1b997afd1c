"""Whole-line sequences, the recurrent cells and the sequence models (rnn, gru, bow),
against independent references: the window dataset, torch.nn.RNNCell / GRUCell, a
closed-form bigram loss, explicit per-token sums and the uncached sampling loop."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from dlf import config as C
from dlf import presets as P
from dlf.cli import main
from dlf.data.datasets import IGNORE_INDEX, SequenceDataset, WordDataset
from dlf.data.tokenizer import CharTokenizer
from dlf.diagnostics import diagnose_run, measure, record_activations
from dlf.engine.evaluate import evaluate
from dlf.engine.saved import load_run
from dlf.engine.trainer import Trainer
from dlf.errors import DlfError
from dlf.models import build_model
from dlf.models.bow import BoWConfig, causal_mean
from dlf.models.protocol import capabilities
from dlf.models.rnn import GRUConfig, RNNConfig
from dlf.models.transformer import TransformerConfig
from dlf.nn import GRUCell, RNNCell
from dlf.sample import sample

WORDS = ["ab", "c", "abcab", "ba", "cccc"]


def tok() -> CharTokenizer:
    return CharTokenizer.from_lines(WORDS)


# ------------------------------------------------------------------------------ data


def test_sequence_rows_hold_exactly_the_window_targets():
    t = tok()
    seq = SequenceDataset(WORDS, t)
    assert seq.X.shape == seq.Y.shape == (5, 6)  # longest word 5, + 1
    assert seq.X[:, 0].eq(t.boundary).all()
    # the non-padding targets, row by row, are the window dataset's targets in order
    targets = seq.Y[seq.Y != IGNORE_INDEX]
    torch.testing.assert_close(targets, WordDataset(WORDS, t, 3).Y)
    assert seq.num_targets == sum(len(w) + 1 for w in WORDS)
    assert seq.targets_per_row == seq.num_targets / 5
    # inputs are the targets shifted right by one, behind a boundary
    row = seq.X[2].tolist()
    assert row == [t.boundary, *t.encode("abcab")]
    with pytest.raises(DlfError, match="shorter than the longest"):
        SequenceDataset(WORDS, t, length=5)


def _bigram_transformer(vocab_size, block_size):
    """A Transformer whose blocks add nothing and whose positions are zero: the logits at
    a position depend on that position's character alone (a bigram)."""
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=vocab_size, block_size=block_size, n_layer=1, n_head=1,
                            n_embd=8, dropout=0.0)
    model = build_model(cfg)
    with torch.no_grad():
        model.wpe.weight.zero_()
        for blk in model.blocks:
            for lin in (blk.attn.c_proj, blk.mlp.c_proj):
                lin.weight.zero_()
                lin.bias.zero_()
    return model.eval()


def test_windows_and_sequences_give_the_same_loss():
    t = tok()
    model = _bigram_transformer(t.vocab_size, 8)
    dev = torch.device("cpu")
    as_windows = evaluate(model, WordDataset(WORDS, t, 4), device=dev)
    as_sequences = evaluate(model, SequenceDataset(WORDS, t), device=dev)
    # closed form: mean over every (previous, next) pair of -log p(next | previous)
    with torch.no_grad():
        table = torch.log_softmax(model.logits(torch.arange(t.vocab_size)[None])[0], -1)
    pairs = [(a, b) for w in WORDS
             for a, b in zip([t.boundary, *t.encode(w)], [*t.encode(w), t.boundary], strict=True)]
    closed = -sum(table[a, b].item() for a, b in pairs) / len(pairs)
    assert as_windows == pytest.approx(closed, rel=1e-6)
    assert as_sequences == pytest.approx(closed, rel=1e-6)


@pytest.mark.parametrize("kind", ["transformer", "rnn", "gru", "bow"])
def test_loss_is_per_predicted_character(kind):
    """Exact evaluation of padded sequences = sum of token losses / number of tokens, also
    when the rows are split into chunks with different numbers of real targets."""
    t = tok()
    ds = SequenceDataset(WORDS * 300, t)  # 1500 rows: several evaluation chunks
    model = _model(kind, t.vocab_size).eval()
    with torch.no_grad():
        logits, _ = model(ds.X)
        logp = torch.log_softmax(logits, -1)
    total, count = 0.0, 0
    for i in range(len(ds)):
        for j in range(ds.Y.shape[1]):
            if ds.Y[i, j] != IGNORE_INDEX:
                total -= logp[i, j, ds.Y[i, j]].item()
                count += 1
    got = evaluate(model, ds, device=torch.device("cpu"))
    assert got == pytest.approx(total / count, rel=1e-5)


def _model(kind, vocab_size, seed=0):
    torch.manual_seed(seed)
    cfgs = {"transformer": TransformerConfig(vocab_size=vocab_size, block_size=8, n_layer=1,
                                             n_head=2, n_embd=8, dropout=0.0),
            "rnn": RNNConfig(vocab_size=vocab_size, block_size=8, n_embd=6, n_hidden=10),
            "gru": GRUConfig(vocab_size=vocab_size, block_size=8, n_embd=6, n_hidden=10),
            "bow": BoWConfig(vocab_size=vocab_size, block_size=8, n_embd=6, n_hidden=10)}
    return build_model(cfgs[kind])


# ------------------------------------------------------------------------------ cells


@pytest.mark.parametrize("ours_cls,ref_cls", [(RNNCell, torch.nn.RNNCell),
                                              (GRUCell, torch.nn.GRUCell)])
def test_cells_match_torch(ours_cls, ref_cls):
    torch.manual_seed(0)
    I, H, B = 5, 7, 4
    ours = ours_cls(I, H).to(dtype=torch.float64)
    ref = ref_cls(I, H).double()
    with torch.no_grad():  # torch stores (out, in); ours (in, out)
        ours.ih.weight.copy_(ref.weight_ih.T)
        ours.hh.weight.copy_(ref.weight_hh.T)
        ours.ih.bias.copy_(ref.bias_ih)
        ours.hh.bias.copy_(ref.bias_hh)
    x = torch.randn(3, B, I, dtype=torch.float64)
    h0 = torch.randn(B, H, dtype=torch.float64)
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    hs = [h0.clone().requires_grad_(), h0.clone().requires_grad_()]
    outs = []
    for cell, xi, h in ((ours, xs[0], hs[0]), (ref, xs[1], hs[1])):
        steps = []
        for t in range(3):  # three steps: gradients also flow through the recurrence
            h = cell(xi[t], h)
            steps.append(h)
        outs.append(torch.stack(steps))
    torch.testing.assert_close(outs[0], outs[1])
    w = torch.randn_like(outs[0])
    (outs[0] * w).sum().backward()
    (outs[1] * w).sum().backward()
    torch.testing.assert_close(xs[0].grad, xs[1].grad)
    torch.testing.assert_close(hs[0].grad, hs[1].grad)
    torch.testing.assert_close(ours.ih.weight.grad, ref.weight_ih.grad.T)
    torch.testing.assert_close(ours.hh.weight.grad, ref.weight_hh.grad.T)
    torch.testing.assert_close(ours.ih.bias.grad, ref.bias_ih.grad)
    torch.testing.assert_close(ours.hh.bias.grad, ref.bias_hh.grad)


def test_causal_mean_is_the_running_average():
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    ref = torch.stack([x[:, : t + 1].mean(1) for t in range(5)], dim=1)
    torch.testing.assert_close(causal_mean(x), ref)


@pytest.mark.parametrize("kind", ["rnn", "gru", "bow", "transformer"])
def test_sequence_models_are_causal(kind):
    model = _model(kind, 6).eval()
    idx = torch.randint(0, 6, (2, 8))
    changed = idx.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 6
    a, _ = model(idx)
    b, _ = model(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])
    assert capabilities(model).sequence_targets


def test_rnn_diagnostics_record_every_step_with_its_full_gradient():
    """tanh.out of the unrolled RNN is h_1 .. h_T, and its grad is dL/dh_t through the
    output layer and every later step (autograd on the states, retained one by one)."""
    model = _model("rnn", 6)
    idx = torch.randint(0, 6, (3, 8))
    y = torch.randint(0, 6, (3, 8))
    record_activations(model, grads=True)
    model(idx, y)[1].backward()
    rec = model.cell.tanh.out
    # reference: the same recurrence with every state's gradient retained
    emb = model.wte(idx)
    h = model.start.expand(3, -1)
    states = []
    for t in range(8):
        h = torch.tanh(model.cell.ih(emb[:, t]) + model.cell.hh(h))
        h.retain_grad()
        states.append(h)
    F.cross_entropy(model.lm_head(torch.stack(states, 1)).reshape(24, -1), y.reshape(24)).backward()
    torch.testing.assert_close(rec, torch.stack([s.detach() for s in states], 1))
    torch.testing.assert_close(rec.grad, torch.stack([s.grad for s in states], 1))
    model.cell.tanh.retain_out_grad = False
    stats = measure(model, idx, y)
    assert stats["activation_grads"][0]["std"] == pytest.approx(rec.grad.std().item())


# ------------------------------------------------------------------------------ training


def tiny_seq(names_file, kind, **train):
    cfg = P.load_preset(f"names-{kind}")
    cfg.data.dataset = str(names_file)
    sizes = {"transformer": ["model.n_layer=1", "model.n_head=2", "model.n_embd=8"],
             "rnn": ["model.n_embd=6", "model.n_hidden=12"],
             "gru": ["model.n_embd=6", "model.n_hidden=12"],
             "bow": ["model.n_embd=6", "model.n_hidden=12"]}[kind]
    C.apply_overrides(cfg, sizes)
    t = {"max_steps": 20, "batch_size": 8, "eval_interval": 10, "log_interval": 1,
         "num_samples": 4, "warmup_steps": 2}
    t.update(train)
    for k, v in t.items():
        setattr(cfg.train, k, v)
    return cfg


def test_micro_batches_weigh_passes_by_their_targets(tmp_path, names_file):
    """Passes of padded rows hold different numbers of targets: each pass's mean loss
    must weigh by its share of the batch's targets (not of its rows) for micro-batches
    (passes of 3, 3 and 2 names here) to give one pass's gradient, loss and weights."""
    runs = {}
    for mb in (0, 3):
        cfg = tiny_seq(names_file, "gru", max_steps=6, eval_interval=6, num_samples=0,
                       micro_batch=mb, dtype="fp32", threads=1)
        trainer = Trainer(cfg, tmp_path / str(mb), progress=False)
        trainer.fit()
        recs = [json.loads(s) for s in (tmp_path / str(mb) / "metrics.jsonl").read_text()
                .splitlines()]
        runs[mb] = ([(r["step"], r["loss"]) for r in recs if "loss" in r],
                    dict(trainer.model.named_parameters()))
    (one, w1), (split, w2) = runs[0], runs[3]
    assert len(one) == 6
    for (s1, l1), (s2, l2) in zip(one, split, strict=True):
        assert s1 == s2 and l1 == pytest.approx(l2, rel=1e-5)
    for name, a in w1.items():
        torch.testing.assert_close(a, w2[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("kind", ["transformer", "rnn", "gru", "bow"])
def test_sequence_presets_train_sample_eval_and_resume(tmp_path, names_file, kind, capsys):
    cfg = tiny_seq(names_file, kind)
    assert cfg.data.layout == "sequences"
    a = tmp_path / "a"
    result = Trainer(cfg, a, progress=False).fit()
    assert math.isfinite(result["test_loss"]) and result["steps"] == 20
    ds_rows = (a / "samples.txt").read_text().splitlines()
    assert len(ds_rows) == 4
    # tokens per step count real characters: batch x mean targets per row
    recs = [json.loads(s) for s in (a / "metrics.jsonl").read_text().splitlines()]
    assert all("tokens_per_second" in r for r in recs if "loss" in r)
    # interrupted + resumed = uninterrupted
    b = tmp_path / "b"

    def stop_at_7(step, state, model):
        return step == 7

    Trainer(tiny_seq(names_file, kind), b, progress=False, callback=stop_at_7).fit()
    Trainer(tiny_seq(names_file, kind), b, progress=False, resume=True).fit()
    rb = json.loads((b / "result.json").read_text())
    assert rb["val_loss"] == result["val_loss"] and rb["test_loss"] == result["test_loss"]
    # the CLI: eval gives result.json's test loss; sample is reproducible
    assert main(["eval", str(a), "--split", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == pytest.approx(result["test_loss"])
    assert main(["sample", str(a), "-n", "3", "--seed", "1"]) == 0
    first = capsys.readouterr().out
    assert main(["sample", str(a), "-n", "3", "--seed", "1"]) == 0
    assert capsys.readouterr().out == first and len(first.splitlines()) == 3


@pytest.mark.parametrize("kind", ["transformer", "rnn", "gru", "bow"])
def test_prefill_and_advance_give_the_forward_logits(kind):
    """A cache of any kind (keys and values, a hidden state, a running sum): prefilling the
    first 3 tokens and advancing one token at a time gives, at every position, the logits
    the full forward pass gives there."""
    model = _model(kind, 7)
    model.eval()
    idx = torch.randint(0, 7, (2, 8), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        full, _ = model(idx)  # (2, 8, 7)
        logits, cache = model.prefill(idx[:, :3])
        got = [logits]
        for t in range(3, 8):
            logits, cache = model.advance(idx[:, t : t + 1], cache)
            got.append(logits)
    torch.testing.assert_close(torch.stack(got, dim=1), full[:, 2:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["transformer", "rnn", "gru", "bow"])
def test_cached_sampling_equals_the_uncached_loop(kind):
    t = tok()
    model = _model(kind, t.vocab_size)
    assert capabilities(model).sequence_targets  # which offer prefill and advance
    kw = {"seed": 3, "layout": "sequences", "max_new_tokens": 20, "prompt": "a"}
    cached = sample(model, t, n=6, use_cache=True, **kw)
    plain = sample(model, t, n=6, use_cache=False, **kw)
    assert cached == plain
    assert all(s.startswith("a") and t.symbol_of_boundary not in s for s in cached) \
        if hasattr(t, "symbol_of_boundary") else all(s.startswith("a") for s in cached)
    # a sample longer than block_size slides its window the same way in both loops
    long_c = sample(model, t, n=2, use_cache=True, seed=0, layout="sequences",
                    max_new_tokens=30, temperature=0.0)
    long_p = sample(model, t, n=2, use_cache=False, seed=0, layout="sequences",
                    max_new_tokens=30, temperature=0.0)
    assert long_c == long_p


def test_sequence_layout_needs_a_sequence_model_and_lines(tmp_path, names_file, text_file):
    cfg = P.load_preset("names-mlp")
    cfg.data.dataset = str(names_file)
    cfg.data.layout = "sequences"
    with pytest.raises(DlfError, match="sequence model"):
        Trainer(cfg, tmp_path / "a", progress=False)
    cfg = tiny_seq(names_file, "rnn")
    cfg.data.dataset, cfg.data.format = str(text_file), "text"
    with pytest.raises(DlfError, match="for line data"):
        Trainer(cfg, tmp_path / "b", progress=False)
    cfg = tiny_seq(names_file, "transformer")
    cfg.model.block_size = 3
    with pytest.raises(DlfError, match="raise model.block_size"):
        Trainer(cfg, tmp_path / "c", progress=False)
    cfg = tiny_seq(names_file, "rnn")
    cfg.data.layout = "rows"
    with pytest.raises(DlfError, match="data.layout"):
        Trainer(cfg, tmp_path / "d", progress=False)


def test_time_budget_stops_training_and_evaluates(tmp_path, names_file):
    cfg = tiny_seq(names_file, "bow", max_steps=1000, max_seconds=1e-9)
    result = Trainer(cfg, tmp_path / "a", progress=False).fit()
    assert result["steps"] == 1  # the budget is checked after every step
    recs = [json.loads(s) for s in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["step"] == 1 and "val_loss" in recs[-1]
    assert math.isfinite(result["test_loss"])


@pytest.mark.parametrize("kind", ["rnn", "gru", "bow"])
def test_diagnose_sequence_models(tmp_path, names_file, kind):
    out = tmp_path / kind
    Trainer(tiny_seq(names_file, kind), out, progress=False).fit()
    files = diagnose_run(out, steps=3, device="cpu")
    assert all(p.exists() for p in files)
    report = json.loads((out / "diagnostics.json").read_text())
    assert report["activations"] and report["activation_grads"]
    assert load_run(out).config.data.layout == "sequences"
