"""Weights read one tensor at a time, when a model takes them.

Loading a model eagerly holds every tensor in float32 before the model fuses and copies them,
so the peak is well above the weights themselves. `LazyWeights` maps HF names to readers
instead: a tensor is dequantized (GGUF) or cast (bfloat16, float16) only when taken, straight
into the array the model keeps where its reader can (`pop_into`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LazyTensor:
    """A tensor not read yet: its shape and how to read it."""

    shape: tuple[int, ...]
    read: Callable[[], np.ndarray]
    read_into: Callable[[np.ndarray], None] | None = None
    """Writes it, as float32, straight into a given array of its shape (None: not offered)."""


class LazyWeights(MutableMapping[str, np.ndarray]):
    """HF name -> tensor, each read when looked up (and so read again if looked up twice:
    take it with `pop`). Names can be tested, listed, renamed and deleted without reading."""

    def __init__(
        self, tensors: dict[str, LazyTensor], progress: Callable[[float, str], None] | None = None
    ) -> None:
        self._lazy = dict(tensors)
        self._set: dict[str, np.ndarray] = {}
        self._total = sum(math.prod(t.shape) for t in self._lazy.values()) or 1
        self._read = 0
        self.progress = progress
        """Hears (share of the elements read so far, the name just read)."""

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self._set:
            return self._set[name]
        tensor = self._lazy[name]
        array = tensor.read()
        self._count(tensor, name)
        return array

    def pop_into(self, name: str, out: np.ndarray) -> bool:
        """Take a tensor by writing it into `out` (float32, its shape) with no copy in
        between, if its reader offers that; False (nothing taken) otherwise."""
        tensor = self._lazy.get(name)
        if tensor is None or tensor.read_into is None:
            return False
        tensor.read_into(out)
        del self._lazy[name]
        self._count(tensor, name)
        return True

    def _count(self, tensor: LazyTensor, name: str) -> None:
        self._read += math.prod(tensor.shape)
        if self.progress is not None:
            self.progress(min(self._read / self._total, 1.0), name)

    def __setitem__(self, name: str, value: np.ndarray) -> None:
        self._lazy.pop(name, None)
        self._set[name] = value

    def __delitem__(self, name: str) -> None:
        if self._set.pop(name, None) is None:
            del self._lazy[name]

    def __contains__(self, name: object) -> bool:
        return name in self._set or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        yield from list(self._lazy)
        yield from list(self._set)

    def __len__(self) -> int:
        return len(self._lazy) + len(self._set)

    def clear(self) -> None:
        """Forget every tensor without reading any."""
        self._lazy.clear()
        self._set.clear()

    def shape(self, name: str) -> tuple[int, ...]:
        """A tensor's shape, without reading it."""
        if name in self._set:
            return tuple(self._set[name].shape)
        return self._lazy[name].shape

    def rename(self, old: str, new: str) -> None:
        """Give a tensor another name, without reading it."""
        if old in self._set:
            self._set[new] = self._set.pop(old)
        else:
            self._lazy[new] = self._lazy.pop(old)

    def n_elements(self) -> int:
        """Elements in every tensor still held."""
        return sum(math.prod(self.shape(name)) for name in self)

