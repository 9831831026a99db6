"""Export a conversation to Markdown (`/export PATH` and the TUI's export action)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from app.atomic_file import atomic_write_text
from app.history import Conversation, Message, message_state
from engine.errors import LampchatError

_ROLE_TITLES = {"user": "User", "assistant": "Assistant", "system": "System"}


def conversation_markdown(conv: Conversation) -> str:
    """The conversation as a Markdown document: a title, the system prompt, then one
    section per message with its time, model and (for replies) metrics."""
    title = conv.title or conv.auto_title() or "Conversation"
    out = [f"# {_one_line(title)}", "",
           f"*Exported from Lampchat on {_stamp(time.time())}; conversation `{conv.id}`, "
           f"started {_stamp(conv.created)}.*", ""]
    if conv.system_prompt:
        out += ["**System prompt:**", "", _quote(conv.system_prompt), ""]
    for message in conv.messages:
        out += _message_section(message)
    return "\n".join(out).rstrip() + "\n"


def _message_section(message: Message) -> list[str]:
    heading = _ROLE_TITLES.get(message.role, message.role.title())
    details = [_stamp(message.timestamp)] if message.timestamp else []
    if message.model:
        details.append(f"{message.model}" + (f" via {message.backend}" if message.backend else ""))
    lines = [f"## {heading}" + (f" · {' · '.join(details)}" if details else ""), ""]
    lines.append(message.content if message.content.strip() else "*(empty)*")
    lines.append("")
    notes = []
    state = message_state(message)
    if message.role == "assistant" and state != "done":
        notes.append(state)
    summary = _metrics_line(message.metrics)
    if summary:
        notes.append(summary)
    if notes:
        lines += [f"*{' · '.join(notes)}*", ""]
    return lines


def _metrics_line(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return ""
    parts = []
    if metrics.get("completion_tokens"):
        parts.append(f"{metrics['completion_tokens']} tokens")
    if metrics.get("decode_tps"):
        parts.append(f"{metrics['decode_tps']:.1f} tokens/s")
    if metrics.get("ttft_ms"):
        parts.append(f"first token {metrics['ttft_ms']:.0f} ms")
    if metrics.get("prompt_tokens"):
        parts.append(f"prompt {metrics['prompt_tokens']} tokens")
    if metrics.get("finish_reason") not in (None, "stop"):
        parts.append(f"finished: {metrics['finish_reason']}")
    return ", ".join(parts)


def _stamp(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines())


_EXPORT_MARK = "*Exported from Lampchat on "


def export_markdown(conv: Conversation, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write `conv` as Markdown to `path` (atomically); returns the path written.

    An existing file is replaced only when it is an earlier Lampchat export (or with
    `overwrite`, after the user confirmed); anything else raises LampchatError, file untouched.
    """
    target = Path(path).expanduser()
    if target.is_dir():
        raise LampchatError(f"{target} is a folder; give a file name, e.g. {target}/chat.md")
    if not overwrite and target.exists() and not _is_export(target):
        raise LampchatError(f"{target} exists and is not a Lampchat export; not overwritten, "
                            f"choose another path")
    try:
        atomic_write_text(target, conversation_markdown(conv), mode=0o644)
    except OSError as exc:
        raise LampchatError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target


def _is_export(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return not head.strip() or _EXPORT_MARK in head
