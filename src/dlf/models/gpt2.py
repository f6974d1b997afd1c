"""GPT-2 in Hugging Face's layout and dlf's Transformer: the config and the weight names,
both ways. dlf.hub reads and writes the files; this module only translates.

GPT-2's Conv1D stores its weight (fan_in, fan_out), as dlf's Linear does, so every weight
of a block crosses unchanged. Only the head, a torch Linear (V, C), is transposed.

    Hugging Face (optionally under "transformer.")   dlf
    wte.weight (V, C), wpe.weight (n_positions, C)    wte.weight, wpe.weight
    h.{i}.ln_1.*, h.{i}.ln_2.*                        blocks.{i}.ln1.*, blocks.{i}.ln2.*
    h.{i}.attn.c_attn.*, h.{i}.attn.c_proj.*          blocks.{i}.attn.c_attn.*, ...c_proj.*
    h.{i}.mlp.c_fc.*, h.{i}.mlp.c_proj.*              blocks.{i}.mlp.c_fc.*, ...c_proj.*
    ln_f.*                                            ln_f.*
    lm_head.weight (V, C); absent when tied           lm_head.weight (C, V); absent when tied

`h.{i}.attn.bias` and `h.{i}.attn.masked_bias`, which older checkpoints hold, are GPT-2's
causal mask and its fill value, not weights: they are skipped.
"""

from __future__ import annotations

import dataclasses
import re

import torch

from dlf.errors import DlfError
from dlf.models.transformer import Transformer, TransformerConfig

# config.json's activation_function -> model.mlp_activation, each the same function:
# gelu_new, gelu_fast and gelu_pytorch_tanh are three codings of the tanh approximation
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
               "gelu_fast": "gelu_tanh", "gelu": "gelu"}
# model.mlp_activation -> the name config.json gets on export (GPT-2's own for tanh)
EXPORTED_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu"}
_MASKS = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")
_BLOCK = {"ln_1": "ln1", "ln_2": "ln2", "attn.c_attn": "attn.c_attn",
          "attn.c_proj": "attn.c_proj", "mlp.c_fc": "mlp.c_fc", "mlp.c_proj": "mlp.c_proj"}


def config_from_hf(hf: dict, source: str = "config.json") -> TransformerConfig:
    """A GPT-2 config.json (parsed) -> the dlf Transformer that computes the same function:
    no dropout, biases, learned positions, LayerNorm with its epsilon, and tie_weights as
    config.json's tie_word_embeddings (`weights_from_hf` settles it from the tensors)."""
    if not isinstance(hf, dict):
        raise DlfError(f"{source} is not a JSON object")
    if hf.get("model_type") != "gpt2":
        raise DlfError(f"{source}: model_type is {hf.get('model_type')!r}, not 'gpt2': only "
                       "GPT-2 checkpoints are read")
    sizes = {}
    for key in ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size"):
        value = hf.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DlfError(f"{source}: {key} must be a positive integer, got {value!r}")
        sizes[key] = value
    act = hf.get("activation_function", "gelu_new")
    if act not in ACTIVATIONS:
        raise DlfError(f"{source}: activation_function {act!r} is not one dlf's Transformer "
                       f"computes; known: {', '.join(ACTIVATIONS)}")
    n_inner = hf.get("n_inner")
    if n_inner is not None and n_inner != 4 * sizes["n_embd"]:
        raise DlfError(f"{source}: n_inner = {n_inner}: dlf's MLP is 4 * n_embd = "
                       f"{4 * sizes['n_embd']} wide")
    for key, gpt2 in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                      ("reorder_and_upcast_attn", False), ("add_cross_attention", False)):
        if hf.get(key, gpt2) != gpt2:
            raise DlfError(f"{source}: {key} = {hf[key]!r} is not GPT-2's attention "
                           f"({key} = {str(gpt2).lower()}), the one dlf computes")
    eps = hf.get("layer_norm_epsilon", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise DlfError(f"{source}: layer_norm_epsilon must be a number, got {eps!r}")
    cfg = TransformerConfig(
        vocab_size=sizes["vocab_size"], block_size=sizes["n_positions"],
        n_layer=sizes["n_layer"], n_head=sizes["n_head"], n_embd=sizes["n_embd"],
        dropout=0.0, bias=True, tie_weights=bool(hf.get("tie_word_embeddings", True)),
        attention="auto", position="learned", norm="layer", qk_norm=False,
        mlp_activation=ACTIVATIONS[act], norm_eps=float(eps))
    try:
        cfg.check()
    except DlfError as e:
        raise DlfError(f"{source}: {e}") from None
    return cfg


def check_gpt2_design(cfg: TransformerConfig) -> None:
    """Refuse a Transformer that GPT-2's layout cannot hold: one line naming the switch."""
    lacks = [f"model.{name} = {getattr(cfg, name)!r}" for name, ok in (
        ("position", cfg.position == "learned"), ("norm", cfg.norm == "layer"),
        ("qk_norm", not cfg.qk_norm), ("mlp_activation", cfg.mlp_activation
                                       in EXPORTED_ACTIVATIONS), ("bias", cfg.bias)) if not ok]
    if lacks:
        raise DlfError(f"GPT-2's design has no {', '.join(lacks)}: only a Transformer with "
                       "learned positions, LayerNorm, biases, no qk_norm and GELU exports")


def config_to_hf(cfg: TransformerConfig, eos_token_id: int | None = None) -> dict:
    """The config.json of GPT2LMHeadModel for a Transformer in GPT-2's design."""
    check_gpt2_design(cfg)
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": cfg.vocab_size, "n_positions": cfg.block_size, "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": None,
        "activation_function": EXPORTED_ACTIVATIONS[cfg.mlp_activation],
        "layer_norm_epsilon": cfg.norm_eps, "tie_word_embeddings": cfg.tie_weights,
        "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, "initializer_range": 0.02,
        "bos_token_id": eos_token_id, "eos_token_id": eos_token_id,
    }


