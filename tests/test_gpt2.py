"""GPT-2 in and out of dlf's Transformer, checked against Hugging Face transformers itself
(a test extra) on tiny random GPT-2s: logits, greedy tokens and text, the exported files
reloaded by transformers, and every refusal before anything is written. Offline: every
model and tokenizer is made here."""

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # never reach for the network (set before the import)
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

from dlf import config as C
from dlf.cli import main
from dlf.errors import DlfError
from dlf.models import gpt2
from dlf.models.transformer import Transformer, TransformerConfig
from dlf.sample import generate_ids
from runs import records, without_timings

V = 300  # the tiny models' vocabulary: 256 bytes, 43 merges and <|endoftext|>
SIZES = {"n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 128, "vocab_size": V}
WORDS = ["to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis", "nobler",
         "in", "mind", "suffer", "slings", "and", "arrows", "of", "outrageous", "fortune"]


def tiny_hf(seed: int = 0, **kw) -> GPT2LMHeadModel:
    """A random GPT2LMHeadModel, every tensor moved off its initial value (biases off 0,
    gains off 1) so that each one's place is checked."""
    torch.manual_seed(seed)
    cfg = GPT2Config(**SIZES, bos_token_id=None, eos_token_id=None, **kw)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def to_dlf(hf: GPT2LMHeadModel) -> Transformer:
    cfg = gpt2.config_from_hf(hf.config.to_dict())
    state, cfg = gpt2.weights_from_hf(hf.state_dict(), cfg)
    model = Transformer(cfg)
    model.load_state_dict(state)
    return model.eval()


def assert_logits_equal(hf, model, idx):
    """Within 1e-5 in fp32: the same function, computed by two libraries' kernels."""
    with torch.no_grad():
        want = hf(idx).logits
        got, _ = model(idx)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() < 1e-5


@pytest.mark.parametrize("kw", [
    {},  # GPT-2 as transformers builds it: gelu_new, a tied head
    {"activation_function": "gelu_pytorch_tanh", "layer_norm_epsilon": 1e-3},
    {"activation_function": "gelu"},
    {"tie_word_embeddings": False},
], ids=["gpt2", "pytorch-tanh-eps", "exact-gelu", "untied"])
def test_logits_equal_transformers(kw):
    hf = tiny_hf(**kw)
    model = to_dlf(hf)
    assert model.config.tie_weights == hf.config.tie_word_embeddings
    g = torch.Generator().manual_seed(1)
    assert_logits_equal(hf, model, torch.randint(0, V, (3, 17), generator=g))
    assert_logits_equal(hf, model, torch.randint(0, V, (2, 128), generator=g))  # n_positions


@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_tokens_equal_generate(use_cache):
    hf = tiny_hf(seed=2)
    model = to_dlf(hf)
    prompt = torch.randint(0, V, (1, 7), generator=torch.Generator().manual_seed(3))
    ids = generate_ids(model, prompt, 60, lambda logits: logits.argmax(-1, keepdim=True),
                       use_cache=use_cache)[0]
    want = hf.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                       max_new_tokens=60, use_cache=use_cache)[0, 7:].tolist()
    assert len(want) == 60 and ids == want


def test_config_translation_refuses_what_dlf_does_not_compute():
    base = GPT2Config(**SIZES).to_dict()
    for change, message in [
        ({"model_type": "gpt_neo"}, "model_type is 'gpt_neo', not 'gpt2'"),
        ({"activation_function": "relu"}, "activation_function 'relu'"),
        ({"n_inner": 100}, "n_inner = 100: dlf's MLP is 4 \\* n_embd = 256 wide"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx = True"),
        ({"reorder_and_upcast_attn": True}, "reorder_and_upcast_attn = True"),
        ({"scale_attn_weights": False}, "scale_attn_weights = False"),
        ({"n_embd": 65}, "n_embd 65 is not divisible by n_head 2"),
        ({"n_layer": None}, "n_layer must be a positive integer, got None"),
    ]:
        with pytest.raises(DlfError, match=message):
            gpt2.config_from_hf({**base, **change})
    cfg = gpt2.config_from_hf({**base, "n_inner": 256})  # 4 * n_embd, spelled out
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.vocab_size) == (
        2, 2, 64, 128, V)
    assert (cfg.dropout, cfg.bias, cfg.position, cfg.norm, cfg.mlp_activation) == (
        0.0, True, "learned", "layer", "gelu_tanh")


