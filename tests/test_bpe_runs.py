"""A Transformer trained on BPE tokens: the tokenizer chosen by data.tokenizer and saved in
the run, the plan's refusals, loss in nats per character, and streaming samples whose
characters are split between tokens."""

import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import dlf
from dlf import config as C
from dlf import presets as P
from dlf.cli import main
from dlf.data import CharTokenizer, bpe, load_tokenizer
from dlf.data.datasets import TextDataset
from dlf.engine.evaluate import mean_nats
from dlf.errors import DlfError
from dlf.models.transformer import Transformer, TransformerConfig
from dlf.sample import sample
from test_cli import error_case

# "é" is C3 A9 in UTF-8; the one merge "f" + C3 ends a token inside it.
SPLIT_E = [(ord("f"), 0xC3)]


def tiny_bpe(text_file, *sets):
    """The BPE preset shrunk to a few seconds on `text_file`."""
    cfg = P.load_preset("shakespeare-transformer-cpu-bpe")
    cfg.data.dataset = str(text_file)
    C.apply_overrides(cfg, ["data.format=text", "data.vocab_size=300", "model.block_size=8",
                            "model.n_embd=16", "model.n_head=2", "model.n_layer=1",
                            "train.max_steps=6", "train.eval_interval=3", "train.eval_iters=2",
                            "train.batch_size=4", "train.dtype=fp32", "train.warmup_steps=0",
                            "train.num_samples=1", "train.sample_tokens=20", *sets])
    return cfg


def tiny_model(vocab_size: int, block_size: int = 64) -> Transformer:
    torch.manual_seed(0)
    return Transformer(TransformerConfig(vocab_size=vocab_size, block_size=block_size,
                                         n_layer=1, n_head=2, n_embd=16, dropout=0.0))


# --------------------------------------------------------------------------- tokenizer files


