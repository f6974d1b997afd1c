# %% [markdown]
# # 2. The MLP, two ways: every gradient by hand, then from layers
#
# The bigram saw one character. Bengio et al. (2003) showed how to see several without a
# table that explodes: **embed** each character as a short vector, concatenate the last
# few, and feed them through a hidden layer. The table of 27^3 contexts becomes a
# function with a few thousand weights, and similar contexts share what they learn.
#
# We build it twice.
#
# 1. **By hand** (`dlf.manual`): every gradient of the backward pass is written out
#    and checked against autograd. Autograd is a convenience, not magic; knowing what
#    it computes is what lets you debug a network that does not learn.
# 2. **From layers** (`dlf.nn`): the same network as Embedding, Linear, BatchNorm1d and
#    Tanh modules, trained with `dlf.optim`, and then looked inside: activation and
#    gradient histograms, update:data ratios, and BatchNorm's running statistics.

# %%
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

import dlf
from dlf.manual import GRADCHECK_LIMIT, ManualMLP, ManualMLPConfig
from dlf.nn import BatchNorm1d, Embedding, FlattenConsecutive, Linear, Module, Sequential, Tanh

torch.set_num_threads(1)  # small models: one thread is fastest (and fair to a shared machine)
QUICK = dlf.quick()  # DLF_QUICK=1: tiny budgets for CI; the committed notebook is never quick
WORK = Path(tempfile.mkdtemp(prefix="dlf-lesson2-"))
print(f"dlf {dlf.__version__}, budget: {'quick' if QUICK else 'full'}")

# %% [markdown]
# The data: names again, now as windows of the **3** previous characters (boundary
# tokens pad the start of each name).

# %%
cfg = dlf.load_preset("names-mlp")
cfg.model.block_size = 3
data = dlf.load_data(cfg)
tok, V = data.tokenizer, data.tokenizer.vocab_size
for x, y in zip(data.train.X[:5].tolist(), data.train.Y[:5].tolist()):
    print("".join(tok.itos[i] for i in x), "->", tok.itos[y])

# %% [markdown]
# ## Part 1: the backward pass by hand
#
# `ManualMLP.forward_cache` runs the forward pass as the lecture writes it, one small
# operation per line, and keeps every intermediate: the embedding lookup, the hidden
# pre-activation, each step of BatchNorm (mean, difference, variance, its inverse square
# root), tanh, the logits, and each step of the softmax and cross-entropy. In float64,
# so that rounding cannot hide a wrong formula.

# %%
mcfg = ManualMLPConfig(vocab_size=V, block_size=3, n_embd=10, n_hidden=64)
model = ManualMLP(mcfg, generator=torch.Generator().manual_seed(42), dtype=torch.float64)
xb, yb = data.train.batch(32, torch.Generator().manual_seed(0))
cache = model.forward_cache(xb, yb, update_running=False)
print(f"loss {cache['loss'].item():.4f}; intermediates: {', '.join(cache)}")

# %% [markdown]
# The backward pass walks the same list in reverse. Its first step is the loss itself:
# `loss = -mean_i logprobs[i, y_i]`, so d loss / d logprobs is -1/n at each target and 0
# elsewhere. Written here, then compared with dlf.manual's:

# %%
n = len(yb)
grads = model.backward(cache, xb, yb)  # every hand-written gradient, keyed "d<name>"
dlogprobs = torch.zeros_like(cache["logprobs"])
dlogprobs[torch.arange(n), yb] = -1.0 / n
assert torch.equal(dlogprobs, grads["dlogprobs"])

# %% [markdown]
# Chained through softmax and log, the many small steps collapse into one famous line:
# `dlogits = (softmax(logits) - onehot(y)) / n`. The probabilities push down on every
# wrong character and up on the right one, in proportion to how wrong the model was.

# %%
dlogits = (F.softmax(cache["logits"], dim=1) - F.one_hot(yb, V)) / n
print(f"max |by formula - step by step| = {(dlogits - grads['dlogits']).abs().max():.2e}")

# %% [markdown]
# Now the check against autograd: make the parameters require gradients, run the same
# forward pass, ask autograd to keep the gradient of every intermediate, call
# `loss.backward()`, and compare all of them with the hand-written ones.

