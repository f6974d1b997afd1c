"""dlf's Transformer against a standard torch.nn GPT, timed alternately in one process.

    python benchmarks/versus_torch.py [--json] [--quick] [--compile]

The reference is nanoGPT's layout written with torch.nn (nn.Linear, nn.LayerNorm,
nn.GELU, nn.Dropout, F.scaled_dot_product_attention) and trained with torch.optim.AdamW,
initialised like dlf (GPT-2: N(0, 0.02), residual projections 0.02 / sqrt(2 n_layer)).
It lives here, outside the package, because the product itself uses no torch.nn.

Training cases time a full step (forward, backward, AdamW) on random tokens; each round
runs dlf and the reference back to back, and each side keeps its best round, so a busy
machine slows both alike. dlf runs its default configuration: `model.attention = "auto"`
and `train.micro_batch = "auto"` resolved by the run's plan for this device, and its
trainer's own step. Sampling compares dlf's KV-cached generation (dlf.sample's loop) with the reference's crop-and-rerun loop
(nanoGPT's `generate`); the reference is timed from a full block of context, its steady
state, over fewer tokens since each costs a whole forward pass.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from dlf import presets
from dlf.bench import machine
from dlf.engine.plan import plan_run
from dlf.engine.steps import AutogradStep
from dlf.models.transformer import Transformer, TransformerConfig
from dlf.sample import generate_ids, next_token

# -- the reference -------------------------------------------------------------------------


class RefAttention(nn.Module):
    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.n_head, self.n_embd, self.dropout = c.n_head, c.n_embd, c.dropout
        self.c_attn = nn.Linear(c.n_embd, 3 * c.n_embd, bias=c.bias)
        self.c_proj = nn.Linear(c.n_embd, c.n_embd, bias=c.bias)
        self.resid_dropout = nn.Dropout(c.dropout)

    def forward(self, x):
        B, T, C_ = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C_ // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C_ // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C_ // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C_)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class RefBlock(nn.Module):
    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.attn = RefAttention(c)
        self.ln_2 = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.mlp = nn.Sequential()
        self.mlp.c_fc = nn.Linear(c.n_embd, 4 * c.n_embd, bias=c.bias)
        self.mlp.gelu = nn.GELU()
        self.mlp.c_proj = nn.Linear(4 * c.n_embd, c.n_embd, bias=c.bias)
        self.mlp.dropout = nn.Dropout(c.dropout)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class RefGPT(nn.Module):
    """nanoGPT's GPT: idx (B, T) -> logits (B, T, V), mean cross-entropy loss."""

    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.config = c
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.block_size, c.n_embd)
        self.drop = nn.Dropout(c.dropout)
        self.h = nn.ModuleList(RefBlock(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd, bias=c.bias)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_weights:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(B * T, -1), targets.view(B * T))
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, generator):
        """nanoGPT's loop: crop the context to block_size and rerun it for every token."""
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.config.block_size:])
            idx = torch.cat([idx, next_token(logits[:, -1, :], 1.0, None, generator)], dim=1)
        return idx


@torch.no_grad()
def copy_weights(dlf_model: Transformer, ref: RefGPT) -> None:
    """Give the reference dlf's weights (dlf's Linear weight is (fan_in, fan_out))."""
    ref.wte.weight.copy_(dlf_model.wte.weight)
    ref.wpe.weight.copy_(dlf_model.wpe.weight)
    pairs = [(ref.ln_f, dlf_model.ln_f)]
    for rb, db in zip(ref.h, dlf_model.blocks, strict=True):
        pairs += [(rb.ln_1, db.ln1), (rb.ln_2, db.ln2), (rb.attn.c_attn, db.attn.c_attn),
                  (rb.attn.c_proj, db.attn.c_proj), (rb.mlp.c_fc, db.mlp.c_fc),
                  (rb.mlp.c_proj, db.mlp.c_proj)]
    if dlf_model.lm_head is not None:
        pairs.append((ref.lm_head, dlf_model.lm_head))
    for r, d in pairs:
        w = d.weight.T if isinstance(r, nn.Linear) else d.weight
        r.weight.copy_(w)
        if r.bias is not None:
            r.bias.copy_(d.bias)


# -- timing --------------------------------------------------------------------------------


