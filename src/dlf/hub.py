"""GPT-2 checkpoints in Hugging Face's directory layout, in and out of dlf run directories.

    import_gpt2("gpt2/", "runs/gpt2")    # config.json, weights, tokenizer -> a run directory
    export_gpt2("runs/gpt2", "out/")     # a run's Transformer -> config.json, model.safetensors

A Hugging Face GPT-2 directory holds config.json, the weights (model.safetensors, or
pytorch_model.bin read with torch.load(weights_only=True): no code runs) and the
tokenizer (vocab.json + merges.txt, or tokenizer.json). The imported run is an ordinary
run directory (config.toml, model.safetensors, tokenizer.json) that `dlf sample`, `dlf eval`
and `dlf.load_run` read like any other. Its data section says `tokenizer = "pretrained"`:
the tokenizer is the run's tokenizer.json, never learned from data, and `dataset` is empty
(the run was trained elsewhere). dlf.models.gpt2 translates the names and the config.

Every refusal comes before anything is written: the whole directory is read and checked
first (names and shapes from the safetensors header, before any weight is loaded).
"""

from __future__ import annotations

import json
import pickle
import warnings
import zipfile
from pathlib import Path

import torch

from dlf import config as C
from dlf import presets
from dlf.engine.checkpoint import save_weights
from dlf.engine.rundir import RunDir
from dlf.engine.saved import load_run
from dlf.engine.tensor_io import load_tensors, read_json, save_tensors, tensor_shapes, write_json
from dlf.errors import DlfError
from dlf.models import gpt2

# What export writes into its directory (and --force replaces)
EXPORT_FILES = ("config.json", "model.safetensors")
END_OF_TEXT = "<|endoftext|>"


def read_weights(src: Path, cfg) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors by their own names, checked against cfg (dlf.models.gpt2's
    check_tensors) before they are loaded when the file is safetensors."""
    st, pt = src / "model.safetensors", src / "pytorch_model.bin"
    if st.exists():
        gpt2.check_tensors(tensor_shapes(st), cfg, str(st))
        return load_tensors(st)[0]
    if pt.exists():
        try:
            with warnings.catch_warnings():  # torch's notes on old pickle protocols
                warnings.simplefilter("ignore")
                obj = torch.load(pt, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise DlfError(f"cannot read {pt}: it holds more than tensors, and torch.load "
                           "with weights only refuses to run its code") from None
        except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DlfError(f"cannot read {pt} (torch.load, weights only): {first}") from None
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise DlfError(f"{pt} does not hold a dict of named tensors")
        return obj
    if (src / "model.safetensors.index.json").exists():
        raise DlfError(f"{src} holds a sharded checkpoint (model.safetensors.index.json); "
                       "dlf reads one model.safetensors")
    raise DlfError(f"{src} has neither model.safetensors nor pytorch_model.bin")


def read_tokenizer(src: Path):
    """GPT-2's byte-level BPE from vocab.json + merges.txt, or else tokenizer.json."""
    from dlf.data.bpe import BPETokenizer  # needs regex: only a BPE run imports it

    if (src / "vocab.json").exists() and (src / "merges.txt").exists():
        return BPETokenizer.from_gpt2_files(src / "vocab.json", src / "merges.txt")
    if (src / "tokenizer.json").exists():
        return BPETokenizer.from_hf_tokenizer_json(src / "tokenizer.json")
    raise DlfError(f"{src} has no tokenizer: vocab.json + merges.txt, or tokenizer.json")


