"""Reading user-named files safely: only regular files, never blocking on a FIFO or a device,
and never more than a size a real file of that kind needs."""

from __future__ import annotations

import os
import stat
from pathlib import Path


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
