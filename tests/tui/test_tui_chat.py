"""The chat TUI driven with Textual's Pilot: every binding and screen, on the scripted backend.

The scripted backend (tests/support/scripted_backend.py) is the real engine worker and a real
backend class that streams a fixed Markdown reply; the config file, the history dir and the
prompt history are real files in a temp dir. The real default model through llama.cpp is covered in
tests/tui/test_tui_real_model.py.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, Input, Static

from app.config import load_config
from app.gc_pause import NEVER
from app.history import Message, load_conversation_file, new_conversation, save_conversation_file
from app.history_store import HistoryStore
from app.options import ModelSpec, options_from_config
from app.prompt_history import PromptHistory
from app.screens.bench import BenchScreen
from app.screens.chat import ChatScreen
from app.screens.dialogs import ConfirmScreen, TextPromptScreen
from app.screens.help import HelpScreen
from app.screens.metrics import MetricsScreen
from app.tui import LampchatApp
from app.tui_main import build_app
from app.tui_store import ChatStore
from tests.support import scripted_backend
from tests.support.scripted_backend import REPLY
from tests.support.tui_chat import bench_report, meta, tui_args, wait_for
from widgets.config_form import widget_id
from widgets.flat_markdown import FlatMarkdown
from widgets.messages import AssistantMessage, UserMessage
from widgets.sidebar import ConversationItem, ConversationSidebar

pytestmark = [pytest.mark.slow]

SIZE = (110, 40)
FAST = "scripted://demo?rate=0"

CONFIG = """\
# my settings: keep this comment
[generation]
temperature = 0.9   # warm
max_tokens = 512

