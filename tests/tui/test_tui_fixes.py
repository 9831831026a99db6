"""Regression tests of TUI bugs found by using it as a new user would (issue 22)."""

from __future__ import annotations

import pytest

from app.options import TuiOptions
from app.tui import LampchatApp
from app.tui_store import ChatStore
from tests.support import scripted_backend


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> LampchatApp:
    scripted_backend.install(monkeypatch)
    return LampchatApp(TuiOptions(model="scripted://demo", backend="scripted",
                                  show_metrics=True), ChatStore())


async def test_the_conversation_list_opens_at_80x24_with_the_metrics_panel(app) -> None:
    """Ctrl+B at 80x24 with the metrics panel on left the prompt 0 columns wide, and Textual's
    placeholder wrap failed on it ("range() arg 3 must not be zero"): the app exited."""
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        await pilot.press("ctrl+b")
        await pilot.pause(0.3)
        assert app.is_running and app.chat.query_one("#sidebar").display
        await pilot.press("escape", "ctrl+b")  # closes it again
        await pilot.pause(0.2)
        assert app.is_running


async def test_shrinking_the_terminal_with_the_list_open_down_to_40x12(app) -> None:
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.3)
        await pilot.press("ctrl+b")
        await pilot.pause(0.2)
        for size in ((80, 24), (60, 20), (40, 12), (120, 40)):
            await pilot.resize_terminal(*size)
            await pilot.pause(0.2)
            assert app.is_running, size


async def test_toasts_show_brackets_as_written(app) -> None:
    """Error text in square brackets ('lampchat[mlx]') was eaten as Rich markup."""
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.3)
        app.notify("install it: pip install 'lampchat[mlx]' [bold]x[/bold]", severity="error")
        await pilot.pause(0.3)
        from textual.widgets._toast import Toast  # how Textual draws a notification

        shown = [str(Toast(n).render()) for n in app._notifications]
        assert any("pip install 'lampchat[mlx]' [bold]x[/bold]" in text for text in shown)


async def test_ctrl_o_pressed_again_copies_the_reply_before(app) -> None:
    """README: Ctrl+O copies the last reply, "press again for the one before"; it always
    copied the last one."""
    from app.history import Message

    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.3)
        chat = app.chat
        for role, text in (("user", "one"), ("assistant", "first reply"), ("user", "two"),
                           ("assistant", "second reply")):
            app.store.append(chat.conversation, Message(role, text))
        copied = []
        for _ in range(3):
            await pilot.press("ctrl+o")
            await pilot.pause(0.05)
            copied.append(app.clipboard)
        assert copied == ["second reply", "first reply", "second reply"]


async def test_dialogs_say_what_enter_does_and_a_name_cannot_be_empty(app) -> None:
    """F5 -> o said "Enter saves" for a file to open; the rename dialog closed silently on an
    empty name."""
    from textual.widgets import Input, Label

    from app.screens.dialogs import TextPromptScreen

    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.3)
        await pilot.press("f5")
        await pilot.pause(0.2)
        await pilot.press("o")
        await pilot.pause(0.2)
        dialog = app.screen
        assert isinstance(dialog, TextPromptScreen)
        hints = [str(label.render()) for label in dialog.query(Label)]
        assert any("Enter opens" in h for h in hints) and not any("saves" in h for h in hints)
        await pilot.press("escape", "escape")
        await pilot.pause(0.2)
        results: list[str | None] = []
        app.push_screen(TextPromptScreen("Rename conversation", "old", required=True),
                        results.append)
        await pilot.pause(0.2)
        app.screen.query_one(Input).value = "   "
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert isinstance(app.screen, TextPromptScreen) and results == []
        error = str(app.screen.query_one("#dialog-error", Label).render())
        assert "cannot be empty" in error
        app.screen.query_one(Input).value = "New name"
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert results == ["New name"]
