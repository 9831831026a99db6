"""How bench drives each backend: one small adapter per backend, looked up by backend name.

An adapter says how to make a prompt of an exact token count (the backend's tokenizer), how to
start from a fresh context (so a cached prefix does not flatter prompt processing), how to read
GPU memory, and how to call the backend's library directly (the raw baseline Lampchat's
streaming overhead is measured against). A backend with no adapter module still runs through
Lampchat's path with the generic adapter; it just has no raw baseline.

To add one: write `engine/bench/adapters/<backend>.py` with a module-level `ADAPTER` and name it
in the backend class's `bench_adapter`.
"""

from __future__ import annotations

import importlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.backends.base import Backend
from engine.errors import LampchatError
from engine.registry import backend_class
from engine.types import ChatMessage, SamplingParams


@dataclass(frozen=True)
class StreamTiming:
    """One streamed reply, timed by the caller: request -> first token -> last token."""

    ttft_s: float
    """From the request to the first generated token (to the end if none came)."""
    tokens: int
    """Tokens generated."""
    decode_tokens: int
    """Tokens that arrived after the first item."""
    decode_s: float
    """From the first item to the last."""
    prompt_tokens: int = 0

    @property
    def decode_tps(self) -> float:
        """Tokens per second after the first item (0 when nothing came after it)."""
        return self.decode_tokens / self.decode_s if self.decode_tokens and self.decode_s else 0.0


class Timeline:
    """Collects arrival times of a stream's items; `done()` gives the `StreamTiming`."""

    def __init__(self, start: float | None = None) -> None:
        self.start = time.perf_counter() if start is None else start
        self.first: float | None = None
        self.last: float | None = None
        self.tokens = 0
        self.first_tokens = 0

    def mark(self, n_tokens: int) -> None:
        """`n_tokens` tokens arrived now (0 is ignored)."""
        if n_tokens <= 0:
            return
        now = time.perf_counter()
        if self.first is None:
            self.first = now
            self.first_tokens = n_tokens
        self.last = now
        self.tokens += n_tokens

    def done(self, prompt_tokens: int = 0) -> StreamTiming:
        """The timing so far."""
        end = time.perf_counter()
        if self.first is None or self.last is None:
            return StreamTiming(end - self.start, 0, 0, 0.0, prompt_tokens)
        return StreamTiming(self.first - self.start, self.tokens, self.tokens - self.first_tokens,
                            self.last - self.first, prompt_tokens)


class RawBaseline(ABC):
    """The backend's library called directly, on the model the backend already loaded.

    Reusing the loaded model keeps settings identical and keeps a second copy of the weights
    out of the peak RSS. Every call runs on the engine thread, like the backend's own calls.
    """

    calls: dict[str, str]
    """What each raw figure times: "pp" (prompt evaluation) and "chat" (streamed reply)."""

    @abstractmethod
    def prompt(self, tokens: list[int]) -> float:
        """Seconds to evaluate `tokens` from a fresh context."""

    @abstractmethod
    def chat(self, messages: Sequence[ChatMessage], sampling: SamplingParams) -> StreamTiming:
        """Stream a reply with the library's own chat call, from a fresh context."""

    def prompt_messages(self, messages: Sequence[ChatMessage]) -> float:
        """Seconds to evaluate a chat's prompt, for backends bench cannot tokenize for."""
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release anything the baseline holds (not the backend's model)."""


@dataclass(frozen=True)
class BenchAdapter:
    """What bench needs to know about one backend."""

    backend: str
    raw: Callable[[Backend], RawBaseline] | None = None
    """Builds the raw baseline from the loaded backend; None: no baseline."""
    fresh_context: Callable[[Backend], None] | None = None
    """Forget the KV cache, so the next prompt is evaluated from scratch."""
    tokenize: Callable[[Backend, Sequence[ChatMessage]], list[int]] | None = None
    """The backend's prompt tokens for a chat (template included)."""
    gpu_memory_mb: Callable[[Backend], float | None] | None = None
    """GPU memory the loaded model uses, where the backend can say."""


def _tokenize_prompt(backend: Backend, messages: Sequence[ChatMessage]) -> list[int]:
    return list(backend.tokenize_prompt(messages))  # type: ignore[attr-defined]


def generic_adapter(backend: str, backend_cls: type | None = None) -> BenchAdapter:
    """An adapter for a backend with no module here: Lampchat's path only, no raw baseline."""
    has_tokenize = backend_cls is not None and hasattr(backend_cls, "tokenize_prompt")
    return BenchAdapter(backend, tokenize=_tokenize_prompt if has_tokenize else None)


def adapter_for(backend: str, backend_obj: Backend | None = None) -> BenchAdapter:
    """The adapter the backend's class names (`Backend.bench_adapter`), else the generic one."""
    try:
        spec = backend_class(backend).bench_adapter
    except LampchatError:
        spec = None
    if spec is None:
        return generic_adapter(backend, type(backend_obj) if backend_obj is not None else None)
    module_name, _, attr = spec.partition(":")
    adapter: BenchAdapter = getattr(importlib.import_module(module_name), attr)
    return adapter


def timed_stream(
    start: float, items: Iterable[Any], count: Callable[[Any], int] = lambda _item: 1
) -> StreamTiming:
    """Time an iterator of generated items from `start` (a `perf_counter` value).

    `count` gives the tokens an item carries (0: not a token, e.g. a role-only chunk).
    """
    timeline = Timeline(start)
    for item in items:
        timeline.mark(count(item))
    return timeline.done()