[ui]
theme = "textual-dark"
show_metrics = false
"""


@pytest.fixture(autouse=True)
def scripted(monkeypatch: pytest.MonkeyPatch) -> None:
    scripted_backend.install(monkeypatch)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG + f'\n[session]\nhistory_dir = "{tmp_path / "history"}"\n'
                    f'history_file = "{tmp_path / "prompts"}"\n', encoding="utf-8")
    return path


def make_app(config_file: Path, model: str = FAST, auto_save: bool = True,
             save_history: Path | None = None) -> LampchatApp:
    config = load_config(config_file, env={})
    options = options_from_config(config)
    options.model = model
    options.backend = "scripted"
    options.prompt_history = PromptHistory(config.prompt_history_path())
    history = HistoryStore(config.history_dir()) if auto_save else None
    return LampchatApp(options, ChatStore(history, save_history))


def loaded(app, name: str) -> bool:
    """Whether `name` is loaded and no load is running (info is None while models switch)."""
    return getattr(app.engine.info, "name", None) == name and not app.loading


async def started(pilot: Any) -> ChatScreen:
    app = pilot.app
    await wait_for(pilot, lambda: app.engine.info is not None and not app.loading)
    return app.chat


async def send(pilot: Any, text: str) -> None:
    """Type `text` in the input and press Enter, then wait for the reply to end."""
    chat: ChatScreen = pilot.app.chat
    chat.prompt.focus()
    await pilot.press(*text) if len(text) < 40 else chat.prompt.load_text(text)
    n = len(chat.conversation.messages) if chat.conversation else 0
    await pilot.press("enter")
    if text.startswith("/"):
        await pilot.pause(0.1)
        return
    await wait_for(pilot, lambda: chat.generation is None
                   and chat.conversation is not None and len(chat.conversation.messages) >= n + 2)


def notifications(app: LampchatApp) -> list[str]:
    return [n.message for n in app._notifications]


async def test_send_streams_markdown_reply_with_metrics_and_saves_it(config_file: Path,
                                                                     tmp_path: Path) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        chat = await started(pilot)
        assert "demo · scripted · cpu" in str(chat.query_one("#model-label", Static).render())
        await send(pilot, "hello there")
        view = chat.chat_log.last_view("assistant")
        assert isinstance(view, AssistantMessage)
        assert view.data.content == REPLY and view.shown_chars == len(REPLY)
        assert view.data.state == "done"
        line = meta(view)
        assert line.startswith("demo · scripted · TTFT ") and "tok/s" in line
        assert "110 tokens" in line
        # drawn as Markdown: the table is boxed, the code block holds its code
        [chunk] = view.chunks
        assert isinstance(chunk, FlatMarkdown)
        drawn = chunk.text_at(60)
        assert "│ Tea   │ Water │ Minutes │" in drawn and "**" not in drawn
        assert chunk.code_blocks[0].startswith("def steep(minutes: int)")
        assert chunk.source == REPLY and view.full_updates == 0  # the stream was already exact
        assert isinstance(chat.chat_log.last_view("user"), UserMessage)
        assert app.focused is chat.prompt and chat.prompt.text == ""
        conv = chat.conversation
    # saved as it happened: one TOML file in the history dir, with the reply's metrics
    files = list((tmp_path / "history").glob("*.toml"))
    assert len(files) == 1
    saved = load_conversation_file(files[0])
    assert [m.role for m in saved.messages] == ["user", "assistant"]
    assert saved.messages[1].content == REPLY and not saved.messages[1].interrupted
    assert saved.messages[1].metrics["completion_tokens"] == 110
    assert saved.id == conv.id
    assert PromptHistory(tmp_path / "prompts").items() == ["hello there"]


async def test_escape_stops_keeps_partial_marked_stopped_and_refocuses(config_file: Path,
                                                                       tmp_path: Path) -> None:
    app = make_app(config_file, "scripted://slow?rate=50&tokens=2000")
    async with app.run_test(size=SIZE) as pilot:
        chat = await started(pilot)
        await pilot.press(*"tell me a long story", "enter")
        await wait_for(pilot, lambda: chat.reply_view is not None
                       and chat.reply_view.shown_chars > 20)
        assert chat.reply_view.query_one(".meta").has_class("-streaming")
        thresholds = app.gc_pause._saved
        assert app.gc_pause.held and gc.get_threshold()[2] == NEVER  # no full collections
        chat.chat_log.focus()
        await pilot.press("escape")
        await wait_for(pilot, lambda: chat.generation is None)
        await wait_for(pilot, lambda: not app.gc_pause.held)  # the reply is on screen
        assert gc.get_threshold() == thresholds
        view = chat.chat_log.last_view("assistant")
        assert view.data.state == "stopped" and view.has_class("-stopped")
        assert not view.query_one(".meta").has_class("-streaming")
        assert 0 < len(view.data.content) < len(scripted_backend.long_reply(2000))
        assert meta(view).endswith("stopped")
        assert app.focused is chat.prompt
        stored = chat.conversation.messages[-1]
        assert stored.content == view.data.content and stored.interrupted
        assert stored.metrics["finish_reason"] == "cancelled"
    saved = load_conversation_file(next((tmp_path / "history").glob("*.toml")))
    assert saved.messages[-1].interrupted and saved.messages[-1].content == stored.content


async def test_regenerate_and_edit_resend(config_file: Path) -> None:
    app = make_app(config_file, "scripted://echo?rate=0&echo=1")
    async with app.run_test(size=SIZE) as pilot:
        chat = await started(pilot)
        await send(pilot, "first question")
        first_reply = chat.conversation.messages[-1]
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: chat.generation is None
                       and chat.conversation.messages[-1] is not first_reply)
        assert [m.role for m in chat.conversation.messages] == ["user", "assistant"]
        assert len(chat.chat_log.query(AssistantMessage)) == 1
        # edit & resend: the last prompt comes back into the input, its reply is dropped
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert chat.prompt.text == "first question"
        assert chat.conversation.messages == []
        assert not chat.chat_log.query(UserMessage)
        await pilot.press("end", *" again", "enter")
        await wait_for(pilot, lambda: chat.generation is None
                       and len(chat.conversation.messages) == 2)
        assert chat.conversation.messages[0].content == "first question again"
        assert chat.conversation.messages[1].content.startswith("You said: first question again")


async def test_copy_last_reply_code_block_and_export(config_file: Path, tmp_path: Path) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("ctrl+o")
        assert "No reply to copy yet." in notifications(app)
        await send(pilot, "tea?")
        await pilot.press("ctrl+o")
        assert app.clipboard == REPLY
        await pilot.press("ctrl+t")
        assert app.clipboard == 'def steep(minutes: int) -> str:\n    return f"steeped for ' \
            '{minutes} min"\n'
        await pilot.press("ctrl+e")
        await wait_for(pilot, lambda: isinstance(app.screen, TextPromptScreen))
        await pilot.press("ctrl+a", "ctrl+k", *str(tmp_path / "tea.md"), "enter")
        await wait_for(pilot, lambda: (tmp_path / "tea.md").exists())
        markdown = (tmp_path / "tea.md").read_text()
        assert markdown.startswith("# tea?") and "## Assistant" in markdown
        assert "| Green | 80 °C | 2-3     |" in markdown


async def test_new_chat_and_sidebar_switch_rename_delete(config_file: Path,
                                                         tmp_path: Path) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        chat = await started(pilot)
        await send(pilot, "about tea")
        first = chat.conversation
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert chat.conversation is not first and chat.conversation.messages == []
        assert not chat.chat_log.query(AssistantMessage)
        await send(pilot, "about coffee")
        await pilot.press("ctrl+b")
        sidebar = chat.query_one(ConversationSidebar)
        await wait_for(pilot, lambda: len(sidebar.list_view.children) == 2)
        assert [s.title for s in sidebar.summaries] == ["about coffee", "about tea"]
        assert app.focused is sidebar.list_view
        # switch to the older one
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: chat.conversation.id == first.id)
        assert chat.chat_log.last_view("user").data.content == "about tea"
        assert app.focused is chat.prompt
        # rename it
        sidebar.list_view.focus()
        await pilot.pause()
        sidebar.list_view.index = 1
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, TextPromptScreen))
        await pilot.press("ctrl+a", "ctrl+k", *"Tea notes", "enter")
        await wait_for(pilot, lambda: "Tea notes" in [s.title for s in sidebar.summaries])
        assert load_conversation_file(first.path).title == "Tea notes"
        # delete the other one
        sidebar.list_view.focus()
        sidebar.list_view.index = [s.title for s in sidebar.summaries].index("about coffee")
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: len(sidebar.summaries) == 1)
        assert [p.name for p in (tmp_path / "history").glob("*.toml")] == [first.path.name]
        assert all(isinstance(i, ConversationItem) for i in sidebar.list_view.children)
        await pilot.press("ctrl+b")
        assert not sidebar.display and app.focused is chat.prompt


def burst(app: LampchatApp, *keys: str) -> None:
    """Queue `keys` all at once, as a terminal delivers a fast burst (tmux send-keys, typing
    ahead), before any of them is handled; Pilot's press waits for each key instead."""
    from textual import events

    named = {"enter": "\r", "space": " "}
    for key in keys:
        character = named.get(key, key if len(key) == 1 else None)
        app.post_message(events.Key(key, character))


