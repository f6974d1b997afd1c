"""dlf against Hugging Face transformers on GPT-2 124M, timed alternately in one process.

    python benchmarks/versus_transformers.py [--json] [--quick] [--rounds N] [--threads N]

transformers builds `GPT2LMHeadModel(GPT2Config())` with random weights (offline; no
checkpoint is read) and dlf imports those weights (dlf.models.gpt2, the mapping that `dlf
import gpt2` uses): one model, two implementations. Each round runs dlf and transformers
back to back and each side keeps its best round, so a busy machine slows both alike.

- Sampling: 200 new tokens after a 32-token prompt, batch 1, fp32, greedy: dlf's cached
  generation (dlf.sample.generate_ids, as `dlf sample --temperature 0`) against
  `model.generate(do_sample=False, use_cache=True)`. The tokens are checked identical.
- Fine-tuning step: batch 4 x 256 tokens, forward, backward and AdamW (lr 1e-4, weight
  decay 0.1), fp32 and bf16 autocast. dlf runs its trainer's step (AutogradStep) with the
  attention kernel and micro-batch its plan picks for this shape on this machine
  (resolve_auto); transformers its model with torch.optim.AdamW and the same cross-entropy.
  Dropout is 0 on both sides (the imported config's), so both compute one function.

--quick runs the same code on a 2-layer GPT-2 (a smoke test, not the figures).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
import torch.nn.functional as F

from dlf import config as C
from dlf.bench import machine
from dlf.engine.auto import resolve_auto
from dlf.engine.steps import AutogradStep
from dlf.models import gpt2
from dlf.models.transformer import Transformer
from dlf.sample import generate_ids

GPT2_124M: dict = {}  # GPT2Config()'s defaults: 12 x 768, 12 heads, 1024 positions, 50257
QUICK = {"n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 128, "vocab_size": 500}


def build(sizes: dict):
    """transformers' GPT-2 with random weights, and dlf's Transformer holding the same."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf_cfg = GPT2Config(**sizes, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=None, eos_token_id=None)
    hf = GPT2LMHeadModel(hf_cfg).eval()
    cfg = gpt2.config_from_hf(hf.config.to_dict())
    state, cfg = gpt2.weights_from_hf(hf.state_dict(), cfg)
    model = Transformer(cfg)
    model.load_state_dict(state)
    return hf, model.eval()


def time_sample(hf, model, prompt_len: int, new_tokens: int, rounds: int) -> dict:
    V = model.config.vocab_size
    prompt = torch.randint(0, V, (1, prompt_len), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(prompt)

    def greedy(logits):
        return logits.argmax(-1, keepdim=True)

    def dlf_run():
        return generate_ids(model, prompt, new_tokens, greedy)[0]

    def hf_run():
        with torch.inference_mode():
            out = hf.generate(prompt, attention_mask=mask, do_sample=False, use_cache=True,
                              max_new_tokens=new_tokens)
        return out[0, prompt_len:].tolist()

    same = dlf_run() == hf_run()  # and the warm-up
    best = {"dlf": math.inf, "transformers": math.inf}
    for _ in range(rounds):
        for side, fn in (("dlf", dlf_run), ("transformers", hf_run)):
            t0 = time.perf_counter()
            fn()
            best[side] = min(best[side], time.perf_counter() - t0)
    dlf_tps, hf_tps = new_tokens / best["dlf"], new_tokens / best["transformers"]
    return {"prompt_tokens": prompt_len, "new_tokens": new_tokens,
            "dlf_tokens_per_second": dlf_tps, "transformers_tokens_per_second": hf_tps,
            "ratio": dlf_tps / hf_tps, "identical_tokens": same}


def train_sides(hf, model, dtype: str, batch: int, T: int):
    """(dlf's step, transformers' step, the micro-batch and attention dlf's plan picked)."""
    device = torch.device("cpu")
    dlf_model = copy.deepcopy(model).train()
    hf_model = copy.deepcopy(hf).train()
    # the plan's choices for this shape: resolve_auto on the config of a T-token run
    run = C.RunConfig("bench", "", C.DataConfig(), copy.deepcopy(model.config), C.TrainConfig(
        batch_size=batch, optimizer="adamw", lr=1e-4, weight_decay=0.1, beta1=0.9,
        beta2=0.999, dtype=dtype, grad_clip=0.0))
    run.model.block_size = T
    resolve_auto(run, device, torch.get_num_threads())
    for block in dlf_model.blocks:
        block.attn.attention = run.model.attention
    step = AutogradStep(dlf_model, run.train, device)
    V = model.config.vocab_size
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, V, (batch, T), generator=g)
    y = torch.randint(0, V, (batch, T), generator=g)

    def dlf_step():
        step(lambda: (x, y, y.numel()), 1e-4)

    opt = torch.optim.AdamW(hf_model.parameters(), lr=1e-4, weight_decay=0.1)

    def hf_step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            logits = hf_model(x).logits
            loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return dlf_step, hf_step, run.train.micro_batch or batch, run.model.attention  # rows a pass


