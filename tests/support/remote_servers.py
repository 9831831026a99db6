"""Servers on loopback for the remote backend's tests.

`LlamaServer` runs llama-cpp-python's real OpenAI-compatible server on the default model.
`ScriptedServer` is a small HTTP server whose answers a test scripts (a hang, a 500, a
dropped connection, usage counts), for failure modes the real server cannot produce on demand.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

READY_TIMEOUT_S = 120.0
"""How long a server may take to load the model (the test machine is shared and slow)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LlamaServer:
    """`python -m llama_cpp.server` on 127.0.0.1, its output in `log_path`."""

    def __init__(self, model: Path, log_path: Path, api_key: str | None = None,
                 n_ctx: int = 1024) -> None:
        self.port = free_port()
        self.api_key = api_key
        self.log_path = log_path
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
                   "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(n_ctx),
                   "--n_threads", "1"]
        if api_key:
            command += ["--api_key", api_key]
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Poll GET /v1/models until it answers 200 (bounded); fail with the log's tail."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited ({self.process.returncode}):\n"
                                   f"{self.log_text()[-2000:]}")
            try:
                if httpx.get(f"{self.base_url}/models", headers=headers,
                             timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"llama_cpp.server not ready after {timeout:.0f}s:\n"
                           f"{self.log_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: the server dies at once, mid-reply if one is streaming."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


Handler = Callable[["ScriptedHandler", dict[str, Any]], None]


class ScriptedHandler(BaseHTTPRequestHandler):
    """Answers GET /v1/models with one model and POST /v1/chat/completions as scripted."""

    server: ScriptedServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            self.send_json(404, {"error": {"message": "no such route"}})
            return
        self.send_json(200, {"object": "list", "data": [
            {"id": "scripted-model", "object": "model", "owned_by": "tests",
             "max_model_len": 2048}]})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        with self.server.lock:
            self.server.requests.append({"body": body, "headers": dict(self.headers)})
            script = self.server.scripts.pop(0) if self.server.scripts else self.server.default
        script(self, body)

    def send_json(self, status: int, data: Any) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def start_sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def send_event(self, data: Any) -> None:
        text = data if isinstance(data, str) else json.dumps(data)
        raw = f"data: {text}\n\n".encode()
        self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
        self.wfile.flush()

    def end_sse(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def chunk(content: str | None = None, finish: str | None = None, **delta: Any) -> dict[str, Any]:
    """One chat.completion.chunk."""
    if content is not None:
        delta["content"] = content
    return {"object": "chat.completion.chunk", "model": "scripted-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


class ScriptedServer(ThreadingHTTPServer):
    """A loopback HTTP server; each POST takes the next function from `scripts`."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.lock = threading.Lock()
        self.scripts: list[Handler] = []
        self.default: Handler = reply_with(["Hello", " there", "!"])
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        """Set to let hanging scripts finish."""
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def close(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


def reply_with(pieces: list[str], usage: dict[str, int] | None = None,
               finish: str = "stop") -> Handler:
    """A script streaming `pieces`, then finish_reason, then `usage` (if any), then [DONE]."""

    def script(handler: ScriptedHandler, body: dict[str, Any]) -> None:
        handler.start_sse()
        handler.send_event(chunk(role="assistant"))
        for piece in pieces:
            handler.send_event(chunk(piece))
        handler.send_event(chunk(finish=finish))
        if usage is not None:
            handler.send_event({"object": "chat.completion.chunk", "choices": [],
                                "usage": usage})
        handler.send_event("[DONE]")
        handler.end_sse()

    return script


def hang(handler: ScriptedHandler, body: dict[str, Any]) -> None:
    """Never answer (until the server is released or closed; bounded at 30 s)."""
    handler.server.release.wait(30)


def drop_connection(handler: ScriptedHandler, body: dict[str, Any]) -> None:
    """Close the connection without answering."""
    handler.close_connection = True
    handler.connection.shutdown(socket.SHUT_RDWR)


def status(code: int, data: Any) -> Handler:
    """Answer with HTTP `code` and the JSON `data`."""

    def script(handler: ScriptedHandler, body: dict[str, Any]) -> None:
        handler.send_json(code, data)

    return script
