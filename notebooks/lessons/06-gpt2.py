# %% [markdown]
# # 6. GPT-2: someone else's weights in our Transformer
#
# Lesson 4's character GPT is already GPT-2's design: token and learned position
# embeddings, pre-LayerNorm blocks of causal self-attention and an MLP, a final LayerNorm
# and a head over the vocabulary. What separates it from OpenAI's GPT-2 is size, data and
# a few details. This lesson lists those details, loads a GPT-2 checkpoint in Hugging
# Face's layout into dlf's own Transformer (`dlf import gpt2`), checks that it computes
# exactly what Hugging Face `transformers` computes, and samples from it.
#
# With `DLF_GPT2_DIR` pointing to a directory holding the real GPT-2 124M
# (`config.json`, `model.safetensors`, `vocab.json`, `merges.txt`; docs/gpt2.md says how
# to get it) the lesson loads that. Without it, it makes a small GPT-2 with random weights
# and a byte-level BPE tokenizer trained on Shakespeare here, in the same files: every
# step is the same, only the samples are gibberish.

# %%
import json
import math
import os
import tempfile
from io import BytesIO
from pathlib import Path

import torch
from matplotlib.figure import Figure

import dlf

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded
QUICK = dlf.quick()  # DLF_QUICK=1: tiny budgets for CI; the committed notebook is never quick
WORK = Path(tempfile.mkdtemp(prefix="dlf-lesson6-"))
print(f"dlf {dlf.__version__}, budget: {'quick' if QUICK else 'full'}")

# %% [markdown]
# ## From lesson 4's GPT to GPT-2
#
# | | lesson 4 (`shakespeare-transformer-cpu-gpt2`) | GPT-2 124M |
# |---|---|---|
# | tokens | 65 characters | 50,257 byte-level BPE tokens (lesson 5) |
# | context | 32 positions | 1,024 positions |
# | size | 3 layers x 128, 4 heads | 12 layers x 768, 12 heads (24 x 1024, 36 x 1280, 48 x 1600 for 355M, 774M, 1.5B) |
# | MLP activation | GELU, `0.5 x (1 + erf(x / sqrt 2))` | GELU's tanh approximation (`model.mlp_activation = "gelu_tanh"`) |
# | LayerNorm epsilon | 1e-5 | 1e-5 (`layer_norm_epsilon`, dlf's `model.norm_eps`) |
# | head | its own matrix | tied to the token embedding (`model.tie_weights`) |
# | dropout | 0 | 0.1 in training; 0 to evaluate |
#
# The weights need no reshuffling: GPT-2 stores each projection as a `Conv1D` whose weight
# is `(fan_in, fan_out)`, exactly dlf's `Linear`; only names change (`h.0.ln_1` is
# `blocks.0.ln1`). The one activation detail is small: the two GELUs differ by less than
# 0.0005 anywhere, but an exact match of logits needs the right one.

# %%
x = torch.linspace(-5, 5, 1001)
exact = torch.nn.functional.gelu(x)
tanh = dlf.nn.GELU(approximate="tanh")(x)
gap = (exact - tanh).abs()
print(f"largest gap between the two GELUs: {gap.max():.2e} at x = {x[gap.argmax()]:.2f}")
fig = Figure(figsize=(9, 3))
left, right = fig.subplots(1, 2)
left.plot(x, exact, label="GELU (erf)")
left.plot(x, tanh, "--", label="tanh approximation (GPT-2)")
left.set_xlabel("x")
left.legend()
right.plot(x, exact - tanh)
right.set_title("difference")
right.set_xlabel("x")
fig.tight_layout()
buf = BytesIO()
fig.savefig(buf, format="png", dpi=80)
dlf.plots.PNG(buf.getvalue())

# %% [markdown]
# ## A GPT-2 checkpoint
#
# A Hugging Face GPT-2 directory is `config.json` (the sizes and the details above), the
# weights (`model.safetensors`) and the tokenizer (`vocab.json` + `merges.txt`).

# %%
import warnings  # noqa: E402

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's, in a notebook
import transformers  # noqa: E402 (the reference)
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

transformers.utils.logging.disable_progress_bar()

text = dlf.data.load_corpus("shakespeare")[0]
real = os.environ.get("DLF_GPT2_DIR")
if real:
    hf_dir = Path(real)
