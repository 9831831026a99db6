"""Detect a model's format from its content (magic bytes and structure), never its extension."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ModelLoadError, UnknownFormatError

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class FormatInfo:
    """A detected format: its name ("gguf", "safetensors", ...) and the path to load."""

    format: str
    path: Path


def check_readable(path: Path) -> None:
    """Raise ModelLoadError unless `path` exists, is readable and (for a file) not empty."""
    if not path.exists():
        raise ModelLoadError(f"model not found: {path}")
    if not os.access(path, os.R_OK):
        raise ModelLoadError(f"model is not readable (permission denied): {path}")
    if path.is_file() and path.stat().st_size == 0:
        raise ModelLoadError(f"model file is empty: {path}")


def read_magic(path: Path, n: int = 16) -> bytes:
    """The first `n` bytes of a file."""
    try:
        with path.open("rb") as fh:
            return fh.read(n)
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {path}: {exc.strerror or exc}") from exc


def detect_format(path: str | os.PathLike[str]) -> FormatInfo:
    """Return the format of the model at `path`, or raise a one-line error."""
    p = Path(path).expanduser()
    check_readable(p)
    if p.is_file() and read_magic(p, 4) == GGUF_MAGIC:
        return FormatInfo("gguf", p)
    raise UnknownFormatError(f"unknown model format (not GGUF or another known format): {p}")


def validate_gguf(path: Path) -> None:
    """Parse a GGUF file's header and tensor table; raise ModelLoadError if damaged or truncated."""
    import gguf
    import numpy as np

    size = path.stat().st_size
    try:
        reader = gguf.GGUFReader(path)
        end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    except (ValueError, IndexError, KeyError, OSError, np.exceptions.DTypePromotionError) as exc:
        raise ModelLoadError(f"GGUF file is damaged or truncated: {path} ({exc})") from exc
    except Exception as exc:  # gguf raises bare exceptions on some malformed headers
        raise ModelLoadError(f"GGUF file is damaged or truncated: {path} ({exc})") from exc
    if not reader.tensors:
        raise ModelLoadError(f"GGUF file holds no tensors: {path}")
    if end > size:
        raise ModelLoadError(f"GGUF file is truncated ({size} of {end} bytes): {path}")
