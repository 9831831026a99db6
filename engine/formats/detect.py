"""Detect a model's format from its content (magic bytes and structure), never its extension.

Formats: "gguf", "safetensors" (a file, or an HF folder, sharded or not), "pytorch" (zip or
legacy pickle checkpoints), "onnx" (a protobuf ModelProto) and "mlx" (an HF-style folder whose
config.json carries MLX quantization, or .npz weights). A damaged file of a recognised format
raises ModelLoadError naming the format; an unrecognised one raises UnknownFormatError.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ModelLoadError, UnknownFormatError
from engine.files import parse_json
from engine.formats import hf_folder
from engine.formats.gguf_checks import check_metadata
from engine.formats.gguf_file import GGUFFile
from engine.formats.magic import (
    GGUF_MAGIC,
    ONNX_MODEL_FIELDS,
    TORCH_LEGACY_MAGIC,
    ZIP_MAGIC,
    check_readable,
    read_magic,
)
from engine.formats.pytorch import pytorch_files
from engine.formats.safetensors_io import read_header


@dataclass(frozen=True)
class FormatInfo:
    """A detected format: its name ("gguf", "safetensors", ...) and the path to load."""

    format: str
    path: Path
    detail: str = ""


def detect_format(path: str | os.PathLike[str]) -> FormatInfo:
    """Return the format of the model at `path` (file or folder), or raise a one-line error."""
    p = Path(path).expanduser()
    check_readable(p)
    if p.is_dir():
        return _detect_folder(p)
    return _detect_file(p)


def _detect_file(p: Path) -> FormatInfo:
    head = read_magic(p, 64)
    if head[:4] == GGUF_MAGIC:
        return FormatInfo("gguf", p)
    if head[:4] == ZIP_MAGIC:
        return _detect_zip(p)
    if _looks_like_legacy_torch(head):
        return FormatInfo("pytorch", p, "legacy")
    if _looks_like_safetensors(head):
        read_header(p)  # raises a clear error when damaged
        return FormatInfo("safetensors", p)
    onnx = _onnx_verdict(p, head)
    if onnx is not None:
        return onnx
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise UnknownFormatError(
            f"file is a Python pickle but not a PyTorch checkpoint (refusing to load it): {p}"
        )
    raise UnknownFormatError(
        f"unknown model format (not GGUF, safetensors, PyTorch, ONNX or MLX): {p}"
    )


def _looks_like_legacy_torch(head: bytes) -> bool:
    # PROTO n, then LONG1 with 10 bytes of magic number
    return head[:1] == b"\x80" and head[2:4] == b"\x8a\x0a" and head[4:14] == TORCH_LEGACY_MAGIC


def _looks_like_safetensors(head: bytes) -> bool:
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n < (1 << 32) and head[8:9] == b"{"


def _detect_zip(p: Path) -> FormatInfo:
    try:
        with zipfile.ZipFile(p) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ModelLoadError(
            f"zip archive is damaged or truncated (a PyTorch or .npz checkpoint?): {p} ({exc})"
        ) from exc
    if any(n.endswith("data.pkl") for n in names):
        return FormatInfo("pytorch", p, "zip")
    if names and all(n.endswith(".npy") for n in names):
        return FormatInfo("mlx", p, "npz")
    raise UnknownFormatError(f"zip archive is not a PyTorch checkpoint or .npz weights: {p}")


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _onnx_verdict(p: Path, head: bytes) -> FormatInfo | None:
    """An ONNX ModelProto starts with ir_version (field 1, varint); walk the top-level fields.

    Returns FormatInfo for a well-formed model, None when the file does not look like ONNX at
    all, and raises ModelLoadError when it starts like ONNX but its structure is broken.
    """
    if head[:1] != b"\x08":
        return None
    try:
        ir_version, _ = _read_varint(head, 1)
    except ValueError:
        return None
    if not 1 <= ir_version <= 64:
        return None
    size = p.stat().st_size
    seen: set[int] = set()
    try:
        with p.open("rb") as fh:
            pos = 0
            while pos < size:
                fh.seek(pos)
                chunk = fh.read(32)
                key, used = _read_varint(chunk, 0)
                number, wire = key >> 3, key & 7
                if number not in ONNX_MODEL_FIELDS:
                    raise ValueError(f"unexpected field {number}")
                if wire == 0:
                    _, used = _read_varint(chunk, used)
                    pos += used
                elif wire == 2:
                    length, used = _read_varint(chunk, used)
                    pos += used + length
                    if pos > size:
                        raise ValueError("a field runs past the end of the file")
                else:
                    raise ValueError(f"unexpected wire type {wire}")
                seen.add(number)
    except ValueError as exc:
        if len(seen) < 2 and "past the end" not in str(exc):
            return None  # it never looked like a ModelProto
        raise ModelLoadError(f"ONNX file is damaged or truncated: {p} ({exc})") from exc
    if 7 not in seen:
        raise ModelLoadError(f"ONNX file has no graph (damaged or truncated): {p}")
    return FormatInfo("onnx", p)


def _detect_folder(p: Path) -> FormatInfo:
    config_path = p / "config.json"
    config: dict[str, object] = {}
    if config_path.is_file():
        try:
            loaded = parse_json(config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"config.json is damaged: {config_path} ({exc})") from exc
        config = loaded if isinstance(loaded, dict) else {}
    quant = config.get("quantization")
    if isinstance(quant, dict) and "group_size" in quant and "bits" in quant:
        return FormatInfo("mlx", p, f"{quant['bits']}-bit")
    if list(p.glob("*.npz")):
        return FormatInfo("mlx", p, "npz")
    if (p / hf_folder.SAFETENSORS_INDEX).is_file() or list(p.glob("*.safetensors")):
        files = hf_folder.safetensors_files(p)
        for f in files:
            read_header(f)
        return FormatInfo("safetensors", p, f"{len(files)} shards" if len(files) > 1 else "")
    if config and pytorch_files(p):  # loose checkpoints without a config are listed one by one
        return FormatInfo("pytorch", p)
    onnx = sorted(p.glob("*.onnx"))
    if onnx:
        _detect_file(onnx[0])
        return FormatInfo("onnx", p)
    ggufs = [f for f in sorted(p.iterdir()) if f.is_file() and read_magic(f, 4) == GGUF_MAGIC]
    if len(ggufs) == 1:
        return FormatInfo("gguf", ggufs[0])
    raise UnknownFormatError(f"folder holds no model weights Lampchat can read: {p}")


def validate_gguf(path: Path) -> GGUFFile:
    """Parse a GGUF file's header and tensor table; raise ModelLoadError if damaged or truncated.
    Returns the parsed file."""
    parsed = GGUFFile(path)
    if not parsed.tensors:
        raise ModelLoadError(f"GGUF file holds no tensors: {path}")
    check_metadata(parsed)
    return parsed
