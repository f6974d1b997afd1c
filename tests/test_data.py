"""Data layer: registry, resolution, download, reading, tokenizer, splits, datasets."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import http.client
import logging
import lzma
import os
import random
import re
import urllib.error
from pathlib import Path

import pytest
import torch

from dlf.data import (
    DATASETS,
    CharTokenizer,
    TextDataset,
    WordDataset,
    download,
    load_corpus,
    load_lines,
    read_text,
    resolve,
    sha256_file,
    sources,
    split_lines,
    split_text,
)
from dlf.data.datasets import IGNORE_INDEX, SequenceDataset
from dlf.data.tokenizer import BOUNDARY_MARKERS
from dlf.errors import DlfError

# The real data sets, never copied into the repo: $DLF_DATA_DIR or ../shared/data.
SHARED_DATA = Path(
    os.environ.get("DLF_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
WORDS = [
    "emma",
    "olivia",
    "ava",
    "isabella",
    "sophia",
    "mia",
    "amelia",
    "harper",
    "evelyn",
    "abigail",
    "emily",
    "ella",
]


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Isolated data dir and cache; downloads fail loudly unless a test allows them."""
    data_dir = tmp_path / "data"
    cache = tmp_path / "cache"
    data_dir.mkdir()
    monkeypatch.setenv("DLF_DATA_DIR", str(data_dir))
    monkeypatch.setenv("DLF_CACHE_DIR", str(cache))

    def no_download(source, dest_dir, timeout=30):
        raise AssertionError("unexpected download")

    monkeypatch.setattr(sources, "download", no_download)
    return data_dir, cache


def hide_package(monkeypatch, tmp_path):
    """Point the packaged-copy lookup at an empty folder, as if the package lacked it."""
    missing = tmp_path / "no-package"
    monkeypatch.setattr(
        sources, "packaged_file", lambda source: missing / (source.file + sources.PACKED_SUFFIX)
    )


def fake_package(monkeypatch, tmp_path, plain: bytes) -> Path:
    """Serve ``plain``, xz-compressed, as the packaged copy of every dataset."""
    packed = tmp_path / "package" / "copy.xz"
    packed.parent.mkdir(exist_ok=True)
    packed.write_bytes(lzma.compress(plain))
    monkeypatch.setattr(sources, "packaged_file", lambda source: packed)
    return packed


def forbid_network(monkeypatch):
    def no_urlopen(*args, **kwargs):
        raise AssertionError("unexpected network access")

    monkeypatch.setattr(sources.urllib.request, "urlopen", no_urlopen)


def fake_source(tmp_path: Path, content: bytes, sha: str | None = None) -> sources.Source:
    """A registry entry whose URL is a local file:// URL serving ``content``."""
    remote = tmp_path / "remote" / "words.txt"
    remote.parent.mkdir(exist_ok=True)
    remote.write_bytes(content)
    return sources.Source(
        name="fake",
        file="words.txt",
        sha256=sha or hashlib.sha256(content).hexdigest(),
        url=remote.as_uri(),
        format="lines",
    )


# --- registry ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_registry_sha256_matches_shared_copy(name):
    source = DATASETS[name]
    path = SHARED_DATA / source.file
    if not path.is_file():
        pytest.skip(f"{path} not present")
    assert sha256_file(path) == source.sha256


def test_sha256_file_matches_hashlib(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"abc" * 100_000)
    assert sha256_file(p) == hashlib.sha256(b"abc" * 100_000).hexdigest()


def test_registry_formats():
    assert DATASETS["names"].format == "lines"
    assert DATASETS["shakespeare"].format == "text"


# --- resolution order -------------------------------------------------------------------


def test_resolve_explicit_path_wins(env, tmp_path):
    data_dir, _cache = env
    (data_dir / "names.txt").write_text("from data dir\n")
    explicit = tmp_path / "mine.txt"
    explicit.write_text("explicit\n")
    assert resolve("names", explicit) == (explicit, "lines")


def test_resolve_explicit_path_missing(env, tmp_path):
    with pytest.raises(DlfError, match="nope.txt does not exist"):
        resolve("names", tmp_path / "nope.txt")


def test_resolve_order(env, tmp_path, monkeypatch):
    """explicit path > $DLF_DATA_DIR > packaged copy > cache > download, one layer off at a time."""
    data_dir, cache = env
    explicit = tmp_path / "mine.txt"
    explicit.write_text("explicit\n")
    (data_dir / "names.txt").write_text("data dir\n")
    packed = fake_package(monkeypatch, tmp_path, b"package\n")
    cache.mkdir()
    (cache / "names.txt").write_text("cache\n")
    downloads = []

    def fake_download(source, dest_dir, timeout=30):
        downloads.append(source.name)
        return Path(dest_dir) / "downloaded.txt"

    monkeypatch.setattr(sources, "download", fake_download)
    assert resolve("names", explicit) == (explicit, "lines")
    assert resolve("names") == (data_dir / "names.txt", "lines")
    (data_dir / "names.txt").unlink()
    location, fmt = resolve("names")
    assert fmt == "lines" and isinstance(location, sources.Packaged)
    assert (location.source, location.resource) == (DATASETS["names"], packed)
    hide_package(monkeypatch, tmp_path)
    assert resolve("names") == (cache / "names.txt", "lines")
    assert downloads == []
    (cache / "names.txt").unlink()
    assert resolve("names") == (cache / "downloaded.txt", "lines")
    assert downloads == ["names"]