def _autocast(dtype: str, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def dlf_case(shape: dict, dtype: str, dropout: float, device: torch.device,
             compile: bool = False):
    """dlf's default configuration for this shape, planned as `dlf train` plans it, and the
    trainer's own step (dlf.engine.steps.AutogradStep) with the reference's optimizer
    settings: returns (plan, step(), tokens_per_step). `compile`: the forward through
    torch.compile (what `train.compile = true` does)."""
    cfg = presets.resolve("shakespeare-transformer")
    cfg.model = TransformerConfig(dropout=dropout, **shape["model"])
    t = cfg.train
    t.batch_size, t.dtype, t.device, t.compile = shape["batch"], dtype, device.type, compile
    t.optimizer, t.lr, t.weight_decay, t.beta1, t.beta2, t.grad_clip = \
        "adamw", 1e-4, 0.1, 0.9, 0.999, 0.0  # torch.optim.AdamW's, as the reference
    plan, _ = plan_run(cfg)
    torch.manual_seed(0)
    model = Transformer(plan.cfg.model).to(device)
    model.train()
    step_fn = AutogradStep(model, plan.cfg.train, device)
    B, T = shape["batch"], plan.cfg.model.block_size
    x = torch.randint(0, 65, (B, T), device=device)
    y = torch.randint(0, 65, (B, T), device=device)

    def step():
        step_fn(lambda: (x, y, y.numel()), t.lr)

    return plan, step, B * T


def ref_case(shape: dict, dtype: str, dropout: float, device: torch.device):
    c = TransformerConfig(vocab_size=65, dropout=dropout, **shape["model"])
    torch.manual_seed(0)
    model = RefGPT(c).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    B, T = shape["batch"], c.block_size
    x = torch.randint(0, 65, (B, T), device=device)
    y = torch.randint(0, 65, (B, T), device=device)

    def step():
        with _autocast(dtype, device):
            _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, B * T


def _time(step, n, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / n


def time_train(shape, dtype, dropout, device, rounds, steps, compile=False) -> dict:
    """dlf's default step against the reference's. With `compile`, dlf's step through
    torch.compile is a third side of every round (same weights, same batch), reported as
    `dlf_compiled_tokens_per_second`, `compiled_ratio` (over the reference) and
    `dlf_compile_seconds` (its first step, compiling included)."""
    plan, dlf_step, tokens = dlf_case(shape, dtype, dropout, device)
    sides = {"dlf": dlf_step, "ref": ref_case(shape, dtype, dropout, device)[0]}
    if compile:
        torch._dynamo.reset()  # compile this case afresh, as a run does (no earlier graphs)
        sides["compiled"] = dlf_case(shape, dtype, dropout, device, compile=True)[1]
    first = {k: _time(step, 1, device) for k, step in sides.items()}  # warm-up, compiling
    best = dict.fromkeys(sides, math.inf)
    for _ in range(rounds):
        for k, step in sides.items():
            best[k] = min(best[k], _time(step, steps, device))
    row = {"case": shape["name"] + f", dropout {dropout}", "dtype": dtype,
           "dlf_tokens_per_second": tokens / best["dlf"],
           "reference_tokens_per_second": tokens / best["ref"],
           "ratio": best["ref"] / best["dlf"],
           "dlf_attention": plan.cfg.model.attention,
           "dlf_micro_batch": plan.cfg.train.micro_batch}
    if compile:
        row.update(dlf_compiled_tokens_per_second=tokens / best["compiled"],
                   compiled_ratio=best["ref"] / best["compiled"],
                   dlf_compile_seconds=first["compiled"])
    return row


def uncached_tokens(model, idx, n, generator) -> list[int]:
    """dlf's uncached loop: the whole window, sliding as generation does, every token."""
    from dlf.models.protocol import slide_window

    out, start = [], 0
    for _ in range(n):
        start = slide_window(start, idx.shape[1], model.block_size)
        logits, _ = model(idx[:, start:])
        nxt = next_token(logits[:, -1, :], 1.0, None, generator)
        idx = torch.cat([idx, nxt], dim=1)
        out.append(int(nxt.item()))
    return out


def time_sample(model_shape, device, new_tokens, ref_tokens, check_tokens, rounds) -> dict:
    c = TransformerConfig(vocab_size=65, dropout=0.0, **model_shape)
    torch.manual_seed(0)
    model = Transformer(c).to(device).eval()
    ref = RefGPT(c).to(device).eval()
    copy_weights(model, ref)
    T = c.block_size
    idx = torch.zeros((1, 1), dtype=torch.long, device=device)
    full = torch.randint(0, 65, (1, T), device=device)

    def dlf_run(n):
        g = torch.Generator().manual_seed(0)
        return generate_ids(model, idx, n, lambda lg: next_token(lg, 1.0, None, g))[0]

    dlf_run(20)  # warm-up
    ref.generate(full, 2, torch.Generator().manual_seed(0))
    best_dlf = best_ref = math.inf
    for _ in range(rounds):
        t0 = time.perf_counter()
        dlf_run(new_tokens)
        best_dlf = min(best_dlf, time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref.generate(full, ref_tokens, torch.Generator().manual_seed(0))
        best_ref = min(best_ref, time.perf_counter() - t0)
    with torch.no_grad():
        same = dlf_run(check_tokens) == uncached_tokens(
            model, idx, check_tokens, torch.Generator().manual_seed(0))
    dlf_tps, ref_tps = new_tokens / best_dlf, ref_tokens / best_ref
    return {"dlf_cached_tokens_per_second": dlf_tps, "reference_tokens_per_second": ref_tps,
            "ratio": dlf_tps / ref_tps, "identical_to_uncached": same,
            "new_tokens": new_tokens, "reference_tokens": ref_tokens,
            "checked_tokens": check_tokens, "block_size": T}


BIG = {"name": "6x384, block 256, batch 16", "batch": 16,
       "model": {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256}}
SMALL = {"name": "3x128, block 32, batch 32", "batch": 32,
         "model": {"n_layer": 3, "n_head": 4, "n_embd": 128, "block_size": 32}}
TINY = {"name": "1x32, block 16, batch 4", "batch": 4,
        "model": {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16}}


def run(quick: bool = False, device: str = "cpu", rounds: int | None = None,
        check_tokens: int | None = None, compile: bool = False) -> dict:
    dev = torch.device(device)
    if quick:  # a smoke run: tiny shapes, one round
        cases = [(TINY, "bf16", 0.2), (TINY, "bf16", 0.0), (TINY, "fp32", 0.0)]
        rounds, steps, sample = rounds or 1, 2, (TINY["model"], 24, 4, 40)
    else:
        cases = [(BIG, "bf16", 0.2), (BIG, "bf16", 0.0), (BIG, "fp32", 0.0),
                 (SMALL, "bf16", 0.0), (SMALL, "fp32", 0.0)]
        rounds, steps, sample = rounds or 3, 3, (BIG["model"], 1000, 40, 300)
    train = []
    for shape, dtype, dropout in cases:
        s = steps if shape is not SMALL else 20
        train.append(time_train(shape, dtype, dropout, dev, rounds, s, compile))
    model_shape, new_tokens, ref_tokens, check = sample
    check = check_tokens or check
    return {"train": train,
            "sample": time_sample(model_shape, dev, new_tokens, ref_tokens, check, rounds),
            "machine": machine()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="smoke run on tiny shapes")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 3)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: one per core)")
    p.add_argument("--compile", action="store_true",
                   help="also time dlf with its training forward through torch.compile "
                        "(train.compile = true) in the same rounds, and its first step "
                        "(compiling included)")
    p.add_argument("--check-tokens", type=int, default=None,
                   help="tokens compared with dlf's uncached loop (default 300: past block 256)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    r = run(quick=args.quick, device=args.device, rounds=args.rounds,
            check_tokens=args.check_tokens, compile=args.compile)
    if args.json:
        print(json.dumps(r))
        return 0
    m = r["machine"]
    print(f"{m['cpu']}, {m['threads']} threads, torch {m['torch']}")
    print(f"{'case':40} {'dtype':5} {'dlf tok/s':>10} {'ref tok/s':>10} {'ratio':>6}")
    for t in r["train"]:
        compiled = (f"  compiled: {t['dlf_compiled_tokens_per_second']:,.0f} tok/s, ratio "
                    f"{t['compiled_ratio']:.2f}, first step {t['dlf_compile_seconds']:.1f} s"
                    if "compiled_ratio" in t else "")
        print(f"{t['case']:40} {t['dtype']:5} {t['dlf_tokens_per_second']:10,.0f} "
              f"{t['reference_tokens_per_second']:10,.0f} {t['ratio']:6.2f}{compiled}")
    s = r["sample"]
    print(f"sampling, block {s['block_size']}, fp32: dlf cached "
          f"{s['dlf_cached_tokens_per_second']:,.1f} tok/s, reference "
          f"{s['reference_tokens_per_second']:,.1f} tok/s, ratio {s['ratio']:.1f} "
          f"(identical to uncached: {s['identical_to_uncached']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
