"""Weights read as the native engine takes them (`load_model(lazy=True)`, as the native
backend loads): nothing is read while loading, each tensor is read once, straight into the
model's own array where it can, and the model is exactly the one eager loading builds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from engine.formats.loader import load_model
from engine.models import default_model_path
from engine.native import build_model
from tests.support.family_models import FAMILIES
from tests.support.tiny_models import (
    gpt2_config,
    gpt2_weights,
    llama_config,
    llama_weights,
    mlx_modules,
    phi3_folder,
    write_folder,
)

TOKENS = np.array([1, 5, 7, 99, 200, 3, 4, 5, 6, 7, 8, 9, 250, 17])


def _bf16_folder(folder: Path) -> Path:
    """A LLaMA folder in bfloat16, as most models on the hub are, written by MLX."""
    mx, _ = mlx_modules()
    config = llama_config()
    folder = write_folder(folder, config, llama_weights(config))
    weights = mx.load(str(folder / "model.safetensors"))
    mx.save_safetensors(str(folder / "model.safetensors"),
                        {k: v.astype(mx.bfloat16) for k, v in weights.items()})
    return folder


MODELS: dict[str, Callable[[Path], Path]] = {
    **{f"gguf {name}": lambda p, w=write: w(p / "model.gguf") for name, write in FAMILIES.items()},
    "gguf SmolLM2 (Q4_1, Q8_0)": lambda p: default_model_path(),
    "folder llama bf16": lambda p: _bf16_folder(p / "bf16"),
    "folder phi3 (fused)": lambda p: phi3_folder(p / "phi3"),
    "folder gpt2 (Conv1D)": lambda p: write_folder(p / "gpt2", gpt2_config(),
                                                   gpt2_weights(gpt2_config())),
}


@pytest.mark.parametrize("model", MODELS)
def test_lazy_weights_build_the_same_model_reading_each_tensor_once(
    tmp_path: Path, model: str
) -> None:
    path = MODELS[model](tmp_path)
    reads: list[str] = []
    lazy = load_model(path, progress=lambda _f, name: reads.append(name), lazy=True)
    assert reads == []  # loading reads names and shapes only
    names = set(lazy.weights)
    shapes = {name: lazy.weights.shape(name) for name in names}
    net = build_model(lazy.config, lazy.weights)
    assert len(reads) == len(set(reads)), "a tensor was read twice"
    assert set(reads) <= names

    eager = load_model(path)
    assert {name: tuple(a.shape) for name, a in eager.weights.items()} == shapes
    reference = build_model(eager.config, eager.weights)
    assert net.n_params == reference.n_params
    tokens = TOKENS % net.vocab_size
    np.testing.assert_array_equal(
        net.forward(tokens, net.new_cache(32), 0, all_logits=True),
        reference.forward(tokens, reference.new_cache(32), 0, all_logits=True))


def test_bfloat16_is_widened_exactly_as_mlx_widens_it(tmp_path: Path) -> None:
    mx, _ = mlx_modules()
    folder = _bf16_folder(tmp_path / "bf16")
    expected = mx.load(str(folder / "model.safetensors"))
    lazy = load_model(folder, lazy=True).weights
    for name in ("model.embed_tokens.weight", "model.layers.0.mlp.down_proj.weight"):
        out = np.empty(lazy.shape(name), dtype=np.float32)
        assert lazy.pop_into(name, out)
        np.testing.assert_array_equal(out, np.array(expected[name].astype(mx.float32)))


def test_unread_tensors_are_dropped_without_reading_them(tmp_path: Path) -> None:
    reads: list[str] = []
    lazy = load_model(FAMILIES["llama"](tmp_path / "m.gguf"),
                      progress=lambda _f, name: reads.append(name), lazy=True).weights
    n = len(lazy)
    lazy.rename("model.norm.weight", "renamed")
    del lazy["model.embed_tokens.weight"]
    assert "renamed" in lazy and "model.norm.weight" not in lazy and len(lazy) == n - 1
    assert lazy.n_elements() > 0
    lazy.clear()
    assert reads == [] and len(lazy) == 0