def import_gpt2(src: str | Path, out: str | Path, *, force: bool = False) -> Path:
    """Read the Hugging Face GPT-2 directory `src` and write the run directory `out`
    (config.toml, model.safetensors, tokenizer.json). `force` replaces a run in `out`."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DlfError(f"GPT-2 directory not found: {src}")
    if not (src / "config.json").exists():
        raise DlfError(f"{src} has no config.json: not a Hugging Face checkpoint directory")
    cfg = gpt2.config_from_hf(read_json(src / "config.json"), str(src / "config.json"))
    run = RunDir(out)
    check_out(run, force)  # before the slow reads, and again before writing
    tensors = read_weights(src, cfg)
    state, cfg = gpt2.weights_from_hf(tensors, cfg, str(src))
    del tensors
    tok = read_tokenizer(src)
    if tok.vocab_size > cfg.vocab_size:
        raise DlfError(f"{src}: the tokenizer has {tok.vocab_size} ids, the model's "
                       f"vocab_size is {cfg.vocab_size}")
    n = sum(t.numel() for t in state.values())
    run_cfg = C.RunConfig(
        name=out.name or "gpt2", model=cfg, train=C.TrainConfig(max_steps=0),
        description=f"GPT-2 {cfg.n_layer}x{cfg.n_embd} ({n / 1e6:.0f}M parameters) imported "
        f"from {src.resolve()}",
        data=C.DataConfig(dataset="", format="text", tokenizer="pretrained"))
    C.validate(run_cfg)
    run.claim(force)
    try:
        run.begin(run_cfg, tok)
        save_weights(run.path, state, cfg.type)
    finally:
        run.release()
    return out


def check_out(run: RunDir, force: bool) -> None:
    """What claiming `run` would refuse, checked before the slow reads."""
    if run.path.exists() and not run.path.is_dir():
        raise DlfError(f"--out {run.path} exists and is not a directory")
    run.refuse_others(force, "use --force to replace it, or another --out")


def export_gpt2(run_dir: str | Path, dst: str | Path, *, force: bool = False) -> Path:
    """Write the run's Transformer (GPT-2's design) as GPT2LMHeadModel's config.json and
    model.safetensors into `dst`. `force` replaces those two files if `dst` holds them."""
    run_dir, dst = Path(run_dir), Path(dst)
    if not (run_dir / "config.toml").exists():
        raise DlfError(f"{run_dir} is not a run directory (no config.toml)")
    cfg = presets.load_toml(run_dir / "config.toml")
    if cfg.model.type != "transformer":
        raise DlfError(f"{run_dir} holds a {cfg.model.type} model; GPT-2's layout holds a "
                       "transformer")
    gpt2.check_gpt2_design(cfg.model)
    if dst.exists() and not dst.is_dir():
        raise DlfError(f"{dst} exists and is not a directory")
    existing = [f for f in EXPORT_FILES if (dst / f).exists()]
    if existing and not force:
        raise DlfError(f"{dst} already holds {', '.join(existing)}; use --force to replace "
                       "them, or another directory")
    run = load_run(run_dir, device="cpu")
    eos = getattr(run.tokenizer, "special_tokens", {}).get(END_OF_TEXT)
    hf_config = gpt2.config_to_hf(run.config.model, eos_token_id=eos)
    tensors = gpt2.weights_to_hf(run.model.state_dict(), run.config.model)
    try:
        dst.mkdir(parents=True, exist_ok=True)
        save_tensors(dst / "model.safetensors", tensors, {"format": "pt"})
        write_json(dst / "config.json", hf_config)
    except OSError as e:
        raise DlfError(f"cannot write {e.filename or dst}: {e.strerror or e}") from None
    return dst


def describe(path: str | Path) -> str:
    """One line about an imported or exported GPT-2: its sizes from config.json/toml."""
    path = Path(path)
    if (path / "config.json").exists():
        c = json.loads((path / "config.json").read_text(encoding="utf-8"))
        return (f"{path}: GPT-2, {c['n_layer']} layers x {c['n_embd']}, {c['n_head']} heads, "
                f"{c['n_positions']} positions, vocabulary {c['vocab_size']:,}")
    m = presets.load_toml(path / "config.toml").model
    return (f"{path}: GPT-2, {m.n_layer} layers x {m.n_embd}, {m.n_head} heads, "
            f"{m.block_size} positions, vocabulary {m.vocab_size:,}, "
            f"{'tied' if m.tie_weights else 'untied'} head")