def test_the_tokenizer_class_comes_from_the_file(tmp_path):
    char = CharTokenizer.from_text("to be or not")
    char.save(tmp_path / "char.json")
    byte = bpe.train("to be or not to be", 260)
    byte.save(tmp_path / "bpe.json")
    assert load_tokenizer(tmp_path / "char.json") == char
    assert load_tokenizer(tmp_path / "bpe.json") == byte
    (tmp_path / "other.json").write_text('{"format": "sentencepiece"}')
    with pytest.raises(DlfError, match=r"other.json: not a dlf BPE tokenizer"):
        load_tokenizer(tmp_path / "other.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(DlfError, match="must be an object"):
        load_tokenizer(tmp_path / "list.json")


def test_token_chars_add_up_to_the_decoded_length():
    text = "naïve café — 日本語 😀 e\u0301 fé fé\n" * 3
    for tok in (bpe.train(text, 300), bpe.BPETokenizer(SPLIT_E)):
        chars = tok.token_chars()
        ids = tok.encode(text)
        assert sum(chars[i] for i in ids) == len(text)
    tok = bpe.BPETokenizer(SPLIT_E)
    assert tok.encode("fé") == [256, 0xA9]  # "é" split between two tokens ...
    assert [tok.token_chars()[i] for i in (256, 0xA9)] == [2, 0]  # ... counted once
    assert CharTokenizer.from_text("abc").token_chars() == [1, 1, 1]


def test_data_and_the_char_path_do_not_import_regex(tmp_path):
    """regex is only needed for BPE: a character run plans, trains its data and reads its
    tokenizer without it (the GPU check runs where regex may be missing)."""
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question\n" * 20)
    code = (
        "import sys\n"
        "import dlf.data, dlf.cli, dlf.report, dlf.engine.trainer, dlf.api\n"
        "from dlf import presets\n"
        "from dlf.engine.plan import plan_run\n"
        "cfg = presets.load_preset('shakespeare-transformer-cpu-gpt2')\n"
        f"cfg.data.dataset = {str(text)!r}\n"
        "cfg.data.format = 'text'\n"
        "plan, data = plan_run(cfg)\n"
        f"data.tokenizer.save({str(tmp_path / 'tok.json')!r})\n"
        f"dlf.data.load_tokenizer({str(tmp_path / 'tok.json')!r})\n"
        "print('regex' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- the plan


@pytest.mark.parametrize("preset,sets,message", [
    ("names-transformer", ["data.tokenizer=bpe", "data.vocab_size=512"],
     "data.tokenizer = bpe is for text data"),
    ("shakespeare-transformer-cpu-bpe", ["data.vocab_size=200"], "at least 256"),
    ("shakespeare-transformer-cpu-bpe", ["data.vocab_size=0"], "at least 256"),
    ("shakespeare-transformer-cpu-bpe", ["data.bpe_pattern=gpt5"],
     "data.bpe_pattern must be gpt4, gpt2, none"),
    ("shakespeare-transformer-cpu-gpt2", ["data.vocab_size=512"],
     "data.vocab_size = 512 is for data.tokenizer = bpe"),
    ("shakespeare-transformer-cpu-gpt2", ["data.bpe_pattern=gpt2"],
     "data.bpe_pattern = 'gpt2' is for data.tokenizer = bpe"),
    ("shakespeare-transformer-cpu-gpt2", ["data.tokenizer=wordpiece"],
     "data.tokenizer must be char, bpe or pretrained"),
    ("shakespeare-transformer-cpu-gpt2", ["data.tokenizer=pretrained", "data.format=text"],
     "data.tokenizer = pretrained is the tokenizer.json of the run the weights come from"),
    ("shakespeare-transformer-cpu-gpt2", ["data.tokenizer=pretrained", "data.vocab_size=512"],
     ("data.vocab_size = 512 is for data.tokenizer = bpe; a pretrained tokenizer is its "
      "tokenizer.json")),
])
def test_impossible_tokenizer_settings_are_one_line_errors(tmp_path, names_file, text_file,
                                                           capsys, preset, sets, message):
    data = names_file if preset.startswith("names") else text_file
    argv = ["train", preset, "--data", str(data), "--out", str(tmp_path / "o"), "--quiet"]
    error_case([*argv, *[a for kv in sets for a in ("--set", kv)]], capsys, message)
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- a BPE run


def test_a_bpe_run_end_to_end(tmp_path, text_file, capsys, monkeypatch):
    cfg = tiny_bpe(text_file)
    result = dlf.train(cfg, tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "tokenizer.json").read_text())
    assert saved["format"] == "dlf-bpe"
    train_text = text_file.read_text()[: int(0.9 * len(text_file.read_text()))]
    assert saved["merges"] == bpe.train(train_text, 300).to_json()["merges"]  # train split only
    run = dlf.load_run(tmp_path / "run")
    assert isinstance(run.tokenizer, bpe.BPETokenizer)
    # ten words leave no pairs to merge long before 300: the vocabulary is what was learned
    vocab = 256 + len(saved["merges"])
    assert vocab < 300 and "data.vocab_size 300 -> " in capsys.readouterr().err
    assert run.config.model.vocab_size == result["vocab_size"] == vocab
    assert result["tokenizer"] == "bpe"

    # nats per character: the per-token loss over the characters per token of the val batches
    val = dlf.load_data(run.config, tokenizer=run.tokenizer).val
    g = torch.Generator().manual_seed(cfg.train.seed + 2)  # the evaluation batches
    nats = chars = 0.0
    for _ in range(cfg.train.eval_iters):
        x, y = val.batch(cfg.train.batch_size, g)
        logits, _ = run.model(x)
        nats += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        chars += sum(len(run.tokenizer.decode(row)) for row in y.tolist())  # ASCII text
    assert result["val_nats_per_char"] == pytest.approx(nats / chars, rel=1e-5)
    assert result["val_bits_per_char"] == pytest.approx(nats / chars / math.log(2), rel=1e-12)
    assert result["val_nats_per_char"] < result["val_loss"]  # a token holds > 1 character
    assert result["test_nats_per_char"] is None

    assert main(["eval", str(tmp_path / "run"), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["loss"] == pytest.approx(result["val_loss"], rel=1e-6)
    assert ev["nats_per_char"] == pytest.approx(result["val_nats_per_char"], rel=1e-6)
    assert main(["eval", str(tmp_path / "run")]) == 0
    assert f"{result['val_nats_per_char']:.4f} nats/char" in capsys.readouterr().out

    # resuming reuses the saved tokenizer: it is never trained again
    def no_training(*a, **k):
        raise AssertionError("the tokenizer was trained again")

    monkeypatch.setattr(bpe, "train", no_training)
    cfg.train.max_steps = 9
    assert dlf.train(cfg, tmp_path / "run", resume=True, progress=False)["steps"] == 9
    assert json.loads((tmp_path / "run" / "tokenizer.json").read_text()) == saved


def test_a_char_run_reports_nats_per_char_equal_to_its_loss(tmp_path, names_file):
    cfg = P.load_preset("names-mlp")
    cfg.data.dataset = str(names_file)
    C.apply_overrides(cfg, ["n_hidden=16", "max_steps=5", "eval_interval=5", "num_samples=0"])
    r = dlf.train(cfg, tmp_path / "run", progress=False)
    assert r["tokenizer"] == "char"
    assert r["val_nats_per_char"] == pytest.approx(r["val_loss"], rel=1e-12)
    assert r["test_nats_per_char"] == pytest.approx(r["test_loss"], rel=1e-12)
    assert r["test_bits_per_char"] == pytest.approx(r["test_loss"] / math.log(2), rel=1e-12)


def test_nats_per_char_counts_a_split_character_once():
    """The whole stream as one batch: the targets decode to text[1:] (the first token, ">",
    is no target), so the summed loss is divided by len(text) - 1, each "é" counted once
    though its bytes lie in two target tokens."""
    text = ">" + "fé, fé! " * 12
    tok = bpe.BPETokenizer(SPLIT_E)
    ids = tok.encode(text)
    ds = TextDataset(text, tok, len(ids) - 1)  # one block: the only start is 0
    model = tiny_model(tok.vocab_size, block_size=len(ids))
    assert tok.decode(ids[1:]) == text[1:] and ids.count(256) == 24  # 24 split characters
    x, y = torch.tensor([ids[:-1]]), torch.tensor([ids[1:]])
    logits, _ = model(x)
    total = F.cross_entropy(logits[0], y[0], reduction="sum").item()
    got = mean_nats(model, ds, device=torch.device("cpu"), batch_size=1, iters=1,
                  token_chars=torch.tensor(tok.token_chars()))
    assert got.per_token == pytest.approx(total / y.numel(), rel=1e-6)
    assert got.per_char == pytest.approx(total / (len(text) - 1), rel=1e-6)


# --------------------------------------------------------------------------- sampling


class Scripted:
    """A stand-in model that emits `script` token by token (greedy sampling follows it)."""

    block_size = 64
    training = False

    def __init__(self, script: list[int], vocab_size: int):
        self.script, self.vocab_size = script, vocab_size
        self.first = []  # the first token of every context seen

    def __call__(self, idx, targets=None):  # (n, T) -> logits (n, T, V)
        n, T = idx.shape
        self.first.append(idx[0, 0].item())
        logits = torch.zeros(n, T, self.vocab_size)
        logits[:, -1, self.script[min(T - 1, len(self.script) - 1)]] = 10.0
        return logits, None

    def parameters(self):
        return [torch.zeros(1)]

    def eval(self):
        return self

    def train(self, mode=True):
        return self


def test_streamed_bpe_text_emits_a_split_character_once_and_whole():
    tok = bpe.BPETokenizer(SPLIT_E)
    want = "café 日本!"
    script = tok.encode(want)  # "f" + C3 | A9: the "é" spans two tokens; 日 and 本 three each
    model = Scripted(script, tok.vocab_size)
    pieces = []
    (text,) = sample(model, tok, prompt="\n", temperature=0, max_new_tokens=len(script),
                     use_cache=False, stream=pieces.append)
    assert text == "\n" + want
    assert "".join(pieces) == want
    assert "é" in pieces and "日" in pieces and "\ufffd" not in "".join(pieces)
    assert pieces[script.index(256)] == "f"  # the token "f" + C3 shows "f" alone

    # a sample cut inside a character ends with U+FFFD, as decode gives it
    pieces = []
    (text,) = sample(model, tok, prompt="\n", temperature=0,
                     max_new_tokens=script.index(256) + 1, use_cache=False,
                     stream=pieces.append)
    assert "".join(pieces) == text[1:] == "caf\ufffd"


def test_a_text_sample_without_a_prompt_starts_from_a_newline():
    for tok, start in ((bpe.BPETokenizer(SPLIT_E), ord("\n")),
                       (CharTokenizer.from_text("\tx\n"), 1),  # ids "\t" 0, "\n" 1, "x" 2
                       (CharTokenizer.from_text("yx"), 0)):  # no newline: token 0
        model = Scripted([tok.encode("x")[0]] * 3, tok.vocab_size)
        (text,) = sample(model, tok, temperature=0, max_new_tokens=3, use_cache=False)
        assert text == "xxx" and model.first == [start] * 3