async def test_keys_typed_ahead_of_a_dialog_go_to_it_in_order(config_file: Path) -> None:
    """Bug 6: "r", Ctrl+U, a name and Enter typed quickly renamed nothing: the keys after "r"
    went to the list beneath the dialog, and Ctrl+U (a binding, run late) cleared the typed
    name. Then "d" and "y" typed at once deletes."""
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        chat = await started(pilot)
        await send(pilot, "about tea")
        await pilot.press("ctrl+b")
        sidebar = chat.query_one(ConversationSidebar)
        await wait_for(pilot, lambda: len(sidebar.list_view.children) == 1)
        conversation = chat.conversation
        burst(app, "r", "ctrl+u", *"Tea notes", "enter")
        await wait_for(pilot, lambda: [s.title for s in sidebar.summaries] == ["Tea notes"])
        assert load_conversation_file(conversation.path).title == "Tea notes"
        assert app.focused is sidebar.list_view
        burst(app, "d", "y")
        await wait_for(pilot, lambda: not conversation.path.exists())
        # the list is refreshed after the file is gone: a moment later, not the same instant
        await wait_for(pilot, lambda: "Tea notes" not in [s.title for s in sidebar.summaries])


async def test_editing_keys_in_the_prompt_keep_their_place_among_typed_text(
        config_file: Path) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        chat = await started(pilot)
        chat.prompt.focus()
        burst(app, *"old words", "ctrl+u", *"new", "left", "left", "left", *"my ")
        await wait_for(pilot, lambda: chat.prompt.text == "my new")


async def test_backend_failing_mid_stream_notifies_and_app_stays_usable(
        config_file: Path) -> None:
    app = make_app(config_file, "scripted://flaky?rate=0&fail_after=10")
    async with app.run_test(size=SIZE) as pilot:
        chat = await started(pilot)
        await send(pilot, "hi")
        view = chat.chat_log.last_view("assistant")
        assert view.data.state == "error"
        assert "error: scripted backend failure mid-stream" in meta(view)
        assert any("scripted backend failure mid-stream" in n for n in notifications(app))
        assert view.data.content  # the 10 tokens before the failure are kept
        # still usable: load a working model with /model and chat
        await send(pilot, f"/model {FAST}")
        await wait_for(pilot, lambda: loaded(app, "demo"))
        await send(pilot, "again")
        assert chat.conversation.messages[-1].content == REPLY


