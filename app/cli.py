"""The `lampchat` command: the TUI with no subcommand, headless subcommands otherwise."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from app.logs import setup_logging
from engine.backends.base import run_thread_exit_hooks
from engine.errors import LampchatError

log = logging.getLogger(__name__)

SUBCOMMANDS = ["ask", "devices", "config", "convert", "models", "pull", "rm", "bench"]
"""Modules under app.commands, each adding one subcommand."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like argparse but shorter
        self.exit(2, f"lampchat: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, subcommands included."""
    parser = _Parser(prog="lampchat", description="Chat with local language models.",
                     allow_abbrev=False)  # else `convert --to` is ambiguous with --top-k/--top-p
    from app import options  # the TUI's flags (`lampchat` with no subcommand)

    options.add_model_options(parser)
    options.add_sampling_options(parser)
    options.add_history_options(parser)
    options.add_config_option(parser)
    subparsers = parser.add_subparsers(dest="command", parser_class=_Parser)
    for name in SUBCOMMANDS:
        importlib.import_module(f"app.commands.{name}").add_parser(subparsers)
    return parser


def one_line(text: str) -> str:
    """`text` on one line: newlines and other controls (a path holding one, a template's
    message) shown escaped, so that an error is always a single line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class OutputError(LampchatError):
    """Standard output could not be written (a full disk, /dev/full, an I/O error)."""


class GuardedOutput:
    """Standard output whose write errors say what failed: "cannot write to standard output:
    No space left on device", not Python's "[Errno 28]" from somewhere."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(f"cannot write to standard output: {exc.strerror or exc}") from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(f"cannot write to standard output: {exc.strerror or exc}") from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _drop_stdout() -> None:
    """Point standard output at /dev/null, so that what is still buffered for it cannot fail
    again (with Python's own message) as the interpreter exits."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.__stdout__.fileno())  # type: ignore[union-attr]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. Returns the exit status; never shows a traceback."""
    setup_logging()
    if sys.stdout is None:  # started with its standard output closed
        print("lampchat: error: standard output is closed: there is nowhere to show anything",
              file=sys.stderr)
        return 1
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command is None:
            # the TUI (and Textual) only when no subcommand is given
            from app.tui_main import run_tui

            return run_tui(args)
        sys.stdout = GuardedOutput(sys.stdout)  # type: ignore[assignment]
        status = int(args.run(args))
        sys.stdout.flush()  # what is buffered reaches its file here, or fails here
        return status
    except OutputError as exc:
        _drop_stdout()
        print(f"lampchat: error: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except LampchatError as exc:
        print(f"lampchat: error: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lampchat: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lampchat models | head`: the reader has gone, quietly
        _drop_stdout()
        return 141
    except Exception as exc:  # the last line of defence: log it, say one line
        log.exception("unexpected error")
        print(f"lampchat: unexpected error: {one_line(str(exc))} (details in the log file)",
              file=sys.stderr)
        return 1
    finally:
        if isinstance(sys.stdout, GuardedOutput):
            sys.stdout = sys.stdout._stream
        # per-thread library state (MLX streams) must go before the engine thread and the
        # interpreter shut down: left to them, MLX aborts the process
        run_thread_exit_hooks()
