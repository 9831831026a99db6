"""Conversation history: file format, append-only writes, damaged files, recovery, listing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomlkit

from app.history import (
    Conversation,
    HistoryError,
    Message,
    load_conversation_file,
    new_conversation,
    parse_conversation,
    save_conversation_file,
)
from app.history_store import ConversationWriter, HistoryStore
from tests.support.cli import REPO

TRICKY = 'Line one\n[[messages]]\nrole = "user"\n"""triple""" \\ back\ttab \x00 \r\n émoji 🦙'


def _chat(store: HistoryStore, n_turns: int = 2) -> Conversation:
    conv = store.create(system_prompt="Be brief.")
    for i in range(n_turns):
        store.append(conv, "user", f"question {i}")
        store.append(conv, "assistant", f"answer {i}", model="m", backend="llama.cpp",
                     metrics={"ttft_ms": 12.5, "completion_tokens": 3, "error": None})
    return conv


def test_file_appears_with_the_first_message_and_is_valid_toml(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "history")
    conv = store.create(system_prompt="Be brief.")
    assert conv.path is not None and not conv.path.exists()
    assert store.list() == []
    store.append(conv, "user", "Name a colour")
    data = tomlkit.parse(conv.path.read_text()).unwrap()
    assert data["format"] == "lampchat-conversation" and data["version"] == 1
    assert data["title"] == "Name a colour" and data["system_prompt"] == "Be brief."
    assert [m["role"] for m in data["messages"]] == ["user"]


def test_append_only_each_message_is_one_table_appended(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    conv = _chat(store, 1)
    assert conv.path is not None
    before = conv.path.read_bytes()
    inode = conv.path.stat().st_ino
    store.append(conv, "user", "more")
    after = conv.path.read_bytes()
    assert after.startswith(before)  # appended, nothing before it rewritten
    assert conv.path.stat().st_ino == inode
    assert after[len(before):].decode().lstrip("\n").startswith("[[messages]]\nrole = \"user\"")
    loaded = store.load(conv.id)
    assert [(m.role, m.content) for m in loaded.messages] == [
        ("user", "question 0"), ("assistant", "answer 0"), ("user", "more")]
    assert loaded.messages[1].metrics == {"ttft_ms": 12.5, "completion_tokens": 3}
    assert loaded.messages[1].model == "m" and loaded.messages[1].backend == "llama.cpp"
    assert loaded.problems == []


def test_tricky_content_round_trips(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    conv = store.create(title=TRICKY, system_prompt=TRICKY)
    store.append(conv, "user", TRICKY)
    store.append(conv, "assistant", "multi\nline\n  reply\n")
    loaded = store.load(conv.path)
    assert loaded.title == TRICKY and loaded.system_prompt == TRICKY
    assert [m.content for m in loaded.messages] == [TRICKY, "multi\nline\n  reply\n"]
    assert '"""multi\nline\n  reply\n"""' in conv.path.read_text()  # readable multi-line form


def test_timestamps_survive(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    conv = store.create()
    msg = store.append(conv, "user", "hi")
    loaded = store.load(conv.id)
    assert abs(loaded.messages[0].timestamp - msg.timestamp) < 0.002
    assert abs(loaded.created - conv.created) < 0.002


def test_chat_messages_give_the_model_the_context(tmp_path: Path) -> None:
    conv = _chat(HistoryStore(tmp_path), 1)
    assert [(m.role, m.content) for m in conv.chat_messages()] == [
        ("system", "Be brief."), ("user", "question 0"), ("assistant", "answer 0")]


# -- the in-flight reply ----------------------------------------------------------------------


def test_reply_in_flight_is_checkpointed_then_appended(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path, checkpoint_interval=0.0)
    conv = store.create()
    store.append(conv, "user", "tell me a story")
    assert conv.path is not None
    side = conv.path.with_name(conv.path.name + ".partial")
    store.begin_reply(conv, model="m", backend="b")
    store.update_partial(conv, "Once upon")
    assert side.exists() and "Once upon" in side.read_text()
    assert len(parse_conversation(conv.path.read_text(), conv.path).messages) == 1
    store.update_partial(conv, "Once upon a time")
    message = store.finish_reply(conv, metrics={"finish_reason": "stop"})
    assert message is not None and message.content == "Once upon a time"
    assert not message.interrupted and not side.exists()
    last = store.load(conv.id).messages[-1]
    assert (last.content, last.interrupted, last.model) == ("Once upon a time", False, "m")


def test_checkpoints_are_throttled(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path, checkpoint_interval=3600)
    conv = store.create()
    store.append(conv, "user", "x")
    store.begin_reply(conv)
    store.update_partial(conv, "a")  # first one is written
    store.update_partial(conv, "ab")  # too soon: memory only
    assert conv.path is not None
    side = conv.path.with_name(conv.path.name + ".partial")
    assert 'content = "a"' in side.read_text()
    store.update_partial(conv, "abc", force=True)
    assert 'content = "abc"' in side.read_text()


def test_interrupt_all_saves_partial_replies_marked_interrupted(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path, checkpoint_interval=3600)
    convs = [store.create() for _ in range(2)]
    for i, conv in enumerate(convs):
        store.append(conv, "user", f"q{i}")
        store.begin_reply(conv)
        store.update_partial(conv, f"partial {i}")
    assert store.interrupt_all() == 2
    for i, conv in enumerate(convs):
        last = store.load(conv.id).messages[-1]
        assert (last.role, last.content, last.interrupted) == ("assistant", f"partial {i}", True)
    assert store.interrupt_all() == 0
    assert store.finish_reply(convs[0], "late") is None  # nothing in flight any more


_CRASHER = """
import os, sys
from pathlib import Path
from app.history_store import HistoryStore
store = HistoryStore(Path(sys.argv[1]), checkpoint_interval=0.0)
conv = store.create()
store.append(conv, "user", "count to ten")
store.begin_reply(conv, model="m")
store.update_partial(conv, "one two three")
print(conv.id, flush=True)
os._exit(9)  # a hard crash: no finally, no atexit
"""


def test_hard_crash_recovers_the_checkpoint_on_load(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _CRASHER, str(tmp_path)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    conv_id = done.stdout.strip()
    assert done.returncode == 9 and conv_id, done.stderr
    path = tmp_path / f"{conv_id}.toml"
    # read-only loading shows the partial reply without touching any file
    before = path.read_bytes()
    plain = load_conversation_file(path)
    assert plain.messages[-1].content == "one two three" and plain.messages[-1].interrupted
    assert path.read_bytes() == before
    # the store's load recovers it into the file for good
    conv = HistoryStore(tmp_path).load(conv_id)
    assert [(m.role, m.content, m.interrupted) for m in conv.messages] == [
        ("user", "count to ten", False), ("assistant", "one two three", True)]
    assert not path.with_name(path.name + ".partial").exists()
    assert HistoryStore(tmp_path).load(conv_id).messages == conv.messages


def test_a_live_writers_checkpoint_is_not_taken_over(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path, checkpoint_interval=0.0)
    conv = store.create()
    store.append(conv, "user", "q")
    store.begin_reply(conv)
    store.update_partial(conv, "streaming")
    assert len(store.load(conv.id).messages) == 1  # our own reply in flight: left alone
    other = HistoryStore(tmp_path)
    assert other.load(conv.id).messages[-1].content == "streaming"  # same pid: recovered


# -- damaged files ----------------------------------------------------------------------------


def _healthy(tmp_path: Path) -> Path:
    conv = _chat(HistoryStore(tmp_path / "src"), 2)
    assert conv.path is not None
    return conv.path


@pytest.mark.parametrize("cut", [0.05, 0.35, 0.6, 0.8, 0.97])
def test_truncated_file_keeps_every_complete_message(tmp_path: Path, cut: float) -> None:
    source = _healthy(tmp_path)
    text = source.read_text()
    full = parse_conversation(text, source)
    at = int(len(text) * cut)
    path = tmp_path / "cut.toml"
    path.write_text(text[:at])
    before = path.read_bytes()
    # messages whose whole table lies before the cut must all come back
    ends = [i for i in range(len(text)) if text.startswith("\n[[messages]]", i)][1:]
    complete = sum(1 for end in [*ends, len(text)] if end <= at)
    store = HistoryStore(tmp_path)
    conv = store.load(path)
    assert complete <= len(conv.messages) <= len(full.messages)
    for got, original in zip(conv.messages, full.messages, strict=False):  # nothing made up
        assert (got.role, got.content) == (original.role, original.content)
        assert got.timestamp in (original.timestamp, 0.0)  # 0.0: its line was cut off
        assert (got.metrics or {}).items() <= (original.metrics or {}).items()
    assert all(str(path) in p for p in conv.problems)
    # continuing it never writes the damaged file
    store.append(conv, "user", "and now?")
    assert path.read_bytes() == before
    if conv.damaged or conv.path != path:
        assert conv.path != path


def test_cut_inside_a_message_is_reported_with_its_line(tmp_path: Path) -> None:
    source = _healthy(tmp_path)
    text = source.read_text()
    cut = text.index('content = "answer 1"') + len('content = "ans')
    path = tmp_path / "cut.toml"
    path.write_text(text[:cut])
    conv = load_conversation_file(path)
    assert [m.content for m in conv.messages] == ["question 0", "answer 0", "question 1"]
    assert len(conv.problems) == 2
    line = text[:cut].count("\n") + 1
    assert conv.problems[0].startswith(f"{path}:{line}: the file ends mid-line")
    assert conv.problems[1] == f"{path}: message 4: content is missing or not a string; skipped"


def test_garbage_in_the_middle_keeps_the_rest(tmp_path: Path) -> None:
    source = _healthy(tmp_path)
    parts = source.read_text().split("\n[[messages]]\n")
    parts[2] = 'role = "assistant"\ncontent = """never closed\n\n'
    path = tmp_path / "mid.toml"
    path.write_text("\n[[messages]]\n".join(parts))
    conv = load_conversation_file(path)
    assert [m.content for m in conv.messages] == ["question 0", "question 1", "answer 1"]
    assert len(conv.problems) == 1 and "message 2" in conv.problems[0]