def test_resolve_data_dir_wins_over_package(env, tmp_path):
    data_dir, _cache = env
    (data_dir / "tinyshakespeare.txt").write_text("to be\n")
    assert sources.packaged_file(DATASETS["shakespeare"]).is_file()
    assert resolve("shakespeare") == (data_dir / "tinyshakespeare.txt", "text")
    assert load_corpus("shakespeare") == ("to be\n", "text")


def test_resolve_cache_when_no_data_dir_or_package(env, tmp_path, monkeypatch):
    _data_dir, cache = env
    hide_package(monkeypatch, tmp_path)
    cache.mkdir()
    (cache / "tinyshakespeare.txt").write_text("cache\n")
    assert resolve("shakespeare") == (cache / "tinyshakespeare.txt", "text")


def test_resolve_downloads_into_cache_last(env, tmp_path, monkeypatch):
    _data_dir, cache = env
    hide_package(monkeypatch, tmp_path)
    calls = []

    def fake_download(source, dest_dir, timeout=30):
        calls.append((source.name, Path(dest_dir)))
        dest = Path(dest_dir) / source.file
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text("downloaded\n")
        return dest

    monkeypatch.setattr(sources, "download", fake_download)
    assert resolve("names") == (cache / "names.txt", "lines")
    assert calls == [("names", cache)]
    # Second call hits the cache, no new download.
    assert resolve("names") == (cache / "names.txt", "lines")
    assert len(calls) == 1


