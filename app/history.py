"""Crash-safe conversation history: one TOML file per conversation, appended message by message.

File format (documented with examples in docs/history.md)::

    format = "lampchat-conversation"
    version = 1
    id = "20250101-120000-3fa2"
    title = "Name a colour"
    created = 2025-01-01T12:00:00.000Z
    system_prompt = ""

    [[messages]]
    role = "user"
    content = "Name a colour"
    timestamp = 2025-01-01T12:00:00.000Z

    [[messages]]
    role = "assistant"
    content = "Blue."
    timestamp = 2025-01-01T12:00:01.250Z
    model = "SmolLM2-135M-Instruct"
    backend = "llama.cpp"
    interrupted = false

    [messages.metrics]
    ttft_ms = 35.2
    ...

Writes: the file is created atomically (temp file, fsync, rename) with its header and first
message; each later message is appended as one `[[messages]]` table, then flushed and
fsynced. While a reply streams, its partial text is checkpointed to a side file
(`NAME.toml.partial`, atomically, at most every `checkpoint_interval` seconds); finishing
the reply appends it to the main file and removes the side file. A reply cut short by
Ctrl+C, SIGTERM or SIGHUP is appended with `interrupted = true`; after a hard crash, the
next load recovers the side file as an interrupted message.

Reads never modify a damaged file: its readable messages are returned with `problems`, and
continuing such a conversation writes a new file. Writing as a conversation goes on
(`ConversationWriter`) and the history dir (`HistoryStore`) are in `app.history_store`. No
Textual imports here.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import secrets
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import tomlkit

from app.atomic_file import atomic_write_text
from engine.errors import LampchatError
from engine.files import read_regular_file
from engine.types import ChatMessage

try:  # the stdlib parser is much faster for reading; tomlkit is used for every write
    import tomllib as _fast_toml
except ModuleNotFoundError:  # Python 3.10
    _fast_toml = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

FORMAT = "lampchat-conversation"
VERSION = 1
ROLES = ("system", "user", "assistant")
PARTIAL_SUFFIX = ".partial"
MESSAGE_HEADER = "[[messages]]"
HEADER_READ_LIMIT = 256 * 1024
_HAS_FORMAT = re.compile(rf'^format\s*=\s*"{FORMAT}"', re.M)


class HistoryError(LampchatError):
    """A conversation file could not be read or written."""


@dataclass
class Message:
    """One message of a saved conversation. `timestamp` is seconds since the epoch."""

    role: str
    content: str
    timestamp: float = field(default_factory=time.time)
    model: str | None = None
    backend: str | None = None
    metrics: dict[str, Any] | None = None
    interrupted: bool = False
    alternatives: list[Message] = field(default_factory=list)
    """The reply's other versions (Ctrl+R keeps the earlier ones), oldest first, without it."""
    choice: int = 0
    """This version's place among all of them: `versions()` puts it at this index."""

    def chat_message(self) -> ChatMessage:
        """What a backend sees."""
        return ChatMessage(self.role, self.content)  # type: ignore[arg-type]

    def place(self, choice: int | None = None) -> int:
        """`choice` (default: this version's), as a place among the versions: 0 to the
        number of alternatives."""
        return min(max(self.choice if choice is None else choice, 0), len(self.alternatives))

    def versions(self) -> list[Message]:
        """Every version of this reply, oldest first, this one (without alternatives)
        included."""
        this = replace(self, alternatives=[], choice=0)
        choice = self.place()
        return [*self.alternatives[:choice], this, *self.alternatives[choice:]]

    def choose(self, index: int) -> None:
        """Make version `index` (of `versions()`) the one shown and continued from."""
        versions = self.versions()
        chosen = versions.pop(index)
        for name in ("content", "timestamp", "model", "backend", "metrics", "interrupted"):
            setattr(self, name, getattr(chosen, name))
        self.alternatives, self.choice = versions, index


