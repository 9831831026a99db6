"""The remote backend against llama-cpp-python's real OpenAI-compatible server on loopback,
started by the tests on the default model: streaming, cancel, a killed server, keys, bad URLs,
the model list, and `lampchat ask` end to end.

Servers: one keyed server for the whole module, and one more per "killed mid-stream" test.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.remote_catalog import list_remote_models
from engine.errors import ModelLoadError
from engine.remote_api import ApiKey, Endpoint, list_models, probe
from engine.types import ChatMessage, LoadSettings, SamplingParams
from engine.worker import EngineWorker
from tests.support.cli import REPO, run_lampchat
from tests.support.remote_servers import LlamaServer, free_port

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

KEY = "lampchat-test-key-7f3a9c"
ESSAY = [ChatMessage("user", "Write a long essay about the history of lighthouses.")]
SHORT = SamplingParams(temperature=0.0, seed=1, max_tokens=24)
LONG = SamplingParams(temperature=0.0, seed=1, max_tokens=400)


@pytest.fixture(scope="module")
def server(tmp_path_factory, default_gguf):
    """A real llama_cpp.server that requires the API key KEY."""
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    srv = LlamaServer(default_gguf, log, api_key=KEY)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def _options(srv: LlamaServer, **extra) -> dict:
    return {"base_url": srv.base_url, "api_key": ApiKey(srv.api_key or ""), "retries": 0,
            "timeout": 60.0, **extra}


@pytest.fixture
async def worker(server):
    w = EngineWorker()
    await w.load("", "remote", LoadSettings(options=_options(server, endpoint_name="local")))
    yield w
    await w.close()


# -- the model list and loading ---------------------------------------------------------------


def test_model_list(server, default_gguf):
    endpoint = Endpoint(server.base_url, ApiKey(KEY))
    models = list_models(endpoint)
    assert [m.id for m in models] == [str(default_gguf)]  # the server names it by its path
    # a base URL without /v1 is found under /v1
    used, again = probe(Endpoint(server.base_url.removesuffix("/v1"), ApiKey(KEY)))
    assert used.base_url == server.base_url and again == models


async def test_load_describes_the_remote_model(worker, server):
    info = worker.info
    assert info is not None
    assert info.backend == "remote" and info.format == "remote"
    assert info.device == "remote:local"
    assert info.name == "SmolLM2-135M-Instruct.Q4_1.gguf"  # the file name, not the whole path


async def test_load_by_name_and_unknown_name(server):
    w = EngineWorker()
    try:
        info = await w.load("SmolLM2-135M-Instruct.Q4_1.gguf", "remote",
                            LoadSettings(options=_options(server)))
        assert info.device == f"remote:127.0.0.1:{server.port}"  # no endpoint name: host:port
        with pytest.raises(ModelLoadError, match=r"does not serve 'llama-70b' \(it serves: "
                                                 r"SmolLM2-135M-Instruct.Q4_1.gguf\)"):
            await w.load("llama-70b", "remote", LoadSettings(options=_options(server)))
        assert w.info is not None and w.info.backend == "remote"  # the previous model is back
    finally:
        await w.close()


# -- streaming and cancel -----------------------------------------------------------------------


async def test_streaming_sends_text_in_pieces_with_metrics(worker):
    generation = worker.generate(ESSAY, SHORT)
    pieces = [piece async for piece in generation]
    texts = [p.text for p in pieces if p.text]
    assert len(texts) >= 5  # streamed, not one block
    assert generation.text == "".join(p.text for p in pieces) and generation.text.strip()
    metrics = generation.metrics
    assert metrics is not None and generation.error is None
    assert metrics.finish_reason == "length"  # 24 tokens of a long essay
    assert metrics.backend == "remote" and metrics.device == "remote:local"
    assert metrics.ttft_ms > 0 and metrics.decode_tps > 0 and metrics.total_ms >= metrics.ttft_ms
    # llama-cpp-python's server sends one delta per token and no usage: counts are estimated
    assert metrics.tokens_estimated is True
    assert metrics.completion_tokens == len(texts) == 24
    assert metrics.prompt_tokens > 0


async def test_greedy_replies_match_the_local_backend(worker, default_gguf):
    remote = worker.generate(ESSAY, SHORT)
    remote_text = "".join([p.text async for p in remote])
    local = EngineWorker()
    try:
        await local.load(str(default_gguf), "llama.cpp", LoadSettings(n_ctx=1024, n_threads=1))
        generation = local.generate(ESSAY, SHORT)
        local_text = "".join([p.text async for p in generation])
    finally:
        await local.close()
    # same model, same chat template, greedy: the same words (the server's sampler chain and
    # the local one may differ in the last digits, so compare the opening)
    assert remote_text[:40] == local_text[:40]


async def test_cancel_mid_stream_stops_promptly_and_the_next_reply_works(worker, server):
    generation = worker.generate(ESSAY, LONG)
    received = 0
    after_cancel = 0
    async for _piece in generation:
        if received == 3:
            generation.cancel()
        if received > 3:
            after_cancel += 1
        received += 1
    assert generation.metrics.finish_reason == "cancelled" and generation.error is None
    assert after_cancel <= 1  # at most the piece already handed over
    assert generation.metrics.completion_tokens < 10
    # the server saw the client go away (it stops generating)
    deadline = time.monotonic() + 10
    while "Disconnected from client" not in server.log_text() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert "Disconnected from client" in server.log_text()

    following = worker.generate(ESSAY, SHORT)
    text = "".join([p.text async for p in following])
    assert following.error is None and following.metrics.finish_reason == "length" and text


# -- errors ---------------------------------------------------------------------------------------


async def test_wrong_or_missing_key_is_a_clear_401(server):
    w = EngineWorker()
    try:
        with pytest.raises(ModelLoadError) as wrong:
            await w.load("", "remote", LoadSettings(options={**_options(server),
                                                             "api_key": ApiKey("not-the-key")}))
        with pytest.raises(ModelLoadError) as missing:
            await w.load("", "remote", LoadSettings(options={**_options(server),
                                                             "api_key": ApiKey()}))
    finally:
        await w.close()
    assert str(wrong.value) == (
        f"{server.base_url}/models rejected the API key (HTTP 401: Invalid API key); check the "
        f"key in the variable named by --api-key-env or the endpoint's api_key_env")
    assert "not-the-key" not in str(wrong.value)
    assert str(missing.value).startswith(f"{server.base_url}/models requires an API key (HTTP 401)")


async def test_wrong_url_refused_port_and_404_path(server):
    port = free_port()  # nothing listens there
    w = EngineWorker()
    try:
        started = time.monotonic()
        with pytest.raises(ModelLoadError) as refused:
            await w.load("", "remote", LoadSettings(options={
                "base_url": f"http://127.0.0.1:{port}/v1", "retries": 2}))
        retried_for = time.monotonic() - started
        with pytest.raises(ModelLoadError) as not_found:
            await w.load("", "remote", LoadSettings(options={
                **_options(server), "base_url": f"http://127.0.0.1:{server.port}/api/nope"}))
    finally:
        await w.close()
    assert str(refused.value) == (f"cannot connect to http://127.0.0.1:{port}/v1/models: "
                                  f"connection refused (is the server running?) (after 3 attempts)")
    assert retried_for >= 1.5  # backoff 0.5 s then 1 s between the three attempts
    assert str(not_found.value).startswith(
        f"http://127.0.0.1:{server.port}/api/nope/models not found (HTTP 404")
    assert "usually end in /v1" in str(not_found.value)


async def test_server_killed_mid_stream_keeps_the_partial_reply(tmp_path, default_gguf):
    doomed = LlamaServer(default_gguf, tmp_path / "doomed.log")  # no key
    w = EngineWorker()
    try:
        doomed.wait_ready()
        await w.load("", "remote", LoadSettings(options={"base_url": doomed.base_url,
                                                         "retries": 2}))
        generation = w.generate(ESSAY, LONG)
        received = []
        async for piece in generation:
            received.append(piece.text)
            if len(received) == 3:
                doomed.kill()
        assert generation.metrics.finish_reason == "error"
        assert generation.text == "".join(received) and len(received) >= 3
        assert generation.text.strip()
        error = generation.error
        assert error is not None and "\n" not in error
        assert error.startswith(f"lost the connection to 127.0.0.1:{doomed.port} mid-reply")
        assert error.endswith("the partial reply was kept")
        # the next reply fails at once and clearly (no hang, no retry after a token)
        after = w.generate(ESSAY, SHORT)
        pieces = [p async for p in after]
        assert pieces == [] and after.metrics.finish_reason == "error"
        assert "connection refused" in after.error
    finally:
        await w.close()
        doomed.stop()


# -- the command line -----------------------------------------------------------------------------


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"LAMPCHAT_CONFIG": str(tmp_path / "config.toml"),
            "LAMPCHAT_LOG_FILE": str(tmp_path / "lampchat.log"), **extra}


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_ask_end_to_end(server, tmp_path):
    env = _env(tmp_path, MY_LLM_KEY=KEY)
    args = ("ask", "--base-url", server.base_url, "--api-key-env", "MY_LLM_KEY",
            "--temperature", "0", "-n", "16")
    # The server reuses the previous prompt's KV cache: the first request evaluates the whole
    # prompt in one batch, later ones only its last token, and on some CPUs (AVX-512 kernels)
    # the logits differ enough to flip a greedy token. A first request puts both runs below
    # in the same cached state, so the text they get is the same.
    warm = run_lampchat(*args, "Name a colour.", env=env, timeout=120)
    assert warm.returncode == 0, warm.stderr
    plain = run_lampchat(*args, "Name a colour.", env=env, timeout=120)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip()
    as_json = run_lampchat(*args, "--json", "Name a colour.", env=env, timeout=120)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["backend"] == "remote" and data["device"] == f"remote:127.0.0.1:{server.port}"
    assert data["text"].rstrip("\n") == plain.stdout.rstrip("\n")
    assert data["tokens_estimated"] is True and 0 < data["completion_tokens"] <= 16
    assert data["ttft_ms"] > 0 and data["finish_reason"] in ("stop", "length")

    wrong = run_lampchat(*args, "Hi", env={**env, "MY_LLM_KEY": "wrong-key-123"}, timeout=120)
    line = _one_line_error(wrong)
    assert "rejected the API key (HTTP 401" in line and "wrong-key-123" not in line
    unset = run_lampchat("ask", "--base-url", server.base_url, "--api-key-env", "NO_SUCH_VAR",
                         "Hi", env=env)
    assert _one_line_error(unset) == ("lampchat: error: --api-key-env NO_SUCH_VAR: the "
                                      "environment variable NO_SUCH_VAR is not set")
    port = free_port()
    refused = run_lampchat("ask", "--base-url", f"http://127.0.0.1:{port}/v1", "Hi", env=env)
    assert "connection refused" in _one_line_error(refused)
    conflict = run_lampchat("ask", "--backend", "llama.cpp", "--base-url", server.base_url,
                            "Hi", env=env)
    assert "--base-url selects the remote backend" in _one_line_error(conflict)
    log = (tmp_path / "lampchat.log").read_text(encoding="utf-8")
    assert KEY not in log and "wrong-key-123" not in log


def test_named_endpoints_from_the_config(server, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        '[backend]\ndefault = "remote"\n\n[remote]\ndefault = "lab"\n\n'
        f'[remote.lab]\nbase_url = "{server.base_url}"\napi_key_env = "LAB_KEY"\n'
        'timeout = 30.0\nretries = 0\n\n'
        f'[remote.other]\nbase_url = "http://127.0.0.1:{free_port()}/v1"\n'
        f'api_key = "{KEY}-other"\n',
        encoding="utf-8")
    env = _env(tmp_path, LAB_KEY=KEY)
    by_name = run_lampchat("ask", "--endpoint", "lab", "--json", "-n", "8", "Hi", env=env,
                           timeout=120)
    assert by_name.returncode == 0, by_name.stderr
    assert json.loads(by_name.stdout)["device"] == "remote:lab"
    # [backend] default = "remote" and [remote] default = "lab": no flags needed
    by_default = run_lampchat("ask", "--json", "-n", "8", "Hi", env=env, timeout=120)
    assert by_default.returncode == 0, by_default.stderr
    assert json.loads(by_default.stdout)["device"] == "remote:lab"
    unknown = run_lampchat("ask", "--endpoint", "nope", "Hi", env=env)
    assert _one_line_error(unknown) == (
        f"lampchat: error: no remote endpoint named 'nope' in {config} (defined: lab, other); "
        f"add a [remote.nope] table with a base_url")
    down = run_lampchat("ask", "--endpoint", "other", "Hi", env=env, timeout=120)
    assert "connection refused" in _one_line_error(down)
    shown = run_lampchat("config", "show", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "remote.lab.base_url" in shown.stdout or server.base_url in shown.stdout
    assert f"{KEY}-other" not in shown.stdout + shown.stderr
    log = (tmp_path / "lampchat.log").read_text(encoding="utf-8")
    assert KEY not in log


def test_remote_models_for_the_picker(server, tmp_path, monkeypatch):
    from app.config import load_config

    dead = free_port()
    path = tmp_path / "config.toml"
    path.write_text(f'[remote.lab]\nbase_url = "{server.base_url.removesuffix("/v1")}"\n'
                    f'api_key_env = "LAB_KEY"\n\n[remote.gone]\n'
                    f'base_url = "http://127.0.0.1:{dead}/v1"\n', encoding="utf-8")
    config = load_config(path, env={"LAB_KEY": KEY}, create=False)
    problems: list[str] = []
    entries = list_remote_models(config, problems)
    assert [(e.model, e.endpoint, e.label) for e in entries] == [
        (str(server_model(server)), "lab", "SmolLM2-135M-Instruct.Q4_1.gguf (lab)")]
    assert problems == [f"remote endpoint 'gone': cannot connect to http://127.0.0.1:{dead}/v1/"
                        f"models: connection refused (is the server running?)"]
    settings = entries[0].load_settings_for(LoadSettings(n_ctx=512))
    assert settings.n_ctx == 512 and settings.options["base_url"] == server.base_url
    assert settings.options["endpoint_name"] == "lab" and KEY not in repr(settings)


def server_model(srv: LlamaServer) -> str:
    return list_models(Endpoint(srv.base_url, ApiKey(srv.api_key or "")))[0].id


def test_ask_keeps_the_partial_reply_in_history_when_the_server_dies(tmp_path, default_gguf):
    doomed = LlamaServer(default_gguf, tmp_path / "doomed.log")
    history = tmp_path / "chat.toml"
    try:
        doomed.wait_ready()
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "ask", "--base-url", doomed.base_url,
             "--temperature", "0", "-n", "400", "--save-history", str(history),
             "Write a long essay about the history of lighthouses."],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), **_env(tmp_path)})
        streamed = b""
        deadline = time.monotonic() + 120
        while len(streamed) < 30 and time.monotonic() < deadline and process.poll() is None:
            ready, _, _ = select.select([process.stdout], [], [], 0.5)
            if ready:
                streamed += os.read(process.stdout.fileno(), 4096)
        assert len(streamed) >= 30, "no streamed text arrived"
        doomed.kill()
        out, err = process.communicate(timeout=60)
    finally:
        doomed.stop()
    stdout = (streamed + out).decode()
    stderr = err.decode()
    assert process.returncode == 1, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr
    assert lines[0].startswith(f"lampchat: error: lost the connection to 127.0.0.1:{doomed.port}"
                               f" mid-reply")
    from app.history import load_conversation_file

    conv = load_conversation_file(history)
    reply = conv.messages[-1]
    assert reply.role == "assistant" and reply.interrupted
    assert reply.content.strip() and reply.content.rstrip("\n") == stdout.rstrip("\n")
    assert reply.metrics["finish_reason"] == "error"
