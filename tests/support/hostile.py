"""Running `lampchat` on hostile input the way issue 23's pass did: a real child process with
bounded memory, CPU time and file size, under a wall-clock timeout that fails the test."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.cli import REPO

PROGRESS = re.compile(r"^[a-z][a-z ]*: +\d+% ")
"""A progress line, as `lampchat convert` and `pull` print them when stderr is not a TTY."""
MEMORY_MB = 4096
"""Address space a child may map: the bundled model through llama.cpp fits well inside (its
threads' stacks and the mapped file included); a decoder that believed a crafted size would
not."""
CPU_S = 60
"""CPU seconds a child may use before the kernel stops it."""
WALL_S = 20.0
"""Seconds a child may run before the test fails."""


@dataclass
class Outcome:
    """How a hostile run ended."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def lines(self) -> list[str]:
        """The non-empty lines on stderr, less progress lines ("converting:  84% ...")."""
        return [line for line in self.stderr.splitlines()
                if line.strip() and not PROGRESS.match(line)]


def run_hostile(*args: str, env: dict[str, str] | None = None, wall_s: float = WALL_S,
                memory_mb: int = MEMORY_MB, file_size: int | None = None,
                close_fds: tuple[int, ...] = (), stdout_path: str | None = None,
                input: str | None = None) -> Outcome:
    """Run `lampchat ARGS` with limits: address space `memory_mb`, `CPU_S` of CPU, files no
    larger than `file_size` bytes (a full disk: writes fail with EFBIG), `close_fds` closed
    (0: no stdin, 1: no stdout), stdout to `stdout_path` (such as /dev/full)."""

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_CPU, (CPU_S, CPU_S))
        if file_size is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
        for fd in close_fds:
            os.close(fd)

    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    stdout = open(stdout_path, "w") if stdout_path else subprocess.PIPE  # noqa: SIM115
    start = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "app", *args], stdout=stdout, stderr=subprocess.PIPE,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            input=input.encode() if input is not None else None, env=full_env, cwd=REPO,
            timeout=wall_s, preexec_fn=limits)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"lampchat {' '.join(args)!r} ran past {wall_s} s") from exc
    finally:
        if stdout_path:
            stdout.close()  # type: ignore[union-attr]
    out = done.stdout.decode("utf-8", "replace") if isinstance(done.stdout, bytes) else ""
    return Outcome(done.returncode, out, done.stderr.decode("utf-8", "replace"),
                   time.monotonic() - start)


def assert_refused(outcome: Outcome, *words: str) -> str:
    """The run failed with exactly one line on stderr, no traceback and no native abort, and
    the line holds each of `words`. Returns the line."""
    assert outcome.returncode not in (0, -6, -11, 134, 139), outcome  # ran, or aborted
    assert "Traceback" not in outcome.stderr and "Aborted" not in outcome.stderr, outcome.stderr
    assert len(outcome.lines) == 1, outcome.stderr
    line = outcome.lines[0]
    assert line.startswith("lampchat: "), line
    for word in words:
        assert word in line, line
    return line


def unchanged(path: Path, before: bytes) -> bool:
    """Whether `path` still holds `before` (no write the run was not meant to make)."""
    return path.read_bytes() == before
