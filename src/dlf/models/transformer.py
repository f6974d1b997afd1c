"""A decoder-only Transformer (GPT-2 style, as in nanoGPT) from our own layers.

Token + learned position embeddings, n_layer pre-norm blocks of causal self-attention
and an MLP, a final LayerNorm and a linear head over the vocabulary. Attention is the
explicit masked softmax ("manual") or PyTorch's fused kernel ("sdpa"), one switch,
same weights. `prefill` and `advance` are the key/value-cache primitives that dlf.sample's
generation loop uses.

Later designs are switches on the same model, each off by default (GPT-2's choice):

    position        "learned" (a table wpe added to the token embedding) | "rope" (the
                    queries and keys rotated by their position, dlf.nn.rope; no table)
    norm            "layer" (LayerNorm) | "rms" (RMSNorm: no mean, no bias)
    qk_norm         each head's queries and keys RMS-normalised before the scores
    mlp_activation  "gelu" | "relu2" (squared ReLU); "gelu_tanh", the tanh approximation
                    of GELU, is GPT-2's own (dlf.models.gpt2 maps GPT-2's weights in and out)
    tie_weights     the head reuses the token embedding
    zero_proj       the projections into the residual stream start at zero
    logit_softcap   logits squashed to (-cap, cap) by cap * tanh(logits / cap)
    value_residual  each later layer's values mixed with the first layer's, v1
    attention_dropout  dropout on the attention probabilities (true) or not
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import torch
import torch.nn.functional as F

from dlf.config import check_model_fields
from dlf.errors import DlfError
from dlf.models.protocol import Capabilities
from dlf.models.sequence import sequence_loss
from dlf.nn import (
    GELU,
    Dropout,
    Embedding,
    LayerNorm,
    Linear,
    Module,
    ModuleList,
    ReLU2,
    RMSNorm,
    apply_rope,
    rope_tables,
)
from dlf.rules import AtLeast, Within

# The design switches' values (see the module docstring), each declared once here
Attention = Literal["auto", "manual", "sdpa"]
Position = Literal["learned", "rope"]
Norm = Literal["layer", "rms"]
MlpActivation = Literal["gelu", "gelu_tanh", "relu2"]


def pick_attention(device_type: str, dtype: str, dropout: float) -> str:
    """The faster of the two attention kernels (same maths, tested equal) for a device,
    autocast dtype ("fp32" | "bf16") and dropout:

    - CUDA: "sdpa" (flash / memory-efficient kernels, dropout included);
    - CPU with dropout: "manual" -- torch's CPU SDPA has no fused dropout and falls back
      to an unfused path slower than our written-out attention;
    - CPU, bf16: "manual" -- the bf16 CPU SDPA kernel was 1.3-1.6x slower per training
      step than the written-out attention (6x384 block 256 and 3x128 block 32, AMD EPYC);
    - CPU, fp32, no dropout: "sdpa" (its flash kernel never materialises the (T, T)
      scores; 1.1-1.2x faster per step at both shapes).

    A run's plan (dlf.engine.plan) makes this choice once and writes it into the run's
    config; a model built directly with attention = "auto" uses "manual"."""
    if device_type == "cuda":
        return "sdpa"
    return "sdpa" if dtype == "fp32" and dropout == 0 else "manual"


@dataclass
class TransformerConfig:
    type: ClassVar[str] = "transformer"
    vocab_size: int = 0  # filled in from the tokenizer
    # longest context (learned positions 0 .. block_size - 1)
    block_size: Annotated[int, AtLeast(1)] = 256
    n_layer: Annotated[int, AtLeast(1)] = 6  # transformer blocks
    # attention heads per block; head size is n_embd // n_head
    n_head: Annotated[int, AtLeast(1)] = 6
    n_embd: Annotated[int, AtLeast(1)] = 384  # residual stream width
    # on embeddings, attention probabilities and residual branches
    dropout: Annotated[float, Within(0, 1)] = 0.2
    bias: bool = True  # biases in the Linear and LayerNorm layers
    tie_weights: bool = False  # the head reuses the token embedding: logits = x @ wte.weight.T
    attention: Attention = "auto"  # "manual" (masked softmax) | "sdpa" (fused kernel, same maths)
    # | "auto" (the run's plan picks by device, dtype and dropout: pick_attention)
    fused: bool = True  # LayerNorm, GELU, Linear (addmm), dropout + residual as torch's
    # one-pass kernels (same maths, tested); false = the written-out formulas
    position: Position = "learned"  # "learned": a table of block_size position vectors added to
    # the token embedding | "rope": queries and keys rotated by position (dlf.nn.rope_tables,
    # base 10000), so attention scores see relative positions; no table (needs an even head size)
    norm: Norm = "layer"  # "layer": LayerNorm | "rms": RMSNorm (no mean subtracted, no bias)
    qk_norm: bool = False  # RMS-normalise each head's queries and keys (a gain of head size
    # each) before the scores, bounding the softmax's input
    # "gelu": x * Phi(x), with the normal CDF Phi | "gelu_tanh": GPT-2's tanh approximation
    # of it | "relu2": squared ReLU, max(x, 0) ** 2
    mlp_activation: MlpActivation = "gelu"
    # the epsilon of every LayerNorm / RMSNorm (GPT-2's layer_norm_epsilon), added to the
    # variance or mean square under the root
    norm_eps: Annotated[float, Within(0, 1, above=True)] = 1e-5
    zero_proj: bool = False  # attn.c_proj and mlp.c_proj start at zero (each block starts as
    # the identity) instead of N(0, 0.02 / sqrt(2 * n_layer))
    logit_softcap: Annotated[float, AtLeast(0, "0 = off")] = 0.0  # > 0: logits = cap * tanh(logits / cap); 0 = off
    value_residual: bool = False  # layers after the first attend over v + l * (v1 - v), v1
    # the first layer's values, l a learned scalar per layer starting at 0.5
    attention_dropout: bool = True  # model.dropout on the attention probabilities too; false:
    # on the embeddings and residual branches only (a CPU draws one random number per
    # dropped element, and the probabilities are n_head * block_size / n_embd times more)

    def check(self) -> None:
        """This config's rules (the run's plan and the model call it): each field's
        (dlf.rules), a filled-in vocabulary, and what the fields must agree on."""
        check_model_fields(self)
        if self.n_embd % self.n_head != 0:
            raise DlfError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")
        if self.position == "rope" and (self.n_embd // self.n_head) % 2:
            raise DlfError(f"model.position = \"rope\" rotates pairs of channels: the head "
                           f"size n_embd / n_head = {self.n_embd // self.n_head} must be even")


def softcap(logits: torch.Tensor, cap: float) -> torch.Tensor:
    """cap * tanh(logits / cap): about the logits where |logits| << cap, never beyond
    (-cap, cap) (Gemma 2; the modded-nanogpt speedruns)."""
    return cap * torch.tanh(logits / cap)


class KVCache:
    """Keys and values of every position seen so far by one attention layer.

    Preallocated once for `capacity` positions (the block size), so a new token is
    written in place rather than concatenated: k, v (B, nh, capacity, hs), of which the
    first `length` positions are filled."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.length = 0
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.length

    def reset(self) -> None:
        """Forget every position (the buffers are kept for reuse)."""
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, T, hs) after the cached positions; return views of every
        cached key and value, (B, nh, length, hs)."""
        B, nh, T, hs = k.shape
        if self.k is None or self.k.shape[0] != B or self.k.dtype != k.dtype:
            self.k = k.new_empty(B, nh, self.capacity, hs)  # (B, nh, capacity, hs)
            self.v = v.new_empty(B, nh, self.capacity, hs)
        L = self.length + T
        if L > self.capacity:
            raise DlfError(f"KV cache holds {self.capacity} positions, asked for {L}")
        self.k[:, :, self.length : L] = k
        self.v[:, :, self.length : L] = v
        self.length = L
        return self.k[:, :, :L], self.v[:, :, :L]


def make_norm(config: TransformerConfig, dim: int) -> LayerNorm | RMSNorm:
    """The normalisation that config.norm names, over the last dimension of size dim."""
    if config.norm == "rms":
        return RMSNorm(dim, eps=config.norm_eps, fused=config.fused)
    return LayerNorm(dim, eps=config.norm_eps, bias=config.bias, fused=config.fused)


class CausalSelfAttention(Module):
    """Multi-head self-attention where position t sees positions <= t.

    x (B, T, C) -> (B, T, C). With a `cache`, the new keys and values are appended to it
    and the queries attend over everything cached; after the first call a cache takes
    one token at a time. With qk_norm the queries and keys are RMS-normalised per head,
    and with RoPE then rotated by their positions (a cache's new token sits after the
    cached ones); the cache holds the keys as the scores see them."""

    def __init__(self, config: TransformerConfig, layer: int = 0):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        # the attention probabilities' dropout (attention_dropout = false: none)
        self.dropout = config.dropout if config.attention_dropout else 0.0
        self.attention = config.attention  # "auto" left unresolved: the written-out kernel
        c, fused = config, config.fused
        self.c_attn = Linear(c.n_embd, 3 * c.n_embd, bias=c.bias, fused=fused)  # q, k, v
        self.c_proj = Linear(c.n_embd, c.n_embd, bias=c.bias, fused=fused)
        self.attn_dropout = Dropout(self.dropout, fused=fused)
        self.resid_dropout = Dropout(c.dropout, fused=fused)
        # rebuilt on construction, so kept out of state_dict; a buffer so `to()` moves it
        T = config.block_size
        mask = torch.ones(T, T, dtype=torch.bool).tril()  # (T, T) True where allowed
        self.register_buffer("mask", mask, persistent=False)
        bias = torch.zeros(T, T).masked_fill(~mask, float("-inf"))  # (T, T) 0 or -inf
        self.register_buffer("bias", bias, persistent=False)
        self.fused = fused
        hs = c.n_embd // c.n_head
        self.q_norm = RMSNorm(hs, eps=c.norm_eps, fused=fused) if c.qk_norm else None
        self.k_norm = RMSNorm(hs, eps=c.norm_eps, fused=fused) if c.qk_norm else None
        self.rope = c.position == "rope"
        if self.rope:  # the angles of positions 0 .. block_size - 1, rebuilt on construction
            cos, sin = rope_tables(hs, T)  # 2 x (T, hs/2)
            self.register_buffer("cos", cos, persistent=False)
            self.register_buffer("sin", sin, persistent=False)
        # value residual: how far this layer's values move toward the first layer's
        self.v_mix = torch.full((1,), 0.5, requires_grad=True) \
            if c.value_residual and layer > 0 else None

    def qkv(self, x: torch.Tensor, start: int = 0, v1: torch.Tensor | None = None):
        """x (B, T, C) at positions start .. start + T - 1 -> q, k, v, each (B, nh, T, hs),
        q and k as the scores use them (normalised with qk_norm, rotated with RoPE), v as
        attention uses it (with value_residual, moved toward the first layer's v1)."""
        B, T, C = x.shape
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, C // self.n_head)  # (B, T, 3, nh, hs)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
        qk, v = qkv[:2], qkv[2]  # (2, B, nh, T, hs), (B, nh, T, hs)
        if self.q_norm is not None:
            qk = torch.stack((self.q_norm(qk[0]), self.k_norm(qk[1])))  # (2, B, nh, T, hs)
        if self.rope:  # q and k in one pass: half the kernel launches
            qk = apply_rope(qk, self.cos, self.sin, start)
        q, k = qk.unbind(0)  # 2 x (B, nh, T, hs)
        if self.v_mix is not None:
            v = torch.lerp(v, v1, self.v_mix.to(v.dtype))  # v + l * (v1 - v)
        return q, k, v

    def forward(self, x: torch.Tensor, cache: KVCache | None = None,
                v1: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (the projected attention output before the residual dropout (B, T, C), the
        values attended over (B, nh, T, hs): the first layer's are the later layers' v1)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x, 0 if cache is None else len(cache), v1)  # 3 x (B, nh, T, hs)
        values = v
        causal = True
        if cache is not None:
            if len(cache) > 0:
                if T != 1:
                    raise DlfError("a filled KV cache takes one new token at a time")
                causal = False  # the one new query may see every cached key
            k, v = cache.append(k, v)  # (B, nh, L, hs): every position so far
        if self.attention == "sdpa":
            p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=p,
                                               is_causal=causal)  # (B, nh, T, hs)
        else:
            att = torch.softmax(self.scores(q, k, causal), dim=-1)  # (B, nh, T, L)
            att = self.attn_dropout(att)
            y = att @ v  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): heads side by side
        return self.c_proj(y), values

    def scores(self, q: torch.Tensor, k: torch.Tensor, causal: bool) -> torch.Tensor:
        """q (B, nh, T, hs), k (B, nh, L, hs) -> q . k / sqrt(hs), (B, nh, T, L), -inf
        where a causal query would see the future (the softmax input)."""
        B, nh, T, hs = q.shape
        if self.fused and causal:
            # the same scores in one kernel: the scale folded into the product, the mask
            # added as 0 / -inf (bias + alpha * q @ k^T), no divide or fill pass
            att = torch.baddbmm(self.bias[:T, :T], q.reshape(B * nh, T, hs),
                                k.reshape(B * nh, T, hs).transpose(1, 2),
                                alpha=1.0 / math.sqrt(hs))  # (B * nh, T, T)
            return att.view(B, nh, T, T)
        att = q @ k.transpose(-2, -1) / math.sqrt(hs)  # (B, nh, T, L)
        if causal:
            att = att.masked_fill(~self.mask[:T, :T], float("-inf"))
        return att


