# %% [markdown]
# # 4. The Transformer: let every position choose what to read
#
# The WaveNet merged its context along a fixed tree. Self-attention drops the tree: at
# every position the model forms a **query** ("what am I looking for?"), every earlier
# position offers a **key** ("what do I contain?") and a **value** ("what I will pass
# on"). The position reads a weighted average of the values, weighted by how well its
# query matches each key. The weights depend on the data, so the model decides, for each
# character, which earlier characters matter. Several heads do this in parallel, and
# blocks of attention + MLP are stacked (Vaswani et al., 2017; GPT-2).
#
# Here we train a small character-level GPT on Shakespeare, compute one head's attention
# by hand and check it against the model's, draw every head's attention for a prompt,
# and check that sampling with a key/value cache gives exactly the tokens of sampling
# without one.

# %%
import tempfile
import time
from pathlib import Path

import torch

import dlf

QUICK = dlf.quick()  # DLF_QUICK=1: tiny budgets for CI; the committed notebook is never quick
WORK = Path(tempfile.mkdtemp(prefix="dlf-lesson4-"))
print(f"dlf {dlf.__version__}, budget: {'quick' if QUICK else 'full'}")

# %% [markdown]
# ## Training
#
# The preset `shakespeare-transformer-cpu-gpt2` is sized for a laptop CPU: 3 blocks, 4 heads,
# 128-wide residual stream, a context of 32 characters, AdamW with a cosine schedule.
# Unlike the names models, a text model predicts the next character at **every**
# position of its window, so each step trains on 32 x 32 targets. This is the GPT-2 design
# written out here; `shakespeare-transformer-cpu` is the same shape with RoPE, squared ReLU,
# Muon and a WSD schedule, which reach the same loss sooner (docs/recipe.md).

# %%
cfg = dlf.load_preset("shakespeare-transformer-cpu-gpt2")
# One thread: on a machine busy with other work, two threads keep waiting for each other
# (several times slower here). On an idle laptop, threads = 0 (one per core) is faster.
cfg.train.threads = 1
if QUICK:
    dlf.apply_overrides(cfg, ["max_steps=40", "warmup_steps=5", "eval_interval=40",
                              "eval_iters=5", "n_layer=2", "n_embd=64"])
print(f"{cfg.model}\n{cfg.train.max_steps} steps, batch {cfg.train.batch_size}")
t0 = time.perf_counter()
result = dlf.train(cfg, WORK / "gpt", force=True, progress=False)
print(f"{result['num_parameters']:,} parameters, {result['steps']} steps in "
      f"{time.perf_counter() - t0:.0f} s: train {result['train_loss']:.4f}, "
      f"val {result['val_loss']:.4f} nats/char")
run = dlf.load_run(WORK / "gpt")
dlf.show(dlf.plots.plot_loss, dlf.read_metrics(run), title="character GPT on Shakespeare")

# %%
print(dlf.generate(run, prompt="ROMEO:\n", max_new_tokens=100 if QUICK else 400, seed=0)[0])

# %% [markdown]
# ## One attention head, by hand
#
# Take a prompt and follow it into the first block. Token and position embeddings are
# added, then LayerNorm (the blocks are pre-norm). One Linear layer `c_attn` produces the
# queries, keys and values of all heads at once; head h owns columns h*hs .. (h+1)*hs of
# each (dlf's Linear computes `x @ W + b`, W of shape (in, out)). The scores q . k are
# scaled by 1/sqrt(hs), so their spread does not grow with the head size and the
# softmax stays soft. The mask sets the scores of **later** positions to -inf: a
# position may not read the future it has to predict.

# %%
model, tok = run.model, run.tokenizer
prompt = "ROMEO:\nBut soft, what light"
idx = torch.tensor([tok.encode(prompt)])  # (1, T)
T = idx.shape[1]
C, nh = model.config.n_embd, model.config.n_head
hs = C // nh
head = 0
block = model.blocks[0]
with torch.no_grad():
    x = model.wte(idx) + model.wpe(torch.arange(T))  # (1, T, C)
    h = block.ln1(x)
    Wq, Wk, _ = block.attn.c_attn.weight.split(C, dim=1)  # 3 x (C, C)
    bq, bk, _ = block.attn.c_attn.bias.split(C)
    cols = slice(head * hs, (head + 1) * hs)
    q = h @ Wq[:, cols] + bq[cols]  # (1, T, hs)
    k = h @ Wk[:, cols] + bk[cols]  # (1, T, hs)
    scores = q @ k.transpose(1, 2) / hs**0.5  # (1, T, T): query t against key s
    future = torch.ones(T, T).triu(1).bool()  # s > t
    att = scores.masked_fill(future, float("-inf")).softmax(dim=-1)  # (1, T, T)
print(f"row for the last character {prompt[-1]!r}: the 5 positions it reads most:")
top = att[0, -1].topk(5)
print([(repr(prompt[s]), round(w, 3)) for w, s in zip(top.values.tolist(), top.indices.tolist())])

# %% [markdown]
# The model returns the same probabilities from `attention_maps` (one (B, n_head, T, T)
# tensor per layer):

# %%
maps = model.attention_maps(idx)
assert torch.allclose(att[0], maps[0][0, head], atol=1e-6)
assert torch.allclose(maps[0].sum(-1), torch.ones(1, nh, T), atol=1e-6)  # rows are distributions
print(f"{len(maps)} layers x {nh} heads; head {head} of layer 0 matches the hand computation")

# %% [markdown]
# ## Every head, for the prompt
#
# Rows are the query positions, columns the positions they read; the upper triangle is
# empty (the mask). Some heads look at the previous character or two, some at the
# start of the word or line, some spread out. (`dlf attention RUN --prompt TEXT` draws
# the same figure from the command line.)

# %%
dlf.show(dlf.plots.plot_attention, [m[0] for m in maps], list(prompt))

# %% [markdown]
# ## The claim: cached sampling equals uncached sampling
#
# To sample, the model predicts one character, appends it and runs again. Without a
# cache every step recomputes the keys and values of the whole window, though they have
# not changed. A key/value cache keeps them: each new character computes only its own
# query, key and value. The result must be the same tokens, only faster.

# %%
n_new = 100 if QUICK else 500
t0 = time.perf_counter()
cached = dlf.generate(run, prompt="JULIET:\n", max_new_tokens=n_new, seed=1, use_cache=True)
t1 = time.perf_counter()
uncached = dlf.generate(run, prompt="JULIET:\n", max_new_tokens=n_new, seed=1, use_cache=False)
t2 = time.perf_counter()
assert cached == uncached
print(f"identical {n_new} characters; cache {t1 - t0:.2f} s, no cache {t2 - t1:.2f} s "
      "(a busy machine makes these times noisy)\n")
print(cached[0])

# %% [markdown]
# **What to take away.** Attention is a soft, learned lookup: queries match keys, and
# the match weights average the values. Masking makes it causal, so one forward pass
# trains every position of the window at once. The cache is an exact optimisation of
# generation, which the equality check proves token for token.
