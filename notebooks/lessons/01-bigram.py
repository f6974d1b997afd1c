# %% [markdown]
# # 1. The bigram: counting, then learning to count
#
# A language model assigns a probability to the next character given the ones before it.
# The smallest such model looks at **one** previous character. It has a best answer we can
# write down directly: count how often each character follows each other one, and
# normalise the counts. We do exactly that first.
#
# Then we throw the counting away and train a one-layer neural network by gradient descent
# on the same data. The network is told nothing about counts, only to make the training
# data likely (to minimise the negative log-likelihood). **The lesson: it ends up at the
# counts.** The loss defines what the model should be; the network is just one way of
# parametrising it, and the one that scales to longer contexts, where counting cannot
# (27 characters of context already give 27^27 table rows).
#
# Everything here runs on `dlf`'s public API (`import dlf`). Budgets: by default the
# lesson's own; with the environment variable `DLF_QUICK=1` a tiny one (for CI), under
# which the numbers are not the lesson's.

# %%
import math
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

import dlf

torch.set_num_threads(1)  # small models: one thread is fastest (and fair to a shared machine)
QUICK = dlf.quick()  # DLF_QUICK=1: tiny budgets for CI; the committed notebook is never quick
WORK = Path(tempfile.mkdtemp(prefix="dlf-lesson1-"))  # this notebook's run directories
print(f"dlf {dlf.__version__}, budget: {'quick' if QUICK else 'full'}")

# %% [markdown]
# ## The data
#
# `names` is a list of 32,000 first names, one per line, shipped inside the package. A
# preset describes a run (data, model, training); `dlf.load_data` reads its data set,
# splits it 80/10/10 into train/val/test (shuffled with a fixed seed) and builds the
# character tokenizer. Index 0 is the **boundary** token: it marks both the start and
# the end of a name, so the model also learns how names begin and end.

# %%
cfg = dlf.load_preset("names-bigram")
data = dlf.load_data(cfg)
tok = data.tokenizer
V = tok.vocab_size
print(f"{len(data.train_items):,} training names, e.g. {data.train_items[:6]}")
print(f"{V} tokens: {''.join(tok.itos)!r} (index {tok.boundary} = boundary {tok.itos[0]!r})")

# %% [markdown]
# For a bigram the data set is every (previous, next) pair: `X` holds the previous
# character (a context of length 1), `Y` the next one. "emma" gives five pairs, from
# `.e` to `a.`.

# %%
X, Y = data.train.X, data.train.Y  # X: (N, 1) previous character, Y: (N,) next character
print(tuple(X.shape), tuple(Y.shape))
print([tok.itos[x] + tok.itos[y] for x, y in zip(X[:8, 0].tolist(), Y[:8].tolist())])

# %% [markdown]
# ## Counting
#
# `N[i, j]` = how often character j follows character i in the training split.

# %%
N = torch.zeros(V, V, dtype=torch.long)
N.index_put_((X[:, 0], Y), torch.ones_like(Y), accumulate=True)  # N[prev, next] += 1
print(f"{int(N.sum()):,} pairs counted; most common: "
      f"{tok.itos[int(N.argmax()) // V] + tok.itos[int(N.argmax()) % V]!r}")
dlf.show(dlf.plots.plot_counts, N, tok)

# %% [markdown]
# Normalising each row gives P(next | previous). One fake count is added to every cell
# first ("add-one smoothing"): a pair never seen in training would otherwise get
# probability 0, and a single such pair in the validation set would make its loss infinite.
#
# The quality of a model is the **average negative log-likelihood** of data it did not
# train on, in nats per character. Guessing uniformly scores ln 27 = 3.30.

# %%
k = cfg.model.smoothing  # 1.0 in this preset
P = (N + k).float()
P = P / P.sum(dim=1, keepdim=True)  # (V, V): each row sums to 1


def nll(P, split) -> float:
    """Mean -log P(next | prev) over a split's pairs."""
    return -P[split.X[:, 0], split.Y].log().mean().item()


count_val = nll(P, data.val)
print(f"count model: train {nll(P, data.train):.4f}, val {count_val:.4f} nats/char; "
      f"uniform guess {math.log(V):.4f}")

