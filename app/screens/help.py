"""The help screen (F1 or ?): every key binding, the input keys and the slash commands."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

INPUT_KEYS: list[tuple[str, str]] = [
    ("Enter", "send the message"),
    ("Ctrl+J / Shift+Enter", "new line in the message"),
    ("Up / Down", "earlier prompts (on the first / last line of the input)"),
    ("Esc", "stop the reply (the partial text is kept, marked stopped); with no reply, "
            "clear the input (Ctrl+Z brings it back)"),
    ("Enter while a reply streams", "queue the message: it is sent when the reply ends"),
    ("Shift+Tab", "to the messages: the last one takes the focus"),
    ("Ctrl+P", "command palette: every action and every model"),
]

MESSAGE_KEYS: list[tuple[str, str]] = [
    ("Up / Down", "the message before / after"),
    ("c / t", "copy the message / its code blocks"),
    ("e", "edit one of your messages and send it again (the conversation as it was is kept "
          "in the list)"),
    ("d", "delete the message"),
    ("< / >", "the last reply's earlier / later version (after Ctrl+R); the "
              "conversation continues from the one shown"),
    ("Left / Right", "scroll a reply's code sideways (a line cut at the edge ends in →)"),
    ("Esc", "back to the input"),
]


KEY_NAMES = {"question_mark": "?", "escape": "Esc", "delete": "Del", "up": "Up",
             "down": "Down", "left": "Left", "right": "Right", "enter": "Enter", "tab": "Tab"}


def key_label(key: str) -> str:
    """'ctrl+r' -> 'Ctrl+R', 'f1' -> 'F1', 'ctrl+up' -> 'Ctrl+Up'."""
    parts = []
    for part in key.split("+"):
        if part in KEY_NAMES:
            parts.append(KEY_NAMES[part])
        elif len(part) == 1 or (part[0] == "f" and part[1:].isdigit()):
            parts.append(part.upper())
        else:
            parts.append(part.capitalize())
    return "+".join(parts)


def binding_rows(bindings: Iterable[Binding]) -> list[tuple[str, str]]:
    """(keys, description) per action, first binding of each action."""
    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    for binding in bindings:
        if binding.action in seen or not binding.description:
            continue
        seen.add(binding.action)
        keys = " / ".join(key_label(k.strip()) for k in binding.key.split(","))
        rows.append((keys, binding.tooltip or binding.description))
    return rows


def section(title: str, rows: list[tuple[str, str]]) -> Text:
    """A heading, then aligned 'key  what' rows."""
    width = max((len(k) for k, _ in rows), default=0) + 3
    text = Text()
    text.append(title + "\n", style="bold underline")
    for key, what in rows:
        text.append(f"  {key.ljust(width)}", style="bold")
        text.append(what + "\n")
    text.rstrip()
    return text


def section_table(title: str, rows: list[tuple[str, str]]) -> Group:
    """`section` laid out as a table, so that a description that wraps goes on under itself
    rather than at the left edge."""
    grid = Table.grid(padding=(0, 3, 0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(ratio=1)
    for key, what in rows:
        grid.add_row(key, what)
    return Group(Text(title, style="bold underline"), grid)


class HelpScreen(ModalScreen[None]):
    """Key bindings and commands; Esc, F1 or q closes it."""

    BINDINGS = [Binding("escape,f1,q,question_mark", "close", "Close")]

    def __init__(self, bindings: list[Binding], slash_help: list[tuple[str, str]]) -> None:
        super().__init__(id="help")
        self.bindings_list = bindings
        self.slash_help = slash_help

    def sections(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """(title, rows) of the help text."""
        out = [("Keys", binding_rows(self.bindings_list)),
               ("In the message input", list(INPUT_KEYS)),
               ("On a message (Shift+Tab from the input)", list(MESSAGE_KEYS))]
        if self.slash_help:
            out.append(("Slash commands (type them in the input)", list(self.slash_help)))
        return out

    def document(self) -> str:
        """The help text, as plain text."""
        return "\n".join(section(title, rows).plain for title, rows in self.sections())

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body"):
            yield Static("Lampchat help", classes="help-title")
            for title, rows in self.sections():
                yield Static(section_table(title, rows), classes="help-section")
            yield Static("Esc, F1 or q closes this screen.", classes="help-hint")

    def action_close(self) -> None:
        self.dismiss(None)
