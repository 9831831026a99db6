"""Where the TUI keeps its conversations: the crash-safe history store, or memory alone.

`ChatStore` gives the chat screen one interface over `app.history`: with `session.auto_save`
on, conversations live in the history dir (one TOML file each, appended message by message,
the reply in flight checkpointed); with it off, they live in memory for the session. Either
way the messages are `app.history.Message`s, so slash commands, export and `--save-history`
work on the same objects. `--save-history PATH` mirrors the current conversation into PATH.
No Textual imports here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from app.history import (
    Conversation,
    Message,
    load_conversation_file,
    new_conversation,
    save_conversation_file,
)
from app.history_store import ConversationWriter, HistoryStore
from engine.errors import LampchatError
from engine.types import ReplyMetrics

log = logging.getLogger(__name__)

_METRIC_FIELDS = {f.name for f in fields(ReplyMetrics)}


def metrics_to_dict(metrics: ReplyMetrics | None) -> dict[str, Any] | None:
    """What is stored with a reply."""
    return metrics.to_dict() if metrics is not None else None


def metrics_from_dict(data: dict[str, Any] | None) -> ReplyMetrics | None:
    """A stored reply's metrics (unknown keys ignored; None when nothing was stored)."""
    if not data:
        return None
    try:
        return ReplyMetrics(**{k: v for k, v in data.items() if k in _METRIC_FIELDS})
    except TypeError:
        return None


@dataclass(frozen=True)
class ChatSummary:
    """One row of the conversation list."""

    id: str
    title: str
    updated: float
    n_messages: int | None = None
    problem: str | None = None


SEARCH_MAX_BYTES = 8 << 20
"""How much of each saved conversation a search reads."""


