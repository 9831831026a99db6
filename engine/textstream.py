"""Turning token bytes into safe-to-show text: UTF-8 reassembly and stop strings."""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class Utf8Assembler:
    """Decodes token bytes incrementally; a character split across tokens comes out whole."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        """Return the text completed by `data` (may be empty)."""
        return self._decoder.decode(data)

    def flush(self) -> str:
        """Return what is left, with broken bytes replaced."""
        return self._decoder.decode(b"", final=True)


class StopMatcher:
    """Finds stop strings in streamed text, holding back what may be the start of one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._longest = max((len(s) for s in self._stops), default=0)
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Return (text safe to emit now, whether a stop string was reached)."""
        if not self._stops:
            return text, False
        buf = self._pending + text
        hits = [i for i in (buf.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._pending = ""
            return buf[: min(hits)], True
        keep = 0
        for n in range(min(self._longest - 1, len(buf)), 0, -1):
            if any(s.startswith(buf[-n:]) for s in self._stops):
                keep = n
                break
        self._pending = buf[len(buf) - keep :]
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        """Release held-back text at the end of a stream."""
        out, self._pending = self._pending, ""
        return out