def test_resolve_default_cache_is_home(monkeypatch, tmp_path):
    monkeypatch.delenv("DLF_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert sources.cache_dir() == tmp_path / ".cache" / "dlf"


def test_resolve_plain_file_has_no_format(env, tmp_path):
    p = tmp_path / "pets.txt"
    p.write_text("rex\n")
    assert resolve(str(p)) == (p, None)


def test_resolve_unknown_name_lists_known(env):
    with pytest.raises(DlfError, match=r"unknown dataset 'nmaes'.*names, shakespeare"):
        resolve("nmaes")


# --- packaged copies -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_packaged_copy_sha256_matches_registry(name):
    source = DATASETS[name]
    packed = sources.packaged_file(source)
    assert packed.name == source.file + ".xz"
    plain = lzma.decompress(packed.read_bytes())
    assert hashlib.sha256(plain).hexdigest() == source.sha256
    shared = SHARED_DATA / source.file
    if shared.is_file():
        assert plain == shared.read_bytes()


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_packaged_copy_needs_no_data_dir_cache_or_network(name, monkeypatch, tmp_path):
    monkeypatch.delenv("DLF_DATA_DIR", raising=False)
    cache = tmp_path / "empty-cache"
    monkeypatch.setenv("DLF_CACHE_DIR", str(cache))
    forbid_network(monkeypatch)
    source = DATASETS[name]
    location, fmt = resolve(name)
    assert isinstance(location, sources.Packaged) and fmt == source.format
    items, fmt = load_corpus(name)
    plain = lzma.decompress(sources.packaged_file(source).read_bytes()).decode()
    expected = load_lines(plain) if source.format == "lines" else plain
    assert (items, fmt) == (expected, source.format)
    assert not cache.exists()


def test_packaged_copy_corrupted_names_both_hashes(env, tmp_path, monkeypatch):
    source = DATASETS["names"]
    altered = b"\n".join(w.encode() for w in WORDS) + b"\n"
    fake_package(monkeypatch, tmp_path, altered)
    with pytest.raises(DlfError) as info:
        load_corpus("names")
    msg = str(info.value)
    assert hashlib.sha256(altered).hexdigest() in msg and source.sha256 in msg
    assert "packaged copy of names.txt" in msg and "\n" not in msg


def test_packaged_copy_not_xz(env, tmp_path, monkeypatch):
    packed = tmp_path / "names.txt.xz"
    packed.write_bytes(b"not xz at all")
    monkeypatch.setattr(sources, "packaged_file", lambda source: packed)
    with pytest.raises(DlfError, match="could not read the packaged copy of names.txt"):
        load_corpus("names")


def test_packaged_copy_gets_the_same_text_checks(env, tmp_path, monkeypatch):
    plain = b"emma\x00olivia\n"
    source = dataclasses.replace(DATASETS["names"], sha256=hashlib.sha256(plain).hexdigest())
    monkeypatch.setitem(sources.DATASETS, "names", source)
    fake_package(monkeypatch, tmp_path, plain)
    with pytest.raises(DlfError, match="packaged copy of names.txt looks binary.*offset 4"):
        load_corpus("names")


# --- download ---------------------------------------------------------------------------


def test_download_file_url_verifies_and_writes(tmp_path):
    content = b"\n".join(w.encode() for w in WORDS) + b"\n"
    source = fake_source(tmp_path, content)
    dest_dir = tmp_path / "cache" / "nested"
    path = download(source, dest_dir)
    assert path == dest_dir / "words.txt"
    assert path.read_bytes() == content
    assert [p.name for p in dest_dir.iterdir()] == ["words.txt"]


def test_download_sha_mismatch_deletes_partial(tmp_path):
    content = b"emma\nolivia\n"
    wrong = "0" * 64
    source = fake_source(tmp_path, content, sha=wrong)
    dest_dir = tmp_path / "cache"
    with pytest.raises(DlfError) as info:
        download(source, dest_dir)
    msg = str(info.value)
    assert wrong in msg and hashlib.sha256(content).hexdigest() in msg
    assert "\n" not in msg
    assert list(dest_dir.iterdir()) == []


def test_download_network_error(tmp_path, monkeypatch):
    source = fake_source(tmp_path, b"x")
    seen = {}

    def failing_urlopen(url, timeout):
        seen["timeout"] = timeout
        raise urllib.error.URLError("name resolution failed")

    monkeypatch.setattr(sources.urllib.request, "urlopen", failing_urlopen)
    with pytest.raises(DlfError) as info:
        download(source, tmp_path / "cache", timeout=7)
    msg = str(info.value)
    assert "could not download fake from file:" in msg
    assert "name resolution failed" in msg and "$DLF_DATA_DIR" in msg
    assert seen["timeout"] == 7
    assert list((tmp_path / "cache").iterdir()) == []


def test_download_missing_remote_file(tmp_path):
    source = dataclasses.replace(fake_source(tmp_path, b"x"), url=(tmp_path / "gone").as_uri())
    with pytest.raises(DlfError, match="could not download fake"):
        download(source, tmp_path / "cache")


def test_load_corpus_downloads_registered_name(env, tmp_path, monkeypatch):
    _data_dir, cache = env
    hide_package(monkeypatch, tmp_path)
    content = ("\n".join(WORDS) + "\n").encode()
    source = dataclasses.replace(fake_source(tmp_path, content), name="names", file="names.txt")
    monkeypatch.setitem(sources.DATASETS, "names", source)
    monkeypatch.setattr(sources, "download", download)  # the real one, over file://
    words, fmt = load_corpus("names")
    assert (words, fmt) == (WORDS, "lines")
    assert (cache / "names.txt").read_bytes() == content


# --- reading ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"", "is empty"),
        (b" \n\t\n", "whitespace only"),
        (b"abc\x00def", "binary.*offset 3"),
        (b"abc\xffdef", "not UTF-8.*0xff at byte offset 3"),
    ],
)
def test_read_text_errors(tmp_path, content, pattern):
    p = tmp_path / "bad.txt"
    p.write_bytes(content)
    with pytest.raises(DlfError, match=pattern) as info:
        read_text(p)
    assert "bad.txt" in str(info.value)


def test_read_text_missing_and_directory(tmp_path):
    with pytest.raises(DlfError, match="missing.txt does not exist"):
        read_text(tmp_path / "missing.txt")
    with pytest.raises(DlfError, match="is a directory"):
        read_text(tmp_path)


def test_read_text_normalises_crlf_and_bom(tmp_path):
    p = tmp_path / "w.txt"
    p.write_bytes("\ufeffé\r\nb\r\n".encode())
    assert read_text(p) == "é\nb\n"


def test_load_lines_strips_and_drops_blank():
    assert load_lines("  emma \n\n\tava\n   \nmia") == ["emma", "ava", "mia"]


def test_load_corpus_formats(env, tmp_path):
    p = tmp_path / "w.txt"
    p.write_text("\n".join(WORDS) + "\n")
    assert load_corpus(str(p)) == (WORDS, "lines")
    text, fmt = load_corpus(str(p), format="text")
    assert fmt == "text" and text == p.read_text()
    with pytest.raises(DlfError, match="unknown data format 'csv'"):
        load_corpus(str(p), format="csv")


def test_load_corpus_too_few_lines(env, tmp_path):
    p = tmp_path / "one.txt"
    p.write_text("emma\n\n")
    with pytest.raises(DlfError, match="one.txt has 1 line; a lines dataset needs at least 10"):
        load_corpus(str(p))


# --- tokenizer --------------------------------------------------------------------------


