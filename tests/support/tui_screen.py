"""Reading the Lampchat chat screen from a terminal capture (for the tmux end-to-end tests)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FINAL_META = re.compile(
    r"TTFT (?P<ttft>[\d.,]+ m?s) · (?P<tps>[\d.,]+) tok/s · ~?(?P<tokens>[\d,]+) tokens"
)
"""The metrics line under a finished reply (see widgets.messages.reply_meta)."""
STREAMING_META = re.compile(r"streaming · (?P<tokens>\d+) tokens")
"""The live line under a streaming reply."""

_BARS = "█▌▐▎▍▏│┃ "
_TOAST_FROM = 60
"""Notifications (toasts, drawn from a "▌") sit at the right; text right of one is dropped."""
_WORD = re.compile(r"[A-Za-z0-9']+")


@dataclass
class Reply:
    """An assistant message as seen on the screen."""

    body: str
    meta: str


def without_side_panel(screen: str) -> str:
    """`screen` with the metrics panel (a column right of a "│" border) cut off."""
    lines = screen.splitlines()
    columns: dict[int, int] = {}
    for line in lines:
        index = line.find("│", 40)
        if index >= 0:
            columns[index] = columns.get(index, 0) + 1
    if not columns:
        return screen
    column, count = max(columns.items(), key=lambda item: item[1])
    if count < len(lines) // 2:
        return screen
    return "\n".join(line[:column] if line[column:column + 1] == "│" else line
                     for line in lines)


def _clean(line: str) -> str:
    cut = line.find("▌", _TOAST_FROM)
    if cut >= 0:
        line = line[:cut]
    return line.strip().lstrip(_BARS).rstrip()


def _is_message_line(line: str) -> bool:
    stripped = line.lstrip()
    return bool(stripped) and stripped[0] in "█▌▐▎▍▏┃"


def assistant_replies(screen: str) -> list[Reply]:
    """Every assistant message on the screen, top to bottom: its text and its last line."""
    replies: list[Reply] = []
    block: list[str] | None = None

    def close() -> None:
        if block is not None:
            lines = [line for line in block if line]
            meta = lines[-1] if lines else ""
            replies.append(Reply("\n".join(lines[:-1]), meta))

    for raw in without_side_panel(screen).splitlines():
        text = _clean(raw)
        if text in ("Assistant", "You") and _is_message_line(raw):
            close()
            block = [] if text == "Assistant" else None
        elif block is not None:
            if not _is_message_line(raw) and text:
                close()
                block = None
            else:
                block.append(text)
    close()
    return replies


def input_box_text(screen: str) -> str:
    """The text inside the prompt input's box (the last rounded box on the screen)."""
    lines = screen.splitlines()
    top = max((i for i, line in enumerate(lines) if line.lstrip().startswith("╭")), default=-1)
    if top < 0:
        return ""
    inside: list[str] = []
    for line in lines[top + 1:]:
        if line.lstrip().startswith("╰"):
            break
        inside.append(_clean(line).strip("│ ").strip())
    return "\n".join(inside)


def words(text: str) -> list[str]:
    """The words of `text` (Markdown marks and punctuation dropped), for comparing renderings."""
    return _WORD.findall(text)


def write_config(home: Path, *, max_tokens: int, extra: str = "") -> Path:
    """A config.toml in the isolated config dir: greedy, seeded, `max_tokens`, no side panel."""
    path = home / ".config" / "lampchat" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "[generation]\n"
        f"max_tokens = {max_tokens}\n"
        "temperature = 0.0\n"
        "seed = 1\n"
        "\n[ui]\n"
        "show_metrics = false\n"
        f"{extra}"
    )
    return path
