"""Running the real `lampchat` command from this checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The checkout's root."""


def run_lampchat(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
                 input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `lampchat` command (as `python -m app`) from this checkout."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        capture_output=True, text=True, timeout=timeout, env=full_env, cwd=REPO, input=input,
    )


GREEDY_PROMPT = "Write a short poem about the sea."
"""The user message of the greedy-agreement tests."""
