"""Data layer: registry, resolution, download, reading, tokenizer, splits, datasets."""

from __future__ import annotations

import dataclasses
import hashlib
import lzma
import os
import random
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
    with pytest.raises(DlfError, match=r"block size 6 is longer than the data \(6 characters\)"):
        TextDataset("abcdef", tok, 6)
    assert len(TextDataset("abcdef", tok, 5)) == 6
    with pytest.raises(DlfError, match="block size"):
        TextDataset("abcdef", tok, -1)
