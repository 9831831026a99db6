"""What every native architecture provides, and helpers for taking weights by HF name."""

from __future__ import annotations

import ctypes
import mmap
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, MutableMapping

import numpy as np

from engine.errors import ModelLoadError
from engine.native.kv_cache import KVCache
from engine.native.ops import NUMPY_OPS, NumpyOps

Weights = MutableMapping[str, np.ndarray]
_MADV_DONTNEED = 4
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
BuildProgress = Callable[[float], None]


def _is_mapped(array: np.ndarray) -> bool:
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
    if sys.platform != "linux" or not _is_mapped(array) or _LIBC is None:
        return
    start = array.__array_interface__["data"][0]
    end = start + array.nbytes
    first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
    last = end // mmap.PAGESIZE * mmap.PAGESIZE
    if last > first:
        _LIBC.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_DONTNEED)


def take(
    weights: Weights, name: str, shape: tuple[int, ...] | None = None, copy: bool = True
) -> np.ndarray:
    """Remove `name` from `weights` and return it as a contiguous float32 array in memory.

    Removing it lets the loader's copy be freed as soon as the model holds its own. A
    memory-mapped tensor is copied out (and its mapped pages released) unless `copy` is
    False, for callers that copy it themselves (e.g. by concatenating) and then call
    `release_pages`.
    """
    try:
        array = weights.pop(name)
    except KeyError:
        raise ModelLoadError(f"the checkpoint has no tensor {name!r}") from None
    if shape is not None and tuple(array.shape) != shape:
        raise ModelLoadError(
            f"tensor {name!r} has shape {tuple(array.shape)}, expected {shape} from the config"
        )
    if not copy:
        return array
    if _is_mapped(array) or not array.flags.c_contiguous or array.dtype != np.float32:
        out = np.array(array, dtype=np.float32, order="C")
        release_pages(array)
        return out
    return array


def take_optional(weights: Weights, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """Like `take`, but None when the checkpoint lacks `name`."""
    return take(weights, name, shape) if name in weights else None


def fuse(weights: Weights, names: list[str], shapes: list[tuple[int, ...]]) -> np.ndarray:
    """Take several `(rows, cols)` tensors and stack their rows into one float32 matrix."""
    parts = [take(weights, n, s, copy=False) for n, s in zip(names, shapes, strict=True)]
    fused = np.concatenate(parts, axis=0, dtype=np.float32)
    for part in parts:
        release_pages(part)
    return fused


def config_int(config: dict, *keys: str, default: int | None = None) -> int:
    """The first of `keys` present in `config` as an int, else `default` (or an error). Every
    key read this way is a size or a count: 0, negative, fractional or absurd values are
    refused in one line (a head count of 0 was a division by zero)."""
    for key in keys:
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise ModelLoadError(f"config.json: {key} = {value!r} is not a whole number")
        if not 1 <= value <= 1 << 31:
            raise ModelLoadError(f"config.json: {key} = {value!r} is not a plausible size or "
                                 f"count (1 to {1 << 31:,})")
        return int(value)
    if default is None:
        raise ModelLoadError(f"config.json lacks {keys[0]!r}")
    return default


class NativeModel(ABC):
    """A transformer run by the native engine over a `KVCache`."""

    arch: str
    vocab_size: int
    n_layers: int
    n_kv_heads: int
    head_dim: int
    max_positions: int
    n_params: int

    def __init__(self, ops: NumpyOps | None = None) -> None:
        self.ops = ops or NUMPY_OPS

    def new_cache(self, n_ctx: int) -> KVCache:
        """An empty cache for up to `n_ctx` positions."""
        return KVCache(self.n_layers, self.n_kv_heads, n_ctx, self.head_dim)

    @abstractmethod
    def forward(
        self, tokens: np.ndarray, cache: KVCache, start: int, all_logits: bool = False
    ) -> np.ndarray:
        """Run `tokens` at positions `start ..` and store their keys/values in `cache`.

        Returns the logits `(vocab,)` of the last token, or `(T, vocab)` for every token
        when `all_logits` is set. Does not touch `cache.tokens`.
        """


def cpu_only(ops: NumpyOps | None, what: str, why: str) -> None:
    """Refuse, by name, a compute path other than numpy for `what`."""
    if ops is not None and type(ops) is not NumpyOps:
        raise ModelLoadError(f"{what} run on the CPU only in the native backend ({why})")


def count_params(*arrays: np.ndarray | None) -> int:
    """Total number of elements."""
    return int(sum(a.size for a in arrays if a is not None))
