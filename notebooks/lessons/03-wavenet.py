# %% [markdown]
# # 3. WaveNet: merge the context two characters at a time
#
# Lesson 2's MLP read 3 characters. To read 8, the obvious move is to concatenate 8
# embeddings and keep one hidden layer. But then that single layer must combine all 8
# characters in one step: every pattern over the whole window is learned from scratch,
# in one big matrix.
#
# WaveNet (van den Oord et al., 2016) does it hierarchically: fuse neighbouring pairs
# of characters, then pairs of pairs, then pairs of those. Each level sees a small
# input, and the patterns learned for "two characters" are reused at every position.
# With the same number of parameters, the structure should buy a better model. That is
# this lesson's claim, and we test it.

# %%
import tempfile
from pathlib import Path

import torch

import dlf
from dlf.models.wavenet import WaveNetConfig
from dlf.nn import BatchNorm1d, Embedding, FlattenConsecutive, Linear, Sequential, Tanh

torch.set_num_threads(1)  # small models: one thread is fastest (and fair to a shared machine)
QUICK = dlf.quick()  # DLF_QUICK=1: tiny budgets for CI; the committed notebook is never quick
WORK = Path(tempfile.mkdtemp(prefix="dlf-lesson3-"))
print(f"dlf {dlf.__version__}, budget: {'quick' if QUICK else 'full'}")

# %%
cfg = dlf.load_preset("names-wavenet")  # block_size 8, n_embd 24, n_hidden 128
data = dlf.load_data(cfg)
tok, V = data.tokenizer, data.tokenizer.vocab_size
xb, yb = data.train.batch(4, torch.Generator().manual_seed(3))
for x, y in zip(xb.tolist(), yb.tolist()):
    print("".join(tok.itos[i] for i in x), "->", tok.itos[y])

# %% [markdown]
# ## The shapes, level by level
#
# The key layer is `FlattenConsecutive(2)`: it takes (B, T, C) and concatenates each
# pair of neighbouring time steps, giving (B, T/2, 2C). A Linear layer then acts on the
# last dimension only, so it mixes each pair, at every position at once, with the same
# weights. BatchNorm1d on a 3-D input normalises each channel over the batch *and* the
# positions. Three levels take 8 positions down to 1.
#
# Here is the network as a list of `dlf.nn` layers, with a batch of 4 contexts pushed
# through one layer at a time:

# %%
torch.manual_seed(42)
n_embd, n_hidden = 24, 128
layers = [
    Embedding(V, n_embd),
    FlattenConsecutive(2), Linear(2 * n_embd, n_hidden, bias=False), BatchNorm1d(n_hidden), Tanh(),
    FlattenConsecutive(2), Linear(2 * n_hidden, n_hidden, bias=False), BatchNorm1d(n_hidden), Tanh(),
    FlattenConsecutive(2), Linear(2 * n_hidden, n_hidden, bias=False), BatchNorm1d(n_hidden), Tanh(),
    Linear(n_hidden, V),
]
x = xb
print(f"{'input':>24s}  {tuple(x.shape)}")
for layer in layers:
    x = layer(x)
    print(f"{type(layer).__name__:>24s}  {tuple(x.shape)}")

# %% [markdown]
# (B=4 throughout; the time axis goes 8 -> 4 -> 2 -> 1 and is dropped at the last merge.)
#
# dlf's `wavenet` model is this stack. Same layers, same parameter count:

# %%
wavenet = dlf.build_model(WaveNetConfig(vocab_size=V, block_size=8, n_embd=n_embd,
                                        n_hidden=n_hidden))
ours = Sequential(*layers)
print(wavenet.net)
assert [type(m) for m in wavenet.net] == [type(m) for m in ours]
assert wavenet.num_parameters() == ours.num_parameters()
print(f"{ours.num_parameters():,} parameters")

# %% [markdown]
# ## WaveNet against a flat MLP with the same parameters
#
# The experiment `wavenet-vs-flat` trains this WaveNet and a one-hidden-layer MLP over
# the same 8 characters whose width is chosen so its parameter count is as close as
# possible. Same data, batches, optimizer, schedule and seed: only the structure
# differs. Each variant is an ordinary run directory.

# %%
steps = 200 if QUICK else 8000
exp = dlf.experiments.run_experiment("wavenet-vs-flat", WORK / "wavenet-vs-flat", steps=steps,
                                     force=True)
for v in exp["variants"]:
    print(f"{v['label']:36s} {v['num_parameters']:7,} parameters: "
          f"train {v['train_loss']:.4f}, val {v['val_loss']:.4f}")
print(exp["interpretation"])

# %%
curves = {v["label"]: [(r["step"], r["loss"]) for r in
                       dlf.read_metrics(WORK / "wavenet-vs-flat" / v["variant"]) if "loss" in r]
          for v in exp["variants"]}
dlf.show(dlf.plots.plot_loss_curves, curves, title="wavenet vs flat MLP")

# %% [markdown]
# ## The claim: at equal parameters, the WaveNet wins
#
# Early in training the flat model is ahead (one layer learns fastest at first); the
# hierarchy pays off later. Under the quick budget (`DLF_QUICK=1`, 200 steps) training
# stops before that point, so there only the fairness of the comparison is checked.

# %%
w, f = (next(v for v in exp["variants"] if v["variant"] == name)
        for name in ("wavenet", "flat-mlp"))
assert abs(f["num_parameters"] / w["num_parameters"] - 1) < 0.01  # equal budgets, within 1%
print(f"val loss: WaveNet {w['val_loss']:.4f}, flat MLP {f['val_loss']:.4f} "
      f"(WaveNet better by {f['val_loss'] - w['val_loss']:+.4f} nats)")
if not QUICK:
    assert w["val_loss"] < f["val_loss"]

# %% [markdown]
# ## Samples
#
# Eight characters of context: the WaveNet's names.

# %%
run = dlf.load_run(WORK / "wavenet-vs-flat" / "wavenet")
print(dlf.generate(run, n=12, seed=0))

# %% [markdown]
# **What to take away.** Structure is a prior: merging neighbours step by step says "what
# matters are local patterns, composed". When that prior fits the data it beats a flat
# layer with the same budget. A convolution does the same merge efficiently; the
# Transformer of lesson 4 drops the fixed tree and lets each position choose what to
# read.
