"""The Transformer against independent references: a per-head loop, torch's own kernels,
closed-form parameter and FLOP counts, and the plain uncached sampling loop."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from dlf.errors import DlfError
from dlf.models import build_model
from dlf.models.protocol import capabilities
from dlf.models.transformer import Transformer, TransformerConfig
from dlf.nn import Linear
from dlf.optim import AdamW
from dlf.sample import generate_ids
from tolerances import assert_close_to_scale, fp32_tol, network_terms

# every later design choice switched on (each is off by default)
MODERN = {"position": "rope", "norm": "rms", "qk_norm": True, "mlp_activation": "relu2"}
# GPT-2's own GELU (the tanh approximation) and a LayerNorm epsilon other than the default
GPT2_ACT = {"mlp_activation": "gelu_tanh", "norm_eps": 1e-3}
# the speedrun's switches on top of them: zero-initialised projections, logit soft-capping
# (a small cap, so that it bends the logits of these tests) and the value residual
SPEEDRUN = {**MODERN, "zero_proj": True, "logit_softcap": 3.0, "value_residual": True}


def tiny(**kw) -> TransformerConfig:
    base = {"vocab_size": 11, "block_size": 8, "n_layer": 2, "n_head": 2, "n_embd": 16,
            "dropout": 0.0}
    return TransformerConfig(**{**base, **kw})


def make(seed: int = 0, **kw) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(tiny(**kw))


def tiny_tol(tokens: int, cfg: TransformerConfig | None = None) -> float:
    """fp32 bound for two kernels computing the same tiny Transformer's outputs (tokens = 0)
    or gradients (tokens = B * T summed over): widest reductions 4C (MLP) and T (attention)."""
    cfg = cfg or tiny()
    return fp32_tol(network_terms(tokens, cfg.n_layer, 4 * cfg.n_embd + cfg.block_size))


def test_registry_and_config_type():
    cfg = tiny()
    assert TransformerConfig.type == "transformer"
    assert "type" not in {f.name for f in dataclasses.fields(cfg)}  # a ClassVar
    model = build_model(cfg)
    assert isinstance(model, Transformer)
    assert model.block_size == 8 and capabilities(model).sequence_targets


@pytest.mark.parametrize(("tie", "switches"), [(False, {}), (True, {}), (False, MODERN),
                                               (True, SPEEDRUN)])
def test_manual_and_sdpa_attention_agree(tie, switches):
    a = make(tie_weights=tie, **switches)
    b = Transformer(tiny(tie_weights=tie, attention="sdpa", **switches))
    b.load_state_dict(a.state_dict())
    torch.manual_seed(1)
    idx = torch.randint(0, 11, (3, 8))
    targets = torch.randint(0, 11, (3, 8))
    la, loss_a = a(idx, targets)
    lb, loss_b = b(idx, targets)
    assert_close_to_scale(la, lb, tiny_tol(0))
    loss_a.backward()
    loss_b.backward()
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert na == nb
        # the key bias has gradient 0 by mathematics (softmax ignores a constant added to a
        # row of scores): its entries are rounding noise, so the whole tensor sets the scale
        assert_close_to_scale(pa.grad, pb.grad, tiny_tol(idx.numel()), msg=na)


def test_manual_and_sdpa_agree_in_eval_with_dropout():
    a = make(dropout=0.3)
    b = Transformer(tiny(dropout=0.3, attention="sdpa"))
    b.load_state_dict(a.state_dict())
    a.eval()
    b.eval()
    idx = torch.randint(0, 11, (2, 7))
    with torch.no_grad():
        assert_close_to_scale(a(idx)[0], b(idx)[0], tiny_tol(0))
    # and in training the dropout masks are live: two calls differ
    a.train()
    assert not torch.equal(a(idx)[0], a(idx)[0])


def test_attention_dropout_off_drops_the_embeddings_and_residuals_only():
    """attention_dropout = false in training: the manual kernel and torch's fused one (given
    dropout_p 0) draw the same residual and embedding masks from the same seed and agree,
    as they can only if neither drops attention probabilities; and those masks are live."""
    a = make(dropout=0.3, attention_dropout=False)
    b = Transformer(tiny(dropout=0.3, attention_dropout=False, attention="sdpa"))
    b.load_state_dict(a.state_dict())
    assert a.blocks[0].attn.attn_dropout.p == 0.0 and a.blocks[0].mlp.dropout.p == 0.3
    idx = torch.randint(0, 11, (2, 8))
    torch.manual_seed(5)
    la = a(idx)[0]
    torch.manual_seed(5)
    assert_close_to_scale(la, b(idx)[0], tiny_tol(0))
    a.eval()
    assert not torch.allclose(la, a(idx)[0])


def rotate(v: torch.Tensor, p: int) -> torch.Tensor:
    """RoPE as complex multiplication: v (..., hs) at position p, its pair j = (v[j],
    v[j + hs/2]) read as v[j] + i v[j + hs/2] and multiplied by exp(i p theta_j),
    theta_j = 10000 ** (-2j / hs)."""
    hs = v.shape[-1]
    theta = 10000.0 ** (-2.0 * torch.arange(hs // 2, dtype=torch.float64) / hs)
    z = torch.complex(v[..., : hs // 2].double(), v[..., hs // 2 :].double())
    z = z * torch.polar(torch.ones_like(theta), p * theta)
    return torch.cat([z.real, z.imag], dim=-1).to(v.dtype)


def reference_block(block, x: torch.Tensor, n_head: int, cfg: dict | None = None,
                    v1: torch.Tensor | None = None) -> torch.Tensor:
    """One pre-norm block written the slow way: each head and each query position alone,
    torch's own layer_norm / rms_norm, gelu / relu, and RoPE as complex rotations. With v1
    (B, nh, T, hs) and a block that mixes values, head h attends over its values moved
    the share block.attn.v_mix toward v1[:, h]."""
    cfg = cfg or {}
    B, T, C = x.shape
    hs = C // n_head
    attn, mlp = block.attn, block.mlp

    def lin(layer, h):  # our Linear stores weight as (fan_in, fan_out)
        return F.linear(h, layer.weight.T, layer.bias)

    eps = cfg.get("norm_eps", 1e-5)

    def norm(layer, h):
        if cfg.get("norm") == "rms":
            return F.rms_norm(h, (h.shape[-1],), layer.weight, eps=eps)
        return F.layer_norm(h, (C,), layer.weight, layer.bias, eps=eps)

    def act(h):
        if cfg.get("mlp_activation") == "relu2":
            return F.relu(h) ** 2
        return F.gelu(h, approximate="tanh" if cfg.get("mlp_activation") == "gelu_tanh"
                      else "none")

    def position(v, t):  # v (B, hs) at position t, as the scores see it
        return rotate(v, t) if cfg.get("position") == "rope" else v

    h = norm(block.ln1, x)
    qkv = lin(attn.c_attn, h)
    q, k, v = qkv[..., :C], qkv[..., C : 2 * C], qkv[..., 2 * C :]
    heads = []
    for head in range(n_head):
        cols = slice(head * hs, (head + 1) * hs)
        qh, kh, vh = q[..., cols], k[..., cols], v[..., cols]  # (B, T, hs)
        if v1 is not None:
            lam = block.attn.v_mix.item()
            vh = (1 - lam) * vh + lam * v1[:, head]
        if cfg.get("qk_norm"):
            qh, kh = norm(attn.q_norm, qh), norm(attn.k_norm, kh)
        out = torch.zeros(B, T, hs)
        for t in range(T):
            keys = torch.stack([position(kh[:, s], s) for s in range(t + 1)], dim=1)
            scores = position(qh[:, t], t).unsqueeze(1) @ keys.transpose(1, 2)  # (B,1,t+1)
            weights = torch.softmax(scores / math.sqrt(hs), dim=-1)
            out[:, t] = (weights @ vh[:, : t + 1]).squeeze(1)
        heads.append(out)
    x = x + lin(attn.c_proj, torch.cat(heads, dim=-1))
    h = norm(block.ln2, x)
    return x + lin(mlp.c_proj, act(lin(mlp.c_fc, h)))


@pytest.mark.parametrize("switches", [{}, MODERN, GPT2_ACT, {**MODERN, "norm_eps": 1e-3}, SPEEDRUN],
                         ids=["gpt2", "modern", "gelu_tanh", "modern-eps", "speedrun"])
@pytest.mark.parametrize("attention", ["manual", "sdpa"])
def test_block_matches_per_head_loop(attention, switches):
    """The first block, and with the value residual the second one given some v1."""
    model = make(attention=attention, n_head=4, n_embd=32, **switches)
    with torch.no_grad():  # nonzero biases so they are checked too
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 6, 32)
    block = model.blocks[0]
    tol = fp32_tol(network_terms(0, 1, 4 * 32 + 6))  # one block, C = 32, T = 6
    assert_close_to_scale(block(x), reference_block(block, x, 4, switches), tol)
    if switches.get("value_residual"):
        v1 = torch.randn(2, 4, 6, 8)  # (B, nh, T, hs)
        later = model.blocks[1]
        assert_close_to_scale(later(x, None, v1), reference_block(later, x, 4, switches, v1),
                              tol)


def test_value_residual_mixes_in_the_first_layers_values():
    """The whole model against reference blocks chained by hand: v1 is the first layer's
    value projection of its normalised input, split into heads; each later layer starts
    with its own share 0.5 of it, a learned scalar (AdamW's, not Muon's: a 1-element
    tensor), and the first layer has none."""
    model = make(n_layer=3, n_head=2, n_embd=16, value_residual=True)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for i in (1, 2):
            model.blocks[i].attn.v_mix.fill_(0.2 * i)
    assert model.blocks[0].attn.v_mix is None
    assert [b.attn.v_mix.shape for b in model.blocks[1:]] == [(1,), (1,)]
    assert torch.equal(make(n_layer=3, value_residual=True).blocks[2].attn.v_mix,
                       torch.tensor([0.5]))
    idx = torch.randint(0, 11, (2, 8))
    x = model.wte(idx) + model.wpe.weight[:8]
    first = model.blocks[0]
    h = F.layer_norm(x, (16,), first.ln1.weight, first.ln1.bias)
    v1 = (h @ first.attn.c_attn.weight + first.attn.c_attn.bias)[..., 32:]  # (B, T, C)
    v1 = v1.view(2, 8, 2, 8).transpose(1, 2)  # (B, nh, T, hs)
    x = reference_block(first, x, 2)
    for block in model.blocks[1:]:
        x = reference_block(block, x, 2, {}, v1)
    ln_f = model.ln_f
    expected = F.linear(F.layer_norm(x, (16,), ln_f.weight, ln_f.bias), model.lm_head.weight.T)
    assert_close_to_scale(model(idx)[0], expected, fp32_tol(network_terms(0, 3, 4 * 16 + 8)))
    model(idx, idx)[1].backward()
    assert all(b.attn.v_mix.grad.abs().item() > 0 for b in model.blocks[1:])


def test_logit_softcap_is_cap_times_tanh_of_the_plain_logits():
    """The same weights with and without the cap: cap * tanh(plain / cap), never beyond the
    cap, and the loss is the cross-entropy of the capped logits."""
    plain = make()
    capped = make(logit_softcap=2.0)
    capped.load_state_dict(plain.state_dict())
    with torch.no_grad():  # large weights: logits well beyond the cap
        for p in (plain.lm_head.weight, capped.lm_head.weight):
            p.mul_(200.0)
    idx = torch.randint(0, 11, (3, 8))
    logits, loss = capped(idx, idx)
    reference = 2.0 * torch.tanh(plain(idx)[0] / 2.0)
    assert_close_to_scale(logits, reference, tiny_tol(0))
    assert plain(idx)[0].abs().max() > 4.0 and logits.abs().max() <= 2.0
    torch.testing.assert_close(loss, F.cross_entropy(reference.view(-1, 11), idx.view(-1)))


def test_zero_proj_starts_every_block_as_the_identity():
    """The projections into the residual stream start at zero, every other weight as GPT-2's
    initialisation draws it (the same draws: the random stream is not changed); so each
    block returns its input."""
    gpt2, zero = make(seed=3, n_layer=2), make(seed=3, n_layer=2, zero_proj=True)
    for (name, a), (_, b) in zip(gpt2.named_parameters(), zero.named_parameters(), strict=True):
        if name.endswith("c_proj.weight"):
            assert torch.all(b == 0) and a.abs().max() > 0, name
        else:
            assert torch.equal(a, b), name
    x = torch.randn(2, 8, 16)
    for block in zero.blocks:
        assert torch.equal(block(x), x)


@pytest.mark.parametrize("qk_norm", [False, True])
def test_rope_attention_scores_depend_only_on_relative_positions(qk_norm):
    """RoPE in the model: in the first layer (whose input is the token embedding alone) the
    score of query token a at position m for key token b at position n depends on a, b and
    m - n only. A sequence of period P puts the same tokens at (m, n) and (m + P, n + P):
    their scores agree to fp32 rounding, and differ with learned positions."""
    P, T = 5, 16
    idx = torch.randint(0, 11, (1, P), generator=torch.Generator().manual_seed(4))
    idx = idx.repeat(1, T // P + 1)[:, :T]  # (1, T), idx[t] = idx[t + P]

    def scores(model):
        block = model.blocks[0]
        with torch.no_grad():
            q, k, _ = block.attn.qkv(block.ln1(model.embed(idx)))
            return block.attn.scores(q, k, causal=False)[0]  # (nh, T, T)

    def shift_gap(s):  # largest |score(m, n) - score(m + P, n + P)|, relative to the scores
        return ((s[:, P:, P:] - s[:, :-P, :-P]).abs().max() / s.abs().max()).item()

    rope = make(block_size=T, position="rope", qk_norm=qk_norm)
    learned = make(block_size=T, qk_norm=qk_norm)
    with torch.no_grad():  # large weights: position-dependent scores far from zero
        for model in (rope, learned):
            for p in model.parameters():
                p.add_(torch.randn_like(p))
    tol = fp32_tol(network_terms(0, 1, 16))  # one layer's dot products over C = 16
    assert shift_gap(scores(rope)) <= tol
    assert shift_gap(scores(learned)) > 100 * tol


def test_causal_future_tokens_do_not_change_the_past():
    model = make(n_layer=2)
    model.eval()
    idx = torch.randint(0, 11, (1, 8))
    changed = idx.clone()
    changed[0, 5] = (idx[0, 5] + 1) % 11
    with torch.no_grad():
        a, b = model(idx)[0], model(changed)[0]
    # bit for bit: the same kernels on the same shapes; masked scores add exact zeros
    torch.testing.assert_close(a[:, :5], b[:, :5], rtol=0, atol=0)
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def closed_form_params(V, T, L, C, bias, tie, switches=None) -> int:
    sw = switches or {}
    v_mix = L - 1 if sw.get("value_residual") else 0  # one scalar per layer after the first
    ln = 2 * C if bias and sw.get("norm") != "rms" else C  # RMSNorm: a gain, no bias
    linear_bias = (3 * C + C + 4 * C + C) if bias else 0
    qk_norm = 2 * (C // 3) if sw.get("qk_norm") else 0  # a gain of head size for q and k
    per_layer = 2 * ln + 12 * C * C + linear_bias + qk_norm
    positions = 0 if sw.get("position") == "rope" else T * C
    return V * C + positions + L * per_layer + ln + (0 if tie else C * V) + v_mix


@pytest.mark.parametrize("switches", [{}, MODERN, SPEEDRUN], ids=["gpt2", "modern", "speedrun"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("tie", [False, True])
def test_parameter_count_closed_form(bias, tie, switches):
    model = make(bias=bias, tie_weights=tie, n_layer=3, n_embd=24, n_head=3, **switches)
    assert model.num_parameters() == closed_form_params(11, 8, 3, 24, bias, tie, switches)
    assert model.output_weights() == ([] if tie else [model.lm_head.weight])
    params = model.parameters()
    assert len({id(p) for p in params}) == len(params)
    keys = set(model.state_dict())
    assert ("lm_head.weight" in keys) != tie
    assert not any(k.endswith("mask") for k in keys)  # the causal mask is rebuilt, not saved
    assert sum(v.numel() for v in model.state_dict().values()) == model.num_parameters()


def test_tied_head_uses_the_embedding():
    model = make(tie_weights=True)
    x = torch.randn(2, 3, 16)
    torch.testing.assert_close(model.head(x), x @ model.wte.weight.T)
    idx = torch.randint(0, 11, (2, 8))
    model(idx, idx)[1].backward()
    assert model.wte.weight.grad is not None


def test_gpt2_init_statistics():
    torch.manual_seed(0)
    L, C = 4, 256
    model = Transformer(TransformerConfig(vocab_size=50, block_size=16, n_layer=L, n_head=4,
                                          n_embd=C, dropout=0.0))
    resid = 0.02 / math.sqrt(2 * L)

    def has_std(w, std):
        # the sample std of n normal draws has relative standard error 1 / sqrt(2n): allow 5
        return w.std().item() == pytest.approx(std, rel=5 / math.sqrt(2 * w.numel()))

    for blk in model.blocks:
        assert has_std(blk.attn.c_proj.weight, resid) and has_std(blk.mlp.c_proj.weight, resid)
        assert has_std(blk.attn.c_attn.weight, 0.02) and has_std(blk.mlp.c_fc.weight, 0.02)
        assert torch.all(blk.attn.c_attn.bias == 0)
        assert torch.all(blk.ln1.weight == 1) and torch.all(blk.ln1.bias == 0)
    assert has_std(model.wte.weight, 0.02) and has_std(model.lm_head.weight, 0.02)


def test_initial_loss_is_about_ln_vocab():
    V = 65
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(vocab_size=V, block_size=32, n_layer=2, n_head=4,
                                          n_embd=64, dropout=0.0))
    idx = torch.randint(0, V, (16, 32))
    targets = torch.randint(0, V, (16, 32))
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(V)) < 0.1


def test_last_position_targets():
    model = make()
    idx = torch.randint(0, 11, (5, 8))
    y = torch.randint(0, 11, (5,))
    logits, loss = model(idx, y)
    assert logits.shape == (5, 8, 11)
    torch.testing.assert_close(loss, F.cross_entropy(logits[:, -1, :], y))
    logits, loss = model(idx)
    assert logits.shape == (5, 8, 11) and loss is None
    with pytest.raises(DlfError, match="targets must have shape"):
        model(idx, torch.zeros(5, 3, dtype=torch.long))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"n_embd": 100, "n_head": 6}, "n_embd 100 is not divisible by n_head 6"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"n_layer": 0}, "n_layer"),
        ({"block_size": 0}, "block_size"),
        ({"vocab_size": 1}, "vocab_size"),
        ({"attention": "flash"}, "attention"),
        ({"position": "alibi"}, "model.position must be learned or rope, got 'alibi'"),
        ({"norm": "batch"}, "model.norm must be layer or rms, got 'batch'"),
        ({"mlp_activation": "swiglu"}, "model.mlp_activation must be gelu, gelu_tanh or relu2, got 'swiglu'"),
        ({"norm_eps": 0.0}, r"model.norm_eps must be in \(0, 1\), got 0.0"),
        ({"norm_eps": -1e-5}, "model.norm_eps must be in"),
        ({"position": "rope", "n_embd": 18, "n_head": 2}, "n_embd / n_head = 9 must be even"),
        ({"logit_softcap": -1.0}, r"model.logit_softcap must be >= 0 \(0 = off\), got -1.0"),
        ({"logit_softcap": float("inf")}, "model.logit_softcap must be a finite number, got inf"),
    ],
)
def test_config_errors(kw, match):
    with pytest.raises(DlfError, match=match):
        Transformer(tiny(**kw))


def test_sequence_longer_than_block_size_is_an_error():
    model = make()
    with pytest.raises(DlfError, match=r"9.*block_size 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


# the weights of the cache test, by switch set: seeds whose greedy decoding is not one token
SEEDS = {0: 0, len(MODERN): 1, len(SPEEDRUN): 2}


def uncached(model, idx, n, pick) -> list[int]:
    """Full forward of the whole context at every step. The context grows to block_size,
    then restarts from the last block_size // 2 tokens (the rule generation follows)."""
    out, start, bs = [], 0, model.block_size
    for _ in range(n):
        if idx.shape[1] - start > bs:
            start = idx.shape[1] - bs // 2
        nxt = pick(model(idx[:, start:])[0][:, -1, :])
        idx = torch.cat([idx, nxt], dim=1)
        out.append(nxt.item())
    return out


