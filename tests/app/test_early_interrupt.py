"""Ctrl+C at any moment of `lampchat`'s start (while Python imports it, while the model loads)
ends it without a Python traceback.

What runs before Lampchat's entry point cannot be guarded by it: the interpreter's own
start-up (`site` and its `.pth` hooks print "Fatal Python error: init_import_site" and a
traceback for a KeyboardInterrupt; so does `runpy` for `python -m`). So the delays count from
the moment the entry point (`app.launch`) is imported: a `sitecustomize` module installs an
audit hook that tells the test through a pipe. A signal even earlier, before Python installs
its handler, ends the process by the default disposition, killed by SIGINT, in silence.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.cli import REPO

SITECUSTOMIZE = """\
import os
import sys

_fd = os.environ.pop("LAMPCHAT_TEST_STARTED_FD", None)
if _fd:
    def _tell(event, args, fd=[int(_fd)]):
        if event == "import" and args[0] == "app.launch" and fd:
            os.write(fd[0], b"1")
            os.close(fd.pop())

    sys.addaudithook(_tell)
"""


@pytest.mark.parametrize("delay", [0.0, 0.03, 0.08, 0.15, 0.3, 0.6, 1.0])
def test_ctrl_c_during_start_never_shows_a_traceback(delay: float, tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    started, tell = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "ask", "--max-tokens", "4", "hi"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, pass_fds=(tell,),
        env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}",
             "LAMPCHAT_TEST_STARTED_FD": str(tell)})
    os.close(tell)
    with os.fdopen(started, "rb") as pipe:
        assert pipe.read(1) == b"1"  # the entry point is being imported: Lampchat's code
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert process.returncode in (0, 130, -signal.SIGINT), (process.returncode, err)
    if process.returncode == -signal.SIGINT:  # killed before Python's handler: in silence
        assert err == "" and out == "", (out, err)


def test_ctrl_c_while_a_server_never_answers_ends_at_once(tmp_path) -> None:
    """A server that accepts and never answers kept `ask` alive until its timeout after
    SIGINT: a load cannot be stopped part-way, so the process ends now."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "ask", "--backend", "remote", "--base-url",
             f"http://127.0.0.1:{port}/v1", "hi"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        time.sleep(2.0)
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=30)
        assert time.monotonic() - sent < 3
    assert process.returncode == 130 and "Traceback" not in err
    assert "interrupted while loading the model" in err
