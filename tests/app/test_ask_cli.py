"""`lampchat ask` as a user runs it: a real process, the real default model."""

from __future__ import annotations

import json
import os

import pytest

from tests.support.cli import run_lampchat

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

JSON_FIELDS = {
    "text", "model", "backend", "device", "ttft_ms", "prompt_tokens", "prompt_tps",
    "completion_tokens", "decode_tps", "total_ms", "peak_rss_mb", "finish_reason",
}
GREEDY = ("--temperature", "0", "--seed", "3", "--max-tokens", "24")


def _assert_one_line_error(result, *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_json_output_has_every_field_and_consistent_metrics():
    result = run_lampchat("ask", "--json", *GREEDY, "Name a colour.")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # llama.cpp's logs go to the log file, never the terminal
    data = json.loads(result.stdout)
    assert set(data) >= JSON_FIELDS
    assert data["backend"] == "llama.cpp" and data["device"] == "cpu"
    assert data["finish_reason"] in {"stop", "length"}
    assert 0 < data["completion_tokens"] <= 24
    assert data["prompt_tokens"] > 0 and data["ttft_ms"] > 0 and data["decode_tps"] > 0
    assert data["total_ms"] >= data["ttft_ms"]
    assert data["text"].strip()


def test_greedy_reply_is_identical_across_two_processes():
    first = run_lampchat("ask", *GREEDY, "Say something about the sea.")
    second = run_lampchat("ask", *GREEDY, "Say something about the sea.")
    assert first.returncode == second.returncode == 0
    assert first.stdout.strip() and first.stdout == second.stdout


def test_streamed_text_equals_json_text():
    plain = run_lampchat("ask", *GREEDY, "Say something about the sea.")
    as_json = run_lampchat("ask", "--json", *GREEDY, "Say something about the sea.")
    assert plain.stdout.rstrip("\n") == json.loads(as_json.stdout)["text"].rstrip("\n")


def test_system_prompt_and_stdin_prompt():
    system = "You are a terse assistant. You answer every question in exactly one short word."
    with_system = run_lampchat("ask", "--json", *GREEDY, "--system", system, "-", input="Hello?")
    without = run_lampchat("ask", "--json", *GREEDY, "Hello?")
    assert with_system.returncode == without.returncode == 0, with_system.stderr
    a, b = json.loads(with_system.stdout), json.loads(without.stdout)
    assert a["text"].strip()
    # the model sees the system prompt instead of its template's default one
    assert a["prompt_tokens"] != b["prompt_tokens"]


@pytest.fixture
def bad_models(tmp_path, default_gguf):
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.gguf"
    with default_gguf.open("rb") as fh:
        truncated.write_bytes(fh.read(2_000_000))  # the header and part of the tensors
    header_only = tmp_path / "header-only.gguf"
    with default_gguf.open("rb") as fh:
        header_only.write_bytes(fh.read(24))
    random_bytes = tmp_path / "random.bin"
    random_bytes.write_bytes(os.urandom(4096))
    text = tmp_path / "notes.gguf"
    text.write_text("this is not a model\n")
    return {
        "empty": (empty, "empty"),
        "truncated": (truncated, "truncated"),
        "header-only": (header_only, "GGUF"),
        "random": (random_bytes, "unknown model format"),
        "text": (text, "unknown model format"),
        "missing": (tmp_path / "nope.gguf", "not found"),
    }


@pytest.mark.parametrize(
    "case", ["empty", "truncated", "header-only", "random", "text", "missing"]
)
def test_bad_model_files_give_a_one_line_error(bad_models, case):
    path, needle = bad_models[case]
    result = run_lampchat("ask", "--model", str(path), "hi")
    _assert_one_line_error(result, needle)


def test_unknown_backend_is_a_one_line_error():
    _assert_one_line_error(run_lampchat("ask", "--backend", "tensorflow", "hi"), "unknown backend")


@pytest.mark.parametrize(
    "option", [("--temperature", "-1"), ("--top-p", "0"), ("--top-p", "1.5"), ("--max-tokens", "0"),
               ("--top-k", "abc"), ("--min-p", "2"), ("--seed", "-4")]
)
def test_invalid_option_values_are_one_line_errors(option):
    result = run_lampchat("ask", *option, "hi")
    assert result.returncode == 2
    _assert_one_line_error(result, option[0])
