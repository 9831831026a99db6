"""Drive a real program in a real terminal: a private tmux server, `send-keys`, `capture-pane`.

Each `TmuxTerminal` runs its own tmux server (`tmux -L <unique socket>`), so tests never clash
with each other or with a user's tmux. The program runs under a small `sh` that, when the
program ends, prints its exit status and keeps the pane open: the terminal's modes (alternate
screen, cursor, mouse) can then be checked as the program left them (tmux reports no cursor
for a dead pane). Waits poll the screen with a timeout; nothing sleeps a fixed time where a
poll works.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
POLL_S = 0.1
EXIT_MARK = re.compile(r"\[program exited with status (\d+)\]")
_WRAPPER = '"$@"; printf "\\n[program exited with status %d]\\n" "$?"; exec sleep 86400'

TMUX_CONF = """\
set -g remain-on-exit on
set -g history-limit 20000
set -sg escape-time 0
set -g status off
"""


def tmux_binary() -> str | None:
    """The tmux executable, or None when tmux is not installed."""
    return shutil.which("tmux")


def lampchat_argv() -> list[str]:
    """The real `lampchat` command of this checkout (the venv's console script)."""
    script = Path(sys.executable).parent / "lampchat"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "app"]


@dataclass
class PaneState:
    """What tmux says about the pane (`pid` is the wrapping shell's)."""

    dead: bool
    exit_status: int | None
    pid: int
    alternate_screen: bool
    cursor_visible: bool
    mouse_reporting: bool


class TmuxTerminal:
    """A program running in a fresh tmux server, `width` x `height` cells."""

    def __init__(self, workdir: Path, *, width: int = 120, height: int = 40,
                 name: str | None = None) -> None:
        binary = tmux_binary()
        if binary is None:
            raise RuntimeError("tmux is not installed")
        self.tmux = binary
        self.socket = name or f"lampchat-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.workdir = workdir
        self.width = width
        self.height = height
        self.conf = workdir / "tmux.conf"
        self.conf.write_text(TMUX_CONF)
        self.target = "main:0.0"
        self.last_screen = ""
        self._processes: list[psutil.Process] = []
        """The wrapping shell and the program, to reap in `close`."""

    # ------------------------------------------------------------------ tmux

    def _tmux(self, *args: str, check: bool = True,
              env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.tmux, "-L", self.socket, "-f", str(self.conf), *args],
            capture_output=True, text=True, check=check, timeout=30,
            env=dict(env) if env is not None else None,
        )

    def start(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path = REPO) -> None:
        """Start `argv` in the pane (under the status-printing `sh`), with exactly `env`."""
        full_env = {**env, "TERM": "xterm-256color"}
        full_env.pop("TMUX", None)
        # the server starts with exactly this environment, and the session inherits it
        # (no `new-session -e`, which tmux < 3.2 lacks)
        self._tmux(
            "new-session", "-d", "-s", "main", "-x", str(self.width), "-y", str(self.height),
            "-c", str(cwd), "--", "sh", "-c", _WRAPPER, "sh", *argv, env=full_env,
        )
        with contextlib.suppress(psutil.Error, subprocess.SubprocessError, ValueError):
            self._processes.append(psutil.Process(self.state().pid))

    def program_pid(self, timeout: float = 10.0) -> int:
        """The program's process id (the wrapping shell's child)."""
        deadline = time.monotonic() + timeout
        shell = psutil.Process(self.state().pid)
        while True:
            children = shell.children()
            if children:
                self._processes.append(children[0])
                return children[0].pid
            if time.monotonic() > deadline:
                raise AssertionError("the program did not start")
            time.sleep(POLL_S)

    def kill_server(self) -> None:
        """Stop the tmux server (and the program in it) and remove its socket. Safe twice."""
        found = self._tmux("display-message", "-p", "#{socket_path}", check=False)
        self._tmux("kill-server", check=False)
        socket_path = found.stdout.strip() if found.returncode == 0 else ""
        if socket_path and Path(socket_path).name == self.socket:
            Path(socket_path).unlink(missing_ok=True)

    def close(self, grace: float = 10.0) -> None:
        """Kill the tmux server, then make sure the program is gone too: a program that
        outlives its terminal (SIGHUP) for `grace` seconds is killed, never left behind."""
        processes = list(self._processes)
        for process in self._processes:
            with contextlib.suppress(psutil.Error):
                processes.extend(process.children(recursive=True))
        self.kill_server()
        _gone, alive = psutil.wait_procs(processes, timeout=grace)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()

    def send_keys(self, *keys: str) -> None:
        """Send tmux key names (Enter, Escape, F2, C-q, Up, ...)."""
        self._tmux("send-keys", "-t", self.target, *keys)

    def resize(self, width: int, height: int) -> None:
        """Resize the terminal (the program gets SIGWINCH)."""
        self._tmux("resize-window", "-t", "main", "-x", str(width), "-y", str(height))
        self.width, self.height = width, height

    def type_text(self, text: str) -> None:
        """Type `text` literally (no key-name lookup)."""
        self._tmux("send-keys", "-t", self.target, "-l", text)

    def capture(self, history: bool = False) -> str:
        """The pane's text now (with `history`: the scrollback too)."""
        args = ["capture-pane", "-p", "-J", "-t", self.target]
        if history:
            args += ["-S", "-", "-E", "-"]
        result = self._tmux(*args, check=False)
        self.last_screen = result.stdout
        return result.stdout

    def state(self) -> PaneState:
        """The pane's process and terminal modes."""
        fmt = ("#{pane_dead}|#{pane_dead_status}|#{pane_pid}|#{alternate_on}|"
               "#{cursor_flag}|#{mouse_any_flag}")
        out = self._tmux("display-message", "-p", "-t", self.target, fmt).stdout.strip()
        dead, status, pid, alternate, cursor, mouse = out.split("|")
        return PaneState(dead == "1", int(status) if status else None, int(pid),
                         alternate == "1", cursor == "1", mouse == "1")

    # ----------------------------------------------------------------- waits

    def wait_for(self, condition: str | re.Pattern[str] | Callable[[str], object],
                 timeout: float, what: str = "") -> str:
        """Poll the screen until `condition` (text, regex or predicate) holds; the screen.

        On timeout the AssertionError holds the last screen, to show what went wrong.
        """
        if isinstance(condition, str):
            needle = condition

            def check(screen: str) -> object:
                return needle in screen
        elif isinstance(condition, re.Pattern):
            pattern = condition

            def check(screen: str) -> object:
                return pattern.search(screen)
        else:
            check = condition
        deadline = time.monotonic() + timeout
        while True:
            screen = self.capture()
            if check(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f} s waiting for {what or condition!r}; "
                    f"the screen was:\n{screen}"
                )
            time.sleep(POLL_S)

    def wait_exit(self, timeout: float) -> tuple[int, PaneState]:
        """Poll until the program has exited: its exit status, and the terminal's state then."""
        screen = self.wait_for(EXIT_MARK, timeout, "the program to exit")
        match = EXIT_MARK.search(screen)
        assert match is not None
        return int(match.group(1)), self.state()


def isolated_env(home: Path, **extra: str) -> dict[str, str]:
    """os.environ with Lampchat's config, data, state, cache and log kept under `home`."""
    env = dict(os.environ)
    env.update(
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local/share"),
        XDG_STATE_HOME=str(home / ".local/state"),
        XDG_CACHE_HOME=str(home / ".cache"),
        LAMPCHAT_LOG_FILE=str(home / "lampchat.log"),
        PYTHONPATH=str(REPO),
    )
    env.pop("LAMPCHAT_CONFIG", None)
    env.update(extra)
    return env
