"""The conversation list (Ctrl+B): switch to, resume, rename or delete a conversation."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Label, ListItem, ListView, Static

from widgets.key_hold import KeyHoldApp


@dataclass(frozen=True)
class ConversationSummary:
    """One row of the list."""

    id: str
    title: str
    when: str = ""
    n_messages: int | None = None
    problem: str | None = None


class ConversationItem(ListItem):
    """A conversation in the list."""

    def __init__(self, summary: ConversationSummary, current: bool) -> None:
        super().__init__(classes="-current" if current else "")
        self.summary = summary

    def compose(self) -> ComposeResult:
        yield Label(self.summary.title or "(untitled)", classes="title", markup=False)
        parts = [self.summary.when] if self.summary.when else []
        if self.summary.n_messages is not None:
            parts.append(f"{self.summary.n_messages} messages")
        if self.summary.problem:
            parts.append("damaged")
        detail = " · ".join(parts)
        yield Label(detail, classes="detail", markup=False)


class ConversationSidebar(Vertical):
    """Lists conversations; posts `Open`, `Rename` and `Delete` for the screen to act on."""

    DEFAULT_CSS = """
    ConversationSidebar { width: 32; border-right: solid $primary 50%; }
    ConversationSidebar > .title { text-style: bold; color: $accent; padding: 0 1; }
    ConversationSidebar > .hint { color: $text-muted; padding: 0 1; }
    ConversationSidebar ListView { height: 1fr; }
    ConversationSidebar ConversationItem .detail { color: $text-muted; }
    ConversationSidebar ConversationItem.-current .title { text-style: bold; }
    """

    BINDINGS = [
        Binding("r", "rename", "Rename", show=False),  # the list's own hint names them
        Binding("d,delete", "delete", "Delete", show=False),
    ]

    class Open(Message):
        """Switch to (resume) this conversation."""

        def __init__(self, conversation_id: str) -> None:
            super().__init__()
            self.conversation_id = conversation_id

    class Rename(Open):
        """Rename this conversation."""

    class Delete(Open):
        """Delete this conversation."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.summaries: list[ConversationSummary] = []
        self.current_id: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("Conversations", classes="title")
        yield ListView(id="conversations")
        yield Static("Enter open · r rename · d delete", classes="hint")

    @property
    def list_view(self) -> ListView:
        """The list itself."""
        return self.query_one(ListView)

    async def show(self, summaries: list[ConversationSummary], current_id: str | None) -> None:
        """Replace the list."""
        self.summaries = list(summaries)
        self.current_id = current_id
        view = self.list_view
        await view.clear()
        await view.extend(ConversationItem(s, s.id == current_id) for s in self.summaries)
        for index, summary in enumerate(self.summaries):
            if summary.id == current_id:
                view.index = index
                break

    def _selected(self) -> ConversationSummary | None:
        item = self.list_view.highlighted_child
        return item.summary if isinstance(item, ConversationItem) else None

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        event.stop()
        if isinstance(event.item, ConversationItem):
            self.post_message(self.Open(event.item.summary.id))

    def action_rename(self) -> None:
        if (summary := self._selected()) is not None:
            self._hold_keys()
            self.post_message(self.Rename(summary.id))

    def action_delete(self) -> None:
        if (summary := self._selected()) is not None:
            self._hold_keys()
            self.post_message(self.Delete(summary.id))

    def _hold_keys(self) -> None:
        """Keys typed next are for the dialog the message opens, not for this list."""
        if isinstance(self.app, KeyHoldApp):
            self.app.hold_keys()
