"""The public Python API, attention maps and `dlf attention`."""

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import dlf
from dlf.cli import main
from dlf.models.transformer import Transformer, TransformerConfig


def _tiny_transformer(**kw) -> Transformer:
    torch.manual_seed(0)
    c = {"vocab_size": 11, "block_size": 12, "n_layer": 2, "n_head": 3, "n_embd": 24,
         "dropout": 0.0}
    c.update(kw)
    return Transformer(TransformerConfig(**c))


# --------------------------------------------------------------------------- API


def test_every_public_name_resolves():
    for name in dlf.__all__:
        assert getattr(dlf, name) is not None, name
    assert set(dlf.__all__) <= set(dir(dlf))
    assert set(dlf.__all__) == {"DlfError", "__version__", *dlf._FUNCTIONS, *dlf._SUBMODULES}
    with pytest.raises(AttributeError):
        dlf.no_such_thing  # noqa: B018


def test_import_dlf_loads_no_torch():
    code = "import sys, dlf; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_drawing_a_figure_leaves_the_backend_and_pyplot_alone(tmp_path):
    """dlf draws through matplotlib's object API: a notebook's backend (inline) and its
    pyplot figures are untouched by a training run's plots."""
    code = (
        "import sys, matplotlib\n"
        "matplotlib.use('svg')\n"  # a backend dlf must not switch away from
        "from dlf.plots import plot_loss\n"
        f"plot_loss([{{'step': 1, 'loss': 2.0}}], {str(tmp_path / 'l.png')!r})\n"
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env)
    assert out.stdout.split() == ["svg", "False"]
    assert (tmp_path / "l.png").read_bytes().startswith(b"\x89PNG")


def test_quick_reads_the_environment(monkeypatch):
    monkeypatch.setenv("DLF_QUICK", "1")
    assert dlf.quick()
    monkeypatch.setenv("DLF_QUICK", "0")
    assert not dlf.quick()
    monkeypatch.setenv("DLF_QUICK", "yes")
    with pytest.raises(dlf.DlfError, match="DLF_QUICK"):
        dlf.quick()


def test_documented_calls_on_tiny_data(tmp_path, names_file, text_file):
    cfg = dlf.load_preset("names-mlp")
    cfg.data.dataset = str(names_file)
    dlf.apply_overrides(cfg, ["train.max_steps=20", "train.eval_interval=20", "num_samples=0"])
    data = dlf.load_data(cfg)
    assert data.tokenizer.boundary is not None and len(data.train.X) > 0
    result = dlf.train(cfg, tmp_path / "mlp", progress=False)
    run = dlf.load_run(tmp_path / "mlp")
    assert isinstance(run, dlf.Run) and run.model.num_parameters() == result["num_parameters"]
    records = dlf.read_metrics(run)
    assert records[-1]["step"] == 20
    names = dlf.generate(run, n=4, seed=3)
    assert len(names) == 4 and names == dlf.generate(run.model, run.tokenizer, n=4, seed=3)
    png = dlf.show(dlf.plots.plot_loss, records, title="tiny")
    assert png._repr_png_().startswith(b"\x89PNG")

    cfg = dlf.load_preset("shakespeare-transformer-cpu-gpt2")
    cfg.data.dataset = str(text_file)
    dlf.apply_overrides(cfg, ["max_steps=5", "eval_interval=5", "eval_iters=2", "num_samples=0",
                              "n_layer=1", "n_embd=16", "n_head=2", "block_size=8", "dtype=fp32", "format=text",
                              "warmup_steps=0"])
    dlf.train(cfg, tmp_path / "gpt", progress=False)
    run = dlf.load_run(tmp_path / "gpt")
    a = dlf.generate(run, prompt="to be", max_new_tokens=20, seed=1)
    b = dlf.generate(run, prompt="to be", max_new_tokens=20, seed=1, use_cache=False)
    assert len(a) == 1 and a == b and a[0].startswith("to be") and len(a[0]) == 25


TINY_TEXT = ["data.format=text", "model.block_size=8", "model.n_embd=8", "model.n_head=2",
             "model.n_layer=1", "train.max_steps=3", "train.eval_iters=1",
             "train.batch_size=4", "train.dtype=fp32"]
TINY = {  # one run of each kind of sampling: fixed windows, whole-line sequences, text
    "window": ("names-mlp", "names", ["model.n_hidden=16", "train.max_steps=3"]),
    "sequence": ("names-gru", "names", ["model.n_hidden=8", "model.n_embd=8",
                                        "train.max_steps=3"]),
    "text": ("shakespeare-transformer-cpu-gpt2", "text", TINY_TEXT),
    "bpe": ("shakespeare-transformer-cpu-bpe", "text", [*TINY_TEXT, "data.vocab_size=300"]),
}


@pytest.mark.parametrize("kind", sorted(TINY))
def test_generate_and_dlf_sample_give_the_same_samples(tmp_path, names_file, text_file,
                                                       capsys, kind):
    """`dlf.generate(run, ...)` and `dlf sample RUN ...` sample the same way, from the run's
    own settings (its data layout among them), for every kind of model."""
    preset, data, sets = TINY[kind]
    out = tmp_path / kind
    data_file = names_file if data == "names" else text_file
    assert main(["train", preset, "--data", str(data_file), "--out", str(out), "--quiet",
                 "--set", "train.eval_interval=3", "--set", "train.num_samples=0",
                 *[a for kv in sets for a in ("--set", kv)]]) == 0
    capsys.readouterr()
    run = dlf.load_run(out)
    n = 5 if data == "names" else 2
    for seed in (0, 7):
        assert main(["sample", str(out), "-n", str(n), "--seed", str(seed),
                     "--max-new-tokens", "12"]) == 0
        printed = capsys.readouterr().out
        samples = dlf.generate(run, n=n, seed=seed, max_new_tokens=12)
        if data == "names":
            assert printed.splitlines() == samples
        else:
            assert printed == "\n\n---\n\n".join(samples) + "\n"
    assert len(set(samples)) > 1  # the seeds give different samples