def seeded_sampler(seed: int):
    g = torch.Generator().manual_seed(seed)
    return lambda logits: torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=g)


def greedy(logits):
    return logits.argmax(dim=-1, keepdim=True)


@pytest.mark.parametrize("switches", [{}, MODERN, SPEEDRUN], ids=["gpt2", "modern", "speedrun"])
@pytest.mark.parametrize("attention", ["manual", "sdpa"])
@pytest.mark.parametrize("prompt_len", [1, 3, 8, 12])
def test_kv_cache_matches_uncached_loop_past_block_size(attention, prompt_len, switches):
    """With RoPE the cache rotates each new key at its position after the cached ones; a
    re-prefill restarts at position 0, as the uncached loop's window does."""
    model = make(seed=SEEDS[len(switches)], attention=attention, dropout=0.1,
                 tie_weights=prompt_len == 3, **switches)
    # large random weights: sharp logits that depend on everything (squared ReLU makes
    # unit-scale weights a few dominant units that repeat one token: smaller ones there)
    scale = 0.3 if switches else 1.0
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    model.eval()
    prompt = torch.randint(0, 11, (1, prompt_len))
    with torch.no_grad():
        for name, make_pick in (("sample", lambda: seeded_sampler(7)), ("greedy", lambda: greedy)):
            ref = uncached(model, prompt, 30, make_pick())
            seen = []
            (got,) = generate_ids(model, prompt, 30, make_pick(), stream=seen.append)
            assert got == ref, name
            assert seen == got
            assert len(set(ref)) > 1, name  # a non-trivial sequence


