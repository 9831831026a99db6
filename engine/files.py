"""Reading user-named files safely: only regular files, never blocking on a FIFO or a device,
and never more than a size a real file of that kind needs."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.errors import LampchatError


class UnreadableFile(OSError):
    """A path that is not a regular file, or a file larger than its kind allows."""


def read_regular_file(path: Path, limit: int) -> bytes:
    """The bytes of the regular file `path` (a link to one is fine). UnreadableFile for a
    FIFO, socket, device or folder (opened without blocking, so a FIFO with no writer cannot
    hang the caller) or for a file over `limit` bytes; OSError as `open` raises it."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableFile(f"{path} is not a regular file")
        if info.st_size > limit:
            raise UnreadableFile(f"{path} is {info.st_size:,} bytes, over the {limit:,} such "
                                 "a file may have")
        chunks, left = [], limit + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:  # it grew while being read
            raise UnreadableFile(f"{path} grew past {limit:,} bytes while being read")
        return data
    finally:
        os.close(fd)


def is_special(path: Path) -> bool:
    """Whether `path` exists and is neither a regular file nor a folder (a FIFO, a socket, a
    device), following links."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def parse_json(text: str | bytes) -> Any:
    """`json.loads`, where a value nested past the interpreter's recursion limit (a crafted
    100,000-deep array) is a `json.JSONDecodeError` like any other malformed JSON, not a
    RecursionError that escapes every caller's handler."""
    try:
        return json.loads(text)
    except RecursionError:
        shown = text if isinstance(text, str) else text.decode("utf-8", "replace")
        raise json.JSONDecodeError("values nested far too deeply", shown[:100], 0) from None


def os_error_reason(exc: BaseException) -> str | None:
    """What an I/O failure was ("No space left on device"), for an OSError or for the errors
    Rust writers (safetensors, tokenizers) raise with "(os error 28)" in their text; None when
    `exc` is not an I/O failure."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    found = re.search(r"\(os error (\d+)\)", str(exc))
    return os.strerror(int(found.group(1))) if found else None


@contextlib.contextmanager
def staged_folder(out: Path, mode: int) -> Iterator[Path]:
    """A temporary folder beside `out` to write a model into. When the block ends, its files
    move into `out` (made if needed) with `mode`; when it fails, nothing is left behind, and
    an I/O failure (a full disk) becomes one LampchatError naming `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    created = not out.exists()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        out.mkdir(parents=True, exist_ok=True)
        for name in os.listdir(tmp):
            os.chmod(tmp / name, mode)
            os.replace(tmp / name, out / name)
    except Exception as exc:  # OSError, or a Rust writer's error carrying an OS error
        reason = os_error_reason(exc)
        if reason is None:
            raise
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise LampchatError(f"cannot write {out}: {reason}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
