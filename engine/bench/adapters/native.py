"""Bench adapter for the native numpy engine: the raw baseline drives its `Generator` directly.

The raw path skips what the backend adds on top: detokenizing, stop strings, pieces and the
worker's thread hand-off.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from engine.backends.base import Backend
from engine.bench.adapters import BenchAdapter, RawBaseline, StreamTiming, timed_stream
from engine.sampling import Sampler
from engine.types import ChatMessage, SamplingParams


def _generator(backend: Backend) -> Any:
    generator = getattr(backend, "_generator", None)
    if generator is None:
        raise RuntimeError("the native backend has no model loaded")
    return generator


class NativeRaw(RawBaseline):
    """`Generator.prefill` for prompts, `Generator.generate` (token ids only) for replies."""

    calls = {
        "pp": "Generator.prefill(tokens) on an empty KV cache",
        "chat": "tokenize_prompt + Generator.generate(tokens, Sampler, max_tokens), no detokenize",
    }

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.generator = _generator(backend)

    def prompt(self, tokens: list[int]) -> float:
        """Seconds to prefill `tokens` into an empty cache."""
        self.generator.cache.truncate(0)
        start = time.perf_counter()
        self.generator.prefill(tokens)
        return time.perf_counter() - start

    def chat(self, messages: Sequence[ChatMessage], sampling: SamplingParams) -> StreamTiming:
        """Token ids straight from the generator, from an empty cache."""

        self.generator.cache.truncate(0)
        start = time.perf_counter()
        tokens = self.backend.tokenize_prompt(messages)  # type: ignore[attr-defined]
        eos = getattr(self.backend, "_eos_ids", frozenset())
        ids = self.generator.generate(tokens, Sampler(sampling), sampling.max_tokens, eos)
        timing = timed_stream(start, ids)
        return StreamTiming(timing.ttft_s, timing.tokens, timing.decode_tokens, timing.decode_s,
                            len(tokens))


def _fresh(backend: Backend) -> None:
    _generator(backend).cache.truncate(0)


def _tokenize(backend: Backend, messages: Sequence[ChatMessage]) -> list[int]:
    return list(backend.tokenize_prompt(messages))  # type: ignore[attr-defined]


ADAPTER = BenchAdapter(backend="native", raw=NativeRaw, fresh_context=_fresh, tokenize=_tokenize)
