"""Two processes never write one conversation file at once: the second refuses, saying who
holds it, and the first one's conversation comes out whole."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.history import load_conversation_file
from tests.support.cli import REPO, run_lampchat

pytestmark = [pytest.mark.real_model, pytest.mark.slow]


def test_a_second_writer_of_the_same_history_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "shared.toml"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    slow = subprocess.Popen(
        [sys.executable, "-m", "app", "ask", "--save-history", str(target), "--temperature",
         "0", "-n", "300", "Write a long essay about the history of lighthouses."],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not target.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert target.exists() and slow.poll() is None
        second = run_lampchat("ask", "--save-history", str(target), "-n", "4", "Say hi.")
        assert second.returncode == 1 and "Traceback" not in second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "is being written by another Lampchat" in lines[0]
        assert f"pid {slow.pid}" in lines[0]
        assert slow.wait(timeout=240) == 0, slow.stderr.read() if slow.stderr else ""
    finally:
        if slow.poll() is None:
            slow.kill()
    conv = load_conversation_file(target)
    assert [m.role for m in conv.messages] == ["user", "assistant"]
    assert conv.messages[0].content.startswith("Write a long essay")
    # the lock went with the process: the file can be continued now
    third = run_lampchat("ask", "--load-history", str(target), "--save-history", str(target),
                         "-n", "4", "--temperature", "0", "Thanks!")
    assert third.returncode == 0, third.stderr
    assert [m.role for m in load_conversation_file(target).messages] == [
        "user", "assistant", "user", "assistant"]
