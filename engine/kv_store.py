"""Saved KV state per conversation, so that resuming a long conversation does not evaluate it
all again.

A state is what a backend's `export_state` gives after a reply: the tokens its cache holds and
an opaque payload. It is kept in memory for the last few conversations and written (in the
background, through a temporary file and a rename) to `<directory>/<conversation>.kvstate`,
keyed by the model's identity: file, size, modification time, backend and the settings that
shape the cache. A state whose identity differs, or whose file is damaged or truncated (its
sha256 is checked), is ignored with a log line and never handed to a backend. The files are
capped in total size; the least recently used go first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import struct
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAGIC = b"LCKV1\n"
MAX_HEADER = 64 << 20
"""The token list of a very long conversation fits many times over."""
IN_MEMORY = 3
"""Conversations whose latest state stays in memory too."""
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


@dataclass(frozen=True)
class KVState:
    """The tokens a cache holds, and the backend's bytes for it."""

    tokens: tuple[int, ...]
    payload: bytes


def model_identity(path: str, backend: str, **settings: Any) -> dict[str, Any]:
    """What a state is only valid for: the model file (path, size, mtime), the backend and
    the settings that change the cache (context length, KV types, ...)."""
    try:
        st = os.stat(path)
        size, mtime = st.st_size, st.st_mtime_ns
    except OSError:
        size = mtime = None
    return {"path": os.path.realpath(path), "size": size, "mtime_ns": mtime,
            "backend": backend, **{k: v for k, v in sorted(settings.items())}}


class KVStateStore:
    """States by conversation id, in memory (the last few) and on disk (capped)."""

    def __init__(self, directory: Path, cap_bytes: int) -> None:
        self.directory = Path(directory)
        self.cap_bytes = cap_bytes
        self._memory: OrderedDict[str, tuple[dict[str, Any], KVState]] = OrderedDict()
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[dict[str, Any], KVState]] = {}
        """States waiting for the writer; a newer one replaces one not yet written."""
        self._writer: threading.Thread | None = None
        self._deleted: set[str] = set()

    def _file(self, conversation: str) -> Path | None:
        return self.directory / f"{conversation}.kvstate" if _SAFE_ID.match(conversation) \
            else None

    # -- saving -----------------------------------------------------------------------------

    def save(self, conversation: str, identity: dict[str, Any], state: KVState,
             background: bool = True) -> None:
        """Keep `state` for `conversation` (replacing its earlier one) and write it to disk,
        on a thread unless `background` is False."""
        if self.cap_bytes <= 0 or self._file(conversation) is None:
            return
        with self._lock:
            if conversation in self._deleted:  # a reply that ended after its conversation
                return
            self._memory[conversation] = (identity, state)
            self._memory.move_to_end(conversation)
            while len(self._memory) > IN_MEMORY:
                self._memory.popitem(last=False)
        if not background:
            self._write(conversation, identity, state)
            return
        with self._lock:
            self._pending[conversation] = (identity, state)
            if self._writer is None:
                self._writer = threading.Thread(target=self._drain, name="lampchat-kv-write",
                                                daemon=True)
                self._writer.start()

    def _drain(self) -> None:
        """The writer thread: one state at a time, the latest of each conversation."""
        while True:
            with self._lock:
                if not self._pending:
                    self._writer = None
                    return
                conversation = next(iter(self._pending))
                identity, state = self._pending.pop(conversation)
            self._write(conversation, identity, state)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for the background writes (at exit)."""
        with self._lock:
            writer = self._writer
        if writer is not None:
            writer.join(timeout)

    def _write(self, conversation: str, identity: dict[str, Any], state: KVState) -> None:
        path = self._file(conversation)
        if path is None or len(state.payload) > self.cap_bytes:
            return
        header = json.dumps({"identity": identity, "tokens": list(state.tokens),
                             "sha256": hashlib.sha256(state.payload).hexdigest(),
                             "size": len(state.payload)}).encode()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{conversation}.", dir=self.directory)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(MAGIC + struct.pack("<Q", len(header)) + header)
                    out.write(state.payload)
                os.replace(tmp, path)  # readers see the old file or the whole new one
            except BaseException:
                with_suppressed(os.unlink, tmp)
                raise
            with self._lock:
                if conversation in self._deleted:  # deleted while this was being written
                    with_suppressed(path.unlink)
            self._evict()
        except OSError as exc:
            log.info("could not save the KV state of %s: %s", conversation, exc)

    def _evict(self) -> None:
        """Delete the least recently used state files until they fit the cap."""
        with self._lock:
            try:
                files = [(p.stat().st_mtime_ns, p.stat().st_size, p)
                         for p in self.directory.glob("*.kvstate")]
            except OSError:
                return
            total = sum(size for _, size, _ in files)
            for _, size, path in sorted(files):
                if total <= self.cap_bytes:
                    break
                with_suppressed(path.unlink)
                total -= size
                log.info("KV state %s evicted (cap %d MB)", path.name, self.cap_bytes >> 20)

    # -- loading ----------------------------------------------------------------------------

    def load(self, conversation: str, identity: dict[str, Any]) -> KVState | None:
        """The state saved for `conversation` with this `identity`, or None (logged when a
        file is there but does not fit or is damaged)."""
        with self._lock:
            held = self._memory.get(conversation)
        if held is not None and held[0] == identity:
            return held[1]
        path = self._file(conversation)
        if path is None or not path.is_file():
            return None
        try:
            with path.open("rb") as fh:
                if fh.read(len(MAGIC)) != MAGIC:
                    raise ValueError("not a KV state file")
                (n,) = struct.unpack("<Q", fh.read(8))
                if n > MAX_HEADER:
                    raise ValueError("header too large")
                header = json.loads(fh.read(n))
                if header.get("identity") != identity:
                    log.info("KV state of %s is for another model or settings; ignored",
                             conversation)
                    return None
                payload = fh.read(int(header["size"]) + 1)
            if len(payload) != int(header["size"]) or \
                    hashlib.sha256(payload).hexdigest() != header["sha256"]:
                raise ValueError("damaged or truncated")
            tokens = tuple(int(t) for t in header["tokens"])
        except (OSError, ValueError, KeyError, TypeError, struct.error, RecursionError) as exc:
            log.info("KV state %s ignored: %s", path, exc)
            return None
        with_suppressed(os.utime, path)  # recently used: evicted last
        return KVState(tokens, payload)

    def delete(self, conversation: str) -> None:
        """Forget `conversation`'s state (its conversation was deleted)."""
        with self._lock:
            self._memory.pop(conversation, None)
            self._pending.pop(conversation, None)
            self._deleted.add(conversation)
        path = self._file(conversation)
        if path is not None:
            with_suppressed(path.unlink)


def with_suppressed(call: Any, *args: Any) -> None:
    """`call(*args)`, ignoring an OSError (a file another process removed first)."""
    with contextlib.suppress(OSError):
        call(*args)
