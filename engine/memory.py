"""Giving freed memory back to the operating system, and mapped pages back to the file."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import mmap
import sys

import numpy as np

_LIBC = None
if sys.platform == "linux":
    with contextlib.suppress(OSError):
        _LIBC = ctypes.CDLL(None)
_MADV_DONTNEED = 4


def trim_heap() -> None:
    """Collect garbage, then hand freed heap memory back to the OS (glibc's malloc_trim).

    Freed weight matrices of a few MB sit below glibc's mmap threshold, so without this an
    unloaded model's memory stays in the process's arenas. Elsewhere only the collection runs.
    """
    gc.collect()
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def is_mapped(array: np.ndarray) -> bool:
    """Whether `array` is a view of a memory-mapped file."""
    base: object = array
    while isinstance(base, np.ndarray):
        if isinstance(base, np.memmap):
            return True
        base = base.base
    return isinstance(base, mmap.mmap)


def release_pages(array: np.ndarray) -> None:
    """Drop a memory-mapped array's pages from this process's resident set (Linux).

    The file's data stays in the page cache and is read back if touched again; this only
    keeps a copied checkpoint from being counted twice in RSS while a model loads.
    """
    if sys.platform != "linux" or not is_mapped(array) or _LIBC is None:
        return
    start = array.__array_interface__["data"][0]
    end = start + array.nbytes
    first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
    last = end // mmap.PAGESIZE * mmap.PAGESIZE
    if last > first:
        _LIBC.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_DONTNEED)
