"""What the chat screen and a reply stream need from the app, as a Protocol.

`app.tui.LampchatApp` provides it. Screens depend on this interface, not on the app class, so
the app can import its screens without an import cycle.
"""

from __future__ import annotations

from typing import Any, Protocol

from textual.screen import Screen

from app.gc_pause import FullCollectionPause
from app.options import TuiOptions
from app.tui_store import ChatStore
from engine.types import ReplyMetrics, SamplingParams
from engine.worker import EngineWorker
from widgets.metrics_panel import SessionMetrics


class ChatHost(Protocol):
    """The app as the chat screen sees it."""

    options: TuiOptions
    store: ChatStore
    engine: EngineWorker
    session: SessionMetrics
    gc_pause: FullCollectionPause
    loading: bool

    async def chat_ready(self, chat: Screen[None]) -> None:
        """The chat screen is mounted: load the model, show the first conversation."""

    def sampling(self) -> SamplingParams:
        """The sampling settings in use."""

    def default_system_prompt(self) -> str:
        """The system prompt a new conversation starts with."""

    def prompt_history_items(self) -> list[str]:
        """Earlier prompts, oldest first."""

    def remember_prompt(self, text: str) -> None:
        """Add `text` to the prompt history."""

    def format_time(self, timestamp: float) -> str:
        """A timestamp as the conversation list shows it."""

    async def run_slash(self, line: str) -> None:
        """Run a chat command (`/set ...`)."""

    def reply_finished(self, metrics: ReplyMetrics | None) -> None:
        """A reply ended (the title bar and the metrics screen update)."""

    def notify(self, message: str, *, title: str = "", severity: Any = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        """Show a toast."""