else:
    from tokenizers import ByteLevelBPETokenizer

    hf_dir = WORK / "gpt2-random"
    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator([text[: 50_000 if QUICK else 300_000]],
                                  vocab_size=512 if QUICK else 2048,
                                  special_tokens=["<|endoftext|>"])
    hf_dir.mkdir()
    tokenizer.save_model(str(hf_dir))  # vocab.json, merges.txt
    torch.manual_seed(0)
    small = GPT2Config(n_layer=4, n_head=4, n_embd=128, n_positions=256,
                       vocab_size=tokenizer.get_vocab_size(), bos_token_id=None,
                       eos_token_id=None)
    GPT2LMHeadModel(small).save_pretrained(hf_dir)
print(sorted(p.name for p in hf_dir.iterdir()))
print(json.dumps({k: v for k, v in json.loads((hf_dir / "config.json").read_text()).items()
                  if k in ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size",
                           "activation_function", "layer_norm_epsilon",
                           "tie_word_embeddings")}))

# %% [markdown]
# `dlf.import_gpt2` (the command line's `dlf import gpt2 DIR --out RUN`) reads it and
# writes an ordinary run directory. The config it records is a dlf Transformer with
# GPT-2's details switched on; the tokenizer is the checkpoint's own, recorded as
# `data.tokenizer = "pretrained"`.

# %%
run_dir = dlf.import_gpt2(hf_dir, WORK / "run")
print(sorted(p.name for p in run_dir.iterdir()))
run = dlf.load_run(run_dir)
print(run.model.config)
print(run.tokenizer)
print(f"{run.model.num_parameters():,} parameters")

# %% [markdown]
# ## The same function as transformers
#
# Both libraries now hold the same weights. On Shakespeare tokens they must give the same
# logits: the same sums, computed by different kernels, agree to float32 rounding (the
# difference is measured against the size of the logits, about 100 for the real GPT-2).

# %%
reference = GPT2LMHeadModel.from_pretrained(hf_dir).eval()
T = min(128 if QUICK else 512, run.model.block_size)
ids = torch.tensor([run.tokenizer.encode(text[1000:20_000])[:T]])
with torch.no_grad():
    ours, _ = run.model(ids)
    theirs = reference(ids).logits
diff = (ours - theirs).abs().max().item()
scale = theirs.abs().max().item()
print(f"{T} tokens: largest logit difference {diff:.2e}, largest logit {scale:.1f}")
assert diff < 1e-5 * max(1.0, scale)
loss = torch.nn.functional.cross_entropy(ours[0, :-1], ids[0, 1:]).item()
print(f"loss on them: {loss:.3f} nats per token (perplexity {math.exp(loss):,.1f}; "
      f"ln {run.model.config.vocab_size} = {math.log(run.model.config.vocab_size):.2f} "
      "is a uniform guess)")

# %% [markdown]
# ## Sampling
#
# Greedy decoding (temperature 0) takes the likeliest token each step, so it is a strict
# test: dlf's cached generation (`dlf sample RUN --temperature 0`) must write
# transformers' greedy text word for word.

# %%
prompt = "ROMEO:\nWhat light"
prompt_ids = torch.tensor([run.tokenizer.encode(prompt)])
n = 20 if QUICK else 60
(ours,) = dlf.generate(run, prompt=prompt, temperature=0, max_new_tokens=n)
with torch.no_grad():
    out = reference.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids),
                             do_sample=False, max_new_tokens=n)
theirs = prompt + run.tokenizer.decode(out[0, prompt_ids.shape[1]:].tolist())
print(ours)
assert ours == theirs
print("---\n" + dlf.generate(run, prompt=prompt, temperature=0.8, top_k=40,
                            max_new_tokens=n, seed=1)[0])

# %% [markdown]
# **What to take away.** GPT-2 is lesson 4's Transformer at scale with two details of its
# own, the tanh GELU and a tied head; its weights drop into dlf's layers under new names,
# and the imported model computes transformers' logits to float32 rounding and writes its
# greedy text token for token. From here the run is like any other: `dlf sample`, `dlf
# eval RUN --data FILE` (loss per token and character, perplexity), and `dlf export gpt2`
# to hand it back to transformers.
