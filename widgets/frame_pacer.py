"""How often a streaming reply draws a frame: as often as `FRAME_S`, or less within a CPU budget."""

from __future__ import annotations

import time

FRAME_S = 1 / 10
"""The shortest time between two frames of a streaming reply. Each frame costs the UI thread a
Markdown parse and a screen update (benchmarks/tui_vs_ask.py, before the budget below: TUI/ask
decode 0.61 at 60 frames/s, 0.77 at 15/s, 0.86 at 10/s, about 0.95-0.99 with no frames)."""

MAX_FRAME_S = 1 / 3
"""The longest: text keeps appearing at least this often, whatever a frame costs."""

LOCAL_CPU_BUDGET = 0.04
"""The share of one core the UI thread may spend while a model decodes on this machine's CPU.

llama.cpp runs as many threads as there are physical cores, and its threads wait for each other
on every step, so a core the UI takes for a frame stalls the whole decode for that long: the
decode loses about the UI's share of the time (benchmarks/tui_vs_ask.py measures it). With the
share capped, frames come less often when they cost more (3-10 per second here; 3 is the cap).
"""


FAST_FRAMES = 2
"""Frames at the full rate before the budget applies: the start of every reply, and all of a
short one, stream smoothly."""


class FramePacer:
    """Spaces frames so that the UI thread's CPU time stays within `budget` of the wall time.

    Call `next_delay()` after each frame, on the UI thread: it measures that thread's CPU time
    since the previous call (the frame, the screen update after it, and whatever else the UI
    did), and returns how long to wait before the next frame. Without a budget, and for the
    first `fast_frames` frames, it is `min_s`.
    """

    def __init__(
        self, budget: float | None = None, min_s: float = FRAME_S, max_s: float = MAX_FRAME_S,
        fast_frames: int = FAST_FRAMES,
    ) -> None:
        self.budget = budget
        self.min_s = min_s
        self.max_s = max(max_s, min_s)
        self.fast_frames = fast_frames
        self._frames = 0
        self._cpu = time.thread_time()
        self._cost = 0.0
        """CPU seconds per frame, smoothed."""

    def next_delay(self) -> float:
        """Seconds until the next frame."""
        if not self.budget:
            return self.min_s
        now = time.thread_time()
        used, self._cpu = now - self._cpu, now
        self._cost = used if not self._cost else 0.5 * self._cost + 0.5 * used
        self._frames += 1
        if self._frames <= self.fast_frames:
            return self.min_s
        return min(self.max_s, max(self.min_s, self._cost / self.budget))
