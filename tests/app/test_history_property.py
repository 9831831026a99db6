"""Property tests: any conversation survives being appended message by message and read back,
and a file cut at any byte still gives back every message written before the cut."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.history import ROLES, Message, parse_conversation
from app.history_store import HistoryStore

# any text, with the characters that are awkward in TOML files made likely
_awkward = st.sampled_from(['"""', "'''", "\\", "\n", "\r\n", "\r", "\t", "\x00", "\x7f",
                            "[[messages]]", "\n[[messages]]\n", "[messages.metrics]", "é", "🦙",
                            "\u2028", "#", "= ", "\ufeff"])
_text = st.lists(st.one_of(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)),
                                   max_size=12), _awkward), max_size=8).map("".join)
_metrics = st.none() | st.fixed_dictionaries({
    "ttft_ms": st.floats(0, 1e5, allow_nan=False).map(lambda v: round(v, 3)),
    "completion_tokens": st.integers(0, 10**6),
    "finish_reason": st.sampled_from(["stop", "length", "cancelled", "error"]),
})
_messages = st.lists(st.builds(
    Message, role=st.sampled_from(ROLES), content=_text,
    timestamp=st.floats(0, 4e9, allow_nan=False).map(lambda v: round(v, 3)),
    model=st.none() | _text.filter(bool), metrics=_metrics, interrupted=st.booleans(),
), max_size=6)


def _write(folder: Path, title: str, system: str, messages: list[Message]) -> Path:
    store = HistoryStore(folder)
    conv = store.create(title=title, system_prompt=system)
    for message in messages:
        store.append(conv, Message(**vars(message)))
    assert conv.path is not None
    return conv.path


def _same(read: Message, written: Message) -> None:
    assert (read.role, read.content, read.model, read.interrupted) == (
        written.role, written.content, written.model or None, written.interrupted)
    assert abs(read.timestamp - written.timestamp) < 0.002
    assert read.metrics == written.metrics


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(title=_text, system=_text, messages=_messages)
# found by hypothesis: a file begun by a system message must still get the user's title
@example(title="", system="", messages=[Message("system", "", 0.0), Message("user", "0", 0.0)])
def test_appended_conversations_read_back_exactly(title: str, system: str,
                                                   messages: list[Message]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        if not messages:
            return
        path = _write(Path(folder), title, system, messages)
        store = HistoryStore(Path(folder))
        conv = store.load(path)
        assert conv.problems == []
        assert conv.system_prompt == system
        assert conv.title == (title or conv.auto_title())
        assert len(conv.messages) == len(messages)
        for read, written in zip(conv.messages, messages, strict=True):
            _same(read, written)
        (summary,) = store.list()
        assert summary.title == (conv.title or "(untitled)") and summary.problem is None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=_messages.filter(lambda m: len(m) >= 2), cut=st.floats(0, 1))
def test_a_file_cut_anywhere_keeps_every_message_before_the_cut(messages: list[Message],
                                                                 cut: float) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = _write(Path(folder), "t", "s", messages)
        data = path.read_bytes()
        at = int(len(data) * cut)
        # messages whose table ends before the cut are complete on disk
        ends = [i for i in range(len(data)) if data.startswith(b"\n[[messages]]\n", i)][1:]
        complete = sum(1 for end in ends if end < at)
        cut_path = Path(folder) / "cut.toml"
        cut_path.write_bytes(data[:at])
        conv = parse_conversation(data[:at].decode("utf-8", errors="replace"), cut_path)
        assert len(conv.messages) >= complete
        for read, written in zip(conv.messages[:complete], messages, strict=False):
            _same(read, written)
        assert cut_path.read_bytes() == data[:at]  # reading never writes
