"""What each GPT-2 size costs dlf on this CPU: import, load, memory, sampling, a training step.

    python benchmarks/gpt2_sizes.py [--out gpt2_sizes.json] [--sizes 124M,355M,774M,1.5B]

For each size, with random weights of GPT-2's shapes (GPT2Config's sizes; no checkpoint is
downloaded) and one size at a time, each in its own process so that its memory is freed
and measured alone:

1. a Hugging Face GPT-2 directory is written (config.json, model.safetensors by dlf's own
   export mapping, and a byte-level vocab.json + merges.txt), then `dlf import gpt2`
   (dlf.hub.import_gpt2) makes a run of it: import seconds;
2. a fresh process opens the run (dlf.load_run): load seconds and resident memory;
   samples 50 tokens after a 32-token prompt (batch 1, fp32, greedy, KV cache): tokens/s;
   and times one fine-tuning step (batch 1 x 256 tokens, fp32, AdamW) after one warm-up
   step, with the peak resident memory. A step that would not fit in the memory left
   (16 bytes a parameter: weights, gradients, AdamW's two moments) is skipped and says so.

The JSON (one object per size, and the machine) goes to --out and stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {  # GPT2Config of gpt2, gpt2-medium, gpt2-large, gpt2-xl
    "124M": {"n_layer": 12, "n_head": 12, "n_embd": 768},
    "355M": {"n_layer": 24, "n_head": 16, "n_embd": 1024},
    "774M": {"n_layer": 36, "n_head": 20, "n_embd": 1280},
    "1.5B": {"n_layer": 48, "n_head": 25, "n_embd": 1600},
}


def rss_gib() -> float:
    """This process's resident memory now (VmRSS), GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def byte_vocab() -> dict[str, int]:
    """GPT-2's printable stand-in for each byte (its bytes_to_unicode): a vocab.json of the
    256 bytes, ids by byte value, with no merges."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return {chars[b]: b for b in range(256)} | {"<|endoftext|>": 256}


def write_hf_dir(size: str, d: Path) -> None:
    """A random GPT-2 of this size in Hugging Face's layout, written by dlf's mapping."""
    import torch

    from dlf.engine.tensor_io import save_tensors, write_json
    from dlf.models import gpt2
    from dlf.models.transformer import Transformer

    hf = {"model_type": "gpt2", "n_positions": 1024, "vocab_size": 50257, **SIZES[size]}
    cfg = gpt2.config_from_hf(hf)
    torch.manual_seed(0)
    model = Transformer(cfg)
    d.mkdir(parents=True, exist_ok=True)
    save_tensors(d / "model.safetensors", gpt2.weights_to_hf(model.state_dict(), cfg),
                 {"format": "pt"})
    write_json(d / "config.json", gpt2.config_to_hf(cfg, eos_token_id=256))
    (d / "vocab.json").write_text(json.dumps(byte_vocab()), encoding="utf-8")
    (d / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")


def child_import(size: str, work: Path) -> dict:
    from dlf.hub import import_gpt2

    write_hf_dir(size, work / "hf")
    t0 = time.perf_counter()
    import_gpt2(work / "hf", work / "run", force=True)
    return {"import_seconds": time.perf_counter() - t0, "import_peak_rss_gib": peak_gib()}


def child_measure(work: Path) -> dict:
    import torch

    import dlf
    from dlf import config as C
    from dlf.engine.steps import AutogradStep
    from dlf.sample import generate_ids

    t0 = time.perf_counter()
    run = dlf.load_run(work / "run", device="cpu")
    row = {"load_seconds": time.perf_counter() - t0, "rss_after_load_gib": rss_gib(),
           "parameters": run.model.num_parameters()}
    model, V = run.model, run.config.model.vocab_size
    prompt = torch.randint(0, V, (1, 32), generator=torch.Generator().manual_seed(0))

    def greedy(logits):
        return logits.argmax(-1, keepdim=True)

    generate_ids(model, prompt, 2, greedy)  # warm-up
    t0 = time.perf_counter()
    generate_ids(model, prompt, 50, greedy)
    row["sample_tokens_per_second"] = 50 / (time.perf_counter() - t0)
    row["rss_after_sampling_gib"] = rss_gib()
    need = 16 * row["parameters"] / 2**30 + 1.0  # weights, grads, 2 moments, activations
    if need > available_gib() + row["rss_after_sampling_gib"] - 1.0:
        row["train_step"] = (f"skipped: needs about {need:.0f} GiB (16 bytes a parameter: "
                             f"weights, gradients, AdamW's two moments), "
                             f"{available_gib() + row['rss_after_sampling_gib']:.0f} GiB left")
        return row
    for block in model.blocks:
        block.attn.attention = "sdpa"  # the plan's pick for fp32 without dropout on a CPU
    model.train()
    t = C.TrainConfig(batch_size=1, optimizer="adamw", lr=1e-5, weight_decay=0.1,
                      micro_batch=0)
    step = AutogradStep(model, t, torch.device("cpu"))
    x = torch.randint(0, V, (1, 256), generator=torch.Generator().manual_seed(1))
    step(lambda: (x, x, x.numel()), t.lr)  # warm-up: the optimizer's moments are made
    t0 = time.perf_counter()
    step(lambda: (x, x, x.numel()), t.lr)
    row["train_step_seconds"] = time.perf_counter() - t0
    row["train_peak_rss_gib"] = peak_gib()
    return row


def measure(size: str) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"gpt2-{size}-", dir=os.environ.get("TMPDIR")) as w:
        row = {"size": size, **SIZES[size]}
        for phase in ("import", "measure"):
            out = subprocess.run([sys.executable, __file__, "--child", phase, size, w],
                                 capture_output=True, text=True, check=False)
            if out.returncode != 0:
                row[f"{phase}_error"] = (out.stderr.strip().splitlines() or ["?"])[-1]
                break
            row.update(json.loads(out.stdout))
        return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="gpt2_sizes.json", help="the JSON file to write")
    p.add_argument("--sizes", default=",".join(SIZES), help="comma-separated, of " +
                   ", ".join(SIZES))
    p.add_argument("--child", nargs=3, metavar=("PHASE", "SIZE", "DIR"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        phase, size, work = args.child
        row = child_import(size, Path(work)) if phase == "import" else child_measure(Path(work))
        print(json.dumps(row))
        return 0
    import torch

    from dlf.bench import machine

    rows = []
    for size in args.sizes.split(","):
        rows.append(measure(size))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    result = {"sizes": rows, "machine": {**machine(), "load_average": os.getloadavg(),
                                         "memory_gib": os.sysconf("SC_PHYS_PAGES")
                                         * os.sysconf("SC_PAGE_SIZE") / 2**30},
              "torch_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
