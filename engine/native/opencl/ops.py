"""`OpenCLOps`: the native engine's per-layer math on an OpenCL device.

Weights are uploaded once by `prepare` and stay on the device; so do the activations and the
KV cache between tokens. Only token embeddings go up and logits come back. Activations are
`ClTensor` row views, so the architectures' slicing and reshaping (`qkv[:, :n]`,
`x.reshape(t, heads, hd)`, `x[-1:]`) costs no copy.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.errors import DeviceUnavailableError
from engine.native.kv_cache import KVCache
from engine.native.opencl.context import ClDevice, build_program
from engine.native.ops import NumpyOps

F32 = 4
WEIGHTS_HINT = "LAMPCHAT_OPENCL_WEIGHTS=float16, "

_ROWS_MAX = 4
"""Up to this many rows a linear layer runs as matrix-vector products, above it tiled."""

_BLOCK = 4
"""Rows and outputs per work-item of `linear_block` (RB and OB in the kernel source)."""

_I, _F, _L = np.int32, np.float32, np.int64
_SCALARS: dict[str, list[Any]] = {
    "linear_rows": [None, _I, _I, None, None, _I, None, _I, _I],
    "linear_tiled": [None, _I, _I, None, None, _I, None, _I, _I, _I],
    "linear_block": [None, _I, _I, None, None, _I, None, _I, _I, _I],
    "linear_vec": [None, _I, _I, None, None, _I, None, _I, _I],
    "rms_norm": [None, _I, _I, None, None, _I, _F],
    "layer_norm": [None, _I, _I, None, None, None, _I, _F],
    "add": [None, _I, _I, None, _I, _I, None, _I],
    "copy_rows": [None, _I, _I, None, _I],
    "swiglu": [None, _I, _I, None, _I],
    "gelu": [None, _I, _I, None, _I],
    "rope": [None, _I, _I, None, None, _I, None, _I, _I],
    "store_kv": [None, _I, _I, None, _I, _I, None, None, _L, _I, _I, _I],
    "attention": [None, _I, _I, None, None, _L, None, None, _I, _I, _I, _I, _I, _I, _F],
}


class ClWeight:
    """A weight uploaded to the device (float32, or float16 for matrices when asked)."""

    __slots__ = ("buf", "shape", "half")

    def __init__(self, buf: Any, shape: tuple[int, ...], half: bool) -> None:
        self.buf, self.shape, self.half = buf, shape, half

    @property
    def nbytes(self) -> int:
        """Device memory it takes."""
        return math.prod(self.shape) * (2 if self.half else 4)


class ClTensor:
    """A float32 activation on the device: `rows` rows of shape `inner`, contiguous inside a
    row, `stride` elements apart, starting `off` elements into `buf`."""

    __slots__ = ("ops", "buf", "off", "rows", "stride", "inner", "__weakref__")

    def __init__(self, ops: OpenCLOps, buf: Any, off: int, rows: int, stride: int,
                 inner: tuple[int, ...]) -> None:
        self.ops, self.buf, self.off, self.rows, self.stride = ops, buf, off, rows, stride
        self.inner = inner

    @property
    def shape(self) -> tuple[int, ...]:
        """(rows, *inner), like numpy."""
        return (self.rows, *self.inner)

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return 1 + len(self.inner)

    @property
    def cols(self) -> int:
        """Elements per row."""
        return math.prod(self.inner)

    def __getitem__(self, key: Any) -> ClTensor:
        keys = key if isinstance(key, tuple) else (key,)
        if len(keys) > 2 or any(k is Ellipsis or k is None for k in keys):
            raise IndexError(f"unsupported index {key!r} on a device tensor")
        off, rows, inner = self.off, self.rows, self.inner
        first = keys[0]
        if not isinstance(first, slice):
            raise IndexError("index rows with a slice (e.g. x[-1:])")
        start, stop, step = first.indices(rows)
        if step != 1:
            raise IndexError("row slices must be contiguous")
        off += start * self.stride
        rows = max(0, stop - start)
        if len(keys) == 2:
            sub = keys[1]
            unit = math.prod(inner[1:])
            if isinstance(sub, slice):
                a, b, s = sub.indices(inner[0])
                if s != 1:
                    raise IndexError("column slices must be contiguous")
                off += a * unit
                inner = (max(0, b - a), *inner[1:])
            else:
                i = int(sub)
                i = i + inner[0] if i < 0 else i
                if not 0 <= i < inner[0]:
                    raise IndexError(f"index {sub} out of range for axis 1 of {self.shape}")
                off += i * unit
                inner = inner[1:]
        return ClTensor(self.ops, self.buf, off, rows, self.stride, inner)

    def reshape(self, *shape: Any) -> ClTensor:
        """Regroup the elements of each row (the row axis must stay as it is)."""
        dims = list(shape[0] if len(shape) == 1 and isinstance(shape[0], Sequence) else shape)
        if dims[0] not in (-1, self.rows):
            raise ValueError(f"cannot reshape {self.shape} to {tuple(dims)}: rows must stay")
        inner = dims[1:]
        if -1 in inner:
            known = math.prod(d for d in inner if d != -1)
            inner[inner.index(-1)] = self.cols // known
        if math.prod(inner) != self.cols:
            raise ValueError(f"cannot reshape {self.shape} to {tuple(dims)}")
        return ClTensor(self.ops, self.buf, self.off, self.rows, self.stride, tuple(inner))

    def __add__(self, other: Any) -> ClTensor:
        return self.ops.add(self, other)

    __radd__ = __add__

    def numpy(self) -> np.ndarray:
        """Copy to the host."""
        return self.ops.fetch(self)


class OpenCLOps(NumpyOps):
    """The native engine's ops on one OpenCL device (see the module docstring)."""

    name = "opencl"

    def __init__(self, dev: ClDevice, half_weights: bool = False) -> None:
        self.dev = dev
        self.cl = cl = dev.cl
        self.queue = dev.queue
        self.half_weights = half_weights
        self.device = f"{dev.id} ({dev.name})"
        """What `ModelInfo.device` shows, e.g. "opencl:0 (pthread-AMD EPYC)"."""
        self.program, self.tile = build_program(dev, half_weights)
        self.kernels = {}
        for name, scalars in _SCALARS.items():
            kernel = cl.Kernel(self.program, name)
            kernel.set_scalar_arg_dtypes(scalars)
            self.kernels[name] = kernel
        from pyopencl.tools import ImmediateAllocator, MemoryPool  # optional (the opencl extra)

        self.pool = MemoryPool(ImmediateAllocator(dev.queue))
        self.weight_bytes = 0
        self._tables: dict[int, tuple[np.ndarray, Any]] = {}
        self._caches: weakref.WeakKeyDictionary[KVCache, tuple[Any, Any, int]] = (
            weakref.WeakKeyDictionary()
        )
        self._ls = dev.group_size
        self.batched = "tiled" if dev.is_gpu else "block"
        """Matrix-product kernels. "tiled": GPUs (work-group reductions for a few rows,
        local-memory tiles for many). "block": CPU devices such as PoCL, where barriers are
        costly (register-blocked, no local memory)."""

    # -- memory ------------------------------------------------------------------------------

    def _alloc(self, n_floats: int) -> Any:
        return self.pool.allocate(max(1, n_floats) * F32)

    def _new(self, rows: int, inner: tuple[int, ...]) -> ClTensor:
        cols = math.prod(inner)
        return ClTensor(self, self._alloc(rows * cols), 0, rows, cols, inner)

    def upload(self, x: np.ndarray) -> ClTensor:
        """A host array `(rows, ...)` as a device tensor."""
        host = np.ascontiguousarray(x, dtype=np.float32)
        if host.ndim == 1:
            host = host[None, :]
        out = self._new(host.shape[0], tuple(host.shape[1:]))
        self.cl.enqueue_copy(self.queue, out.buf, host)
        return out

    def _tensor(self, x: Any) -> ClTensor:
        return x if isinstance(x, ClTensor) else self.upload(np.asarray(x))

    def prepare(self, weight: np.ndarray) -> ClWeight:
        """Upload a weight once: vectors as float32, matrices as float16 if half weights."""
        prepared = self._constant(weight, half=self.half_weights and weight.ndim == 2)
        self.weight_bytes += prepared.nbytes
        return prepared

    def _constant(self, array: np.ndarray, half: bool = False) -> ClWeight:
        """A read-only device copy of `array` (float32, or float16 when `half`)."""
        host = np.ascontiguousarray(array, dtype=np.float16 if half else np.float32)
        mf = self.cl.mem_flags
        buf = self._buffer(mf.READ_ONLY | mf.COPY_HOST_PTR, host.nbytes, host, "the weights")
        return ClWeight(buf, tuple(array.shape), half)

    def _buffer(self, flags: Any, nbytes: int, host: np.ndarray | None, what: str) -> Any:
        """A device buffer; running out of device memory is a one-line DeviceUnavailableError."""
        try:
            return self.cl.Buffer(self.dev.context, flags, nbytes if host is None else 0,
                                  hostbuf=host)
        except self.cl.Error as exc:
            raise DeviceUnavailableError(
                f"{self.device} cannot hold {what} ({nbytes / 2**20:.0f} MB more after "
                f"{self.weight_bytes / 2**20:.0f} MB of weights): {exc}; try "
                f"{WEIGHTS_HINT}a smaller context, or --device cpu"
            ) from exc

    def fetch(self, x: Any) -> np.ndarray:
        """Copy a device tensor to the host (waits for the queued work)."""
        if not isinstance(x, ClTensor):
            return np.asarray(x)
        if x.stride != x.cols and x.rows > 1:
            x = self._copy(x)
        out = np.empty(x.shape, dtype=np.float32)
        if out.size:
            self.cl.enqueue_copy(self.queue, out, x.buf, src_offset=x.off * F32)
        return out

    def _copy(self, x: ClTensor) -> ClTensor:
        out = self._new(x.rows, x.inner)
        self._run("copy_rows", (x.cols, x.rows), None, x.buf, x.off, x.stride, out.buf, x.cols)
        return out

    def _run(self, name: str, gsize: tuple[int, ...], lsize: tuple[int, ...] | None,
             *args: Any) -> None:
        self.kernels[name](self.queue, gsize, lsize, *args)

    # -- ops ----------------------------------------------------------------------------------

    def embed(self, table: np.ndarray, tokens: np.ndarray) -> ClTensor:
        """Rows of the (host) embedding table for `tokens`, uploaded."""
        return self.upload(table[tokens])

    def add(self, a: Any, b: Any) -> ClTensor:
        """Elementwise sum of two tensors of the same shape."""
        a, b = self._tensor(a), self._tensor(b)
        if a.shape != b.shape:
            raise ValueError(f"cannot add {a.shape} and {b.shape} on the device")
        out = self._new(a.rows, a.inner)
        self._run("add", (a.cols, a.rows), None, a.buf, a.off, a.stride, b.buf, b.off, b.stride,
                  out.buf, a.cols)
        return out

    def rms_norm(self, x: Any, weight: ClWeight, eps: float) -> ClTensor:
        """LLaMA RMSNorm."""
        x = self._tensor(x)
        out = self._new(x.rows, x.inner)
        ls = self._ls
        self._run("rms_norm", (x.rows * ls,), (ls,), x.buf, x.off, x.stride, weight.buf,
                  out.buf, x.cols, eps)
        return out

    def layer_norm(self, x: Any, weight: ClWeight, bias: ClWeight, eps: float) -> ClTensor:
        """LayerNorm."""
        x = self._tensor(x)
        out = self._new(x.rows, x.inner)
        ls = self._ls
        self._run("layer_norm", (x.rows * ls,), (ls,), x.buf, x.off, x.stride, weight.buf,
                  bias.buf, out.buf, x.cols, eps)
        return out

    def linear(self, x: Any, weight: ClWeight, bias: ClWeight | None = None) -> ClTensor:
        """`x @ weight.T (+ bias)`, weight stored `(out, in)`."""
        x = self._tensor(x)
        n, k = weight.shape
        if x.cols != k:
            raise ValueError(f"linear: input has {x.cols} features, the weight takes {k}")
        out = self._new(x.rows, (n,))
        bias_buf = bias.buf if bias is not None else weight.buf
        has_bias = 1 if bias is not None else 0
        if x.rows <= _ROWS_MAX and self.batched == "block":
            self._run("linear_vec", (-(-n // _BLOCK), x.rows), None, x.buf, x.off, x.stride,
                      weight.buf, bias_buf, has_bias, out.buf, k, n)
        elif x.rows <= _ROWS_MAX:
            ls = self._ls
            self._run("linear_rows", (n * ls, x.rows), (ls, 1), x.buf, x.off, x.stride,
                      weight.buf, bias_buf, has_bias, out.buf, k, n)
        elif self.batched == "tiled":
            ts = self.tile
            gsize = (-(-n // ts) * ts, -(-x.rows // ts) * ts)
            self._run("linear_tiled", gsize, (ts, ts), x.buf, x.off, x.stride, weight.buf,
                      bias_buf, has_bias, out.buf, k, n, x.rows)
        else:
            gsize = (-(-n // _BLOCK), -(-x.rows // _BLOCK))
            self._run("linear_block", gsize, None, x.buf, x.off, x.stride, weight.buf,
                      bias_buf, has_bias, out.buf, k, n, x.rows)
        return out

    def swiglu(self, gate_up: Any) -> ClTensor:
        """silu(gate) * up on a fused projection."""
        x = self._tensor(gate_up)
        half = x.cols // 2
        out = self._new(x.rows, (half,))
        self._run("swiglu", (half, x.rows), None, x.buf, x.off, x.stride, out.buf, half)
        return out

    def gelu(self, x: Any) -> ClTensor:
        """GELU (tanh approximation)."""
        x = self._tensor(x)
        out = self._new(x.rows, x.inner)
        self._run("gelu", (x.cols, x.rows), None, x.buf, x.off, x.stride, out.buf, x.cols)
        return out

    def _table(self, part: np.ndarray) -> tuple[Any, int]:
        """The device copy of the RoPE table `part` is a row slice of, and its first row."""
        base = part.base if isinstance(part.base, np.ndarray) else None
        if (base is not None and base.ndim == 2 and base.dtype == np.float32
                and base.flags.c_contiguous and part.shape[1:] == base.shape[1:]):
            held = self._tables.get(id(base))
            if held is None or held[0] is not base:
                held = (base, self._constant(base).buf)  # always float32
                self._tables[id(base)] = held
            row0 = (part.ctypes.data - base.ctypes.data) // base.strides[0]
            return held[1], int(row0)
        return self.upload(part).buf, 0

    def apply_rope(self, x: Any, cos: np.ndarray, sin: np.ndarray) -> ClTensor:
        """Rotary embedding of a `(tokens, heads, head_dim)` view."""
        x = self._tensor(x)
        t, heads, hd = x.shape
        cos_buf, pos0 = self._table(cos)
        sin_buf, pos0_s = self._table(sin)
        if pos0 != pos0_s:
            raise ValueError("cos and sin rows do not match")
        out = self._new(t, (heads, hd))
        self._run("rope", (hd // 2, heads, t), None, x.buf, x.off, x.stride, cos_buf, sin_buf,
                  pos0, out.buf, heads, hd)
        return out

    def _cache(self, cache: KVCache) -> tuple[Any, Any, int]:
        held = self._caches.get(cache)
        if held is None:
            n_layers, n_kv, max_ctx, hd = cache.keys.shape
            per_layer = n_kv * max_ctx * hd
            nbytes = n_layers * per_layer * F32
            mf = self.cl.mem_flags
            keys = self._buffer(mf.READ_WRITE, nbytes, None, "the KV cache")
            values = self._buffer(mf.READ_WRITE, nbytes, None, "the KV cache")
            held = (keys, values, per_layer)
            self._caches[cache] = held
        return held

    def store_kv(self, cache: KVCache, layer: int, start: int, keys: Any, values: Any) -> None:
        """Write `(T, kv_heads, hd)` keys and values into the device copy of `cache`."""
        k, v = self._tensor(keys), self._tensor(values)
        t, n_kv, hd = k.shape
        if start + t > cache.max_ctx:
            raise ValueError(f"positions up to {start + t} do not fit the cache ({cache.max_ctx})")
        kbuf, vbuf, per_layer = self._cache(cache)
        self._run("store_kv", (hd, n_kv, t), None, k.buf, k.off, k.stride, v.buf, v.off,
                  v.stride, kbuf, vbuf, layer * per_layer, cache.max_ctx, start, hd)

    def attention(self, q: Any, cache: KVCache, layer: int, start: int,
                  scale: float) -> ClTensor:
        """Causal grouped-query attention of `q` `(T, heads, hd)` over the device cache."""
        q = self._tensor(q)
        t, heads, hd = q.shape
        kbuf, vbuf, per_layer = self._cache(cache)
        n_kv = cache.keys.shape[1]
        end = start + t
        scores = self._alloc(t * heads * end)
        out = self._new(t, (heads * hd,))
        ls = self._ls
        self._run("attention", (heads * ls, t), (ls, 1), q.buf, q.off, q.stride, kbuf, vbuf,
                  layer * per_layer, scores, out.buf, heads, heads // n_kv, hd, cache.max_ctx,
                  start, end, scale)
        return out
