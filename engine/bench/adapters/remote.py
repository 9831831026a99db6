"""Bench adapter for remote servers: the raw baseline is one plain httpx streaming request.

Same server, model, body (the backend's own `payload`) and connection pool; the raw side
reads the server-sent events line by line and counts content deltas (one per token), with
none of the backend's helper thread, queue, retries or text assembly. A server has no prompt
evaluation call of its own, so "pp" is the time to the first content delta of a one-token
reply on both sides (network and server queueing included).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from engine.backends.base import Backend
from engine.bench.adapters import BenchAdapter, RawBaseline, StreamTiming, timed_stream
from engine.types import ChatMessage, SamplingParams


class RemoteRaw(RawBaseline):
    """`httpx.Client.stream("POST", .../chat/completions, stream=true)`, SSE read inline."""

    calls = {
        "pp": "POST /chat/completions (stream, max_tokens=1): time to the first delta",
        "chat": "POST /chat/completions (stream) with httpx, one SSE content delta per token",
    }

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.client: Any = getattr(backend, "_client", None)
        self.endpoint: Any = getattr(backend, "_endpoint", None)
        if self.client is None or self.endpoint is None:
            raise RuntimeError("the remote backend is not connected")

    def _deltas(self, body: dict[str, Any]) -> Iterator[str]:
        headers = {**self.endpoint.headers(), "Accept": "text/event-stream"}
        with self.client.stream("POST", self.endpoint.url("/chat/completions"), json=body,
                                headers=headers) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                choices = json.loads(data).get("choices") or []
                if choices and (choices[0].get("delta") or {}).get("content"):
                    yield choices[0]["delta"]["content"]

    def prompt(self, tokens: list[int]) -> float:  # pragma: no cover - not used (no tokenizer)
        raise NotImplementedError("a remote server evaluates prompts given as messages")

    def prompt_messages(self, messages: Sequence[ChatMessage]) -> float:
        """Seconds to the first content delta of a one-token reply."""
        return self.chat(messages, SamplingParams(temperature=0.0, max_tokens=1)).ttft_s

    def chat(self, messages: Sequence[ChatMessage], sampling: SamplingParams) -> StreamTiming:
        """One streamed completion with the backend's request body."""
        body = self.backend.payload(messages, replace(sampling))  # type: ignore[attr-defined]
        body.pop("stream_options", None)
        start = time.perf_counter()
        return timed_stream(start, self._deltas(body))


ADAPTER = BenchAdapter(backend="remote", raw=RemoteRaw)
