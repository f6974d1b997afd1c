"""Byte-level byte-pair encoding (BPE), trained from scratch or read from GPT-4's and
GPT-2's published vocabularies.

A text is split into chunks by a regex (``pattern``: GPT-4's, GPT-2's, or none), each
chunk is encoded as UTF-8 bytes (ids 0..255), and training learns merges: merge
``k`` turns the adjacent pair ``(a, b)`` into the new id ``256 + k``. Merges never
cross a chunk boundary. Registered special tokens (``<|endoftext|>``) take the ids
after the merges, so a trained tokenizer has
``vocab_size = 256 + len(merges) + len(special_tokens)``.

Training, written two ways that give identical merges:

- ``learn_merges_loop``, the lecture's loop: count every pair, merge the most
  frequent one everywhere, repeat;
- ``learn_merges_incremental``: the pair counts are updated only around each merged
  occurrence, and the next pair comes from a priority queue (``heapq`` with lazy
  deletion: an entry whose count is out of date is dropped when it is popped).

Both work on the unique chunks of the text, each weighted by how often it occurs, and
merge left to right without overlap (``aaa`` -> ``aa a``). The **tie-breaking rule**: the
pair with the highest count is merged; among equal counts, the smallest
``(first id, second id)``.

No two tokens have the same bytes. When ``(a, b)`` is merged, the merges so far have
split every occurrence of those bytes that no token straddles as they split the string
alone, so each one is ``a | b`` and becomes the new token; no later pair can spell it
again. So the merges are also a tiktoken ``mergeable_ranks`` table (bytes -> id), which
has no room for two tokens with one byte string, and ``BPETokenizer`` refuses merges
that would make one.

Encoding applies the merges by rank, lowest first (leftmost among equals), within each
chunk; chunks already seen come from a cache.

**Ids of an imported vocabulary.** GPT-4's and GPT-2's vocabularies number their tokens
their own way (cl100k gives the byte ``!`` id 0; GPT-2's ``<|endoftext|>`` is 50256).
Merging always works on dlf's own ids above (byte ``b`` is ``b``, merge ``k`` makes
``256 + k``, merges ranked in the order they apply); ``ids[i]`` is the id that the
tokenizer shows for dlf's token ``i``, mapped once per distinct chunk, and special tokens
take the ids they are given. ``dlf.data.bpe_files`` reads tiktoken's and Hugging Face's
files into this form. The JSON file is version 1 for a tokenizer numbered as training
numbers it (merges as dlf's pairs, specials after them) and version 2 for any other (the
bytes' ids, each merge as ``[a, b, id]`` in the tokenizer's ids, the specials' ids);
both are read.
"""

from __future__ import annotations

import codecs
import heapq
import itertools
import json
import os
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence

import regex

from dlf.data.tokenizer import load_json
from dlf.errors import DlfError
from dlf.fileio import atomic_write_text

FORMAT = "dlf-bpe"
VERSIONS = (1, 2)  # 1: ids as training numbers them; 2: any ids (imported vocabularies)
ENDOFTEXT = "<|endoftext|>"

