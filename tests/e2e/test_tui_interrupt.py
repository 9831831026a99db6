"""Interrupting the real `lampchat` TUI mid-reply (in a real terminal, with the default model).

`lampchat --save-history F` runs in tmux with auto-save on; a long reply streams; the app
process gets SIGTERM (a shutdown), SIGHUP (the terminal went away) or SIGINT (`kill -INT`).
Then F, and the conversation's file in the history dir, hold the user message and the partial
reply marked interrupted, both valid files, and the app left no traceback behind. The same
holds when the terminal itself is closed mid-reply, and the process then exits too.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from app.history import PARTIAL_SUFFIX, Conversation, load_conversation_file
from tests.support.tmux_driver import TmuxTerminal, isolated_env, lampchat_argv, tmux_binary
from tests.support.tui_screen import STREAMING_META, assistant_replies, words, write_config

pytestmark = [pytest.mark.real_model, pytest.mark.tmux, pytest.mark.slow,
              pytest.mark.skipif(tmux_binary() is None, reason="tmux is not installed")]

LONG_PROMPT = "Write a very long story about a lighthouse keeper and her cat, in many chapters."
SYSTEM = "You are a novelist."


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[TmuxTerminal]:
    """A private tmux server; always killed at the end."""
    term = TmuxTerminal(tmp_path, width=200, height=50)
    try:
        yield term
    finally:
        term.close()


def _check_saved(conv: Conversation, shown: list[str]) -> None:
    assert conv.problems == [], conv.problems
    assert conv.system_prompt == SYSTEM
    assert [m.role for m in conv.messages] == ["user", "assistant"], conv.messages
    user, reply = conv.messages
    assert user.content == LONG_PROMPT and not user.interrupted
    assert reply.interrupted, "the partial reply is not marked interrupted"
    saved = words(reply.content)
    # everything the screen showed before the signal is in the file (it may hold a little more:
    # the last word shown can be cut at a token boundary, "lighth" of "lighthouses")
    assert saved[: len(shown) - 1] == shown[:-1], (shown, reply.content)
    assert saved[len(shown) - 1].startswith(shown[-1]), (shown, reply.content)
    assert reply.backend == "llama.cpp" and reply.model


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT],
                         ids=["TERM", "HUP", "INT"])
def test_signal_mid_reply_keeps_the_partial_reply(
    tmp_path: Path, terminal: TmuxTerminal, signum: int
) -> None:
    home = tmp_path / "home"
    history_dir = tmp_path / "history"
    write_config(home, max_tokens=2000,
                 extra=f'\n[session]\nauto_save = true\nhistory_dir = "{history_dir}"\n')
    saved = tmp_path / "chat.toml"
    terminal.start([*lampchat_argv(), "--save-history", str(saved), "--system", SYSTEM],
                   isolated_env(home))
    terminal.wait_for(re.compile(r"· llama\.cpp · "), 120, "the model to load")
    terminal.type_text(LONG_PROMPT)
    terminal.send_keys("Enter")

    def streamed(screen: str) -> bool:
        replies = assistant_replies(screen)
        return (len(replies) == 1 and bool(STREAMING_META.search(replies[0].meta))
                and len(words(replies[0].body)) >= 4)

    screen = terminal.wait_for(streamed, 180, "the reply to stream")
    shown = words(assistant_replies(screen)[0].body)
    os.kill(terminal.program_pid(), signum)

    status, state = terminal.wait_exit(60)
    assert not state.alternate_screen, "the terminal was not restored"
    everything = terminal.capture(history=True)
    assert "Traceback" not in everything, everything
    assert status == 128 + signum, everything  # like `lampchat ask`: killed by signum

    _check_saved(load_conversation_file(saved), shown)
    assert not saved.with_name(saved.name + PARTIAL_SUFFIX).exists()
    files = sorted(history_dir.glob("*.toml"))
    assert len(files) == 1, files  # auto-save wrote the same conversation to the history dir
    _check_saved(load_conversation_file(files[0]), shown)
    assert not list(history_dir.glob(f"*{PARTIAL_SUFFIX}"))


def test_closing_the_terminal_mid_reply_keeps_the_partial_reply_and_exits(
    tmp_path: Path, terminal: TmuxTerminal
) -> None:
    """The terminal itself goes away (tmux server killed: the pty closes, SIGHUP follows)."""
    home = tmp_path / "home"
    write_config(home, max_tokens=2000, extra="\n[session]\nauto_save = false\n")
    saved = tmp_path / "chat.toml"
    terminal.start([*lampchat_argv(), "--save-history", str(saved), "--system", SYSTEM],
                   isolated_env(home))
    terminal.wait_for(re.compile(r"· llama\.cpp · "), 120, "the model to load")
    app = psutil.Process(terminal.program_pid())
    terminal.type_text(LONG_PROMPT)
    terminal.send_keys("Enter")
    screen = terminal.wait_for(
        lambda s: len(assistant_replies(s)) == 1
        and bool(STREAMING_META.search(assistant_replies(s)[0].meta))
        and len(words(assistant_replies(s)[0].body)) >= 4,
        180, "the reply to stream",
    )
    shown = words(assistant_replies(screen)[0].body)
    terminal.kill_server()
    try:
        app.wait(timeout=60)
    except psutil.TimeoutExpired:
        app.kill()
        kept = ([(m.role, m.interrupted, len(m.content)) for m in
                 load_conversation_file(saved).messages] if saved.exists() else "no file")
        pytest.fail(f"lampchat kept running for 60 s after its terminal was closed "
                    f"(--save-history held: {kept})")
    _check_saved(load_conversation_file(saved), shown)
    assert not saved.with_name(saved.name + PARTIAL_SUFFIX).exists()