def test_tokenizer_lines_matches_lectures():
    tok = CharTokenizer.from_lines(WORDS)
    chars = sorted(set("".join(WORDS)))
    assert tok.chars == chars
    assert tok.boundary == 0 and tok.boundary_symbol == "."
    assert tok.vocab_size == len(chars) + 1
    # makemore: stoi = {s: i + 1 for i, s in enumerate(chars)}; stoi['.'] = 0
    expected = {s: i + 1 for i, s in enumerate(chars)} | {".": 0}
    assert tok.stoi == expected
    assert [tok.itos[i] for i in range(tok.vocab_size)] == ["."] + chars
    assert tok.encode("emma") == [expected[c] for c in "emma"]
    assert tok.decode(tok.encode("isabella")) == "isabella"
    assert tok.decode([0] + tok.encode("ava") + [0]) == ".ava."


def test_tokenizer_text_has_no_boundary():
    text = "To be, or not to be.\n"
    tok = CharTokenizer.from_text(text)
    assert tok.boundary is None and tok.boundary_symbol is None
    assert tok.chars == sorted(set(text)) and tok.vocab_size == len(set(text))
    assert tok.encode(text) == [sorted(set(text)).index(c) for c in text]
    assert tok.decode(torch.tensor(tok.encode(text))) == text


def test_tokenizer_unknown_character():
    tok = CharTokenizer.from_lines(["abc"])
    with pytest.raises(DlfError) as info:
        tok.encode("abz")
    msg = str(info.value)
    assert "'z'" in msg and "position 2" in msg and "'.abc'" in msg


def test_tokenizer_unknown_character_list_truncated():
    tok = CharTokenizer.from_text("".join(chr(0x4E00 + i) for i in range(500)))
    with pytest.raises(DlfError, match=r"\(440 more\)"):
        tok.encode("a")


def test_tokenizer_boundary_avoids_dot_in_data():
    words = ["mr.smith", "a.b", "ok"]
    tok = CharTokenizer.from_lines(words)
    assert tok.boundary_symbol == "|"
    assert "." in tok.chars
    dot = tok.encode(".")[0]
    assert dot != 0 and tok.itos[dot] == "."
    assert tok.encode("|") == [0]
    ids = [0] + tok.encode("a.b") + [0]
    assert tok.decode(ids) == "|a.b|"
    assert tok.encode(tok.decode(ids)) == ids


def test_tokenizer_boundary_falls_through_markers():
    tok = CharTokenizer.from_lines(["a.|#b"])
    assert tok.boundary_symbol == "~"
    every_marker = ["".join(BOUNDARY_MARKERS)]
    with pytest.raises(DlfError, match="none is free"):
        CharTokenizer.from_lines(every_marker)


def test_tokenizer_decode_out_of_range():
    tok = CharTokenizer.from_lines(["ab"])
    with pytest.raises(DlfError, match="token id 9 is out of range for vocab size 3"):
        tok.decode([1, 9])


@pytest.mark.parametrize(
    "make",
    [
        lambda: CharTokenizer.from_lines(["a.b", "cd"]),
        lambda: CharTokenizer.from_text("hello\nworld"),
    ],
)
def test_tokenizer_save_load_round_trip(tmp_path, make):
    tok = make()
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    loaded = CharTokenizer.load(path)
    assert loaded == tok
    assert loaded.stoi == tok.stoi and loaded.itos == tok.itos
    assert loaded.boundary == tok.boundary and loaded.kind == tok.kind
    assert CharTokenizer.from_json(tok.to_json()) == tok
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be an object"),
        ('{"kind": "lines", "chars": ["a"]}', "missing boundary_symbol"),
        ('{"kind": "lines", "chars": ["a", "a"], "boundary_symbol": "."}', "duplicates"),
        ('{"kind": "lines", "chars": ["a", "."], "boundary_symbol": "."}', "also a data"),
        ('{"kind": "lines", "chars": ["ab"], "boundary_symbol": "."}', "not a single char"),
        ('{"kind": "words", "chars": ["a"], "boundary_symbol": null}', "unknown tokenizer kind"),
    ],
)
def test_tokenizer_load_corrupt(tmp_path, content, pattern):
    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    with pytest.raises(DlfError, match=pattern) as info:
        CharTokenizer.load(path)
    assert "tokenizer.json" in str(info.value)


def test_tokenizer_load_missing(tmp_path):
    with pytest.raises(DlfError, match="does not exist"):
        CharTokenizer.load(tmp_path / "nope.json")


# --- splits -----------------------------------------------------------------------------


def test_split_lines_matches_lecture_and_sizes():
    words = [f"w{i}" for i in range(1000)]
    original = list(words)
    train, val, test = split_lines(words)
    assert words == original  # input untouched
    assert (len(train), len(val), len(test)) == (800, 100, 100)
    state = random.getstate()
    try:
        reference = list(words)
        random.seed(42)
        random.shuffle(reference)
    finally:
        random.setstate(state)
    assert train + val + test == reference
    assert split_lines(words) == (train, val, test)
    assert split_lines(words, seed=1) != (train, val, test)


