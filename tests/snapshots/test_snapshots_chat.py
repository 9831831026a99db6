"""SVG snapshots of the chat, help, metrics and bench screens (pytest-textual-snapshot).

The scripted backend streams a fixed Markdown reply with constant metrics (FixedClock) and the
session's RSS is pinned, so every run draws the same screen. Update after a deliberate UI
change with `pytest --snapshot-update tests/snapshots/test_snapshots_chat.py` and look at the SVGs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.config import load_config
from app.options import options_from_config
from app.tui import LampchatApp
from app.tui_store import ChatStore
from tests.support import scripted_backend
from tests.support.tui_chat import bench_report, wait_for

pytestmark = [pytest.mark.slow]

SIZE = (110, 36)


@pytest.fixture(autouse=True)
def fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_backend.install(monkeypatch, fixed_clock=True)


def snapshot_app(tmp_path: Path, show_metrics: bool = False) -> LampchatApp:
    config_file = tmp_path / "config.toml"
    config_file.write_text(f"[ui]\nshow_metrics = {str(show_metrics).lower()}\n")
    options = options_from_config(load_config(config_file, env={}))
    options.model = "scripted://demo?rate=0"
    options.backend = "scripted"
    app = LampchatApp(options, ChatStore())
    app.session.rss_source = lambda: 180.0
    app.format_time = lambda _timestamp: "09:30"  # type: ignore[method-assign]
    return app


async def converse(pilot: Any, *prompts: str) -> None:
    """Wait for the model, send `prompts` one by one, then settle the screen."""
    app: LampchatApp = pilot.app
    await wait_for(pilot, lambda: app.engine.info is not None and not app.loading)
    chat = app.chat
    for prompt in prompts:
        chat.prompt.focus()
        n = len(chat.conversation.messages)
        await pilot.press(*prompt, "enter")
        await wait_for(pilot, lambda n=n: chat.generation is None
                       and len(chat.conversation.messages) == n + 2)
    await settle(pilot)


async def settle(pilot: Any) -> None:
    app: LampchatApp = pilot.app
    app.clear_notifications()
    for screen in {app.chat, app.screen}:  # every text cursor holds still (a dialog's too)
        for editor in screen.query("Input, TextArea"):
            editor.cursor_blink = False
    await pilot.pause(0.2)
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


def test_chat_snapshot(snap_compare, tmp_path: Path) -> None:
    async def run_before(pilot: Any) -> None:
        await converse(pilot, "How do I brew tea?")

    assert snap_compare(snapshot_app(tmp_path, show_metrics=True), run_before=run_before,
                        terminal_size=SIZE)


def test_help_snapshot(snap_compare, tmp_path: Path) -> None:
    async def run_before(pilot: Any) -> None:
        await converse(pilot)
        await pilot.press("f1")
        await wait_for(pilot, lambda: pilot.app.screen.id == "help")
        await pilot.pause(0.2)

    assert snap_compare(snapshot_app(tmp_path), run_before=run_before, terminal_size=SIZE)


def test_metrics_snapshot(snap_compare, tmp_path: Path) -> None:
    async def run_before(pilot: Any) -> None:
        await converse(pilot, "one", "two", "three")
        await pilot.press("f5")
        await wait_for(pilot, lambda: pilot.app.screen.id == "metrics")
        await pilot.pause(0.2)

    assert snap_compare(snapshot_app(tmp_path), run_before=run_before, terminal_size=SIZE)


def test_bench_chart_snapshot(snap_compare, tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench_report()))

    async def run_before(pilot: Any) -> None:
        await converse(pilot)
        await pilot.press("f5")
        await wait_for(pilot, lambda: pilot.app.screen.id == "metrics")
        pilot.app.screen.open_bench(str(path))
        await wait_for(pilot, lambda: pilot.app.screen.id == "bench")
        await wait_for(pilot, lambda: pilot.app.screen.query("BarChart"))
        await pilot.pause(0.2)

    assert snap_compare(snapshot_app(tmp_path), run_before=run_before, terminal_size=SIZE)


NARROW = (80, 24)
"""The smallest common terminal: every screen must be usable at it."""
WIDE = (140, 45)
"""A roomy terminal: the metrics panel sits beside the chat."""

SCREENS = {
    "chat": [], "help": ["f1"], "metrics": ["f5"], "list": ["ctrl+b"],
    "delete": ["ctrl+b", "d"], "rename": ["ctrl+b", "r"], "panel-overlay": ["f4"],
    "find": ["ctrl+f", *"tea"], "system-prompt": ["f6"], "message-focus": ["shift+tab"],
}
"""Keys from the chat to each screen and dialog."""


def opened_after_a_conversation(keys: list[str]):
    """A `run_before` that has a two-turn conversation, then presses `keys`."""
    async def run_before(pilot: Any) -> None:
        await converse(pilot, "How do I brew tea?", "And coffee?")
        for key in keys:
            await pilot.press(key)
            await pilot.pause(0.3)
        await settle(pilot)
    return run_before


@pytest.mark.parametrize("keys", list(SCREENS.values()), ids=list(SCREENS))
def test_140x45_snapshots(snap_compare, tmp_path: Path, keys: list[str]) -> None:
    """The same screens and dialogs as at 80x24, with the metrics panel beside the chat."""
    assert snap_compare(snapshot_app(tmp_path, show_metrics=True),
                        run_before=opened_after_a_conversation(keys), terminal_size=WIDE)


@pytest.mark.parametrize("keys", list(SCREENS.values()), ids=list(SCREENS))
def test_80x24_snapshots(snap_compare, tmp_path: Path, keys: list[str]) -> None:
    """The chat with a conversation longer than the screen (metrics panel on, which steps
    aside at this width), and each screen and dialog opened from it."""
    assert snap_compare(snapshot_app(tmp_path, show_metrics=True),
                        run_before=opened_after_a_conversation(keys), terminal_size=NARROW)
