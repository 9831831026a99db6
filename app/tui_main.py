"""`lampchat` with no subcommand: resolve flags, environment and config, then run the TUI."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from app import file_lock
from app.config import load_config, save_config
from app.history import load_conversation_file
from app.history_store import HistoryStore
from app.options import options_from_args, options_from_config
from app.prompt_history import open_prompt_history
from app.tui import LampchatApp
from app.tui_store import ChatStore
from engine.errors import LampchatError
from engine.worker import EngineWorker

log = logging.getLogger(__name__)

FORCED_EXIT_S = 10.0
"""After SIGINT/SIGTERM/SIGHUP, the process ends this long after if it could not exit cleanly
(its terminal is gone); everything is saved first."""


def theme_saver(config: Any) -> Any:
    """A function that writes `ui.theme` (and only it) into the config file."""

    def save(name: str) -> None:

        config.set("ui.theme", name)
        fresh = load_config(config.path, create=False)
        if fresh.parse_failed:
            raise LampchatError(f"{config.path} could not be parsed; the theme was not saved")
        fresh.set("ui.theme", name)
        save_config(fresh)

    return save


def build_app(args: argparse.Namespace) -> LampchatApp:
    """The app configured from `args`, the environment and the config file."""

    config = load_config(getattr(args, "config", None))
    options = options_from_args(args, options_from_config(config))
    options.sampling.validate()
    options.save_theme = theme_saver(config)
    options.prompt_history = open_prompt_history(config)
    if getattr(args, "load_history", None):
        options.load_history = load_conversation_file(args.load_history)
        if getattr(args, "system", None) is not None:
            options.load_history.system_prompt = args.system
    history = HistoryStore(config.history_dir()) if config.get("session.auto_save") else None
    save_history = getattr(args, "save_history", None)
    store = ChatStore(history, Path(save_history).expanduser() if save_history else None)
    if store.save_history is not None:
        file_lock.hold(store.save_history)  # one writer at a time across processes
        store.check_save_target()
    app = LampchatApp(options, store, EngineWorker(kv_store=config.kv_store()))
    app.startup_warnings = [line.removeprefix("lampchat: warning: ")
                            for line in config.warning_lines()]
    return app


def run_tui(args: argparse.Namespace) -> int:
    """Run the full-screen app until the user quits; returns the exit status.

    Whatever ends it (Ctrl+Q, /bye, SIGTERM, SIGHUP, an error), the reply in flight is kept,
    marked interrupted, and `--save-history` is written.
    """
    app = build_app(args)
    app.options.forced_exit_s = FORCED_EXIT_S
    app.options.quiet_errors = True
    try:
        result = app.run()
    finally:
        app.save_session()
        app.exited.set()
    if app.signalled is not None:
        return 128 + app.signalled
    if app.return_code not in (None, 0):
        what = f": {app.unexpected_error}" if app.unexpected_error else ""
        print(f"lampchat: the TUI stopped on an unexpected error{what} (details in the log "
              "file; the conversation was saved)", file=sys.stderr)
        return int(app.return_code or 1)
    return int(result or 0)
