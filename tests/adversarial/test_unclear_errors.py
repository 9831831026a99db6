"""Inputs that gave `lampchat: unexpected error: <Python text>` or a traceback: each is one
line that says what was wrong with which input (issue 23), in bounded time."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import REPO, run_lampchat


def test_a_400_digit_number_in_the_config_warns_and_uses_the_default(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"[generation]\ntemperature = {'9' * 400}\nmax_tokens = {'9' * 400}\n")
    result = run_lampchat("ask", "--config", str(config), "-n", "2", "hi")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line]
    assert len(warnings) == 2 and all(line.startswith("lampchat: warning: ") for line in warnings)
    assert "(400 digits) is too large" in warnings[0] and "using the default 0.7" in warnings[0]
    assert "unexpected" not in result.stderr and len(result.stderr) < 1000


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    command = (f"{shlex.quote(sys.executable)} -m app models | head -c 4 > /dev/null; "
               "echo ${PIPESTATUS[0]}")
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin",
                               "HOME": str(tmp_path)}, timeout=120)
    assert done.stdout.strip() in ("0", "141") and done.stderr == "", done.stderr


def test_a_prompt_with_bytes_that_are_not_utf8_is_saved_and_answered(tmp_path: Path) -> None:
    history = tmp_path / "chat.toml"
    result = subprocess.run(
        [sys.executable, "-m", "app", "ask", "-n", "3", "--save-history", str(history),
         b"hi \xff there"], capture_output=True, cwd=REPO, timeout=120,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert b"not UTF-8" in result.stderr and b"Traceback" not in result.stderr
    from app.history import load_conversation_file

    assert load_conversation_file(history).messages[0].content == "hi \ufffd there"


def test_a_path_with_a_newline_is_one_line(tmp_path: Path) -> None:
    result = run_lampchat("ask", "-m", str(tmp_path / "a\nb.gguf"), "hi")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "a\\nb.gguf" in result.stderr


def test_a_metadata_cache_of_the_wrong_shape_is_rebuilt(tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "lampchat" / "model-catalog.json"
    cache.parent.mkdir(parents=True)
    for text in ('{"version": 4, "models": [1, 2]}', "[]", "[" * 100_000):
        cache.write_text(text)
        result = run_lampchat("models", "--json", env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)[0]["name"] == "SmolLM2-135M-Instruct"
        assert isinstance(json.loads(cache.read_text())["models"], dict)  # rebuilt


def test_out_of_range_timestamps_load_and_save(tmp_path: Path) -> None:
    """`1e300`, `nan` and `inf` times loaded and then made the conversation unsavable."""
    source = tmp_path / "odd.toml"
    source.write_text(
        'format = "lampchat-conversation"\nversion = 1\nid = "odd"\ntitle = "odd"\n'
        'created = nan\nsystem_prompt = ""\n\n[[messages]]\nrole = "user"\ncontent = "hi"\n'
        "timestamp = 1e300\n\n[[messages]]\nrole = \"assistant\"\ncontent = \"hello\"\n"
        "timestamp = inf\n")
    target = tmp_path / "saved.toml"
    result = run_lampchat("ask", "-n", "2", "--load-history", str(source), "--save-history",
                          str(target), "again")
    assert result.returncode == 0, result.stderr
    from app.history import load_conversation_file

    saved = load_conversation_file(target)
    assert [m.content for m in saved.messages][:2] == ["hi", "hello"]
    assert all(0 <= m.timestamp < 253_402_300_800 for m in saved.messages)


def test_an_absurd_context_is_held_to_the_models_and_to_memory(monkeypatch) -> None:
    """`--ctx 1000000000` drove llama.cpp to 20 GB: the context is at most the model's
    trained length, and a KV cache that would not fit in memory is refused first."""
    import psutil

    from engine.backends.llama_cpp import context_for
    from engine.errors import ModelLoadError
    from engine.formats.detect import validate_gguf
    from engine.models import default_model_path

    parsed = validate_gguf(default_model_path())
    assert context_for(parsed, 1_000_000_000) == 8192  # SmolLM2's trained context
    assert context_for(parsed, 512) == 512 and context_for(parsed, 0) == 8192
    tight = psutil.virtual_memory()._replace(available=50 << 20)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: tight)
    with pytest.raises(ModelLoadError, match=r"needs about 0.2 GiB .* use a smaller --ctx"):
        context_for(parsed, 8192)


def test_a_failed_append_leaves_the_file_whole(tmp_path: Path, monkeypatch) -> None:
    """On a full disk a reply was half-appended and the file could not be continued."""
    import os

    from app.history import Message, append_text, load_conversation_file, new_conversation
    from app.history_store import ConversationWriter

    path = tmp_path / "chat.toml"
    conv = new_conversation("")
    writer = ConversationWriter()
    writer.append(conv, Message("user", "first"))
    writer.write_all(conv, path)
    before = path.read_bytes()
    real_fsync = os.fsync
    calls = []

    def full_disk(fd):
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        append_text(path, '\n[[messages]]\nrole = "assistant"\ncontent = "a long rep')
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert path.read_bytes() == before  # cut back: it still parses and can be continued
    assert [m.content for m in load_conversation_file(path).messages] == ["first"]
