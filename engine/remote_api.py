"""The OpenAI-compatible HTTP API: endpoints, secret API keys, one-line errors, the model list
and server-sent events. Used by the remote backend and by the model picker.

Servers: llama.cpp's llama-server, llama-cpp-python's server, vLLM, Ollama, LM Studio.
The API key is held in an `ApiKey`, whose repr and str never show it; every message built
here is scrubbed of it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from engine.errors import LampchatError
from engine.files import parse_json

log = logging.getLogger(__name__)
# httpx logs every request's full URL at INFO, user:password included; keep that out of logs
logging.getLogger("httpx").setLevel(logging.WARNING)

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_RETRIES = 2
CONNECT_TIMEOUT_CAP_S = 10.0
"""A connection is given at most this long, whatever the endpoint's (read) timeout is."""
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 8.0
_ERROR_BODY_LIMIT = 64 * 1024
_DETAIL_LIMIT = 200


class ApiKey:
    """An API key that never shows itself: repr and str are masked; `reveal()` gives it."""

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        self._value = value.strip()
        bad = next((i for i, c in enumerate(self._value) if not 33 <= ord(c) < 127), None)
        if bad is not None:  # a header injection, or a key pasted with a stray character
            self._value = ""
            raise LampchatError(f"the API key holds a control, space or non-ASCII character "
                                f"(character {bad + 1}); keys are printable ASCII: check where "
                                "it is set")

    def reveal(self) -> str:
        """The key itself, for the Authorization header only."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ApiKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "ApiKey('****')" if self._value else "ApiKey('')"

    def __str__(self) -> str:
        return "****" if self._value else ""


def as_api_key(value: Any) -> ApiKey:
    """An ApiKey from an ApiKey, a str or None."""
    if isinstance(value, ApiKey):
        return value
    return ApiKey(str(value) if value else "")


def safe_url(url: str) -> str:
    """`url` without user info, query or fragment (they may hold credentials)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def normalise_base_url(url: str) -> str:
    """Check and tidy a base URL (http or https, with a host; no trailing slash).

    Raises LampchatError with a one-line message for anything else.
    """
    text = (url or "").strip()
    if not text:
        raise LampchatError("the remote backend needs a server: pass --base-url URL "
                            "(e.g. http://127.0.0.1:8080/v1) or --endpoint NAME for a "
                            "[remote.NAME] table in the config")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError:
        raise LampchatError(f"invalid base URL {safe_url(text)!r}: not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LampchatError(f"invalid base URL {safe_url(text)!r}: it must start with http:// or "
                            f"https:// and name a host, e.g. http://127.0.0.1:8080/v1")
    return text.rstrip("/")


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI-compatible server: where it is, its key, timeout and retries."""

    base_url: str
    api_key: ApiKey = field(default_factory=ApiKey)
    timeout: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES
    name: str = ""

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Endpoint:
        """An Endpoint from `LoadSettings.options` ({base_url, api_key, timeout, retries,
        endpoint_name}); raises LampchatError for a bad value."""
        try:
            timeout = float(options.get("timeout") or DEFAULT_TIMEOUT_S)
            retries = int(options.get("retries", DEFAULT_RETRIES))
        except (TypeError, ValueError):
            raise LampchatError("remote endpoint: timeout must be a number of seconds and "
                                "retries a whole number") from None
        if timeout <= 0 or retries < 0:
            raise LampchatError("remote endpoint: timeout must be > 0 and retries >= 0")
        name = str(options.get("endpoint_name") or "")
        if name and not options.get("base_url"):
            raise LampchatError(f"the remote endpoint {name!r} has no base_url (set "
                                f"remote.{name}.base_url in the config)")
        return cls(
            base_url=normalise_base_url(str(options.get("base_url") or "")),
            api_key=as_api_key(options.get("api_key")),
            timeout=timeout,
            retries=retries,
            name=name,
        )

    @property
    def display(self) -> str:
        """The endpoint's name, else host:port: what the device column shows."""
        if self.name:
            return self.name
        parts = urlsplit(self.base_url)
        return parts.netloc.rpartition("@")[2] or self.base_url

    @property
    def shown_url(self) -> str:
        """The base URL as messages show it (no credentials)."""
        return safe_url(self.base_url)

    def url(self, path: str) -> str:
        """The full URL of `path` (e.g. "/models") under the base URL."""
        return self.base_url + "/" + path.lstrip("/")

    def headers(self) -> dict[str, str]:
        """Request headers; the Authorization header only when a key is set."""
        headers = {"Accept": "application/json", "User-Agent": "lampchat"}
        if self.api_key:
            headers["Authorization"] = "Bearer " + self.api_key.reveal()
        return headers

    def timeouts(self) -> httpx.Timeout:
        """The endpoint timeout for reads; connecting gets at most 10 s."""
        return httpx.Timeout(self.timeout, connect=min(self.timeout, CONNECT_TIMEOUT_CAP_S))

    def client(self) -> httpx.Client:
        """A new httpx client for this endpoint (the caller closes it). Proxy and CA settings
        come from the environment (HTTPS_PROXY, NO_PROXY, SSL_CERT_FILE). User info in the base
        URL becomes Basic auth, unless an API key is set: then the key's Bearer header wins."""
        auth = httpx.Auth() if self.api_key else None  # httpx.Auth(): leave the headers alone
        return httpx.Client(timeout=self.timeouts(), follow_redirects=True,
                            auth=auth)

    def scrub(self, text: str) -> str:
        """`text` with the API key (and the base URL's credentials) masked."""
        key = self.api_key.reveal()
        if key:
            text = text.replace(key, "****")
        return text