def test_export_refuses_designs_gpt2_lacks():
    for switch, name in [({"position": "rope"}, "model.position = 'rope'"),
                         ({"norm": "rms"}, "model.norm = 'rms'"),
                         ({"qk_norm": True}, "model.qk_norm = True"),
                         ({"mlp_activation": "relu2"}, "model.mlp_activation = 'relu2'"),
                         ({"bias": False}, "model.bias = False")]:
        with pytest.raises(DlfError, match=f"GPT-2's design has no {name}"):
            gpt2.config_to_hf(TransformerConfig(vocab_size=V, **switch))


# ------------------------------------------------------------------ files and the CLI


@pytest.fixture(scope="module")
def tokenizer_files(tmp_path_factory):
    """A byte-level BPE in GPT-2's files (vocab.json, merges.txt) and as one tokenizer.json,
    trained here by Hugging Face's tokenizers on a little text."""
    import random

    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.pre_tokenizers import ByteLevel

    rng = random.Random(0)
    text = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(400)]
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(text, vocab_size=V, min_frequency=1,
                            special_tokens=["<|endoftext|>"])  # and every byte
    assert tok.get_vocab_size() == V and len(ByteLevel.alphabet()) == 256
    d = tmp_path_factory.mktemp("tokenizer")
    tok.save_model(str(d))  # vocab.json, merges.txt
    tok.save(str(d / "tokenizer.json"))
    return d


def write_checkpoint(hf, d, tokenizer_files, layout: str = "safetensors"):
    """hf saved as save_pretrained writes it, with the tokenizer's files; `layout`:
    "safetensors", "bin" (pytorch_model.bin) or "old" (no "transformer." prefix, no head,
    the causal-mask buffers of the original checkpoints)."""
    hf.save_pretrained(d)
    for name in ("vocab.json", "merges.txt", "tokenizer.json"):
        (d / name).write_bytes((tokenizer_files / name).read_bytes())
    if layout == "safetensors":
        return d
    tensors = load_file(d / "model.safetensors")
    (d / "model.safetensors").unlink()
    if layout == "old":
        tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()
                   if k != "lm_head.weight"}
        for i in range(hf.config.n_layer):
            n = hf.config.n_positions
            tensors[f"h.{i}.attn.bias"] = torch.ones(n, n).tril().view(1, 1, n, n)
            tensors[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(tensors, d / "pytorch_model.bin")
    return d


def snapshot(path):
    if not path.exists():
        return None
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def refused(argv, capsys, message, watched):
    """argv exits 2 with one line naming `message`, and no file in `watched` changed."""
    before = snapshot(watched)
    capsys.readouterr()
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("dlf: error: "), err
    assert message in err, err
    assert snapshot(watched) == before


@pytest.mark.parametrize("layout", ["safetensors", "bin", "old"])
def test_import_writes_a_run_that_gives_transformers_logits(tmp_path, tokenizer_files, layout,
                                                            capsys):
    import dlf

    hf = tiny_hf(seed=4)
    src = write_checkpoint(hf, tmp_path / "hf", tokenizer_files, layout)
    assert main(["import", "gpt2", str(src), "--out", str(tmp_path / "run")]) == 0
    assert "2 layers x 64" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "run")) == ["config.toml", "model.safetensors",
                                                   "tokenizer.json"]
    run = dlf.load_run(tmp_path / "run")
    assert run.config.data.tokenizer == "pretrained" and run.config.model.tie_weights
    assert run.tokenizer.vocab_size == V
    idx = torch.randint(0, V, (2, 128), generator=torch.Generator().manual_seed(5))
    assert_logits_equal(hf, run.model, idx)