# %% [markdown]
# dlf's own count model (what `dlf train names-bigram` fits) must build the same table:

# %%
cfg.model.vocab_size = V
counted = dlf.build_model(cfg.model)
counted.fit(X, Y)
assert torch.allclose(counted.probability_table(), P)

# %% [markdown]
# ## Sampling
#
# To generate a name, start at the boundary, draw the next character from its row of P,
# and repeat until the boundary comes up again. By hand:

# %%
g = torch.Generator().manual_seed(2147483647)
for _ in range(5):
    out, ix = [], tok.boundary
    while True:
        ix = torch.multinomial(P[ix], 1, generator=g).item()
        if ix == tok.boundary:
            break
        out.append(tok.itos[ix])
    print("".join(out))

# %% [markdown]
# ...and with `dlf.generate`, which does the same for any model. The names are bad: one
# character of context is not enough to know where you are in a name.

# %%
print(dlf.generate(counted, tok, n=8, seed=0))

# %% [markdown]
# ## The same model as a neural network
#
# Now forget counting. Take a weight matrix W of shape (27, 27), initialised randomly.
# For a previous character i, the network's output is the row `onehot(i) @ W`: 27 numbers,
# read as log-counts ("logits"). Exponentiate and normalise (softmax) to get
# probabilities. Then nudge W downhill on the negative log-likelihood.
#
# One step, written out (the one-hot product is just a row lookup, `W[i]`):

# %%
xenc = F.one_hot(X[:, 0], V).float()  # (N, V)
W = torch.randn(V, V, generator=torch.Generator().manual_seed(2147483647), requires_grad=True)
for step in range(5 if QUICK else 30):
    logits = xenc @ W  # (N, V) log-counts
    probs = logits.exp() / logits.exp().sum(1, keepdim=True)  # softmax: rows sum to 1
    loss = -probs[torch.arange(len(Y)), Y].log().mean()
    W.grad = None
    loss.backward()
    with torch.no_grad():
        W -= 50 * W.grad  # plain gradient descent on the whole training set
    if step % 5 == 0:
        print(f"step {step:3d}: loss {loss.item():.4f}")

# %% [markdown]
# That is slow going with plain gradient descent. dlf's `neural-bigram` model is exactly
# this network (`logits = W[prev]`), and its preset trains it with momentum. We train it
# into a run directory with `dlf.train` and open the run with `dlf.load_run`:

# %%
ncfg = dlf.load_preset("names-bigram-neural")
if QUICK:
    ncfg.train.max_steps = 40
result = dlf.train(ncfg, WORK / "neural", force=True, progress=False)
run = dlf.load_run(WORK / "neural")
print(f"neural bigram after {result['steps']} steps: train {result['train_loss']:.4f}, "
      f"val {result['val_loss']:.4f}")
dlf.show(dlf.plots.plot_loss, dlf.read_metrics(run), title="neural bigram (full-batch SGD)")

# %% [markdown]
# ## The claim: the network learned the counts
#
# Left, the count model's probabilities; right, the network's softmax(W). Same picture.

# %%
Q = run.model.probability_table()
dlf.show(dlf.plots.plot_prob_tables, P, Q, tok)

# %%
neural_val = run.model(data.val.X, data.val.Y)[1].item()
gap = neural_val - count_val
print(f"validation NLL: counts {count_val:.4f}, network {neural_val:.4f} (gap {gap:+.4f})")
if QUICK:  # 40 steps get close, not all the way
    assert abs(gap) < 0.1, gap
else:
    assert abs(gap) < 0.01, gap  # the lesson: within 0.01 nats of the counts

# %% [markdown]
# The network samples like the count model too:

# %%
print(dlf.generate(run, n=8, seed=0))

# %% [markdown]
# **What to take away.** Counting is the maximum-likelihood answer for a one-character
# context; gradient descent on the likelihood finds the same answer without being told
# how. The next lessons keep the gradient-descent half and grow the context: an MLP over
# several characters (lesson 2), a hierarchy that merges them in pairs (lesson 3) and
# attention (lesson 4).
