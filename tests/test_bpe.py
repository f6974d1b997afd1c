"""dlf.data.bpe: the two trainers learn identical merges (and a reference BPE's), encoding
round-trips any text and equals tiktoken built from dlf's own ranks, the file format,
decoding a stream of ids, and the `dlf tokenizer` command."""

import itertools
import json
import math
import random
from collections import Counter

import pytest
import regex
import tiktoken
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dlf.data import bpe, load_corpus
from dlf.errors import DlfError
from test_cli import run

SETTINGS = settings(max_examples=40, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
PATTERNS = ["gpt4", "gpt2", "none"]
EOT = bpe.ENDOFTEXT
# Text with many repeats (runs such as "aaaa", ties between pairs) and any Unicode text.
SMALL_ALPHABET = st.text(st.sampled_from("ab c\n'"), max_size=200)
TEXTS = st.one_of(SMALL_ALPHABET, st.text(max_size=120))
# Multi-byte characters so that some tokens end inside a character.
UNICODE = "naïve café — 日本語のテキスト 😀👍 Ελληνικά e\u0301\n" * 20


@pytest.fixture(scope="module")
def shakespeare() -> str:
    text, _ = load_corpus("shakespeare", format="text")
    return text[:60_000]


@pytest.fixture(scope="module")
def tokenizers(shakespeare) -> dict[str, bpe.BPETokenizer]:
    """One tokenizer per pattern, 300 merges from Shakespeare's first 30,000 characters."""
    train_text = shakespeare[:30_000] + UNICODE
    return {p: bpe.train(train_text, 256 + 300 + 1, p, [EOT]) for p in PATTERNS}


def reference_merges(text: str, pattern: str, num_merges: int) -> list[tuple[int, int]]:
    """The lecture's BPE on every chunk occurrence (no unique chunks, no counts): count
    every pair, merge the most frequent (ties: the smallest pair) left to right, repeat."""
    seqs = [list(c.encode()) for c in regex.findall(bpe.PATTERNS[pattern], text)]
    merges = []
    for new in range(256, 256 + num_merges):
        stats = Counter(p for ids in seqs for p in itertools.pairwise(ids))
        if not stats:
            break
        top = max(stats.values())
        pair = min(p for p, c in stats.items() if c == top)
        merges.append(pair)
        for ids in seqs:
            i = 0
            while i < len(ids) - 1:
                if (ids[i], ids[i + 1]) == pair:
                    ids[i : i + 2] = [new]
                i += 1
    return merges


def tiktoken_encoding(tok: bpe.BPETokenizer) -> tiktoken.Encoding:
    """tiktoken with dlf's merges as ranks (each token's bytes -> its id) and dlf's regex."""
    token = [bytes([i]) for i in range(256)]
    for a, b in tok.merges:
        token.append(token[a] + token[b])
    ranks = {t: i for i, t in enumerate(token)}
    assert len(ranks) == len(token)  # no two tokens spell the same bytes
    return tiktoken.Encoding(name=f"dlf-{tok.pattern}", pat_str=bpe.PATTERNS[tok.pattern],
                             mergeable_ranks=ranks, special_tokens=dict(tok.special_tokens))


def both(text: str, pattern: str, num_merges: int):
    counts = bpe.chunk_counts(text, pattern)
    chunks = [c.encode() for c in counts]
    return (bpe.learn_merges_loop(chunks, list(counts.values()), num_merges),
            bpe.learn_merges_incremental(chunks, list(counts.values()), num_merges))


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("pattern,chars", [("gpt4", 20_000), ("gpt2", 20_000), ("none", 3_000)])
def test_trainers_learn_identical_merges_on_shakespeare(shakespeare, pattern, chars):
    loop, incremental = both(shakespeare[:chars], pattern, 300)
    assert len(loop) == 300
    assert incremental == loop


@settings(SETTINGS, max_examples=30)
@given(text=TEXTS, pattern=st.sampled_from(PATTERNS), num_merges=st.integers(0, 60))
@example(text="aaaaaaa aaaa aaa", pattern="gpt2", num_merges=10)
def test_trainers_learn_identical_merges_on_any_text(text, pattern, num_merges):
    loop, incremental = both(text, pattern, num_merges)
    assert incremental == loop


@SETTINGS
@given(text=SMALL_ALPHABET.filter(bool), pattern=st.sampled_from(PATTERNS),
       num_merges=st.integers(1, 40))
def test_merges_equal_the_reference_bpe(text, pattern, num_merges):
    tok = bpe.train(text, 256 + num_merges, pattern)
    assert tok.merges == reference_merges(text, pattern, num_merges)


def test_shakespeare_first_merges_are_its_most_frequent_pairs(shakespeare):
    text = shakespeare[:30_000]
    assert bpe.train(text, 256 + 2).merges == reference_merges(text, "gpt4", 2)
    assert bpe.train(text, 257).describe_merge(0) == "256: ' ' + 't' -> ' t'"


@pytest.mark.parametrize("method", ["incremental", "loop"])
def test_ties_go_to_the_smallest_pair(method):
    # every pair occurs once; (a, b) is the smallest though it comes last
    assert bpe.train("cdab", 257, "none", method=method).merges == [(97, 98)]
    # (b, c) twice beats (a, b) once
    assert bpe.train("abcbc", 257, "none", method=method).merges == [(98, 99)]


@pytest.mark.parametrize("method", ["incremental", "loop"])
def test_overlapping_pairs_merge_left_to_right(method):
    # "aaa" holds (a, a) twice; merging it leaves [aa, a], whose pair is merged next
    assert bpe.train("aaa", 300, "none", method=method).merges == [(97, 97), (256, 97)]
    # "aaaa" -> [aa, aa] -> [aaaa]
    assert bpe.train("aaaa", 300, "none", method=method).merges == [(97, 97), (256, 256)]


@SETTINGS
@given(text=TEXTS, pattern=st.sampled_from(PATTERNS))
def test_trained_tokens_spell_distinct_bytes(text, pattern):
    tok = bpe.train(text + "x", 256 + 80, pattern)
    made = tok.vocab[: 256 + len(tok.merges)]
    assert len(set(made)) == len(made)


def test_merges_that_spell_a_token_twice_are_refused():
    # "abc" as ab + c, then again as a + bc
    with pytest.raises(DlfError, match="merge 3 makes b'abc', which token 257 already is"):
        bpe.BPETokenizer([(97, 98), (256, 99), (98, 99), (97, 258)])


def test_training_stops_when_no_pair_is_left():
    tok = bpe.train("ab ab", 1000, "gpt4")
    assert tok.merges == [(97, 98), (32, 256)] and tok.vocab_size == 258


def test_special_tokens_take_the_last_ids_and_are_not_learned():
    text = f"to be{EOT}or not{EOT}" * 30
    tok = bpe.train(text, 256 + 5 + 1, "gpt4", [EOT])
    assert tok.vocab_size == 262 and tok.special_tokens == {EOT: 261}
    assert tok.vocab[261] == EOT.encode() and tok.decode([261]) == EOT
    assert not any(b"|" in t for t in tok.vocab[256:-1])
    plain = bpe.train(text, 256 + 5, "gpt4")
    assert any(b"|" in t for t in plain.vocab[256:])  # without registering it, it is learned


@pytest.mark.parametrize("kwargs,message", [
    ({"vocab_size": 255}, r"vocab size 255 is too small: it must be at least 256 \(256 bytes\)"),
    ({"vocab_size": 257, "special_tokens": [EOT, "<|pad|>"]},
     r"at least 258 \(256 bytes \+ 2 special tokens\)"),
    ({"vocab_size": 300.0}, "vocab size must be an integer"),
    ({"pattern": "gpt5"}, "unknown split pattern 'gpt5'; use gpt4, gpt2 or none"),
    ({"method": "fast"}, "unknown training method"),
    ({"special_tokens": [EOT, EOT]}, "special tokens contain duplicates"),
    ({"special_tokens": [""]}, "must be a non-empty string"),
    ({"special_tokens": EOT}, "a list of strings, not one string"),
    ({"text": ""}, "empty text"),
])
def test_bad_training_input(kwargs, message):
    args = {"text": "hello world", "vocab_size": 300, **kwargs}
    with pytest.raises(DlfError, match=message):
        bpe.train(**args)


# --------------------------------------------------------------------------- encode and decode


@pytest.mark.parametrize("pattern", PATTERNS)
@SETTINGS
@given(s=st.text())
@example(s="e\u0301 a\u0308\u0323")  # combining marks
@example(s="👩\u200d👩\u200d👧 🇫🇷 😀!")  # emoji: ZWJ sequence, flag, plain
@example(s="a\x00b\x00")  # NUL
@example(s="line\r\nnext\n\n  \t")
def test_decode_encode_is_the_identity(tokenizers, pattern, s):
    tok = tokenizers[pattern]
    ids = tok.encode(s)
    assert tok.decode(ids) == s
    assert tok.decode_bytes(ids) == s.encode("utf-8")


@pytest.mark.parametrize("call", [
    lambda tok: tok.encode("ok \ud800 no"),
    lambda tok: tok.encode_ordinary("ok \ud800 no"),
    lambda tok: bpe.train("ok \ud800 no", 300),
])
def test_a_lone_surrogate_is_a_clear_error(tokenizers, call):
    with pytest.raises(DlfError, match="lone surrogate U\\+D800 at position 3; UTF-8 cannot"):
        call(tokenizers["gpt4"])


def test_merges_are_applied_by_rank_not_position():
    bc_first = bpe.BPETokenizer([(98, 99), (97, 98)], "none")  # 256 = bc, 257 = ab
    assert bc_first.encode("abc") == [97, 256]
    ab_first = bpe.BPETokenizer([(97, 98), (98, 99)], "none")  # 256 = ab, 257 = bc
    assert ab_first.encode("abc") == [256, 99]


@pytest.mark.parametrize("pattern", ["gpt4", "gpt2"])
def test_encode_equals_tiktoken_on_shakespeare(tokenizers, shakespeare, pattern):
    tok, enc = tokenizers[pattern], tiktoken_encoding(tokenizers[pattern])
    assert tok.encode(shakespeare[:30_000]) == enc.encode(shakespeare[:30_000])  # trained on
    assert tok.encode(shakespeare[30_000:]) == enc.encode(shakespeare[30_000:])  # held out


@pytest.mark.parametrize("pattern", PATTERNS)
@SETTINGS
@given(s=st.one_of(st.text(), st.text(st.sampled_from("the \n'sé日😀"), max_size=300)))
def test_encode_equals_tiktoken_on_random_strings(tokenizers, pattern, s):
    tok = tokenizers[pattern]
    assert tok.encode(s) == tiktoken_encoding(tok).encode(s)
    with_special = s + EOT + s
    assert (tok.encode(with_special, allowed_special="all")
            == tiktoken_encoding(tok).encode(with_special, allowed_special="all"))


def test_special_token_policy_follows_tiktoken(tokenizers):
    tok = tokenizers["gpt4"]
    enc = tiktoken_encoding(tok)
    text = f"the end{EOT}"
    with pytest.raises(DlfError, match=r"special token '<\|endoftext\|>' at position 7"):
        tok.encode(text)
    with pytest.raises(ValueError):  # tiktoken refuses it by default too
        enc.encode(text)
    eot = tok.special_tokens[EOT]
    assert tok.encode(text, allowed_special={EOT}) == enc.encode(text, allowed_special={EOT})
    assert tok.encode(text, allowed_special="all")[-1] == eot
    as_text = tok.encode(text, disallowed_special=())
    assert eot not in as_text and as_text == enc.encode(text, disallowed_special=())
    assert as_text == tok.encode_ordinary(text) == enc.encode_ordinary(text)
    assert tok.decode(tok.encode(text, allowed_special="all")) == text
    with pytest.raises(DlfError, match=r"\['<\|pad\|>'\] are not special tokens"):
        tok.encode(text, allowed_special={"<|pad|>"})
    with pytest.raises(DlfError, match="expected \"all\""):
        tok.encode(text, allowed_special="none")


def test_chunk_cache_gives_the_same_ids(tokenizers, shakespeare, monkeypatch):
    tok = tokenizers["gpt4"]
    fresh = bpe.BPETokenizer(tok.merges, "gpt4")
    monkeypatch.setattr(bpe, "CACHE_SIZE", 50)
    text = shakespeare[:5_000]
    assert fresh.encode(text) == fresh.encode(text) == tok.encode(text)
    assert 0 < len(fresh._cache) <= 50


@pytest.mark.parametrize("ids,message", [
    ([10, 557], "token id 557 is out of range for vocab size 557"),
    ([-1], "token id -1 is out of range"),
    ([1.0], "token id 1.0 is out of range"),
])
def test_decoding_a_bad_id_is_an_error(tokenizers, ids, message):
    with pytest.raises(DlfError, match=message):
        tokenizers["gpt4"].decode(ids)


def test_invalid_utf8_decodes_to_replacement_characters():
    tok = bpe.BPETokenizer([], "gpt4")
    ids = [0xE2, 0x82, 104, 0xFF]  # a cut-off "€", "h", a byte UTF-8 never uses
    assert tok.decode(ids) == bytes(ids).decode("utf-8", errors="replace") == "\ufffdh\ufffd"


# --------------------------------------------------------------------------- a stream of ids


def test_the_incremental_decoder_holds_back_a_split_character():
    dec = bpe.BPETokenizer([], "gpt4").incremental_decoder()  # one byte per token
    assert [dec.decode([i]) for i in "a€".encode()] == ["a", "", "", "€"]


@pytest.mark.parametrize("pattern", PATTERNS)
@SETTINGS
@given(s=st.text(st.sampled_from("ïé日本語のテキスト😀👍Ελ e\u0301a\x00"), max_size=80) | st.text())
def test_streamed_text_is_the_text(tokenizers, pattern, s):
    tok = tokenizers[pattern]
    dec = tok.incremental_decoder()
    pieces = [dec.decode([i]) for i in tok.encode(s)] + [dec.decode([], final=True)]
    assert "".join(pieces) == s
    assert "\ufffd" not in "".join(pieces)  # nothing emitted before its character was whole


def test_some_tokens_end_inside_a_character(tokenizers):
    """So that streaming meets split characters: a token that is not UTF-8 on its own."""
    for tok in tokenizers.values():
        ends_inside = [t for t in tok.vocab[256:] if not _is_utf8(t)]
        assert ends_inside


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@SETTINGS
@given(ids=st.lists(st.integers(0, 556), max_size=40), cut=st.integers(0, 40))
def test_streamed_ids_decode_like_decode(tokenizers, ids, cut):
    tok = tokenizers["gpt4"]
    dec = tok.incremental_decoder()
    streamed = dec.decode(ids[:cut]) + "".join(dec.decode([i]) for i in ids[cut:])
    assert streamed + dec.decode([], final=True) == tok.decode(ids)
    dec.reset()
    assert dec.decode(ids, final=True) == tok.decode(ids)


# --------------------------------------------------------------------------- the file


def test_save_load_round_trip(tokenizers, tmp_path, shakespeare):
    tok = tokenizers["gpt2"]
    path = tmp_path / "sub" / "tok.json"
    tok.save(path)
    obj = json.loads(path.read_text(encoding="utf-8"))
    assert obj == {"format": "dlf-bpe", "version": 1, "pattern": "gpt2",
                   "special_tokens": [EOT], "merges": [list(m) for m in tok.merges]}
    back = bpe.BPETokenizer.load(path)
    assert back == tok and back.vocab == tok.vocab and back.special_tokens == tok.special_tokens
    assert back.encode(shakespeare[:2000]) == tok.encode(shakespeare[:2000])
    empty = bpe.BPETokenizer([], "none")
    empty.save(tmp_path / "empty.json")
    assert bpe.BPETokenizer.load(tmp_path / "empty.json") == empty


GOOD = {"format": "dlf-bpe", "version": 1, "pattern": "gpt4", "special_tokens": [],
        "merges": [[97, 98]]}


@pytest.mark.parametrize("content,message", [
    (b"{not json", "is not valid JSON"),
    (b"\xff\xfe", "is not valid JSON"),
    (json.dumps(GOOD)[:-10].encode(), "is not valid JSON"),
    (b"[1, 2]", 'not a dlf BPE tokenizer \\(expected "format": "dlf-bpe"\\)'),
    (json.dumps({**GOOD, "format": "tiktoken"}).encode(), "not a dlf BPE tokenizer"),
    (json.dumps({**GOOD, "version": 3}).encode(),
     "format version 3 is not supported \\(this dlf reads versions 1 and 2\\)"),
    (json.dumps({**GOOD, "version": "1"}).encode(), "format version '1' is not supported"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "merges"}).encode(), "missing merges"),
    (json.dumps({**GOOD, "merges": [[97, 256]]}).encode(), "merge 0 is \\[97, 256\\]"),
    (json.dumps({**GOOD, "merges": [[97, 98], [97, 98]]}).encode(), "merge 1 repeats merge 0"),
    (json.dumps({**GOOD, "merges": [[97, True]]}).encode(), "expected two ids below 256"),
    (json.dumps({**GOOD, "merges": {"a": 1}}).encode(), "must be lists"),
    (json.dumps({**GOOD, "pattern": "gpt5"}).encode(), "unknown split pattern 'gpt5'"),
    (json.dumps({**GOOD, "special_tokens": [1]}).encode(), "special token 1 must be"),
])
def test_a_bad_file_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "tok.json"
    path.write_bytes(content)
    with pytest.raises(DlfError, match=f"tokenizer file {path}.*{message}"):
        bpe.BPETokenizer.load(path)


