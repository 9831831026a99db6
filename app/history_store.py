"""Writing conversations as they happen, and the history dir of one file per conversation.

The file format is `app.history`'s. `ConversationWriter` appends each message to its
conversation's file and checkpoints the reply in flight; `HistoryStore` keeps every
conversation in one folder. No Textual imports here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from app.atomic_file import atomic_write_text, fsync_dir
from app.history import (
    HEADER_READ_LIMIT,
    ROLES,
    Conversation,
    ConversationSummary,
    HistoryError,
    Message,
    PendingReply,
    append_text,
    conversation_text,
    first_line,
    message_text,
    new_conversation,
    new_id,
    parse_conversation,
    parse_timestamp,
    parse_toml,
    partial_path,
    read_partial,
    read_text,
    save_conversation_file,
    write_partial,
)

log = logging.getLogger(__name__)


class ConversationWriter:
    """Appends to one conversation file: messages, and the in-flight reply's checkpoints.

    Used by HistoryStore (files in the history dir) and by `--save-history PATH`.
    """

    def __init__(self, checkpoint_interval: float = 0.5) -> None:
        self.checkpoint_interval = checkpoint_interval
        self._pending: dict[int, tuple[Conversation, PendingReply]] = {}
        self._lock = threading.RLock()
        """Guards the conversations' state; held briefly, never across a write."""
        self._io = threading.RLock()
        """Serialises a checkpoint's write with finishing its reply (taken before `_lock`)."""

    def write_all(self, conv: Conversation, path: Path) -> None:
        """Write `conv` (header and messages) to `path` atomically and make it its file."""
        if not conv.title:
            conv.title = conv.auto_title()
        save_conversation_file(conv, path)
        conv.path = path
        fsync_dir(path.parent)

    def append(self, conv: Conversation, message: Message) -> Message:
        """Add `message` to `conv` and to its file (one `[[messages]]` table, fsynced)."""
        with self._lock:
            conv.messages.append(message)
            if conv.path is not None:
                self._write_message(conv, message)
        return message

    def _write_message(self, conv: Conversation, message: Message) -> None:
        assert conv.path is not None
        try:
            if not conv.path.exists():
                if not conv.title:
                    conv.title = conv.auto_title()
                atomic_write_text(conv.path, conversation_text(conv), mode=0o644)
                fsync_dir(conv.path.parent)
            elif not conv.title and message.role == "user" and conv.auto_title():
                # the file began without a user message (e.g. a system message first): now that
                # there is one, rewrite it once so that its header carries the title
                conv.title = conv.auto_title()
                atomic_write_text(conv.path, conversation_text(conv), mode=0o644)
                fsync_dir(conv.path.parent)
            else:
                append_text(conv.path, message_text(message))
        except OSError as exc:
            raise HistoryError(f"{conv.path}: cannot save the message ({exc})") from None

    # the in-flight reply

    def begin_reply(self, conv: Conversation, *, model: str | None = None,
                    backend: str | None = None,
                    alternatives: Sequence[Message] = ()) -> Message:
        """Start an assistant reply; its partial text is saved by `update_partial`.
        `alternatives`: the earlier versions of a regenerated reply, kept with it (in its
        checkpoint too, so that a crash while it streams loses none of them)."""
        with self._lock:
            message = Message("assistant", "", model=model, backend=backend, interrupted=True,
                              alternatives=list(alternatives), choice=len(alternatives))
            self._pending[id(conv)] = (conv, PendingReply(message))
            return message

    def update_partial(self, conv: Conversation, text: str, *, force: bool = False) -> None:
        """Record the reply's text so far; checkpointed to disk at most every
        `checkpoint_interval` seconds (or now, with `force`)."""
        if self.record_partial(conv, text) or force:
            self.checkpoint(conv)

    def record_partial(self, conv: Conversation, text: str) -> bool:
        """Record the reply's text so far, in memory (what a signal saves). Returns whether a
        checkpoint is due (`checkpoint_interval` since the last, or none yet)."""
        with self._lock:
            entry = self._pending.get(id(conv))
            if entry is None:
                return False
            entry[1].message.content = text
            last = entry[1].last_checkpoint
            return last is None or time.monotonic() - last >= self.checkpoint_interval

    def checkpoint(self, conv: Conversation) -> None:
        """Write the in-flight reply's recorded text to its side file now (any thread; nothing
        once the reply is finished)."""
        with self._io:
            with self._lock:
                entry = self._pending.get(id(conv))
                if entry is None or conv.path is None:
                    return
                entry[1].last_checkpoint = time.monotonic()
                snapshot = replace(entry[1].message)
            try:
                write_partial(conv.path, snapshot)
            except OSError as exc:
                log.warning("could not checkpoint the reply to %s: %s", conv.path, exc)

    def finish_reply(self, conv: Conversation, text: str | None = None, *,
                     metrics: dict[str, Any] | None = None, interrupted: bool = False,
                     model: str | None = None, backend: str | None = None) -> Message | None:
        """Append the reply (final, or cut short with `interrupted`) and drop its checkpoint.
        Returns the message, or None when no reply was in flight."""
        with self._io, self._lock:
            entry = self._pending.pop(id(conv), None)
            if entry is None:
                return None
            message = entry[1].message
            if text is not None:
                message.content = text
            message.metrics = {k: v for k, v in (metrics or {}).items() if v is not None} or None
            message.interrupted = interrupted
            message.model = model or message.model
            message.backend = backend or message.backend
            message.timestamp = time.time()
            self.append(conv, message)
            if conv.path is not None:
                with contextlib.suppress(FileNotFoundError):
                    partial_path(conv.path).unlink()
            return message

    def in_flight(self, conv: Conversation) -> Message | None:
        """The reply being streamed in `conv`, if any."""
        entry = self._pending.get(id(conv))
        return entry[1].message if entry else None

    def interrupt_all(self) -> int:
        """Save every in-flight reply, as far as it got, marked interrupted (call on SIGTERM,
        SIGHUP, quit). Returns how many were saved."""
        with self._io, self._lock:
            count = 0
            for conv, pending in list(self._pending.values()):
                self.finish_reply(conv, pending.message.content, interrupted=True)
                count += 1
            return count