class ChatStore:
    """The conversations of a TUI session (saved in `history` when given, else in memory).

    Every method may raise LampchatError; the screen shows it and goes on.
    """

    def __init__(self, history: HistoryStore | None = None,
                 save_history: Path | None = None) -> None:
        self.history = history
        self.writer: ConversationWriter = history if history is not None else ConversationWriter()
        self.save_history = save_history
        self._open: dict[str, Conversation] = {}
        self._updated: dict[str, float] = {}
        self.mirrored: Conversation | None = None
        """The conversation `--save-history` writes (the current one)."""

    # -- conversations --------------------------------------------------------------------

    def new(self, system_prompt: str = "") -> Conversation:
        """Start a conversation (its file appears with its first message)."""
        for cid, old in list(self._open.items()):  # an empty chat left behind: never listed
            if not old.messages:
                del self._open[cid]
                self._updated.pop(cid, None)
        conv = (self.history.create(system_prompt=system_prompt) if self.history is not None
                else new_conversation(system_prompt))
        self.keep(conv)
        return conv

    def keep(self, conv: Conversation) -> Conversation:
        """Track a conversation made elsewhere (/clear, /load, --load-history)."""
        self._open[conv.id] = conv
        self._updated[conv.id] = time.time()
        return conv

    def adopt(self, conv: Conversation) -> Conversation:
        """Continue `conv` (read from a file) here: saved as a new file in the history dir
        when auto-save is on, never written back to the file it came from."""
        if self.history is not None:
            self.history.adopt(conv)
        else:
            conv.path = None
            conv.problems = []
        return self.keep(conv)

    def list(self) -> list[ChatSummary]:
        """Every conversation, most recently updated first."""
        out: dict[str, ChatSummary] = {}
        if self.history is not None:
            for summary in self.history.list():
                out[summary.id] = ChatSummary(summary.id, summary.title, summary.updated,
                                              None, summary.problem)
        for conv in self._open.values():
            if conv.messages or conv.id not in out:
                out[conv.id] = ChatSummary(
                    conv.id, conv.title or conv.auto_title() or "New chat",
                    self._updated.get(conv.id, conv.created), len(conv.messages))
        return sorted(out.values(), key=lambda s: s.updated, reverse=True)

    def search(self, text: str) -> set[str]:
        """Ids of the conversations whose messages (or title) hold `text`, any case: open ones
        from memory, saved ones from their files (at most `SEARCH_MAX_BYTES` of each)."""
        needle = text.casefold()
        found = {cid for cid, conv in self._open.items()
                 if needle in (conv.title or "").casefold()
                 or any(needle in m.content.casefold() for m in conv.messages)}
        if self.history is not None:
            for summary in self.history.list():
                if summary.id in found or summary.id in self._open:
                    continue
                try:
                    with open(summary.path, encoding="utf-8", errors="replace") as fh:
                        if needle in fh.read(SEARCH_MAX_BYTES).casefold():
                            found.add(summary.id)
                except OSError:
                    continue
        return found

    def get(self, conversation_id: str) -> Conversation:
        """A conversation with all its messages."""
        if conversation_id in self._open:
            return self._open[conversation_id]
        if self.history is None:
            raise LampchatError(f"no conversation {conversation_id}")
        path = next((s.path for s in self.history.list() if s.id == conversation_id),
                    self.history.path_of(conversation_id))
        conv = self.history.load(path)
        if conv.problems:
            log.warning("conversation %s: %s", path, "; ".join(conv.problems))
        return self.keep(conv)

    def delete(self, conversation_id: str) -> None:
        """Forget a conversation (and delete its file)."""
        conv = self._open.pop(conversation_id, None)
        self._updated.pop(conversation_id, None)
        if self.history is not None:
            self.history.delete(conv if conv is not None and conv.path else conversation_id)

    def rename(self, conv: Conversation, title: str) -> None:
        """Change a conversation's title."""
        if self.history is not None and conv.path is not None and conv.path.exists():
            self.history.rename(conv, title)
        else:
            conv.title = title
        self._touch(conv)

    def set_system_prompt(self, conv: Conversation, text: str) -> None:
        """Change a conversation's system prompt (used from the next reply)."""
        if self.history is not None and conv.path is not None and conv.path.exists():
            self.history.set_system_prompt(conv, text)
        else:
            conv.system_prompt = text
        self._touch(conv)

    # -- messages -------------------------------------------------------------------------

    def append(self, conv: Conversation, message: Message) -> None:
        """Add a message (saved at once when auto-save is on)."""
        if not conv.title and message.role == "user":
            conv.title = conv.auto_title()
        self.writer.append(conv, message)
        self._touch(conv)

    def truncate(self, conv: Conversation, n_messages: int) -> None:
        """Keep the first `n_messages` messages (regenerate, edit and resend)."""
        if self.history is not None:
            self.history.truncate(conv, n_messages)
        else:
            del conv.messages[n_messages:]
        self._touch(conv)

    def begin_reply(self, conv: Conversation, model: str, backend: str,
                    alternatives: Sequence[Message] = ()) -> None:
        """A reply starts streaming (its partial text is checkpointed); `alternatives`: the
        earlier versions of a regenerated reply."""
        self.writer.begin_reply(conv, model=model or None, backend=backend or None,
                                alternatives=alternatives)

    def record_partial(self, conv: Conversation, text: str) -> bool:
        """The streaming reply's text so far (in memory); True when a checkpoint is due."""
        return self.writer.record_partial(conv, text)

    def checkpoint(self, conv: Conversation) -> None:
        """Write the streaming reply's recorded text to disk (called from a thread)."""
        self.writer.checkpoint(conv)

    def finish_reply(self, conv: Conversation, text: str, metrics: ReplyMetrics | None,
                     interrupted: bool) -> Message | None:
        """The reply ended (finished, stopped or failed): append it."""
        message = self.writer.finish_reply(
            conv, text, metrics=metrics_to_dict(metrics), interrupted=interrupted,
            model=metrics.model if metrics else None, backend=metrics.backend if metrics else None,
        )
        self._touch(conv)
        return message

    def interrupt_all(self) -> int:
        """Save every reply in flight as far as it got, marked interrupted (quit, signals)."""
        return self.writer.interrupt_all()

    # -- --save-history -------------------------------------------------------------------

    def mirror(self, conv: Conversation | None) -> None:
        """Make `conv` the conversation `--save-history` writes, and write it now."""
        self.mirrored = conv
        self.write_mirror()

    def check_save_target(self) -> None:
        """Refuse, before anything starts, a --save-history file that is not ours to replace."""
        path = self.save_history
        if path is None or not path.exists() or path.stat().st_size == 0:
            return
        try:
            existing = load_conversation_file(path)
        except LampchatError as exc:
            raise LampchatError(f"--save-history: {exc}; not overwritten") from None
        if existing.problems:
            raise LampchatError(f"--save-history: {path} is damaged ({existing.problems[0]}); "
                                "not overwritten, choose another path")

    def write_mirror(self) -> None:
        """Write the mirrored conversation to the --save-history file (if any)."""
        if self.save_history is None or self.mirrored is None:
            return
        save_conversation_file(self.mirrored, self.save_history)

    def _touch(self, conv: Conversation) -> None:
        self._updated[conv.id] = time.time()
        self._open.setdefault(conv.id, conv)
        if conv is self.mirrored:
            try:
                self.write_mirror()
            except LampchatError as exc:
                log.warning("--save-history: %s", exc)