# Version 2: bytes numbered backwards ("a" is 158, "b" 157), "ab" is 300, a special at 301.
GOOD2 = {"format": "dlf-bpe", "version": 2, "pattern": "gpt4", "special_tokens": {EOT: 301},
         "bytes": list(range(255, -1, -1)), "merges": [[158, 157, 300]]}


def test_version_2_numbers_tokens_as_the_file_says(tmp_path):
    path = tmp_path / "tok.json"
    path.write_text(json.dumps(GOOD2), encoding="utf-8")
    tok = bpe.BPETokenizer.load(path)
    assert tok.encode("abba" + EOT, allowed_special="all") == [300, 157, 158, 301]
    assert tok.vocab_size == 302 and tok.vocab[:2] == [b"\xff", b"\xfe"]
    assert tok.vocab[256:300] == [None] * 44 and tok.token_chars()[256:300] == [0] * 44
    assert tok.describe_merge(0) == "300: 'a' + 'b' -> 'ab'"
    tok.save(tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text(encoding="utf-8")) == GOOD2


@pytest.mark.parametrize("change,message", [
    ({"bytes": list(range(255))}, "'bytes' must list 256 distinct ids, one per byte"),
    ({"bytes": [0] * 256}, "'bytes' must list 256 distinct ids"),
    ({"merges": [[158, 400, 300]]}, "merge 0 is \\[158, 400, 300\\]; expected \\[a, b, id\\]"),
    ({"merges": [[158, 157, 3]]}, "merge 0 is \\[158, 157, 3\\]"),
    ({"merges": [[158, 157]]}, "merge 0 is \\[158, 157\\]"),
    ({"special_tokens": [EOT]}, "'special_tokens' an object"),
    ({"special_tokens": {EOT: 300}}, "has id 300, which an ordinary token has"),
    ({"special_tokens": {EOT: 301, "<|pad|>": 301}}, "both have id 301"),
    ({"special_tokens": {EOT: -1}}, "has id -1; expected a non-negative integer"),
    ({"special_tokens": {EOT: 10**9}}, "id 1,000,000,000 leaves most of the id space empty"),
    ({"bytes": None}, "missing bytes"),
])
def test_a_bad_version_2_file_is_a_clear_error(tmp_path, change, message):
    path = tmp_path / "tok.json"
    obj = {k: v for k, v in {**GOOD2, **change}.items() if v is not None}
    path.write_text(json.dumps(obj), encoding="utf-8")
    with pytest.raises(DlfError, match=f"tokenizer file {path}.*{message}"):
        bpe.BPETokenizer.load(path)


