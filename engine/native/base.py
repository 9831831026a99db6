"""What every native architecture provides, and helpers for taking weights by HF name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import MutableMapping

import numpy as np

from engine.errors import ModelLoadError
from engine.formats.lazy_weights import LazyWeights
from engine.memory import is_mapped, release_pages
from engine.native.kv_cache import KVCache
from engine.native.ops import NUMPY_OPS, NumpyOps

Weights = MutableMapping[str, np.ndarray]


def _check_shape(weights: Weights, name: str, shape: tuple[int, ...] | None) -> None:
    if name not in weights:
        raise ModelLoadError(f"the checkpoint has no tensor {name!r}")
    if shape is not None:
        found = weights.shape(name) if isinstance(weights, LazyWeights) else weights[name].shape
        if tuple(found) != shape:
            raise ModelLoadError(
                f"tensor {name!r} has shape {tuple(found)}, expected {shape} from the config"
            )


def _pop(weights: Weights, name: str, shape: tuple[int, ...] | None) -> np.ndarray:
    _check_shape(weights, name, shape)
    return weights.pop(name)


def take(
    weights: Weights, name: str, shape: tuple[int, ...] | None = None, transpose: bool = False
) -> np.ndarray:
    """Remove `name` from `weights` and return it as a contiguous float32 array in memory
    (`transpose`d when asked).

    Removing it lets the loader's copy be freed as soon as the model holds its own. A
    memory-mapped tensor is copied out (and its mapped pages released). Lazy weights are
    read here, straight into the returned array where their reader can.
    """
    if isinstance(weights, LazyWeights):
        _check_shape(weights, name, shape)
        found = weights.shape(name)
        out = np.empty(found[::-1] if transpose else found, dtype=np.float32)
        _take_into(weights, name, out, transpose)
        return out
    array = _pop(weights, name, shape)
    if transpose:
        array = array.T
    if is_mapped(array) or not array.flags.c_contiguous or array.dtype != np.float32:
        out = np.array(array, dtype=np.float32, order="C")
        release_pages(array)
        return out
    return array


def _take_into(weights: Weights, name: str, out: np.ndarray, transpose: bool = False) -> None:
    """Pop `name` into `out`: read straight into it when the weights can, else copied."""
    if transpose or not (isinstance(weights, LazyWeights) and weights.pop_into(name, out)):
        array = weights.pop(name)
        out[...] = array.T if transpose else array
        release_pages(array)


def take_optional(weights: Weights, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """Like `take`, but None when the checkpoint lacks `name`."""
    return take(weights, name, shape) if name in weights else None


def fuse(
    weights: Weights, names: list[str], shapes: list[tuple[int, ...]], fused: str | None = None
) -> np.ndarray:
    """Take several `(rows, cols)` tensors and stack their rows into one float32 matrix, one
    at a time; or take `fused`, when the checkpoint holds them already stacked under it."""
    rows = sum(shape[0] for shape in shapes)
    if fused is not None and fused in weights:
        return take(weights, fused, (rows, *shapes[0][1:]))
    if fused is not None and names[0] not in weights:
        raise ModelLoadError(f"the checkpoint has no tensor {fused!r} (nor {names[0]!r})")
    out = np.empty((rows, *shapes[0][1:]), dtype=np.float32)
    row = 0
    for name, shape in zip(names, shapes, strict=True):
        _check_shape(weights, name, shape)
        _take_into(weights, name, out[row : row + shape[0]])
        row += shape[0]
    return out


def rename(weights: Weights, old: str, new: str) -> None:
    """Give a tensor another name, without reading it."""
    if isinstance(weights, LazyWeights):
        weights.rename(old, new)
    else:
        weights[new] = weights.pop(old)


def discard(weights: Weights, name: str) -> None:
    """Drop `name` from `weights` if present, without reading it."""
    if name in weights:
        del weights[name]


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