def test_sampled_text_equals_transformers_greedy_text(tmp_path, tokenizer_files, capsys):
    """`dlf sample --temperature 0` prints the prompt and the text of transformers' greedy
    continuation, decoded by transformers' own GPT-2 tokenizer from the same files."""
    from transformers import GPT2TokenizerFast

    import dlf

    hf = tiny_hf(seed=6)
    src = write_checkpoint(hf, tmp_path / "hf", tokenizer_files)
    main(["import", "gpt2", str(src), "--out", str(tmp_path / "run")])
    hf_tok = GPT2TokenizerFast(vocab=str(src / "vocab.json"),
                               merges=str(src / "merges.txt"))
    prompt = "to be or not"
    ids = hf_tok(prompt, return_tensors="pt").input_ids
    run = dlf.load_run(tmp_path / "run")
    assert run.tokenizer.encode(prompt) == ids[0].tolist()
    out = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                      max_new_tokens=60)[0]
    want = hf_tok.decode(out, clean_up_tokenization_spaces=False)
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "run"), "--prompt", prompt, "--temperature", "0",
                 "--max-new-tokens", "60"]) == 0
    assert capsys.readouterr().out == want + "\n"
    assert dlf.generate(run, prompt=prompt, temperature=0, max_new_tokens=60) == [want]


def test_eval_reports_loss_per_token_and_character_and_perplexity(tmp_path, tokenizer_files,
                                                                  capsys):
    """`dlf eval RUN --data FILE`: every token of the file once, in windows of n_positions
    tokens, against transformers' loss on the same windows."""
    import math

    from transformers import GPT2TokenizerFast

    hf = tiny_hf(seed=7)
    src = write_checkpoint(hf, tmp_path / "hf", tokenizer_files)
    main(["import", "gpt2", str(src), "--out", str(tmp_path / "run")])
    text = " ".join(WORDS * 20) + " zoë"  # a character of two bytes, split over tokens
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    hf_tok = GPT2TokenizerFast(vocab=str(src / "vocab.json"), merges=str(src / "merges.txt"))
    ids = hf_tok(text).input_ids
    chars = len(text) - len(hf_tok.decode(ids[:1]))  # the first token is no target
    nats = 0.0
    with torch.no_grad():
        for s in range(0, len(ids) - 1, 128):
            window = torch.tensor(ids[s : s + 129])  # 128 inputs, their 128 next tokens
            logits = hf(window[None, :-1]).logits[0]
            nats += torch.nn.functional.cross_entropy(logits, window[1:], reduction="sum").item()
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--data", str(tmp_path / "t.txt"),
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["tokens"] == len(ids) - 1
    assert r["loss"] == pytest.approx(nats / (len(ids) - 1), rel=1e-5)
    assert r["nats_per_char"] == pytest.approx(nats / chars, rel=1e-5)
    assert r["perplexity"] == pytest.approx(math.exp(r["loss"]), rel=1e-12)
    assert r["bits_per_char"] == pytest.approx(r["nats_per_char"] / math.log(2))
    refused(["eval", str(tmp_path / "run")], capsys, "--data FILE", tmp_path / "run")


