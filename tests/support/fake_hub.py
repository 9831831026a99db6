"""A Hugging Face hub on 127.0.0.1 for the real `huggingface_hub` client (`HF_ENDPOINT`): the
few endpoints it calls, serving files a test puts in its repos.

- `GET /api/models/{repo}[/revision/{rev}]`: model info with `siblings` (size, LFS sha256);
- `HEAD|GET /{repo}/resolve/{rev}/{file}`: `X-Repo-Commit`, `ETag`, `Content-Length`, and
  `Range` requests (206) for resuming.

A repo can be gated (401 without the right token), a file can be served with the wrong
bytes (a checksum mismatch), and a download can be cut after a number of bytes, a number of
times (the connection drops halfway). Every request is recorded (method, path, Range,
whether a token was sent).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HubRepo:
    """A repo's files (name -> bytes) and its failure modes."""

    files: dict[str, bytes]
    gated_token: str | None = None
    """Only this bearer token may read it (None: public)."""
    corrupt: set[str] = field(default_factory=set)
    """Files served with their last byte flipped (the listed sha256 is of the right bytes)."""


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    token: str | None


class FakeHub:
    """The server; `endpoint` goes in HF_ENDPOINT. Use as a context manager."""

    def __init__(self) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.requests: list[Request] = []
        self.cut_after: int | None = None
        """Drop a file download's connection after this many bytes..."""
        self.cuts_left = 0
        """...this many times."""
        self.chunk_delay = 0.0
        """Seconds to wait after each 256 KB of a file (a slow line)."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                hub._serve(self, head=False)

            def do_HEAD(self) -> None:  # noqa: N802 - the http.server API
                hub._serve(self, head=True)

        return Handler

    # -- answers ---------------------------------------------------------------------------

    def _serve(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        path = h.path.split("?", 1)[0]
        auth = h.headers.get("Authorization") or ""
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        self.requests.append(Request(h.command, path, h.headers.get("Range"), token))
        if path.startswith("/api/models/"):
            rest = path.removeprefix("/api/models/")
            repo_id = rest.split("/revision/")[0]
            repo = self.repos.get(repo_id)
            if repo is None:
                self._not_found(h, "RepoNotFound")
                return
            if not self._allowed(h, repo, token):
                return
            self._json(h, 200, {
                "id": repo_id, "modelId": repo_id, "sha": COMMIT, "private": False,
                "gated": "auto" if repo.gated_token else False, "tags": [], "downloads": 0,
                "siblings": [{"rfilename": name, "size": len(data), "blobId": _sha1(data),
                              "lfs": {"sha256": hashlib.sha256(data).hexdigest(),
                                      "size": len(data), "pointerSize": 134}}
                             for name, data in sorted(repo.files.items())],
            }, head)
            return
        repo_id, sep, rest = path.lstrip("/").partition("/resolve/")
        repo = self.repos.get(repo_id) if sep else None
        if repo is None:
            self._not_found(h, "RepoNotFound")
            return
        if not self._allowed(h, repo, token):
            return
        _revision, _, name = rest.partition("/")
        data = repo.files.get(name)
        if data is None:
            self._not_found(h, "EntryNotFound")
            return
        etag = hashlib.sha256(data).hexdigest()
        if name in repo.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        start = 0
        if h.headers.get("Range", "").startswith("bytes="):
            start = int(h.headers["Range"][6:].split("-")[0] or 0)
        body = data[start:]
        h.send_response(206 if start else 200)
        h.send_header("X-Repo-Commit", COMMIT)
        h.send_header("ETag", f'"{etag}"')
        h.send_header("Content-Length", str(len(body)))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.send_header("Accept-Ranges", "bytes")
        h.end_headers()
        if head:
            return
        if self.cut_after is not None and self.cuts_left > 0 and len(body) > self.cut_after:
            self.cuts_left -= 1
            h.wfile.write(body[: self.cut_after])
            h.wfile.flush()
            h.close_connection = True
            return
        for i in range(0, len(body), 1 << 18):
            h.wfile.write(body[i : i + (1 << 18)])
            if self.chunk_delay:
                h.wfile.flush()
                time.sleep(self.chunk_delay)

    def _allowed(self, h: BaseHTTPRequestHandler, repo: HubRepo, token: str | None) -> bool:
        if repo.gated_token is None or token == repo.gated_token:
            return True
        h.send_response(401)
        h.send_header("X-Error-Code", "GatedRepo")
        h.send_header("X-Error-Message", "Access to this model is restricted.")
        body = b'{"error": "Access to this model is restricted."}'
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
        return False

    def _not_found(self, h: BaseHTTPRequestHandler, code: str) -> None:
        body = b'{"error": "not found"}'
        h.send_response(404)
        h.send_header("X-Error-Code", code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    @staticmethod
    def _json(h: BaseHTTPRequestHandler, status: int, data: Any, head: bool) -> None:
        body = json.dumps(data).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)


def _sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id