@pytest.mark.parametrize("switches", [{}, MODERN, SPEEDRUN], ids=["gpt2", "modern", "speedrun"])
def test_flops_per_token_matches_counted_matmuls(switches):
    """Count the matmul FLOPs of one training step at full context with torch's counter.
    RoPE, RMSNorm, QK-norm, squared ReLU, the soft cap and the value residual add none; the
    head counts tied or not."""
    for tie in (False, True):
        model = make(tie_weights=tie, n_layer=2, n_head=2, n_embd=16, block_size=8,
                     attention="manual", **switches)  # the full (T, T) matmuls
        B, T = 3, 8
        idx = torch.randint(0, 11, (B, T))
        counter = FlopCounterMode(display=False)
        with counter:
            model(idx, idx)[1].backward()
        assert model.flops_per_token() == counter.get_total_flops() / (B * T)


def test_training_lowers_loss_on_a_pattern():
    torch.manual_seed(0)
    V = 8
    model = Transformer(TransformerConfig(vocab_size=V, block_size=8, n_layer=2, n_head=2,
                                          n_embd=32, dropout=0.0))
    data = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 3, 1] * 20)
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        ix = torch.randint(0, len(data) - 9, (16,), generator=g)
        x = torch.stack([data[i : i + 8] for i in ix])  # (16, 8)
        y = torch.stack([data[i + 1 : i + 9] for i in ix])  # (16, 8)
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * math.log(V)


