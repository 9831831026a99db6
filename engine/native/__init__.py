"""Lampchat's own numpy inference engine: LLaMA-family transformers (LLaMA, Mistral, Qwen2,
Qwen3, Phi-3, Gemma 2 and 3) and GPT-2, with a KV cache.

`build_model` picks the architecture from an HF `config.json` dict; `Generator` runs it.
"""

from __future__ import annotations

from typing import Any

from engine.errors import ModelLoadError
from engine.native.base import NativeModel, Weights
from engine.native.ops import NumpyOps

ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text", "gpt2")
"""The `model_type` values the native engine runs."""


def build_model(
    config: dict[str, Any],
    weights: Weights,
    ops: NumpyOps | None = None,
) -> NativeModel:
    """Build the model `config["model_type"]` describes, taking (popping) its `weights`."""
    model_type = str(config.get("model_type", "")).lower()
    if model_type in ("llama", "mistral"):  # Mistral: LLaMA + sliding window
        # each family's module only when such a model is built
        from engine.native.llama import LlamaModel

        return LlamaModel(config, weights, ops)
    if model_type == "qwen2":
        # each family's module only when such a model is built
        from engine.native.qwen2 import Qwen2Model

        return Qwen2Model(config, weights, ops)
    if model_type == "qwen3":
        # each family's module only when such a model is built
        from engine.native.qwen3 import Qwen3Model

        return Qwen3Model(config, weights, ops)
    if model_type == "phi3":
        # each family's module only when such a model is built
        from engine.native.phi3 import Phi3Model

        return Phi3Model(config, weights, ops)
    if model_type in ("gemma2", "gemma3_text"):
        # each family's module only when such a model is built
        from engine.native.gemma import GemmaModel

        return GemmaModel(config, weights, ops)
    if model_type == "gpt2":
        # each family's module only when such a model is built
        from engine.native.gpt2 import GPT2Model

        return GPT2Model(config, weights, ops)
    raise ModelLoadError(
        f"the native backend does not run {model_type or 'this'!r} models "
        f"(it runs: {', '.join(ARCHITECTURES)})"
    )
