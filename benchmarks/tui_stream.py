"""Benchmark: a fast backend streams a long Markdown reply into the real chat screen.

The scripted backend (tests/support/scripted_backend.py) streams `--tokens` tokens of Markdown at
`--rate` tokens/s into the real `LampchatApp` chat screen, run headless (`App.run_test`).
Checked against the targets of the TUI issue:

- every token is shown: the text streamed into the reply (before any final full update) is
  exactly the reply, and the chunks it was drawn in show the same lines as the reply drawn in
  one go (tests/tui/test_flat_markdown.py checks that this drawing matches Textual's Markdown);
- the screen holds the whole reply within 100 ms of the last token: time from the backend
  yielding its last token to the first frame composed after the reply's final update;
- memory stays bounded: process RSS before, peak during, and after the reply.

Usage (figures in benchmarks/README.md, "TUI benchmarks"):

    .venv/bin/python benchmarks/tui_stream.py                       # 4,000 tokens at 2,000/s
    .venv/bin/python benchmarks/tui_stream.py --tokens 400 --rate 2000   # a quick check

Exit status 0 when every target passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
from textual.widgets import Markdown  # noqa: E402

from app.options import TuiOptions  # noqa: E402
from app.tui import LampchatApp  # noqa: E402
from app.tui_store import ChatStore  # noqa: E402
from engine import registry  # noqa: E402
from engine.types import ChatMessage, Piece, SamplingParams, StreamStats  # noqa: E402
from tests.support.scripted_backend import ScriptedBackend, long_reply  # noqa: E402
from widgets.flat_markdown import FlatMarkdown  # noqa: E402
from widgets.messages import AssistantMessage  # noqa: E402

LATENCY_TARGET_MS = 100.0
RSS_GROWTH_TARGET_MB = 100.0
"""'Bounded': the reply may grow the process by at most this much (its widgets, its text)."""


class TimedBackend(ScriptedBackend):
    """The scripted backend, noting when each token leaves it."""

    token_times: list[float] = []

    def stream(
        self, messages: Sequence[ChatMessage], sampling: SamplingParams, stats: StreamStats
    ) -> Iterator[Piece]:
        times = TimedBackend.token_times
        times.clear()
        for piece in super().stream(messages, sampling, stats):
            times.append(time.perf_counter())
            yield piece


@dataclass
class Record:
    """What the hooks saw."""

    reply: str = ""
    view: AssistantMessage | None = None
    frames: list[float] = field(default_factory=list)
    streamed_source: str | None = None
    """The reply's Markdown source as streamed, just before the final full update."""
    stream_complete_at: float | None = None
    """First frame whose Markdown source (via the stream) held the whole reply."""
    finish_done_at: float | None = None
    last_feed_at: float | None = None
    """When the chat screen got the last piece from the engine (the engine's share)."""


class RssSampler(threading.Thread):
    """Samples this process's RSS every few milliseconds; keeps the peak."""

    def __init__(self, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process()
        self.interval = interval
        self.peak = self.process.memory_info().rss
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)


def rss_mb() -> float:
    """This process's resident memory, MB."""
    return psutil.Process().memory_info().rss / 2**20


def drawn_lines(chunk: Markdown | FlatMarkdown, width: int) -> list[str]:
    """The lines a streamed chunk draws at `width`, without blank ones (the margins between
    chunks differ from those between blocks of one widget). A streamed reply is drawn only by
    `FlatMarkdown` chunks; the Markdown widget stays empty unless the reply was re-rendered."""
    if isinstance(chunk, FlatMarkdown):
        return [line.rstrip() for line in chunk.text_at(width).split("\n") if line.strip()]
    assert not chunk.source, "a streamed reply was re-rendered by the Markdown widget"
    return []