def display_name(model_id: str) -> str:
    """A short name for a model id: the file name when the server names it by a path."""
    if model_id.startswith(("/", "~")) or model_id.lower().endswith(".gguf"):
        return model_id.replace("\\", "/").rsplit("/", 1)[-1] or model_id
    return model_id


@dataclass(frozen=True)
class RemoteModel:
    """A model an endpoint serves, as /v1/models lists it."""

    id: str
    owned_by: str = ""
    context_length: int | None = None


class RetryableError(LampchatError):
    """A connection error: worth another attempt when nothing has been received yet."""


def backoff_delay(attempt: int) -> float:
    """Seconds to wait before retry number `attempt` (0-based): 0.5, 1, 2, 4, 8, 8, ..."""
    return min(BACKOFF_FIRST_S * 2**attempt, BACKOFF_MAX_S)


def with_retries(
    endpoint: Endpoint,
    attempt_fn: Callable[[], T],
    what: str,
    cancel: threading.Event | None = None,
) -> T:
    """Run `attempt_fn`, retrying with backoff while it raises RetryableError.

    After the last attempt the error is raised with the number of attempts added. A set
    `cancel` event ends the waiting early (the last error is raised).
    """
    attempt = 0
    while True:
        try:
            return attempt_fn()
        except RetryableError as exc:
            if attempt >= endpoint.retries:
                tries = f" (after {attempt + 1} attempts)" if attempt else ""
                raise RetryableError(f"{exc}{tries}") from exc.__cause__
            delay = backoff_delay(attempt)
            attempt += 1
            log.info("%s: %s; retry %d of %d in %.1fs", what, exc, attempt, endpoint.retries,
                     delay)
            if cancel is None:
                time.sleep(delay)
            elif cancel.wait(delay):
                raise


def is_connection_error(exc: BaseException) -> bool:
    """Whether `exc` is an httpx error where the server never answered or the connection
    broke: worth a retry before anything was received. Timeouts while waiting for an
    answer are not (the server may be busy; retrying would only double the wait)."""
    if isinstance(exc, httpx.ConnectTimeout):
        return True
    if isinstance(exc, httpx.TimeoutException):
        return False
    return isinstance(exc, (httpx.ConnectError, httpx.ReadError, httpx.WriteError,
                            httpx.RemoteProtocolError))


def describe_transport_error(endpoint: Endpoint, exc: BaseException, url: str) -> str:
    """A one-line message for an httpx transport error on `url`."""
    shown = safe_url(url)
    reason = _one_line(endpoint.scrub(str(exc))) or type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout):
        return (f"cannot connect to {shown}: no answer within "
                f"{min(endpoint.timeout, CONNECT_TIMEOUT_CAP_S):g}s (is the host reachable?)")
    if isinstance(exc, httpx.TimeoutException):
        return (f"{shown} did not answer within {endpoint.timeout:g}s (timeout; raise the "
                f"endpoint's timeout if the model is slow)")
    if isinstance(exc, httpx.ConnectError):
        lowered = reason.lower()
        if "refused" in lowered:
            return f"cannot connect to {shown}: connection refused (is the server running?)"
        if "name or service" in lowered or "nodename" in lowered or "resolution" in lowered:
            return f"cannot connect to {shown}: host not found"
        return f"cannot connect to {shown}: {reason}"
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return f"{shown} closed the connection ({reason})"
    if isinstance(exc, httpx.UnsupportedProtocol):
        return f"invalid base URL {endpoint.shown_url!r}: {reason}"
    return f"request to {shown} failed: {reason}"


def describe_http_error(endpoint: Endpoint, status: int, body: str, url: str) -> str:
    """A one-line message for an HTTP error answer `status` with `body` from `url`."""
    shown = safe_url(url)
    detail = error_detail(body, endpoint)
    suffix = f": {detail}" if detail else ""
    if status in (401, 403):
        if endpoint.api_key:
            return (f"{shown} rejected the API key (HTTP {status}{suffix}); check the key in "
                    f"the variable named by --api-key-env or the endpoint's api_key_env")
        return (f"{shown} requires an API key (HTTP {status}); set one with --api-key-env VAR "
                f"or api_key_env in the [remote.NAME] table")
    if status == 404:
        return (f"{shown} not found (HTTP 404{suffix}); is the base URL "
                f"{endpoint.shown_url!r} right? OpenAI-compatible servers usually end in /v1")
    if status >= 500:
        return f"the server at {endpoint.shown_url} failed (HTTP {status}{suffix})"
    return f"{shown} refused the request (HTTP {status}{suffix})"


