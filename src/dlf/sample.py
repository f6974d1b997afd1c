"""Generation: the one decoding loop, for every model, and sampling with temperature,
top-k, a seed and a prompt.

How a model is fed depends on the data it was trained on (the run's data.layout):

- "windows" (line data for window models: bigram, MLP, WaveNet): every prediction sees a
  fixed window of the last block_size tokens; a name starts from block_size boundary
  tokens and ends when the model picks the boundary token.
- "sequences" (whole lines for sequence models) and text streams: the context grows from
  the start (one boundary token, or the prompt) and slides by `slide_window` once it is
  full. Sequence models offer `prefill` and `advance` (dlf.models.protocol), so each new
  token costs one position, not a window; `use_cache=False` recomputes the window at
  every step instead (the same tokens: the reference the cache is tested against).
"""

from __future__ import annotations

import contextlib
import math

import torch

from dlf.data.datasets import LAYOUTS
from dlf.errors import DlfError, out_of_memory_means
from dlf.models.protocol import slide_window
from dlf.nn import Linear, Module

# What one sample may grow to when the caller does not say: a name ends at its
# boundary token long before 50 characters; a text sample is a paragraph or two.
LINE_MAX_NEW_TOKENS = 50
TEXT_MAX_NEW_TOKENS = 500
LINE_SAMPLES = 10  # names per call when the caller does not say; text: one continuation


def check_sampling_args(temperature: float, top_k: int | None, max_new_tokens: int,
                        num: int = 1) -> None:
    if num < 1:
        raise DlfError(f"-n/--num must be >= 1, got {num}")
    if not math.isfinite(temperature):
        raise DlfError(f"--temperature must be a finite number, got {temperature}")
    if temperature < 0:
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


@contextlib.contextmanager
def decoding(model):
    """Eval mode and no autograd for the duration, and each fused Linear's one-row
    products split over the threads torch has now (Linear.splits_for); all restored
    after."""
    threads = torch.get_num_threads()
    layers = model.modules() if isinstance(model, Module) else []  # the manual MLP is not
    linears = [m for m in layers if isinstance(m, Linear) and m.fused]
    before = [lin.matvec_splits for lin in linears]
    was_training = model.training
    model.eval()
    for lin in linears:
        lin.matvec_splits = Linear.splits_for(lin.fan_in, threads)
    try:
        with torch.inference_mode():
            yield
    finally:
        for lin, k in zip(linears, before, strict=True):
            lin.matvec_splits = k
        model.train(was_training)


def generate_ids(model, idx: torch.Tensor, max_new_tokens: int, pick, *,
                 fixed_window: bool = False, use_cache: bool = True,
                 stop_token: int | None = None, stream=None) -> list[list[int]]:
    """The decoding loop: continue each row of idx (n, T0) by up to max_new_tokens ids.

    `pick(logits (n, V)) -> ids (n, 1)` chooses every next id. A row ends when it picks
    `stop_token` (not returned); the loop ends when every row has. `stream(id)` sees each
    id of a single row as it is chosen. `fixed_window`: every prediction from the last
    block_size tokens (window models); otherwise the growing, sliding context of
    `slide_window`, through the model's cache when `use_cache`."""
    n, bs = idx.shape[0], model.block_size
    out: list[list[int]] = [[] for _ in range(n)]
    done = [False] * n
    cached = use_cache and not fixed_window
    start = slide_window(0, idx.shape[1], bs)  # the context's first position (window
    # models take the last block_size tokens whatever it is)
    with decoding(model):
        logits, cache = _prefill(model, idx, start, fixed_window, cached)
        for step in range(max_new_tokens):
            nxt = pick(logits).to(idx.device)  # (n, 1)
            for i, token in enumerate(nxt[:, 0].tolist()):
                if done[i]:
                    continue
                if token == stop_token:
                    done[i] = True
                    continue
                out[i].append(token)
                if stream is not None:
                    stream(token)
            if all(done) or step == max_new_tokens - 1:
                break  # no logits needed after the last token
            idx = torch.cat([idx, nxt], dim=1)  # (n, L)
            new_start = slide_window(start, idx.shape[1], bs)
            if cached and new_start == start:
                logits, cache = model.advance(nxt, cache)  # one position
            else:  # no cache, or the window moved: run the window whole
                start = new_start
                logits, cache = _prefill(model, idx, start, fixed_window, cached)
    return out