async def test_model_that_fails_to_load_is_a_notification(config_file: Path) -> None:
    app = make_app(config_file, "scripted://broken?fail_load=1")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: not app.loading and app._notifications)
        assert any("refuses to load" in n for n in notifications(app))
        assert app.engine.info is None
        await pilot.press(*"hi", "enter")
        await pilot.pause()
        assert "No model is loaded; F2 picks one." in notifications(app)
        assert isinstance(app.screen, ChatScreen)


async def test_cycle_recent_models_with_ctrl_up_down(config_file: Path) -> None:
    app = make_app(config_file, "scripted://alpha?rate=0")
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("ctrl+down")
        assert any("No other recently used model" in n for n in notifications(app))
        app.load_model(ModelSpec("scripted://beta?rate=0", "scripted"))
        await wait_for(pilot, lambda: loaded(app, "beta"))
        await pilot.press("ctrl+up")
        await wait_for(pilot, lambda: loaded(app, "alpha"))
        await pilot.press("ctrl+down")
        await wait_for(pilot, lambda: loaded(app, "beta"))
        assert [r.label for r in app.recent] == ["beta", "alpha"]
        # the palette has an entry per known model (recent ones first)
        titles = [s.title for s in await app.known_models()]
        assert titles[:2] == ["beta", "alpha"]
        assert "SmolLM2-135M-Instruct" in titles


async def test_metrics_panel_metrics_screen_and_bench_chart(config_file: Path,
                                                            tmp_path: Path) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        chat = await started(pilot)
        await send(pilot, "one")
        await send(pilot, "two")
        panel = chat.metrics_panel
        assert not panel.display
        await pilot.press("f4")
        assert panel.display
        rows = str(panel.query_one("#rows", Static).render())
        assert "Replies       2" in rows and "scripted on cpu" in rows
        assert "Context" in rows and "/ 4,096" in rows
        await pilot.press("f4")
        assert not panel.display
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, MetricsScreen))
        table = app.screen.query_one("#replies", DataTable)
        assert table.row_count == 2
        assert [str(c) for c in table.get_row_at(1)][:3] == ["2", "demo", "scripted"]
        assert "min" in str(app.screen.query_one("#tps-caption", Static).render())
        # open a bench report and chart it
        report = bench_report()
        path = tmp_path / "bench.json"
        path.write_text(json.dumps(report))
        await pilot.press("o")
        await wait_for(pilot, lambda: isinstance(app.screen, TextPromptScreen))
        await pilot.press("ctrl+a", "ctrl+k", *str(path), "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, BenchScreen))
        text = "\n".join(str(c.render()) for c in app.screen.query("BarChart"))
        assert "tg8 t/s (higher is better)" in text and "TTFT ms (lower is better)" in text
        assert "57.6" in text and "30.0" in text and "failed: boom" in text
        assert app.screen.query_one("#bench-table", DataTable).row_count == 3
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, MetricsScreen))
        # a file that is not a bench report is a notification, not a crash
        (tmp_path / "bad.json").write_text("{}")
        assert not app.screen.open_bench(str(tmp_path / "bad.json"))
        await pilot.pause()
        assert any("not a lampchat bench report" in n for n in notifications(app))
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))


async def test_help_screen_footer_and_palette_actions(config_file: Path) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        chat = await started(pilot)
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        doc = app.screen.document()
        for key, what in (("Esc", "Stop"), ("Ctrl+R", "Regenerate"), ("F2", "Model"),
                          ("Ctrl+Up", "Previous model"), ("Ctrl+E", "Export"),
                          ("/set KEY VALUE", "change a setting"), ("/export PATH", "export"),
                          ("Ctrl+J / Shift+Enter", "new line")):
            assert any(line.strip().startswith(key) and what in line
                       for line in doc.splitlines()), key
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
        chat.chat_log.focus()
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("q")
        titles = [c.title for c in app.get_system_commands(chat)]
        for title in ("New chat", "Stop reply", "Regenerate reply", "Edit last message",
                      "Copy last reply", "Copy code block", "Conversations", "System prompt",
                      "Export to Markdown", "Pick model", "Settings", "Metrics panel",
                      "Metrics screen", "Next model", "Previous model", "Help", "Quit"):
            assert title in titles, title
        # run one through the palette, as a user would
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*"Metrics screen")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MetricsScreen))