# -- the history dir --------------------------------------------------------------------------


class HistoryStore(ConversationWriter):
    """Conversations saved as they happen in one folder, one `<id>.toml` file each.

    A conversation's file appears with its first message. Listing reads only file headers.
    """

    def __init__(self, directory: Path, checkpoint_interval: float = 0.5) -> None:
        super().__init__(checkpoint_interval)
        self.directory = Path(directory).expanduser()
        self._summaries: dict[str, tuple[int, int, ConversationSummary]] = {}

    def _ensure_dir(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HistoryError(f"{self.directory}: cannot create the history dir ({exc})") from None

    def create(self, title: str = "", system_prompt: str = "") -> Conversation:
        """A new conversation in this store (its file is written with the first message)."""
        conv = new_conversation(system_prompt, title)
        conv.path = self.directory / f"{conv.id}.toml"
        return conv

    def adopt(self, conv: Conversation) -> Conversation:
        """Keep saving `conv` (e.g. read with --load-history) in this store, as a new file."""
        self._ensure_dir()
        conv.id = new_id()
        conv.problems = []
        self.write_all(conv, self.directory / f"{conv.id}.toml")
        return conv

    def append(self, conv: Conversation, role: str | Message, content: str = "", *,  # type: ignore[override]
               model: str | None = None, backend: str | None = None,
               metrics: dict[str, Any] | None = None, interrupted: bool = False) -> Message:
        """Append a message (flushed and fsynced before this returns). A damaged conversation
        is first copied to a new file: the damaged one is never written."""
        message = role if isinstance(role, Message) else Message(
            role, content, model=model, backend=backend,
            metrics={k: v for k, v in (metrics or {}).items() if v is not None} or None,
            interrupted=interrupted)
        if message.role not in ROLES:
            raise HistoryError(f"unknown role {message.role!r}")
        with self._lock:
            if conv.path is not None and conv.damaged:
                self._fork(conv)
            if conv.path is not None:
                self._ensure_dir()
            return super().append(conv, message)

    def _fork(self, conv: Conversation) -> None:
        old = conv.path
        self.adopt(conv)
        log.warning("conversation %s is damaged; continuing it in %s", old, conv.path)

    def list(self) -> list[ConversationSummary]:
        """Every conversation, most recently updated first. Reads only each file's header, and
        only for files that changed (size or mtime) since the last listing."""
        out = []
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise HistoryError(f"{self.directory}: cannot list it ({exc})") from None
        cache: dict[str, tuple[int, int, ConversationSummary]] = {}
        for entry in entries:
            if not entry.name.endswith(".toml") or not entry.is_file():
                continue
            stat = entry.stat()
            known = self._summaries.get(entry.path)
            if known is not None and known[:2] == (stat.st_mtime_ns, stat.st_size):
                summary = known[2]
            else:
                summary = _summary(Path(entry.path), stat.st_mtime)
            cache[entry.path] = (stat.st_mtime_ns, stat.st_size, summary)
            out.append(summary)
        self._summaries = cache
        out.sort(key=lambda s: s.updated, reverse=True)
        return out

    def path_of(self, path_or_id: str | Path) -> Path:
        """The file of a conversation id (or a path, returned as is)."""
        text = str(path_or_id)
        if isinstance(path_or_id, Path) or "/" in text or os.sep in text or text.endswith(".toml"):
            return Path(path_or_id).expanduser()
        return self.directory / f"{text}.toml"

    def load(self, path_or_id: str | Path) -> Conversation:
        """Read a conversation. A reply left in flight by a crash comes back marked interrupted
        (and, for a healthy file, is appended to it). A damaged file is reported in
        `problems`, its readable messages kept, and the file left as it is."""
        path = self.path_of(path_or_id)
        conv = parse_conversation(read_text(path), path)
        with self._lock:
            busy = any(c.path == path for c, _ in self._pending.values())
            partial = None if busy else read_partial(path)
            if partial is not None:
                if conv.damaged:
                    conv.messages.append(partial)
                else:
                    try:
                        super().append(conv, partial)
                        partial_path(path).unlink()
                    except (OSError, HistoryError) as exc:
                        log.warning("could not recover the partial reply of %s: %s", path, exc)
        for problem in conv.problems:
            log.warning("history: %s", problem)
        return conv

    def _rewrite(self, conv: Conversation) -> None:
        if conv.path is None or not conv.path.exists():
            return
        if conv.damaged:
            self._fork(conv)
            return
        try:
            atomic_write_text(conv.path, conversation_text(conv), mode=0o644)
        except OSError as exc:
            raise HistoryError(f"{conv.path}: cannot save it ({exc})") from None

    def rename(self, conv: Conversation, title: str) -> None:
        """Change the title (the file is rewritten atomically)."""
        with self._lock:
            conv.title = title
            self._rewrite(conv)

    def set_system_prompt(self, conv: Conversation, text: str) -> None:
        """Change the conversation's system prompt (the file is rewritten atomically)."""
        with self._lock:
            conv.system_prompt = text
            self._rewrite(conv)

    def truncate(self, conv: Conversation, n_messages: int) -> None:
        """Keep the first `n_messages` messages (regenerate, edit and resend)."""
        with self._lock:
            del conv.messages[n_messages:]
            self._rewrite(conv)

    def delete(self, conv_or_id: Conversation | str | Path) -> None:
        """Delete a conversation's file (and any checkpoint of it)."""
        path = conv_or_id.path if isinstance(conv_or_id, Conversation) else self.path_of(
            conv_or_id)
        if path is None:
            return
        for target in (path, partial_path(path)):
            with contextlib.suppress(FileNotFoundError):
                target.unlink()


def _summary(path: Path, mtime: float) -> ConversationSummary:
    header, problem = _read_header(path)
    title = header.get("title") if isinstance(header.get("title"), str) else ""
    conv_id = header.get("id") if isinstance(header.get("id"), str) else path.stem
    created = parse_timestamp(header.get("created")) or mtime
    return ConversationSummary(conv_id or path.stem, title or "(untitled)", path, created, mtime,
                               problem)


def _read_header(path: Path) -> tuple[dict[str, Any], str | None]:
    """The top-level keys of a conversation file, read up to its first message."""
    data = b""
    try:
        with open(path, "rb") as handle:
            while len(data) < HEADER_READ_LIMIT:
                chunk = handle.read(8192)
                data += chunk
                cut = data.find(b"\n[[messages]]")
                if cut >= 0:
                    data = data[: cut + 1]
                    break
                if not chunk:
                    break
    except OSError as exc:
        return {}, f"cannot read it ({exc.strerror or exc})"
    text = data.decode("utf-8", errors="replace")
    quick = _quick_header(text)
    if quick is not None:
        return quick, None
    try:
        return parse_toml(text), None
    except ValueError as exc:
        return {}, f"unreadable header ({first_line(exc)})"


_HEADER_LINE = re.compile(r'([A-Za-z_]+) = ("(?:[^"\\]|\\.)*"|\d+|\d{4}-[\d:.TZ+-]+)[ \t]*')
_LISTED_KEYS = frozenset({"id", "title", "created"})


def _quick_header(text: str) -> dict[str, Any] | None:
    """The header keys a listing needs (id, title, created), read line by line without a full
    TOML parse, for headers laid out as Lampchat writes them (one-line strings, integers,
    datetimes); None when anything before those keys looks different (then tomllib reads it)."""
    out: dict[str, Any] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _HEADER_LINE.fullmatch(line)
        if match is None:
            break  # a multi-line string, a table, anything unusual: stop here
        key, raw = match.groups()
        try:
            if raw.startswith('"'):
                value: Any = json.loads(raw)  # TOML basic strings escape like JSON strings
            elif "-" in raw:
                value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            else:
                value = int(raw)
        except ValueError:
            return None
        out[key] = value
        if out.keys() >= _LISTED_KEYS:
            return out
    return None
