"""Atomic writes keep the user's symbolic links: the target is replaced, the link stays."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.atomic_file import atomic_write_text
from tests.support.cli import run_lampchat


def test_a_symlink_is_written_through(tmp_path: Path) -> None:
    target = tmp_path / "dotfiles" / "config.toml"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "config.toml"
    link.symlink_to(target)
    atomic_write_text(link, "new\n")
    assert link.is_symlink() and link.resolve() == target
    assert target.read_text() == "new\n"


def test_a_loop_of_links_is_an_os_error(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(OSError, match="loop of symbolic links"):
        atomic_write_text(tmp_path / "a", "x")


def test_config_set_and_save_history_keep_the_links(tmp_path: Path) -> None:
    real_config = tmp_path / "real" / "config.toml"
    real_config.parent.mkdir()
    real_config.write_text("# mine\n[generation]\ntemperature = 0.5\n")
    link = tmp_path / "linked.toml"
    link.symlink_to(real_config)
    result = run_lampchat("config", "set", "generation.temperature", "0.3", "--config", str(link))
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and "temperature = 0.3" in real_config.read_text()
    assert "# mine" in real_config.read_text()
    history = tmp_path / "real" / "chat.toml"
    history_link = tmp_path / "chat.toml"
    history_link.symlink_to(history)
    result = run_lampchat("ask", "--save-history", str(history_link), "-n", "4",
                          "--temperature", "0", "Hi")
    assert result.returncode == 0, result.stderr
    assert history_link.is_symlink() and 'role = "assistant"' in history.read_text()
