"""Config precedence and bad config files as a user meets them: the real `lampchat ask` with the
real default model. `max_tokens` is the probe: the reply's completion token count shows which
layer won (the library-level matrix over every layer is in test_config.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import run_lampchat

PROMPT = "Write a very long poem about the sea, with many verses."
FILE_TEXT = (
    "# my settings\n"
    "[generation]\n"
    "max_tokens = 9\n"
    "temprature = 0.1\n"  # line 4: unknown key (a typo)
    "top_p = 7\n"  # line 5: out of range
    'seed = "lucky"\n'  # line 6: wrong type
    "temperature = 0\n"
)


@pytest.mark.parametrize(("layers", "expected"), [
    (("file",), 9),
    (("file", "env"), 7),
    (("file", "env", "cli"), 4),
])
def test_ask_precedence_cli_over_env_over_file(tmp_path: Path, layers: tuple[str, ...],
                                                expected: int) -> None:
    path = tmp_path / "config.toml"
    path.write_text(FILE_TEXT)
    env = {"LAMPCHAT_CONFIG": str(path)}
    if "env" in layers:
        env["LAMPCHAT_GENERATION__MAX_TOKENS"] = "7"
    flags = ["--max-tokens", "4"] if "cli" in layers else []
    done = run_lampchat("ask", "--json", *flags, PROMPT, env=env)
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["finish_reason"] == "length" and reply["completion_tokens"] == expected
    # the bad keys were warned about (file, line, key, what is allowed), the good ones used,
    # and the file was left exactly as it was
    warnings = [line for line in done.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 3, done.stderr
    assert f"{path}:4: unknown key 'generation.temprature'" in warnings[0]
    assert f"{path}:5: generation.top_p = 7" in warnings[1] and "<= 1" in warnings[1]
    assert f"{path}:6: generation.seed" in warnings[2] and "an integer" in warnings[2]
    assert "Traceback" not in done.stderr
    assert path.read_text() == FILE_TEXT


def test_ask_starts_with_defaults_when_the_file_is_unparsable(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    text = "[generation\nmax_tokens = 3\n"
    path.write_text(text)
    done = run_lampchat("ask", "--json", "--config", str(path), "-n", "3", "--temperature", "0",
                        PROMPT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["completion_tokens"] == 3
    assert f"{path}:1:" in done.stderr and "not valid TOML" in done.stderr
    assert "Traceback" not in done.stderr
    assert path.read_text() == text  # never rewritten
