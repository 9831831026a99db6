"""The per-layer math of the native engine, as small functions over float32 numpy arrays.

Architectures call these through an ops object (`NUMPY_OPS` by default) chosen when a model
is built, so another compute path (e.g. OpenCL) can replace any of them by subclassing
`NumpyOps`. Activations are 2-D `(tokens, features)`; linear weights are stored `(out, in)`
as in HF checkpoints, and `prepare` turns a numpy weight into whatever the ops object wants.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from engine.native.kv_cache import KVCache

_GELU_C = math.sqrt(2.0 / math.pi)


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """LLaMA RMSNorm: `x / sqrt(mean(x^2) + eps) * weight`, row by row."""
    ms = np.matmul(x[:, None, :], x[:, :, None]).reshape(-1)  # row dot products, no copy
    ms *= np.float32(1.0 / x.shape[-1])
    ms += np.float32(eps)
    np.sqrt(ms, out=ms)
    out = x / ms[:, None]
    out *= weight
    return out


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis (biased variance, as in PyTorch)."""
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = np.einsum("td,td->t", centred, centred) * np.float32(1.0 / x.shape[-1])
    scale = 1.0 / np.sqrt(var + np.float32(eps))
    return centred * scale[:, None] * weight + bias


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """`x @ weight.T (+ bias)` for a weight stored `(out, in)`; one row runs as a matvec."""
    out = (weight @ x[0])[None, :] if x.shape[0] == 1 else x @ weight.T
    if bias is not None:
        out += bias
    return out


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax, in place on a fresh array."""
    out = x - x.max(axis=axis, keepdims=True)
    np.exp(out, out=out)
    out /= out.sum(axis=axis, keepdims=True)
    return out


def silu(x: np.ndarray) -> np.ndarray:
    """SiLU (swish): `x * sigmoid(x)`."""
    return x / (1.0 + np.exp(-x))


def swiglu(gate_up: np.ndarray) -> np.ndarray:
    """SwiGLU on a fused `[gate | up]` projection: `silu(gate) * up`."""
    half = gate_up.shape[-1] // 2
    gate = gate_up[:, :half]
    out = np.negative(gate)
    np.exp(out, out=out)
    out += np.float32(1.0)
    np.divide(gate, out, out=out)
    out *= gate_up[:, half:]
    return out


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU with the tanh approximation used by GPT-2 ("gelu_new")."""
    inner = np.tanh(np.float32(_GELU_C) * (x + np.float32(0.044715) * x * x * x))
    return np.float32(0.5) * x * (1.0 + inner)


def rope_tables(
    head_dim: int, max_positions: int, base: float, inv_freq: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin tables `(max_positions, head_dim // 2)` for rotary embeddings."""
    if inv_freq is None:
        inv_freq = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    angles = np.outer(np.arange(max_positions, dtype=np.float64), inv_freq)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate `x` `(tokens, heads, head_dim)` in the HF "rotate half" layout.

    `cos`/`sin` are `(tokens, head_dim // 2)` rows for the tokens' positions.
    """
    half = x.shape[-1] // 2
    x1 = x[..., :half]
    x2 = x[..., half:]
    c = cos[:, None, :]
    s = sin[:, None, :]
    out = np.empty_like(x)
    out[..., :half] = x1 * c - x2 * s
    out[..., half:] = x2 * c + x1 * s
    return out


def attention(
    q: np.ndarray, cache: KVCache, layer: int, start: int, scale: float,
    window: int | None = None, softcap: float | None = None,
) -> np.ndarray:
    """Causal grouped-query attention of `q` `(T, heads, hd)` over the cached keys/values.

    The cache must already hold this chunk's keys and values at `start .. start + T`. With a
    `window`, position i sees only positions j with i - j < window (sliding-window attention,
    as in Mistral and Gemma); with `softcap`, scores become `softcap * tanh(score / softcap)`
    (Gemma 2). Returns `(T, heads * hd)`.
    """
    t, n_heads, hd = q.shape
    end = start + t
    low = max(0, start - window + 1) if window else 0  # the first position any query sees
    keys, values = cache.view(layer, end)  # (kv_heads, end, hd)
    keys, values = keys[:, low:], values[:, low:]
    n_kv = keys.shape[0]
    group = n_heads // n_kv
    # (kv, group, T, hd): query heads sharing one kv head sit together
    qg = q.reshape(t, n_kv, group, hd).transpose(1, 2, 0, 3)
    if t == 1:
        qg = qg.reshape(n_kv, group, hd)
        scores = np.matmul(qg, keys.transpose(0, 2, 1))  # (kv, group, end - low)
        scores *= np.float32(scale)
        if softcap:
            _softcap(scores, softcap)
        probs = softmax(scores)
        out = np.matmul(probs, values)  # (kv, group, hd)
        return out.reshape(1, n_heads * hd)
    scores = np.matmul(qg, keys[:, None].transpose(0, 1, 3, 2))  # (kv, group, T, end - low)
    scores *= np.float32(scale)
    if softcap:
        _softcap(scores, softcap)
    rows = start + np.arange(t)[:, None]
    cols = np.arange(low, end)[None, :]
    hidden = cols > rows
    if window:
        hidden |= rows - cols >= window
    scores[..., hidden] = -np.inf
    probs = softmax(scores)
    out = np.matmul(probs, values[:, None])  # (kv, group, T, hd)
    return out.transpose(2, 0, 1, 3).reshape(t, n_heads * hd)


def _softcap(scores: np.ndarray, cap: float) -> None:
    """`cap * tanh(scores / cap)`, in place (Gemma 2's logit soft-capping)."""
    scores *= np.float32(1.0 / cap)
    np.tanh(scores, out=scores)
    scores *= np.float32(cap)


def gelu_glu(gate_up: np.ndarray) -> np.ndarray:
    """GeGLU on a fused `[gate | up]` projection: `gelu_tanh(gate) * up` (Gemma)."""
    half = gate_up.shape[-1] // 2
    out = gelu_tanh(gate_up[:, :half])
    out *= gate_up[:, half:]
    return out


class NumpyOps:
    """The default compute path: plain numpy (BLAS for the matrix products)."""

    name = "numpy"
    device = "cpu"

    def prepare(self, weight: np.ndarray) -> Any:
        """Turn a float32 numpy weight into this path's representation (here: itself)."""
        return weight

    def fetch(self, x: Any) -> np.ndarray:
        """Bring an activation back as a numpy array (logits for sampling)."""
        return np.asarray(x)

    rms_norm = staticmethod(rms_norm)
    layer_norm = staticmethod(layer_norm)
    linear = staticmethod(linear)
    swiglu = staticmethod(swiglu)
    gelu_glu = staticmethod(gelu_glu)
    gelu = staticmethod(gelu_tanh)
    apply_rope = staticmethod(apply_rope)
    attention = staticmethod(attention)

    def embed(self, table: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Rows of the embedding table for `tokens`."""
        return table[tokens]

    def store_kv(
        self, cache: KVCache, layer: int, start: int, keys: np.ndarray, values: np.ndarray
    ) -> None:
        """Write `(T, kv_heads, hd)` keys and values at positions `start .. start + T`."""
        cache.write(layer, start, keys, values)


NUMPY_OPS = NumpyOps()
"""The shared default ops object."""
