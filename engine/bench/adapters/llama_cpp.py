"""Bench adapter for llama.cpp: the raw baseline is llama-cpp-python called directly."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from engine.backends.base import Backend
from engine.bench.adapters import BenchAdapter, RawBaseline, StreamTiming, timed_stream
from engine.bench.memory import nvml_process_memory_mb
from engine.types import ChatMessage, SamplingParams


def _llm(backend: Backend) -> Any:
    llm = getattr(backend, "_llm", None)
    if llm is None:
        raise RuntimeError("the llama.cpp backend has no model loaded")
    return llm


def _content_tokens(chunk: dict[str, Any]) -> int:
    return 1 if chunk["choices"][0]["delta"].get("content") else 0


class LlamaCppRaw(RawBaseline):
    """`Llama.eval` for prompts, `Llama.create_chat_completion(stream=True)` for replies."""

    calls = {
        "pp": "Llama.reset(); Llama.eval(tokens)",
        "chat": "Llama.reset(); Llama.create_chat_completion(messages, stream=True, ...)",
    }

    def __init__(self, backend: Backend) -> None:
        self.llm = _llm(backend)

    def prompt(self, tokens: list[int]) -> float:
        """Seconds for `Llama.eval` on `tokens` from an empty context."""
        self.llm.reset()
        start = time.perf_counter()
        self.llm.eval(tokens)
        return time.perf_counter() - start

    def chat(self, messages: Sequence[ChatMessage], sampling: SamplingParams) -> StreamTiming:
        """One streamed chat completion; each content chunk is one token."""
        self.llm.reset()
        start = time.perf_counter()
        chunks = self.llm.create_chat_completion(
            messages=[{"role": m.role, "content": m.content} for m in messages],
            stream=True,
            temperature=0.0 if sampling.greedy else sampling.temperature,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=sampling.min_p,
            repeat_penalty=sampling.repeat_penalty,
            max_tokens=sampling.max_tokens,
            seed=sampling.seed,
        )
        return timed_stream(start, chunks, _content_tokens)


def _fresh(backend: Backend) -> None:
    _llm(backend).reset()  # the next prompt shares no prefix with the context: all evaluated


def _tokenize(backend: Backend, messages: Sequence[ChatMessage]) -> list[int]:
    return list(backend.tokenize_prompt(messages))  # type: ignore[attr-defined]


def _gpu_memory(backend: Backend) -> float | None:
    info = backend.info
    return nvml_process_memory_mb() if info is not None and info.device != "cpu" else None


ADAPTER = BenchAdapter(
    backend="llama.cpp",
    raw=LlamaCppRaw,
    fresh_context=_fresh,
    tokenize=_tokenize,
    gpu_memory_mb=_gpu_memory,
)
