"""Slash commands: parsing, settings, saving, conversations, export, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomlkit

from app.config import load_config
from app.history import Message, load_conversation_file, save_conversation_file
from app.history_store import HistoryStore
from app.slash import COMMANDS, SlashContext, is_slash, resolve_key, run_slash, unescape


@pytest.fixture
def context(tmp_path: Path) -> SlashContext:
    config = load_config(tmp_path / "config.toml", env={})
    store = HistoryStore(tmp_path / "history")
    conv = store.create(system_prompt="Be brief.")
    store.append(conv, "user", "Hi there")
    store.append(conv, "assistant", "Hello! **Bold** reply.", model="m", backend="llama.cpp",
                 metrics={"completion_tokens": 5, "decode_tps": 99.5, "ttft_ms": 20.0})
    return SlashContext(config=config, conversation=conv, store=store, model_label="m · cpu")


@pytest.mark.parametrize(("text", "expected"), [
    ("/set temperature 0.3", True), ("/help", True), ("  /clear  ", True), ("/?", True),
    ("/usr/bin is a folder?", False), ("//set is how you type it", False), ("hello /set", False),
    ("/", False), ("/ set", False),
])
def test_is_slash(text: str, expected: bool) -> None:
    assert is_slash(text) is expected


def test_unescape() -> None:
    assert unescape("//set x") == "/set x" and unescape("plain") == "plain"


@pytest.mark.parametrize(("name", "dotted"), [
    ("temperature", "generation.temperature"), ("top-k", "generation.top_k"),
    ("generation.seed", "generation.seed"), ("num_ctx", "generation.context_length"),
    ("num_predict", "generation.max_tokens"), ("theme", "ui.theme"),
    ("history_dir", "session.history_dir"), ("TEMPERATURE", "generation.temperature"),
])
def test_resolve_key(name: str, dotted: str) -> None:
    assert resolve_key(name) == dotted


def test_set_changes_the_session_config(context: SlashContext) -> None:
    result = run_slash("/set temperature 0.3", context)
    assert result.ok and result.changed == ("generation.temperature",)
    assert result.action == "settings" and not result.reload_needed
    assert context.config is not None
    assert context.config.get("generation.temperature") == 0.3
    assert context.config.source("generation.temperature") == "session"
    assert context.config.sampling().temperature == 0.3
    result = run_slash("/set parameter num_ctx 2048", context)  # Ollama's spelling
    assert result.ok and result.reload_needed and "reloaded" in result.message
    assert context.config.get("generation.context_length") == 2048
    result = run_slash("/set fallback native,llama.cpp", context)
    assert context.config.get("backend.fallback") == ["native", "llama.cpp"]


@pytest.mark.parametrize(("line", "message"), [
    ("/set temperature hot", "is not a number"),
    ("/set temperature -1", "out of range"),
    ("/set temprature 0.3", "did you mean temperature"),
    ("/set default auto", "ambiguous"),
    ("/set device tpu", "one of: auto, cpu"),
    ("/frobnicate", "unknown command /frobnicate"),
    ("/sav x", "did you mean /save"),
    ("/save", "usage: /save PATH"),
    ("/load", "usage: /load PATH"),
    ("/export", "usage: /export PATH"),
    ("/config frob", "usage: /config"),
])
def test_bad_commands_get_a_clear_message(context: SlashContext, line: str, message: str) -> None:
    result = run_slash(line, context)
    assert not result.ok and message in result.message and "\n" not in result.message
    assert context.config is not None
    assert context.config.get("generation.temperature") == 0.7  # nothing changed


def test_set_without_value_shows_the_setting(context: SlashContext) -> None:
    result = run_slash("/set top_k", context)
    assert result.ok and "generation.top_k = 40 (default)" in result.message
    listing = run_slash("/set", context).message
    assert "generation.temperature = 0.7" in listing and "ui.theme" in listing


def test_config_save_keeps_the_file_comments(context: SlashContext) -> None:
    assert context.config is not None
    path = context.config.path
    run_slash("/set temperature 0.25", context)
    result = run_slash("/config save", context)
    assert result.ok and "saved 1 setting to" in result.message
    text = path.read_text()
    assert "temperature = 0.25" in text and "# Sampling temperature" in text
    assert load_config(path, env={}).get("generation.temperature") == 0.25
    path.write_text("[generation\n")  # now unparsable: saving refuses and says so
    run_slash("/set top_k 3", context)
    result = run_slash("/config save", context)
    assert not result.ok and "could not be parsed" in result.message
    assert path.read_text() == "[generation\n"


def test_config_show_hides_secrets(context: SlashContext) -> None:
    run_slash("/set remote.lab.api_key sk-TOPSECRET", context)
    shown = run_slash("/config show", context).message
    assert "TOPSECRET" not in shown and 'remote.lab.api_key = "<hidden>"  # session' in shown
    assert "TOPSECRET" not in run_slash("/set", context).message
    run_slash("/set remote.lab.base_url http://bob:sk-URLPASS@127.0.0.1:9/v1?key=sk-Q", context)
    for line in ("/config show", "/set remote.lab.base_url", "/set"):
        shown = run_slash(line, context).message
        assert "sk-" not in shown and "http://bob:****@127.0.0.1:9/v1?key=****" in shown


def test_system_prompt(context: SlashContext) -> None:
    conv = context.conversation
    assert conv is not None and conv.path is not None
    assert run_slash("/system", context).message == "system prompt: Be brief."
    result = run_slash("/system You are a pirate.", context)
    assert result.action == "system" and result.value == "You are a pirate."
    assert load_conversation_file(conv.path).system_prompt == "You are a pirate."
    assert run_slash("/set system Talk like a poet.", context).value == "Talk like a poet."
    assert run_slash('/system ""', context).message == "system prompt cleared"
    assert conv.system_prompt == ""


def test_clear_starts_a_new_conversation_keeping_the_old_one(context: SlashContext) -> None:
    old = context.conversation
    result = run_slash("/clear", context)
    assert result.action == "clear" and result.value is context.conversation
    assert context.conversation is not old and context.conversation.messages == []
    assert context.conversation.system_prompt == "Be brief."
    assert context.store is not None and len(context.store.list()) == 1  # the old one, kept


def test_save_load_round_trip(context: SlashContext, tmp_path: Path) -> None:
    path = tmp_path / "my chat.toml"
    result = run_slash(f'/save "{path}"', context)
    assert result.ok and "saved 2 messages" in result.message
    run_slash("/clear", context)
    result = run_slash(f"/load {path}", context)
    assert result.ok and result.action == "load_conversation"
    conv = context.conversation
    assert conv is result.value and [m.content for m in conv.messages] == [
        "Hi there", "Hello! **Bold** reply."]
    # continuing it saves into the history dir, never into the loaded file
    before = path.read_bytes()
    assert context.store is not None
    context.store.append(conv, "user", "next")
    assert path.read_bytes() == before and conv.path is not None
    assert conv.path.parent == context.store.directory
    assert [m.content for m in context.store.load(conv.id).messages][-1] == "next"


def test_load_errors(context: SlashContext, tmp_path: Path) -> None:
    result = run_slash(f"/load {tmp_path / 'missing.toml'}", context)
    assert not result.ok and "no such conversation file" in result.message
    damaged = tmp_path / "damaged.toml"
    conv = context.conversation
    assert conv is not None
    save_conversation_file(conv, damaged)
    damaged.write_text(damaged.read_text() + '[[messages]]\nrole = "user"\ncontent = "x\n')
    result = run_slash(f"/load {damaged}", context)
    assert result.ok and "1 problem" in result.message and len(result.value.messages) == 2


def test_save_refuses_foreign_files(context: SlashContext, tmp_path: Path) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("# mine\n")
    result = run_slash(f"/save {notes}", context)
    assert not result.ok and "not overwritten" in result.message
    assert notes.read_text() == "# mine\n"


def test_export_markdown(context: SlashContext, tmp_path: Path) -> None:
    conv = context.conversation
    assert conv is not None
    conv.messages.append(Message("assistant", "cut sh", model="m", interrupted=True))
    path = tmp_path / "out" / "chat.md"
    result = run_slash(f"/export {path}", context)
    assert result.ok and str(path) in result.message
    text = path.read_text()
    assert text.startswith("# Hi there\n")
    assert "**System prompt:**\n\n> Be brief." in text
    assert "## User" in text and "Hi there" in text
    assert "## Assistant" in text and "m via llama.cpp" in text
    assert "Hello! **Bold** reply." in text
    assert "5 tokens, 99.5 tokens/s, first token 20 ms" in text
    assert "*interrupted*" in text
    assert text.index("Hi there\n\n") < text.index("Hello!") < text.index("cut sh")
    result = run_slash(f"/export {tmp_path}", context)
    assert not result.ok and "is a folder" in result.message
    # exporting again replaces the earlier export; someone else's file is never replaced
    conv.messages.append(Message("user", "one more"))
    assert run_slash(f"/export {path}", context).ok and "one more" in path.read_text()
    notes = tmp_path / "notes.md"
    notes.write_text("# my notes\n")
    result = run_slash(f"/export {notes}", context)
    assert not result.ok and "not overwritten" in result.message
    assert notes.read_text() == "# my notes\n"


def test_model_help_quit(context: SlashContext) -> None:
    assert run_slash("/model", context).message == "m · cpu"
    result = run_slash("/model ~/models/qwen.gguf", context)
    assert (result.action, result.value) == ("load_model", "~/models/qwen.gguf")
    help_text = run_slash("/help", context).message
    for name in COMMANDS:
        assert name in help_text
    assert run_slash("/?", context).action == "help"
    assert run_slash("/bye", context).action == "quit"
    assert run_slash("/exit", context).action == "quit"


def test_works_without_store_or_config(tmp_path: Path) -> None:
    context = SlashContext()
    assert not run_slash("/set temperature 1", context).ok
    assert run_slash("/system Be terse.", context).ok
    assert context.conversation is not None and context.conversation.path is None
    path = tmp_path / "c.toml"
    assert run_slash(f"/save {path}", context).ok
    assert tomlkit.parse(path.read_text())["system_prompt"] == "Be terse."
    result = run_slash(f"/load {path}", context)
    assert result.ok and context.conversation.path is None  # not written back to the file
