"""The remote backend's protocol handling: SSE, token accounting, errors, hangs and retries.

The real llama-cpp-python server is exercised in test_remote.py; here a scripted HTTP server
on loopback produces what that server cannot on demand (usage counts, reasoning deltas, a
500, a dropped connection, an answer that never comes).
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from engine.errors import LampchatError
from engine.remote_api import (
    ApiKey,
    Endpoint,
    SseParser,
    describe_http_error,
    error_detail,
    iter_sse,
    normalise_base_url,
    safe_url,
)
from engine.types import ChatMessage, LoadSettings, SamplingParams
from engine.worker import EngineWorker
from tests.support.remote_servers import (
    ScriptedServer,
    chunk,
    drop_connection,
    hang,
    reply_with,
    status,
)

KEY = "sk-test-0123456789abcdef"
HELLO = [ChatMessage("system", "Be brief."), ChatMessage("user", "Say hello.")]


# -- pure parts ---------------------------------------------------------------------------------


def test_api_key_never_shows_itself():
    key = ApiKey(KEY)
    settings = LoadSettings(options={"api_key": key, "base_url": "http://127.0.0.1:1/v1"})
    endpoint = Endpoint("http://127.0.0.1:1/v1", key)
    for text in (repr(key), str(key), f"{key}", repr(settings), repr(endpoint), str(endpoint)):
        assert KEY not in text
    assert key.reveal() == KEY and bool(key) and not ApiKey("")
    assert endpoint.headers()["Authorization"] == f"Bearer {KEY}"
    assert "Authorization" not in Endpoint("http://127.0.0.1:1/v1").headers()


def test_urls_are_checked_and_shown_without_credentials():
    assert normalise_base_url(" http://127.0.0.1:8080/v1/ ") == "http://127.0.0.1:8080/v1"
    assert safe_url("https://user:pw@example.com:8443/v1?key=abc#x") == "https://example.com:8443/v1"
    for bad in ("localhost:8080", "ftp://example.com", "http://", "http://host:99999/v1"):
        with pytest.raises(LampchatError, match="invalid base URL"):
            normalise_base_url(bad)
    with pytest.raises(LampchatError, match="--base-url"):
        normalise_base_url("")
    with pytest.raises(LampchatError, match="'lab' has no base_url"):
        Endpoint.from_options({"endpoint_name": "lab"})
    with pytest.raises(LampchatError, match="timeout must be > 0"):
        Endpoint.from_options({"base_url": "http://127.0.0.1:1", "timeout": -1})


def test_sse_parser_joins_data_lines_and_skips_comments():
    lines = [": ping", "event: error", "data: {\"a\":", "data: 1}", "", "data: [DONE]", "",
             "data: tail"]
    assert list(iter_sse(iter(lines))) == [("error", '{"a":\n1}'), ("message", "[DONE]"),
                                           ("message", "tail")]
    parser = SseParser()
    assert parser.feed("data:x\r\n") is None and parser.feed("") == ("message", "x")
    assert parser.flush() is None


def test_error_messages_are_one_line_and_scrubbed():
    endpoint = Endpoint("http://127.0.0.1:9/v1", ApiKey(KEY), name="lab")
    assert error_detail('{"error": {"message": "model\\n  exploded"}}') == "model exploded"
    assert error_detail('{"detail": [{"msg": "field required"}]}') == "field required"
    assert error_detail("<html><body>Bad gateway</body></html>") == ""
    assert len(error_detail("x" * 1000)) == 200
    url = endpoint.url("/chat/completions")
    server_error = describe_http_error(endpoint, 503, '{"error": "loading model"}', url)
    assert server_error == "the server at http://127.0.0.1:9/v1 failed (HTTP 503: loading model)"
    leaked = describe_http_error(endpoint, 401, f'{{"detail": "bad key {KEY}"}}', url)
    assert "rejected the API key (HTTP 401" in leaked and KEY not in leaked
    missing = describe_http_error(Endpoint("http://127.0.0.1:9/v1"), 401, "", url)
    assert "requires an API key" in missing and "--api-key-env" in missing
    not_found = describe_http_error(endpoint, 404, "", url)
    assert "not found (HTTP 404)" in not_found and "/v1" in not_found
    for message in (server_error, leaked, missing, not_found):
        assert "\n" not in message


# -- through the worker, against the scripted server ----------------------------------------------


@pytest.fixture
def server():
    s = ScriptedServer()
    yield s
    s.close()


async def _load(server: ScriptedServer, **options) -> EngineWorker:
    worker = EngineWorker()
    opts = {"base_url": server.base_url, "endpoint_name": "scripted", "retries": 0, **options}
    await worker.load("", "remote", LoadSettings(options=opts))
    return worker


async def _reply(worker: EngineWorker, sampling: SamplingParams | None = None):
    generation = worker.generate(HELLO, sampling or SamplingParams(max_tokens=32))
    pieces = [piece async for piece in generation]
    return generation, pieces


async def test_request_carries_sampling_key_and_usage_request(server):
    worker = await _load(server, api_key=ApiKey(KEY))
    try:
        info = worker.info
        assert info is not None and info.name == "scripted-model"
        assert info.device == "remote:scripted" and info.context_length == 2048
        sampling = SamplingParams(temperature=0.2, top_k=7, top_p=0.9, min_p=0.1,
                                  repeat_penalty=1.3, seed=11, max_tokens=20, stop=("END",))
        generation, _ = await _reply(worker, sampling)
        assert generation.error is None
    finally:
        await worker.close()
    request = server.requests[-1]
    body = request["body"]
    assert body["model"] == "scripted-model" and body["stream"] is True
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Say hello."}]
    assert body["stream_options"] == {"include_usage": True}
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (
        0.2, 0.9, 20, 11)
    assert (body["top_k"], body["min_p"], body["repeat_penalty"], body["stop"]) == (
        7, 0.1, 1.3, ["END"])
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"


async def test_usage_sets_the_token_counts(server):
    server.default = reply_with(["Hel", "lo", " wor", "ld"],
                                usage={"prompt_tokens": 21, "completion_tokens": 9})
    worker = await _load(server)
    try:
        generation, pieces = await _reply(worker)
    finally:
        await worker.close()
    metrics = generation.metrics
    assert generation.text == "Hello world" and len([p for p in pieces if p.text]) == 4
    assert metrics is not None and metrics.finish_reason == "stop"
    assert metrics.completion_tokens == 9 and metrics.prompt_tokens == 21
    assert metrics.tokens_estimated is False
    assert metrics.ttft_ms > 0 and metrics.decode_tps > 0


async def test_without_usage_counts_are_estimated(server):
    long_deltas = ["The lighthouse keeper ", "climbed the stairs every ", "night at dusk."]
    server.scripts = [reply_with(["A", " b", " c"], finish="length"), reply_with(long_deltas)]
    worker = await _load(server)
    try:
        one_per_token, _ = await _reply(worker)
        batched, _ = await _reply(worker)
    finally:
        await worker.close()
    assert one_per_token.metrics.tokens_estimated is True
    assert one_per_token.metrics.finish_reason == "length"
    assert one_per_token.metrics.completion_tokens == 3  # one delta, one token
    assert one_per_token.metrics.prompt_tokens > 0
    # several tokens a delta: estimated from the text (about 4 characters a token)
    assert batched.metrics.completion_tokens == round(len("".join(long_deltas)) / 4)


async def test_reasoning_deltas_are_shown_in_think_tags(server):
    def script(handler, body):
        handler.start_sse()
        for delta in ({"reasoning_content": "User greets."}, {"reasoning_content": " Reply."}):
            handler.send_event(chunk(**delta))
        handler.send_event(chunk("Hi!", finish="stop"))
        handler.send_event("[DONE]")
        handler.end_sse()

    server.default = script
    worker = await _load(server)
    try:
        generation, _ = await _reply(worker)
    finally:
        await worker.close()
    assert generation.text == "<think>\nUser greets. Reply.\n</think>\n\nHi!"
    assert generation.metrics.completion_tokens == 3


async def test_server_error_is_one_line_and_the_next_reply_works(server):
    server.scripts = [status(500, {"error": {"message": "CUDA error: out of memory"}})]
    worker = await _load(server)
    try:
        failed, pieces = await _reply(worker)
        ok, _ = await _reply(worker)
    finally:
        await worker.close()
    assert pieces == [] and failed.text == ""
    assert failed.metrics.finish_reason == "error"
    assert failed.error == (f"the server at {server.base_url} failed "
                            f"(HTTP 500: CUDA error: out of memory)")
    assert ok.error is None and ok.text == "Hello there!"


async def test_error_event_mid_stream_keeps_the_partial_reply(server):
    def script(handler, body):
        handler.start_sse()
        handler.send_event(chunk("Once upon"))
        handler.send_event({"error": {"message": "slot evicted", "code": 500}})
        handler.end_sse()

    server.default = script
    worker = await _load(server)
    try:
        generation, _ = await _reply(worker)
    finally:
        await worker.close()
    assert generation.text == "Once upon"
    assert generation.metrics.finish_reason == "error"
    assert generation.error == "the server at scripted reported an error mid-reply: slot evicted"


async def test_stream_ending_without_done_is_an_error(server):
    def script(handler, body):
        handler.start_sse()
        handler.send_event(chunk("Half a"))
        handler.end_sse()

    server.default = script
    worker = await _load(server)
    try:
        generation, _ = await _reply(worker)
    finally:
        await worker.close()
    assert generation.text == "Half a" and generation.metrics.finish_reason == "error"
    assert "ended the reply before finishing it" in generation.error


async def test_strict_server_rejecting_extra_fields_gets_openai_fields_only(server):
    rejection = {"error": {"message": "Unrecognized request argument supplied: top_k"}}
    server.scripts = [status(400, rejection)]
    worker = await _load(server)
    try:
        first, _ = await _reply(worker)
        second, _ = await _reply(worker)
    finally:
        await worker.close()
    assert first.error is None and first.text == second.text == "Hello there!"
    assert [("top_k" in r["body"]) for r in server.requests] == [True, False, False]


async def test_connection_error_before_the_first_token_is_retried(server):
    server.scripts = [drop_connection]
    worker = await _load(server, retries=1)
    try:
        generation, _ = await _reply(worker)
    finally:
        await worker.close()
    assert generation.error is None and generation.text == "Hello there!"
    assert len(server.requests) == 2

    server.scripts = [drop_connection]
    worker = await _load(server, retries=0)
    try:
        generation, _ = await _reply(worker)
    finally:
        await worker.close()
    assert generation.metrics.finish_reason == "error"
    assert generation.error.startswith(f"{server.base_url}/chat/completions closed the connection")


async def test_cancel_while_waiting_for_the_answer_returns_at_once(server):
    server.scripts = [hang]
    worker = await _load(server, timeout=30)
    try:
        generation = worker.generate(HELLO, SamplingParams(max_tokens=16))

        async def consume():
            return [piece async for piece in generation]

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.5)
        assert not task.done()  # the server has not answered
        started = time.monotonic()
        generation.cancel()
        pieces = await asyncio.wait_for(task, timeout=10)
        waited = time.monotonic() - started
        next_reply, _ = await _reply(worker)  # the engine is free again
    finally:
        await worker.close()
    assert pieces == [] and generation.metrics.finish_reason == "cancelled"
    assert generation.error is None
    assert waited < 5, f"cancel took {waited:.1f}s"  # not 30 s: cancel does not wait for the server
    assert next_reply.text == "Hello there!"


async def test_an_answer_that_never_comes_times_out_with_a_clear_error(server):
    server.scripts = [hang]
    worker = await _load(server, timeout=1.0)
    try:
        generation, _ = await asyncio.wait_for(_reply(worker), timeout=20)
    finally:
        await worker.close()
    assert generation.metrics.finish_reason == "error"
    assert generation.error == (f"{server.base_url}/chat/completions did not answer within 1s "
                                f"(timeout; raise the endpoint's timeout if the model is slow)")


async def test_key_and_url_credentials_stay_out_of_logs_and_messages(server, caplog):
    caplog.set_level(logging.DEBUG)  # httpcore and httpx included
    port = server.server_address[1]
    worker = await _load(server, base_url=f"http://user:hunter2@127.0.0.1:{port}/v1",
                         endpoint_name="", api_key=ApiKey(KEY))
    try:
        assert worker.info.device == f"remote:127.0.0.1:{port}"
        generation, _ = await _reply(worker)
        assert generation.error is None
        server.scripts = [status(503, {"error": f"overloaded (key {KEY})"})]
        failed, _ = await _reply(worker)
    finally:
        await worker.close()
    assert failed.error == (f"the server at http://127.0.0.1:{port}/v1 failed "
                            f"(HTTP 503: overloaded (key ****))")
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"
    assert caplog.records  # something was logged, and none of it is secret
    assert KEY not in caplog.text and "hunter2" not in caplog.text


async def test_a_server_that_ignores_max_tokens_is_cut_and_escapes_never_pass(server):
    """`-n 3` printed 12 tokens from a server that ignores max_tokens; and model text reached
    the terminal raw: title, clear-screen and OSC 52 clipboard sequences."""
    pieces = ["one", " two\x1b]0;pwned\x07", " three\x1b[2J", " four", " five", " six"]
    server.scripts.append(reply_with(pieces))
    worker = await _load(server)
    try:
        generation, got = await _reply(worker, SamplingParams(max_tokens=3))
        assert generation.text == "one two]0;pwned three[2J"
        assert not any("\x1b" in p.text or "\x07" in p.text for p in got)
        assert generation.metrics.finish_reason == "length"
    finally:
        await worker.close()


def test_an_api_key_with_a_control_character_is_refused_without_showing_it() -> None:
    from engine.errors import LampchatError

    with pytest.raises(LampchatError, match="control, space or non-ASCII character") as error:
        ApiKey("sk-secret\nX-Injected: 1")
    assert "sk-secret" not in str(error.value)
    with pytest.raises(LampchatError, match=r"\(character 4\)"):
        ApiKey("sk-é")
    assert ApiKey("  sk-fine  ").reveal() == "sk-fine"


async def test_absurd_usage_numbers_end_the_reply_instead_of_hanging_it(server):
    """A `usage` with a 400-digit integer killed the engine thread and `ask` waited forever;
    an error in the engine thread must always reach the caller."""
    server.scripts.append(reply_with(["Hi", " there"], usage={
        "prompt_tokens": 10**400, "completion_tokens": -5, "total_tokens": 10**400}))
    worker = await _load(server)
    try:
        generation, _pieces = await asyncio.wait_for(_reply(worker), timeout=20)
        assert generation.text == "Hi there"
        assert generation.metrics is not None
    finally:
        await worker.close()


def _long_line(handler, body) -> None:
    handler.start_sse()
    handler.send_event(chunk(role="assistant"))
    raw = b"data: " + b"x" * (3 << 20)  # 3 MB and no line end
    handler.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
    handler.wfile.flush()
    handler.end_sse()


def _drip(handler, body) -> None:
    import time

    handler.start_sse()
    for _ in range(60):  # one byte every 0.1 s, never a whole line
        handler.wfile.write(b"1\r\nx\r\n")
        handler.wfile.flush()
        time.sleep(0.1)
    handler.end_sse()


async def test_a_line_without_end_is_refused_not_stored(server):
    server.scripts.append(_long_line)
    worker = await _load(server)
    try:
        generation, _ = await _reply(worker)
        assert generation.metrics.finish_reason == "error"
        assert "a line of over 1 MB without a line end" in generation.error
    finally:
        await worker.close()


async def test_a_server_that_drips_bytes_is_given_up_after_its_timeout(server):
    server.scripts.append(_drip)
    worker = await _load(server, timeout=1.5)
    try:
        generation, _ = await asyncio.wait_for(_reply(worker), timeout=20)
        assert generation.metrics.finish_reason == "error"
        assert "sent no whole line for 1.5s" in generation.error
    finally:
        await worker.close()
