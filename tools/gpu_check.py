"""`make gpu-check`: the seed configuration on the GPUs of this machine, data-parallel.

Runs `dlf train shakespeare-transformer` (6 x 384, block 256, 5,000 steps of 64 x 256
tokens) under torch.distributed.run with one process per GPU (NCCL when there are
several), bf16 autocast and torch.compile, then writes gpu-check.json beside the run:
val loss, training seconds, tokens/s and MFU against the GPU's bf16 dense peak.
Target: val <= 1.48 within 3 minutes of training on one H100.

Made to run from a plain copy of the repository with PYTHONPATH=src, the machine's own
torch and no network (the data sets ship inside the package):

    PYTHONPATH=src python3 tools/gpu_check.py [--out DIR] [--nproc N] [--max-steps S]

A second step checks GPT-2 on the GPU (`gpt2_step`): a random GPT-2 124M written in Hugging
Face's layout by dlf's own export (no transformers needed), read back through the import's
path (dlf.hub.read_weights, dlf.models.gpt2), sampled (200 tokens, KV cache, batch 1 and
8) and fine-tuned a few steps in bf16 (AdamW, 8 x 1024 tokens), with tokens/s of each,
into gpu-check.json's "gpt2".

`--dry-run` runs the same pipeline on the CPU with a tiny model, 2 processes (gloo),
fp32 and no compile (and a 2-layer GPT-2 for the second step): it checks this script and
the launch path where no GPU is lent.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_VAL, TARGET_TRAIN_SECONDS = 1.48, 180.0
# bf16 dense tensor-core peaks (vendor data sheets, FLOP/s, no sparsity)
PEAK_BF16 = {"H200": 989.4e12, "H100 SXM": 989.4e12, "H100 NVL": 835e12, "H100 PCIe": 756e12,
             "H100": 989.4e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12}
NEEDED = ("torch", "safetensors", "tqdm", "matplotlib")
DRY_RUN_SETTINGS = ["model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.block_size=32",
                    "model.attention=manual", "train.batch_size=8", "train.dtype=fp32",
                    "train.compile=false", "train.eval_interval=10", "train.eval_iters=4",
                    "train.log_interval=2", "train.warmup_steps=2", "train.sample_tokens=50"]


def spec_peak(name: str) -> float | None:
    for key in sorted(PEAK_BF16, key=len, reverse=True):  # "H100 PCIe" before "H100"
        if key.lower() in name.lower():
            return PEAK_BF16[key]
    return None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT") or "runs/gpu-check",
                   help="folder for the run and gpu-check.json (default: $OUT or runs/gpu-check)")
    p.add_argument("--nproc", type=int, default=0, help="processes (default: one per GPU)")
    p.add_argument("--max-steps", type=int, default=None, help="default: the preset's 5000")
    p.add_argument("--no-compile", action="store_true", help="eager forward (for comparison)")
    p.add_argument("--timeout", type=float, default=540.0,
                   help="seconds before the training job is stopped (default 540)")
    p.add_argument("--dry-run", action="store_true",
                   help="tiny CPU version of the same pipeline (2 processes, gloo)")
    args = p.parse_args(argv)
    if args.nproc < 0 or (args.max_steps is not None and args.max_steps < 1):
        p.error("--nproc must be >= 0 and --max-steps >= 1")
    return args


def missing_modules() -> list[str]:
    return [m for m in NEEDED if importlib.util.find_spec(m) is None]


def train_command(args, nproc: int, run: Path) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "dlf", "train", "shakespeare-transformer",
           "--out", str(run), "--force", "--quiet"]
    if args.dry_run:
        cmd += ["--device", "cpu", "--max-steps", str(args.max_steps or 20)]
        for s in DRY_RUN_SETTINGS:
            cmd += ["--set", s]
        return cmd
    cmd += ["--device", "cuda", "--set", "train.dtype=bf16",
            "--set", f"train.compile={'false' if args.no_compile else 'true'}"]
    if args.max_steps is not None:
        cmd += ["--max-steps", str(args.max_steps)]
    return cmd


GPT2_124M = {"model_type": "gpt2", "n_layer": 12, "n_head": 12, "n_embd": 768,
             "n_positions": 1024, "vocab_size": 50257}
GPT2_DRY = {**GPT2_124M, "n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 128,
            "vocab_size": 500}


def gpt2_step(out: Path, dry_run: bool, steps: int = 10) -> dict:
    """GPT-2 on this machine's first GPU (the CPU in a dry run): write a random checkpoint
    in Hugging Face's layout, import it, sample, fine-tune `steps` steps; tokens/s."""
    import torch

    from dlf import config as C
    from dlf.engine.steps import AutogradStep
    from dlf.engine.tensor_io import save_tensors, write_json
    from dlf.hub import read_weights
    from dlf.models import gpt2
    from dlf.models.transformer import Transformer
    from dlf.sample import generate_ids

    device = torch.device("cpu" if dry_run else "cuda")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    hf_dir = out / "gpt2-random"
    cfg = gpt2.config_from_hf(GPT2_DRY if dry_run else GPT2_124M)
    torch.manual_seed(0)
    hf_dir.mkdir(parents=True, exist_ok=True)
    source = Transformer(cfg)
    save_tensors(hf_dir / "model.safetensors", gpt2.weights_to_hf(source.state_dict(), cfg),
                 {"format": "pt"})
    write_json(hf_dir / "config.json", gpt2.config_to_hf(cfg))
    del source
    t0 = time.perf_counter()
    state, cfg = gpt2.weights_from_hf(read_weights(hf_dir, cfg), cfg, str(hf_dir))
    model = Transformer(cfg)
    model.load_state_dict(state)
    model.to(device)
    load_seconds = time.perf_counter() - t0
    V, new = cfg.vocab_size, 200 if not dry_run else 20
    row = {"parameters": model.num_parameters(), "device": str(device),
           "load_seconds": round(load_seconds, 2)}
    for batch in (1, 8):
        prompt = torch.randint(0, V, (batch, 32), device=device)
        generate_ids(model, prompt, 4, lambda lg: lg.argmax(-1, keepdim=True))  # warm-up
        sync()
        t0 = time.perf_counter()
        generate_ids(model, prompt, new, lambda lg: lg.argmax(-1, keepdim=True))
        sync()
        row[f"sample_batch{batch}_tokens_per_second"] = batch * new / (time.perf_counter() - t0)
    dtype = "fp32" if dry_run else "bf16"
    B, T = (2, 32) if dry_run else (8, 1024)
    t = C.TrainConfig(batch_size=B, optimizer="adamw", lr=1e-4, weight_decay=0.1, dtype=dtype,
                      micro_batch=0)
    for block in model.blocks:  # the plan's pick on CUDA (pick_attention)
        block.attn.attention = "sdpa" if device.type == "cuda" else "manual"
    model.train()
    step = AutogradStep(model, t, device)
    x = torch.randint(0, V, (B, T), device=device)
    losses = [float(step(lambda: (x, x, x.numel()), t.lr)[0])]  # warm-up
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        losses.append(float(step(lambda: (x, x, x.numel()), t.lr)[0]))
    sync()
    seconds = (time.perf_counter() - t0) / steps
    row.update(train_dtype=dtype, train_batch=f"{B} x {T}", train_seconds_per_step=seconds,
               train_tokens_per_second=B * T / seconds, first_loss=losses[0],
               last_loss=losses[-1], loss_fell=losses[-1] < losses[0])
    print(f"gpu-check: GPT-2 {row['parameters']:,} parameters on {device}: imported in "
          f"{load_seconds:.1f} s; sampling {row['sample_batch1_tokens_per_second']:,.0f} tok/s "
          f"(batch 1), {row['sample_batch8_tokens_per_second']:,.0f} tok/s (batch 8); "
          f"fine-tuning {dtype} {B} x {T}: {row['train_tokens_per_second']:,.0f} tok/s, loss "
          f"{losses[0]:.3f} -> {losses[-1]:.3f}", file=sys.stderr, flush=True)
    return row


