"""One writer per conversation file across processes: an advisory lock held while a process
writes it (`--save-history PATH` in `lampchat ask` and the TUI).

The lock is a file in Lampchat's state dir named after the target's real path, so nothing is
left beside the user's file, and the kernel drops it when the process ends, however it ends.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import platformdirs

from engine.errors import LampchatError

try:
    import fcntl
except ImportError:  # Windows: no flock; writers are not serialised there
    fcntl = None  # type: ignore[assignment]

_HELD: dict[Path, int] = {}


def lock_dir() -> Path:
    """Where the lock files live."""
    return Path(platformdirs.user_state_dir("lampchat", appauthor=False)) / "locks"


def hold(path: Path) -> None:
    """Take the write lock of `path` for the rest of this process, or raise LampchatError
    naming the process that holds it. Taking it again in the same process is a no-op."""
    if fcntl is None:
        return
    target = Path(path).expanduser().resolve()
    if target in _HELD:
        return
    folder = lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(str(target).encode("utf-8", "surrogatepass")).hexdigest()[:32]
    fd = os.open(folder / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        try:
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        finally:
            os.close(fd)
        raise LampchatError(f"{target} is being written by another Lampchat (pid {owner}); "
                            "wait for it to finish or choose another file") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _HELD[target] = fd
