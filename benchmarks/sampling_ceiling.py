"""How fast can one-token decoding of the 6 x 384 model go on this CPU? An analysis.

    python benchmarks/sampling_ceiling.py [--quick]

A cached decoding step is one matrix-vector product per weight, so it streams every
weight from memory once per token. This script measures, in one process, fp32:

1. `sum`: a plain sum over as many bytes as the weights (the memory's pace);
2. `eager mv`: torch.mv over the 24 weight matrices (transposed to (out, in));
3. `compiled mul-sum`: torch.compile of (W * x).sum(-1) over the same matrices;
4. `compiled decode step`: torch.compile of a whole one-token step with static shapes
   (embeddings, 6 pre-norm blocks, cache written with index_copy_, attention over the
   masked cache, final LayerNorm, tied head), in tokens/s.

Weights are random: only speed is measured. See README, Speed.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F


def _bench(fn, n: int) -> float:
    for _ in range(3):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def run(C: int = 384, n_layer: int = 6, n_head: int = 6, vocab: int = 65, block: int = 256,
        reps: int = 50) -> dict:
    torch.manual_seed(0)
    hs = C // n_head
    shapes = [(3 * C, C), (C, C), (4 * C, C), (C, 4 * C)] * n_layer  # (out, in)
    W = [torch.randn(o, i) * 0.02 for o, i in shapes]
    nbytes = sum(w.numel() for w in W) * 4
    x = torch.randn(4 * C)
    out = {"weights_mb": nbytes / 1e6}
    with torch.inference_mode():
        flat = torch.randn(nbytes // 4)
        out["sum_gb_s"] = nbytes / _bench(flat.sum, reps) / 1e9
        out["eager_mv_gb_s"] = nbytes / _bench(
            lambda: [torch.mv(w, x[: w.shape[1]]) for w in W], reps) / 1e9

        def mul_sum(v):
            return [(w * v[: w.shape[1]]).sum(-1) for w in W]

        f = torch.compile(mul_sum)
        t0 = time.perf_counter()
        f(x)
        out["mul_sum_compile_s"] = time.perf_counter() - t0
        out["compiled_mul_sum_gb_s"] = nbytes / _bench(lambda: f(x), reps) / 1e9

        wte, wpe = torch.randn(vocab, C) * 0.02, torch.randn(block, C) * 0.02
        ones, zeros = torch.ones(C), torch.zeros(C)
        kc = [torch.zeros(n_head, block, hs) for _ in range(n_layer)]
        vc = [torch.zeros(n_head, block, hs) for _ in range(n_layer)]
        positions = torch.arange(block)

        def step(tok, pos):
            h0 = wte.index_select(0, tok.view(1))[0] + wpe.index_select(0, pos.view(1))[0]
            h = h0
            for layer in range(n_layer):
                wa, wp, wf, wm = W[4 * layer : 4 * layer + 4]
                a = F.layer_norm(h, (C,), ones, zeros)
                q, k, v = (wa * a).sum(-1).view(3, n_head, hs).unbind(0)
                kc[layer].index_copy_(1, pos.view(1), k.view(n_head, 1, hs))
                vc[layer].index_copy_(1, pos.view(1), v.view(n_head, 1, hs))
                att = (kc[layer] * q.view(n_head, 1, hs)).sum(-1) / math.sqrt(hs)
                att = att.masked_fill(positions > pos, float("-inf")).softmax(-1)
                y = (att.unsqueeze(-1) * vc[layer]).sum(1).reshape(C)
                h = h + (wp * y).sum(-1)
                m = F.gelu((wf * F.layer_norm(h, (C,), ones, zeros)).sum(-1))
                h = h + (wm * m).sum(-1)
            return wte @ F.layer_norm(h, (C,), ones, zeros)

        g = torch.compile(step, fullgraph=True, dynamic=False)
        tok = torch.tensor(1)
        t0 = time.perf_counter()
        g(tok, torch.tensor(0))
        out["decode_compile_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(block):
            tok = torch.argmax(g(tok, torch.tensor(i)))
        out["compiled_decode_tokens_per_s"] = block / (time.perf_counter() - t0)
    out["ceiling_tokens_per_s_at_compiled_mul_sum"] = out["compiled_mul_sum_gb_s"] * 1e9 / nbytes
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny model (smoke run)")
    args = p.parse_args(argv)
    kw = {"C": 32, "n_layer": 1, "n_head": 2, "block": 16, "reps": 3} if args.quick else {}
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    for k, v in run(**kw).items():
        print(f"{k:42} {v:10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
