"""A fast, validating GGUF parser (header, metadata, tensor table) over a memory map.

`gguf.GGUFReader` builds a numpy view per vocabulary string, which takes ~15 s on a 49k-token
vocabulary on this machine; this parser reads the same structure in well under a second and checks
every length against the file size, so a damaged file gets a one-line error. Dequantization is
still done by the `gguf` package.
"""

from __future__ import annotations

import contextlib
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ModelLoadError

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
    6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8),
}
_NP_TYPES: dict[int, str] = {
    0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?",
    10: "<u8", 11: "<i8", 12: "<f8",
}
_STRING, _ARRAY = 8, 9


MAX_ARRAY_DEPTH = 8
"""Metadata arrays within arrays, at most (llama.cpp's own files nest none)."""


class _Damaged(Exception):
    pass


@dataclass(frozen=True)
class GGUFTensorInfo:
    """One tensor's entry: numpy-order shape, ggml type, absolute data offset and byte size."""

    name: str
    shape: tuple[int, ...]
    qtype: Any  # gguf.GGMLQuantizationType
    offset: int
    n_bytes: int

    @property
    def n_elements(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


class GGUFFile:
    """A parsed GGUF file. `fields` holds metadata (strings decoded, arrays as lists)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            with self.path.open("rb") as fh:
                self._mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read GGUF file {self.path}: {exc}") from exc
        self.size = len(self._mm)
        self.fields: dict[str, Any] = {}
        self.tensors: list[GGUFTensorInfo] = []
        try:
            self._parse()
        except _Damaged as exc:
            raise ModelLoadError(f"GGUF file is damaged or truncated: {self.path} ({exc})") from exc
        except (struct.error, UnicodeDecodeError, ValueError, OverflowError) as exc:
            raise ModelLoadError(f"GGUF file is damaged or truncated: {self.path} ({exc})") from exc

    # -- parsing ------------------------------------------------------------------------------
    def _need(self, pos: int, n: int) -> None:
        if n < 0 or pos + n > self.size:
            raise _Damaged(f"needs {pos + n} bytes, the file has {self.size}")

    def _unpack(self, fmt: str, pos: int, n: int) -> tuple[Any, int]:
        self._need(pos, n)
        return struct.unpack_from(fmt, self._mm, pos)[0], pos + n

    def _string(self, pos: int) -> tuple[str, int]:
        n, pos = self._unpack("<Q", pos, 8)
        self._need(pos, n)
        return bytes(self._mm[pos : pos + n]).decode("utf-8", errors="replace"), pos + n

    def _string_array(self, pos: int, count: int) -> tuple[list[str], int]:
        mm, size, items = self._mm, self.size, []
        append = items.append
        for _ in range(count):
            n = int.from_bytes(mm[pos : pos + 8], "little")
            pos += 8
            if pos + n > size:
                raise _Damaged(f"a string runs past the end of the file ({pos + n} > {size})")
            append(mm[pos : pos + n].decode("utf-8", errors="replace"))
            pos += n
        return items, pos

    def _value(self, vtype: int, pos: int, depth: int = 0) -> tuple[Any, int]:
        """The value of type `vtype` at `pos`; `depth`: arrays around it (real files nest
        none; a crafted 5,000-deep one overflowed Python's stack)."""
        if vtype in _SCALARS:
            fmt, n = _SCALARS[vtype]
            return self._unpack(fmt, pos, n)
        if vtype == _STRING:
            return self._string(pos)
        if vtype == _ARRAY:
            if depth >= MAX_ARRAY_DEPTH:
                raise _Damaged(f"metadata arrays nested over {MAX_ARRAY_DEPTH} deep")
            sub, pos = self._unpack("<I", pos, 4)
            count, pos = self._unpack("<Q", pos, 8)
            if count > self.size:
                raise _Damaged(f"array of {count} items cannot fit")
            if sub in _NP_TYPES:
                dt = np.dtype(_NP_TYPES[sub])
                self._need(pos, count * dt.itemsize)
                arr = np.frombuffer(self._mm, dtype=dt, count=count, offset=pos)
                return arr.tolist(), pos + count * dt.itemsize
            if sub == _STRING:
                return self._string_array(pos, count)
            items = []
            for _ in range(count):
                item, pos = self._value(sub, pos, depth + 1)
                items.append(item)
            return items, pos
        raise _Damaged(f"unknown metadata value type {vtype}")

    def _parse(self) -> None:
        import gguf  # gguf takes about 0.1 s to import: only when a GGUF file is read

        self._need(0, 24)
        if self._mm[:4] != MAGIC:
            raise _Damaged("no GGUF magic number")
        self.version, pos = self._unpack("<I", 4, 4)
        if self.version > 0xFFFF:
            raise _Damaged("big-endian GGUF files are not supported")
        if self.version < 2:
            raise _Damaged(f"GGUF version {self.version} is too old")
        n_tensors, pos = self._unpack("<Q", pos, 8)
        n_kv, pos = self._unpack("<Q", pos, 8)
        if n_tensors > self.size // 16 or n_kv > self.size // 12:
            raise _Damaged("implausible tensor or metadata count")
        for _ in range(n_kv):
            key, pos = self._string(pos)
            vtype, pos = self._unpack("<I", pos, 4)
            self.fields[key], pos = self._value(vtype, pos)
        raw: list[tuple[str, tuple[int, ...], int, int]] = []
        for _ in range(n_tensors):
            name, pos = self._string(pos)
            n_dims, pos = self._unpack("<I", pos, 4)
            if n_dims > 8:
                raise _Damaged(f"tensor {name!r} has {n_dims} dimensions")
            dims = []
            for _ in range(n_dims):
                d, pos = self._unpack("<Q", pos, 8)
                dims.append(d)
            ttype, pos = self._unpack("<I", pos, 4)
            offset, pos = self._unpack("<Q", pos, 8)
            raw.append((name, tuple(reversed(dims)), ttype, offset))
        align = int(self.fields.get("general.alignment", DEFAULT_ALIGNMENT) or DEFAULT_ALIGNMENT)
        if align <= 0 or align & (align - 1):
            raise _Damaged(f"bad alignment {align}")
        self.data_offset = pos + (-pos % align)
        for name, shape, ttype, offset in raw:
            try:
                qtype = gguf.GGMLQuantizationType(ttype)
                block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            except (ValueError, KeyError):
                raise _Damaged(f"tensor {name!r} has unknown type {ttype}") from None
            n_el = int(np.prod(shape, dtype=np.int64)) if shape else 1
            if shape and shape[-1] % block:
                raise _Damaged(f"tensor {name!r} rows are not whole {qtype.name} blocks")
            n_bytes = n_el // block * type_size
            start = self.data_offset + offset
            if start + n_bytes > self.size:
                raise _Damaged(
                    f"truncated: tensor {name!r} ends at byte {start + n_bytes}, "
                    f"the file has {self.size}"
                )
            self.tensors.append(GGUFTensorInfo(name, shape, qtype, start, n_bytes))

    # -- access -------------------------------------------------------------------------------
    def field(self, key: str, default: Any = None) -> Any:
        """A metadata value, or `default`."""
        return self.fields.get(key, default)

    def raw(self, t: GGUFTensorInfo) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 array over the map."""
        return np.frombuffer(self._mm, dtype=np.uint8, count=t.n_bytes, offset=t.offset)

    def array(self, t: GGUFTensorInfo) -> np.ndarray:
        """The tensor in float32 (dequantized), or a zero-copy view for F32/F16 tensors."""
        import gguf  # gguf takes about 0.1 s to import: only when a GGUF file is read

        raw = self.raw(t)
        if t.qtype == gguf.GGMLQuantizationType.F32:
            return raw.view(np.float32).reshape(t.shape)
        if t.qtype == gguf.GGMLQuantizationType.F16:
            return raw.view(np.float16).reshape(t.shape)
        out = dequantize(raw, t.qtype, t.n_elements).reshape(t.shape)
        self.release(t)
        return out

    def array_into(self, t: GGUFTensorInfo, out: np.ndarray) -> None:
        """Write the tensor, as float32, into `out` (its shape), with no copy in between."""
        import gguf  # gguf takes about 0.1 s to import: only when a GGUF file is read

        if not out.flags.c_contiguous or t.qtype in (gguf.GGMLQuantizationType.F32,
                                                     gguf.GGMLQuantizationType.F16):
            out[...] = self.array(t)
        else:
            dequantize(self.raw(t), t.qtype, t.n_elements, out)
        self.release(t)

    def release(self, t: GGUFTensorInfo) -> None:
        """Drop the mapped pages of a tensor already copied out (dequantized) from the
        resident set: the file stays in the page cache, but is not counted a second time
        beside the float32 weights while a model loads."""
        offset, length = t.offset, t.n_bytes
        start = -(-offset // mmap.PAGESIZE) * mmap.PAGESIZE
        end = (offset + length) // mmap.PAGESIZE * mmap.PAGESIZE
        if end > start and hasattr(mmap, "MADV_DONTNEED"):
            with contextlib.suppress(OSError, ValueError):
                self._mm.madvise(mmap.MADV_DONTNEED, start, end - start)


_CHUNK_BLOCKS = 1 << 16


def dequantize(
    raw: np.ndarray, qtype: Any, n_elements: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Dequantize ggml blocks to float32 (into `out`, `n_elements` float32, when given): Q4_0,
    Q4_1 and Q8_0 vectorised here, every other type (the K-quants, Q5_x, IQ*, BF16, ...)
    through `gguf.quants`, in large chunks."""
    import gguf  # gguf takes about 0.1 s to import: only when a GGUF file is read

    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = raw.reshape(-1, type_size)
    if out is None:
        out = np.empty(n_elements, dtype=np.float32)
    out = out.reshape(blocks.shape[0], block)
    fast = _FAST.get(qtype.name)
    for i in range(0, blocks.shape[0], _CHUNK_BLOCKS):
        chunk = blocks[i : i + _CHUNK_BLOCKS]
        if fast is not None:
            out[i : i + _CHUNK_BLOCKS] = fast(chunk)
        else:
            rows = np.ascontiguousarray(chunk).reshape(1, -1)
            out[i : i + _CHUNK_BLOCKS] = gguf.quants.dequantize(rows, qtype).reshape(-1, block)
    return out.reshape(n_elements)


def _f16(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b).view(np.float16).astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _q4_0(b: np.ndarray) -> np.ndarray:
    return (_nibbles(b[:, 2:]).astype(np.int8) - 8).astype(np.float32) * _f16(b[:, :2])


def _q4_1(b: np.ndarray) -> np.ndarray:
    return _nibbles(b[:, 4:]).astype(np.float32) * _f16(b[:, :2]) + _f16(b[:, 2:4])


def _q8_0(b: np.ndarray) -> np.ndarray:
    return b[:, 2:].view(np.int8).astype(np.float32) * _f16(b[:, :2])


_FAST = {"Q4_0": _q4_0, "Q4_1": _q4_1, "Q8_0": _q8_0}