@pytest.mark.parametrize("content", [
    b"", b"\x00\xff\xfe garbage \x01" * 50, b"just some text\n", b"[[[[", b"x = 1\n",
])
def test_garbage_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "garbage.toml"
    path.write_bytes(content)
    with pytest.raises(HistoryError, match="not a Lampchat conversation file"):
        load_conversation_file(path)
    store = HistoryStore(tmp_path)
    conv = store.load(path)  # the store reports instead of raising
    assert conv.messages == []
    assert [s.path for s in store.list()] == [path]
    assert path.read_bytes() == content


def test_bad_records_are_skipped_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('format = "lampchat-conversation"\nversion = 1\n'
                    '[[messages]]\nrole = "user"\ncontent = "ok"\n'
                    '[[messages]]\nrole = "wizard"\ncontent = "x"\n'
                    '[[messages]]\nrole = "assistant"\n')
    conv = load_conversation_file(path)
    assert [m.content for m in conv.messages] == ["ok"]
    assert len(conv.problems) == 2 and "role 'wizard'" in conv.problems[0]
    assert "content is missing" in conv.problems[1]


def test_newer_version_and_foreign_format_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('format = "lampchat-conversation"\nversion = 99\n')
    assert "newer Lampchat" in load_conversation_file(path).problems[0]
    path.write_text('format = "chat-log"\n[[messages]]\nrole = "user"\ncontent = "hi"\n')
    conv = load_conversation_file(path)
    assert "format is 'chat-log'" in conv.problems[0] and conv.messages[0].content == "hi"


