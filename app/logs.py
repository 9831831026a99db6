"""Logging to Lampchat's log file; nothing is logged to the terminal."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import platformdirs


def log_path() -> Path:
    """The log file: $LAMPCHAT_LOG_FILE, else the platform's log dir."""
    env = os.environ.get("LAMPCHAT_LOG_FILE")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_log_dir("lampchat", appauthor=False)) / "lampchat.log"


def setup_logging(level: int = logging.INFO) -> Path:
    """Send all logging (llama.cpp's included, see engine.backends.llama_cpp) to the log file."""
    path = log_path()
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    logging.captureWarnings(True)
    return path