def test_export_of_an_imported_run_reloads_with_the_same_logits(tmp_path, tokenizer_files,
                                                                capsys):
    hf = tiny_hf(seed=8, tie_word_embeddings=False)
    src = write_checkpoint(hf, tmp_path / "hf", tokenizer_files)
    main(["import", "gpt2", str(src), "--out", str(tmp_path / "run")])
    assert main(["export", "gpt2", str(tmp_path / "run"), str(tmp_path / "out")]) == 0
    again = GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    assert not again.config.tie_word_embeddings
    idx = torch.randint(0, V, (2, 128), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert torch.equal(again(idx).logits, hf(idx).logits)  # the same weights, bit for bit
    eos = json.loads((tmp_path / "out" / "config.json").read_text())["eos_token_id"]
    assert eos == 0  # <|endoftext|>, the tokenizer's first id here


def test_export_of_a_dlf_trained_run_gives_transformers_the_same_logits(tmp_path, text_file,
                                                                        capsys):
    import dlf

    run_dir, out = tmp_path / "gpt", tmp_path / "hf"
    assert main(["train", "shakespeare-transformer-cpu-gpt2", "--data", str(text_file), "--out",
                 str(run_dir), "--quiet", "--max-steps", "3", "--set", "eval_interval=3",
                 "--set", "eval_iters=1", "--set", "num_samples=0", "--set", "n_layer=2",
                 "--set", "n_embd=16", "--set", "n_head=2", "--set", "block_size=16",
                 "--set", "dtype=fp32", "--set", "warmup_steps=0", "--set", "data.format=text",
                 "--set", "mlp_activation=gelu_tanh", "--set", "norm_eps=1e-4"]) == 0
    assert main(["export", "gpt2", str(run_dir), str(out)]) == 0
    hf = GPT2LMHeadModel.from_pretrained(out).eval()
    assert hf.config.layer_norm_epsilon == 1e-4 and hf.config.activation_function == "gelu_new"
    run = dlf.load_run(run_dir)
    vocab = run.config.model.vocab_size
    assert_logits_equal(hf, run.model, torch.randint(0, vocab, (3, 16)))
    # a second export into the same directory replaces only with --force
    refused(["export", "gpt2", str(run_dir), str(out)], capsys, "already holds config.json, "
            "model.safetensors; use --force", out)
    (out / "notes.txt").write_text("mine")
    assert main(["export", "gpt2", str(run_dir), str(out), "--force"]) == 0
    assert (out / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------ refusals


@pytest.fixture
def hf_dir(tmp_path, tokenizer_files):
    return write_checkpoint(tiny_hf(seed=10), tmp_path / "hf", tokenizer_files)


def edit_json(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def edit_tensors(path, drop=(), add=None):
    tensors = {k: v for k, v in load_file(path).items() if k not in drop}
    save_file({**tensors, **(add or {})}, path, metadata={"format": "pt"})


@pytest.mark.parametrize("damage,message", [
    (lambda d: (d / "config.json").unlink(), "has no config.json"),
    (lambda d: edit_json(d / "config.json", model_type="llama"), "model_type is 'llama'"),
    (lambda d: edit_tensors(d / "model.safetensors", drop=["transformer.h.1.mlp.c_fc.bias"]),
     "missing tensors h.1.mlp.c_fc.bias"),
    (lambda d: edit_tensors(d / "model.safetensors", add={"transformer.h.2.ln_1.weight":
                                                          torch.ones(64)}),
     "unexpected tensors h.2.ln_1.weight"),
    (lambda d: edit_json(d / "config.json", n_positions=64),
     "wrong shapes: wpe.weight is [128, 64], config.json gives [64, 64]"),
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:-7]),
     "corrupt or truncated checkpoint"),
    (lambda d: (d / "model.safetensors").unlink(),
     "neither model.safetensors nor pytorch_model.bin"),
    (lambda d: [(d / f).unlink() for f in ("vocab.json", "tokenizer.json")], "has no tokenizer"),
], ids=["no-config", "model-type", "missing", "extra", "shape", "truncated", "no-weights",
        "no-tokenizer"])
def test_import_refusals_are_one_line_and_write_nothing(hf_dir, tmp_path, capsys, damage,
                                                        message):
    damage(hf_dir)
    out = tmp_path / "run"
    refused(["import", "gpt2", str(hf_dir), "--out", str(out)], capsys, message, out)
    assert not out.exists()


def test_import_refuses_code_in_pytorch_model_bin(hf_dir, tmp_path, capsys):
    import pickle

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    (hf_dir / "model.safetensors").unlink()
    (hf_dir / "pytorch_model.bin").write_bytes(pickle.dumps({"wte.weight": Boom()}))
    refused(["import", "gpt2", str(hf_dir), "--out", str(tmp_path / "run")], capsys,
            "weights only", tmp_path / "run")
    assert not (tmp_path / "pwned").exists()


