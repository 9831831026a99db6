"""Giving freed memory back to the operating system."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import sys

_LIBC = None
if sys.platform == "linux":
    with contextlib.suppress(OSError):
        _LIBC = ctypes.CDLL(None)


def trim_heap() -> None:
    """Collect garbage, then hand freed heap memory back to the OS (glibc's malloc_trim).

    Freed weight matrices of a few MB sit below glibc's mmap threshold, so without this an
    unloaded model's memory stays in the process's arenas. Elsewhere only the collection runs.
    """
    gc.collect()
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)
