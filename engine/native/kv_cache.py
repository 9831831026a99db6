"""A preallocated key/value cache, and the tokens it holds (for reusing a shared prefix)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class KVCache:
    """Keys and values of every layer, `[layers, kv_heads, max_ctx, head_dim]` float32.

    The arrays are allocated zeroed once; the OS maps their pages lazily, so memory grows
    with the positions actually used. `tokens` lists the tokens whose keys/values are held.
    """

    def __init__(self, n_layers: int, n_kv_heads: int, max_ctx: int, head_dim: int) -> None:
        shape = (n_layers, n_kv_heads, max_ctx, head_dim)
        self.keys = np.zeros(shape, dtype=np.float32)
        self.values = np.zeros(shape, dtype=np.float32)
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