def test_damaged_conversation_edits_go_to_a_new_file(tmp_path: Path) -> None:
    source = _healthy(tmp_path)
    path = tmp_path / "damaged.toml"
    text = source.read_text() + "[[messages]]\nrole = \n"
    path.write_text(text)
    store = HistoryStore(tmp_path)
    conv = store.load(path)
    assert conv.damaged
    store.rename(conv, "new title")
    assert path.read_text() == text
    assert conv.path != path and conv.path is not None and not conv.damaged
    assert store.load(conv.path).title == "new title"
    assert len(store.load(conv.path).messages) == 4


# -- saving whole files (--save-history) --------------------------------------------------------


def test_save_and_load_conversation_file(tmp_path: Path) -> None:
    conv = new_conversation("sys", "t")
    conv.messages = [Message("user", "hi", 1.0), Message("assistant", "yo", 2.0, "m", "b",
                                                         {"a": 1}, True)]
    path = tmp_path / "out" / "c.toml"
    save_conversation_file(conv, path)
    again = load_conversation_file(path)
    assert (again.title, again.system_prompt, again.messages) == ("t", "sys", conv.messages)


def test_save_refuses_to_replace_a_foreign_or_damaged_file(tmp_path: Path) -> None:
    conv = new_conversation()
    for name, content in [("notes.toml", '[tool]\nx = 1\n'), ("notes.txt", "my notes\n"),
                          ("bad.toml", 'format = "lampchat-conversation"\n[[messages]]\nrole=\n')]:
        path = tmp_path / name
        path.write_text(content)
        with pytest.raises(HistoryError, match="not overwritten"):
            save_conversation_file(conv, path)
        assert path.read_text() == content
    path = tmp_path / "ok.toml"
    save_conversation_file(conv, path)
    save_conversation_file(conv, path)  # its own format: replaced


