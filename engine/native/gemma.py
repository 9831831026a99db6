"""Gemma 2 and Gemma 3 (text): the LLaMA layout with GeGLU, RMSNorm scaled by `1 + weight`,
a norm after attention and after the MLP as well as before, embeddings scaled by
`sqrt(hidden_size)`, an attention scale of `query_pre_attn_scalar ** -0.5`, sliding-window
layers between full ones, and tied embeddings.

Gemma 2 soft-caps the attention scores and the logits (`cap * tanh(x / cap)`) and alternates
sliding and full layers. Gemma 3 has q/k norms, five sliding layers per full one, and rotates
sliding layers with their own base (`rope_local_base_freq`); only full layers are scaled.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from engine.errors import ModelLoadError
from engine.native.base import Weights, config_int, cpu_only, take
from engine.native.kv_cache import KVCache
from engine.native.llama import LlamaLayer, LlamaModel
from engine.native.ops import NumpyOps, rope_tables

TANH_GELUS = ("gelu_pytorch_tanh", "gelu_new")
"""Activations that are GELU's tanh approximation, the one Gemma is trained with."""

DEFAULT_SOFTCAPS = {"gemma2": (50.0, 30.0), "gemma3_text": (None, None)}
"""transformers' defaults for (attn_logit_softcapping, final_logit_softcapping)."""


def gemma_layer_types(config: dict[str, Any], model_type: str) -> list[str]:
    """`layer_types` as transformers derives it when a config lacks it: Gemma 2 alternates
    sliding and full layers; Gemma 3 makes every `sliding_window_pattern`-th layer full."""
    n = config_int(config, "num_hidden_layers")
    if config.get("layer_types") is not None:
        return list(config["layer_types"])
    every = 2 if model_type == "gemma2" else int(config.get("sliding_window_pattern") or 6)
    return ["full_attention" if (i + 1) % every == 0 else "sliding_attention" for i in range(n)]


def _rope(config: dict[str, Any]) -> tuple[dict[str, Any] | None, float, float]:
    """(full layers' rope parameters, their base, sliding layers' base), from either the
    transformers-v4 keys or v5's `rope_parameters` keyed by layer type."""
    params = config.get("rope_parameters")
    if isinstance(params, dict) and "full_attention" in params:
        full, local = params["full_attention"] or {}, params.get("sliding_attention") or {}
        return full, float(full.get("rope_theta", 1e6)), float(local.get("rope_theta", 1e4))
    full = params or config.get("rope_scaling")
    base = float(config.get("rope_theta") or (full or {}).get("rope_theta") or 10000.0)
    return full, base, float(config.get("rope_local_base_freq") or base)


class GemmaModel(LlamaModel):
    """A Gemma 2 or Gemma 3 text decoder."""

    arch = "gemma2"

    def __init__(self, config: dict[str, Any], weights: Weights,
                 ops: NumpyOps | None = None) -> None:
        model_type = str(config.get("model_type", "gemma2"))
        self.arch = model_type
        cpu_only(ops, f"{model_type} models", "the OpenCL kernels have no GeGLU, soft-capping "
                 "or sliding window")
        act = config.get("hidden_activation") or config.get("hidden_act") or TANH_GELUS[0]
        if act not in TANH_GELUS:
            raise ModelLoadError(f"hidden_activation {act!r} is not supported for {model_type} "
                                 f"models (the native engine runs {TANH_GELUS[0]})")
        n, d = config_int(config, "num_hidden_layers"), config_int(config, "hidden_size")
        for name in [k for k in weights if k.endswith("norm.weight")]:
            weights[name] = np.asarray(weights[name], dtype=np.float32) + np.float32(1.0)
        post_attn, post_mlp = [], []
        for i in range(n):  # LlamaModel's pre-MLP norm is Gemma's pre_feedforward_layernorm
            p = f"model.layers.{i}."
            post_attn.append(take(weights, p + "post_attention_layernorm.weight", (d,)))
            post_mlp.append(take(weights, p + "post_feedforward_layernorm.weight", (d,)))
            weights[p + "post_attention_layernorm.weight"] = take(
                weights, p + "pre_feedforward_layernorm.weight", (d,))
        types = gemma_layer_types(config, model_type)
        full, base, local_base = _rope(config)
        attn_cap, final_cap = DEFAULT_SOFTCAPS.get(model_type, (None, None))
        super().__init__({**config, "hidden_act": "silu", "layer_types": types,
                          "rope_parameters": None, "rope_scaling": full, "rope_theta": base,
                          "qk_norm": model_type != "gemma2", "attn_logit_softcapping": None,
                          "final_logit_softcapping": None, "query_pre_attn_scalar": None,
                          "tie_word_embeddings": config.get("tie_word_embeddings", True)},
                         weights, ops)
        cfg = self.cfg
        self.post_attn = [self.ops.prepare(w) for w in post_attn]
        self.post_mlp = [self.ops.prepare(w) for w in post_mlp]
        self.embed_scale = math.sqrt(d)
        self.scale = float(config.get("query_pre_attn_scalar") or cfg.head_dim) ** -0.5
        self.attn_softcap = config.get("attn_logit_softcapping", attn_cap) or None
        self.final_softcap = config.get("final_logit_softcapping", final_cap) or None
        self.n_params += 2 * n * d
        if model_type != "gemma2":  # sliding layers: their own base, never scaled
            self.tables.append(rope_tables(cfg.head_dim, cfg.max_positions, local_base))
            self.layer_table = [1 if kind == "sliding_attention" else 0 for kind in types]

    def _block(self, x: Any, layer: LlamaLayer, cache: KVCache, i: int, start: int,
               cos: np.ndarray, sin: np.ndarray) -> Any:
        ops, eps = self.ops, self.cfg.rms_norm_eps
        attn = self._attend(ops.rms_norm(x, layer.attn_norm, eps), layer, cache, i, start,
                            cos, sin)
        x = x + ops.rms_norm(attn, self.post_attn[i], eps)
        mlp = self._feed_forward(ops.rms_norm(x, layer.mlp_norm, eps), layer)
        return x + ops.rms_norm(mlp, self.post_mlp[i], eps)

    def _feed_forward(self, h: Any, layer: LlamaLayer) -> Any:
        ops = self.ops
        hidden = ops.gelu_glu(ops.linear(h, layer.w_gate_up, layer.b_gate_up))
        return ops.linear(hidden, layer.w_down, layer.b_down)