def error_detail(body: str, endpoint: Endpoint | None = None) -> str:
    """The message inside an error body (OpenAI, FastAPI or plain text), on one short line."""
    text = body.strip()
    message: Any = text
    try:
        data = parse_json(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        inner = data.get("error", data.get("detail", data.get("message", text)))
        if isinstance(inner, dict):
            inner = inner.get("message", inner.get("msg", json.dumps(inner)))
        if isinstance(inner, list) and inner and isinstance(inner[0], dict):
            inner = inner[0].get("msg", json.dumps(inner[0]))
        message = inner
    line = _one_line(str(message))
    if endpoint is not None:
        line = endpoint.scrub(line)
    if line.lstrip().startswith("<"):  # an HTML error page says nothing useful on one line
        return ""
    return line if len(line) <= _DETAIL_LIMIT else line[: _DETAIL_LIMIT - 1] + "…"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def read_error_body(response: httpx.Response) -> str:
    """At most 64 KiB of a (streamed) error response's body, as text."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= _ERROR_BODY_LIMIT:
            break
    return b"".join(chunks)[:_ERROR_BODY_LIMIT].decode("utf-8", errors="replace")


# -- the model list -----------------------------------------------------------------------------


def _get_models_once(endpoint: Endpoint, client: httpx.Client) -> list[RemoteModel]:
    url = endpoint.url("/models")
    try:
        response = client.get(url, headers=endpoint.headers())
    except httpx.HTTPError as exc:
        message = describe_transport_error(endpoint, exc, url)
        if is_connection_error(exc):
            raise RetryableError(message) from exc
        raise LampchatError(message) from exc
    if response.status_code >= 400:
        raise _HttpStatusError(
            response.status_code,
            describe_http_error(endpoint, response.status_code, response.text, url),
        )
    return parse_model_list(endpoint, response.text, url)


class _HttpStatusError(LampchatError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_model_list(endpoint: Endpoint, body: str, url: str) -> list[RemoteModel]:
    """The models in a /v1/models answer; LampchatError when it is not one."""
    try:
        data = parse_json(body)
    except ValueError:
        data = None
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise LampchatError(f"{safe_url(url)} did not return a model list (is "
                            f"{endpoint.shown_url} an OpenAI-compatible server?)")
    models = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        context = None
        for key in ("max_model_len", "context_length", "context_window"):
            value = item.get(key)
            if isinstance(value, int) and value > 0:
                context = value
                break
        models.append(RemoteModel(item["id"], str(item.get("owned_by") or ""), context))
    return models


def probe(endpoint: Endpoint, client: httpx.Client | None = None,
          cancel: threading.Event | None = None) -> tuple[Endpoint, list[RemoteModel]]:
    """GET /models (with retries). Returns the endpoint to use and its models.

    A base URL without a path that answers 404 is tried again with /v1 added (users often
    type http://host:port); the returned endpoint then carries the /v1 URL.
    Raises LampchatError with a one-line message.
    """
    own = client is None
    http = client or endpoint.client()
    try:
        try:
            models = with_retries(endpoint, lambda: _get_models_once(endpoint, http),
                                  f"GET {endpoint.shown_url}/models", cancel)
            return endpoint, models
        except _HttpStatusError as exc:
            if exc.status != 404 or urlsplit(endpoint.base_url).path not in ("", "/"):
                raise LampchatError(str(exc)) from None
            with_v1 = replace(endpoint, base_url=endpoint.base_url + "/v1")
            try:
                models = _get_models_once(with_v1, http)
            except LampchatError:
                raise LampchatError(str(exc)) from None
            log.info("%s answers under /v1; using %s", endpoint.shown_url, with_v1.shown_url)
            return with_v1, models
    finally:
        if own:
            http.close()


def list_models(endpoint: Endpoint) -> list[RemoteModel]:
    """The models `endpoint` serves (GET /v1/models); LampchatError with a one-line message."""
    return probe(endpoint)[1]


# -- server-sent events -------------------------------------------------------------------------


@dataclass
class SseParser:
    """Turns SSE lines into (event, data) pairs: data lines joined, comments ignored."""

    _event: str = ""
    _data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> tuple[str, str] | None:
        """Take one line (without its line ending); return a finished event, if any."""
        line = line.rstrip("\r\n")
        if not line:
            return self.flush()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None

    def flush(self) -> tuple[str, str] | None:
        """The pending event (at a blank line or the end of the stream), if any."""
        if not self._data:
            self._event = ""
            return None
        event = (self._event or "message", "\n".join(self._data))
        self._event, self._data = "", []
        return event


def iter_sse(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event, data) for each server-sent event in `lines`."""
    parser = SseParser()
    for line in lines:
        event = parser.feed(line)
        if event is not None:
            yield event
    last = parser.flush()
    if last is not None:
        yield last
