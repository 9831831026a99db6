"""`lampchat ask --backend native` answers as llama.cpp does, greedy, on an F32 GGUF of every
family the native engine runs (written as llama.cpp's converter writes it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import run_lampchat
from tests.support.family_models import FAMILIES, file_name

pytestmark = [pytest.mark.slow]


def _ask(path: Path, backend: str) -> dict:
    result = run_lampchat("ask", "-m", str(path), "--backend", backend, "--temperature", "0",
                          "--max-tokens", "32", "--json", "Name three colours.")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_native_greedy_reply_equals_llama_cpp(tmp_path: Path, family: str) -> None:
    path = FAMILIES[family](tmp_path / file_name(family))
    native, reference = _ask(path, "native"), _ask(path, "llama.cpp")
    assert native["backend"] == "native" and reference["backend"] == "llama.cpp"
    assert native["chat_template"] == reference["chat_template"]
    assert native["prompt_tokens"] == reference["prompt_tokens"]
    assert native["completion_tokens"] == reference["completion_tokens"] == 32
    assert native["text"] == reference["text"]
