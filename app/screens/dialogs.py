"""Small modal dialogs used by the chat shell: a yes/no question and a text prompt."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static, TextArea

from widgets.in_order_keys import LineInput


class ConfirmScreen(ModalScreen[bool]):
    """Ask a yes/no question; dismisses with True for yes."""

    BINDINGS = [
        Binding("escape,n", "answer(False)", "No"),
        Binding("y", "answer(True)", "Yes"),
    ]

    def __init__(self, question: str, yes: str = "Yes", no: str = "No", *,
                 safe_default: bool = False) -> None:
        super().__init__(classes="dialog")
        self.question = question
        self.yes = yes
        self.no = no
        self.safe_default = safe_default
        """Focus the "no" button first (for destructive questions)."""

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Static(self.question, markup=False)  # wraps in a narrow terminal
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.yes, id="yes", variant="primary")
                yield Button(self.no, id="no")

    def on_mount(self) -> None:
        self.query_one("#no" if self.safe_default else "#yes", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class TextPromptScreen(ModalScreen[str | None]):
    """Ask for a line (or, with `multiline`, a block) of text; None when cancelled."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "save", "Save", priority=True),
    ]

    def __init__(self, title: str, value: str = "", multiline: bool = False,
                 action: str = "saves", required: bool = False) -> None:
        """`action`: what Enter does, for the hint ("saves", "opens", "exports");
        `required`: an empty value is refused, saying so, instead of accepted."""
        super().__init__(classes="dialog")
        self.title_text = title
        self.value = value
        self.multiline = multiline
        self.action = action
        self.required = required

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(self.title_text, markup=False)
            if self.multiline:
                yield TextArea(self.value, id="value", soft_wrap=True, tab_behavior="focus")
                yield Label(f"Ctrl+S {self.action} · Esc cancels", classes="dialog-hint")
            else:
                yield LineInput(self.value, id="value")
                yield Label(f"Enter {self.action} · Esc cancels", classes="dialog-hint")
            yield Label("", id="dialog-error", classes="dialog-hint", markup=False)

    def on_mount(self) -> None:
        self.query_one("#value").focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._submit(event.value)

    def action_save(self) -> None:
        widget = self.query_one("#value")
        self._submit(widget.text if isinstance(widget, TextArea) else widget.value)  # type: ignore[attr-defined]

    def _submit(self, value: str) -> None:
        if self.required and not value.strip():
            self.query_one("#dialog-error", Label).update("It cannot be empty; Esc cancels.")
            return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)
