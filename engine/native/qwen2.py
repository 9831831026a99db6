"""Qwen2 / Qwen2.5: the LLaMA layout with biases on the q, k and v projections (none on o).

Its sliding window is off in every released checkpoint (`use_sliding_window: false`); where it
is on, the context is limited to the window (`engine.formats.hf_folder.context_length`).
"""

from __future__ import annotations

from typing import Any

from engine.native.base import Weights
from engine.native.llama import LlamaModel
from engine.native.ops import NumpyOps


class Qwen2Model(LlamaModel):
    """A Qwen2 decoder: LlamaModel with q/k/v biases."""

    arch = "qwen2"

    def __init__(self, config: dict[str, Any], weights: Weights,
                 ops: NumpyOps | None = None) -> None:
        super().__init__({**config, "attention_bias": True}, weights, ops)
