"""Bench adapter for llama.cpp: the raw baseline is llama-cpp-python called directly."""

from __future__ import annotations

import contextlib
import ctypes
import time
from collections.abc import Iterator, Sequence
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
    """`Llama.eval` for prompts, `Llama.create_chat_completion(stream=True)` for replies.

    It reuses the backend's loaded `Llama` (same settings, one copy of the weights in the
    peak RSS) but runs without the abort callback the backend installs for cancel, as a plain
    llama-cpp-python program would: that callback's cost is part of Lampchat's overhead.
    """

    calls = {
        "pp": "Llama.reset(); Llama.eval(tokens)",
        "chat": "Llama.reset(); Llama.create_chat_completion(messages, stream=True, ...)",
    }

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.llm = _llm(backend)

    @contextlib.contextmanager
    def _plain(self) -> Iterator[None]:
        """No abort callback inside the block; the backend's own is put back after."""
        import llama_cpp  # loads llama.cpp's native library: only when it is used

        reinstall = getattr(self.backend, "_install_abort_callback", None)
        if reinstall is None:
            yield
            return
        llama_cpp.llama_set_abort_callback(self.llm._ctx.ctx,
                                           ctypes.cast(None, llama_cpp.ggml_abort_callback),
                                           ctypes.c_void_p(0))
        try:
            yield
        finally:
            reinstall()  # the backend's own callback and data, however it makes them

    def prompt(self, tokens: list[int]) -> float:
        """Seconds for `Llama.eval` on `tokens` from an empty context."""
        self.llm.reset()
        with self._plain():
            start = time.perf_counter()
            self.llm.eval(tokens)
            return time.perf_counter() - start

    def chat(self, messages: Sequence[ChatMessage], sampling: SamplingParams) -> StreamTiming:
        """One streamed chat completion; each content chunk is one token."""
        self.llm.reset()
        with self._plain():
            return self._chat(messages, sampling)

    def _chat(self, messages: Sequence[ChatMessage], sampling: SamplingParams) -> StreamTiming:
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
    """Per-process NVML where nvidia-ml-py is installed (else bench's device-level probe)."""
    info = backend.info
    return nvml_process_memory_mb() if info is not None and info.device != "cpu" else None


ADAPTER = BenchAdapter(
    backend="llama.cpp",
    raw=LlamaCppRaw,
    fresh_context=_fresh,
    tokenize=_tokenize,
    gpu_memory_mb=_gpu_memory,
)