def test_given_ids_encode_as_tiktoken_with_those_ranks(tokenizers, shakespeare):
    """Bytes numbered in a shuffled order and merges from 600 on: tiktoken with each
    token's bytes at its id (its rank) gives the same ids."""
    tok = tokenizers["gpt2"]
    order = list(range(256))
    random.Random(0).shuffle(order)
    ids = order + list(range(600, 600 + len(tok.merges)))
    renumbered = bpe.BPETokenizer(tok.merges, "gpt2", {EOT: 400}, ids)
    assert renumbered.vocab_size == 900 and renumbered.special_tokens == {EOT: 400}
    ranks = {t: i for i, t in enumerate(renumbered.vocab) if t is not None and i != 400}
    enc = tiktoken.Encoding("renumbered", pat_str=bpe.PATTERNS["gpt2"], mergeable_ranks=ranks,
                            special_tokens={EOT: 400})
    text = shakespeare[30_000:40_000] + EOT + UNICODE
    assert (renumbered.encode(text, allowed_special="all")
            == enc.encode(text, allowed_special="all"))
    assert renumbered.to_json()["version"] == 2
    assert bpe.BPETokenizer.from_json(renumbered.to_json()) == renumbered
    # dlf's own numbering, given explicitly, is the trained tokenizer (a version 1 file)
    same = bpe.BPETokenizer(tok.merges, "gpt2", {EOT: 556}, range(556))
    assert same == tok and same.ids is None and same.to_json()["version"] == 1


