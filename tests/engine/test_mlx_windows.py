"""mlx-lm runs full attention for most windowed families: the MLX backend limits their context
to the window (where it is exact) and keeps the whole context for those it windows."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.backends.mlx import mlx_overrides
from engine.convert import convert
from engine.types import LoadSettings
from tests.support.tiny_gguf import write_gemma_gguf, write_llama_gguf

pytestmark = [pytest.mark.slow]


def _mlx_context(folder: Path) -> int:
    pytest.importorskip("mlx_lm")
    from engine.backends.mlx import MLXBackend

    backend = MLXBackend()
    try:
        info = backend.load(str(folder), LoadSettings())
        return int(info.context_length or 0)
    finally:
        backend.unload()


def test_mistral_runs_within_its_window_and_gemma3_runs_whole(tmp_path: Path) -> None:
    mistral = write_llama_gguf(tmp_path / "mistral.gguf", layers=1, sliding_window=16)
    convert(mistral, tmp_path / "mistral")
    assert _mlx_context(tmp_path / "mistral") == 16  # mlx-lm's llama ignores the window
    gemma = write_gemma_gguf(tmp_path / "gemma3.gguf", arch="gemma3", layers=6)
    convert(gemma, tmp_path / "gemma3")
    assert _mlx_context(tmp_path / "gemma3") == 256  # mlx-lm's gemma3_text windows its layers
    gemma2 = write_gemma_gguf(tmp_path / "gemma2.gguf", arch="gemma2", layers=2)
    convert(gemma2, tmp_path / "gemma2")
    assert _mlx_context(tmp_path / "gemma2") == 4  # mlx-lm's gemma2 ignores the window


def test_gemma3_rope_parameters_by_layer_type_reach_mlx() -> None:
    config = {"model_type": "gemma3_text", "rope_parameters": {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}}
    assert mlx_overrides(config) == {
        "rope_local_base_freq": 1e4, "rope_theta": 1e6,
        "rope_scaling": {"rope_type": "linear", "factor": 8.0}}
