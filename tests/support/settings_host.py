"""A host app for the settings screen."""

from __future__ import annotations

from typing import Any

from textual.app import App

from app.screens.settings import SettingsResult, SettingsScreen

UNSET = object()
"""What `result` holds before the screen is dismissed."""


class SettingsHost(App[None]):
    """A bare app that opens the settings screen and keeps what it dismissed with."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.settings = SettingsScreen(config)
        self.result: Any = UNSET

    def on_mount(self) -> None:
        self.push_screen(self.settings, self._done)

    def _done(self, result: SettingsResult | None) -> None:
        self.result = result