@pytest.mark.parametrize("ids,message", [
    (range(255), "ids lists 255 ids; expected one per token: 256 \\(256 bytes \\+ 0 merges\\)"),
    ([0] * 256, "ids must be distinct non-negative integers"),
    ([-1, *range(1, 256)], "ids must be distinct non-negative integers"),
    ([True, *range(1, 256)], "ids must be distinct non-negative integers"),
    ([10**6, *range(1, 256)], "id 1,000,000 leaves most of the id space empty"),
])
def test_bad_ids_are_refused(ids, message):
    with pytest.raises(DlfError, match=message):
        bpe.BPETokenizer([], "gpt4", (), ids)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DlfError, match="does not exist"):
        bpe.BPETokenizer.load(tmp_path / "nope.json")
    with pytest.raises(DlfError, match="could not read tokenizer file"):
        bpe.BPETokenizer.load(tmp_path)
    with pytest.raises(DlfError, match="could not write tokenizer to"):
        bpe.BPETokenizer([]).save(tmp_path)


def test_stats(tokenizers, shakespeare):
    tok, text = tokenizers["gpt4"], shakespeare[:3000] + EOT
    r = bpe.stats(tok, text, shown=2)
    ids = tok.encode(text, allowed_special="all")
    assert r["tokens"] == len(ids) and ids[-1] == tok.special_tokens[EOT]
    assert math.isclose(r["characters_per_token"], len(text) / len(ids))
    assert math.isclose(r["bytes_per_token"], len(text.encode()) / len(ids))
    assert r["first_merges"] == ["256: ' ' + 't' -> ' t'", "257: 'h' + 'e' -> 'he'"]
    assert [m.split(":")[0] for m in r["last_merges"]] == ["554", "555"]