async def test_slash_commands_through_the_input(config_file: Path, tmp_path: Path) -> None:
    app = make_app(config_file, "scripted://echo?rate=0&echo=1")
    async with app.run_test(size=SIZE) as pilot:
        chat = await started(pilot)
        notes = lambda: [v.data.content for v in chat.chat_log.query("SystemNote")]  # noqa: E731
        await send(pilot, "/set temperature 0.3")
        assert app.options.sampling.temperature == 0.3
        assert notes()[-1].startswith("generation.temperature = 0.3")
        await send(pilot, "/system Be brief.")
        assert chat.conversation.system_prompt == "Be brief."
        await send(pilot, "hello")
        await send(pilot, f"/save {tmp_path / 'saved.toml'}")
        saved = load_conversation_file(tmp_path / "saved.toml")
        assert saved.system_prompt == "Be brief." and len(saved.messages) == 2
        await send(pilot, f"/export {tmp_path / 'chat.md'}")
        markdown = (tmp_path / "chat.md").read_text()
        assert "> Be brief." in markdown and "You said: hello" in markdown
        await send(pilot, "/clear")
        assert chat.conversation.messages == [] and chat.conversation.id != saved.id
        await send(pilot, f"/load {tmp_path / 'saved.toml'}")
        assert [m.content for m in chat.conversation.messages][0] == "hello"
        assert len(chat.chat_log.query(AssistantMessage)) == 1
        await send(pilot, "/model")
        assert "echo · scripted · cpu" in notes()[-1]
        await send(pilot, "/bogus")
        assert "unknown command /bogus" in notes()[-1]
        await send(pilot, "/set temperature hot")
        assert app.options.sampling.temperature == 0.3
        await send(pilot, "/config save")
        text = config_file.read_text()
        assert "temperature = 0.3   # warm" in text and "# my settings: keep this comment" in text
        await send(pilot, "/help")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.press("escape")
        # prompt recall: Up walks back through what was typed (slash commands included)
        chat.prompt.focus()
        await pilot.press("up")
        assert chat.prompt.text == "/help"
        await pilot.press("up", "up")
        assert chat.prompt.text == "/set temperature hot"
        await pilot.press("down", "down", "down")
        assert chat.prompt.text == ""


async def test_system_prompt_per_conversation(config_file: Path) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        chat = await started(pilot)
        await pilot.press("f6")
        await wait_for(pilot, lambda: isinstance(app.screen, TextPromptScreen))
        await pilot.press(*"You are a pirate.", "ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
        first = chat.conversation
        assert first.system_prompt == "You are a pirate."
        await send(pilot, "ahoy")
        assert first.chat_messages()[0].content == "You are a pirate."
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert chat.conversation.system_prompt == ""
        assert load_conversation_file(first.path).system_prompt == "You are a pirate."


async def test_settings_edit_and_save_keeps_comments_and_applies_live(config_file: Path) -> None:
    app = make_app(config_file)
    async with app.run_test(size=(120, 50)) as pilot:
        await started(pilot)
        await pilot.press("f3")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "SettingsScreen")
        editor = app.screen.query_one(f"#{widget_id('generation.temperature')}", Input)
        editor.focus()
        await pilot.press("home", "ctrl+k", *"0.2")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
        assert app.options.sampling.temperature == 0.2
    text = config_file.read_text()
    assert "temperature = 0.2   # warm" in text and "# my settings: keep this comment" in text


async def test_theme_choice_is_saved_in_the_config(config_file: Path) -> None:
    from app.tui_main import theme_saver

    app = make_app(config_file)
    app.options.save_theme = theme_saver(app.options.config)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        app.theme = "nord"
        await pilot.pause()
    assert 'theme = "nord"' in config_file.read_text()
    assert "# my settings: keep this comment" in config_file.read_text()
    assert load_config(config_file, env={}).get("ui.theme") == "nord"