def test_writer_on_a_plain_path(tmp_path: Path) -> None:
    writer = ConversationWriter(checkpoint_interval=0)
    conv = new_conversation()
    writer.append(conv, Message("user", "hello there"))
    writer.write_all(conv, tmp_path / "s.toml")
    writer.begin_reply(conv)
    writer.update_partial(conv, "hi")
    writer.finish_reply(conv, "hi!", interrupted=True)
    loaded = load_conversation_file(tmp_path / "s.toml")
    assert loaded.title == "hello there"
    assert [(m.content, m.interrupted) for m in loaded.messages] == [
        ("hello there", False), ("hi!", True)]


# -- the store --------------------------------------------------------------------------------


def test_list_rename_truncate_system_delete(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    first = _chat(store, 1)
    time.sleep(0.01)
    second = _chat(store, 2)
    assert first.path is not None and second.path is not None
    os.utime(first.path, (time.time() + 5, time.time() + 5))
    summaries = store.list()
    assert [s.id for s in summaries] == [first.id, second.id]  # most recently updated first
    assert summaries[0].title == "question 0" and summaries[0].problem is None
    store.rename(second, "Renamed")
    store.set_system_prompt(second, "New system")
    store.truncate(second, 2)
    again = store.load(second.id)
    assert (again.title, again.system_prompt, len(again.messages)) == (
        "Renamed", "New system", 2)
    store.append(again, "user", "after truncate")  # appending still works after a rewrite
    assert store.load(second.id).messages[-1].content == "after truncate"
    store.delete(first)
    store.delete(second.id)
    assert store.list() == []


def test_list_ignores_other_files_and_reports_bad_headers(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    _chat(store, 1)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "broken.toml").write_text("title = \n")
    (tmp_path / "x.toml.partial").write_text("pid = 1\n")
    summaries = {s.path.name: s for s in store.list()}
    assert len(summaries) == 2
    assert summaries["broken.toml"].problem and summaries["broken.toml"].title == "(untitled)"


def test_list_reads_headers_only(tmp_path: Path) -> None:
    """A huge conversation is listed from its header: a broken tail does not matter."""
    store = HistoryStore(tmp_path)
    conv = _chat(store, 1)
    assert conv.path is not None
    with open(conv.path, "a") as handle:
        handle.write("\n[[messages]]\n" + "garbage = = =\n" * 100_000)
    (summary,) = store.list()
    assert summary.problem is None and summary.title == "question 0"


def test_unknown_role_is_refused(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    with pytest.raises(HistoryError, match="unknown role"):
        store.append(store.create(), "wizard", "x")


def test_missing_file_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(HistoryError, match="no such conversation file"):
        load_conversation_file(tmp_path / "nope.toml")
    with pytest.raises(HistoryError, match="no such conversation file"):
        HistoryStore(tmp_path).load("nope")


def test_the_documented_example_is_a_valid_conversation_file(tmp_path: Path) -> None:
    """docs/history.md's examples are read by the real parser (the docs cannot drift)."""
    text = (REPO / "docs/history.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```toml\n")[1:]]
    assert len(blocks) == 2
    conv = parse_conversation(blocks[0], tmp_path / "chat.toml")
    assert conv.problems == [] and conv.system_prompt == "Answer in one sentence."
    assert [m.role for m in conv.messages] == ["user", "assistant"]
    assert conv.messages[1].metrics is not None
    assert conv.messages[1].metrics["finish_reason"] == "length"
    header = blocks[0].split("\n[[messages]]")[0] + "\n"
    cut = parse_conversation(header + blocks[1], tmp_path / "cut.toml")
    assert cut.problems == [] and cut.messages[0].interrupted
    assert cut.messages[0].metrics is not None
    assert cut.messages[0].metrics["finish_reason"] == "cancelled"


@pytest.mark.parametrize("title", [
    "plain", 'with "quotes" and \\ backslash', "tab\there", "émoji 🦙 \u2028", "two\nlines",
    'ends in """', "", "x" * 300, "= [[messages]] =", "\x00\x1f control",
])
def test_listing_reads_every_title_as_toml_does(tmp_path: Path, title: str) -> None:
    """The quick header reader (used for listing) agrees with a full TOML parse."""
    store = HistoryStore(tmp_path)
    conv = store.create(title=title, system_prompt='multi\ntitle = "not this"\n')
    store.append(conv, "user", "hello")
    assert conv.path is not None
    (summary,) = store.list()
    full = tomlkit.parse(conv.path.read_text()).unwrap()
    assert summary.title == (full["title"] or "(untitled)")
    assert summary.id == full["id"] == conv.id
    assert abs(summary.created - full["created"].timestamp()) < 1e-6


def test_listing_is_cached_until_a_file_changes(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path)
    first, second = _chat(store, 1), _chat(store, 1)
    assert {s.title for s in store.list()} == {"question 0"}
    store.rename(first, "renamed")
    assert {s.title for s in store.list()} == {"renamed", "question 0"}
    assert second.path is not None
    second.path.write_text(second.path.read_text().replace('title = "question 0"',
                                                           'title = "edited by hand!"'))
    assert {s.title for s in store.list()} == {"renamed", "edited by hand!"}
    store.delete(first)
    assert [s.title for s in store.list()] == ["edited by hand!"]


# -- a regenerated reply's versions ------------------------------------------------------------


def test_a_regenerated_reply_keeps_its_versions_through_a_crash(tmp_path: Path) -> None:
    """The earlier versions go with the new reply from its first checkpoint: a crash while it
    streams loses none of them; the next load recovers them with the partial text."""
    store = HistoryStore(tmp_path, checkpoint_interval=0.0)
    conv = store.create()
    store.append(conv, "user", "name a colour")
    store.append(conv, Message("assistant", "Blue."))
    old = conv.messages[-1]
    store.truncate(conv, 1)
    store.begin_reply(conv, model="m", alternatives=old.versions())
    store.update_partial(conv, "Gre")
    # the process dies here: a new one loads the file and the side file
    recovered = HistoryStore(tmp_path).load(conv.id).messages[-1]
    assert recovered.content == "Gre" and recovered.interrupted
    assert [v.content for v in recovered.versions()] == ["Blue.", "Gre"]


def test_a_damaged_version_is_dropped_and_the_reply_kept(tmp_path: Path) -> None:
    conv = new_conversation()
    reply = Message("assistant", "second", alternatives=[Message("assistant", "first")],
                    choice=1)
    conv.messages = [Message("user", "q"), reply]
    path = tmp_path / "c.toml"
    save_conversation_file(conv, path)
    text = path.read_text().replace('content = "first"', "content = 3")
    loaded = parse_conversation(text, path)
    assert not loaded.problems and loaded.messages[-1].content == "second"
    assert loaded.messages[-1].alternatives == [] and loaded.messages[-1].choice == 0
    text = path.read_text().replace("choice = 1", "choice = 99")
    assert parse_conversation(text, path).messages[-1].choice == 1  # clamped
