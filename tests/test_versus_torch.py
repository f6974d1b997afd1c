"""benchmarks/versus_torch.py: its JSON, and that its torch.nn GPT is a faithful reference
(same initial distribution; the same logits, loss and gradients for the same weights)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from dlf.models.transformer import Transformer, TransformerConfig

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "versus_torch.py"


@pytest.fixture(scope="module")
def vs():
    spec = importlib.util.spec_from_file_location("versus_torch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config(**kw) -> TransformerConfig:
    base = {"vocab_size": 13, "block_size": 8, "n_layer": 2, "n_head": 2, "n_embd": 16,
            "dropout": 0.0, "attention": "manual"}
    return TransformerConfig(**{**base, **kw})


def test_quick_run_json(vs, capsys):
    assert vs.main(["--quick", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r) == {"train", "sample", "machine"}
    assert len(r["train"]) == 3
    for case in r["train"]:
        assert {"case", "dtype", "dlf_tokens_per_second", "reference_tokens_per_second",
                "ratio"} <= set(case)
        expected = case["dlf_tokens_per_second"] / case["reference_tokens_per_second"]
        assert math.isclose(case["ratio"], expected, rel_tol=1e-9)
    s = r["sample"]
    assert {"dlf_cached_tokens_per_second", "reference_tokens_per_second", "ratio",
            "identical_to_uncached"} <= set(s)
    assert s["identical_to_uncached"] is True  # 40 tokens past block 16: the window slides
    assert r["machine"]["threads"] >= 1


@pytest.mark.slow
def test_compiled_side_is_timed_in_the_same_rounds(vs):
    """--compile adds dlf through torch.compile as a third side of each round: its
    tokens/s, its ratio to the reference, and the time of its first step (compiling
    included)."""
    row = vs.time_train(vs.TINY, "fp32", 0.0, torch.device("cpu"), rounds=1, steps=2,
                        compile=True)
    expected = row["dlf_compiled_tokens_per_second"] / row["reference_tokens_per_second"]
    assert math.isclose(row["compiled_ratio"], expected, rel_tol=1e-9)
    assert isinstance(row["dlf_compile_seconds"], float)
    plain = vs.time_train(vs.TINY, "fp32", 0.0, torch.device("cpu"), rounds=1, steps=2)
    assert not {"compiled_ratio", "dlf_compile_seconds"} & set(plain)


@pytest.mark.parametrize("tie", [False, True])
def test_same_initial_distribution(vs, tie):
    """Every tensor of the reference has dlf's init statistics: N(0, 0.02) weights and
    embeddings, residual projections 0.02 / sqrt(2 n_layer), zero biases, unit norms."""
    c = config(n_embd=96, n_head=4, vocab_size=65, block_size=32, n_layer=3, tie_weights=tie)
    torch.manual_seed(0)
    ours = Transformer(c)
    torch.manual_seed(1)
    ref = vs.RefGPT(c)
    theirs = dict(ref.named_parameters())
    resid = 0.02 / math.sqrt(2 * c.n_layer)
    pairs = [("wte.weight", ours.wte.weight), ("wpe.weight", ours.wpe.weight),
             ("ln_f.weight", ours.ln_f.weight), ("ln_f.bias", ours.ln_f.bias)]
    for i, b in enumerate(ours.blocks):
        h = f"h.{i}."
        pairs += [(h + "attn.c_attn.weight", b.attn.c_attn.weight),
                  (h + "attn.c_proj.weight", b.attn.c_proj.weight),
                  (h + "mlp.c_fc.weight", b.mlp.c_fc.weight),
                  (h + "mlp.c_proj.weight", b.mlp.c_proj.weight),
                  (h + "attn.c_attn.bias", b.attn.c_attn.bias),
                  (h + "ln_1.weight", b.ln1.weight), (h + "ln_2.bias", b.ln2.bias)]
    if not tie:
        pairs.append(("lm_head.weight", ours.lm_head.weight))
    for name, p in pairs:
        q = theirs[name]
        assert q.numel() == p.numel(), name
        if name.endswith("bias"):
            assert torch.all(p == 0) and torch.all(q == 0), name
        elif ".ln_" in name or name.startswith("ln_"):
            assert torch.all(p == 1) and torch.all(q == 1), name
        else:
            want = resid if name.endswith("c_proj.weight") else 0.02
            n = p.numel()
            tol = 6 * want / math.sqrt(2 * n)  # 6 standard errors of a sample std
            for t in (p, q):
                assert abs(t.std().item() - want) < tol, name
                assert abs(t.mean().item()) < 6 * want / math.sqrt(n), name


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("attention", ["manual", "sdpa"])
def test_same_weights_same_loss_and_gradients(vs, tie, attention):
    c = config(tie_weights=tie, attention=attention)
    torch.manual_seed(0)
    ours = Transformer(c)
    ref = vs.RefGPT(c)
    vs.copy_weights(ours, ref)
    idx = torch.randint(0, c.vocab_size, (3, c.block_size))
    targets = torch.randint(0, c.vocab_size, (3, c.block_size))
    logits, loss = ours(idx, targets)
    ref_logits, ref_loss = ref(idx, targets)
    torch.testing.assert_close(logits, ref_logits)
    torch.testing.assert_close(loss, ref_loss)
    loss.backward()
    ref_loss.backward()
    torch.testing.assert_close(ours.blocks[1].mlp.c_fc.weight.grad,
                               ref.h[1].mlp.c_fc.weight.grad.T)  # dlf's is (fan_in, fan_out)
    torch.testing.assert_close(ours.wte.weight.grad, ref.wte.weight.grad)