@dataclass
class Conversation:
    """A conversation: header fields and messages. `path` is None until it is first written."""

    id: str
    title: str = ""
    path: Path | None = None
    system_prompt: str = ""
    messages: list[Message] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    problems: list[str] = field(default_factory=list)
    """What could not be read from the file (one line each); empty for a healthy file."""

    @property
    def damaged(self) -> bool:
        """True when the file had unreadable parts: it is never written again."""
        return bool(self.problems)

    def chat_messages(self) -> list[ChatMessage]:
        """What the model sees: the system prompt, then every message with text (interrupted
        replies included: the user saw them)."""
        out = [ChatMessage("system", self.system_prompt)] if self.system_prompt else []
        out.extend(m.chat_message() for m in self.messages if m.content)
        return out

    def auto_title(self) -> str:
        """A title made from the first user message."""
        first = next((m.content for m in self.messages if m.role == "user"), "")
        line = " ".join(first.split())
        return line[:60] + "…" if len(line) > 60 else line


@dataclass(frozen=True)
class ConversationSummary:
    """What a conversation list shows, read from the file's header only."""

    id: str
    title: str
    path: Path
    created: float
    updated: float
    problem: str | None = None


def message_state(message: Message) -> str:
    """How a stored message ended: done, stopped (by the user), error or interrupted (by a
    signal, a crash or quitting): what the TUI, the export and the history file agree on."""
    metrics = message.metrics or {}
    if metrics.get("error") or metrics.get("finish_reason") == "error":
        return "error"
    if metrics.get("finish_reason") == "cancelled":
        return "stopped"
    if message.interrupted:
        return "interrupted"
    return "done"


