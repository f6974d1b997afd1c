"""Atomic file writes: a temporary file in the destination directory, fsynced, then
renamed over the target, so a killed process leaves the old file or the new one,
never half of one. Used by checkpoints, run files and the tokenizer alike.

The file gets the mode any other tool's output gets (0666 less the umask: 0644 under the
usual umask 022), not the 0600 that mkstemp gives its temporary files: a run directory is
meant to be kept and shared."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def atomic_write_bytes(path: str | Path, data: bytes | Iterable[bytes | memoryview]) -> None:
    """Write `data` to `path` whole or not at all; `data` may also be an iterable of
    byte chunks, written in turn (a file larger than the memory left for one copy of it).
    A write that fails (a full disk, a file size limit, a read-only directory) leaves the
    old file and raises OSError naming `path`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            for chunk in [data] if isinstance(data, (bytes, bytearray)) else data:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None:  # the file meant, not the temporary
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def _umask() -> int:
    """The process's umask (reading it means setting it; it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
