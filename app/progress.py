"""Progress shown on stderr for headless commands (model load, conversion)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def stderr_progress(label: str) -> Callable[[float, str], None] | None:
    """A progress callback drawing one updating line on stderr, or None when stderr is not a TTY."""
    if not sys.stderr.isatty():
        return None
    last = [0.0]

    def report(fraction: float, what: str) -> None:
        now = time.monotonic()
        if fraction < 1.0 and now - last[0] < 0.1:
            return
        last[0] = now
        width = 24
        filled = int(width * max(0.0, min(1.0, fraction)))
        bar = "█" * filled + "░" * (width - filled)
        line = "" if fraction >= 1.0 else f"{label}: {bar} {fraction:4.0%} {what}"
        sys.stderr.write(f"\r\x1b[2K{line}")
        sys.stderr.flush()

    return report


def line_progress(label: str) -> Callable[[float, str], None]:
    """Progress as a few plain lines on stderr (0%, 25%, ... 100%), for when it is not a
    terminal."""
    shown = [-1]

    def report(fraction: float, what: str) -> None:
        step = int(fraction * 4)
        if step > shown[0]:
            shown[0] = step
            print(f"{label}: {fraction:4.0%} {what}", file=sys.stderr, flush=True)

    return report