# %%
for p in model.parameters():
    p.requires_grad_(True)
cache = model.forward_cache(xb, yb, update_running=False)
for t in cache.values():
    t.retain_grad()
cache["loss"].backward()
autograd = {f"d{name}": t.grad for name, t in cache.items() if t.grad is not None}
autograd |= {f"d{name}": p.grad for name, p in model.named_parameters()}
worst = 0.0
for name, mine in grads.items():
    diff = (mine - autograd[name]).abs().max().item()
    worst = max(worst, diff)
    print(f"{name:16s} {tuple(mine.shape)!s:12s} max |hand - autograd| = {diff:.1e}")

# %% [markdown]
# ## The claim: the manual gradients equal autograd's
#
# In float64 a correct formula agrees with autograd to rounding (about 1e-16 relative);
# a wrong one differs by the size of a gradient. `dlf.manual.gradcheck` runs the same
# comparison (plus the fused cross-entropy and BatchNorm backward formulas).

# %%
assert worst < GRADCHECK_LIMIT, worst
rows = dlf.manual.gradcheck(batch_size=32, seed=0)
assert all(r["max_abs_diff"] < GRADCHECK_LIMIT for r in rows)
print(f"{len(rows)} gradients checked by dlf.manual.gradcheck, largest difference "
      f"{max(r['max_abs_diff'] for r in rows):.1e} (limit {GRADCHECK_LIMIT:g})")

# %% [markdown]
# These gradients are enough to train: `train_manual` runs minibatch SGD with them and
# nothing else (no `loss.backward()` anywhere).

# %%
manual = ManualMLP(ManualMLPConfig(vocab_size=V, block_size=3, n_embd=10, n_hidden=200,
                                   init="standard"), generator=torch.Generator().manual_seed(42))
steps = 150 if QUICK else 10000
losses = dlf.manual.train_manual(manual, data.train.X, data.train.Y, steps, 32,
                                 lambda i: 0.1 if i < 0.75 * steps else 0.01,
                                 generator=torch.Generator().manual_seed(1))
manual.eval()
manual_val = manual(data.val.X, data.val.Y)[1].item()
print(f"manual MLP after {steps} steps: val {manual_val:.4f} nats/char (the bigram: ~2.45)")
dlf.show(dlf.plots.plot_loss_curves, {"manual-backprop MLP": list(enumerate(losses))},
         title="training loss, hand-written gradients")

# %% [markdown]
# ## Part 2: the same network from layers
#
# Writing every gradient by hand does not scale to deeper networks. `dlf.nn` layers are
# small modules with a forward pass; autograd supplies the backward. Here is an MLP with
# two hidden layers, each Linear -> BatchNorm1d -> Tanh. The class follows dlf's model
# contract (`logits, loss = model(idx, targets)` and a `block_size`), so the rest of dlf
# (sampling, diagnostics) works on it.
#
# Why BatchNorm: a tanh unit only learns while its input is in the steep middle of the
# curve. BatchNorm standardises each unit's pre-activation over the batch (then lets a
# learned gain and bias move it), so no layer starts saturated or dead, whatever the
# layers before it do. The Linear layers have no bias: BatchNorm subtracts the mean
# anyway.

# %%
n_embd, n_hidden = 10, 200


class Net(Module):
    """idx (B, 3) -> logits (B, V)."""

    def __init__(self):
        super().__init__()
        self.block_size = 3
        self.layers = Sequential(
            Embedding(V, n_embd),  # (B, 3) -> (B, 3, n_embd)
            FlattenConsecutive(3),  # -> (B, 3 * n_embd): the three embeddings side by side
            Linear(3 * n_embd, n_hidden, bias=False), BatchNorm1d(n_hidden), Tanh(),
            Linear(n_hidden, n_hidden, bias=False), BatchNorm1d(n_hidden), Tanh(),
            Linear(n_hidden, V),
        )

    def forward(self, idx, targets=None):
        logits = self.layers(idx)  # (B, V)
        loss = None if targets is None else F.cross_entropy(logits, targets)
        return logits, loss


torch.manual_seed(42)
net = Net()
with torch.no_grad():
    net.layers[-1].weight *= 0.1  # a near-uniform first guess: initial loss ~ ln(27)
