"""A filterable table of models: type to filter, Up/Down to move, Tab for the backend, Enter.

The filter input keeps the focus; the table follows it. `ModelEntry` and `ModelChoice` (the
data the table shows and the picker returns) live in `widgets.model_entry` and are
re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Static

from widgets.model_entry import (
    ModelChoice,
    ModelEntry,
    format_context,
    format_params,
    format_size,
    matches,
    short_path,
)

__all__ = ["ModelChoice", "ModelEntry", "ModelTable"]

COLUMNS = (("name", "Name", 0), ("format", "Format", 11), ("backend", "Backend", 14),
           ("size", "Size", 8), ("quant", "Quant", 9), ("params", "Params", 6),
           ("context", "Context", 7))
"""(key, label, width); the name column takes the width left over."""
MIN_NAME_WIDTH = 16


class ModelTable(Vertical):
    """A filter input over a DataTable of `ModelEntry` rows.

    Posts `ModelTable.Selected` when Enter is pressed (or a row is clicked twice). Damaged
    entries are shown (in red, with their error below the table) and selected like others;
    the receiver decides what to do with them.
    """

    DEFAULT_CSS = """
    ModelTable { height: 1fr; }
    ModelTable > #model-filter { margin: 1 0; }
    ModelTable > DataTable { height: 1fr; }
    ModelTable > #model-detail {
        height: auto; min-height: 2; max-height: 4; color: $text-muted; margin-top: 1;
    }
    ModelTable > #model-detail.-error { color: $text-error; }
    """

    BINDINGS = [
        Binding("up", "move(-1)", "Up", show=False),
        Binding("down", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("tab", "cycle_backend", "Backend", tooltip="Run the model with another backend"),
    ]

    class Selected(Message):
        """Enter was pressed on a row: `choice` is the entry with its chosen backend."""

        def __init__(self, table: ModelTable, entry: ModelEntry, choice: ModelChoice) -> None:
            super().__init__()
            self.table = table
            self.entry = entry
            self.choice = choice

        @property
        def control(self) -> ModelTable:
            return self.table

    def __init__(self, entries: Iterable[ModelEntry] = (), current: str | None = None, *,
                 query: str = "", placeholder: str = "Type to filter models…",
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._entries = list(entries)
        self._current = _real(current) if current else None
        self._query = query
        self._placeholder = placeholder
        self._shown: list[ModelEntry] = []
        self._backend_index: dict[str, int] = {}
        self._columns_for = 0

    def compose(self) -> ComposeResult:
        yield Input(self._query, placeholder=self._placeholder, id="model-filter", compact=True)
        table: DataTable[Text] = DataTable(id="model-rows", cursor_type="row", zebra_stripes=True)
        table.can_focus = False  # typing always goes to the filter
        yield table
        yield Static("", id="model-detail")

    def on_mount(self) -> None:
        self._add_columns()
        self._refill(keep_current=True)

    def on_resize(self) -> None:
        if self._name_width() != self._columns_for:
            highlighted = self.highlighted
            self._add_columns()
            self._refill(keep_current=False, previous=highlighted)

    def _name_width(self) -> int:
        fixed = sum(width + 2 for _key, _label, width in COLUMNS[1:])
        return max(MIN_NAME_WIDTH, self.size.width - fixed - 4)

    def _add_columns(self) -> None:
        table = self.query_one(DataTable)
        table.clear(columns=True)
        self._columns_for = self._name_width()
        for key, label, width in COLUMNS:
            table.add_column(label, key=key, width=width or self._columns_for)

    # -- public API -------------------------------------------------------------------------

    @property
    def entries(self) -> list[ModelEntry]:
        """Every entry, filtered or not."""
        return list(self._entries)

    @property
    def shown(self) -> list[ModelEntry]:
        """The entries the filter lets through, in table order."""
        return list(self._shown)

    @property
    def query(self) -> str:
        """The filter text."""
        return self._query

    @property
    def highlighted(self) -> ModelEntry | None:
        """The entry under the cursor, or None when nothing is shown."""
        if not self._shown:
            return None
        row = self.query_one(DataTable).cursor_row
        return self._shown[row] if 0 <= row < len(self._shown) else None

    def set_entries(self, entries: Iterable[ModelEntry], current: str | None = None) -> None:
        """Replace the listed entries (keeps the filter)."""
        self._entries = list(entries)
        if current is not None:
            self._current = _real(current)
        self._refill(keep_current=True)

    def choice_for(self, entry: ModelEntry) -> ModelChoice:
        """`entry` with the backend picked for it (Tab cycles it)."""
        return ModelChoice.from_entry(entry, self._backend_for(entry))

    # -- events and actions -----------------------------------------------------------------

    @on(Input.Changed, "#model-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        event.stop()
        self._query = event.value
        self._refill(keep_current=False)

    @on(Input.Submitted, "#model-filter")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._select_highlighted()

    @on(DataTable.RowSelected)
    def _row_clicked(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self._select_highlighted()

    @on(DataTable.RowHighlighted)
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._show_detail()

    def action_move(self, step: int) -> None:
        """Move the cursor up (-1) or down (1)."""
        table = self.query_one(DataTable)
        if step < 0:
            table.action_cursor_up()
        else:
            table.action_cursor_down()

    def action_page(self, step: int) -> None:
        """Move the cursor a page up or down."""
        table = self.query_one(DataTable)
        if step < 0:
            table.action_page_up()
        else:
            table.action_page_down()

    def action_cycle_backend(self) -> None:
        """Run the highlighted model with its next backend."""
        entry = self.highlighted
        if entry is None or len(entry.backends) < 2:
            return
        self._backend_index[entry.path] = (self._backend_index.get(entry.path, 0) + 1) % len(
            entry.backends
        )
        table = self.query_one(DataTable)
        table.update_cell_at((table.cursor_row, 2), self._backend_cell(entry))
        self._show_detail()

    # -- internals --------------------------------------------------------------------------

    def _select_highlighted(self) -> None:
        entry = self.highlighted
        if entry is not None:
            self.post_message(self.Selected(self, entry, self.choice_for(entry)))

    def _backend_for(self, entry: ModelEntry) -> str:
        if not entry.backends:
            return "auto"
        return entry.backends[self._backend_index.get(entry.path, 0) % len(entry.backends)]

    def _refill(self, keep_current: bool, previous: ModelEntry | None = None) -> None:
        table = self.query_one(DataTable)
        previous = previous or self.highlighted
        self._shown = [e for e in self._entries if matches(e, self._query)]
        table.clear()
        for entry in self._shown:
            table.add_row(*self._cells(entry))
        target = 0
        if keep_current and self._current is not None:
            target = next((i for i, e in enumerate(self._shown) if self._is_current(e)), 0)
        elif previous is not None and previous in self._shown:
            target = self._shown.index(previous)
        if self._shown:
            table.move_cursor(row=target, scroll=True)
        self._show_detail()

    def _is_current(self, entry: ModelEntry) -> bool:
        return bool(entry.path) and _real(entry.path) == self._current

    def _cells(self, entry: ModelEntry) -> list[Text]:
        bad = entry.error is not None
        name = Text()
        name.append("● " if self._is_current(entry) else "  ", style="bold green")
        name.append(entry.name, style="bold red" if bad else "")
        if entry.is_default:
            name.append(" (default)", style="dim")
        style = "red" if bad else ""
        return [
            name,
            Text(entry.format, style=style),
            self._backend_cell(entry),
            Text(format_size(entry.file_size), justify="right"),
            Text(("unreachable" if entry.endpoint else "damaged") if bad
                 else (entry.quantization or "—"), style=style),
            Text(format_params(entry.n_params), justify="right"),
            Text(format_context(entry.context_length), justify="right"),
        ]

    def _backend_cell(self, entry: ModelEntry) -> Text:
        if entry.endpoint:
            return Text(f"remote:{entry.endpoint}")
        text = Text(self._backend_for(entry) if entry.backends else "—")
        if len(entry.backends) > 1:
            text.append(" ⇄", style="dim")
        return text

    def _show_detail(self) -> None:
        detail = self.query_one("#model-detail", Static)
        entry = self.highlighted
        detail.set_class(bool(entry and entry.error), "-error")
        if entry is None:
            if self._entries:
                detail.update(f"No model matches {self._query!r}.")
            else:
                detail.update("No models found. Add folders to model.dirs in the settings (F3).")
            return
        where = short_path(entry.path) if entry.path else entry.name
        if entry.error:
            detail.update(Text(f"{where}\n{entry.error}"))
            return
        count = f"{len(self._shown)} of {len(self._entries)} models"
        hint = f" · {SOURCE_LABELS.get(entry.source, entry.source)}" if entry.source else ""
        hint += f" · template: {entry.chat_template}" if entry.chat_template else ""
        if len(entry.backends) > 1:
            hint += f" · backends: {', '.join(entry.backends)} (Tab switches)"
        detail.update(Text(f"{where}\n{count}{hint}"))


SOURCE_LABELS = {"ollama": "from Ollama", "huggingface": "from the Hugging Face cache",
                 "lmstudio": "from LM Studio", "gpt4all": "from GPT4All",
                 "llama.cpp": "from llama.cpp's cache", "dirs": "from model.dirs",
                 "bundled": "bundled", "remote": "on a server", "path": "a path"}
"""How the detail line says where a model was found."""


def _real(path: str) -> str:
    return os.path.realpath(os.path.expanduser(path))
