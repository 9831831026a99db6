"""safetensors files: a validating, memory-mapped reader and a writer.

Reading maps the file and returns numpy views, so loading costs no copy unless a dtype change is
asked for. The header is checked before anything is mapped: a damaged file gets a one-line error.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ModelLoadError
from engine.formats.lazy_weights import LazyTensor
from engine.memory import release_pages

Progress = Callable[[float, str], None]

DTYPES: dict[str, np.dtype[Any]] = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(np.uint16),  # widened to float32 on load
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "U16": np.dtype(np.uint16),
    "U32": np.dtype(np.uint32),
    "U64": np.dtype(np.uint64),
    "BOOL": np.dtype(np.bool_),
}
MAX_HEADER = 16 * 1024 * 1024
"""The largest header read. The format allows 100 MB; real ones are a few hundred kB (a
70B model's shard: about 100 kB), and a 100 MB crafted one took 86 s and 2.5 GB to parse."""
MAX_DIM = 1 << 40
"""No real tensor has a dimension this long; a larger one is crafted."""


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """Widen bfloat16 bits (stored as uint16) to float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and the offset its data starts at.

    Raises ModelLoadError when the file is not a well-formed safetensors file.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ModelLoadError(f"safetensors file is truncated (no header): {path}")
            (n,) = struct.unpack("<Q", head)
            if n < 2 or n > MAX_HEADER or 8 + n > size:
                raise ModelLoadError(f"safetensors header is damaged or truncated: {path}")
            raw = fh.read(n)
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelLoadError(f"safetensors header is not valid JSON: {path}") from exc
    if not isinstance(header, dict):
        raise ModelLoadError(f"safetensors header is not a JSON object: {path}")
    data_start = 8 + n
    data_len = size - data_start
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dt = DTYPES[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            begin, end = (int(o) for o in info["data_offsets"])
            if any(not 0 <= d <= MAX_DIM for d in shape):
                raise ValueError("a dimension out of range")
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(
                f"safetensors entry {name!r} is malformed or has an unknown dtype: {path}"
            ) from exc
        expected = math.prod(shape) * dt.itemsize  # Python ints: no wrap-around to 0
        if end - begin != expected or begin < 0:
            raise ModelLoadError(
                f"safetensors entry {name!r} holds {end - begin} bytes, its shape needs "
                f"{expected}: {path}"
            )
        if end > data_len:
            raise ModelLoadError(
                f"safetensors file is truncated ({name!r} ends past the end of the file): {path}"
            )
    return header, data_start


def tensor_names(path: Path) -> list[str]:
    """Names of the tensors in a safetensors file."""
    header, _ = read_header(path)
    return [k for k in header if k != "__metadata__"]


def cast_float(arr: np.ndarray, dtype: Any = None, bf16: bool = False) -> np.ndarray:
    """`arr` with floating-point values as `dtype` (a copy when it differs); `bf16`: its
    uint16 values are bfloat16 bits, widened first."""
    out = bf16_to_f32(arr) if bf16 else arr
    if dtype is not None and out.dtype.kind == "f" and out.dtype != np.dtype(dtype):
        out = out.astype(dtype)
    return out


def lazy_safetensors(path: Path, dtype: Any = None) -> Iterator[tuple[str, LazyTensor]]:
    """Yield (name, tensor read when asked) from a safetensors file: mapped, cast as
    `iter_safetensors` casts only when read."""
    header, start = read_header(path)
    entries = [(k, v) for k, v in header.items() if k != "__metadata__"]
    mm = np.memmap(path, dtype=np.uint8, mode="r") if entries else None
    want = np.dtype(dtype) if dtype is not None else None
    for name, info in entries:
        begin, end = (int(o) for o in info["data_offsets"])
        shape = tuple(int(d) for d in info["shape"])
        assert mm is not None
        arr = mm[start + begin : start + end].view(DTYPES[info["dtype"]]).reshape(shape)
        bf16 = info["dtype"] == "BF16"
        direct = want == np.float32 and (bf16 or arr.dtype.kind == "f")
        yield name, LazyTensor(shape, partial(cast_float, arr, dtype, bf16),
                               partial(_read_into, arr, bf16) if direct else None)


def _read_into(arr: np.ndarray, bf16: bool, out: np.ndarray) -> None:
    """Write a mapped tensor into float32 `out` with no copy in between (bfloat16 widened in
    place), then drop its mapped pages."""
    if bf16:
        bits = out.view(np.uint32)
        bits[...] = arr
        bits <<= 16
    else:
        out[...] = arr
    release_pages(arr)


def iter_safetensors(
    path: Path, dtype: Any = None, progress: Progress | None = None,
    progress_range: tuple[float, float] = (0.0, 1.0),
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (name, array) from a safetensors file, memory-mapped.

    Floating-point tensors are cast to `dtype` when given (a copy); bfloat16 always becomes
    float32 (or `dtype`). Other tensors keep their dtype.
    """
    tensors = list(lazy_safetensors(path, dtype))
    lo, hi = progress_range
    for n, (name, tensor) in enumerate(tensors, 1):
        arr = tensor.read()
        if progress is not None:
            progress(lo + (hi - lo) * n / len(tensors), name)
        yield name, arr


def save_safetensors(
    tensors: dict[str, np.ndarray], path: Path, metadata: dict[str, str] | None = None
) -> None:
    """Write `tensors` to `path` in safetensors format (contiguous copies where needed)."""
    from safetensors.numpy import save_file  # only when writing (convert)

    data = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    save_file(data, str(path), metadata={"format": "pt", **(metadata or {})})
