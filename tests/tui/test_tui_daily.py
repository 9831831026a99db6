"""The TUI as a daily driver (issue 22): narrow terminals, scrolling from the keyboard, picking
up where you left off, a welcome line, a safer delete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Button, Footer, Static

from app.history import Message
from app.history_store import HistoryStore
from app.options import TuiOptions
from app.screens.chat import PANEL_MIN_WIDTH
from app.screens.dialogs import ConfirmScreen
from app.tui import LampchatApp
from app.tui_store import ChatStore
from tests.support import scripted_backend
from tests.support.tui_chat import wait_for


def make_app(monkeypatch: pytest.MonkeyPatch, store: ChatStore | None = None,
             model: str = "scripted://demo?rate=0", **options: Any) -> LampchatApp:
    scripted_backend.install(monkeypatch)
    return LampchatApp(TuiOptions(model=model, backend="scripted", **options),
                       store or ChatStore())


async def ready(pilot: Any) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.engine.info is not None and not app.loading)


async def say(pilot: Any, text: str) -> None:
    chat = pilot.app.chat
    n = len(chat.conversation.messages)
    chat.prompt.focus()
    chat.prompt.load_text(text)
    await pilot.press("enter")
    await wait_for(pilot, lambda: chat.generation is None and len(chat.conversation.messages)
                   == n + 2)


async def test_at_80x24_the_panel_steps_aside_and_the_footer_keeps_every_f_key(monkeypatch) -> None:
    """The metrics panel (on by default) left the chat 36 columns at 80x24 and the footer lost
    F2-F5. Below PANEL_MIN_WIDTH it hides; F4 lays it over the chat; wide again, it is back."""
    app = make_app(monkeypatch, show_metrics=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        chat = app.chat
        assert not chat.metrics_panel.display
        assert chat.chat_log.size.width >= 76 and chat.prompt.size.width >= 70
        footer = chat.query_one(Footer)
        shown = [str(k.render()) for k in footer.query("FooterKey")]
        for key in ("f1", "f2", "f3", "f4", "f5", "^n", "^b"):
            assert any(text.strip().startswith(key) for text in shown), (key, shown)
        right = max(k.region.right for k in footer.query("FooterKey"))
        assert right <= 80 - len("^p palette")  # nothing cut at the edge
        await pilot.press("f4")
        await pilot.pause(0.1)
        assert chat.metrics_panel.display and chat.metrics_panel.has_class("-overlay")
        assert chat.chat_log.size.width >= 76  # over the chat, not beside it
        await pilot.press("f4")
        await pilot.pause(0.1)
        assert not chat.metrics_panel.display
        await pilot.resize_terminal(PANEL_MIN_WIDTH + 20, 40)
        await pilot.pause(0.2)
        assert chat.metrics_panel.display and not chat.metrics_panel.has_class("-overlay")
        for size in ((60, 20), (40, 12), (80, 24)):
            await pilot.resize_terminal(*size)
            await pilot.pause(0.1)
            assert app.is_running


async def test_page_keys_scroll_the_conversation_from_the_input(monkeypatch) -> None:
    app = make_app(monkeypatch, model="scripted://demo?rate=60")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        chat = app.chat
        for text in ("one", "two", "three"):
            await say(pilot, text)
        log = chat.chat_log
        await pilot.pause(0.1)
        assert log.scroll_y == log.max_scroll_y > 0
        marker = chat.query_one("#new-text", Static)
        assert not marker.display
        await pilot.press("pageup")
        await pilot.pause(0.1)
        assert app.focused is chat.prompt  # the input keeps the focus
        assert log.scroll_y < log.max_scroll_y and marker.display
        await pilot.press("ctrl+home")
        await pilot.pause(0.1)
        assert log.scroll_y == 0
        chat.prompt.load_text("four")
        await pilot.press("enter")
        await wait_for(pilot, lambda: chat.generation is not None)
        await pilot.press("ctrl+home")  # scrolled up while it streams: the view stays
        await wait_for(pilot, lambda: chat.generation is None)
        assert log.scroll_y == 0 and marker.display
        await pilot.press("ctrl+end")
        await pilot.pause(0.1)
        assert log.scroll_y == log.max_scroll_y and not marker.display
        await pilot.press("pageup", "pagedown")
        await pilot.pause(0.1)
        assert log.scroll_y == log.max_scroll_y


async def test_an_empty_chat_says_what_is_loaded_and_where_to_go(monkeypatch) -> None:
    app = make_app(monkeypatch)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        welcome = app.chat.query_one("#welcome", Static)
        await wait_for(pilot, lambda: "demo" in str(welcome.render()))
        text = str(welcome.render())
        assert "Chatting with demo." in text and "F2" in text and "F1" in text
        await say(pilot, "hi")
        assert not welcome.display
        await pilot.press("ctrl+n")
        await pilot.pause(0.1)
        assert welcome.display


async def test_delete_names_the_conversation_and_starts_on_keep(monkeypatch,
                                                                  tmp_path: Path) -> None:
    store = ChatStore(HistoryStore(tmp_path / "history"))
    app = make_app(monkeypatch, store)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await say(pilot, "Tea or coffee?")
        await pilot.press("ctrl+b")
        await pilot.pause(0.2)
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        dialog = app.screen
        assert "'Tea or coffee?'" in dialog.question
        assert app.focused is dialog.query_one("#no", Button)
        await pilot.press("enter")  # Enter on the focused button keeps it
        await pilot.pause(0.2)
        assert not isinstance(app.screen, ConfirmScreen)
        assert [c.title for c in store.list()] == ["Tea or coffee?"]


async def test_starting_again_reopens_the_last_conversation(monkeypatch, tmp_path: Path) -> None:
    history = tmp_path / "history"
    first = ChatStore(HistoryStore(history))
    old = first.new()
    first.append(old, Message("user", "older question"))
    last = first.new()
    first.append(last, Message("user", "What was I asking?"))
    first.append(last, Message("assistant", "About tea."))
    app = make_app(monkeypatch, ChatStore(HistoryStore(history)), resume=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        assert app.chat.conversation.id == last.id
        assert [m.content for m in app.chat.conversation.messages] == [
            "What was I asking?", "About tea."]
        await pilot.press("ctrl+n", "ctrl+n", "ctrl+n")  # empty chats are never listed
        await pilot.pause(0.1)
        assert [c.n_messages for c in app.store.list() if c.n_messages == 0] == [0]
    fresh = make_app(monkeypatch, ChatStore(HistoryStore(history)), resume=False)
    async with fresh.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        assert not fresh.chat.conversation.messages
    # --save-history F starts the conversation F holds, not an old one copied into F
    saving = make_app(monkeypatch, ChatStore(HistoryStore(history), tmp_path / "new.toml"),
                      resume=True)
    async with saving.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        assert not saving.chat.conversation.messages


async def test_enter_while_a_reply_streams_queues_the_message(monkeypatch) -> None:
    """It was refused ("A reply is streaming"); now it waits, shown in the status bar, and
    goes when the reply ends; Esc stops the reply and gives the queued text back."""
    app = make_app(monkeypatch, model="scripted://demo?rate=80")
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        chat = app.chat
        chat.prompt.load_text("first")
        await pilot.press("enter")
        await wait_for(pilot, lambda: chat.generation is not None)
        chat.prompt.load_text("second")
        await pilot.press("enter")
        queued = chat.query_one("#queued", Static)
        assert chat.queued == "second" and queued.display and not chat.prompt.text
        assert "queued: 'second'" in str(queued.render())
        await wait_for(pilot, lambda: len(chat.conversation.messages) == 4
                       and chat.generation is None, timeout=30)
        assert [m.content for m in chat.conversation.messages][::2] == ["first", "second"]
        assert not queued.display
        chat.prompt.load_text("third")
        await pilot.press("enter")
        await wait_for(pilot, lambda: chat.generation is not None)
        chat.prompt.load_text("fourth")
        await pilot.press("enter")
        await pilot.press("escape")  # stops the reply, the queued text comes back
        await wait_for(pilot, lambda: chat.generation is None)
        await pilot.pause(0.2)
        assert chat.prompt.text == "fourth" and chat.queued is None
        assert [m.content for m in chat.conversation.messages][::2] == [
            "first", "second", "third"]


async def test_esc_clears_the_input_and_drafts_stay_with_their_conversation(monkeypatch) -> None:
    app = make_app(monkeypatch)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        chat = app.chat
        await say(pilot, "hello")
        first = chat.conversation
        chat.prompt.load_text("half a thought")
        await pilot.press("ctrl+n")
        await pilot.pause(0.1)
        assert chat.prompt.text == ""  # a new conversation starts empty
        chat.prompt.load_text("another draft")
        await pilot.press("escape")
        assert chat.prompt.text == ""
        await pilot.press("ctrl+z")
        assert chat.prompt.text == "another draft"
        await chat.show_conversation(app.store.get(first.id))
        await pilot.pause(0.1)
        assert chat.prompt.text == "half a thought"


def test_chart_captions_carry_the_scale() -> None:
    """The panel's charts were bare blocks: their captions give the last value and the range
    the chart spans."""
    from widgets.metrics_panel import chart_caption

    assert chart_caption(True, []) == "tok/s"
    assert chart_caption(True, [48.0]) == "tok/s 48.0"
    assert chart_caption(True, [48.0, 55.25, 52.1]) == "tok/s 52.1 · replies 48.0–55.2"
    assert chart_caption(False, [900.0, 12_500.0]) == "TTFT 12.5 s · replies 900 ms–12.5 s"


async def test_regenerating_with_a_fixed_seed_moves_to_the_next_seed(monkeypatch) -> None:
    """With `generation.seed` fixed, Ctrl+R asked for the same seed and got the same reply."""
    from engine.types import SamplingParams

    app = make_app(monkeypatch, sampling=SamplingParams(seed=41))
    seeds: list[int | None] = []
    original = app.engine.generate

    def recording(messages, sampling, *args, **kwargs):
        seeds.append(sampling.seed)
        return original(messages, sampling, *args, **kwargs)

    monkeypatch.setattr(app.engine, "generate", recording)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await say(pilot, "hi")
        for _ in range(2):
            n = len(seeds)
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda n=n: len(seeds) > n and app.chat.generation is None)
        await say(pilot, "again")
        assert seeds == [41, 42, 43, 41]
        assert any("seed 43" in str(n.message) for n in app._notifications)


async def test_ctrl_f_finds_text_in_the_conversation(monkeypatch) -> None:
    from textual.widgets import Input, Static

    from widgets.messages import MessageView

    app = make_app(monkeypatch)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        chat = app.chat
        for text in ("lighthouse one", "nothing here", "the LIGHTHOUSE again"):
            await say(pilot, text)
        await pilot.press("ctrl+f")
        find, row = chat.query_one("#find", Input), chat.query_one("#find-row")
        status = chat.query_one("#find-status", Static)
        assert row.display and app.focused is find
        await pilot.press(*"lighthouse")
        await pilot.pause(0.1)
        marked = [v.data.content for v in chat.query(MessageView) if v.has_class("-match")]
        assert marked == ["lighthouse one", "the LIGHTHOUSE again"]
        current = lambda: [v.data.content for v in chat.query(MessageView)  # noqa: E731
                           if v.has_class("-current-match")]
        assert current() == ["the LIGHTHOUSE again"]  # the newest first
        assert str(status.render()) == "1 of 2"  # in the bar, not a toast that goes
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert current() == ["lighthouse one"] and str(status.render()) == "2 of 2"
        assert chat.chat_log.scroll_y < chat.chat_log.max_scroll_y  # scrolled up to it
        await pilot.press("down")
        await pilot.pause(0.1)
        assert current() == ["the LIGHTHOUSE again"]
        await pilot.press(*"xyz")
        await pilot.pause(0.1)
        assert str(status.render()) == "no match" and not current()
        await pilot.press("escape")  # closes the bar, not a reply
        await pilot.pause(0.1)
        assert not row.display and app.focused is chat.prompt
        assert not [v for v in chat.query(MessageView) if v.has_class("-match")]


async def test_ctrl_f_in_the_list_finds_conversations_by_their_text(monkeypatch,
                                                                    tmp_path: Path) -> None:
    from app.screens.dialogs import TextPromptScreen
    from widgets.sidebar import ConversationSidebar

    history = tmp_path / "history"
    first = ChatStore(HistoryStore(history))
    for words in ("about the lighthouse", "about tea", "LIGHTHOUSE keepers"):
        conv = first.new()
        first.append(conv, Message("user", words))
    app = make_app(monkeypatch, ChatStore(HistoryStore(history)))
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+b")
        await pilot.pause(0.2)
        sidebar = app.chat.query_one(ConversationSidebar)
        assert len(sidebar.summaries) == 4  # three saved and the new one
        await pilot.press("ctrl+f")
        await wait_for(pilot, lambda: isinstance(app.screen, TextPromptScreen))
        await pilot.press(*"lighthouse", "enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, TextPromptScreen))
        await pilot.pause(0.2)
        assert sorted(s.title for s in sidebar.summaries) == [
            "LIGHTHOUSE keepers", "about the lighthouse"]
        await pilot.press("ctrl+f")
        await wait_for(pilot, lambda: isinstance(app.screen, TextPromptScreen))
        await pilot.press("ctrl+u", "enter")  # empty: every conversation again
        await wait_for(pilot, lambda: not isinstance(app.screen, TextPromptScreen))
        await pilot.pause(0.2)
        assert len(sidebar.summaries) == 4


async def test_any_message_can_be_copied_edited_or_deleted(monkeypatch, tmp_path: Path) -> None:
    """Only the last reply could be copied or edited: Shift+Tab from the input reaches the
    messages; Up/Down move; c copies, e edits and resends from there (the earlier branch is
    kept as a conversation of its own), d deletes."""
    from widgets.messages import MessageView

    store = ChatStore(HistoryStore(tmp_path / "history"))
    app = make_app(monkeypatch, store)
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        chat = app.chat
        for text in ("first question", "second question"):
            await say(pilot, text)
        chat.prompt.focus()
        await pilot.press("shift+tab")
        await pilot.pause(0.1)
        assert isinstance(app.focused, MessageView) and app.focused.data.role == "assistant"
        await pilot.press("up", "up", "up")  # to the first question
        await pilot.pause(0.1)
        assert app.focused.data.content == "first question"
        await pilot.press("c")
        assert app.clipboard == "first question"
        await pilot.press("e")
        await pilot.pause(0.3)
        assert chat.conversation.messages == [] and chat.prompt.text == "first question"
        assert app.focused is chat.prompt
        titles = [c.title for c in store.list()]
        assert any(t.endswith("(before an edit)") for t in titles)  # the old branch is kept
        chat.prompt.load_text("a better question")
        await pilot.press("enter")
        await wait_for(pilot, lambda: chat.generation is None
                       and len(chat.conversation.messages) == 2)
        await pilot.press("shift+tab", "up")  # the question
        await pilot.pause(0.1)
        await pilot.press("d")
        await pilot.pause(0.3)
        assert [m.role for m in chat.conversation.messages] == ["assistant"]
        reloaded = store.history.load(chat.conversation.path)
        assert [m.role for m in reloaded.messages] == ["assistant"]


async def test_regenerated_replies_stay_as_versions_to_flip_between(monkeypatch,
                                                                    tmp_path: Path) -> None:
    """Ctrl+R threw the earlier reply away: it stays as a version; < and > on the focused
    reply flip between them, the conversation continues from the one shown, and the file
    keeps all of them and the choice (also when reopened)."""
    from app.history import load_conversation_file
    from tests.support.tui_chat import meta
    from widgets.messages import AssistantMessage

    store = ChatStore(HistoryStore(tmp_path / "history"))
    app = make_app(monkeypatch, store, model="scripted://demo?rate=0&numbered=1")
    sent: list[list[str]] = []
    original = app.engine.generate

    def recording(messages, *args, **kwargs):
        sent.append([m.content for m in messages])
        return original(messages, *args, **kwargs)

    monkeypatch.setattr(app.engine, "generate", recording)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        chat = app.chat
        await say(pilot, "hi")
        for _ in range(2):
            n = len(sent)
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda n=n: len(sent) > n and chat.generation is None
                           and len(chat.conversation.messages) == 2)
        reply = chat.conversation.messages[-1]
        assert reply.content.startswith("Reply 3.") and reply.choice == 2
        assert [m.content[:8] for m in reply.alternatives] == ["Reply 1.", "Reply 2."]
        assert meta(chat.chat_log.last_view("assistant")).startswith("‹ 3/3 › · demo")
        await pilot.press("shift+tab")
        await pilot.pause(0.1)
        assert isinstance(app.focused, AssistantMessage)
        await pilot.press("less_than_sign", "less_than_sign", "less_than_sign")  # stops at 1
        await pilot.pause(0.3)
        view = chat.chat_log.last_view("assistant")
        assert view.data.content.startswith("Reply 1.") and meta(view).startswith("‹ 1/3 ›")
        await pilot.press("greater_than_sign")
        await pilot.pause(0.3)
        assert chat.chat_log.last_view("assistant").data.content.startswith("Reply 2.")
        path = chat.conversation.path
        saved = load_conversation_file(path).messages[-1]
        assert saved.content.startswith("Reply 2.") and saved.choice == 1
        assert [v.content[:8] for v in saved.versions()] == ["Reply 1.", "Reply 2.", "Reply 3."]
        await say(pilot, "go on")  # continues from the version shown
        assert sent[-1][1].startswith("Reply 2.") and sent[-1][2] == "go on"
        # an earlier reply's version cannot change under the messages that followed it
        await pilot.press("shift+tab", "up", "up")
        await pilot.pause(0.1)
        await pilot.press("less_than_sign")
        await pilot.pause(0.2)
        assert chat.conversation.messages[1].content.startswith("Reply 2.")
        assert any("Only the last reply" in str(n.message) for n in app._notifications)
    # reopened: the versions and the choice come back
    app = make_app(monkeypatch, ChatStore(HistoryStore(tmp_path / "history")), resume=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await wait_for(pilot, lambda: app.chat.conversation is not None
                       and len(app.chat.conversation.messages) == 4)
        views = list(app.chat.query(AssistantMessage))
        assert meta(views[0]).startswith("‹ 2/3 ›")



async def test_left_and_right_scroll_a_replys_code_sideways(monkeypatch, tmp_path: Path) -> None:
    """A finished reply's long code line could only be scrolled with a mouse, and nothing
    showed it was cut: on the focused reply, Right/Left scroll its code; the cut line ends in
    `→` until its end is in view."""
    from widgets.code_fence import MORE, CodeFence
    from widgets.messages import AssistantMessage

    code = "x = [" + ", ".join(str(n) for n in range(30)) + "]  # the end"
    history = tmp_path / "history"
    first = ChatStore(HistoryStore(history))
    conversation = first.new()
    first.append(conversation, Message("user", "a list please"))
    first.append(conversation, Message("assistant", f"Here:\n\n```python\n{code}\n```\n"))
    app = make_app(monkeypatch, ChatStore(HistoryStore(history)), resume=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await wait_for(pilot, lambda: app.chat.query(CodeFence))
        fence = app.chat.query_one(CodeFence)

        def row() -> str:
            return next(line for line in pilot.app.screen._compositor.render_strips()
                        if "x = [" in line.text or ", 2" in line.text).text

        await pilot.pause(0.1)
        assert row().rstrip().endswith(MORE) and fence.is_cut
        app.chat.prompt.focus()
        await pilot.press("shift+tab")
        await pilot.pause(0.1)
        assert isinstance(app.focused, AssistantMessage)
        for _ in range(20):
            await pilot.press("right")
        await pilot.pause(0.1)
        assert fence.scroll_x > 0 and not fence.is_cut
        assert "# the end" in row() and not row().rstrip().endswith(MORE)
        for _ in range(20):
            await pilot.press("left")
        await pilot.pause(0.1)
        assert fence.scroll_x == 0 and row().rstrip().endswith(MORE)


async def test_deleting_a_conversation_in_the_list_deletes_its_saved_kv_state(
        monkeypatch, tmp_path: Path) -> None:
    from engine.kv_store import KVState, KVStateStore, model_identity
    from engine.worker import EngineWorker

    scripted_backend.install(monkeypatch)
    history = tmp_path / "history"
    store = ChatStore(HistoryStore(history))
    kept, doomed = store.new(), store.new()
    store.append(kept, Message("user", "keep me"))
    store.append(doomed, Message("user", "delete me"))
    states = KVStateStore(tmp_path / "kv", 1 << 20)
    for conversation in (kept, doomed):
        states.save(conversation.id, model_identity("m", "scripted"), KVState((1,), b"x"),
                    background=False)
    app = LampchatApp(TuiOptions(model="scripted://demo?rate=0", backend="scripted"), store,
                      EngineWorker(kv_store=states))
    async with app.run_test(size=(100, 30)) as pilot:
        await ready(pilot)
        await pilot.press("ctrl+b")
        sidebar = app.chat.query_one("#sidebar")
        await wait_for(pilot, lambda: len(app.chat._summaries) >= 2)
        index = [s.id for s in app.chat._summaries].index(doomed.id)
        sidebar.list_view.index = index
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: not (tmp_path / "kv" / f"{doomed.id}.kvstate").exists())
        assert (tmp_path / "kv" / f"{kept.id}.kvstate").exists()
