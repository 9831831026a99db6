"""Qwen3: the LLaMA layout with a per-head RMSNorm of q and k before RoPE (`q_norm`,
`k_norm`), no biases, and a head dimension of its own (`head_dim`)."""

from __future__ import annotations

from typing import Any

from engine.errors import ModelLoadError
from engine.native.base import BuildProgress, Weights
from engine.native.llama import LlamaModel
from engine.native.ops import NumpyOps


class Qwen3Model(LlamaModel):
    """A Qwen3 decoder: LlamaModel with q/k norms."""

    arch = "qwen3"

    def __init__(self, config: dict[str, Any], weights: Weights, ops: NumpyOps | None = None,
                 progress: BuildProgress | None = None) -> None:
        if ops is not None and type(ops) is not NumpyOps:
            raise ModelLoadError("qwen3 models run on the CPU only in the native backend "
                                 "(their q/k norms are not in the OpenCL kernels)")
        super().__init__({**config, "qk_norm": True}, weights, ops, progress)
