"""A preallocated key/value cache, and the tokens it holds (for reusing a shared prefix)."""

from __future__ import annotations

import mmap
from collections.abc import Sequence

import numpy as np

HUGE_PAGE = 2 << 20


def lazy_zeros(shape: tuple[int, ...]) -> np.ndarray:
    """A zeroed float32 array whose memory the OS maps 4 KB page by page as it is written.

    numpy asks for transparent huge pages on large arrays: writing the first positions of
    each (layer, head) row of a KV cache then faulted in and zeroed a 2 MB page per row (1.4
    s and 360 MB on SmolLM2's first reply). An anonymous map marked MADV_NOHUGEPAGE grows
    with the positions used instead.
    """
    n_bytes = int(np.prod(shape)) * 4
    if n_bytes < HUGE_PAGE or not hasattr(mmap, "MADV_NOHUGEPAGE"):
        return np.zeros(shape, dtype=np.float32)
    memory = mmap.mmap(-1, n_bytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    memory.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(memory, dtype=np.float32).reshape(shape)


class KVCache:
    """Keys and values of every layer, `[layers, kv_heads, max_ctx, head_dim]` float32.

    The arrays are zeroed memory the OS maps lazily in small pages (`lazy_zeros`), so memory
    grows with the positions actually used. `tokens` lists the tokens whose keys/values are
    held.
    """

    def __init__(self, n_layers: int, n_kv_heads: int, max_ctx: int, head_dim: int) -> None:
        shape = (n_layers, n_kv_heads, max_ctx, head_dim)
        self.keys = lazy_zeros(shape)
        self.values = lazy_zeros(shape)
        self.max_ctx = max_ctx
        self.tokens: list[int] = []

    @property
    def length(self) -> int:
        """Number of positions filled."""
        return len(self.tokens)

    def write(self, layer: int, start: int, keys: np.ndarray, values: np.ndarray) -> None:
        """Store `(T, kv_heads, head_dim)` keys and values at positions `start .. start + T`."""
        end = start + keys.shape[0]
        self.keys[layer, :, start:end] = keys.transpose(1, 0, 2)
        self.values[layer, :, start:end] = values.transpose(1, 0, 2)

    def view(self, layer: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Keys and values `(kv_heads, end, head_dim)` of one layer (views, no copy)."""
        return self.keys[layer, :, :end], self.values[layer, :, :end]

    def common_prefix(self, tokens: Sequence[int]) -> int:
        """How many leading `tokens` the cache already holds."""
        n = 0
        for held, new in zip(self.tokens, tokens, strict=False):
            if held != new:
                break
            n += 1
        return n

    def truncate(self, length: int) -> None:
        """Forget every position from `length` on."""
        del self.tokens[length:]