def test_split_lines_small_is_nonempty():
    train, val, test = split_lines(WORDS[:10])
    assert (len(train), len(val), len(test)) == (8, 1, 1)


def test_split_text():
    text = "abcdefghij" * 10
    train, val = split_text(text)
    assert train == text[:90] and val == text[90:]


# --- datasets ---------------------------------------------------------------------------


def test_word_dataset_emma_matches_lecture():
    tok = CharTokenizer.from_lines(["emma"])  # ., a, e, m -> 0, 1, 2, 3
    ds = WordDataset(["emma"], tok, block_size=3)
    contexts = ["...", "..e", ".em", "emm", "mma"]
    targets = ["e", "m", "m", "a", "."]
    assert [tok.decode(row) for row in ds.X] == contexts
    assert tok.decode(ds.Y) == "".join(targets)
    assert ds.X.tolist() == [[0, 0, 0], [0, 0, 2], [0, 2, 3], [2, 3, 3], [3, 3, 1]]
    assert ds.Y.tolist() == [2, 3, 3, 1, 0]
    assert ds.X.dtype == torch.int64 and ds.Y.dtype == torch.int64
    assert len(ds) == 5 and ds.block_size == 3


def lecture_build(words, tok, block_size):
    X, Y = [], []
    for w in words:
        context = [0] * block_size
        for ch in w + ".":
            ix = tok.stoi[ch]
            X.append(context)
            Y.append(ix)
            context = context[1:] + [ix]
    return torch.tensor(X), torch.tensor(Y)


@pytest.mark.parametrize("block_size", [1, 2, 3, 8, 20])
def test_word_dataset_matches_lecture_loop(block_size):
    words = WORDS + ["a", "", "zz"]
    tok = CharTokenizer.from_lines(words)
    ds = WordDataset(words, tok, block_size)
    X, Y = lecture_build(words, tok, block_size)
    assert torch.equal(ds.X, X) and torch.equal(ds.Y, Y)