def time_train(hf, model, dtype: str, batch: int, T: int, rounds: int, steps: int) -> dict:
    dlf_step, hf_step, micro, attention = train_sides(hf, model, dtype, batch, T)
    sides = {"dlf": dlf_step, "transformers": hf_step}
    for fn in sides.values():  # warm-up
        fn()
    best = dict.fromkeys(sides, math.inf)
    for _ in range(rounds):
        for side, fn in sides.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            best[side] = min(best[side], (time.perf_counter() - t0) / steps)
    return {"dtype": dtype, "batch": batch, "tokens": T,
            "dlf_seconds_per_step": best["dlf"],
            "transformers_seconds_per_step": best["transformers"],
            "dlf_tokens_per_second": batch * T / best["dlf"],
            "transformers_tokens_per_second": batch * T / best["transformers"],
            "ratio": best["transformers"] / best["dlf"],
            "dlf_micro_batch": micro, "dlf_attention": attention}


def run(quick: bool = False, rounds: int | None = None, dtypes=("fp32", "bf16")) -> dict:
    import transformers

    sizes = QUICK if quick else GPT2_124M
    rounds = rounds or (1 if quick else 3)
    hf, model = build(sizes)
    prompt, new = (8, 20) if quick else (32, 200)
    batch, T = (2, 32) if quick else (4, 256)
    sample = time_sample(hf, model, prompt, new, rounds)
    train = [time_train(hf, model, d, batch, T, rounds, 1) for d in dtypes]
    return {"model": "GPT-2 quick (2 x 64)" if quick else "GPT-2 124M",
            "parameters": model.num_parameters(), "sample": sample, "train": train,
            "machine": {**machine(), "transformers": transformers.__version__,
                        "load_average": os.getloadavg()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quick", action="store_true", help="smoke run on a 2-layer GPT-2")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 3)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: one per core)")
    p.add_argument("--dtype", choices=["fp32", "bf16"], action="append",
                   help="training dtypes to time (default both; repeatable)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    r = run(quick=args.quick, rounds=args.rounds, dtypes=tuple(args.dtype or ("fp32", "bf16")))
    if args.json:
        print(json.dumps(r))
        return 0
    m = r["machine"]
    print(f"{r['model']} ({r['parameters']:,} parameters); {m['cpu']}, {m['threads']} threads, "
          f"torch {m['torch']}, transformers {m['transformers']}, load "
          f"{m['load_average'][0]:.2f}")
    s = r["sample"]
    print(f"sampling {s['new_tokens']} tokens after {s['prompt_tokens']}, batch 1, fp32: dlf "
          f"{s['dlf_tokens_per_second']:.1f} tok/s, transformers "
          f"{s['transformers_tokens_per_second']:.1f} tok/s, ratio {s['ratio']:.2f} "
          f"(identical tokens: {s['identical_tokens']})")
    for t in r["train"]:
        print(f"training step {t['batch']} x {t['tokens']}, {t['dtype']}: dlf "
              f"{t['dlf_seconds_per_step']:.2f} s, transformers "
              f"{t['transformers_seconds_per_step']:.2f} s, ratio {t['ratio']:.2f} "
              f"(dlf attention {t['dlf_attention']}, micro-batch {t['dlf_micro_batch']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
