"""Other libraries' byte-level BPE vocabularies, read into ``dlf.data.bpe.BPETokenizer``.

- **tiktoken's rank files** (GPT-4's ``cl100k_base.tiktoken``): one line per token, its
  bytes in base64 and its rank, which is also its id. The file has no merges: token ``T``
  of rank ``r`` came from merging two tokens, and running BPE on ``T``'s bytes with the
  tokens of lower rank alone finds them, as the last two pieces left. A token that does
  not end as two pieces is a gap that the merges cannot explain. The split pattern and the
  special tokens are not in the file: the caller names them.
- **GPT-2's** ``vocab.json`` **+** ``merges.txt`` (OpenAI, Hugging Face): tokens are written
  with GPT-2's byte-to-unicode table (each byte one printable character: a space is
  ``Ġ``), ``merges.txt`` lists the merges in the order they apply, and ``vocab.json`` gives
  every token its id. Its entries that are neither a byte nor made by a merge are the
  special tokens (GPT-2 has one: ``<|endoftext|>`` = 50256).
- **Hugging Face's** ``tokenizer.json``: the same vocabulary and merges in one file
  (``model.vocab``, ``model.merges``), its ``added_tokens`` as the special tokens, and the
  pre-tokenizer naming the split (``ByteLevel`` with its regex: GPT-2's).

GPT-2's split is the ``gpt2`` pattern, which cuts text as GPT-2's own regex does.
Hugging Face ``tokenizers`` runs that regex on Oniguruma, whose Unicode tables are older
than the ``regex`` package's: a letter or digit assigned in a recent Unicode version (none
of them assigned in Unicode 14) is a letter to dlf and an unassigned symbol to
``tokenizers``, so a word holding one splits differently there; every other character
splits alike.

Every refusal is a ``DlfError`` that names the file, and the line where there is one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

from dlf.data.bpe import FORMAT, PATTERNS, BPETokenizer, encode_bytes
from dlf.data.sources import read_text
from dlf.errors import DlfError

# tiktoken's cl100k_base (GPT-4): its file's sha256, split and special tokens.
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
CL100K_SPECIALS = {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258,
                   "<|fim_middle|>": 100259, "<|fim_suffix|>": 100260,
                   "<|endofprompt|>": 100276}
# Rank files known by their sha256: (name, split pattern, special tokens).
KNOWN_RANK_FILES = {CL100K_SHA256: ("cl100k_base", "gpt4", CL100K_SPECIALS)}


def known_rank_file(path: str | os.PathLike) -> tuple[str, str, dict[str, int]] | None:
    """``(name, pattern, special tokens)`` of a rank file dlf knows by its sha256, or None."""
    try:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None  # reading it again says why
    return KNOWN_RANK_FILES.get(digest)


# --------------------------------------------------------------------------- tiktoken


def from_tiktoken(path: str | os.PathLike, pattern: str,
                  special_tokens: Mapping[str, int] | None = None) -> BPETokenizer:
    """The tokenizer of a tiktoken rank file, its ranks as ids; ``special_tokens`` keep the
    ids given (cl100k: ``CL100K_SPECIALS``)."""
    ranked = read_ranks(path)
    ids = [-1] * 256  # each byte's rank
    merges, ranks = [], {}  # dlf's merges so far, as BPETokenizer.ranks holds them
    for rank, token, line in sorted(ranked):
        if len(token) == 1:
            ids[token[0]] = rank
            continue
        pieces = encode_bytes(token, ranks)
        if len(pieces) != 2:
            raise DlfError(f"{path} line {line}: token {token!r} (rank {rank}) is not two "
                           f"tokens of lower rank merged: they split it into {len(pieces)} "
                           "pieces, a gap the merges cannot explain")
        ranks[(pieces[0], pieces[1])] = 256 + len(merges)
        merges.append((pieces[0], pieces[1]))
        ids.append(rank)
    if -1 in ids[:256]:
        raise DlfError(f"{path}: byte 0x{ids.index(-1):02x} has no rank; a byte-level BPE "
                       "needs all 256 bytes")
    return BPETokenizer(merges, pattern, dict(special_tokens or {}), ids)


def read_ranks(path: str | os.PathLike) -> list[tuple[int, bytes, int]]:
    """``(rank, token, line number)`` for every line of a rank file; blank lines are
    skipped (as tiktoken does)."""
    text = read_text(path)
    ranked, line_of_token, line_of_rank = [], {}, {}
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        words = line.split()
        try:
            if len(words) != 2 or not (words[1].isascii() and words[1].isdigit()):
                raise ValueError
            token, rank = base64.b64decode(words[0], validate=True), int(words[1])
            if not token:
                raise ValueError
        except (ValueError, binascii.Error):
            raise DlfError(f"{path} line {n}: expected a token in base64 and its rank, got "
                           f"{_short(line)}") from None
        if token in line_of_token:
            raise DlfError(f"{path} line {n}: token {token!r} is also on line "
                           f"{line_of_token[token]}")
        if rank in line_of_rank:
            raise DlfError(f"{path} line {n}: rank {rank} is also line {line_of_rank[rank]}'s")
        line_of_token[token], line_of_rank[rank] = n, n
        ranked.append((rank, token, n))
    return ranked


def _short(line: str, limit: int = 60) -> str:
    return repr(line) if len(line) <= limit else f"{line[:limit]!r}..."


# --------------------------------------------------------------------------- GPT-2, Hugging Face


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's table: each byte as one printable character. The printable bytes of ASCII
    and Latin-1 stand for themselves; the others (space, control codes) take the
    characters from U+0100 on, in byte order, so a space is ``Ġ`` (U+0120)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + len(table) - len(printable))
    return table


def from_gpt2_files(vocab_json: str | os.PathLike, merges_txt: str | os.PathLike,
                    pattern: str = "gpt2") -> BPETokenizer:
    """The tokenizer of GPT-2's ``vocab.json`` and ``merges.txt``, with vocab.json's ids."""
    vocab = _token_ids(_read_json(vocab_json), f"{vocab_json}")
    merges = []
    for n, line in enumerate(read_text(merges_txt).split("\n"), 1):
        if not line or (n == 1 and line.startswith("#version")):
            continue
        words = line.split(" ")
        if len(words) != 2 or not all(words):
            raise DlfError(f"{merges_txt} line {n}: expected two tokens separated by a space, "
                           f"got {_short(line)}")
        merges.append((words[0], words[1], f"{merges_txt} line {n}"))
    return _from_vocab(vocab, merges, pattern, {}, f"{vocab_json}")


def from_hf_tokenizer_json(path: str | os.PathLike) -> BPETokenizer:
    """The tokenizer of Hugging Face's ``tokenizer.json`` for a byte-level BPE, with its
    vocab's ids; ``added_tokens`` are the special tokens. Merges may be ``"a b"`` strings
    or ``[a, b]`` pairs (newer ``tokenizers``)."""
    obj = _read_json(path)
    if not isinstance(obj, dict):
        raise DlfError(f"{path} is not a JSON object; expected Hugging Face's tokenizer.json")
    model = obj.get("model")
    if not isinstance(model, dict) or model.get("type") != "BPE":
        kind = model.get("type") if isinstance(model, dict) else None
        raise DlfError(f"{path}: model.type is {kind!r}; dlf reads a BPE model")
    unsupported = {"dropout": (None,), "continuing_subword_prefix": (None, ""),
                   "end_of_word_suffix": (None, ""), "byte_fallback": (None, False),
                   "ignore_merges": (None, False)}
    for key, fine in unsupported.items():
        if model.get(key) not in fine:
            raise DlfError(f"{path}: model.{key} is {model[key]!r}; dlf's BPE has no such option")
    if obj.get("normalizer") is not None:
        raise DlfError(f"{path}: the normalizer {_kind(obj['normalizer'])!r} changes the text "
                       "before it is split; dlf encodes the text as it is")
    post = obj.get("post_processor")
    if post is not None and _kind(post) != "ByteLevel":
        raise DlfError(f"{path}: the post_processor {_kind(post)!r} may add tokens around the "
                       "text; dlf encodes the text alone")
    vocab = _token_ids(model.get("vocab"), f"{path} model.vocab")
    merges = model.get("merges")
    if not isinstance(merges, list):
        raise DlfError(f"{path}: model.merges is not a list")
    pairs = []
    for k, m in enumerate(merges):
        where = f"{path} model.merges[{k}]"
        words = m.split(" ") if isinstance(m, str) else m
        if not isinstance(words, list) or len(words) != 2 or not all(
                isinstance(w, str) and w for w in words):
            raise DlfError(f"{where}: expected \"a b\" or [\"a\", \"b\"], got {_short(str(m))}")
        pairs.append((words[0], words[1], where))
    return _from_vocab(vocab, pairs, _hf_pattern(obj.get("pre_tokenizer"), path),
                       _added_tokens(obj.get("added_tokens", []), path), f"{path} model.vocab")


def _read_json(path: str | os.PathLike) -> object:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DlfError(f"{path} is not valid JSON: {e}") from None


def _kind(obj: object) -> str | None:
    """The ``type`` of a tokenizer.json component."""
    return obj.get("type") if isinstance(obj, dict) else None


def _token_ids(vocab: object, where: str) -> dict[str, int]:
    """``vocab`` checked to be a JSON object of tokens and distinct ids."""
    if not isinstance(vocab, dict):
        raise DlfError(f"{where} is not a JSON object of tokens and their ids")
    owner = {}
    for token, i in vocab.items():
        if type(i) is not int or i < 0:
            raise DlfError(f"{where}: token {token!r} has id {i!r}; expected a non-negative "
                           "integer")
        if i in owner:
            raise DlfError(f"{where}: tokens {owner[i]!r} and {token!r} both have id {i}")
        owner[i] = token
    return vocab


def _from_vocab(vocab: dict[str, int], merges: list[tuple[str, str, str]], pattern: str,
                added: dict[str, int], where: str) -> BPETokenizer:
    """dlf's tokenizer of a byte-level vocabulary (GPT-2's table) and its merges in order,
    each ``(a, b, where it is written)``. Entries neither a byte nor made by a merge, and
    the ``added`` tokens, are special tokens."""
    table = byte_to_unicode()
    ids = [vocab.get(table[b], -1) for b in range(256)]
    if -1 in ids:
        b = ids.index(-1)
        raise DlfError(f"{where} has no token for byte 0x{b:02x} ({table[b]!r}); a byte-level "
                       "BPE needs all 256 bytes")
    own = {table[b]: b for b in range(256)}  # a token's text -> dlf's id
    pairs = []
    for a, b, at in merges:
        for x in (a, b):
            if x not in vocab:
                raise DlfError(f"{at}: {x!r} is not a token of {where}")
            if x not in own:
                raise DlfError(f"{at}: {x!r} is neither a byte nor made by an earlier merge")
        if (made := a + b) not in vocab:
            raise DlfError(f"{at}: {made!r}, which {a!r} + {b!r} make, is not in {where}")
        if made in own:
            raise DlfError(f"{at}: {a!r} + {b!r} make {made!r}, which is already a token")
        own[made] = 256 + len(pairs)
        pairs.append((own[a], own[b]))
        ids.append(vocab[made])
    specials = {s: i for s, i in vocab.items() if s not in own}
    for s, i in added.items():
        if specials.setdefault(s, i) != i:
            raise DlfError(f"{where}: added token {s!r} has id {i}, its vocabulary entry "
                           f"{specials[s]}")
    return BPETokenizer(pairs, pattern, dict(sorted(specials.items(), key=lambda t: t[1])),
                        ids)


def _added_tokens(added: object, path: str | os.PathLike) -> dict[str, int]:
    """tokenizer.json's ``added_tokens``: each one's text and id."""
    if not isinstance(added, list):
        raise DlfError(f"{path}: added_tokens is not a list")
    out = {}
    for k, t in enumerate(added):
        if not isinstance(t, dict) or not isinstance(t.get("content"), str):
            raise DlfError(f"{path}: added_tokens[{k}] has no content")
        for option in ("lstrip", "rstrip", "single_word"):
            if t.get(option):
                raise DlfError(f"{path}: added token {t['content']!r} sets {option}; dlf "
                               "matches special tokens exactly as written")
        out[t["content"]] = t.get("id")
    return out


def _hf_pattern(pre: object, path: str | os.PathLike) -> str:
    """dlf's split pattern of a pre-tokenizer: ``ByteLevel`` (with its regex: ``gpt2``;
    without: ``none``), or a ``Split`` by one of dlf's patterns then ``ByteLevel``."""
    steps = pre.get("pretokenizers") if _kind(pre) == "Sequence" else [pre]
    if isinstance(steps, list) and steps and _kind(steps[-1]) == "ByteLevel":
        *split, byte_level = steps
        if byte_level.get("add_prefix_space"):
            raise DlfError(f"{path}: the ByteLevel pre-tokenizer adds a space before the "
                           "text (add_prefix_space); dlf encodes the text as it is")
        regex = byte_level.get("use_regex", True)
        if not split:
            return "gpt2" if regex else "none"
        if len(split) == 1 and not regex and _kind(split[0]) == "Split":
            pattern = split[0].get("pattern")
            given = pattern.get("Regex") if isinstance(pattern, dict) else None
            names = [name for name, p in PATTERNS.items() if p == given]
            if names and split[0].get("behavior") == "Isolated" and not split[0].get("invert"):
                return names[0]
    raise DlfError(f"{path}: pre_tokenizer {_short(json.dumps(pre))} is not a split dlf "
                   "knows: ByteLevel (GPT-2's regex) or a Split by one of dlf's patterns "
                   f"({', '.join(PATTERNS)}) then ByteLevel")