def test_to_float64_keeps_the_mask_and_runs():
    model = make().to(dtype=torch.float64)
    logits, _ = model(torch.randint(0, 11, (2, 8)))
    assert logits.dtype == torch.float64
    assert model.blocks[0].attn.mask.dtype == torch.bool


@pytest.mark.parametrize("switches", [{}, MODERN, SPEEDRUN], ids=["gpt2", "modern", "speedrun"])
@pytest.mark.parametrize("attention", ["manual", "sdpa"])
def test_fused_and_written_out_kernels_give_the_same_model(attention, switches):
    """Fused: LayerNorm or RMSNorm, GELU, addmm, dropout + residual, and (manual attention)
    the scores as one baddbmm with an additive mask. Same logits, loss and gradients as
    written out."""
    a = make(fused=True, attention=attention, **switches)
    b = make(fused=False, attention=attention, **switches)
    b.load_state_dict(a.state_dict())
    idx = torch.randint(0, 11, (2, 8))
    la, loss_a = a(idx, idx)
    lb, loss_b = b(idx, idx)
    assert_close_to_scale(la, lb, tiny_tol(0))
    loss_a.backward()
    loss_b.backward()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert_close_to_scale(pa.grad, pb.grad, tiny_tol(2 * 8))


def test_kv_cache_with_split_matvec_matches_uncached_loop(two_threads, monkeypatch):
    """On 2 threads the decoding loop sets each fused Linear to split its one-row products
    (Linear.splits_for), and sets them back after: the same tokens as the plain loop."""
    model = make(n_embd=32, n_head=2, block_size=8)
    assert Linear.splits_for(128, 2) == 8  # the MLP's 4C = 128 inputs in 8 slices
    splits = []
    matvec = Linear._matvec
    monkeypatch.setattr(Linear, "_matvec", lambda self, x: splits.append(self.matvec_splits)
                        or matvec(self, x))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model.eval()
    prompt = torch.randint(0, 11, (1, 3))
    with torch.no_grad():
        ref = uncached(model, prompt, 30, seeded_sampler(3))
        assert splits == []  # outside decoding: the plain product
        (got,) = generate_ids(model, prompt, 30, seeded_sampler(3))
    assert got == ref
    assert len(set(ref)) > 1
    assert 8 in splits and model.blocks[0].mlp.c_proj.matvec_splits == 1  # restored