def test_import_into_an_existing_run_needs_force(hf_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["import", "gpt2", str(hf_dir), "--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    refused(["import", "gpt2", str(hf_dir), "--out", str(out)], capsys,
            "already holds a run (config.toml); use --force", out)
    edit_json(hf_dir / "config.json", model_type="bert")  # refused even with --force
    refused(["import", "gpt2", str(hf_dir), "--out", str(out), "--force"], capsys,
            "model_type is 'bert'", out)
    edit_json(hf_dir / "config.json", model_type="gpt2")
    assert main(["import", "gpt2", str(hf_dir), "--out", str(out), "--force"]) == 0
    assert (out / "notes.txt").read_text() == "mine"  # --force replaces dlf's files only


def test_export_refusals_write_nothing(tmp_path, capsys):
    run = tmp_path / "rope"
    run.mkdir()
    cfg = C.RunConfig("rope", "", C.DataConfig(), TransformerConfig(vocab_size=V, position="rope"),
                      C.TrainConfig())
    (run / "config.toml").write_text(C.to_toml(cfg))
    out = tmp_path / "out"
    refused(["export", "gpt2", str(run), str(out)], capsys,
            "GPT-2's design has no model.position = 'rope'", out)
    refused(["export", "gpt2", str(tmp_path / "none"), str(out)], capsys,
            "is not a run directory", out)
    assert not out.exists()


# --------------------------------------------------------------------------- fine-tuning


def finetune_argv(imported, out, *extra):
    """The fine-tuning preset shrunk to the tiny imported GPT-2 (2 x 64, 128 positions)
    and a few steps on TinyShakespeare, in 32-token windows."""
    return ["train", "shakespeare-gpt2-finetune", "--init-from", str(imported), "--out",
            str(out), "--quiet", "--set", "model.n_layer=2", "--set", "model.n_head=2",
            "--set", "model.n_embd=64", "--set", "model.block_size=128", "--set",
            "data.context=32", "--set", "train.max_steps=30", "--set", "train.eval_interval=10",
            "--set", "train.eval_iters=4", "--set", "train.lr=1e-3", "--set",
            "train.dtype=fp32", "--set", "train.checkpoint_interval=10", "--set",
            "train.threads=1", *extra]


@pytest.fixture
def imported(hf_dir, tmp_path):
    out = tmp_path / "imported"
    assert main(["import", "gpt2", str(hf_dir), "--out", str(out)]) == 0
    return out


def test_init_from_fine_tunes_an_imported_gpt2_and_resumes(imported, tmp_path, capsys):
    """30 steps from the imported weights lower their validation loss on Shakespeare
    (the same evaluation batches before and after); the run resumes as any run does."""
    from dlf.engine.evaluate import split_nats
    from dlf.engine.rundata import prepare_data
    from dlf.engine.saved import load_run

    out = tmp_path / "tuned"
    assert main(finetune_argv(imported, out)) == 0, capsys.readouterr().err
    tuned = load_run(out, device="cpu")
    assert tuned.tokenizer.to_json() == load_run(imported).tokenizer.to_json()
    data = prepare_data(tuned.config, tokenizer=tuned.tokenizer)
    before = split_nats(load_run(imported).model, data.val, tuned.config.train,
                        torch.device("cpu")).per_token
    result = json.loads((out / "result.json").read_text())
    assert result["val_loss"] < before - 0.1, (result["val_loss"], before)

    stopped = tmp_path / "stopped"  # killed after its checkpoint at step 10, then resumed
    code = main([*finetune_argv(imported, stopped), "--set", "train.max_steps=10"])
    assert code == 0
    assert main([*finetune_argv(imported, stopped), "--resume"]) == 0
    # bit for bit: the same kernels on the same restored state in one process
    assert without_timings(records(stopped)) == without_timings(records(out))


def test_init_from_refuses_what_does_not_fit_and_writes_nothing(imported, tmp_path, capsys):
    out = tmp_path / "tuned"
    for extra, message in (
            (["--set", "model.n_layer=3"], "model.n_layer is 3 here and 2 in its config.toml"),
            (["--set", "model.block_size=64"], "model.block_size is 64 here and 128"),
            (["--set", "data.tokenizer=char"], ("its tokenizer is byte-level BPE and "
                                               "data.tokenizer is char here"))):
        refused([*finetune_argv(imported, out), *extra], capsys, message, out)
    refused([*finetune_argv(tmp_path / "nothing", out)], capsys, "not a run directory", out)
