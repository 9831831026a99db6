"""Bench adapter for ONNX: the raw baseline is a plain onnxruntime greedy loop.

It runs the backend's loaded `InferenceSession` with `session.run(None, feeds)` and numpy
arrays for the KV cache (no IO binding, no sampler, no detokenizing), as a minimal
onnxruntime program would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from engine.backends.base import Backend
from engine.bench.adapters import BenchAdapter, RawBaseline, StreamTiming, timed_stream
from engine.bench.memory import nvml_process_memory_mb
from engine.types import ChatMessage, SamplingParams


class OnnxRaw(RawBaseline):
    """`InferenceSession.run` over the prompt, then one run per token with argmax."""

    calls = {
        "pp": "InferenceSession.run(None, {input_ids: prompt, empty past})",
        "chat": "InferenceSession.run per token, numpy past_key_values, argmax",
    }

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.session: Any = getattr(backend, "_session", None)
        if self.session is None:
            raise RuntimeError("the ONNX backend has no model loaded")
        self.n_layers: int = backend._n_layers  # type: ignore[attr-defined]
        self.heads, self.head_dim = backend._kv_shape  # type: ignore[attr-defined]
        self.dtype = backend._kv_dtype  # type: ignore[attr-defined]
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.eos = frozenset(getattr(backend, "_eos_ids", ()))

    def _run(self, tokens: Sequence[int], start: int, past: list[Any]) -> tuple[Any, list[Any]]:
        n = len(tokens)
        feeds: dict[str, Any] = {"input_ids": np.asarray([tokens], dtype=np.int64)}
        if "attention_mask" in self.inputs:
            feeds["attention_mask"] = np.ones((1, start + n), dtype=np.int64)
        if "position_ids" in self.inputs:
            feeds["position_ids"] = np.arange(start, start + n, dtype=np.int64)[None]
        for i in range(self.n_layers):
            feeds[f"past_key_values.{i}.key"] = past[2 * i]
            feeds[f"past_key_values.{i}.value"] = past[2 * i + 1]
        outputs = self.session.run(None, feeds)
        return outputs[0], list(outputs[1:1 + 2 * self.n_layers])

    def _empty(self) -> list[Any]:
        empty = np.zeros((1, self.heads, 0, self.head_dim), dtype=self.dtype)
        return [empty] * (2 * self.n_layers)

    def prompt(self, tokens: list[int]) -> float:
        """Seconds for one run over `tokens` from an empty cache."""
        start = time.perf_counter()
        self._run(tokens, 0, self._empty())
        return time.perf_counter() - start

    def _greedy(self, tokens: list[int], max_tokens: int) -> Iterator[int]:
        logits, past = self._run(tokens, 0, self._empty())
        pos = len(tokens)
        for count in range(max_tokens):
            token = int(np.argmax(logits[0, -1]))
            if token in self.eos:
                return
            yield token
            if count + 1 == max_tokens:
                return
            logits, past = self._run([token], pos, past)
            pos += 1

    def chat(self, messages: Sequence[ChatMessage], sampling: SamplingParams) -> StreamTiming:
        """Greedy token ids straight from the session."""
        start = time.perf_counter()
        tokens = self.backend.tokenize_prompt(messages)  # type: ignore[attr-defined]
        timing = timed_stream(start, self._greedy(tokens, sampling.max_tokens))
        return StreamTiming(timing.ttft_s, timing.tokens, timing.decode_tokens, timing.decode_s,
                            len(tokens))


def _fresh(backend: Backend) -> None:
    backend.reset_cache()  # type: ignore[attr-defined]


def _tokenize(backend: Backend, messages: Sequence[ChatMessage]) -> list[int]:
    return list(backend.tokenize_prompt(messages))  # type: ignore[attr-defined]


def _gpu_memory(backend: Backend) -> float | None:
    info = backend.info
    if info is None or info.device == "cpu" or not info.device.startswith(("cuda", "gpu")):
        return None

    return nvml_process_memory_mb()


ADAPTER = BenchAdapter(backend="onnx", raw=OnnxRaw, fresh_context=_fresh, tokenize=_tokenize,
                       gpu_memory_mb=_gpu_memory)
