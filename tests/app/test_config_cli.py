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


@pytest.mark.parametrize(("flag", "value", "says"), [
    ("--temperature", "99", "99 is out of range; allowed: a number, >= 0 and <= 10"),
    ("--temperature", "nan", "nan is not a finite number"),
    ("--top-p", "inf", "inf is not a finite number"),
    ("--threads", "1000000000", "out of range; allowed: an integer, >= 0 and <= 1024"),
    ("--ctx", "1000000000", "out of range"),
    ("--seed", "-2", "out of range"),
])
def test_flags_are_checked_like_the_config_keys(flag: str, value: str, says: str) -> None:
    """One validation for flags, environment, config file and /set: the flag's range is its
    config key's (config and /set allow a temperature of at most 10, so `ask` does too)."""
    result = run_lampchat("ask", flag, value, "hi")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and says in lines[0]


def test_a_non_finite_number_in_the_config_or_environment_is_refused(tmp_path) -> None:
    from app.config import load_config

    path = tmp_path / "config.toml"
    path.write_text("[generation]\ntemperature = nan\ntop_p = inf\n")
    config = load_config(path, env={"LAMPCHAT_GENERATION__MIN_P": "nan"})
    assert config.get("generation.temperature") == 0.7  # the default, with a warning
    assert config.get("generation.top_p") == 0.95
    assert config.get("generation.min_p") == 0.05
    warnings = " ".join(config.warnings)
    assert "temperature" in warnings and "not a finite number" in warnings
