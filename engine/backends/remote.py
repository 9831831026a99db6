"""Remote OpenAI-compatible chat servers (llama-server, llama-cpp-python, vLLM, Ollama, LM Studio).

`load` checks the server with GET /v1/models and picks the model; `stream` POSTs
/v1/chat/completions with `stream: true` and turns the server-sent events into pieces.
TTFT and tokens/s are measured on this side by the worker, from piece timestamps.

Token counts: each streamed delta counts as one token (servers send one delta per token);
when the server sends `usage` (asked for with `stream_options.include_usage`), a last
zero-text piece brings the completion count up to `usage.completion_tokens` and
`prompt_tokens` comes from it too. Without usage the counts are marked as estimated.

Cancel: the HTTP response is read on a helper thread that feeds a queue, so `cancel()`
(from any thread) wakes the engine thread at once, and shutting the socket down makes the
helper's blocked read return, which tells the server to stop.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import httpx

from engine.backends.base import Backend, ProgressCallback
from engine.errors import BackendError, LampchatError, ModelLoadError
from engine.files import parse_json
from engine.models import default_model_path
from engine.remote_api import (
    Endpoint,
    RemoteModel,
    RetryableError,
    SseParser,
    backoff_delay,
    describe_http_error,
    describe_transport_error,
    display_name,
    error_detail,
    is_connection_error,
    probe,
    read_error_body,
)
from engine.types import (
    ChatMessage,
    FinishReason,
    LoadSettings,
    ModelInfo,
    Piece,
    SamplingParams,
    StreamStats,
)

log = logging.getLogger(__name__)

EXTRA_FIELDS = ("top_k", "min_p", "repeat_penalty", "stream_options")
"""Request fields beyond the OpenAI core; dropped if a strict server rejects them."""
_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "eos": "stop"}
_POLL_S = 1.0
_DRAIN_S = 1.0
_CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """A rough token count for `text` (about four characters a token)."""
    return max(1, round(len(text) / _CHARS_PER_TOKEN)) if text else 0


def estimate_prompt_tokens(messages: Sequence[ChatMessage]) -> int:
    """A rough prompt token count: the text plus a few template tokens per message."""
    return sum(estimate_tokens(m.content) + 4 for m in messages) + 3


def choose_model(wanted: str, models: list[RemoteModel], endpoint: Endpoint) -> RemoteModel:
    """The model to use: `wanted` (by id, file name or Ollama's `:latest`), else the first."""
    if not models:
        raise ModelLoadError(f"{endpoint.display} serves no models (GET /models listed none)")
    wanted = wanted.strip()
    if not wanted:
        return models[0]
    for candidate in (wanted, f"{wanted}:latest"):
        for model in models:
            if model.id == candidate:
                return model
    lowered = wanted.lower()
    for model in models:
        if model.id.lower() == lowered or display_name(model.id).lower() == lowered:
            return model
    served = ", ".join(display_name(m.id) for m in models[:8])
    more = f" and {len(models) - 8} more" if len(models) > 8 else ""
    raise ModelLoadError(f"{endpoint.display} does not serve {wanted!r} (it serves: "
                         f"{served}{more})")


def _is_default_model_path(model: str) -> bool:
    """Whether `model` is the bundled GGUF the worker substitutes for "no model given"."""
    try:

        return model == str(default_model_path())
    except LampchatError:
        return False


class _ExtrasRejected(Exception):
    """The server answered 400 naming one of EXTRA_FIELDS."""


MAX_LINE_BYTES = 1 << 20
"""The longest event-stream line read (a chunk of a reply is a few hundred bytes); a server
sending more without a newline is refused instead of filling memory."""


def bounded_lines(chunks: Iterable[bytes], limit: int) -> Iterator[str]:
    """The lines of a byte stream (without their line ends), each at most `limit` bytes: a
    longer one raises BackendError as soon as it passes the limit."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            yield bytes(buffer[start:end]).rstrip(b"\r").decode("utf-8", errors="replace")
            start = end + 1
        del buffer[:start]
        if len(buffer) > limit:
            raise BackendError(f"the server sent a line of over {limit >> 20} MB without a "
                               "line end; it is not an event stream")
    if buffer:
        yield bytes(buffer).rstrip(b"\r").decode("utf-8", errors="replace")


class _StreamCall:
    """One streaming POST, read on its own (daemon) thread into `events`."""

    def __init__(self, client: httpx.Client, url: str, payload: dict[str, Any],
                 headers: dict[str, str]) -> None:
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._client = client
        self._url = url
        self._payload = payload
        self._headers = headers
        self._aborted = threading.Event()
        self._finished = threading.Event()
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="lampchat-remote-read",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def finished(self) -> bool:
        """Whether the reading thread has let go of the response."""
        return self._finished.is_set()

    def _run(self) -> None:
        try:
            with self._client.stream("POST", self._url, json=self._payload,
                                     headers=self._headers,
                                     extensions={"trace": self._trace}) as response:
                self._keep_socket(response.extensions.get("network_stream"))
                if response.status_code >= 400:
                    body = read_error_body(response)
                    self.events.put(("status", (response.status_code, body)))
                    return
                self.events.put(("open", None))
                for line in bounded_lines(response.iter_bytes(), MAX_LINE_BYTES):
                    if self._aborted.is_set():
                        return
                    self.events.put(("line", line))
            self.events.put(("eof", None))
        except Exception as exc:  # handed to the engine thread, which words it
            if not self._aborted.is_set():
                self.events.put(("error", exc))
        finally:
            self._finished.set()

    def _trace(self, name: str, info: dict[str, Any]) -> None:
        if name == "connection.connect_tcp.complete":
            self._keep_socket(info.get("return_value"))

    def _keep_socket(self, stream: Any) -> None:
        if stream is None:
            return
        try:
            sock = stream.get_extra_info("socket")
        except Exception:
            return
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            self._socket = sock
            if self._aborted.is_set():
                _shutdown(sock)

    def abort(self) -> None:
        """Stop reading now (thread-safe): wake the engine thread and drop the connection."""
        if self._aborted.is_set():
            return
        self._aborted.set()
        self.events.put(("aborted", None))
        if self._finished.is_set():
            return
        with self._lock:
            sock = self._socket
        if sock is not None:
            _shutdown(sock)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def _shutdown(sock: socket.socket) -> None:
    """Make a blocked read on `sock` return, from any thread (TLS sockets included)."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Reply:
    """Turns one reply's chunks into pieces and keeps its token accounting."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.counted = 0
        self.deltas = 0
        self.chars = 0
        self.usage: dict[str, Any] | None = None
        self.finish: FinishReason | None = None
        self.done = False
        self.thinking = False

    @property
    def started(self) -> bool:
        return self.deltas > 0

    def handle(self, event: str, data: str) -> Iterator[Piece]:
        """Pieces for one server-sent event; raises BackendError for an error event."""
        if data.strip() == "[DONE]":
            self.done = True
            return
        where = self.endpoint.display
        if event == "error":
            detail = error_detail(data, self.endpoint) or "no details"
            raise BackendError(f"the server at {where} reported an error mid-reply: {detail}")
        try:
            chunk = parse_json(data)
        except ValueError:
            shown = self.endpoint.scrub(" ".join(data.split()))[:80]
            raise BackendError(f"{where} sent something that is not JSON in the reply stream: "
                               f"{shown!r}") from None
        if not isinstance(chunk, dict):
            raise BackendError(f"{where} sent an unexpected reply chunk (not a JSON object)")
        if chunk.get("error"):
            detail = error_detail(data, self.endpoint) or "no details"
            raise BackendError(f"the server at {where} reported an error mid-reply: {detail}")
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            yield from self._delta(choice.get("delta") or {})
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                self.finish = _FINISH.get(reason, "stop")

    def _delta(self, delta: Any) -> Iterator[Piece]:
        if not isinstance(delta, dict):
            return
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            opening = "" if self.thinking else "<think>\n"
            self.thinking = True
            yield self._piece(opening + reasoning, reasoning)
        content = delta.get("content")
        if isinstance(content, str) and content:
            closing = "\n</think>\n\n" if self.thinking else ""
            self.thinking = False
            yield self._piece(closing + content, content)

    def _piece(self, text: str, produced: str) -> Piece:
        self.deltas += 1
        self.chars += len(produced)
        self.counted += 1
        return Piece(text, 1)

    def closing_pieces(self, stats: StreamStats) -> Iterator[Piece]:
        """The end of the reply: close a reasoning block, settle the token counts."""
        if self.thinking:
            self.thinking = False
            yield Piece("\n</think>\n", 0)
        usage = self.usage or {}
        completion = usage.get("completion_tokens")
        prompt = usage.get("prompt_tokens")
        if isinstance(completion, int) and completion >= 0:
            if completion > self.counted:
                yield Piece("", completion - self.counted)
                self.counted = completion
            elif completion < self.counted:
                log.info("the server counted %d completion tokens, %d deltas arrived",
                         completion, self.counted)
            if isinstance(prompt, int) and prompt >= 0:
                stats.prompt_tokens = prompt
                stats.tokens_estimated = False
        elif self.deltas and self.chars / self.deltas > 2 * _CHARS_PER_TOKEN:
            # long deltas: this server sends several tokens at a time
            extra = estimate_tokens("x" * self.chars) - self.counted
            if extra > 0:
                yield Piece("", extra)
                self.counted += extra
        stats.finish_reason = self.finish or "stop"


class RemoteBackend(Backend):
    """Streams chat replies from an OpenAI-compatible server over HTTP (SSE)."""

    name = "remote"
    local = False
    bench_adapter = "engine.bench.adapters.remote:ADAPTER"

    def __init__(self) -> None:
        super().__init__()
        self._endpoint: Endpoint | None = None
        self._client: httpx.Client | None = None
        self._model_id = ""
        self._send_extras = True
        self._call: _StreamCall | None = None

    def load(
        self, model: str, settings: LoadSettings, progress: ProgressCallback | None = None
    ) -> ModelInfo:
        """Check the server (GET /v1/models) and pick `model` (empty: the first it lists).

        `settings.options` holds base_url, api_key, timeout, retries and endpoint_name.
        """
        report = progress or (lambda _f, _w: None)
        try:
            endpoint = Endpoint.from_options(settings.options)
        except LampchatError as exc:
            raise ModelLoadError(str(exc)) from None
        report(0.1, f"contacting {endpoint.display}")
        client = endpoint.client()
        try:
            endpoint, models = probe(endpoint, client, self._cancel)
            wanted = "" if _is_default_model_path(model) else model
            chosen = choose_model(wanted, models, endpoint)
        except LampchatError as exc:
            client.close()
            raise ModelLoadError(str(exc)) from None
        self._endpoint, self._client, self._model_id = endpoint, client, chosen.id
        self._send_extras = True
        self.settings = settings
        self.info = ModelInfo(
            name=display_name(chosen.id),
            path=chosen.id,
            backend=self.name,
            device=f"remote:{endpoint.display}",
            format="remote",
            quantization="unknown",
            context_length=chosen.context_length,
            chat_template_source="server",
        )
        log.info("remote model %s at %s (%d listed)", chosen.id, endpoint.shown_url, len(models))
        report(1.0, "ready")
        return self.info

    def unload(self) -> None:
        """Stop any reply and close the connections."""
        call = self._call
        if call is not None:
            call.abort()
            call.join(1.0)
        if self._client is not None:
            self._client.close()
        self._client = None
        self._endpoint = None
        self.info = None

    def cancel(self) -> None:
        """Stop the current reply now (thread-safe): closes its connection."""
        super().cancel()
        call = self._call
        if call is not None:
            call.abort()

    def payload(self, messages: Sequence[ChatMessage], sampling: SamplingParams) -> dict[str, Any]:
        """The /chat/completions request body for `messages` with `sampling` mapped."""
        body: dict[str, Any] = {
            "model": self._model_id,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
        }
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if self._send_extras:
            body["stream_options"] = {"include_usage": True}
            body["top_k"] = sampling.top_k
            body["min_p"] = sampling.min_p
            body["repeat_penalty"] = sampling.repeat_penalty
        return body

    def stream(
        self, messages: Sequence[ChatMessage], sampling: SamplingParams, stats: StreamStats
    ) -> Iterator[Piece]:
        """Stream one reply; connection errors before the first token are retried."""
        endpoint = self._endpoint
        if endpoint is None or self._client is None:
            raise BackendError("no remote model is loaded")
        stats.prompt_tokens = estimate_prompt_tokens(messages)
        stats.tokens_estimated = True
        attempt = 0
        while True:
            if self.cancelled:
                stats.finish_reason = "cancelled"
                return
            try:
                yield from self._attempt(endpoint, messages, sampling, stats)
                return
            except _ExtrasRejected:
                log.info("%s rejects %s; sending the OpenAI fields only",
                         endpoint.shown_url, ", ".join(EXTRA_FIELDS))
                self._send_extras = False
            except RetryableError as exc:
                if attempt >= endpoint.retries:
                    tries = f" (after {attempt + 1} attempts)" if attempt else ""
                    raise BackendError(f"{exc}{tries}") from None
                delay = backoff_delay(attempt)
                attempt += 1
                log.info("%s; retry %d of %d in %.1fs", exc, attempt, endpoint.retries, delay)
                if self._cancel.wait(delay):
                    stats.finish_reason = "cancelled"
                    return

    def _attempt(self, endpoint: Endpoint, messages: Sequence[ChatMessage],
                 sampling: SamplingParams, stats: StreamStats) -> Iterator[Piece]:
        assert self._client is not None
        url = endpoint.url("/chat/completions")
        call = _StreamCall(self._client, url, self.payload(messages, sampling),
                           {**endpoint.headers(), "Accept": "text/event-stream"})
        self._call = call
        reply = _Reply(endpoint)
        parser = SseParser()
        call.start()
        if self.cancelled:
            call.abort()
        last_line: float | None = None  # from the response's start (before: httpx's timeout)
        try:
            while not reply.done:
                try:
                    kind, value = call.events.get(timeout=_POLL_S)
                except queue.Empty:
                    if self.cancelled:
                        stats.finish_reason = "cancelled"
                        return
                    if last_line is not None and \
                            time.monotonic() - last_line > endpoint.timeout:  # a drip
                        raise BackendError(
                            f"{endpoint.display} sent no whole line for {endpoint.timeout:g}s "
                            "(it keeps the connection open without answering); raise the "
                            "endpoint's timeout if the model is that slow") from None
                    continue
                last_line = time.monotonic()
                if kind == "aborted":
                    stats.finish_reason = "cancelled"
                    return
                if kind == "status":
                    self._status_error(endpoint, url, *value)
                if kind == "error":
                    if self.cancelled:
                        stats.finish_reason = "cancelled"
                        return
                    raise self._transport_error(endpoint, url, value, reply.started)
                if kind in ("line", "eof"):
                    event = parser.feed(value) if kind == "line" else parser.flush()
                    if event is not None:
                        yield from reply.handle(*event)
                    if kind == "eof":
                        break
            if not reply.done and reply.finish is None:
                raise BackendError(f"{endpoint.display} ended the reply before finishing it "
                                   f"(the stream stopped without [DONE])")
            yield from reply.closing_pieces(stats)
            self._drain(call)
        finally:
            self._call = None
            if not call.finished:
                call.abort()

    @staticmethod
    def _drain(call: _StreamCall) -> None:
        """Let the reader reach the end of the response (keeping the connection for reuse)."""
        for _ in range(int(_DRAIN_S / 0.05)):
            if call.finished:
                return
            try:
                kind, _value = call.events.get(timeout=0.05)
            except queue.Empty:
                continue
            if kind in ("eof", "error", "aborted", "status"):
                return

    def _status_error(self, endpoint: Endpoint, url: str, status: int, body: str) -> None:
        if status == 400 and self._send_extras and any(f in body for f in EXTRA_FIELDS):
            raise _ExtrasRejected()
        message = describe_http_error(endpoint, status, body, url)
        if status == 404 and self._model_id:
            message += f" (or the server no longer serves {display_name(self._model_id)!r})"
        raise BackendError(message)

    @staticmethod
    def _transport_error(endpoint: Endpoint, url: str, exc: BaseException,
                         started: bool) -> LampchatError:
        if isinstance(exc, BackendError):  # the reader's own refusal (a line too long)
            return BackendError(f"{endpoint.display}: {exc}")
        message = describe_transport_error(endpoint, exc, url)
        if started:
            return BackendError(f"lost the connection to {endpoint.display} mid-reply "
                                f"({message}); the partial reply was kept")
        if is_connection_error(exc):
            return RetryableError(message)
        return BackendError(message)
