"""Phi-3: the LLaMA layout with q/k/v fused in one `qkv_proj` and gate/up in one
`gate_up_proj` (gate first), untied embeddings, a sliding window on every layer. The 128k
models' LongRoPE is in `engine.native.llama` (`longrope_parameters`)."""

from __future__ import annotations

from typing import Any

from engine.errors import ModelLoadError
from engine.native.base import Weights
from engine.native.llama import LlamaModel


def split_fused(config: dict[str, Any], weights: Weights) -> None:
    """Split Phi-3's fused matrices into LLaMA's q/k/v and gate/up, in place."""
    d, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    hd = int(config.get("head_dim") or d // heads)
    q = heads * hd
    kv = int(config.get("num_key_value_heads") or heads) * hd
    ff = int(config["intermediate_size"])
    for i in range(int(config["num_hidden_layers"])):
        p = f"model.layers.{i}."
        qkv = weights.pop(p + "self_attn.qkv_proj.weight", None)
        gate_up = weights.pop(p + "mlp.gate_up_proj.weight", None)
        if qkv is None or gate_up is None:
            raise ModelLoadError(f"phi3 checkpoint lacks {p}self_attn.qkv_proj or "
                                 f"{p}mlp.gate_up_proj")
        if qkv.shape[0] != q + 2 * kv or gate_up.shape[0] != 2 * ff:
            raise ModelLoadError(f"phi3 layer {i}: fused shapes {qkv.shape}, {gate_up.shape} "
                                 "do not match the config")
        attn = p + "self_attn."
        weights[attn + "q_proj.weight"] = qkv[:q]
        weights[attn + "k_proj.weight"] = qkv[q : q + kv]
        weights[attn + "v_proj.weight"] = qkv[q + kv :]
        weights[p + "mlp.gate_proj.weight"] = gate_up[:ff]
        weights[p + "mlp.up_proj.weight"] = gate_up[ff:]


class Phi3Model(LlamaModel):
    """A Phi-3 decoder: LlamaModel, which takes the fused `qkv_proj` and `gate_up_proj` as
    they are stored."""

    arch = "phi3"
