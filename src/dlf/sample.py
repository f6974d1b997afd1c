"""Generation: temperature, top-k, a seed, a prompt.

Line data (names): every sample starts from a window of boundary tokens (plus
the prompt; one boundary token for models trained on whole-line sequences) and
stops when the model emits the boundary token. Text data
(Shakespeare): one stream of `max_new_tokens` characters after the prompt.
Models that offer `generate_cached` (the Transformer's KV cache) use it for text.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dlf.errors import DlfError
from dlf.fileio import atomic_write_text
from dlf.models.protocol import capabilities, slide_window

# What one sample may grow to when the caller does not say: a name ends at its
# boundary token long before 50 characters; a text sample is a paragraph or two.
LINE_MAX_NEW_TOKENS = 50
TEXT_MAX_NEW_TOKENS = 500


def check_sampling_args(temperature: float, top_k: int | None, max_new_tokens: int,
                        num: int = 1) -> None:
    if num < 1:
        raise DlfError(f"-n/--num must be >= 1, got {num}")
    if not temperature >= 0:
        raise DlfError(f"--temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise DlfError(f"--top-k must be >= 1, got {top_k}")
    if max_new_tokens < 1:
        raise DlfError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")


def next_token(logits: torch.Tensor, temperature: float, top_k: int | None,
               generator: torch.Generator) -> torch.Tensor:
    """logits (B, V) -> sampled ids (B, 1). temperature 0 means greedy."""
    logits = logits.float().cpu()  # sample on the CPU so a CPU generator seeds it everywhere
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        # exactly k candidates per row, even when logits tie at the k-th (a threshold at the
        # k-th value would keep every tied token: top-1 would not be deterministic)
        vals, ids = torch.topk(logits, top_k, dim=-1)  # (B, k)
        logits = torch.full_like(logits, float("-inf")).scatter(-1, ids, vals)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


def _last_logits(model, idx: torch.Tensor) -> torch.Tensor:
    logits, _ = model(idx)
    return logits[:, -1, :] if logits.dim() == 3 else logits  # (B, V)


@torch.no_grad()
def sample_lines(model, tokenizer, n: int, *, seed: int = 0, temperature: float = 1.0,
                 top_k: int | None = None, prompt: str = "",
                 max_new_tokens: int = LINE_MAX_NEW_TOKENS, device="cpu",
                 layout: str = "windows", use_cache: bool = True) -> list[str]:
    """n items (e.g. names), each ended by the boundary token or max_new_tokens.

    `layout` is the run's data.layout: "windows" models start from block_size boundary
    tokens, "sequences" models from one (as they were trained), one line at a time,
    with the model's cache when it offers one."""
    check_sampling_args(temperature, top_k, max_new_tokens, n)
    g = torch.Generator().manual_seed(seed)
    if layout == "sequences":
        return [_sample_sequence(model, tokenizer, g, temperature, top_k, prompt, max_new_tokens,
                                 device, use_cache) for _ in range(n)]
    bs = model.block_size
    start = [tokenizer.boundary] * bs + tokenizer.encode(prompt)
    idx = torch.tensor([start] * n, dtype=torch.long)  # (n, bs + len(prompt))
    out = [[] for _ in range(n)]
    done = torch.zeros(n, dtype=torch.bool)
    was_training = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):
            window = idx[:, -bs:].to(device)  # (n, bs)
            nxt = next_token(_last_logits(model, window), temperature, top_k, g)  # (n, 1)
            idx = torch.cat([idx, nxt], dim=1)
            for i in range(n):
                if not done[i]:
                    if nxt[i, 0].item() == tokenizer.boundary:
                        done[i] = True
                    else:
                        out[i].append(nxt[i, 0].item())
            if done.all():
                break
    finally:
        model.train(was_training)
    return [prompt + tokenizer.decode(ids) for ids in out]


def _sample_sequence(model, tokenizer, g, temperature, top_k, prompt, max_new_tokens, device,
                     use_cache) -> str:
    """One line from a sequence model: boundary + prompt, grown until the boundary."""
    idx = torch.tensor([[tokenizer.boundary, *tokenizer.encode(prompt)]], dtype=torch.long,
                       device=device)  # (1, 1 + len(prompt))

    def pick(logits):
        return next_token(logits, temperature, top_k, g).to(device)

    ids = _continue(model, idx, max_new_tokens, pick, use_cache, stop_token=tokenizer.boundary)
    return prompt + tokenizer.decode(ids)


def _continue(model, idx: torch.Tensor, max_new_tokens: int, pick, use_cache: bool,
              stream=None, stop_token: int | None = None) -> list[int]:
    """Up to max_new_tokens ids after idx (1, T), in eval mode: the model's cached
    generation when it has one (and use_cache), else the uncached loop over the same
    sliding window; `stream(id)` sees each id, picking `stop_token` ends (not returned)."""
    was_training = model.training
    model.eval()
    try:
        if use_cache and capabilities(model).cached_generation:
            return model.generate_cached(idx, max_new_tokens, pick, stream=stream,
                                         stop_token=stop_token)
        ids, start = [], 0
        for _ in range(max_new_tokens):
            start = slide_window(start, idx.shape[1], model.block_size)
            nxt = pick(_last_logits(model, idx[:, start:]))  # (1, 1)
            if nxt.item() == stop_token:
                break
            idx = torch.cat([idx, nxt], dim=1)
            ids.append(nxt.item())
            if stream is not None:
                stream(ids[-1])
        return ids
    finally:
        model.train(was_training)


@torch.no_grad()
def sample_text(model, tokenizer, *, seed: int = 0, temperature: float = 1.0,
                top_k: int | None = None, prompt: str = "",
                max_new_tokens: int = TEXT_MAX_NEW_TOKENS,
                device="cpu", stream=None, use_cache: bool = True) -> str:
    """Continue `prompt` by max_new_tokens characters; `stream(text)` gets each piece."""
    check_sampling_args(temperature, top_k, max_new_tokens)
    g = torch.Generator().manual_seed(seed)
    if prompt:
        start = tokenizer.encode(prompt)
    else:
        start = tokenizer.encode("\n") if "\n" in tokenizer.stoi else [0]
    idx = torch.tensor([start], dtype=torch.long, device=device)  # (1, T)

    def pick(logits):
        return next_token(logits, temperature, top_k, g).to(device)

    ids = _continue(model, idx, max_new_tokens, pick, use_cache,
                    stream=_decoder(tokenizer, stream))
    return prompt + tokenizer.decode(ids)


def _decoder(tokenizer, stream):
    def emit(token_id: int):
        if stream is not None:
            stream(tokenizer.decode([token_id]))

    return emit


def write_samples(model, data, path: str | Path, train_cfg, device="cpu") -> dict:
    """samples.txt for a finished run; returns the figures result.json records."""
    n, seed = train_cfg.num_samples, train_cfg.seed
    if n == 0:
        atomic_write_text(path, "")
        return {}
    if data.format == "lines":
        samples = sample_lines(model, data.tokenizer, n, seed=seed, device=device,
                               layout=data.layout)
        train_set = set(data.train_items)
        novel = sum(s not in train_set for s in samples) / len(samples)
        atomic_write_text(path, "\n".join(samples) + "\n")
        return {"novel_fraction": novel}
    text = sample_text(model, data.tokenizer, seed=seed, max_new_tokens=train_cfg.sample_tokens,
                       device=device)
    atomic_write_text(path, text + "\n")
    return {}
