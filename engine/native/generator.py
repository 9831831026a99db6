"""The decode loop: reuse the cached prefix, prefill the rest in batched chunks, then step."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence

import numpy as np

from engine.native.base import NativeModel
from engine.sampling import Sampler
from engine.types import FinishReason

PREFILL_CHUNK = 256
"""Prompt tokens per batched forward pass (bounds the attention scores' memory)."""


def _never() -> bool:
    return False


class Generator:
    """Runs one model over one KV cache, keeping the cache across replies.

    A new prompt that starts like the previous conversation only computes its new tokens.
    """

    def __init__(self, model: NativeModel, n_ctx: int, chunk: int = PREFILL_CHUNK) -> None:
        self.model = model
        self.n_ctx = n_ctx
        self.chunk = chunk
        self.cache = model.new_cache(n_ctx)
        self.finish_reason: FinishReason | None = None

    def prefill(
        self, tokens: Sequence[int], cancelled: Callable[[], bool] = _never
    ) -> np.ndarray | None:
        """Make the cache hold `tokens` and return the last one's logits (None if cancelled)."""
        if not tokens:
            raise ValueError("cannot prefill an empty prompt")
        if len(tokens) > self.n_ctx:
            raise ValueError(f"{len(tokens)} tokens do not fit a context of {self.n_ctx}")
        cache = self.cache
        pos = min(cache.common_prefix(tokens), len(tokens) - 1)
        cache.truncate(pos)
        logits = None
        while pos < len(tokens):
            if cancelled():
                return None
            chunk = list(tokens[pos : pos + self.chunk])
            logits = self.model.forward(np.asarray(chunk, dtype=np.int64), cache, pos)
            cache.tokens.extend(chunk)
            pos += len(chunk)
        return logits

    def step(self, token: int) -> np.ndarray:
        """Feed one token and return the logits for the next."""
        cache = self.cache
        logits = self.model.forward(np.array([token], dtype=np.int64), cache, cache.length)
        cache.tokens.append(token)
        return logits

    def generate(
        self,
        prompt: Sequence[int],
        sampler: Sampler,
        max_tokens: int,
        stop_ids: Collection[int] = (),
        cancelled: Callable[[], bool] = _never,
    ) -> Iterator[int]:
        """Yield up to `max_tokens` new tokens; an end-of-generation token ends it unyielded.

        Afterwards `finish_reason` is "stop" (end token), "length" (max tokens or the
        context is full) or "cancelled" (checked before every forward pass).
        """
        self.finish_reason = None
        logits = self.prefill(prompt, cancelled)
        if logits is None:
            self.finish_reason = "cancelled"
            return
        history = list(prompt)
        for count in range(1, max_tokens + 1):
            token = sampler(logits, history)
            if token in stop_ids:
                self.finish_reason = "stop"
                return
            yield token
            history.append(token)
            if count == max_tokens or self.cache.length >= self.n_ctx:
                break
            if cancelled():
                self.finish_reason = "cancelled"
                return
            logits = self.step(token)
        self.finish_reason = "length"