def hf_name(name: str) -> str:
    """A dlf state_dict name -> its Hugging Face name (without the "transformer." prefix)."""
    m = re.fullmatch(r"blocks\.(\d+)\.(ln1|ln2|attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)"
                     r"\.(weight|bias)", name)
    if m:
        inverse = {v: k for k, v in _BLOCK.items()}
        return f"h.{m[1]}.{inverse[m[2]]}.{m[3]}"
    return name


def expected_shapes(cfg: TransformerConfig) -> dict[str, tuple[int, ...]]:
    """Hugging Face name -> shape of every tensor a GPT-2 of this config holds (the head
    included only when untied), read off a model built on the meta device (no memory)."""
    with torch.device("meta"):
        state = Transformer(cfg).state_dict()
    shapes = {hf_name(k): tuple(v.shape) for k, v in state.items()}
    if "lm_head.weight" in shapes:  # torch's Linear: (V, C)
        shapes["lm_head.weight"] = shapes["lm_head.weight"][::-1]
    return shapes


def strip_prefix(names) -> dict[str, str]:
    """Each checkpoint name -> its name without the "transformer." prefix (GPT2LMHeadModel
    writes it; GPT2Model and the original checkpoints do not)."""
    return {n: n.removeprefix("transformer.") for n in names}


def check_tensors(shapes: dict[str, tuple[int, ...]], cfg: TransformerConfig,
                  source: str) -> bool:
    """Check a checkpoint's tensor names and shapes (name -> shape) against the GPT-2 that
    cfg describes; one line naming the missing, unexpected and misshapen tensors.
    Returns whether the checkpoint holds its own head (lm_head.weight)."""
    plain: dict[str, tuple[int, ...]] = {}
    for name, short in strip_prefix(shapes).items():
        if _MASKS.fullmatch(short):
            continue
        if short in plain:
            raise DlfError(f"{source} holds {short} twice (with and without 'transformer.')")
        plain[short] = tuple(shapes[name])
    # a checkpoint without a head of its own ties it to wte, whatever config.json says
    want = expected_shapes(dataclasses.replace(cfg, tie_weights="lm_head.weight" not in plain))
    problems = []
    missing = [n for n in want if n not in plain]
    extra = [n for n in plain if n not in want]
    if missing:
        problems.append("missing tensors " + ", ".join(missing[:8])
                        + (f" (and {len(missing) - 8} more)" if len(missing) > 8 else ""))
    if extra:
        problems.append("unexpected tensors " + ", ".join(extra[:8])
                        + (f" (and {len(extra) - 8} more)" if len(extra) > 8 else ""))
    wrong = [f"{n} is {list(plain[n])}, config.json gives {list(want[n])}"
             for n in want if n in plain and plain[n] != want[n]]
    if wrong:
        problems.append("wrong shapes: " + "; ".join(wrong[:4])
                        + (f" (and {len(wrong) - 4} more)" if len(wrong) > 4 else ""))
    if problems:
        raise DlfError(f"{source}: " + "; ".join(problems))
    return "lm_head.weight" in plain


def weights_from_hf(tensors: dict[str, torch.Tensor], cfg: TransformerConfig,
                    source: str = "the checkpoint") -> tuple[dict[str, torch.Tensor],
                                                             TransformerConfig]:
    """A GPT-2 checkpoint's tensors -> (dlf's state_dict, float32, and the config with
    tie_weights settled): tied when the checkpoint has no lm_head.weight or one equal to
    wte.weight. Names and shapes are checked first (`check_tensors`)."""
    has_head = check_tensors({k: tuple(v.shape) for k, v in tensors.items()}, cfg, source)
    plain = {short: tensors[name] for name, short in strip_prefix(tensors).items()
             if not _MASKS.fullmatch(short)}
    out: dict[str, torch.Tensor] = {}
    for name, t in plain.items():
        if not t.is_floating_point():
            raise DlfError(f"{source}: {name} holds {t.dtype}, not floating-point weights")
        m = re.fullmatch(r"h\.(\d+)\.(ln_1|ln_2|attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)"
                         r"\.(weight|bias)", name)
        if m:
            out[f"blocks.{m[1]}.{_BLOCK[m[2]]}.{m[3]}"] = t.float()
        elif name != "lm_head.weight":
            out[name] = t.float()
    tied = True
    if has_head:
        head = plain["lm_head.weight"]
        tied = torch.equal(head.float(), out["wte.weight"])
        if not tied and cfg.tie_weights:
            raise DlfError(f"{source}: lm_head.weight differs from wte.weight, but config.json "
                           "ties them (tie_word_embeddings is true)")
        if not tied:
            out["lm_head.weight"] = head.float().T.contiguous()  # (C, V), dlf's Linear
    return out, dataclasses.replace(cfg, tie_weights=tied)


def weights_to_hf(state: dict[str, torch.Tensor], cfg: TransformerConfig) -> dict[str, torch.Tensor]:
    """dlf's state_dict of a Transformer in GPT-2's design -> GPT2LMHeadModel's tensors, as
    its save_pretrained names them ("transformer." prefix; no lm_head.weight when tied)."""
    check_gpt2_design(cfg)
    out = {}
    for name, t in state.items():
        if name == "lm_head.weight":
            out[name] = t.T.contiguous()  # (V, C): torch's Linear
        else:
            out["transformer." + hf_name(name)] = t.contiguous()
    return out