async def test_save_and_load_history_flags(config_file: Path, tmp_path: Path) -> None:
    start = new_conversation("Answer in French.")
    start.messages += [Message("user", "earlier question"),
                       Message("assistant", "earlier answer")]
    save_conversation_file(start, tmp_path / "start.toml")
    out = tmp_path / "out.toml"
    app = build_app(tui_args("--config", str(config_file), "--model",
                             "scripted://echo?rate=0&echo=1", "--backend", "scripted",
                             "--load-history", str(tmp_path / "start.toml"),
                             "--save-history", str(out)))
    async with app.run_test(size=SIZE) as pilot:
        chat = await started(pilot)
        assert [m.content for m in chat.conversation.messages] == ["earlier question",
                                                                  "earlier answer"]
        assert len(chat.chat_log.query(AssistantMessage)) == 1
        await send(pilot, "and now?")
        sent = chat.conversation.chat_messages()
        assert [m.role for m in sent] == ["system", "user", "assistant", "user", "assistant"]
        # the model saw the loaded conversation: its prompt counts every earlier message
        assert chat.conversation.messages[-1].metrics["prompt_tokens"] > 20
        await pilot.press("ctrl+q")
        await pilot.pause(0.3)
    saved = load_conversation_file(out)
    assert saved.system_prompt == "Answer in French."
    assert [m.content for m in saved.messages][:3] == ["earlier question", "earlier answer",
                                                       "and now?"]
    assert saved.messages[3].content.startswith("You said: and now?")
    # the file it started from is never written
    assert len(load_conversation_file(tmp_path / "start.toml").messages) == 2


