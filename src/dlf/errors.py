"""The one exception type users see: the CLI prints its message and exits with status 2.
Also what an allocation failure looks like, so that running out of memory can be said in
one line that names the setting to lower."""

from __future__ import annotations

import contextlib


class DlfError(Exception):
    """Bad input or an impossible request, stated in one line for a person to fix."""


# How the allocators say it: c10's DefaultCPUAllocator ("can't allocate memory"), CUDA,
# MPS and XPU ("... out of memory", torch.OutOfMemoryError, a RuntimeError).
_OUT_OF_MEMORY = ("can't allocate memory", "out of memory")


def is_out_of_memory(e: BaseException) -> bool:
    """Whether `e` is an allocation failure: Python's MemoryError or torch's."""
    if isinstance(e, MemoryError):
        return True
    return isinstance(e, RuntimeError) and any(m in str(e) for m in _OUT_OF_MEMORY)


@contextlib.contextmanager
def out_of_memory_means(advice: str):
    """An allocation failure inside the block (or the function this decorates) becomes a
    DlfError "out of memory {advice}"; anything else passes through."""
    try:
        yield
    except (MemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        raise DlfError(f"out of memory {advice}") from None
