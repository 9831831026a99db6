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


async def test_reopened_replies_keep_model_backend_and_how_they_ended(app) -> None:
    """Replies loaded from history lost model and backend in their footer line (the history
    file keeps them on the message), and said "stopped" where the export said "interrupted"."""
    from app.export import conversation_markdown
    from app.history import Message, new_conversation
    from widgets.messages import AssistantMessage

    conv = new_conversation()
    conv.messages += [
        Message("user", "Hi"),
        Message("assistant", "Hel", model="SmolLM2", backend="llama.cpp", interrupted=True,
                metrics={"ttft_ms": 50.0, "decode_tps": 90.0, "completion_tokens": 2,
                         "finish_reason": "cancelled"}),
        Message("user", "Again"),
        Message("assistant", "Hello th", model="SmolLM2", backend="llama.cpp",
                interrupted=True, metrics={"ttft_ms": 40.0, "decode_tps": 80.0,
                                           "completion_tokens": 3, "finish_reason": "stop"}),
    ]
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause(0.3)
        await app.chat.show_conversation(conv)
        await pilot.pause(0.3)
        footers = [str(m.query_one(".meta").render()) for m in app.chat.query(AssistantMessage)]
    assert footers[0].startswith("SmolLM2 · llama.cpp · TTFT") and footers[0].endswith("stopped")
    assert footers[1].startswith("SmolLM2 · llama.cpp") and footers[1].endswith("interrupted")
    markdown = conversation_markdown(conv)
    assert "*stopped ·" in markdown and "*interrupted ·" in markdown


async def test_an_unreachable_endpoint_is_not_damaged_and_its_error_shows_whole() -> None:
    """The picker labelled an endpoint that did not answer "damaged" and cut its error to
    "cannot connect to" at 80 columns."""
    from textual.widgets import DataTable

    from tests.support.markdown_host import screen_text
    from tests.support.picker_host import PickerHost
    from widgets.model_entry import ModelEntry

    error = ("cannot connect to http://127.0.0.1:9/v1 (connection refused): is the server "
             "running? (lampchat ask --endpoint lab tries it)")
    entries = [ModelEntry("lab", "lab", "remote", ("remote",), endpoint="lab", error=error)]
    app = PickerHost(entries)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        grid = app.picker.table.query_one(DataTable)
        assert "unreachable" in [str(cell) for cell in grid.get_row_at(0)]
        shown = " ".join(" ".join(screen_text(app)).split())
        assert "(lampchat ask --endpoint lab tries it)" in shown


def test_the_panel_never_mixes_two_replies_and_a_reply_with_no_token_has_no_speed() -> None:
    """While a reply streamed, the panel showed its live TTFT beside the previous reply's
    prompt speed and tokens; a reply stopped before its first token showed "TTFT 0 ms"."""
    from engine.types import ReplyMetrics
    from widgets.messages import reply_meta
    from widgets.metrics_panel import SessionMetrics

    session = SessionMetrics(rss_source=lambda: 100.0, clock=lambda: 10.0)
    session.finish_reply(ReplyMetrics(ttft_ms=50.0, prompt_tokens=51, prompt_tps=3345.0,
                                      completion_tokens=20, decode_tps=90.0))
    session.start_reply()
    rows = dict(session.rows())
    assert rows["Prompt"] == "…" and rows["Prompt tokens"] == "…" and rows["TTFT"] == "…"
    stopped = ReplyMetrics(ttft_ms=0.0, prompt_tokens=12, completion_tokens=0,
                           finish_reason="cancelled")
    session.finish_reply(stopped)
    rows = dict(session.rows())
    assert rows["TTFT"] == "–" and rows["Decode"] == "–" and rows["Prompt"] == "–"
    assert rows["Prompt tokens"] == "12"
    assert "TTFT –" in reply_meta(stopped, "stopped") and "tok/s" not in reply_meta(
        stopped, "stopped")


async def test_a_chart_with_one_sample_is_not_drawn_as_a_solid_block(app) -> None:
    from textual.widgets import Sparkline

    from engine.types import ReplyMetrics

    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause(0.3)
        panel = app.chat.metrics_panel
        app.session.finish_reply(ReplyMetrics(ttft_ms=50.0, completion_tokens=5,
                                              decode_tps=90.0))
        panel.refresh_metrics()
        assert not panel.query_one("#tps", Sparkline).display
        app.session.finish_reply(ReplyMetrics(ttft_ms=60.0, completion_tokens=5,
                                              decode_tps=80.0))
        panel.refresh_metrics()
        assert panel.query_one("#tps", Sparkline).display


def test_help_descriptions_that_wrap_stay_under_their_column() -> None:
    """At 80 columns the second line of the long `/set` entry started at column 1."""
    import io

    from rich.console import Console

    from app.screens.help import section_table
    from app.slash import COMMANDS

    rows = [(c.usage, c.help) for c in COMMANDS.values()]
    console = Console(width=76, record=True, file=io.StringIO())
    console.print(section_table("Slash commands", rows))
    lines = console.export_text().splitlines()[1:]
    key_width = max(len(usage) for usage, _ in rows)
    wrapped = [line for line in lines if line.strip() and not line.lstrip().startswith("/")]
    assert wrapped  # some descriptions are long enough to wrap at 76 columns
    for line in wrapped:
        assert len(line) - len(line.lstrip()) >= key_width + 2, line
