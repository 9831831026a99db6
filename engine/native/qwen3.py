"""Qwen3: the LLaMA layout with a per-head RMSNorm of q and k before RoPE (`q_norm`,
`k_norm`), no biases, and a head dimension of its own (`head_dim`)."""

from __future__ import annotations

from typing import Any

from engine.native.base import Weights, cpu_only
from engine.native.llama import LlamaModel
from engine.native.ops import NumpyOps


class Qwen3Model(LlamaModel):
    """A Qwen3 decoder: LlamaModel with q/k norms."""

    arch = "qwen3"

    def __init__(self, config: dict[str, Any], weights: Weights,
                 ops: NumpyOps | None = None) -> None:
        cpu_only(ops, "qwen3 models", "their q/k norms are not in the OpenCL kernels")
        super().__init__({**config, "qk_norm": True}, weights, ops)