# --------------------------------------------------------------------------- the command line


def test_tokenizer_help_lists_the_four_verbs(capsys):
    code, out, _ = run(["tokenizer", "--help"], capsys)
    assert code == 0
    for verb in ("train", "encode", "decode", "stats"):
        assert f"    {verb} " in out


def test_train_encode_decode_stats(text_file, tmp_path, capsys):
    out_path = tmp_path / "tok.json"
    code, out, err = run(["tokenizer", "train", str(text_file), "--vocab-size", "280",
                          "--out", str(out_path), "--pattern", "gpt2", "--special", EOT], capsys)
    assert code == 0, err
    tok = bpe.BPETokenizer.load(out_path)
    assert tok == bpe.train(text_file.read_text(), 280, "gpt2", [EOT])
    assert f"{len(tok.merges)} merges learned" in out and "vocabulary 280;" in out

    text = "to be or not, that is the question"
    code, out, _ = run(["tokenizer", "encode", str(out_path), text], capsys)
    assert code == 0 and out.split() == [str(i) for i in tok.encode(text)]
    code, out, _ = run(["tokenizer", "encode", str(out_path), "be" + EOT, "--allow-special"],
                       capsys)
    assert code == 0 and out.split()[-1] == "279"

    ids = tok.encode(text)
    code, out, _ = run(["tokenizer", "decode", str(out_path), ",".join(map(str, ids[:3])),
                        *map(str, ids[3:])], capsys)
    assert code == 0 and out == text + "\n"

    code, out, _ = run(["tokenizer", "stats", str(out_path), str(text_file), "--merges", "2"],
                       capsys)
    assert code == 0
    whole = text_file.read_text()
    assert f"{len(whole) / len(tok.encode(whole)):.3f} characters per token" in out
    assert f"first merges:\n  {tok.describe_merge(0)}\n  {tok.describe_merge(1)}\n" in out
    assert f"last merges:\n  {tok.describe_merge(21)}\n  {tok.describe_merge(22)}\n" in out


