"""Gemma 2 and Gemma 3 in the native engine, against llama.cpp on GGUFs written as its
converter writes them and against mlx-lm on the same weights as an HF folder."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from engine.errors import ModelLoadError
from engine.formats.loader import load_model
from engine.native import build_model
from engine.native.ops import NumpyOps
from tests.engine.test_native_families import assert_same_logits
from tests.support.references import llama_cpp_logits, native_logits
from tests.support.tiny_gguf import write_gemma_gguf
from tests.support.tiny_models import mlx_logits, write_folder

pytestmark = [pytest.mark.slow]

PROMPT = (b"The lighthouse keeper climbed the stairs at dusk, lit the lamp, and watched the "
          b"boats come home")

LAYERS = {"gemma2": 2, "gemma3": 6}
"""Enough layers for both kinds: Gemma 2 alternates sliding and full, Gemma 3 has five
sliding layers per full one."""


def _as_folder(gguf_path: Path, folder: Path) -> Path:
    """The GGUF's weights under their HF names (norms without the converter's +1) and its
    HF config, written as transformers writes a folder."""
    loaded = load_model(gguf_path)
    weights = {k: np.ascontiguousarray(v) for k, v in loaded.weights.items()}
    return write_folder(folder, loaded.config, weights)


@pytest.mark.parametrize("arch", ["gemma2", "gemma3"])
def test_gemma_ggufs_match_llama_cpp_with_a_sliding_window(tmp_path: Path, arch: str) -> None:
    """A window of 4 over a 21-token prompt: sliding layers, soft-capping (Gemma 2), q/k norms
    and two rope bases (Gemma 3) all as llama.cpp computes them. llama.cpp's GELU reads a
    float16 table, about 3e-4 off the exact tanh GELU (mlx-lm below agrees to 1e-6)."""
    path = write_gemma_gguf(tmp_path / f"{arch}.gguf", arch=arch, layers=LAYERS[arch])
    ids, ref = llama_cpp_logits(path, PROMPT)
    assert len(ids) > 16
    ours = native_logits(path, ids)
    assert_same_logits(ours, ref, tolerance=1e-3)
    config = load_model(path).config
    unwindowed = {**config, "sliding_window": 10_000}
    full = build_model(unwindowed, load_model(path).weights)
    full_logits = full.forward(np.array(ids), full.new_cache(128), 0, all_logits=True)
    assert np.abs(full_logits - ref).max() > 10 * np.abs(ours - ref).max()  # the window counts


@pytest.mark.parametrize(("arch", "window"), [("gemma2", 64), ("gemma3", 4)])
def test_gemma_folders_match_mlx(tmp_path: Path, arch: str, window: int) -> None:
    """The same weights as an HF folder (config.json + safetensors): native logits within
    1e-4 of mlx-lm's. mlx-lm's gemma2 runs full attention on every layer, so its window is
    wider than the prompt there; its gemma3_text runs the window."""
    path = write_gemma_gguf(tmp_path / f"{arch}.gguf", arch=arch, layers=LAYERS[arch],
                            sliding_window=window)
    folder = _as_folder(path, tmp_path / arch)
    tokens = np.random.default_rng(1).integers(0, 49152, 30)
    loaded = load_model(folder)
    net = build_model(loaded.config, loaded.weights)
    ours = net.forward(tokens, net.new_cache(64), 0, all_logits=True)
    ref = mlx_logits(folder, tokens)
    assert np.abs(ours - ref).max() / np.abs(ref).max() < 1e-4
    assert (ours.argmax(-1) == ref.argmax(-1)).all()


def test_gemma3_transformers_v5_rope_parameters_read_like_v4(tmp_path: Path) -> None:
    """transformers v5 writes Gemma 3's rope as `rope_parameters` keyed by layer type; the
    model computes the same logits as from the v4 keys."""
    path = write_gemma_gguf(tmp_path / "g3.gguf", arch="gemma3", layers=6)
    v4 = load_model(path)
    config = dict(v4.config)
    base, local = config.pop("rope_theta"), config.pop("rope_local_base_freq")
    config["rope_parameters"] = {
        "full_attention": {"rope_type": "default", "rope_theta": base},
        "sliding_attention": {"rope_type": "default", "rope_theta": local}}
    tokens = np.arange(1, 20)
    a = build_model(v4.config, v4.weights)
    b = build_model(config, load_model(path).weights)
    assert np.array_equal(a.forward(tokens, a.new_cache(32), 0, all_logits=True),
                          b.forward(tokens, b.new_cache(32), 0, all_logits=True))


def test_gemma_options_it_would_get_wrong_are_refused_by_name(tmp_path: Path) -> None:
    path = write_gemma_gguf(tmp_path / "g2.gguf", arch="gemma2", layers=2)
    config = load_model(path).config
    with pytest.raises(ModelLoadError, match=re.escape("hidden_activation 'gelu'")):
        build_model({**config, "hidden_activation": "gelu"}, load_model(path).weights)

    class OtherOps(NumpyOps):  # any compute path but numpy's (OpenCL's kernels lack GeGLU)
        pass

    with pytest.raises(ModelLoadError, match="gemma2 models run on the CPU only"):
        build_model(config, load_model(path).weights, OtherOps())
    write_folder(tmp_path / "mm", {"model_type": "gemma3"},  # multimodal Gemma 3
                 {"language_model.model.norm.weight": np.ones(4, np.float32)})
    with pytest.raises(ModelLoadError, match="'gemma3' is not supported"):
        load_model(tmp_path / "mm")


def test_a_gemma_gguf_without_a_template_chats_in_gemma_and_stops(tmp_path: Path) -> None:
    """No `tokenizer.chat_template` and a vocabulary with Gemma's turn tokens: the native
    backend renders Gemma's format and stops at `<end_of_turn>`."""
    from engine.backends.native import NativeBackend
    from engine.types import ChatMessage, LoadSettings

    renames = {0: "<end_of_turn>", 1: "<start_of_turn>", 2: "<eos>"}
    path = write_gemma_gguf(tmp_path / "g3.gguf", arch="gemma3", layers=6, renames=renames)
    backend = NativeBackend()
    info = backend.load(str(path), LoadSettings(n_ctx=128))
    assert info.chat_template_source == "built-in (gemma)"
    ids = backend.tokenize_prompt([ChatMessage("user", "hi")])
    text = backend._tokenizer.decode(ids, skip_special_tokens=False)
    assert text == "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
    assert 0 in backend._eos_ids
    backend.unload()