class MLP(Module):
    """Position-wise feed-forward: (B, T, C) -> (B, T, 4C) -> (B, T, C), GELU (exact or
    GPT-2's tanh approximation) or squared ReLU between."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        c, fused = config, config.fused
        self.c_fc = Linear(c.n_embd, 4 * c.n_embd, bias=c.bias, fused=fused)
        if c.mlp_activation == "relu2":
            self.act = ReLU2()
        else:
            approximate = "tanh" if c.mlp_activation == "gelu_tanh" else "none"
            self.act = GELU(approximate, fused=fused)
        self.c_proj = Linear(4 * c.n_embd, c.n_embd, bias=c.bias, fused=fused)
        self.dropout = Dropout(c.dropout, fused=fused)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Before the residual dropout (applied by Block with the residual add)."""
        x = self.c_fc(x)  # (B, T, 4C)
        x = self.act(x)
        return self.c_proj(x)  # (B, T, C)


class Block(Module):
    """Pre-norm residual block: x + dropout(attn(ln1(x))), then + dropout(mlp(ln2(x))).
    (B, T, C) -> same. ln1 and ln2 are LayerNorm or RMSNorm (config.norm). Each dropout and
    its residual add are one `Dropout.residual` call (one pass when fused)."""

    def __init__(self, config: TransformerConfig, layer: int = 0):
        super().__init__()
        self.ln1 = make_norm(config, config.n_embd)
        self.attn = CausalSelfAttention(config, layer)
        self.ln2 = make_norm(config, config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None,
                v1: torch.Tensor | None = None) -> torch.Tensor:
        return self.run(x, cache, v1)[0]

    def run(self, x: torch.Tensor, cache: KVCache | None = None,
            v1: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (the block's output (B, T, C), its attention's values (B, nh, T, hs))."""
        y, v = self.attn(self.ln1(x), cache, v1)
        x = self.attn.resid_dropout.residual(x, y)
        x = self.mlp.dropout.residual(x, self.mlp(self.ln2(x)))
        return x, v


class Transformer(Module):
    """idx (B, T) with T <= block_size -> logits (B, T, vocab_size), loss.

    targets (B, T): mean cross-entropy over every position (text streams, or whole
    lines with padding targets IGNORE_INDEX left out); targets (B,): cross-entropy of
    the last position only (line data: fixed windows of the previous block_size
    characters, one target each). See dlf.models.sequence."""

    capabilities = Capabilities(sequence_targets=True, flop_count=True, output_weights=True)

    def __init__(self, config: TransformerConfig):
        super().__init__()
        config.check()
        self.config = config
        self.block_size = config.block_size
        c = config
        self.wte = Embedding(c.vocab_size, c.n_embd)
        # RoPE: positions enter through the rotation of q and k, no table
        self.wpe = Embedding(c.block_size, c.n_embd) if c.position == "learned" else None
        self.drop = Dropout(c.dropout, fused=c.fused)
        self.blocks = ModuleList(Block(c, layer) for layer in range(c.n_layer))
        self.ln_f = make_norm(c, c.n_embd)
        # tied: no weight of its own (see head()), so the tensor is listed once, as wte.weight
        self.lm_head = None if c.tie_weights else Linear(c.n_embd, c.vocab_size, bias=False)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """GPT-2: weights N(0, 0.02), biases 0, LayerNorm 1/0 (RMSNorm gains 1); the
        projections that write into the residual stream get std 0.02 / sqrt(2 * n_layer),
        since 2 * n_layer of them add up there (0 with zero_proj)."""
        resid_std = 0.0 if self.config.zero_proj else 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, mod in self.named_modules():
            if isinstance(mod, Linear):
                mod.weight.normal_(0.0, resid_std if name.endswith("c_proj") else 0.02)
                if mod.bias is not None:
                    mod.bias.zero_()
            elif isinstance(mod, Embedding):
                mod.weight.normal_(0.0, 0.02)
            elif isinstance(mod, (LayerNorm, RMSNorm)):
                mod.weight.fill_(1.0)
                if getattr(mod, "bias", None) is not None:
                    mod.bias.zero_()

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) -> logits (..., V), soft-capped with logit_softcap."""
        if self.lm_head is None:
            logits = x @ self.wte.weight.T  # (..., V); wte.weight is (V, C)
        else:
            logits = self.lm_head(x)
        cap = self.config.logit_softcap
        return softcap(logits, cap) if cap > 0 else logits

    def output_weights(self) -> list[torch.Tensor]:
        """The head's weight (C, V); none when tied (it is the embedding table)."""
        return [] if self.lm_head is None else [self.lm_head.weight]

    def embed(self, idx: torch.Tensor, start: int = 0) -> torch.Tensor:
        """idx (B, T) at positions start .. start + T - 1 -> the residual stream's input
        (B, T, C): the token embedding, plus the learned position's (RoPE adds none)."""
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is None:
            return x
        return x + self.wpe.weight[start : start + idx.shape[1]]  # wpe(arange(start, start+T))

    def logits(self, idx: torch.Tensor, start: int = 0,
               caches: list[KVCache] | None = None, last: bool = False) -> torch.Tensor:
        """idx (B, T) at positions start .. start + T - 1 -> logits (B, T, V), or with
        `last` the last position's alone, (B, 1, V): decoding needs no other, and the head
        is the largest matmul of a big vocabulary."""
        x = self.drop(self.embed(idx, start))  # (B, T, C)
        v1 = None  # the first layer's values, for value_residual
        for i, block in enumerate(self.blocks):
            x, v = block.run(x, None if caches is None else caches[i], v1)  # (B, T, C)
            v1 = v if i == 0 else v1
        if last:
            x = x[:, -1:]  # (B, 1, C)
        x = self.ln_f(x)
        return self.head(x)  # (B, T, V)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        T = idx.shape[1]
        if T > self.block_size:
            raise DlfError(f"sequence length {T} is longer than the model's "
                           f"block_size {self.block_size}")
        logits = self.logits(idx)  # (B, T, V)
        loss = None if targets is None else sequence_loss(logits, targets)
        return logits, loss

    def prefill(self, idx: torch.Tensor) -> tuple[torch.Tensor, list[KVCache]]:
        """Run a window idx (B, T) from position 0 and keep every layer's keys and values:
        -> (logits of the last position (B, V), the caches, each allocated once for
        block_size positions and written in place)."""
        caches = [KVCache(self.block_size) for _ in self.blocks]
        return self.logits(idx, 0, caches, last=True)[:, -1, :], caches

    def advance(self, token: torch.Tensor,
                caches: list[KVCache]) -> tuple[torch.Tensor, list[KVCache]]:
        """One new token (B, 1) at the position after the cached ones -> (its logits (B, V),
        the caches, now holding it too)."""
        return self.logits(token, len(caches[0]), caches, last=True)[:, -1, :], caches

    def flops_per_token(self) -> float:
        """Matmul FLOPs per trained token (forward + backward) at full context:

            6 * N + 12 * n_layer * n_embd * block_size

        N counts the weights used in matmuls: every Linear weight in the blocks (12 *
        n_embd**2 per layer) plus the head (n_embd * vocab_size, tied or not). Each
        weight costs 2 FLOPs forward and 4 backward. The second term is attention's
        q @ k^T and att @ v (2 * 2 * n_embd * block_size forward per layer, counted
        without the causal saving), times 3 for the backward (PaLM appendix B). RoPE,
        RMSNorm, qk_norm and the activation are elementwise: no matmul FLOPs."""
        c = self.config
        N = sum(blk.attn.c_attn.weight.numel() + blk.attn.c_proj.weight.numel()
                + blk.mlp.c_fc.weight.numel() + blk.mlp.c_proj.weight.numel()
                for blk in self.blocks)
        N += c.n_embd * c.vocab_size
        return float(6 * N + 12 * c.n_layer * c.n_embd * c.block_size)

    def extra_repr(self) -> str:
        c = self.config
        return (f"vocab_size={c.vocab_size}, block_size={c.block_size}, n_layer={c.n_layer}, "
                f"n_head={c.n_head}, n_embd={c.n_embd}, attention={c.attention!r}, "
                f"position={c.position!r}, norm={c.norm!r}, qk_norm={c.qk_norm}, "
                f"mlp_activation={c.mlp_activation!r}, norm_eps={c.norm_eps}")

    @torch.no_grad()
    def attention_maps(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """idx (B, T) -> per layer, the attention probabilities (B, n_head, T, T).

        Row t of a head's map is softmax(q_t . k_s / sqrt(hs)) over positions s <= t (the
        masked softmax of the "manual" kernel, `CausalSelfAttention.scores`, whichever
        kernel the config picks), with q and k as attention uses them (`qkv`: normalised
        with qk_norm, rotated with RoPE), so it sums to 1 and is 0 above the diagonal.
        Computed as in eval mode: no dropout, and the model is left in the mode it was in."""
        T = idx.shape[1]
        if T > self.block_size:
            raise DlfError(f"sequence length {T} is longer than the model's "
                           f"block_size {self.block_size}")
        was_training = self.training
        self.eval()
        try:
            x = self.embed(idx)  # (B, T, C)
            maps, v1 = [], None
            for i, block in enumerate(self.blocks):
                attn = block.attn
                q, k, _ = attn.qkv(block.ln1(x), 0, v1)  # 2 x (B, nh, T, hs)
                maps.append(torch.softmax(attn.scores(q, k, causal=True), dim=-1))
                x, v = block.run(x, None, v1)  # (B, T, C): the next layer's input
                v1 = v if i == 0 else v1
        finally:
            self.train(was_training)
        return maps