def test_train_reports_a_smaller_vocabulary(tmp_path, capsys):
    (tmp_path / "t.txt").write_text("ab ab")
    code, out, _ = run(["tokenizer", "train", str(tmp_path / "t.txt"), "--vocab-size", "400",
                        "--out", str(tmp_path / "tok.json")], capsys)
    assert code == 0 and "no more pairs to merge: vocabulary 258, not 400" in out


@pytest.fixture
def bad_inputs(tmp_path, text_file):
    tok = tmp_path / "tok.json"
    bpe.train(text_file.read_text(), 260).save(tok)
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    t, f = str(tok), str(text_file)
    train = ["tokenizer", "train", f, "--out", str(tmp_path / "new.json")]
    return {
        "vocab under 256 + specials": ([*train[:-2], "--vocab-size", "256", "--special", EOT,
                                        "--out", str(tmp_path / "x.json")],
                                       "at least 257 (256 bytes + 1 special token)"),
        "empty file": (["tokenizer", "train", str(tmp_path / "empty.txt"), "--vocab-size",
                        "300", "--out", t], "is empty"),
        "non-UTF-8 file": (["tokenizer", "train", str(tmp_path / "latin1.txt"),
                            "--vocab-size", "300", "--out", t], "is not UTF-8 text"),
        "missing file": (["tokenizer", "train", str(tmp_path / "nope.txt"), "--vocab-size",
                          "300", "--out", t], "no such file"),
        "unknown pattern": ([*train, "--vocab-size", "300", "--pattern", "gpt5"],
                            "unknown split pattern 'gpt5'"),
        "out is a directory": ([*train[:-1], str(tmp_path), "--vocab-size", "300"],
                               "could not write tokenizer to"),
        "out below a file": ([*train[:-1], f + "/tok.json", "--vocab-size", "300"],
                             "could not write tokenizer to"),
        "id out of range": (["tokenizer", "decode", t, "1", "260"],
                            "token id 260 is out of range for vocab size 260"),
        "id not a number": (["tokenizer", "decode", t, "1,x"], "'x' is not a token id"),
        "missing tokenizer": (["tokenizer", "encode", str(tmp_path / "no.json"), "hi"],
                              "does not exist"),
        "not a tokenizer": (["tokenizer", "stats", f, f], "is not valid JSON"),
        "undecodable argument": (["tokenizer", "encode", t, "\udcff"], "lone surrogate"),
        "stats of an empty file": (["tokenizer", "stats", t, str(tmp_path / "empty.txt")],
                                   "is empty"),
    }


@pytest.mark.parametrize("case", [
    "vocab under 256 + specials", "empty file", "non-UTF-8 file", "missing file",
    "unknown pattern", "out is a directory", "out below a file", "id out of range",
    "id not a number", "missing tokenizer", "not a tokenizer", "undecodable argument",
    "stats of an empty file"])
def test_bad_input_is_one_line_and_status_2(bad_inputs, case, capsys):
    argv, message = bad_inputs[case]
    code, _, err = run(argv, capsys)
    assert code == 2
    assert err.startswith("dlf: error: ") and err.count("\n") == 1, err
    assert message in err


def test_encoding_a_special_token_needs_allow_special(tmp_path, capsys):
    tok = tmp_path / "tok.json"
    bpe.train("hello hello", 300, special_tokens=[EOT]).save(tok)
    code, _, err = run(["tokenizer", "encode", str(tok), "hi" + EOT], capsys)
    assert code == 2 and "--allow-special" in err and err.count("\n") == 1
