"""A FIFO (or any file that is not a regular file) given as a model, a config or a history
file is refused in one line; nothing waits on it forever."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.cli import run_lampchat


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(("flags", "said"), [
    (["--model"], "model is not a regular file or folder"),
    (["--load-history"], "is not a regular file"),
    (["--config"], "is not a regular file"),
])
def test_a_fifo_is_refused_at_once(fifo: Path, flags: list[str], said: str) -> None:
    result = run_lampchat("ask", *flags, str(fifo), "--max-tokens", "2", "hi", timeout=60)
    assert "Traceback" not in result.stderr
    assert said in result.stderr, result.stderr
    if flags != ["--config"]:  # a config that cannot be read is a warning: defaults are used
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1


def test_a_history_file_over_its_size_limit_is_refused(tmp_path: Path, monkeypatch) -> None:
    from app import history
    from app.history import HistoryError, load_conversation_file

    big = tmp_path / "big.toml"
    big.write_text("x" * 5000)
    monkeypatch.setattr(history, "MAX_HISTORY_FILE", 4096)
    with pytest.raises(HistoryError, match="over the 4,096"):
        load_conversation_file(big)
