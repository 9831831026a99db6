"""The `lampchat` command: the TUI with no subcommand, headless subcommands otherwise."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Sequence

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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. Returns the exit status; never shows a traceback."""
    setup_logging()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command is None:
            # the TUI (and Textual) only when no subcommand is given
            from app.tui_main import run_tui

            return run_tui(args)
        return int(args.run(args))
    except LampchatError as exc:
        print(f"lampchat: error: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lampchat: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lampchat models | head`: the reader has gone, quietly
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # the last line of defence: log it, say one line
        log.exception("unexpected error")
        print(f"lampchat: unexpected error: {one_line(str(exc))} (details in the log file)",
              file=sys.stderr)
        return 1
    finally:
        # per-thread library state (MLX streams) must go before the engine thread and the
        # interpreter shut down: left to them, MLX aborts the process
        run_thread_exit_hooks()