async def test_quit_mid_reply_saves_it_interrupted(config_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.toml"
    app = make_app(config_file, "scripted://slow?rate=50&tokens=3000", save_history=out)
    async with app.run_test(size=SIZE) as pilot:
        chat = await started(pilot)
        await pilot.press(*"go", "enter")
        await wait_for(pilot, lambda: chat.reply_view is not None
                       and chat.reply_view.shown_chars > 10)
        os.kill(os.getpid(), signal.SIGTERM)  # the app's own handler takes it
        await wait_for(pilot, lambda: app._engine_closed, timeout=10)
    assert app.signalled == signal.SIGTERM
    saved = load_conversation_file(out)
    assert [m.role for m in saved.messages] == ["user", "assistant"]
    assert saved.messages[1].interrupted and saved.messages[1].content
    dir_file = load_conversation_file(next((tmp_path / "history").glob("*.toml")))
    assert dir_file.messages[1].interrupted


def test_save_history_refuses_a_foreign_file(config_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "notes.toml"
    target.write_text("my notes, not a conversation\n")
    from engine.errors import LampchatError

    with pytest.raises(LampchatError, match="not overwritten"):
        build_app(tui_args("--config", str(config_file), "--save-history", str(target)))
    assert target.read_text() == "my notes, not a conversation\n"


async def test_long_conversation_mounts_a_window_and_follow_stops_when_scrolled_up(
        config_file: Path) -> None:
    app = make_app(config_file, "scripted://slow?rate=60&tokens=2000")
    app.options.log_window = 4
    loaded = new_conversation()
    for i in range(10):
        loaded.messages += [Message("user", f"question {i}"), Message("assistant", f"answer {i}")]
    app.options.load_history = loaded
    async with app.run_test(size=SIZE) as pilot:
        chat = await started(pilot)
        log = chat.chat_log
        assert len(log.query(UserMessage)) == 2 and log.hidden_count == 16
        log.focus()
        await pilot.press("home")
        await wait_for(pilot, lambda: log.hidden_count == 12)
        assert len(log.query(UserMessage)) == 4
        await wait_for(pilot, lambda: log.scroll_y <= 0)
        # a streaming reply is followed while the view is at the bottom...
        chat.prompt.focus()
        await pilot.press(*"go on", "enter")
        await wait_for(pilot, lambda: chat.reply_view is not None
                       and chat.reply_view.shown_chars > 300 and log.max_scroll_y > 0)
        await pilot.pause(0.2)
        assert log.scroll_y == log.max_scroll_y
        # ...and not once the user scrolls up
        log.scroll_to(y=0, animate=False)
        await pilot.pause(0.5)
        grown = chat.reply_view.shown_chars
        await wait_for(pilot, lambda: chat.reply_view.shown_chars > grown + 100)
        assert log.scroll_y == 0 < log.max_scroll_y
        await pilot.press("escape")
        await wait_for(pilot, lambda: chat.generation is None)


async def test_sidebar_resumes_a_conversation_saved_by_an_earlier_session(
        config_file: Path, tmp_path: Path) -> None:
    earlier = HistoryStore(tmp_path / "history")
    conv = earlier.create(system_prompt="Be terse.")
    earlier.append(conv, "user", "old question")
    earlier.append(conv, "assistant", "old answer", model="demo", backend="scripted",
                   metrics={"completion_tokens": 2, "decode_tps": 10.0, "ttft_ms": 5.0})
    app = make_app(config_file, "scripted://echo?rate=0&echo=1")
    async with app.run_test(size=SIZE) as pilot:
        chat = await started(pilot)
        await pilot.press("ctrl+b")
        sidebar = chat.query_one(ConversationSidebar)
        await wait_for(pilot, lambda: "old question" in [s.title for s in sidebar.summaries])
        sidebar.list_view.index = [s.title for s in sidebar.summaries].index("old question")
        await pilot.press("enter")
        await wait_for(pilot, lambda: chat.conversation.id == conv.id)
        assert chat.conversation.system_prompt == "Be terse."
        old_view = chat.chat_log.last_view("assistant")
        assert old_view.data.content == "old answer" and "10.0 tok/s" in meta(old_view)
        await send(pilot, "new question")
        assert chat.conversation.chat_messages()[0].content == "Be terse."
    saved = load_conversation_file(conv.path)
    assert [m.content for m in saved.messages][:3] == ["old question", "old answer",
                                                       "new question"]
    assert saved.messages[3].content.startswith("You said: new question")


async def test_ctrl_j_inserts_a_newline_and_enter_sends(config_file: Path) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        chat = await started(pilot)
        chat.prompt.focus()
        await pilot.press("a", "ctrl+j", "b")
        assert chat.prompt.text == "a\nb"
        await pilot.press("enter")
        await wait_for(pilot, lambda: chat.generation is None
                       and len(chat.conversation.messages) == 2)
        assert chat.conversation.messages[0].content == "a\nb"


async def test_set_changes_only_that_key_and_keeps_command_line_flags(config_file: Path) -> None:
    app = build_app(tui_args("--config", str(config_file), "--model", FAST, "--backend",
                             "scripted", "--max-tokens", "7", "--threads", "1"))
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await send(pilot, "/set temperature 0.3")
        await send(pilot, "/set top_k 5")
        assert app.options.sampling.temperature == 0.3 and app.options.sampling.top_k == 5
        assert app.options.sampling.max_tokens == 7 and app.options.load.n_threads == 1
        assert app.options.backend == "scripted"
        await send(pilot, "/set ctx 2048")
        assert app.options.load.n_ctx == 2048 and app.options.load.n_threads == 1


async def test_unexpected_error_exits_without_a_traceback_and_saves(
        config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: ChatScreen) -> None:
        raise RuntimeError("boom in a handler")

    monkeypatch.setattr(ChatScreen, "action_copy_reply", broken)
    out = tmp_path / "out.toml"
    app = make_app(config_file, save_history=out)
    app.options.quiet_errors = True  # what `lampchat` does
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await send(pilot, "keep me")
        app.call_later(app.chat.action_copy_reply)  # fails inside the app's message loop
        for _ in range(200):  # not pilot.pause: the app is closing its message loops
            if app.return_code == 1:
                break
            await asyncio.sleep(0.05)
    assert app.unexpected_error == "RuntimeError: boom in a handler"
    assert app._exit_renderables == []  # nothing printed on the terminal
    assert [m.content for m in load_conversation_file(out).messages] == ["keep me", REPLY]


async def test_ctrl_down_retraces_ctrl_up_through_three_models(config_file: Path) -> None:
    """With three models used, Ctrl+Up cycled all three while Ctrl+Down flipped between two
    (each load reordered the recent list it walked)."""
    app = make_app(config_file, "scripted://alpha?rate=0")
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        for name in ("beta", "gamma"):
            app.load_model(ModelSpec(f"scripted://{name}?rate=0", "scripted"))
            await wait_for(pilot, lambda name=name: loaded(app, name))
        seen = []
        for key in ("ctrl+down",) * 3 + ("ctrl+up",) * 3:
            before = app.engine.info.path
            await pilot.press(key)
            await wait_for(pilot, lambda before=before: app.engine.info.path != before
                           and not app.loading)
            seen.append(app.engine.info.name)
        assert len(set(seen[:3])) == 3  # Ctrl+Down visits all three
        assert seen[3:5] == seen[:2][::-1] and seen[5] == "gamma"  # Ctrl+Up walks back
