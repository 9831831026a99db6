"""Tiny random LLaMA and GPT-2 weights and configs, as transformers would write them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file


def _random(rng: np.random.Generator, *shape: int, scale: float = 0.08) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def llama_config(**overrides: Any) -> dict[str, Any]:
    config = dict(model_type="llama", architectures=["LlamaForCausalLM"], vocab_size=300,
                  hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=96, rope_theta=100000.0,
                  tie_word_embeddings=True, max_position_embeddings=128, rms_norm_eps=1e-5,
                  attention_bias=False, mlp_bias=False)
    config.update(overrides)
    return config


def llama_weights(config: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    """Random HF-named LLaMA weights (norm weights near 1, biases when configured)."""
    rng = np.random.default_rng(seed)
    d, f = config["hidden_size"], config["intermediate_size"]
    hd = config.get("head_dim") or d // config["num_attention_heads"]
    q, kv = config["num_attention_heads"] * hd, config["num_key_value_heads"] * hd
    w = {"model.embed_tokens.weight": _random(rng, config["vocab_size"], d, scale=0.5),
         "model.norm.weight": 1 + _random(rng, d)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes = {"self_attn.q_proj": (q, d), "self_attn.k_proj": (kv, d),
                  "self_attn.v_proj": (kv, d), "self_attn.o_proj": (d, q),
                  "mlp.gate_proj": (f, d), "mlp.up_proj": (f, d), "mlp.down_proj": (d, f)}
        for name, shape in shapes.items():
            w[f"{p}{name}.weight"] = _random(rng, *shape)
            attn = name.startswith("self_attn")
            if (attn and config["attention_bias"]) or (not attn and config["mlp_bias"]):
                w[f"{p}{name}.bias"] = _random(rng, shape[0])
        w[p + "input_layernorm.weight"] = 1 + _random(rng, d)
        w[p + "post_attention_layernorm.weight"] = 1 + _random(rng, d)
    if not config["tie_word_embeddings"]:
        w["lm_head.weight"] = _random(rng, config["vocab_size"], d, scale=0.5)
    return w


def gpt2_config(**overrides: Any) -> dict[str, Any]:
    config = dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=300,
                  n_embd=64, n_layer=3, n_head=4, n_positions=64, n_ctx=64,
                  layer_norm_epsilon=1e-5, activation_function="gelu_new",
                  tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)
    config.update(overrides)
    return config


def gpt2_weights(config: dict[str, Any], seed: int = 1) -> dict[str, np.ndarray]:
    """Random HF-named GPT-2 weights (Conv1D weights stored `[in, out]`, no prefix)."""
    rng = np.random.default_rng(seed)
    d = config["n_embd"]
    w = {"wte.weight": _random(rng, config["vocab_size"], d, scale=0.5),
         "wpe.weight": _random(rng, config["n_positions"], d, scale=0.2),
         "ln_f.weight": 1 + _random(rng, d), "ln_f.bias": _random(rng, d)}
    for i in range(config["n_layer"]):
        p = f"h.{i}."
        for name, (n_in, n_out) in {"attn.c_attn": (d, 3 * d), "attn.c_proj": (d, d),
                                    "mlp.c_fc": (d, 4 * d), "mlp.c_proj": (4 * d, d)}.items():
            w[f"{p}{name}.weight"] = _random(rng, n_in, n_out)
            w[f"{p}{name}.bias"] = _random(rng, n_out)
        for ln in ("ln_1", "ln_2"):
            w[f"{p}{ln}.weight"] = 1 + _random(rng, d)
            w[f"{p}{ln}.bias"] = _random(rng, d)
    return w


def mlx_modules():
    """mlx and mlx-lm's loader (the `mlx` extra, installed by the test command)."""
    return pytest.importorskip("mlx.core"), pytest.importorskip("mlx_lm.utils")


def write_folder(folder: Path, config: dict[str, Any], weights: dict[str, np.ndarray]) -> Path:
    """An HF folder: config.json + model.safetensors."""
    folder.mkdir(parents=True)
    save_file(weights, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def phi3_folder(folder: Path, **overrides: Any) -> Path:
    """A Phi-3 folder (fused qkv_proj and gate_up_proj, untied head) as transformers writes
    it."""
    config = llama_config(**{"model_type": "phi3", "architectures": ["Phi3ForCausalLM"],
                             "tie_word_embeddings": False, "sliding_window": None,
                             "original_max_position_embeddings": 128, **overrides})
    weights = llama_weights(config)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        weights[p + "self_attn.qkv_proj.weight"] = np.concatenate(
            [weights.pop(p + f"self_attn.{n}_proj.weight") for n in "qkv"])
        weights[p + "mlp.gate_up_proj.weight"] = np.concatenate(
            [weights.pop(p + f"mlp.{n}_proj.weight") for n in ("gate", "up")])
    return write_folder(folder, config, weights)


def mlx_logits(folder: Path, tokens: np.ndarray) -> np.ndarray:
    """Logits `(T, vocab)` of mlx-lm's own implementation loading the same folder."""
    mx, mlx_utils = mlx_modules()
    model, _ = mlx_utils.load_model(folder)
    return np.array(model(mx.array(tokens[None].astype(np.int32)))[0].astype(mx.float32))