def install_hooks(app: LampchatApp, record: Record) -> Callable[[], None]:
    """Time frames, the reply's final update and its streamed source; returns an undo."""
    original_display = app._display
    original_update = Markdown.update
    original_finish = AssistantMessage.finish
    original_start = AssistantMessage.start_stream
    original_feed = AssistantMessage.feed

    def display(screen: Any, renderable: Any) -> None:
        original_display(screen, renderable)
        if renderable is None or app._batch_count:
            return
        now = time.perf_counter()
        record.frames.append(now)
        view = record.view
        if (record.stream_complete_at is None and view is not None and record.reply
                and view.source == record.reply):
            record.stream_complete_at = now

    def update(self: Markdown, markdown: str) -> Any:
        view = record.view
        if view is not None and self in view.chunks and markdown == record.reply:
            record.streamed_source = view.source  # the final full re-render, if any
        return original_update(self, markdown)

    def feed(self: AssistantMessage, text: str) -> None:
        if self is record.view:
            record.last_feed_at = time.perf_counter()
        original_feed(self, text)

    def start_stream(self: AssistantMessage, *args: Any, **kwargs: Any) -> None:
        record.view = self
        original_start(self, *args, **kwargs)

    async def finish(self: AssistantMessage, *args: Any, **kwargs: Any) -> None:
        await original_finish(self, *args, **kwargs)
        if self is record.view:
            record.finish_done_at = time.perf_counter()

    app._display = display  # type: ignore[method-assign]
    Markdown.update = update  # type: ignore[method-assign]
    AssistantMessage.finish = finish  # type: ignore[method-assign]
    AssistantMessage.start_stream = start_stream  # type: ignore[method-assign]
    AssistantMessage.feed = feed  # type: ignore[method-assign]

    def undo() -> None:
        AssistantMessage.feed = original_feed  # type: ignore[method-assign]
        AssistantMessage.start_stream = original_start  # type: ignore[method-assign]
        Markdown.update = original_update  # type: ignore[method-assign]
        AssistantMessage.finish = original_finish  # type: ignore[method-assign]

    return undo


async def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll `condition` on the app's loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def run(tokens: int, rate: float, size: tuple[int, int]) -> dict[str, Any]:
    """Stream one reply into the chat screen; the measurements."""
    registry.BACKENDS["timed-scripted"] = "__main__:TimedBackend" if __name__ == "__main__" \
        else f"{__name__}:TimedBackend"
    reply = long_reply(tokens)
    options = TuiOptions(
        model=f"scripted://bench?rate={rate:g}&tokens={tokens}",
        backend="timed-scripted",
        sampling=SamplingParams(temperature=0.0, max_tokens=tokens + 16),
        show_metrics=False,
    )
    app = LampchatApp(options, ChatStore())
    record = Record(reply=reply)
    out: dict[str, Any] = {"tokens": tokens, "rate": rate}
    async with app.run_test(size=size) as pilot:
        await wait_until(lambda: app.engine.info is not None and not app.loading, 60,
                         "the scripted model to load")
        await pilot.pause(0.2)
        undo = install_hooks(app, record)
        try:
            chat = app.chat
            sampler = RssSampler()
            out["rss_before_mb"] = rss_mb()
            sampler.start()
            chat.prompt.load_text("Write the long guide.")
            await pilot.press("enter")
            try:
                await wait_until(lambda: record.view is not None, 120, "the reply to start")
            except TimeoutError:
                notes = [n.message for n in app._notifications]
                raise TimeoutError(f"the reply did not start; focus: {app.focused}, "
                                   f"notifications: {notes}") from None
            await wait_until(lambda: record.finish_done_at is not None, 60 + 2 * tokens / rate,
                             "the reply to finish")
            await wait_until(lambda: record.frames and record.frames[-1] > record.finish_done_at,
                             5, "a frame after the reply")
            await pilot.pause(0.3)
            sampler.running = False
            sampler.join()
            out["rss_after_mb"] = rss_mb()
            out["rss_peak_mb"] = sampler.peak / 2**20
            view = record.view
            assert view is not None
            times = TimedBackend.token_times
            last_token = times[-1]
            assert record.finish_done_at is not None
            first_frame = next(t for t in record.frames if t > record.finish_done_at)
            out["tokens_streamed"] = len(times)
            out["backend_tps"] = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 \
                else 0.0
            out["latency_ms"] = (first_frame - last_token) * 1000
            out["stream_complete_ms"] = (
                (record.stream_complete_at - last_token) * 1000
                if record.stream_complete_at is not None else None
            )
            out["engine_ms"] = ((record.last_feed_at - last_token) * 1000
                                if record.last_feed_at is not None else None)
            out["frames_while_streaming"] = sum(1 for t in record.frames
                                                if times[0] <= t <= last_token)
            streamed = record.streamed_source
            if streamed is None:  # no final re-render: what is shown is what was streamed
                streamed = view.source
            out["streamed_all"] = streamed == reply
            out["full_updates"] = getattr(view, "full_updates", None)
            out["final_source_ok"] = view.source == reply
            out["scrolled_to_end"] = chat.chat_log.is_vertical_scroll_end
            width = view.markdown.content_region.width or view.content_region.width
            shown = [line for chunk in view.chunks for line in drawn_lines(chunk, width)]
            reference = FlatMarkdown(reply, id="reference")
            await app.screen.mount(reference)
            await pilot.pause(0.2)
            expected = drawn_lines(reference, width)
            out["rendered_same"] = shown == expected and bool(shown)
            out["blocks"] = len(shown)
            out["chunks"] = len(view.chunks)
            out["first_difference"] = next(
                ((i, a, b) for i, (a, b) in enumerate(zip(shown, expected, strict=False))
                 if a != b),
                None if len(shown) == len(expected) else (len(shown), len(expected)),
            )
        finally:
            undo()
    return out