def summarise(run: Path, device: dict, nproc: int, launch_seconds: float) -> dict:
    """gpu-check.json's figures from the run's result.json and metrics.jsonl."""
    import torch

    from dlf.bench import flops_per_token
    from dlf.engine.saved import load_run
    from dlf.models.protocol import capabilities

    result = json.loads((run / "result.json").read_text())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r["tokens_per_second"] for r in records if "tokens_per_second" in r]
    # steady state: the median logged rate, which leaves out compilation and warm-up
    tps = statistics.median(logged[len(logged) // 5:]) if logged else None
    model = load_run(run, device="cpu").model
    fpt = flops_per_token(model, capabilities(model))
    peak = device["peak_flops"]
    out = {
        "gpu": device["name"], "gpus": nproc, "torch": torch.__version__,
        "steps": result["steps"], "val_loss": result["val_loss"],
        "train_loss": result["train_loss"], "train_seconds": result["train_seconds"],
        "wall_seconds": result["wall_seconds"], "launch_to_exit_seconds": round(launch_seconds, 1),
        "tokens_per_second": tps, "tokens_per_second_overall": result["tokens_per_second"],
        "flops_per_token": fpt, "peak_flops_per_gpu": peak,
        "mfu": tps * fpt / (peak * nproc) if tps and peak else None,
        "target": f"val <= {TARGET_VAL} within {TARGET_TRAIN_SECONDS:.0f} s of training",
    }
    out["target_met"] = (result["val_loss"] <= TARGET_VAL
                         and result["train_seconds"] <= TARGET_TRAIN_SECONDS)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    missing = missing_modules()
    if missing:
        print(f"gpu-check: missing Python packages {', '.join(missing)}: install them or "
              "put them on PYTHONPATH (no network is needed otherwise)", file=sys.stderr)
        return 2
    import torch

    if args.dry_run:
        nproc = args.nproc or 2
        device = {"name": "cpu (dry run)", "peak_flops": None}
    else:
        if not torch.cuda.is_available():
            print("gpu-check: no CUDA device here (torch "
                  f"{torch.__version__}); --dry-run checks the pipeline on the CPU",
                  file=sys.stderr)
            return 2
        nproc = args.nproc or torch.cuda.device_count()
        name = torch.cuda.get_device_name(0)
        device = {"name": name, "peak_flops": spec_peak(name)}
        if device["peak_flops"] is None:  # unknown card: measure the matmul peak instead
            from dlf.bench import matmul_peak

            device["peak_flops"] = matmul_peak("bf16", "cuda", n=8192) * 1e9
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = out / "shakespeare-transformer"
    cmd = train_command(args, nproc, run)
    print("gpu-check:", " ".join(cmd), file=sys.stderr, flush=True)
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    t0 = time.perf_counter()
    try:
        rc = subprocess.run(cmd, env=env, timeout=args.timeout, check=False).returncode
    except subprocess.TimeoutExpired:
        print(f"gpu-check: training did not finish in {args.timeout:.0f} s", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - t0
    if rc != 0:
        print(f"gpu-check: training exited with status {rc}", file=sys.stderr)
        return 1
    summary = summarise(run, device, nproc, seconds)
    summary["dry_run"] = args.dry_run
    summary["gpt2"] = gpt2_step(out, args.dry_run, steps=2 if args.dry_run else 10)
    (out / "gpu-check.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    if args.dry_run:
        return 0
    return 0 if summary["target_met"] and summary["gpt2"]["loss_fell"] else 1


if __name__ == "__main__":
    sys.exit(main())