# --------------------------------------------------------------------------- dlf tokenizer import


def import_tokenizer(*, tiktoken: str | os.PathLike | None = None,
                     gpt2: tuple[str | os.PathLike, str | os.PathLike] | None = None,
                     hf_json: str | os.PathLike | None = None, pattern: str | None = None,
                     special_tokens: Mapping[str, int] | None = None
                     ) -> tuple[BPETokenizer, str]:
    """The tokenizer of one of the three formats, and a line saying what was read.

    A rank file dlf knows by its sha256 (cl100k_base) brings its split and special tokens,
    which ``pattern`` and ``special_tokens`` replace; any other needs ``pattern``. GPT-2's
    files split as ``gpt2`` unless ``pattern`` says otherwise; their special tokens, and
    everything of a tokenizer.json, come from the files.
    """
    if [tiktoken, gpt2, hf_json].count(None) != 2:
        raise DlfError("give one of tiktoken, gpt2 (vocab.json and merges.txt) or hf_json")
    if tiktoken is None and special_tokens is not None:
        raise DlfError("special tokens are given for a rank file; the other formats name "
                       "their own")
    if tiktoken is not None:
        name, known_pattern, known_specials = known_rank_file(tiktoken) or (None, None, {})
        if pattern is None and known_pattern is None:
            raise DlfError(f"{tiktoken} is not a rank file dlf knows (cl100k_base); name its "
                           "split pattern (gpt4, gpt2 or none)")
        specials = known_specials if special_tokens is None else special_tokens
        tok = from_tiktoken(tiktoken, pattern or known_pattern, specials)
        what = f"{tiktoken}" + (f" ({name}, known by its sha256)" if name else "")
    elif gpt2 is not None:
        tok = from_gpt2_files(gpt2[0], gpt2[1], pattern or "gpt2")
        what = f"{gpt2[0]} + {gpt2[1]}"
    else:
        if pattern is not None:
            raise DlfError(f"a pattern is given for {hf_json}; its pre_tokenizer names the split")
        tok = from_hf_tokenizer_json(hf_json)
        what = f"{hf_json}"
    specials = ", ".join(f"{s} {i}" for s, i in tok.special_tokens.items()) or "none"
    return tok, (f"{what}: {len(tok.merges):,} merges, vocabulary {tok.vocab_size:,}, split "
                 f"{tok.pattern}, special tokens: {specials}")


def check_output(path: str | os.PathLike, force: bool) -> None:
    """Refuse to replace ``path`` unless ``force``, and then only a tokenizer file of dlf's."""
    path = Path(path)
    if path.is_dir():
        raise DlfError(f"{path} is a directory; expected the tokenizer file to write")
    if not path.exists():
        return
    if not force:
        raise DlfError(f"{path} exists; pass --force to replace it")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        obj = None
    if not isinstance(obj, dict) or not (obj.get("format") == FORMAT or "kind" in obj):
        raise DlfError(f"{path} is not a tokenizer file of dlf's; --force replaces only those")
