"""Prompt recall (Up/Down) saved in `session.history_file`, capped at `session.max_history`."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import load_config
from app.prompt_history import PromptHistory, open_prompt_history
from engine.errors import LampchatError


def test_prompts_persist_across_sessions(tmp_path: Path) -> None:
    path = tmp_path / "state" / "prompt_history"
    history = PromptHistory(path, 10)
    for text in ["first", "second\nwith a newline", "second\nwith a newline", "  ", "third"]:
        history.add(text)
    assert history.items() == ["first", "second\nwith a newline", "third"]
    assert PromptHistory(path, 10).items() == ["first", "second\nwith a newline", "third"]
    assert len(path.read_text().splitlines()) == 3  # one JSON string per line


def test_capped_at_max_history_and_compacted(tmp_path: Path) -> None:
    path = tmp_path / "h"
    history = PromptHistory(path, 5)
    for i in range(23):
        history.add(f"prompt {i}")
    expected = [f"prompt {i}" for i in range(18, 23)]
    assert history.items() == expected
    assert PromptHistory(path, 5).items() == expected
    assert len(path.read_text().splitlines()) <= 10  # never more than twice the cap on disk
    assert PromptHistory(path, 2).items() == expected[-2:]  # a smaller cap applies on read


def test_zero_keeps_nothing(tmp_path: Path) -> None:
    history = PromptHistory(tmp_path / "h", 0)
    history.add("secret")
    assert history.items() == [] and not (tmp_path / "h").exists()


def test_garbage_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "h"
    path.write_bytes(b'"good one"\n{not json\n\xff\xfe\n42\n"good two"\n')
    history = PromptHistory(path, 10)
    assert history.items() == ["good one", "good two"]
    history.add("three")
    assert PromptHistory(path, 10).items() == ["good one", "good two", "three"]


def test_unwritable_file_is_a_one_line_error(tmp_path: Path) -> None:
    folder = tmp_path / "is_a_dir"
    folder.mkdir()
    history = PromptHistory(folder, 10)
    with pytest.raises(LampchatError, match="cannot save the prompt history"):
        history.add("x")
    assert history.items() == ["x"]  # still recalled in this session


def test_from_config(tmp_path: Path) -> None:
    config = load_config(tmp_path / "c.toml", env={
        "LAMPCHAT_SESSION__HISTORY_FILE": str(tmp_path / "recall"),
        "LAMPCHAT_SESSION__MAX_HISTORY": "3"})
    history = open_prompt_history(config)
    assert history.path == tmp_path / "recall" and history.max_entries == 3
    default = open_prompt_history(load_config(tmp_path / "d.toml", env={}))
    assert default.path.name == "prompt_history" and default.max_entries == 1000


def test_two_sessions_share_the_file(tmp_path: Path) -> None:
    """Two Lampchats appending to one file: compaction keeps the other one's prompts."""
    path = tmp_path / "h"
    first, second = PromptHistory(path, 4), PromptHistory(path, 4)
    for i in range(6):
        first.add(f"a{i}")
        second.add(f"b{i}")
    assert PromptHistory(path, 4).items() == ["a4", "b4", "a5", "b5"]
    assert first.items()[-1] == "a5" and second.items()[-1] == "b5"