def _prefill(model, idx: torch.Tensor, start: int, fixed_window: bool, cached: bool):
    """The logits (n, V) after idx's context, and the cache when one is kept."""
    if fixed_window:
        logits, _ = model(idx[:, -model.block_size:])  # (n, V), or (n, T, V) for a sequence
        return (logits[:, -1, :] if logits.dim() == 3 else logits), None
    if cached:
        return model.prefill(idx[:, start:])
    logits, _ = model(idx[:, start:])  # (n, T, V)
    return logits[:, -1, :], None


def _device_of(model) -> torch.device:
    tensors = model.parameters() or list(model.state_dict().values())
    return tensors[0].device if tensors else torch.device("cpu")


@out_of_memory_means("sampling: draw fewer samples at once (-n, or train.num_samples for a "
                     "run's samples.txt) or use a model with a smaller model.block_size")
def sample(model, tokenizer, *, layout: str = "windows", n: int | None = None, seed: int = 0,
           temperature: float = 1.0, top_k: int | None = None, prompt: str = "",
           max_new_tokens: int | None = None, use_cache: bool = True,
           stream=None) -> list[str]:
    """Samples from a model and its tokenizer: what `dlf sample` prints and `dlf.generate`
    returns.

    Line data (the tokenizer has a boundary token, e.g. names): n items (default 10),
    each started from the boundary and the prompt and ended by the boundary token or
    max_new_tokens (default 50), drawn together from one generator seeded `seed`.
    `layout` is the run's data.layout (see the module docstring).
    Text data: n continuations of `prompt` (default 1) of max_new_tokens tokens (default
    500), sample i seeded seed + i; `stream(text)` gets each piece of text as it is made,
    the pieces of a sample adding up to its text after the prompt."""
    lines = tokenizer.boundary is not None
    if n is None:
        n = LINE_SAMPLES if lines else 1
    if max_new_tokens is None:
        max_new_tokens = LINE_MAX_NEW_TOKENS if lines else TEXT_MAX_NEW_TOKENS
    check_sampling_args(temperature, top_k, max_new_tokens, n)
    if layout not in LAYOUTS:
        raise DlfError(f"layout must be {' or '.join(LAYOUTS)}, got {layout!r}")
    device = _device_of(model)
    prompt_ids = tokenizer.encode(prompt)  # a DlfError names an unknown character

    def picker(g: torch.Generator):
        return lambda logits: next_token(logits, temperature, top_k, g)

    if lines:
        fixed = layout == "windows"
        context = [tokenizer.boundary] * (model.block_size if fixed else 1)
        idx = torch.tensor([context + prompt_ids] * n, dtype=torch.long, device=device)
        ids = generate_ids(model, idx, max_new_tokens, picker(torch.Generator().manual_seed(seed)),
                           fixed_window=fixed, use_cache=use_cache,
                           stop_token=tokenizer.boundary)
        return [prompt + tokenizer.decode(row) for row in ids]
    if not prompt_ids:  # start from a newline where the text has one
        prompt_ids = start_ids(tokenizer)
    idx = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # (1, T0)
    # BPE: a character whose bytes are split over two tokens is streamed once, whole
    decoder = tokenizer.incremental_decoder()
    emit = None if stream is None else (lambda token: stream(decoder.decode([token])))
    texts = []
    for i in range(n):
        g = torch.Generator().manual_seed(seed + i)
        (ids,) = generate_ids(model, idx, max_new_tokens, picker(g), use_cache=use_cache,
                              stream=emit)
        if stream is not None and (rest := decoder.decode([], final=True)):
            stream(rest)  # an unfinished last character, as U+FFFD; the decoder starts afresh
        texts.append(prompt + tokenizer.decode(ids))
    return texts


def start_ids(tokenizer) -> list[int]:
    """What a text sample without a prompt starts from: a newline, or token 0 when the
    tokenizer cannot encode one (a character tokenizer of text without newlines)."""
    try:
        return tokenizer.encode("\n")
    except DlfError:
        return [0]
