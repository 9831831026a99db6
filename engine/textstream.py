"""Turning token bytes into safe-to-show text: UTF-8 reassembly and stop strings."""

from __future__ import annotations

import codecs
from collections.abc import Generator, Iterator, Sequence
from typing import Any

from tokenizers.decoders import DecodeStream

from engine.types import Piece


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


def token_pieces(
    ids: Iterator[int], tokenizer: Any, stop: Sequence[str]
) -> Generator[Piece, None, bool]:
    """Turn generated token ids into Pieces with HF `tokenizers`, up to a stop string.

    Each Piece carries the real number of tokens behind it (tokens that complete no text yet
    are counted into the next one). Closes `ids` when done; returns whether a stop string
    ended the stream (`hit = yield from token_pieces(...)`).
    """

    decoder = DecodeStream(skip_special_tokens=True)
    stops = StopMatcher(stop)
    pending = 0
    unfinished: list[int] = []  # tokens whose bytes complete no character yet
    hit = False
    try:
        for token in ids:
            pending += 1
            text = decoder.step(tokenizer, token)
            if not text:
                unfinished.append(token)
                continue
            unfinished.clear()
            out, hit = stops.feed(text)
            if out:
                yield Piece(out, pending)
                pending = 0
            if hit:
                break
    finally:
        ids.close()  # type: ignore[attr-defined]
    if unfinished and not hit:  # bytes of a character the reply ended inside: U+FFFD, as
        # llama.cpp's backend and Python's decoder give
        text = tokenizer.decode(unfinished, skip_special_tokens=True)
        out, hit = stops.feed(text)
        if out:
            yield Piece(out, pending)
            pending = 0
    tail = "" if hit else stops.flush()
    if tail or pending:
        yield Piece(tail, pending)
    return hit
