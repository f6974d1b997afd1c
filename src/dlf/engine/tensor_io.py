"""Atomic, pickle-free files: safetensors for tensors, JSON text for the rest.

Every write is atomic (dlf.fileio): a killed process leaves either the old file
or the new one, never half of one.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from dlf.errors import DlfError
from dlf.fileio import atomic_write_bytes, atomic_write_text


def write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


# torch dtype -> safetensors' name for it
_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
           torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
           torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None):
    """Save a flat name -> tensor dict as safetensors: the header, then each tensor's
    bytes streamed in turn, so the write needs no second copy of the weights (a 1.5B
    model is 6 GB of float32). Tensors on a GPU are copied to the CPU one at a time."""
    # widest elements first, as safetensors orders them: every tensor starts aligned
    order = sorted(tensors, key=lambda name: -tensors[name].element_size())
    entries, begin = {}, 0
    for name in order:
        t = tensors[name]
        if t.dtype not in _DTYPES:
            raise DlfError(f"cannot save {name}: dtype {t.dtype} has no safetensors name")
        size = t.numel() * t.element_size()
        entries[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape),
                         "data_offsets": [begin, begin + size]}
        begin += size
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    header = json.dumps({"__metadata__": meta, **entries} if meta else entries,
                        separators=(",", ":")).encode("utf-8")
    header += b" " * (-len(header) % 8)  # the data starts 8-byte aligned

    def chunks():
        yield len(header).to_bytes(8, "little") + header
        for name in order:
            raw = tensors[name].detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
            yield memoryview(raw.numpy())

    atomic_write_bytes(path, chunks())


def tensor_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a safetensors file, from its header alone (nothing
    else is read); a file shorter than its header says is refused as truncated."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n).decode("utf-8")) if 0 < n < 100_000_000 else None
            size = f.seek(0, 2)
    except FileNotFoundError:
        raise DlfError(f"checkpoint not found: {path}") from None
    except OSError as e:
        raise DlfError(f"cannot read checkpoint {path}: {e.strerror}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise DlfError(f"corrupt or truncated checkpoint {path}: {e}") from None
    if not isinstance(header, dict):
        raise DlfError(f"corrupt or truncated checkpoint {path}: no safetensors header")
    try:
        entries = {k: v for k, v in header.items() if k != "__metadata__"}
        end = max((v["data_offsets"][1] for v in entries.values()), default=0)
        shapes = {k: tuple(int(d) for d in v["shape"]) for k, v in entries.items()}
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise DlfError(f"corrupt or truncated checkpoint {path}: bad header ({e})") from None
    if 8 + n + end > size:
        raise DlfError(f"corrupt or truncated checkpoint {path}: {size:,} bytes, its header "
                       f"describes {8 + n + end:,}")
    return shapes


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file; a missing, truncated or corrupt file is a DlfError. The file
    is mapped and each tensor copied out of it, so a 6 GB file costs 6 GB of memory, not
    twice that."""
    path = Path(path)
    try:
        path.open("rb").close()  # the operating system's refusal, in its words
    except FileNotFoundError:
        raise DlfError(f"checkpoint not found: {path}") from None
    except OSError as e:
        raise DlfError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    try:
        with safe_open(path, framework="pt") as f:
            meta = dict(f.metadata() or {})
            # cloned out of the mapping: a tensor must not change with the file
            tensors = {k: f.get_tensor(k).clone() for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DlfError(f"corrupt or truncated checkpoint {path}: {e}") from None
    return tensors, meta


def section(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of a combined file (state.safetensors) under `prefix.`, prefix removed."""
    start = len(prefix) + 1
    return {k[start:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def read_json(path: str | Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DlfError(f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DlfError(f"cannot read {path}: {e}") from None
