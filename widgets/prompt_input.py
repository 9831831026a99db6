"""The multi-line prompt input: Enter sends, Ctrl+J / Shift+Enter add a line, Up/Down recall."""

from __future__ import annotations

from collections.abc import Sequence

from textual import events
from textual.message import Message
from textual.strip import Strip
from textual.widgets import TextArea

from widgets.in_order_keys import InOrderKeys

NEWLINE_KEYS = frozenset({"ctrl+j", "shift+enter", "alt+enter"})
"""Keys that insert a newline (terminals report Shift+Enter only with the kitty protocol)."""


class PromptInput(InOrderKeys, TextArea):
    """A TextArea where Enter submits and Up/Down walk through earlier prompts.

    Up recalls an older prompt when the cursor is on the first line; Down goes back towards
    the prompt being written when the cursor is on the last line. Elsewhere they move the
    cursor as usual.
    """

    DEFAULT_CSS = """
    PromptInput { height: auto; min-height: 3; max-height: 10; }
    """

    class Submitted(Message):
        """The user pressed Enter."""

        def __init__(self, input: PromptInput, text: str) -> None:
            super().__init__()
            self.input = input
            self.text = text

        @property
        def control(self) -> PromptInput:
            return self.input

    def __init__(
        self, history: Sequence[str] = (), placeholder: str = "", **kwargs: object
    ) -> None:
        super().__init__(
            soft_wrap=True,
            tab_behavior="focus",
            show_line_numbers=False,
            placeholder=placeholder,
            **kwargs,  # type: ignore[arg-type]
        )
        self.prompts: list[str] = list(history)
        """Earlier prompts, oldest first."""
        self._recall: int | None = None
        self._draft = ""

    def render_line(self, y: int) -> Strip:
        """A line of the input; blank while it has no width (Textual's TextArea wraps its
        placeholder at the content width and fails at 0, e.g. with the conversation list and
        the metrics panel open in an 80-column terminal)."""
        if self.content_size.width <= 0:
            return Strip.blank(self.size.width, self.rich_style)
        return super().render_line(y)

    def add_to_history(self, text: str) -> None:
        """Remember `text` as the newest prompt (no consecutive duplicates)."""
        if text.strip() and (not self.prompts or self.prompts[-1] != text):
            self.prompts.append(text)
        self._recall = None

    def set_prompt(self, text: str) -> None:
        """Replace the input's text and put the cursor at its end."""
        self.load_text(text)
        self.move_cursor(self.document.end)

    def _recall_to(self, index: int | None) -> None:
        if self._recall is None:
            self._draft = self.text
        self._recall = index
        self.set_prompt(self._draft if index is None else self.prompts[index])

    async def _on_key(self, event: events.Key) -> None:
        key = event.key
        if key == "enter":
            event.stop()
            event.prevent_default()
            self.post_message(self.Submitted(self, self.text))
            return
        if key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            start, end = self.selection
            self._replace_via_keyboard("\n", start, end)
            return
        row = self.cursor_location[0]
        if key == "up" and row == 0 and self.prompts and self._recall != 0:
            event.stop()
            event.prevent_default()
            self._recall_to(len(self.prompts) - 1 if self._recall is None else self._recall - 1)
            return
        if key == "down" and row == self.document.line_count - 1 and self._recall is not None:
            event.stop()
            event.prevent_default()
            nxt = self._recall + 1
            self._recall_to(nxt if nxt < len(self.prompts) else None)
