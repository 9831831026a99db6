"""Hold off Python's full garbage collections while a reply streams."""

from __future__ import annotations

import gc

NEVER = 1_000_000_000
"""A gen2 threshold that is never reached."""


class FullCollectionPause:
    """While held, the cyclic collector still collects the young generations but never the
    oldest one.

    A full collection walks every object the app tracks; in the TUI that takes 100-300 ms on a
    2-core machine, and when one lands at the end of a reply the last frame waits for it
    (benchmarks/tui_stream.py). Holding them off from the first token until the finished reply
    is on screen moves that pause to after it. Python runs the deferred collection by itself
    soon after `release`. Holds nest: the thresholds come back when the last one is released.
    """

    def __init__(self) -> None:
        self._holds = 0
        self._saved: tuple[int, int, int] | None = None

    @property
    def held(self) -> bool:
        """Whether full collections are held off now."""
        return self._holds > 0

    def hold(self) -> None:
        """Hold off full collections until the matching `release`."""
        self._holds += 1
        if self._holds == 1:
            self._saved = gc.get_threshold()
            gen0, gen1, _gen2 = self._saved
            gc.set_threshold(gen0, gen1, NEVER)

    def release(self) -> None:
        """Undo one `hold` (harmless when none is held)."""
        if self._holds == 0:
            return
        self._holds -= 1
        if self._holds == 0 and self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None