def new_id() -> str:
    """A fresh conversation id: creation time plus a random suffix (sorts by time)."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def new_conversation(system_prompt: str = "", title: str = "") -> Conversation:
    """A conversation in memory, not yet tied to a file."""
    return Conversation(id=new_id(), title=title, system_prompt=system_prompt)


# -- TOML text ----------------------------------------------------------------------------------


def _when(timestamp: float) -> datetime:
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _text_item(text: str) -> Any:
    """A multi-line string when it reads better and is safe to split on, else one line."""
    lines = text.split("\n")
    if len(lines) > 1 and not any(line.lstrip().startswith("[") for line in lines) and all(
        ch in "\n\t" or ch >= " " for ch in text
    ) and "\r" not in text:
        return tomlkit.string(text, multiline=True)
    return tomlkit.string(text)


def _header_text(conv: Conversation) -> str:
    doc = tomlkit.document()
    doc.add(tomlkit.comment("Lampchat conversation: one [[messages]] table per message."))
    doc["format"] = FORMAT
    doc["version"] = VERSION
    doc["id"] = conv.id
    doc["title"] = _text_item(conv.title)
    doc["created"] = _when(conv.created)
    doc["system_prompt"] = _text_item(conv.system_prompt)
    return tomlkit.dumps(doc)


def message_text(message: Message) -> str:
    """`message` as one `[[messages]]` table, as appended to the file."""
    table = _message_table(message)
    if message.alternatives:
        table["choice"] = message.place()
        versions = tomlkit.aot()
        for other in message.alternatives:
            versions.append(_message_table(other))
        table["alternatives"] = versions
    aot = tomlkit.aot()
    aot.append(table)
    doc = tomlkit.document()
    doc["messages"] = aot
    return "\n" + tomlkit.dumps(doc)


def _message_table(message: Message) -> Any:
    table = tomlkit.table()
    table["role"] = message.role
    table["content"] = _text_item(message.content)
    table["timestamp"] = _when(message.timestamp)
    if message.model:
        table["model"] = message.model
    if message.backend:
        table["backend"] = message.backend
    if message.role == "assistant" or message.interrupted:
        table["interrupted"] = message.interrupted
    if message.metrics:
        metrics = tomlkit.table()
        for key, value in message.metrics.items():
            if key in ("model", "backend") and value == getattr(message, key):
                continue  # already on the message
            if isinstance(value, float):
                value = round(value, 3)
            if isinstance(value, (bool, int, float, str)):
                metrics[key] = value
        table["metrics"] = metrics
    return table


def conversation_text(conv: Conversation) -> str:
    """The whole file for `conv`."""
    return _header_text(conv) + "".join(message_text(m) for m in conv.messages)


def parse_toml(text: str) -> dict[str, Any]:
    """Parse TOML; ValueError for anything that is not TOML a conversation can be (values
    nested past the interpreter's recursion limit included)."""
    try:
        if _fast_toml is not None:
            return _fast_toml.loads(text)
        return tomlkit.parse(text).unwrap()
    except RecursionError:
        raise ValueError("values nested far too deeply") from None


def parse_timestamp(value: Any) -> float | None:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            return None
        # out of range (1e300, nan, inf) would load and then fail to save: not a time
        return number if math.isfinite(number) and 0 <= number < MAX_TIMESTAMP else None
    return None


MAX_TIMESTAMP = 253_402_300_799.0
"""9999-12-31T23:59:59Z: the last moment a TOML datetime can hold."""


def _message_from(record: Any, nested: bool = False) -> Message:
    """A Message from a parsed `[[messages]]` table; ValueError saying what is wrong.
    (`nested`: an alternative version, whose own alternatives are not read.)"""
    if not isinstance(record, dict):
        raise ValueError("not a table")
    role, content = record.get("role"), record.get("content")
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if not isinstance(content, str):
        raise ValueError("content is missing or not a string")
    metrics = record.get("metrics")
    model, backend = record.get("model"), record.get("backend")
    message = Message(
        role=role,
        content=content,
        timestamp=parse_timestamp(record.get("timestamp")) or 0.0,
        model=model if isinstance(model, str) else None,
        backend=backend if isinstance(backend, str) else None,
        metrics=dict(metrics) if isinstance(metrics, dict) else None,
        interrupted=record.get("interrupted") is True,
    )
    versions = record.get("alternatives")
    if not nested and role == "assistant" and isinstance(versions, list):
        for n, other in enumerate(versions, 1):
            try:
                message.alternatives.append(_message_from(other, nested=True))
            except ValueError as exc:  # the reply itself is fine: only that version is lost
                log.warning("ignoring alternative %d of a reply: %s", n, exc)
        choice = record.get("choice")
        whole = isinstance(choice, int) and not isinstance(choice, bool)
        message.choice = message.place(choice if whole else len(message.alternatives))
    return message


def _apply_header(conv: Conversation, data: dict[str, Any]) -> None:
    if isinstance(data.get("id"), str) and data["id"]:
        conv.id = data["id"]
    if isinstance(data.get("title"), str):
        conv.title = data["title"]
    if isinstance(data.get("system_prompt"), str):
        conv.system_prompt = data["system_prompt"]
    created = parse_timestamp(data.get("created"))
    if created is not None:
        conv.created = created


def parse_conversation(text: str, path: Path) -> Conversation:
    """Read a conversation file's text, keeping every readable message; problems are listed
    in `Conversation.problems` (each naming the file and line)."""
    conv = Conversation(id=path.stem, path=path)
    if text and not text.endswith("\n"):  # cut short: the last line may hold half a value
        conv.problems.append(f"{path}:{text.count(chr(10)) + 1}: the file ends mid-line (cut "
                             f"short?); that line is ignored")
        text = text[: text.rfind("\n") + 1]
    try:
        data = parse_toml(text)
    except ValueError:
        _parse_damaged(conv, text, path)
        return conv
    _check_format(conv, data, path)
    _apply_header(conv, data)
    records = data.get("messages", [])
    if not isinstance(records, list):
        conv.problems.append(f"{path}: 'messages' is not an array of tables")
        records = []
    for number, record in enumerate(records, 1):
        try:
            conv.messages.append(_message_from(record))
        except ValueError as exc:
            conv.problems.append(f"{path}: message {number}: {exc}; skipped")
    return conv


def _check_format(conv: Conversation, data: dict[str, Any], path: Path) -> None:
    if "format" not in data:
        conv.problems.append(f"{path}: no 'format = \"{FORMAT}\"' line")
    elif data["format"] != FORMAT:
        conv.problems.append(f"{path}: format is {data.get('format')!r}, not {FORMAT!r}")
    version = data.get("version", VERSION)
    if isinstance(version, int) and version > VERSION:
        conv.problems.append(f"{path}: written by a newer Lampchat (version {version})")


def _parse_damaged(conv: Conversation, text: str, path: Path) -> None:
    """Split at each `[[messages]]` line and read every piece on its own."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == MESSAGE_HEADER]
    bounds = [0, *starts, len(lines)]
    header = "".join(lines[: bounds[1]])
    try:
        data = parse_toml(header)
        _check_format(conv, data, path)
        _apply_header(conv, data)
    except ValueError as exc:
        conv.problems.append(f"{path}:1: the header is unreadable ({first_line(exc)})")
    for number, (start, end) in enumerate(zip(bounds[1:-1], bounds[2:], strict=True), 1):
        chunk = "".join(lines[start:end])
        try:
            records = parse_toml(chunk).get("messages") or [None]
            conv.messages.append(_message_from(records[0]))
        except ValueError as exc:
            conv.problems.append(
                f"{path}:{start + 1}: message {number} is unreadable ({first_line(exc)}); skipped"
            )
    if not starts and not conv.problems:
        conv.problems.append(f"{path}: not valid TOML")


def first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160]


MAX_HISTORY_FILE = 256 << 20
"""The largest conversation file read (a long conversation is a few MB)."""


def read_text(path: Path) -> str:
    try:
        raw = read_regular_file(path, MAX_HISTORY_FILE)
    except FileNotFoundError:
        raise HistoryError(f"{path}: no such conversation file") from None
    except OSError as exc:
        raise HistoryError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    return raw.decode("utf-8", errors="replace")


def load_conversation_file(path: str | Path) -> Conversation:
    """Read a conversation file (the `--load-history` format). Damaged parts are skipped and
    listed in `problems`; HistoryError when nothing at all is readable. Never writes."""
    path = Path(path).expanduser()
    text = read_text(path)
    conv = parse_conversation(text, path)
    if conv.problems and not conv.messages and not _looks_like_history(text):
        raise HistoryError(f"{path}: not a Lampchat conversation file ({conv.problems[0]})")
    partial = read_partial(path)
    if partial is not None:
        conv.messages.append(partial)
    return conv


def _looks_like_history(text: str) -> bool:
    return FORMAT in text[:4096] or MESSAGE_HEADER in text


def save_conversation_file(conv: Conversation, path: str | Path) -> None:
    """Write the whole conversation to `path` atomically (the `--save-history` format).
    Refuses (HistoryError) to replace a file that is damaged or not a conversation file."""
    path = Path(path).expanduser()
    _refuse_foreign(path, conv)
    try:
        atomic_write_text(path, conversation_text(conv), mode=0o644)
    except OSError as exc:
        raise HistoryError(f"{path}: cannot write it ({exc.strerror or exc})") from None
    with contextlib.suppress(FileNotFoundError):
        partial_path(path).unlink()  # its content is part of what was just written


def _refuse_foreign(path: Path, conv: Conversation) -> None:
    """Never replace a file that is not a healthy conversation file, unless it is the file
    `conv` came from and `conv` read it cleanly."""
    if not path.exists() or path.stat().st_size == 0:
        return
    text = read_text(path)
    existing = parse_conversation(text, path)
    if not existing.problems and not _HAS_FORMAT.search(text[:HEADER_READ_LIMIT]):
        existing.problems.append(f"{path}: it has no 'format = \"{FORMAT}\"' line")
    if existing.problems:
        raise HistoryError(f"{path}: exists and is not a readable conversation file "
                           f"({existing.problems[0]}); not overwritten, choose another path")


# -- the in-flight reply side file ---------------------------------------------------------------


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + PARTIAL_SUFFIX)


def write_partial(path: Path, message: Message) -> None:
    text = f"pid = {os.getpid()}\n" + message_text(message)
    atomic_write_text(partial_path(path), text, mode=0o644)


def read_partial(path: Path, *, include_live: bool = False) -> Message | None:
    """The in-flight reply checkpointed for `path`, if a dead process left one."""
    side = partial_path(path)
    try:
        data = parse_toml(side.read_text(encoding="utf-8", errors="replace"))
        message = _message_from((data.get("messages") or [None])[0])
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable partial reply %s: %s", side, exc)
        return None
    pid = data.get("pid")
    if not include_live and isinstance(pid, int) and pid != os.getpid() and _alive(pid):
        return None  # another Lampchat is still writing this reply
    message.interrupted = True
    return message


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def append_text(path: Path, text: str) -> None:
    """Append `text` whole or not at all: a write that fails part-way (a full disk) is cut
    back to where the file ended, so that it still parses and can be continued."""
    data = text.encode("utf-8")
    with open(path, "ab") as handle:
        start = handle.seek(0, os.SEEK_END)
        try:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        except OSError:
            with contextlib.suppress(OSError):
                handle.truncate(start)
                os.fsync(handle.fileno())
            raise


@dataclass
class PendingReply:
    """A reply being streamed: its message and when it was last checkpointed."""

    message: Message
    last_checkpoint: float | None = None
    """`time.monotonic()` of the last checkpoint; None before the first (which is written at
    once: the monotonic clock may start near zero, e.g. at boot)."""