print(net)
print(f"{net.num_parameters():,} parameters")

# %% [markdown]
# Training, written out: a batch, the loss, `backward`, one optimizer step. Alongside,
# an `UpdateRatioTracker` records how large each step is relative to the weights it
# changes (the update:data ratio); about 1e-3 is the rule of thumb for a healthy rate.

# %%
opt = dlf.optim.SGD(net.parameters(), lr=0.1)
tracker = dlf.diagnostics.UpdateRatioTracker()
tracker.snapshot(net)  # the weights before step 1
steps = 150 if QUICK else 10000
g = torch.Generator().manual_seed(1)
curve = []
for step in range(1, steps + 1):
    xb, yb = data.train.batch(32, g)
    _, loss = net(xb, yb)
    opt.zero_grad()
    loss.backward()
    for group in opt.param_groups:
        group["lr"] = 0.1 if step <= 0.75 * steps else 0.01  # step decay
    opt.step()
    tracker.update(net, step)
    curve.append((step, loss.item()))
net.eval()
net_val = net(data.val.X, data.val.Y)[1].item()
print(f"layered MLP after {steps} steps: val {net_val:.4f} nats/char")
dlf.show(dlf.plots.plot_loss_curves, {"layered MLP (autograd)": curve,
                                      "manual-backprop MLP": list(enumerate(losses))},
         title="training loss")

# %% [markdown]
# ## Looking inside
#
# `record_activations` makes every Tanh layer keep its output (and its gradient) on the
# next pass. One training batch forward and backward, then the histograms: a healthy
# network has tanh outputs spread over (-1, 1) with few saturated at +-1, and gradients
# of similar size in every layer.

# %%
dlf.diagnostics.record_activations(net, grads=True)
net.train()
xb, yb = dlf.diagnostics.fixed_batch(data.train, 512)
_, loss = net(xb, yb)
for p in net.parameters():
    p.grad = None
loss.backward()
dlf.show(dlf.diagnostics.plot_activations, net)

# %%
dlf.show(dlf.diagnostics.plot_activation_grads, net)

# %%
dlf.show(dlf.diagnostics.plot_weight_grads, net)

# %%
dlf.diagnostics.record_activations(net, on=False)
net.eval()
dlf.show(dlf.diagnostics.plot_update_ratios, tracker)

# %% [markdown]
# ## The claim: BatchNorm's running statistics approach the data's
#
# In training, BatchNorm normalises with the batch's own mean and variance. A single
# name at sampling time has no batch, so BatchNorm also keeps a running average of those
# statistics (momentum 0.1) and uses it in eval mode. Do they describe the data? Compute
# the first BatchNorm's input over the **whole** training split and compare. Before
# training the running statistics were 0 and 1.

# %%
bn = net.layers[3]
with torch.no_grad():
    h = net.layers[:3](data.train.X)  # (N, n_hidden): the first BatchNorm's input
mean, std = h.mean(0), h.std(0)
mean_err = ((bn.running_mean - mean).abs() / std).mean().item()
var_err = (bn.running_var / std**2 - 1).abs().mean().item()
print(f"running mean vs data mean: mean |difference| = {mean_err:.3f} standard deviations")
print(f"running var vs data var: mean |ratio - 1| = {var_err:.3f}")
print(f"at initialisation: {(mean.abs() / std).mean():.2f} std and "
      f"{(1 / std**2 - 1).abs().mean():.2f}")
# An average over ~10 batches of 32 has sampling noise of a few percent, so 0.1 and
# 0.2 leave room for noise but not for statistics that miss the data.
assert mean_err < 0.1 and var_err < 0.2, (mean_err, var_err)

# %% [markdown]
# ## Samples
#
# Three characters of context already give names that sound like names:

# %%
print(dlf.generate(net, tok, n=12, seed=0))

# %% [markdown]
# **What to take away.** Backpropagation is the chain rule applied to a list of small
# operations; the hand-written version and autograd agree to rounding. Layers package
# those operations so networks can be composed, and the diagnostics tell you whether
# they are learning well: no saturated units, gradients alike across layers, updates
# about a thousandth of the weights, and BatchNorm statistics that describe the data.
# Lesson 3 makes the network deeper in a smarter way.
