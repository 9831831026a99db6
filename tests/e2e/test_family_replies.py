"""`lampchat ask --backend native` answers as llama.cpp does, greedy, on an F32 GGUF of every
family the native engine runs (written as llama.cpp's converter writes it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import run_lampchat
from tests.support.family_models import FAMILIES, file_name
from tests.support.tiny_gguf import write_gemma_gguf

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


FOLDER_FAMILIES = ("llama", "qwen2", "qwen3", "phi3", "gemma2", "gemma3", "gpt2")
"""The families whose HF folders mlx-lm runs (a folder converted from the family's GGUF)."""


@pytest.mark.parametrize("family", FOLDER_FAMILIES)
def test_native_greedy_reply_equals_mlx_on_the_hf_folder(tmp_path: Path, family: str) -> None:
    """The same model as an HF folder (`lampchat convert`): `ask --backend native` answers as
    mlx-lm does, greedily. Gemma 2's window is longer than the reply here: mlx-lm's gemma2
    runs full attention."""
    pytest.importorskip("mlx_lm")
    if family == "gemma2":  # a window longer than prompt and reply (see above)
        gguf = write_gemma_gguf(tmp_path / "gemma2.gguf", arch="gemma2", layers=2,
                                sliding_window=64)
    else:
        gguf = FAMILIES[family](tmp_path / file_name(family))
    folder = tmp_path / "hf"
    converted = run_lampchat("convert", str(gguf), "-o", str(folder))
    assert converted.returncode == 0, converted.stderr
    native, reference = _ask(folder, "native"), _ask(folder, "mlx")
    assert reference["backend"] == "mlx"
    assert native["prompt_tokens"] == reference["prompt_tokens"]
    assert native["text"] == reference["text"]