def report(out: dict[str, Any]) -> bool:
    """Print the figures with PASS/FAIL; True when all pass."""
    shown_ok = bool(out["streamed_all"] and out["final_source_ok"] and out["rendered_same"]
                    and out["tokens_streamed"] == out["tokens"])
    latency_ok = out["latency_ms"] <= LATENCY_TARGET_MS
    growth = out["rss_after_mb"] - out["rss_before_mb"]
    memory_ok = out["rss_peak_mb"] - out["rss_before_mb"] <= RSS_GROWTH_TARGET_MB
    verdict = {True: "PASS", False: "FAIL"}
    complete = out["stream_complete_ms"]
    print(f"TUI streaming: {out['tokens']} tokens of Markdown at {out['rate']:g} tokens/s "
          f"(backend achieved {out['backend_tps']:,.0f} tokens/s)")
    print(f"  every token shown: streamed source == reply: {out['streamed_all']}, final source "
          f"== reply: {out['final_source_ok']}, drawn lines == one-shot drawing's "
          f"({out['blocks']} lines in {out['chunks']} widgets): "
          f"{out['rendered_same']}, scrolled to end: "
          f"{out['scrolled_to_end']}, final full re-renders: {out['full_updates']}  "
          f"[{verdict[shown_ok]}]")
    print(f"  whole reply on screen {out['latency_ms']:.1f} ms after the last token "
          f"(target <= {LATENCY_TARGET_MS:.0f} ms)  [{verdict[latency_ok]}]")
    if not out["rendered_same"]:
        print(f"  note: the streamed lines differ from a one-shot drawing; first difference "
              f"(index, streamed, one-shot): {out['first_difference']}")
    if complete is not None:
        print(f"  (breakdown: the chat screen got the last piece {out['engine_ms']:.1f} ms after "
              f"the backend yielded it; the streamed text was complete on a frame at "
              f"{complete:.1f} ms; {out['frames_while_streaming']} frames while streaming)")
    print(f"  RSS before {out['rss_before_mb']:.1f} MB, peak {out['rss_peak_mb']:.1f} MB, after "
          f"{out['rss_after_mb']:.1f} MB (growth {growth:+.1f} MB; peak growth target <= "
          f"{RSS_GROWTH_TARGET_MB:.0f} MB)  [{verdict[memory_ok]}]")
    ok = shown_ok and latency_ok and memory_ok
    print(f"RESULT: {verdict[ok]}")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=4000, help="reply length in tokens")
    parser.add_argument("--rate", type=float, default=2000, help="tokens per second")
    parser.add_argument("--width", type=int, default=120)
    parser.add_argument("--height", type=int, default=40)
    args = parser.parse_args(argv)
    out = asyncio.run(run(args.tokens, args.rate, (args.width, args.height)))
    return 0 if report(out) else 1


if __name__ == "__main__":
    raise SystemExit(main())
