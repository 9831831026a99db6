"""A host app for the model picker."""

from __future__ import annotations

from typing import Any

from textual.app import App

from app.screens.picker import ModelPickerScreen
from widgets.model_table import ModelChoice

UNSET = object()
"""What `result` holds before the screen is dismissed."""


class PickerHost(App[None]):
    """A bare app that opens the picker and keeps what it dismissed with."""

    def __init__(self, entries: Any, current: str | None = None, query: str = "",
                 more: Any = None) -> None:
        super().__init__()
        self.picker = ModelPickerScreen(entries, current, query=query, more=more)
        self.result: Any = UNSET

    def on_mount(self) -> None:
        self.push_screen(self.picker, self._done)

    def _done(self, result: ModelChoice | None) -> None:
        self.result = result
