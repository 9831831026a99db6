"""The help screen (F1 or ?): every key binding, the input keys and the slash commands."""

from __future__ import annotations

from collections.abc import Iterable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

INPUT_KEYS: list[tuple[str, str]] = [
    ("Enter", "send the message"),
    ("Ctrl+J / Shift+Enter", "new line in the message"),
    ("Up / Down", "earlier prompts (on the first / last line of the input)"),
    ("Esc", "stop the reply (the partial text is kept, marked stopped)"),
    ("Ctrl+P", "command palette: every action and every model"),
]


def key_label(key: str) -> str:
    """'ctrl+r' -> 'Ctrl+R', 'f1' -> 'F1'."""
    names = {"question_mark": "?", "escape": "Esc", "delete": "Del"}
    parts = []
    for part in key.split("+"):
        parts.append(names.get(part, part.upper() if len(part) <= 3 else part.capitalize()))
    return "+".join(parts)


def bindings_table(bindings: Iterable[Binding]) -> str:
    """A Markdown table of bindings (first key of each action, one row per action)."""
    rows = ["| Key | Action |", "|---|---|"]
    seen: set[str] = set()
    for binding in bindings:
        if binding.action in seen or not binding.description:
            continue
        seen.add(binding.action)
        keys = " / ".join(key_label(k.strip()) for k in binding.key.split(","))
        rows.append(f"| {keys} | {binding.description} |")
    return "\n".join(rows)


class HelpScreen(ModalScreen[None]):
    """Key bindings and commands; Esc, F1 or q closes it."""

    BINDINGS = [Binding("escape,f1,q,question_mark", "close", "Close")]

    def __init__(self, bindings: list[Binding], slash_help: list[tuple[str, str]]) -> None:
        super().__init__(id="help")
        self.bindings_list = bindings
        self.slash_help = slash_help

    def document(self) -> str:
        """The help text, as Markdown."""
        parts = [
            "# Lampchat help",
            "## Keys",
            bindings_table(self.bindings_list),
            "## In the message input",
            "| Key | Action |\n|---|---|\n"
            + "\n".join(f"| {k} | {v} |" for k, v in INPUT_KEYS),
        ]
        if self.slash_help:
            parts.append("## Slash commands (type them in the input)")
            parts.append(
                "| Command | What it does |\n|---|---|\n"
                + "\n".join(f"| `{c}` | {h} |" for c, h in self.slash_help)
            )
        parts.append("Esc, F1 or q closes this screen.")
        return "\n\n".join(parts)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body"):
            yield Markdown(self.document())

    def action_close(self) -> None:
        self.dismiss(None)