def test_generate_needs_a_tokenizer_for_a_bare_model():
    with pytest.raises(dlf.DlfError, match="tokenizer"):
        dlf.generate(_tiny_transformer())


# --------------------------------------------------------------------------- attention maps


@pytest.mark.parametrize("kernel", ["manual", "sdpa"])
def test_attention_maps_are_causal_distributions(kernel):
    model = _tiny_transformer(attention=kernel)
    idx = torch.randint(0, 11, (2, 9), generator=torch.Generator().manual_seed(1))
    maps = model.attention_maps(idx)
    assert len(maps) == 2
    for att in maps:
        assert att.shape == (2, 3, 9, 9)
        torch.testing.assert_close(att.sum(-1), torch.ones(2, 3, 9))
        upper = torch.ones(9, 9, dtype=torch.bool).triu(1)
        assert torch.all(att[..., upper] == 0)


@pytest.mark.parametrize("switches", [{}, {"position": "rope", "qk_norm": True},
                                      {"value_residual": True, "n_layer": 3}],
                         ids=["learned", "rope-qk-norm", "value-residual"])
def test_attention_maps_equal_what_the_manual_path_uses(monkeypatch, switches):
    """The maps equal the probabilities the manual kernel computes in its forward pass,
    also where RoPE and QK-norm change the queries and keys."""
    model = _tiny_transformer(attention="manual", **switches)
    model.eval()
    idx = torch.randint(0, 11, (2, 7), generator=torch.Generator().manual_seed(2))
    seen = []
    softmax = torch.softmax

    def recording(x, dim=None, **kw):
        out = softmax(x, dim=dim, **kw)
        seen.append(out)
        return out

    monkeypatch.setattr(torch, "softmax", recording)
    model(idx)
    monkeypatch.undo()
    maps = model.attention_maps(idx)
    assert len(seen) == len(maps)
    for mine, used in zip(maps, seen, strict=True):
        torch.testing.assert_close(mine, used, rtol=0, atol=0)


def test_attention_maps_times_values_equal_torch_sdpa():
    """Independent reference: att @ v equals torch's fused causal attention."""
    model = _tiny_transformer()
    idx = torch.randint(0, 11, (1, 10), generator=torch.Generator().manual_seed(3))
    att = model.attention_maps(idx)[0]  # (1, nh, T, T)
    block = model.blocks[0]
    x = model.wte(idx) + model.wpe(torch.arange(10))
    q, k, v = block.attn.c_attn(block.ln1(x)).split(24, dim=2)
    q, k, v = (t.view(1, 10, 3, 8).transpose(1, 2) for t in (q, k, v))
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    eps = torch.finfo(torch.float32).eps
    torch.testing.assert_close(att @ v, ref, rtol=64 * eps, atol=64 * eps * math.sqrt(8))


def test_attention_maps_leave_the_mode_alone():
    model = _tiny_transformer(dropout=0.5)
    model.train()
    idx = torch.zeros(1, 4, dtype=torch.long)
    assert torch.equal(model.attention_maps(idx)[0], model.attention_maps(idx)[0])
    assert model.training


# --------------------------------------------------------------------------- dlf attention


@pytest.fixture
def gpt_run(tmp_path, text_file):
    out = tmp_path / "gpt"
    assert main(["train", "shakespeare-transformer-cpu-gpt2", "--data", str(text_file), "--out",
                 str(out), "--quiet", "--max-steps", "3", "--set", "eval_interval=3",
                 "--set", "eval_iters=1", "--set", "num_samples=0", "--set", "n_layer=2",
                 "--set", "n_embd=16", "--set", "n_head=2", "--set", "block_size=16",
                 "--set", "dtype=fp32", "--set", "warmup_steps=0",
                 "--set", "data.format=text"]) == 0
    return out


def test_attention_writes_a_png(gpt_run, tmp_path, capsys):
    capsys.readouterr()
    assert main(["attention", str(gpt_run), "--prompt", "to be or"]) == 0
    assert (gpt_run / "attention.png").read_bytes().startswith(b"\x89PNG")
    assert capsys.readouterr().out.strip() == str(gpt_run / "attention.png")
    out = tmp_path / "one.png"
    assert main(["attention", str(gpt_run), "--prompt", "be", "--layer", "1",
                 "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("args, message", [
    (["--prompt", ""], "empty"),
    (["--prompt", "to bе"], "character"),  # a Cyrillic e
    (["--prompt", "to", "--layer", "2"], "out of range"),
    (["--prompt", "to", "--layer", "-1"], "out of range"),
    (["--prompt", "to be or not to be"], "at most 16"),
])
def test_attention_bad_input(gpt_run, capsys, args, message):
    capsys.readouterr()
    assert main(["attention", str(gpt_run), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_attention_refuses_other_models(tmp_path, names_file, capsys):
    out = tmp_path / "bigram"
    assert main(["train", "names-bigram", "--data", str(names_file), "--out", str(out),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["attention", str(out), "--prompt", "ab"]) == 2
    assert "transformer" in capsys.readouterr().err
