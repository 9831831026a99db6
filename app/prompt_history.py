"""Prompt recall (Up/Down in the chat input), kept in `session.history_file`.

One JSON string per line (so multi-line prompts fit on one line), oldest first, capped at
`max_history` entries; a repeat of the previous prompt is not stored twice. Unreadable lines
are skipped, never fatal. No Textual imports here.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from app.atomic_file import atomic_write_text
from engine.errors import LampchatError
from engine.files import parse_json

if TYPE_CHECKING:
    from app.config import Config

log = logging.getLogger(__name__)


class PromptHistory:
    """The recall list, read once and appended to as prompts are sent."""

    def __init__(self, path: Path, max_entries: int = 1000) -> None:
        self.path = Path(path).expanduser()
        self.max_entries = max(0, max_entries)
        self._items: list[str] | None = None
        self._lines_on_disk = 0

    def items(self) -> list[str]:
        """Every stored prompt, oldest first."""
        if self._items is None:
            self._items = self._read()
        return list(self._items)

    def _read(self) -> list[str]:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("cannot read the prompt history %s: %s", self.path, exc)
            return []
        items: list[str] = []
        lines = text.splitlines()
        self._lines_on_disk = len(lines)
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                item = parse_json(line)
            except ValueError:
                log.warning("%s:%d: unreadable prompt history line skipped", self.path, number)
                continue
            if isinstance(item, str) and item:
                items.append(item)
        return items[-self.max_entries:] if self.max_entries else []

    def add(self, text: str) -> None:
        """Remember a prompt (appended to the file; the file is compacted when it grows past
        twice the cap). LampchatError (one line) when the file cannot be written; the prompt
        is still recalled for this session."""
        if not text.strip() or self.max_entries == 0:
            return
        items = self._items if self._items is not None else self.items()
        assert self._items is not None
        if items and items[-1] == text:
            return
        self._items.append(text)
        del self._items[: -self.max_entries]
        try:
            if self._lines_on_disk + 1 > 2 * self.max_entries:
                self._compact()
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(text, ensure_ascii=False) + "\n")
                    handle.flush()
                    os.fsync(handle.fileno())
                self._lines_on_disk += 1
        except OSError as exc:
            log.warning("cannot save the prompt history %s: %s", self.path, exc)
            raise LampchatError(f"cannot save the prompt history {self.path}: "
                                f"{exc.strerror or exc}") from None

    def _compact(self) -> None:
        """Rewrite the file with its newest `max_entries` prompts plus the new one. Read from
        disk, not memory, so prompts appended by another Lampchat meanwhile are kept."""
        assert self._items is not None
        on_disk = self._read()
        if not on_disk or on_disk[-1] != self._items[-1]:
            on_disk.append(self._items[-1])
        keep = on_disk[-self.max_entries:]
        atomic_write_text(self.path, "".join(json.dumps(item, ensure_ascii=False) + "\n"
                                             for item in keep))
        self._lines_on_disk = len(keep)


def open_prompt_history(config: Config) -> PromptHistory:
    """The prompt history named by a config (`session.history_file`, `session.max_history`)."""
    return PromptHistory(config.prompt_history_path(), config.get("session.max_history"))
