"""The bytes that identify model files, and reading them safely.

Kept apart from `detect` so that the format readers (`pytorch`, ...) and `detect` both use them
without importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.errors import ModelLoadError
from engine.files import is_special

GGUF_MAGIC = b"GGUF"
ZIP_MAGIC = b"PK\x03\x04"
TORCH_LEGACY_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
"""The number a legacy `torch.save` pickles first, as pickle's LONG1 payload."""
ONNX_MODEL_FIELDS = {1, 2, 3, 4, 5, 6, 7, 8, 14, 20, 25}
"""Field numbers of onnx.ModelProto."""



def check_readable(path: Path) -> None:
    """Raise ModelLoadError unless `path` exists, is readable and (for a file) not empty."""
    if not path.exists():
        raise ModelLoadError(f"model not found: {path}")
    if is_special(path):  # a FIFO would block the first read forever
        raise ModelLoadError(f"model is not a regular file or folder: {path}")
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