# The split patterns of tiktoken's cl100k_base (GPT-4) and r50k_base (GPT-2). "none" keeps
# the text in one chunk (the lecture's basic tokenizer), so merges may span words.
PATTERNS = {
    "gpt4": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
    "gpt2": r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""",
    "none": r"""[\s\S]+""",
}
# Distinct chunks remembered by one tokenizer's encoder before the cache starts afresh.
CACHE_SIZE = 1 << 16


# --------------------------------------------------------------------------- text to chunks


def check_encodable(text: str) -> bytes:
    """``text`` as UTF-8; a lone surrogate (which UTF-8 cannot encode) is a ``DlfError``."""
    if not isinstance(text, str):
        raise DlfError(f"expected text (str), got {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DlfError(
            f"text has a lone surrogate U+{ord(text[e.start]):04X} at position {e.start}; "
            "UTF-8 cannot encode it"
        ) from None


def split_pattern(pattern: str) -> regex.Pattern:
    """The compiled regex of a pattern name (``gpt4``, ``gpt2`` or ``none``)."""
    if pattern not in PATTERNS:
        raise DlfError(f"unknown split pattern {pattern!r}; use gpt4, gpt2 or none")
    return regex.compile(PATTERNS[pattern])


def _specials_regex(specials: Iterable[str]) -> regex.Pattern | None:
    """Matches any of ``specials``, the longest first when one is a prefix of another."""
    specials = sorted(specials, key=len, reverse=True)
    if not specials:
        return None
    return regex.compile("|".join(regex.escape(s) for s in specials))


def chunk_counts(text: str, pattern: str, special_tokens: Iterable[str] = ()) -> Counter:
    """The unique chunks of ``text`` with how often each occurs.

    Special tokens' text is cut out first, so no merge learns from it.
    """
    check_encodable(text)
    split = split_pattern(pattern)
    specials = _specials_regex(special_tokens)
    pieces = specials.split(text) if specials else [text]
    counts = Counter()
    for piece in pieces:
        counts.update(split.findall(piece))
    return counts


# --------------------------------------------------------------------------- training


def _merge(ids: list[int], pair: tuple[int, int], new: int) -> list[int]:
    """Replace every ``pair`` in ``ids`` by ``new``, left to right (``aaa`` -> ``[aa, a]``)."""
    a, b = pair
    out = []
    i, n = 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == a and ids[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def learn_merges_loop(
    chunks: Sequence[bytes], counts: Sequence[int], num_merges: int
) -> list[tuple[int, int]]:
    """The written-out loop: count every pair, merge the most frequent, repeat.

    ``chunks`` are unique byte strings and ``counts`` how often each occurs. Returns
    up to ``num_merges`` pairs (fewer when no pair is left); merge ``k`` makes id
    ``256 + k``. Ties go to the smallest pair.
    """
    seqs = [list(c) for c in chunks]
    merges = []
    while len(merges) < num_merges:
        stats = defaultdict(int)
        for ids, count in zip(seqs, counts):
            for pair in itertools.pairwise(ids):
                stats[pair] += count
        if not stats:
            break
        pair = min(stats, key=lambda p: (-stats[p], p))  # most frequent, then smallest
        new = 256 + len(merges)
        seqs = [_merge(ids, pair, new) for ids in seqs]
        merges.append(pair)
    return merges


def learn_merges_incremental(
    chunks: Sequence[bytes], counts: Sequence[int], num_merges: int
) -> list[tuple[int, int]]:
    """The same merges as ``learn_merges_loop``, with counts updated around each merge.

    All chunks lie in one linked list (``nxt``/``prv``, -1 at a chunk's ends, so no pair
    spans two chunks); position ``i`` weighs its chunk's count. ``where[pair]`` holds
    positions where ``pair`` may start (stale ones are skipped), so a merge visits only
    its occurrences, and a heap of ``(-count, pair)`` gives the next pair: the most
    frequent, then the smallest, as in the loop.
    """
    ids, weight, nxt, prv = [], [], [], []
    for chunk, count in zip(chunks, counts):
        start, n = len(ids), len(chunk)
        if not n:
            continue
        ids.extend(chunk)
        weight.extend([count] * n)
        nxt.extend(range(start + 1, start + n + 1))
        prv.extend(range(start - 1, start + n - 1))
        nxt[-1], prv[start] = -1, -1

    pair_count = defaultdict(int)
    where = defaultdict(set)
    for i, j in enumerate(nxt):
        if j >= 0:
            pair = (ids[i], ids[j])
            pair_count[pair] += weight[i]
            where[pair].add(i)
    heap = [(-c, pair) for pair, c in pair_count.items()]
    heapq.heapify(heap)

    merges = []
    while len(merges) < num_merges and heap:
        neg_count, pair = heapq.heappop(heap)
        if pair_count.get(pair) != -neg_count:
            continue  # out of date: the pair's count changed after this entry was pushed
        a, b = pair
        new = 256 + len(merges)
        delta = defaultdict(int)  # change of each pair's count from this merge
        for i in sorted(where.pop(pair)):  # left to right, as _merge does
            j = nxt[i]
            if j < 0 or ids[i] != a or ids[j] != b:
                continue  # merged away by an earlier occurrence or merge
            w, p, k = weight[i], prv[i], nxt[j]
            delta[pair] -= w
            if p >= 0:  # left neighbour, already `new` when it was merged just before
                delta[(ids[p], a)] -= w
                delta[(ids[p], new)] += w
                where[(ids[p], new)].add(p)
            if k >= 0:
                delta[(b, ids[k])] -= w
                delta[(new, ids[k])] += w
                where[(new, ids[k])].add(i)
            ids[i], ids[j] = new, -1
            nxt[i] = k
            if k >= 0:
                prv[k] = i
        for p, d in delta.items():
            if d:
                pair_count[p] += d
                if pair_count[p]:
                    heapq.heappush(heap, (-pair_count[p], p))
                else:
                    del pair_count[p]
        merges.append(pair)
    return merges


LEARNERS = {"incremental": learn_merges_incremental, "loop": learn_merges_loop}


def train(
    text: str,
    vocab_size: int,
    pattern: str = "gpt4",
    special_tokens: Sequence[str] = (),
    method: str = "incremental",
) -> BPETokenizer:
    """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text``.

    ``method`` is ``"incremental"`` or ``"loop"`` (the same merges, see the module
    docstring). Training stops early, with a smaller vocabulary, when no pair is left.
    """
    specials = _check_specials(special_tokens)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise DlfError(f"vocab size must be an integer, got {vocab_size!r}")
    least = 256 + len(specials)
    if vocab_size < least:
        extra = (f" + {len(specials)} special token{'s' if len(specials) > 1 else ''}"
                 if specials else "")
        raise DlfError(f"vocab size {vocab_size} is too small: it must be at least "
                       f"{least} (256 bytes{extra})")
    if method not in LEARNERS:
        raise DlfError(f"unknown training method {method!r}; use incremental or loop")
    if not isinstance(text, str) or not text:
        raise DlfError("cannot train a tokenizer on empty text")
    counts = chunk_counts(text, pattern, specials)
    chunks = [c.encode("utf-8") for c in counts]
    merges = LEARNERS[method](chunks, list(counts.values()), vocab_size - least)
    return BPETokenizer(merges, pattern, specials)


# --------------------------------------------------------------------------- encoding a chunk


def encode_bytes(data: bytes, ranks: dict[tuple[int, int], int]) -> list[int]:
    """dlf's ids of ``data`` after merging by ``ranks`` (pair -> merged id, which is also
    its rank): the lowest rank first and the leftmost among equals, until no pair has one.

    A heap of ``(rank, position)`` over a linked list of the bytes keeps a long chunk
    (pattern ``none``) at n log n; an entry whose pair has changed is skipped.
    """
    ids = list(data)
    n = len(ids)
    heap = [(r, i) for i in range(n - 1) if (r := ranks.get((ids[i], ids[i + 1])))]
    if not heap:
        return ids
    heapq.heapify(heap)
    nxt = list(range(1, n + 1))
    prv = list(range(-1, n - 1))
    nxt[-1] = -1
    while heap:
        r, i = heapq.heappop(heap)
        j = nxt[i]
        if ids[i] < 0 or j < 0 or ranks.get((ids[i], ids[j])) != r:
            continue
        k = nxt[j]
        ids[i], ids[j] = r, -1
        nxt[i] = k
        if k >= 0:
            prv[k] = i
            if rk := ranks.get((r, ids[k])):
                heapq.heappush(heap, (rk, i))
        if (p := prv[i]) >= 0 and (rp := ranks.get((ids[p], r))):
            heapq.heappush(heap, (rp, p))
    return [t for t in ids if t >= 0]


# --------------------------------------------------------------------------- the tokenizer


def _check_specials(special_tokens: Iterable[str]) -> list[str]:
    if isinstance(special_tokens, str):
        raise DlfError("special_tokens must be a list of strings, not one string")
    specials = list(special_tokens)
    for s in specials:
        if not isinstance(s, str) or not s:
            raise DlfError(f"special token {s!r} must be a non-empty string")
        check_encodable(s)
    if len(set(specials)) != len(specials):
        raise DlfError("special tokens contain duplicates")
    return specials


def _is_id(i: object) -> bool:
    return type(i) is int and i >= 0


def _check_ids(ids: Sequence[int] | None, n: int) -> list[int] | None:
    """``ids`` as a list of ``n`` distinct ids; None when they are 0..n-1 (dlf's own)."""
    if ids is None:
        return None
    ids = list(ids)
    if len(ids) != n:
        raise DlfError(f"ids lists {len(ids)} ids; expected one per token: {n} "
                       f"(256 bytes + {n - 256} merges)")
    if not all(_is_id(i) for i in ids) or len(set(ids)) != n:
        raise DlfError("ids must be distinct non-negative integers")
    return None if ids == list(range(n)) else ids


def _special_ids(special_tokens: Sequence[str] | Mapping[str, int],
                 taken: Sequence[int]) -> dict[str, int]:
    """Each special token with its id: the given one, or (for a list) the next ones after
    the largest id in ``taken``. A given id must be free."""
    if not isinstance(special_tokens, Mapping):
        first = max(taken) + 1
        return {s: first + k for k, s in enumerate(_check_specials(special_tokens))}
    _check_specials(special_tokens)
    token_ids = set(taken)
    owner = {}
    for s, i in special_tokens.items():
        if not _is_id(i):
            raise DlfError(f"special token {s!r} has id {i!r}; expected a non-negative integer")
        if i in token_ids:
            raise DlfError(f"special token {s!r} has id {i}, which an ordinary token has")
        if i in owner:
            raise DlfError(f"special tokens {owner[i]!r} and {s!r} both have id {i}")
        owner[i] = s
    return dict(special_tokens)


class BPETokenizer:
    """Byte-level BPE: ``merges[k] = (a, b)`` makes dlf's id ``256 + k``; specials follow.

    ``encode(str) -> list[int]``, ``decode(list[int]) -> str``; ``vocab[i]`` is token
    ``i``'s bytes (None for an id no token has). ``incremental_decoder()`` turns a stream
    of ids into text.

    ``ids`` (optional, one per byte and merge) gives each of dlf's ids the id the tokenizer
    shows instead; ``special_tokens`` is a list (their ids follow the others) or a mapping
    of each to its id. ``vocab_size`` is the size of the id space: the largest id + 1.
    """

    boundary = None  # no boundary token: BPE tokenizes text streams, not lines

    def __init__(self, merges: Iterable[Sequence[int]], pattern: str = "gpt4",
                 special_tokens: Sequence[str] | Mapping[str, int] = (),
                 ids: Sequence[int] | None = None):
        self.split = split_pattern(pattern)
        self.pattern = pattern
        tokens = [bytes([i]) for i in range(256)]  # by dlf's id
        made = {b: i for i, b in enumerate(tokens)}
        self.merges: list[tuple[int, int]] = []
        self.ranks: dict[tuple[int, int], int] = {}  # pair -> merged id (256 + its rank)
        for k, m in enumerate(merges):
            new = 256 + k
            if (not isinstance(m, (list, tuple)) or len(m) != 2
                    or not all(type(t) is int and 0 <= t < new for t in m)):
                raise DlfError(f"merge {k} is {m!r}; expected two ids below {new}")
            pair = (m[0], m[1])
            if pair in self.ranks:
                raise DlfError(f"merge {k} repeats merge {self.ranks[pair] - 256}: {pair}")
            token = tokens[pair[0]] + tokens[pair[1]]
            if token in made:
                raise DlfError(f"merge {k} makes {token!r}, which token {made[token]} already is")
            self.merges.append(pair)
            self.ranks[pair] = new
            tokens.append(token)
            made[token] = new
        self.ids: list[int] | None = _check_ids(ids, len(tokens))
        shown = self.ids or range(len(tokens))
        self.special_tokens: dict[str, int] = _special_ids(special_tokens, shown)
        size = max([*shown, *self.special_tokens.values()]) + 1
        count = len(tokens) + len(self.special_tokens)
        if size > 2 * count + 256:  # vocab holds every id: a stray huge id would fill memory
            raise DlfError(f"id {size - 1:,} leaves most of the id space empty ({count:,} "
                           f"tokens); ids must stay below {2 * count + 256:,}")
        vocab: list[bytes | None] = [None] * size
        for i, token in zip(shown, tokens):
            vocab[i] = token
        for s, i in self.special_tokens.items():
            vocab[i] = s.encode("utf-8")
        self.vocab = vocab
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    # -- encoding

    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of ``text`` with special tokens' text encoded as ordinary text."""
        check_encodable(text)
        ids = []
        cache, ranks, shown = self._cache, self.ranks, self.ids
        for chunk in self.split.findall(text):
            chunk_ids = cache.get(chunk)
            if chunk_ids is None:
                chunk_ids = encode_bytes(chunk.encode("utf-8"), ranks)
                if shown is not None:
                    chunk_ids = [shown[i] for i in chunk_ids]
                if len(cache) >= CACHE_SIZE:
                    cache.clear()
                cache[chunk] = chunk_ids
            ids.extend(chunk_ids)
        return ids

    def clear_cache(self) -> None:
        """Forget the chunks encoded so far (a benchmark times encoding from none)."""
        self._cache.clear()

    def encode(self, text: str, *, allowed_special: str | Collection[str] = (),
               disallowed_special: str | Collection[str] = "all") -> list[int]:
        """Ids of ``text``; special tokens follow tiktoken's policy.

        ``allowed_special`` (``"all"`` or a set) are encoded as their ids. The text of a
        ``disallowed_special`` token (``"all"``: every special not allowed) is a
        ``DlfError``, so user text cannot smuggle in a control token by accident; pass
        ``disallowed_special=()`` to encode it as ordinary text.
        """
        known = self.special_tokens
        allowed = self._special_set(allowed_special, set(known))
        disallowed = self._special_set(disallowed_special, set(known) - allowed)
        check_encodable(text)
        if disallowed and (found := _specials_regex(disallowed).search(text)):
            raise DlfError(
                f"text contains the special token {found.group()!r} at position "
                f"{found.start()}, and special tokens are not allowed here "
                "(allowed_special; --allow-special on the command line)")
        if not allowed:
            return self.encode_ordinary(text)
        ids = []
        start = 0
        for m in _specials_regex(allowed).finditer(text):
            ids.extend(self.encode_ordinary(text[start:m.start()]))
            ids.append(known[m.group()])
            start = m.end()
        ids.extend(self.encode_ordinary(text[start:]))
        return ids

    def _special_set(self, value: str | Collection[str], everything: set[str]) -> set[str]:
        """``"all"`` as ``everything``, else ``value`` as a set of known special tokens."""
        if value == "all":
            return everything
        if isinstance(value, str):
            raise DlfError(f"expected \"all\" or a collection of special tokens, got {value!r}")
        chosen = set(value)
        if unknown := chosen - set(self.special_tokens):
            raise DlfError(f"{sorted(unknown)} are not special tokens of this tokenizer; "
                           f"it has {sorted(self.special_tokens) or 'none'}")
        return chosen

    # -- decoding

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes of ``ids`` (a list or 1-D tensor)."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        vocab = self.vocab
        out = []
        for i in ids:
            if type(i) is not int or not 0 <= i < len(vocab):
                raise DlfError(f"token id {i!r} is out of range for vocab size {len(vocab)}")
            token = vocab[i]
            if token is None:
                raise DlfError(f"token id {i} belongs to no token (this tokenizer's ids skip it)")
            out.append(token)
        return b"".join(out)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; bytes that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def incremental_decoder(self) -> IncrementalDecoder:
        return IncrementalDecoder(self)

    def token_chars(self) -> list[int]:
        """Characters each id adds to decoded text: its UTF-8 lead bytes (every byte but
        the continuation bytes 0b10xxxxxx; none for an id no token has). Every character
        has one lead byte, so over ids whose bytes are valid UTF-8 the sum is exactly
        ``len(decode(ids))``, also when a character is split between two tokens."""
        return [0 if token is None else sum(b & 0xC0 != 0x80 for b in token)
                for token in self.vocab]

    # -- inspection

    def token_repr(self, i: int) -> str:
        """Token ``i`` for a person: its text in quotes, or its bytes when not UTF-8."""
        b = self.vocab[i]
        if b is None:
            return "(no token)"
        try:
            return repr(b.decode("utf-8"))
        except UnicodeDecodeError:
            return repr(b)

    def describe_merge(self, k: int) -> str:
        """Merge ``k`` as ``id: left + right -> merged``, in the tokenizer's ids."""
        shown = self.ids or range(256 + len(self.merges))
        a, b, new = shown[self.merges[k][0]], shown[self.merges[k][1]], shown[256 + k]
        return f"{new}: {self.token_repr(a)} + {self.token_repr(b)} -> {self.token_repr(new)}"

    # -- files

    def to_json(self) -> dict:
        """Version 1 when the ids are dlf's own and the special tokens follow them;
        version 2 (the bytes' ids, each merge as ``[a, b, id]``, the specials' ids)
        otherwise."""
        n = 256 + len(self.merges)
        if self.ids is None and list(self.special_tokens.values()) == list(
                range(n, n + len(self.special_tokens))):
            return {"format": FORMAT, "version": 1, "pattern": self.pattern,
                    "special_tokens": list(self.special_tokens),
                    "merges": [list(m) for m in self.merges]}
        shown = self.ids or range(n)
        return {"format": FORMAT, "version": 2, "pattern": self.pattern,
                "special_tokens": dict(self.special_tokens),
                "bytes": list(shown[:256]),
                "merges": [[shown[a], shown[b], shown[256 + k]]
                           for k, (a, b) in enumerate(self.merges)]}

    @classmethod
    def from_json(cls, obj: object) -> BPETokenizer:
        """Inverse of ``to_json``; ``DlfError`` when a field is missing or malformed."""
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise DlfError(f"not a dlf BPE tokenizer (expected \"format\": \"{FORMAT}\")")
        version = obj.get("version")
        if version not in VERSIONS or type(version) is not int:
            raise DlfError(f"BPE tokenizer format version {version!r} is not supported (this "
                           f"dlf reads versions {' and '.join(map(str, VERSIONS))})")
        fields = ("pattern", "special_tokens", "merges") + (("bytes",) if version == 2 else ())
        missing = [k for k in fields if k not in obj]
        if missing:
            raise DlfError(f"BPE tokenizer JSON is missing {', '.join(missing)}")
        if version == 1:
            if not isinstance(obj["merges"], list) or not isinstance(obj["special_tokens"], list):
                raise DlfError("BPE tokenizer fields 'merges' and 'special_tokens' must be lists")
            return cls(obj["merges"], obj["pattern"], obj["special_tokens"])
        if not isinstance(obj["merges"], list) or not isinstance(obj["special_tokens"], dict):
            raise DlfError("BPE tokenizer field 'merges' must be a list and 'special_tokens' an "
                           "object (version 2)")
        merges, ids = _dlf_ids(obj["bytes"], obj["merges"])
        return cls(merges, obj["pattern"], obj["special_tokens"], ids)

    def save(self, path: str | os.PathLike) -> None:
        """Write JSON atomically, one merge per line."""
        obj = self.to_json()
        fields = [f"{json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}"
                  for k, v in obj.items() if k != "merges"]
        merges = ",\n".join(f"  [{', '.join(map(str, m))}]" for m in obj["merges"])
        fields.append(f"\"merges\": [\n{merges}\n]" if merges else "\"merges\": []")
        text = "{\n" + ",\n".join(fields) + "\n}\n"
        try:
            atomic_write_text(path, text)
        except OSError as e:
            raise DlfError(f"could not write tokenizer to {path}: {e.strerror or e}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> BPETokenizer:
        return load_json(path, cls.from_json)

    # -- other libraries' files (dlf.data.bpe_files)

    @classmethod
    def from_tiktoken(cls, path: str | os.PathLike, pattern: str,
                      special_tokens: Mapping[str, int] | None = None) -> BPETokenizer:
        """A tiktoken rank file (``cl100k_base.tiktoken``): ids are its ranks."""
        from dlf.data import bpe_files

        return bpe_files.from_tiktoken(path, pattern, special_tokens)

    @classmethod
    def from_gpt2_files(cls, vocab_json: str | os.PathLike, merges_txt: str | os.PathLike,
                        pattern: str = "gpt2") -> BPETokenizer:
        """GPT-2's ``vocab.json`` + ``merges.txt``: ids are vocab.json's."""
        from dlf.data import bpe_files

        return bpe_files.from_gpt2_files(vocab_json, merges_txt, pattern)

    @classmethod
    def from_hf_tokenizer_json(cls, path: str | os.PathLike) -> BPETokenizer:
        """Hugging Face's ``tokenizer.json`` of a byte-level BPE: ids are its vocab's."""
        from dlf.data import bpe_files

        return bpe_files.from_hf_tokenizer_json(path)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BPETokenizer):
            return NotImplemented
        return self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash((self.pattern, tuple(self.merges), tuple(self.special_tokens.items()),
                     tuple(self.ids or ())))

    def __repr__(self) -> str:
        return (f"BPETokenizer(pattern={self.pattern!r}, vocab_size={self.vocab_size}, "
                f"merges={len(self.merges)}, special_tokens={list(self.special_tokens)})")


def _dlf_ids(byte_ids: object, merges: object) -> tuple[list[tuple[int, int]], list[int]]:
    """A version-2 file's bytes and merges (in its own ids) as dlf's merges and ``ids``."""
    if (not isinstance(byte_ids, list) or len(byte_ids) != 256
            or not all(_is_id(i) for i in byte_ids) or len(set(byte_ids)) != 256):
        raise DlfError("BPE tokenizer field 'bytes' must list 256 distinct ids, one per byte")
    own = {i: b for b, i in enumerate(byte_ids)}  # the file's id -> dlf's id
    pairs = []
    for k, m in enumerate(merges):
        if (not isinstance(m, list) or len(m) != 3 or not all(_is_id(t) for t in m)
                or m[0] not in own or m[1] not in own or m[2] in own):
            raise DlfError(f"merge {k} is {m!r}; expected [a, b, id]: two ids made before "
                           "it and the new token's id")
        pairs.append((own[m[0]], own[m[1]]))
        own[m[2]] = 256 + k
    return pairs, list(own)


class IncrementalDecoder:
    """Text from a stream of ids: bytes of a character split across tokens wait for the
    rest of it. ``decode(ids)`` returns the text completed so far; ``final=True`` also
    flushes an unfinished character (as U+FFFD), so the pieces add up to ``decode(all)``.
    """

    def __init__(self, tokenizer: BPETokenizer):
        self.tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def decode(self, ids: Iterable[int], final: bool = False) -> str:
        return self._utf8.decode(self.tokenizer.decode_bytes(ids), final=final)

    def reset(self) -> None:
        self._utf8.reset()


def parse_ids(text: str) -> list[int]:
    """Token ids written as integers separated by spaces or commas (``"72 101,108"``)."""
    ids = []
    for word in text.replace(",", " ").split():
        try:
            ids.append(int(word))
        except ValueError:
            raise DlfError(f"{word!r} is not a token id (an integer)") from None
    return ids


def stats(tokenizer: BPETokenizer, text: str, shown: int = 5) -> dict:
    """How well ``tokenizer`` compresses ``text`` (special tokens' text counts as theirs),
    with its first and last ``shown`` merges described."""
    ids = tokenizer.encode(text, allowed_special="all")
    n_bytes = len(text.encode("utf-8"))
    k = len(tokenizer.merges)
    return {
        "characters": len(text), "bytes": n_bytes, "tokens": len(ids),
        "characters_per_token": len(text) / max(len(ids), 1),
        "bytes_per_token": n_bytes / max(len(ids), 1),
        "first_merges": [tokenizer.describe_merge(i) for i in range(min(shown, k))],
        "last_merges": [tokenizer.describe_merge(i) for i in range(max(k - shown, shown), k)]
        if k > shown else [],
    }
