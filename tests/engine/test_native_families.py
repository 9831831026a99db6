"""The native engine against llama.cpp (`logits_all=True`) on F32 GGUFs written the way
llama.cpp's converter writes them: every config option that changes the math is honoured."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from engine.errors import ModelLoadError
from engine.formats.loader import load_model
from engine.native import build_model
from tests.support.references import llama_cpp_logits, native_logits
from tests.support.tiny_gguf import write_gpt2_gguf, write_llama_gguf
from tests.support.tiny_models import (
    llama_config,
    llama_weights,
    mlx_logits,
    phi3_folder,
    write_folder,
)

pytestmark = [pytest.mark.slow]

PROMPT = b"The lighthouse keeper climbed the stairs at dusk"


def assert_same_logits(ours: np.ndarray, ref: np.ndarray, tolerance: float = 1e-4) -> None:
    """Within `tolerance` of the largest logit, and the same greedy token wherever the
    reference's top two differ by more than twice the largest error (not a near-tie)."""
    error = np.abs(ours - ref).max()
    assert error / np.abs(ref).max() < tolerance
    top2 = np.sort(ref, axis=-1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * error
    assert clear.sum() >= len(ref) // 2
    assert (ours.argmax(-1) == ref.argmax(-1))[clear].all()


@pytest.mark.parametrize("untied", [False, True])
def test_gpt2_head_tied_or_not_matches_llama_cpp(tmp_path: Path, untied: bool) -> None:
    path = write_gpt2_gguf(tmp_path / f"gpt2-{untied}.gguf", untied=untied)
    assert load_model(path).config["tie_word_embeddings"] is (not untied)
    ids, ref = llama_cpp_logits(path, PROMPT)
    ours = native_logits(path, ids)
    # llama.cpp's GELU reads a float16 table: about 4e-4 off an exact GELU
    assert_same_logits(ours, ref, tolerance=1e-3)


@pytest.mark.parametrize(("override", "named"), [
    ({"hidden_act": "gelu_pytorch_tanh"}, "hidden_act 'gelu_pytorch_tanh'"),
    ({"final_logit_softcapping": 30.0}, "final_logit_softcapping=30.0"),
    ({"partial_rotary_factor": 0.5}, "partial_rotary_factor=0.5"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "'yarn'"),
])
def test_config_options_it_would_get_wrong_are_refused_by_name(tmp_path: Path, override,
                                                                named: str) -> None:
    """Never silently wrong: the native engine, and `convert --to onnx` (the same config
    reader), refuse a model whose config changes the math in a way they do not implement."""
    from tests.support.cli import run_lampchat

    config = llama_config(**override)
    folder = write_folder(tmp_path / "model", config, llama_weights(config))
    with pytest.raises(ModelLoadError, match=re.escape(named)):
        build_model(load_model(folder).config, load_model(folder).weights)
    result = run_lampchat("convert", str(folder), "--to", "onnx", "-o", str(tmp_path / "onnx"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]  # after the progress lines
    assert last.startswith("lampchat: error: ") and named in last
    assert not (tmp_path / "onnx").exists()


def test_sliding_window_layers_match_mlx_past_the_window(tmp_path: Path) -> None:
    """Sliding-window layers (window 8) attend to the last 8 positions only, in one prefill,
    in chunks and token by token alike, equal to mlx-lm far past the window (a LLaMA config
    with `layer_types`, which mlx-lm runs; it needs one full-attention layer). Mistral's
    window covers every layer. Engines with full attention (ONNX, MLX on a Mistral config)
    still get the window as their context."""
    from engine.formats.hf_folder import context_length
    from engine.native.llama import LlamaConfig

    kinds = ["sliding_attention", "full_attention", "sliding_attention"]
    config = llama_config(sliding_window=8, layer_types=kinds)
    folder = write_folder(tmp_path / "windowed", config, llama_weights(config))
    loaded = load_model(folder)
    net = build_model(loaded.config, loaded.weights)
    assert net.max_positions == 128 and net.windows == (8, None, 8)
    tokens = np.random.default_rng(3).integers(0, 300, 40)
    ours = net.forward(tokens, net.new_cache(64), 0, all_logits=True)
    reference = mlx_logits(folder, tokens)
    full = mlx_logits(write_folder(tmp_path / "full", llama_config(), llama_weights(config)),
                      tokens)
    assert np.abs(ours - reference).max() / np.abs(reference).max() < 1e-4
    assert np.abs(ours[8:] - full[8:]).max() > 1e-2  # the window changes the answer
    cache = net.new_cache(64)
    chunked = np.concatenate([net.forward(tokens[:13], cache, 0, all_logits=True),
                              net.forward(tokens[13:30], cache, 13, all_logits=True)]
                             + [net.forward(tokens[i : i + 1], cache, i, all_logits=True)
                                for i in range(30, 40)])
    assert np.abs(chunked - ours).max() < 1e-4

    mistral = llama_config(model_type="mistral", architectures=["MistralForCausalLM"],
                           sliding_window=8, max_position_embeddings=128)
    assert context_length(mistral) == 8 and context_length(mistral, windowed=True) == 128
    assert build_model(mistral, llama_weights(mistral)).windows == (8, 8, 8)
    assert build_model({**mistral, "use_sliding_window": False},
                       llama_weights(mistral)).windows == (None, None, None)
    phi3 = {**mistral, "model_type": "phi3"}  # transformers' Phi-3 windows every layer too
    assert LlamaConfig.from_hf(phi3).windows == (8, 8, 8)
    # Mistral's converter writes a llama GGUF with its window recorded: read as Mistral (as
    # transformers runs it; llama.cpp runs full attention on llama GGUFs)
    gguf = load_model(write_llama_gguf(tmp_path / "mistral.gguf", sliding_window=8)).config
    assert gguf["model_type"] == "mistral" and gguf["sliding_window"] == 8


@pytest.mark.parametrize(("override", "named"), [
    ({"layer_types": ["full_attention", "chunked_attention", "full_attention"]},
     "layer_types value 'chunked_attention'"),
    ({"layer_types": ["full_attention"]}, "layer_types must list one type per layer"),
    ({"layer_types": ["sliding_attention"] * 3, "sliding_window": None}, "sliding_window=None"),
])
def test_layer_types_it_cannot_run_are_refused_by_name(override: dict, named: str) -> None:
    from engine.native.llama import LlamaConfig

    with pytest.raises(ModelLoadError, match=re.escape(named)):
        LlamaConfig.from_hf(llama_config(**override))


def test_a_gguf_rotating_part_of_each_head_is_refused_by_name(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "partial.gguf", rope_dims=8)
    with pytest.raises(ModelLoadError, match=re.escape("partial_rotary_factor=0.5")):
        build_model(load_model(path).config, load_model(path).weights)


def test_context_length_reads_every_key_models_use() -> None:
    from engine.formats.hf_folder import context_length

    assert context_length({"n_positions": 512, "n_ctx": 1024}) == 512  # GPT-2
    assert context_length({"max_position_embeddings": 8192}) == 8192
    assert context_length({"seq_length": 2048}) == 2048
    assert context_length({"max_position_embeddings": 32768, "sliding_window": 4096,
                           "use_sliding_window": False}) == 32768  # Qwen2: window off
    assert context_length({}) is None


@pytest.mark.parametrize(("name", "options"), [
    ("llama", {"layers": 2}),
    ("llama-untied", {"layers": 2, "untied": True}),
    ("llama3-rope-freqs", {"layers": 2, "rope_freqs": True}),
    ("llama-head-dim-32", {"layers": 2, "head_dim": 32}),
    ("qwen2", {"arch": "qwen2", "layers": 2, "qkv_bias": True}),
    ("qwen3", {"arch": "qwen3", "layers": 2, "qk_norm": True, "head_dim": 32}),
    ("phi3", {"arch": "phi3", "layers": 2, "untied": True}),
])
def test_llama_family_ggufs_match_llama_cpp(tmp_path: Path, name: str, options: dict) -> None:
    """F32 GGUFs of each LLaMA-layout family, written as llama.cpp's converter writes them
    (q/k rows permuted for llama only): native logits within 1e-4 of llama.cpp's (float32 KV
    cache; measured about 1e-6), and the same greedy tokens."""
    path = write_llama_gguf(tmp_path / f"{name}.gguf", **options)
    ids, ref = llama_cpp_logits(path, PROMPT)
    ours = native_logits(path, ids)
    assert_same_logits(ours, ref)


def _qwen_folder(tmp_path: Path, model_type: str) -> Path:
    config = llama_config(model_type=model_type, architectures=[f"{model_type.title()}ForCausalLM"],
                          head_dim=32 if model_type == "qwen3" else None,
                          use_sliding_window=False, sliding_window=4096)
    if config["head_dim"] is None:
        del config["head_dim"]
    weights = llama_weights(config)
    rng = np.random.default_rng(5)
    hd = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}.self_attn."
        if model_type == "qwen2":
            for name, n in (("q", 4 * hd), ("k", 2 * hd), ("v", 2 * hd)):
                weights[f"{p}{name}_proj.bias"] = (rng.standard_normal(n) * 0.5).astype(np.float32)
        else:
            weights[p + "q_norm.weight"] = (1 + rng.standard_normal(hd) * 0.3).astype(np.float32)
            weights[p + "k_norm.weight"] = (1 + rng.standard_normal(hd) * 0.3).astype(np.float32)
    return write_folder(tmp_path / model_type, config, weights)


@pytest.mark.parametrize("model_type", ["qwen2", "qwen3"])
def test_qwen_folders_match_mlx_lm(tmp_path: Path, model_type: str) -> None:
    """HF folders (config.json + safetensors, as transformers writes them) against mlx-lm's
    own Qwen2 and Qwen3: logits within 1e-4 and the same greedy tokens; the registry offers
    native for them."""
    from engine.registry import readers

    folder = _qwen_folder(tmp_path, model_type)
    loaded = load_model(folder)
    net = build_model(loaded.config, loaded.weights)
    tokens = np.array([1, 5, 7, 99, 200, 3, 4, 5, 6, 7, 8, 9, 250, 17])
    ours = net.forward(tokens, net.new_cache(64), 0, all_logits=True)
    assert_same_logits(ours, mlx_logits(folder, tokens))
    assert "native" in readers("safetensors", model_type)


def test_mlx_lm_is_given_the_rope_base_transformers_v5_writes_under_rope_parameters(
    tmp_path: Path,
) -> None:
    """mlx-lm reads `rope_theta` only; a transformers-v5 config puts it in `rope_parameters`.
    Read plainly, mlx-lm runs RoPE with base 10,000 and gets other logits; with the keys the
    MLX backend passes on (`mlx_overrides`) it matches the old layout and the native engine."""
    from engine.backends.mlx import mlx_overrides
    from tests.support.tiny_models import mlx_modules

    mx, mlx_utils = mlx_modules()
    old = llama_config(rope_theta=500.0)
    v5 = {k: v for k, v in old.items() if k != "rope_theta"}
    v5["rope_parameters"] = {"rope_type": "default", "rope_theta": 500.0}
    assert mlx_overrides(v5) == {"rope_theta": 500.0} and mlx_overrides(old) == {}
    tokens = np.array([1, 5, 7, 99, 200, 3, 4, 5, 6, 7])
    reference = mlx_logits(write_folder(tmp_path / "old", old, llama_weights(old)), tokens)
    folder = write_folder(tmp_path / "v5", v5, llama_weights(v5))

    def mlx_v5(overrides: dict) -> np.ndarray:
        model, _ = mlx_utils.load_model(folder, model_config=overrides)
        return np.array(model(mx.array(tokens[None].astype(np.int32)))[0].astype(mx.float32))

    assert np.abs(mlx_v5({}) - reference).max() > 1e-2  # mlx-lm alone: silently wrong
    assert_same_logits(mlx_v5(mlx_overrides(v5)), reference)
    loaded = load_model(folder)
    net = build_model(loaded.config, loaded.weights)
    assert_same_logits(net.forward(tokens, net.new_cache(32), 0, all_logits=True), reference)


def test_phi3_folder_matches_mlx_lm(tmp_path: Path) -> None:
    from engine.registry import readers

    folder = phi3_folder(tmp_path / "phi3")
    loaded = load_model(folder)
    net = build_model(loaded.config, loaded.weights)
    tokens = np.array([1, 5, 7, 99, 200, 3, 4, 5, 6, 7, 8, 9, 250, 17])
    ours = net.forward(tokens, net.new_cache(64), 0, all_logits=True)
    assert_same_logits(ours, mlx_logits(folder, tokens))
    assert "native" in readers("safetensors", "phi3")


@pytest.mark.parametrize("n_ctx", [256, 1024])
def test_phi3_longrope_gguf_matches_llama_cpp_short_and_long(tmp_path: Path, n_ctx: int) -> None:
    """Phi-3 128k's LongRoPE as its converter writes it (factor tensors, pretrained context
    512, attention factor): llama.cpp rotates with the short factors while the context fits
    the pretrained one and with the long ones past it, and so does the native engine."""
    path = write_llama_gguf(tmp_path / "phi3.gguf", arch="phi3", layers=2, untied=True,
                            longrope=True)
    ids, ref = llama_cpp_logits(path, PROMPT, n_ctx)
    assert_same_logits(native_logits(path, ids, n_ctx), ref)
    other = native_logits(path, ids, 1024 if n_ctx == 256 else 256)
    assert np.abs(other - ref).max() > 0.1  # the other factors are far off


def test_phi3_longrope_folder_matches_mlx_lm_and_bad_factors_are_refused(tmp_path: Path) -> None:
    """mlx-lm always rotates with the long factors: equal to the native engine with a
    context past the pretrained one."""
    half = 8  # head_dim 16
    rope = {"type": "longrope", "short_factor": np.linspace(1, 2, half).tolist(),
            "long_factor": np.geomspace(1, 30, half).tolist()}
    folder = phi3_folder(tmp_path / "phi3", rope_scaling=rope, max_position_embeddings=512,
                          original_max_position_embeddings=64)
    loaded = load_model(folder)
    net = build_model(loaded.config, loaded.weights)
    tokens = np.random.default_rng(4).integers(0, 300, 30)
    ours = net.forward(tokens, net.new_cache(128), 0, all_logits=True)
    assert_same_logits(ours, mlx_logits(folder, tokens))
    bad = {**loaded.config, "rope_scaling": {**rope, "long_factor": [1.0] * 3}}
    with pytest.raises(ModelLoadError, match="long_factor must list 8 numbers"):
        build_model(bad, load_model(folder).weights)
