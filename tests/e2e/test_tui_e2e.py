"""End to end: the real `lampchat` TUI in a real terminal (tmux) with the real default model.

One session, as a user would run it: send a prompt and watch the reply stream with its metrics
line, stop a long reply with Esc (the partial text stays, marked stopped, and the input works),
open the model picker (F2) and the settings (F3) and leave them, then quit with Ctrl+Q: the
process exits 0, the terminal is restored, no traceback reached the screen, the log went to
the file `app.logs` names, and the conversation was auto-saved as it was shown. And a
conversation opened with `--load-history` is shown and continued with its context.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.history import Message, load_conversation_file, new_conversation, save_conversation_file
from tests.support.tmux_driver import TmuxTerminal, isolated_env, lampchat_argv, tmux_binary
from tests.support.tui_screen import (
    FINAL_META,
    STREAMING_META,
    assistant_replies,
    input_box_text,
    words,
    write_config,
)

pytestmark = [pytest.mark.real_model, pytest.mark.tmux, pytest.mark.slow,
              pytest.mark.skipif(tmux_binary() is None, reason="tmux is not installed")]

LOAD_TIMEOUT_S = 120.0
REPLY_TIMEOUT_S = 180.0
SHORT_PROMPT = "Say hello in one sentence."
LONG_PROMPT = ("Tell me a very long story about a lighthouse keeper and her cat. "
               "Make it at least ten paragraphs.")
AFTER_STOP_PROMPT = "Name one colour."


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[TmuxTerminal]:
    """A private tmux server; always killed at the end."""
    term = TmuxTerminal(tmp_path, width=200, height=50)
    try:
        yield term
    finally:
        term.close()


def test_chat_stop_picker_settings_and_quit_in_a_real_terminal(
    tmp_path: Path, terminal: TmuxTerminal
) -> None:
    home = tmp_path / "home"
    env = isolated_env(home)
    write_config(home, max_tokens=300)
    log_file = Path(env["LAMPCHAT_LOG_FILE"])
    terminal.start(lampchat_argv(), env)

    # the model loads in the background; the status bar names it, backend and device
    terminal.wait_for(re.compile(r"· llama\.cpp · "), LOAD_TIMEOUT_S, "the model to load")
    assert terminal.state().alternate_screen  # a full-screen app

    # 1. a prompt: the reply streams in, then its metrics line replaces the live one
    terminal.type_text(SHORT_PROMPT)
    terminal.send_keys("Enter")
    screen = terminal.wait_for(lambda s: len(assistant_replies(s)) == 1
                               and FINAL_META.search(assistant_replies(s)[0].meta),
                               REPLY_TIMEOUT_S, "the first reply's metrics line")
    reply = assistant_replies(screen)[0]
    assert SHORT_PROMPT in screen
    assert words(reply.body), f"empty reply:\n{screen}"
    meta = FINAL_META.search(reply.meta)
    assert meta is not None
    assert "llama.cpp" in reply.meta and "Smollm2" in reply.meta.title().replace(" ", "")
    assert float(meta["tps"].replace(",", "")) > 0 and int(meta["tokens"]) > 0
    assert "stopped" not in reply.meta

    # 2. a long reply, seen streaming (its text grows), stopped with Esc
    terminal.type_text(LONG_PROMPT)
    terminal.send_keys("Enter")

    def streaming(s: str) -> bool:
        replies = assistant_replies(s)
        return len(replies) == 2 and bool(STREAMING_META.search(replies[1].meta))

    first = terminal.wait_for(lambda s: streaming(s) and len(words(assistant_replies(s)[1].body))
                              >= 2, REPLY_TIMEOUT_S, "the long reply to stream")
    first_words = words(assistant_replies(first)[1].body)
    later = terminal.wait_for(
        lambda s: streaming(s) and len(words(assistant_replies(s)[1].body)) > len(first_words),
        REPLY_TIMEOUT_S, "more of the long reply",
    )
    streamed = words(assistant_replies(later)[1].body)
    # it grows at the end only (the last word shown may have been cut at a token boundary)
    assert streamed[: len(first_words) - 1] == first_words[:-1]
    assert streamed[len(first_words) - 1].startswith(first_words[-1])
    terminal.send_keys("Escape")
    stopped_screen = terminal.wait_for(
        lambda s: len(assistant_replies(s)) == 2 and "stopped" in assistant_replies(s)[1].meta,
        60, "the reply to be marked stopped",
    )
    stopped = assistant_replies(stopped_screen)[1]
    assert FINAL_META.search(stopped.meta), stopped.meta  # metrics of the partial reply
    kept = words(stopped.body)
    assert kept[: len(streamed) - 1] == streamed[:-1]  # the partial text is kept
    assert kept[len(streamed) - 1].startswith(streamed[-1])
    assert int(FINAL_META.search(stopped.meta)["tokens"]) < 300  # it ended early
    time.sleep(1.0)  # nothing more arrives after the stop
    assert words(assistant_replies(terminal.capture())[1].body) == kept

    # the input has focus again and works: type, see it, send, get a reply
    terminal.type_text(AFTER_STOP_PROMPT)
    terminal.wait_for(lambda s: AFTER_STOP_PROMPT in input_box_text(s), 30, "typed text")
    terminal.send_keys("Enter")
    terminal.wait_for(lambda s: len(assistant_replies(s)) == 3
                      and FINAL_META.search(assistant_replies(s)[2].meta),
                      REPLY_TIMEOUT_S, "a reply after the stop")
    assert AFTER_STOP_PROMPT not in input_box_text(terminal.capture())  # sent, input cleared

    # 3. the model picker lists the default model; Esc leaves it
    terminal.send_keys("F2")
    picker = terminal.wait_for(lambda s: "Esc close" in s and "(default)" in s, 60,
                               "the model picker with the default model")
    assert re.search(r"●\s+\S", picker), "the loaded model is not marked"
    terminal.send_keys("Escape")
    terminal.wait_for(lambda s: "Esc close" not in s and len(assistant_replies(s)) == 3, 30,
                      "the chat after the picker")

    # 4. the settings screen shows the config form; Esc leaves it
    terminal.send_keys("F3")
    terminal.wait_for(lambda s: "Settings —" in s and "Generation" in s, 60, "the settings")
    terminal.send_keys("Escape")
    terminal.wait_for(lambda s: "Settings —" not in s and len(assistant_replies(s)) == 3, 30,
                      "the chat after the settings")

    # 5. Ctrl+Q: exit 0, terminal restored, no traceback anywhere
    terminal.send_keys("C-q")
    status, state = terminal.wait_exit(60)
    assert status == 0, terminal.capture(history=True)
    assert not state.alternate_screen, "the alternate screen was not left"
    assert state.cursor_visible, "the cursor was left hidden"
    assert not state.mouse_reporting, "mouse reporting was left on"
    everything = terminal.capture(history=True)
    assert "Traceback" not in everything and "Error" not in everything, everything

    # logs went to the file app.logs names (here: $LAMPCHAT_LOG_FILE), and nothing failed
    assert log_file.is_file() and log_file.stat().st_size > 0
    log_text = log_file.read_text(errors="replace")
    assert "llama.cpp" in log_text
    assert "Traceback" not in log_text, log_text[-4000:]

    # auto-save (on by default) kept the conversation, as shown, in the history dir
    files = sorted((home / ".local/share/lampchat/history").glob("*.toml"))
    assert len(files) == 1, files
    conv = load_conversation_file(files[0])
    assert conv.problems == []
    assert [m.role for m in conv.messages] == ["user", "assistant"] * 3
    assert [m.content for m in conv.messages[::2]] == [SHORT_PROMPT, LONG_PROMPT,
                                                       AFTER_STOP_PROMPT]
    replies = conv.messages[1::2]
    assert words(replies[0].content) == words(reply.body)
    assert words(replies[1].content) == kept
    assert [(r.metrics or {}).get("finish_reason") for r in replies] == [
        "stop", "cancelled", "stop"]
    # and the prompts, for Up/Down recall next time
    recall = (home / ".local/state/lampchat/prompt_history").read_text()
    assert all(p in recall for p in (SHORT_PROMPT, LONG_PROMPT, AFTER_STOP_PROMPT))


def test_load_history_continues_the_conversation_in_the_tui(
    tmp_path: Path, terminal: TmuxTerminal
) -> None:
    """`lampchat --load-history F`: the conversation is shown, and the model sees it."""
    home = tmp_path / "home"
    write_config(home, max_tokens=24)
    history = tmp_path / "secret.toml"
    conv = new_conversation("You are a helpful assistant.")
    conv.messages = [
        Message("user", "Remember this: my secret number is 4417."),
        Message("assistant", "Got it. Your secret number is 4417."),
    ]
    save_conversation_file(conv, history)
    before = history.read_bytes()
    saved = tmp_path / "continued.toml"
    terminal.start([*lampchat_argv(), "--load-history", str(history), "--save-history",
                    str(saved)], isolated_env(home))
    screen = terminal.wait_for(re.compile(r"· llama\.cpp · "), LOAD_TIMEOUT_S,
                               "the model to load")
    assert "my secret number is 4417" in screen  # the loaded conversation is shown
    question = "What is my secret number?"
    terminal.type_text(question)
    terminal.send_keys("Enter")
    screen = terminal.wait_for(lambda s: len(assistant_replies(s)) == 2
                               and FINAL_META.search(assistant_replies(s)[1].meta),
                               REPLY_TIMEOUT_S, "the reply to the question")
    assert "4417" in assistant_replies(screen)[1].body  # greedy: read back from the context
    terminal.send_keys("C-q")
    status, _state = terminal.wait_exit(60)
    assert status == 0
    assert history.read_bytes() == before  # --load-history never writes the file it reads
    continued = load_conversation_file(saved)
    assert [m.content for m in continued.messages[:3]] == [
        "Remember this: my secret number is 4417.", "Got it. Your secret number is 4417.",
        question]
    assert "4417" in continued.messages[3].content
    assert continued.system_prompt == "You are a helpful assistant."


def test_every_screen_opens_at_80x24_in_a_real_terminal(tmp_path: Path) -> None:
    """At 80x24 (metrics panel on, as configured by default here): the footer keeps its F
    keys, the chat its width, and every screen and dialog opens and closes; no traceback."""
    terminal = TmuxTerminal(tmp_path, width=80, height=24)
    try:
        home = tmp_path / "home"
        env = isolated_env(home)
        config = write_config(home, max_tokens=40)
        config.write_text(config.read_text().replace("show_metrics = false",
                                                     "show_metrics = true"))
        terminal.start(lampchat_argv(), env)
        terminal.wait_for(re.compile(r"· llama\.cpp · "), LOAD_TIMEOUT_S, "the model to load")
        screen = terminal.capture()
        assert "Chatting with SmolLM2-135M-Instruct." in screen  # the welcome line
        footer = screen.rstrip().splitlines()[-1]
        for key in ("f1", "f2", "f3", "f4", "f5", "^n", "^b"):
            assert key in footer, footer
        terminal.type_text(SHORT_PROMPT)
        terminal.send_keys("Enter")
        terminal.wait_for(lambda s: len(assistant_replies(s)) == 1
                          and "tok/s" in s, REPLY_TIMEOUT_S, "a reply")
        for keys, shown, closer in (
            (["F1"], "Lampchat help", ["Escape"]),
            (["F2"], "Esc close", ["Escape"]),
            (["F3"], "Settings —", ["Escape"]),
            (["F4"], "Metrics", ["F4"]),
            (["F5"], "Last replies", ["Escape"]),
            (["C-b"], "Conversations", ["Escape", "C-b"]),
            (["C-f"], "Find in this conversation", ["Escape"]),
        ):
            terminal.send_keys(*keys)
            terminal.wait_for(lambda s, shown=shown: shown in s, 60, shown)
            terminal.send_keys(*closer)
            terminal.wait_for(lambda s, shown=shown: shown not in s, 60, f"{shown} closed")
        for size in ((60, 20), (40, 12), (80, 24)):
            terminal.resize(*size)
            time.sleep(0.5)
        terminal.send_keys("C-q")
        status, _state = terminal.wait_exit(60)
        everything = terminal.capture(history=True)
        assert status == 0 and "Traceback" not in everything, everything
    finally:
        terminal.close()
