"""`lampchat ask --save-history / --load-history` with the real default model and real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.history import Message, load_conversation_file, new_conversation
from app.history import save_conversation_file as save_file
from app.history_store import HistoryStore
from tests.support.cli import REPO, run_lampchat

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

LONG_PROMPT = "Write a very long story about a lighthouse keeper and her cat, in many chapters."


class _Reader(threading.Thread):
    """Collects a pipe's bytes as they arrive."""

    def __init__(self, pipe) -> None:  # type: ignore[no-untyped-def]
        super().__init__(daemon=True)
        self.pipe = pipe
        self.data = b""

    def run(self) -> None:
        while chunk := os.read(self.pipe.fileno(), 4096):
            self.data += chunk


def _start_ask(*args: str) -> tuple[subprocess.Popen[bytes], _Reader, _Reader]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "ask", *args], cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = _Reader(proc.stdout), _Reader(proc.stderr)
    out.start()
    err.start()
    return proc, out, err


def _wait_for_output(proc: subprocess.Popen[bytes], out: _Reader, n_chars: int) -> None:
    deadline = time.monotonic() + 240
    while len(out.data.decode(errors="ignore").strip()) < n_chars:
        assert proc.poll() is None, "ask ended before the reply was under way"
        assert time.monotonic() < deadline, "no reply streamed within 240 s"
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_mid_reply_saves_everything_with_the_partial_reply(
    tmp_path: Path, signum: int
) -> None:
    path = tmp_path / "chat.toml"
    proc, out, err = _start_ask("--save-history", str(path), "--max-tokens", "4000",
                                "--seed", "1", "--system", "You are a novelist.", LONG_PROMPT)
    _wait_for_output(proc, out, 20)
    proc.send_signal(signum)
    assert proc.wait(timeout=120) == 128 + signum
    out.join(5)
    err.join(5)
    assert b"Traceback" not in err.data, err.data.decode()
    conv = load_conversation_file(path)
    assert conv.problems == []
    assert conv.system_prompt == "You are a novelist."
    assert [m.role for m in conv.messages] == ["user", "assistant"]
    user, reply = conv.messages
    assert user.content == LONG_PROMPT and not user.interrupted
    assert reply.interrupted
    assert reply.metrics is not None and reply.metrics["finish_reason"] == "cancelled"
    printed = out.data.decode()
    assert len(reply.content.strip()) >= 20
    assert printed.rstrip("\n") == reply.content.rstrip("\n")  # exactly what was shown
    assert reply.model and reply.backend == "llama.cpp"
    assert not path.with_name(path.name + ".partial").exists()


def test_kill_9_mid_reply_leaves_a_recoverable_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "chat.toml"
    proc, out, _err = _start_ask("--save-history", str(path), "--max-tokens", "4000",
                                 "--seed", "2", LONG_PROMPT)
    _wait_for_output(proc, out, 20)
    side = path.with_name(path.name + ".partial")
    deadline = time.monotonic() + 60
    while not side.exists():  # the first checkpoint is written within one interval
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    time.sleep(0.7)
    proc.kill()
    proc.wait(timeout=60)
    out.join(5)
    conv = load_conversation_file(path)
    assert [m.role for m in conv.messages] == ["user", "assistant"]
    reply = conv.messages[-1]
    assert reply.interrupted and reply.content.strip()
    assert out.data.decode().startswith(reply.content)  # a prefix of what was shown
    # continuing the conversation into the same file folds the checkpoint in
    store = HistoryStore(tmp_path / "store")
    continued = store.adopt(conv)
    assert store.load(continued.id).messages[-1].content == reply.content


def _secret_history(path: Path) -> None:
    conv = new_conversation("You are a helpful assistant.")
    conv.messages = [
        Message("user", "Remember this: my secret number is 4417."),
        Message("assistant", "Got it. Your secret number is 4417."),
    ]
    save_file(conv, path)


def test_load_history_continues_the_conversation_with_its_context(tmp_path: Path) -> None:
    history = tmp_path / "secret.toml"
    _secret_history(history)
    before = history.read_bytes()
    question = "What is my secret number?"
    common = ("--temperature", "0", "--max-tokens", "24", "--json")
    plain = run_lampchat("ask", *common, question)
    assert plain.returncode == 0, plain.stderr
    saved = tmp_path / "continued.toml"
    done = run_lampchat("ask", *common, "--load-history", str(history),
                        "--save-history", str(saved), question)
    assert done.returncode == 0, done.stderr
    with_context = json.loads(done.stdout)
    without = json.loads(plain.stdout)
    # the model saw the earlier turns: two more messages' worth of prompt tokens
    assert with_context["prompt_tokens"] >= without["prompt_tokens"] + 20
    assert "4417" in with_context["text"]  # greedy: it reads the number back from context
    assert history.read_bytes() == before  # --load-history never writes the file it reads
    conv = load_conversation_file(saved)
    assert [m.content for m in conv.messages[:3]] == [
        "Remember this: my secret number is 4417.", "Got it. Your secret number is 4417.",
        question]
    assert conv.messages[3].content == with_context["text"]
    assert conv.system_prompt == "You are a helpful assistant."
    assert conv.messages[3].metrics["prompt_tokens"] == with_context["prompt_tokens"]


def test_same_file_for_load_and_save_appends_the_new_turn(tmp_path: Path) -> None:
    path = tmp_path / "chat.toml"
    _secret_history(path)
    done = run_lampchat("ask", "--temperature", "0", "-n", "8", "--load-history", str(path),
                        "--save-history", str(path), "Say OK.")
    assert done.returncode == 0, done.stderr
    conv = load_conversation_file(path)
    assert [m.role for m in conv.messages] == ["user", "assistant", "user", "assistant"]
    assert conv.messages[2].content == "Say OK." and not conv.messages[3].interrupted


def test_prompt_is_saved_even_when_the_model_fails_to_load(tmp_path: Path) -> None:
    path = tmp_path / "chat.toml"
    done = run_lampchat("ask", "--save-history", str(path), "--model",
                        str(tmp_path / "missing.gguf"), "hello?")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert [m.content for m in load_conversation_file(path).messages] == ["hello?"]


def test_bad_history_files_are_one_line_errors_and_never_overwritten(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.toml"
    garbage.write_bytes(b"\x00\x01 not toml [[[")
    done = run_lampchat("ask", "--load-history", str(garbage), "hi")
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "not a Lampchat conversation" in done.stderr
    done = run_lampchat("ask", "--load-history", str(tmp_path / "none.toml"), "hi")
    assert done.returncode == 1 and "no such conversation file" in done.stderr
    notes = tmp_path / "notes.txt"
    notes.write_text("my precious notes\n")
    done = run_lampchat("ask", "--save-history", str(notes), "hi")
    assert done.returncode == 1 and "not overwritten" in done.stderr
    assert notes.read_text() == "my precious notes\n"
    # a damaged but partly readable file: continued with a warning, never written
    damaged = tmp_path / "damaged.toml"
    _secret_history(damaged)
    damaged.write_text(damaged.read_text() + '\n[[messages]]\nrole = "user"\ncontent = """oops\n')
    text = damaged.read_text()
    done = run_lampchat("ask", "--load-history", str(damaged), "--save-history", str(damaged),
                        "-n", "4", "hi")
    assert done.returncode == 1 and "not overwritten" in done.stderr
    assert damaged.read_text() == text
