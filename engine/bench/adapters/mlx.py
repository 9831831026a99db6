"""Bench adapter for MLX: the raw baseline is mlx-lm called directly on the loaded model.

"pp" times the model's forward pass over the prompt into a fresh prompt cache; "chat" streams
`mlx_lm.stream_generate` with a greedy sampler from the prompt's token ids (no chat template
rendering, detokenizing or stop strings: what Lampchat adds on top).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from engine.backends.base import Backend
from engine.bench.adapters import BenchAdapter, RawBaseline, StreamTiming, timed_stream
from engine.types import ChatMessage, SamplingParams


def _loaded(backend: Backend) -> tuple[Any, Any]:
    model = getattr(backend, "_model", None)
    mx = getattr(backend, "_mx", None)
    if model is None or mx is None:
        raise RuntimeError("the MLX backend has no model loaded")
    return mx, model


class MlxRaw(RawBaseline):
    """`model(prompt, cache)` for prompts, `mlx_lm.stream_generate` for replies."""

    calls = {
        "pp": "mx.eval(model(prompt_ids, cache=make_prompt_cache(model)))",
        "chat": "mlx_lm.stream_generate(model, tokenizer, prompt_ids, sampler=greedy)",
    }

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.mx, self.model = _loaded(backend)
        self.tokenizer = backend._mlx_tokenizer  # type: ignore[attr-defined]
        self.stream = getattr(backend, "_stream", None)

    def prompt(self, tokens: list[int]) -> float:
        """Seconds for one forward pass over `tokens` (evaluated) from an empty cache."""
        from mlx_lm.models.cache import make_prompt_cache  # optional (the mlx extra)

        mx = self.mx
        cache = make_prompt_cache(self.model)
        ids = mx.array([tokens], dtype=mx.int32)
        start = time.perf_counter()
        if self.stream is not None:
            with mx.stream(self.stream):
                mx.eval(self.model(ids, cache=cache))
        else:
            mx.eval(self.model(ids, cache=cache))
        return time.perf_counter() - start

    def chat(self, messages: Sequence[ChatMessage], sampling: SamplingParams) -> StreamTiming:
        """`stream_generate` from the prompt ids; each response is one token."""
        from mlx_lm.generate import stream_generate  # optional (the mlx extra)
        from mlx_lm.sample_utils import make_sampler  # optional (the mlx extra)

        mx = self.mx
        start = time.perf_counter()
        tokens = self.backend.tokenize_prompt(messages)  # type: ignore[attr-defined]
        kwargs: dict[str, Any] = {}
        if self.stream is not None:
            kwargs["stream"] = self.stream
        responses = stream_generate(
            self.model, self.tokenizer, mx.array(tokens, dtype=mx.int32),
            max_tokens=sampling.max_tokens, sampler=make_sampler(temp=0.0), **kwargs)
        timing = timed_stream(start, responses)
        return StreamTiming(timing.ttft_s, timing.tokens, timing.decode_tokens, timing.decode_s,
                            len(tokens))


def _fresh(backend: Backend) -> None:
    backend._cache, backend._cache_tokens = None, []  # type: ignore[attr-defined]


def _tokenize(backend: Backend, messages: Sequence[ChatMessage]) -> list[int]:
    return list(backend.tokenize_prompt(messages))  # type: ignore[attr-defined]


def _gpu_memory(backend: Backend) -> float | None:
    """MLX's peak memory on a GPU device (Metal/CUDA); None on the CPU (it is in the RSS)."""
    info = backend.info
    mx = getattr(backend, "_mx", None)
    if mx is None or info is None or info.device == "cpu":
        return None
    peak = getattr(mx, "get_peak_memory", None) or mx.metal.get_peak_memory
    return float(peak()) / 2**20


ADAPTER = BenchAdapter(backend="mlx", raw=MlxRaw, fresh_context=_fresh, tokenize=_tokenize,
                       gpu_memory_mb=_gpu_memory)