def test_word_dataset_batch_seeded():
    tok = CharTokenizer.from_lines(WORDS)
    ds = WordDataset(WORDS, tok, 3)
    x1, y1 = ds.batch(16, torch.Generator().manual_seed(0))
    x2, y2 = ds.batch(16, torch.Generator().manual_seed(0))
    ix = torch.randint(len(ds), (16,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(x1, ds.X[ix]) and torch.equal(y1, ds.Y[ix])
    assert x1.shape == (16, 3) and y1.shape == (16,)


def test_word_dataset_errors():
    tok = CharTokenizer.from_lines(WORDS)
    with pytest.raises(DlfError, match="block size must be a positive integer, got 0"):
        WordDataset(WORDS, tok, 0)
    text_tok = CharTokenizer.from_text("abc")
    with pytest.raises(DlfError, match="lines tokenizer"):
        WordDataset(WORDS, text_tok, 3)
    with pytest.raises(DlfError, match="'z'"):
        WordDataset(["zebra"], tok, 3)


def test_text_dataset_batch_shapes_and_shift():
    text = "hello world, this is a tiny stream of text.\n" * 3
    tok = CharTokenizer.from_text(text)
    ds = TextDataset(text, tok, block_size=8)
    assert len(ds) == len(text) and ds.data.dtype == torch.int64
    assert tok.decode(ds.data) == text
    x, y = ds.batch(5, torch.Generator().manual_seed(3))
    assert x.shape == (5, 8) and y.shape == (5, 8)
    assert torch.equal(x[:, 1:], y[:, :-1])
    # nanoGPT reference: same draws from the same seed.
    ix = torch.randint(len(ds.data) - 8, (5,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(x, torch.stack([ds.data[i : i + 8] for i in ix]))
    assert torch.equal(y, torch.stack([ds.data[i + 1 : i + 9] for i in ix]))
    x2, y2 = ds.batch(5, torch.Generator().manual_seed(3))
    assert torch.equal(x, x2) and torch.equal(y, y2)


def test_text_dataset_block_too_long():
    tok = CharTokenizer.from_text("abcdef")
    with pytest.raises(DlfError, match=r"block size 6 is longer than the data \(6 tokens\)"):
        TextDataset("abcdef", tok, 6)
    assert len(TextDataset("abcdef", tok, 5)) == 6
    with pytest.raises(DlfError, match="block size"):
        TextDataset("abcdef", tok, -1)


# --- sequences (makemore's whole-line format) --------------------------------------------


def lecture_sequences(words, tok, length):
    """The rows by hand: X = boundary + line, padded with the boundary; Y = line + boundary,
    padded with IGNORE_INDEX (-1)."""
    X, Y = [], []
    for w in words:
        ids = [tok.stoi[c] for c in w]
        X.append([0] + ids + [0] * (length - 1 - len(ids)))
        Y.append(ids + [0] + [-1] * (length - 1 - len(ids)))
    return torch.tensor(X), torch.tensor(Y)


@pytest.mark.parametrize("length", [None, 9, 12])
def test_sequence_dataset_matches_rows_built_by_hand(length):
    words = ["emma", "ava", "isabella", "a", "zz"]  # longest 8: default length 9
    tok = CharTokenizer.from_lines(words)
    ds = SequenceDataset(words, tok, length)
    width = 9 if length is None else length
    X, Y = lecture_sequences(words, tok, width)
    assert torch.equal(ds.X, X) and torch.equal(ds.Y, Y)
    assert ds.X.dtype == torch.int64 and ds.Y.dtype == torch.int64
    assert len(ds) == 5 and ds.block_size == width
    assert ds.lengths.tolist() == [5, 4, 9, 2, 3]  # each line's characters + 1
    assert ds.num_targets == 23 and ds.targets_per_row == 23 / 5


def test_sequence_dataset_errors():
    tok = CharTokenizer.from_lines(WORDS)
    with pytest.raises(DlfError, match=r"^a sequence dataset needs a lines tokenizer \(one with "
                                       r"a boundary token\)$"):
        SequenceDataset(WORDS, CharTokenizer.from_text("abc"))
    with pytest.raises(DlfError, match="^a sequence dataset needs at least one word$"):
        SequenceDataset([], tok)
    with pytest.raises(DlfError, match=r"^sequence length must be a positive integer, got 0$"):
        SequenceDataset(["a"], tok, 0)
    # the longest word, isabella, has 8 characters: 9 is the least length
    with pytest.raises(DlfError, match=r"^sequence length 8 is shorter than the longest line \+ 1 "
                                       r"\(9\)$"):
        SequenceDataset(WORDS, tok, 8)
    assert SequenceDataset(WORDS, tok, 9).block_size == 9
    with pytest.raises(DlfError, match=r"^batch size must be a positive integer, got 0$"):
        SequenceDataset(WORDS, tok).batch(0)


def test_sequence_dataset_batch_is_cut_to_its_longest_row():
    words = ["a", "bb", "ccc", "abcdefghij"]  # one long line: most batches are narrower
    tok = CharTokenizer.from_lines(words)
    ds = SequenceDataset(words, tok)
    widths = set()
    for seed in range(8):
        x, y = ds.batch(3, torch.Generator().manual_seed(seed))
        ix = torch.randint(4, (3,), generator=torch.Generator().manual_seed(seed))
        T = max(len(words[i]) for i in ix) + 1
        assert torch.equal(x, ds.X[ix, :T]) and torch.equal(y, ds.Y[ix, :T])
        # the columns cut off hold only padding targets
        assert (ds.Y[ix, T:] == IGNORE_INDEX).all()
        widths.add(T)
    assert len(widths) > 1 and max(widths) <= 11


# --- edges and exact messages ------------------------------------------------------------


def full(message: str) -> str:
    """A pattern that matches exactly ``message``."""
    return "^" + re.escape(message) + "$"


@pytest.mark.parametrize("bad", [0, -1, 2.5, "3", True])
def test_sizes_must_be_positive_integers(bad):
    tok = CharTokenizer.from_lines(WORDS)
    text = "hello world\n"
    with pytest.raises(DlfError, match=full(f"block size must be a positive integer, got {bad!r}")):
        WordDataset(WORDS, tok, bad)
    with pytest.raises(DlfError, match=full(f"block size must be a positive integer, got {bad!r}")):
        TextDataset(text, CharTokenizer.from_text(text), bad)
    for ds in (WordDataset(WORDS, tok, 2), TextDataset(text, CharTokenizer.from_text(text), 2)):
        with pytest.raises(DlfError,
                           match=full(f"batch size must be a positive integer, got {bad!r}")):
            ds.batch(bad)


def test_dataset_refusals_word_for_word():
    tok = CharTokenizer.from_lines(WORDS)
    with pytest.raises(DlfError, match=full("a word dataset needs a lines tokenizer (one with a "
                                            "boundary token)")):
        WordDataset(WORDS, CharTokenizer.from_text("abc"), 3)
    with pytest.raises(DlfError, match=full("a word dataset needs at least one word")):
        WordDataset([], tok, 3)


def test_targets_per_row():
    """What the trainer counts tokens by: one target per window, block_size per text block."""
    tok = CharTokenizer.from_lines(WORDS)
    assert WordDataset(WORDS, tok, 3).targets_per_row == 1.0
    text = "hello world\n" * 3
    assert TextDataset(text, CharTokenizer.from_text(text), 5).targets_per_row == 5.0


def test_download_default_timeout_and_log_line(tmp_path, monkeypatch, caplog):
    content = b"emma\n"
    source = fake_source(tmp_path, content)
    real_urlopen = sources.urllib.request.urlopen
    seen = {}

    def recording_urlopen(url, timeout):
        seen["timeout"] = timeout
        return real_urlopen(url, timeout=timeout)

    monkeypatch.setattr(sources.urllib.request, "urlopen", recording_urlopen)
    caplog.set_level(logging.INFO, logger="dlf.data.sources")
    download(source, tmp_path / "cache")
    assert seen["timeout"] == 30
    assert [r.getMessage() for r in caplog.records] == [f"downloading fake from {source.url}"]


def test_download_into_an_existing_folder_streams_through_a_hidden_part_file(
        tmp_path, monkeypatch):
    """The bytes go to .<file>.XXXX.part beside the destination, then are renamed."""
    content = b"\n".join(w.encode() for w in WORDS) + b"\n"
    source = fake_source(tmp_path, content)
    dest_dir = tmp_path / "cache"
    dest_dir.mkdir()
    (dest_dir / "other.txt").write_text("kept\n")
    real_urlopen = sources.urllib.request.urlopen
    during = []

    class Watching:
        def __init__(self, response):
            self.response = response

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.response.close()

        def read(self, n=-1):
            during.append(sorted(p.name for p in dest_dir.iterdir()))
            return self.response.read(n)

    monkeypatch.setattr(sources.urllib.request, "urlopen",
                        lambda url, timeout: Watching(real_urlopen(url, timeout=timeout)))
    assert download(source, dest_dir) == dest_dir / "words.txt"
    assert (dest_dir / "words.txt").read_bytes() == content
    names = during[0]
    assert len(names) == 2 and names[1] == "other.txt", names
    assert re.fullmatch(r"\.words\.txt\..+\.part", names[0]), names
    assert sorted(p.name for p in dest_dir.iterdir()) == ["other.txt", "words.txt"]


def test_download_into_a_file_is_a_clear_error(tmp_path):
    source = fake_source(tmp_path, b"x")
    blocker = tmp_path / "cache"
    blocker.write_text("a file, not a folder\n")
    with pytest.raises(DlfError, match=full(f"could not create words.txt in {blocker}: File "
                                            "exists; put the file words.txt in $DLF_DATA_DIR")):
        download(source, blocker)


@pytest.mark.parametrize(("exc", "reason"), [
    (ConnectionResetError("connection reset by peer"), "connection reset by peer"),
    (http.client.HTTPException(), "HTTPException"),  # no message: the exception's name
])
def test_download_names_the_reason(tmp_path, monkeypatch, exc, reason):
    source = fake_source(tmp_path, b"x")

    def failing_urlopen(url, timeout):
        raise exc

    monkeypatch.setattr(sources.urllib.request, "urlopen", failing_urlopen)
    with pytest.raises(DlfError, match=full(f"could not download fake from {source.url}: "
                                            f"{reason}; put the file words.txt in $DLF_DATA_DIR")):
        download(source, tmp_path / "cache")


def test_packaged_copy_refusal_says_what_to_do(env, tmp_path, monkeypatch):
    fake_package(monkeypatch, tmp_path, b"emma\n")
    with pytest.raises(DlfError, match=r"; reinstall dlf or put the file names\.txt in "
                                       r"\$DLF_DATA_DIR$"):
        load_corpus("names")


def test_read_text_unreadable_file_names_the_reason(tmp_path, monkeypatch):
    p = tmp_path / "w.txt"
    p.write_text("emma\n")

    def failing_read_bytes(self):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Path, "read_bytes", failing_read_bytes)
    with pytest.raises(DlfError, match=full(f"could not read {p}: Input/output error")):
        read_text(p)


@pytest.mark.parametrize(("content", "offset"), [(b"\x00abc", 0), (b"ab\x00c\x00", 2)])
def test_read_text_names_the_first_nul_byte(tmp_path, content, offset):
    p = tmp_path / "bin.txt"
    p.write_bytes(content)
    with pytest.raises(DlfError, match=full(f"{p} looks binary (NUL byte at offset {offset}); "
                                            "expected UTF-8 text")):
        read_text(p)


def test_read_text_empty_and_blank_word_for_word(tmp_path):
    p = tmp_path / "w.txt"
    p.write_bytes(b"")
    with pytest.raises(DlfError, match=full(f"{p} is empty; expected text")):
        read_text(p)
    p.write_bytes(b" \n\t\n")
    with pytest.raises(DlfError, match=full(f"{p} is whitespace only; expected text")):
        read_text(p)


def test_load_lines_keeps_spaces_inside_a_line():
    assert load_lines("mary ann\n jo  bo \n\nli") == ["mary ann", "jo  bo", "li"]


def test_load_corpus_reads_the_explicit_path_for_a_registered_name(env, tmp_path):
    data_dir, _cache = env
    (data_dir / "names.txt").write_text("\n".join(WORDS[::-1]) + "\n")
    mine = tmp_path / "mine.txt"
    mine.write_text("\n".join(WORDS) + "\n")
    assert load_corpus("names", mine) == (WORDS, "lines")


def test_load_corpus_needs_ten_lines(env, tmp_path):
    p = tmp_path / "w.txt"
    p.write_text("\n".join(WORDS[:10]) + "\n")
    assert load_corpus(str(p)) == (WORDS[:10], "lines")
    p.write_text("\n".join(WORDS[:9]) + "\n")
    with pytest.raises(DlfError, match=full(f"{p} has 9 lines; a lines dataset needs at least 10")):
        load_corpus(str(p))


@pytest.mark.parametrize("n", [59, 60])
def test_tokenizer_unknown_character_lists_up_to_60_in_full(n):
    """60 known ids (boundary + 59 characters) are listed in full; 61 are cut at 60."""
    chars = "".join(chr(0x4E00 + i) for i in range(n))
    tok = CharTokenizer.from_lines([chars])
    shown = "." + chars
    expected = (repr(shown) if len(shown) <= 60 else f"{shown[:60]!r}... (1 more)")
    with pytest.raises(DlfError, match=re.escape(f"known characters: {expected}") + "$"):
        tok.encode("a")


def test_tokenizer_unknown_character_names_its_first_position():
    tok = CharTokenizer.from_lines(["abc"])
    with pytest.raises(DlfError, match=full("character 'z' (U+007A) at position 1 is not in the "
                                            "vocabulary; known characters: '.abc'")):
        tok.encode("azbz")


@pytest.mark.parametrize(("args", "message"), [
    (([], "lines", "."), "cannot build a tokenizer from data with no characters"),
    ((["a", "b", "a"], "text"), "tokenizer characters contain duplicates"),
    ((["a"], "lines", "ab"), "boundary symbol 'ab' of a lines tokenizer must be one character"),
    ((["a"], "lines", None), "boundary symbol None of a lines tokenizer must be one character"),
    ((["a"], "text", "."), "a text tokenizer has no boundary symbol"),
])
def test_tokenizer_refusals_word_for_word(args, message):
    with pytest.raises(DlfError, match=full(message)):
        CharTokenizer(*args)


def test_tokenizer_no_free_marker_word_for_word():
    with pytest.raises(DlfError, match=full("every boundary marker '.|#~^¶␃§¤•◊∅⟂' occurs in the "
                                            "data; none is free")):
        CharTokenizer.from_lines(["".join(BOUNDARY_MARKERS)])


def test_tokenizer_decode_range_and_tensor_ids():
    tok = CharTokenizer.from_lines(["ab"])  # vocab 3: . a b
    assert tok.decode(torch.tensor([0, 1, 2])) == ".ab"
    for bad in (3, -1):
        with pytest.raises(DlfError, match=full(f"token id {bad} is out of range for vocab "
                                                "size 3")):
            tok.decode([1, bad])
    with pytest.raises(DlfError, match=full("token id 3 is out of range for vocab size 3")):
        tok.decode(torch.tensor([1, 3]))  # ids of a tensor are named as numbers


@pytest.mark.parametrize(("obj", "message"), [
    ([1, 2], "tokenizer JSON must be an object"),
    ({"chars": ["a"]}, "tokenizer JSON is missing kind, boundary_symbol"),
    ({"kind": "lines", "chars": "ab", "boundary_symbol": "."},
     "tokenizer JSON field 'chars' must be a list of characters"),
])
def test_tokenizer_from_json_refusals_word_for_word(obj, message):
    with pytest.raises(DlfError, match=full(message)):
        CharTokenizer.from_json(obj)


def test_tokenizer_file_is_readable_utf8_json(tmp_path):
    """tokenizer.json keeps its characters as themselves (not \\u escapes), one space per level."""
    path = tmp_path / "tokenizer.json"
    CharTokenizer.from_lines(["zoë"]).save(path)
    assert path.read_bytes().decode("utf-8") == (
        '{\n "kind": "lines",\n "chars": [\n  "o",\n  "z",\n  "ë"\n ],\n'
        ' "boundary_symbol": "."\n}\n'
    )


def test_tokenizer_load_unreadable_names_the_reason(tmp_path):
    with pytest.raises(DlfError, match=full(f"could not read tokenizer file {tmp_path}: Is a "
                                            "directory")):
        CharTokenizer.load(tmp_path)


def test_tokenizer_hash_agrees_with_equality(tmp_path):
    a = CharTokenizer.from_lines(["ab", "c"])
    path = tmp_path / "t.json"
    a.save(path)
    b = CharTokenizer.load(path)
    assert a is not b and a == b and hash(a) == hash(b) and len({a, b}) == 1
    # different tokenizers hash apart (a constant hash would make every set a list)
    others = [CharTokenizer.from_lines(["ab"]), CharTokenizer.from_text("abc"), a]
    assert len({hash(t) for t in others}) == 3
