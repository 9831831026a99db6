"""What a streaming frame costs the UI: layout passes, folded chunks, frame pacing, held-off full
collections.

The layout passes are counted on the real compositor of a headless app; the folded chunks of a
long reply are checked against the same log with everything unfolded (same height, same text
on screen) and against the text shown after scrolling back to the top.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator
from typing import Any

import pytest
from textual._compositor import Compositor
from textual.app import App, ComposeResult

from app.gc_pause import NEVER, FullCollectionPause
from app.options import TuiOptions
from app.reply_stream import POLICY
from app.tui import LampchatApp
from app.tui_store import ChatStore
from engine.types import SamplingParams
from engine.worker import EngineWorker
from tests.support import scripted_backend
from tests.support.markdown_host import screen_text
from tests.support.scripted_backend import long_reply
from widgets.frame_pacer import FRAME_S, MAX_FRAME_S, FramePacer
from widgets.messages import AssistantMessage, ChatLog, Fold, MessageData
from widgets.metrics_panel import MetricsPanel


class LogHost(App[None]):
    """The chat log alone."""

    def compose(self) -> ComposeResult:
        yield ChatLog()


async def streaming_reply(app: LogHost) -> tuple[ChatLog, AssistantMessage]:
    """The host's log and a new reply in it, streaming."""
    log = app.query_one(ChatLog)
    view = await log.add(MessageData("assistant", ""))
    assert isinstance(view, AssistantMessage)
    view.start_stream()
    return log, view


@pytest.fixture
def reflows(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """A list that gets one item per full layout pass of any screen."""
    calls: list[int] = []
    original = Compositor.reflow

    def reflow(self: Compositor, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Compositor, "reflow", reflow)
    yield calls


async def test_a_frame_lays_out_only_when_the_reply_needs_another_line(
    reflows: list[int],
) -> None:
    app = LogHost()
    async with app.run_test(size=(80, 30)) as pilot:
        _, view = await streaming_reply(app)
        view.feed("Once upon a time")
        await view._flush()
        await pilot.pause(0.1)
        reflows.clear()
        view.feed(", there was a lamp")  # still one line
        await view._flush()
        await pilot.pause(0.1)
        assert reflows == []  # a repaint of the paragraph, no layout pass
        assert "there was a lamp" in "\n".join(screen_text(app))
        view.feed(" that" + " glowed" * 12)  # wraps onto a second line
        await view._flush()
        await pilot.pause(0.1)
        # one pass for the new line: a resized widget does not ask for a second one
        assert len(reflows) == 1
        assert view.chunks[-1].size.height == 3  # two lines and the paragraph's margin


async def test_chunks_far_above_the_view_fold_and_come_back(reflows: list[int]) -> None:
    text = long_reply(1600)
    app = LogHost()
    async with app.run_test(size=(60, 20)) as pilot:
        log, view = await streaming_reply(app)
        for start in range(0, len(text), 200):
            view.feed(text[start:start + 200])
            await view._flush()
            await pilot.pause()
        await view.finish(text, None)
        await pilot.pause(0.1)
        folded = [chunk for chunk in view.chunks if not chunk.display]
        assert len(folded) >= 2 and view.chunks[-1].display
        assert len(view.query_children(Fold)) == len(folded)
        height = log.virtual_size.height
        bottom = screen_text(app)

        view.unfold_all()  # the same log with every chunk in place
        await pilot.pause(0.1)
        assert not view.query_children(Fold) and all(c.display for c in view.chunks)
        assert log.virtual_size.height == height  # a fold is exactly as tall as its chunk
        assert screen_text(app) == bottom

        view.fold_far_above()
        await pilot.pause(0.1)
        assert view.query_children(Fold)
        log.scroll_home(animate=False)  # the user scrolls back: the top comes back
        await pilot.pause(0.2)
        assert view.chunks[0].display
        top = "\n".join(screen_text(app))
        assert "Part 1" in top and "Here is a short guide" in top

        view.fold_far_above()  # not following the stream: nothing folds
        await pilot.pause(0.1)
        assert view.chunks[0].display

        log.scroll_end(animate=False)
        await pilot.pause(0.1)
        view.fold_far_above()
        await pilot.pause(0.1)
        assert view.query_children(Fold)
        await pilot.resize_terminal(50, 20)  # new width, new heights: everything unfolds
        await pilot.pause(0.2)
        assert not view.query_children(Fold) and all(c.display for c in view.chunks)


def test_full_collections_are_held_off_and_nest() -> None:
    before = gc.get_threshold()
    pause = FullCollectionPause()
    pause.hold()
    try:
        assert pause.held and gc.get_threshold() == (before[0], before[1], NEVER)
        pause.hold()
        pause.release()
        assert gc.get_threshold()[2] == NEVER  # still one hold
    finally:
        pause.release()
    assert not pause.held and gc.get_threshold() == before
    pause.release()  # one too many: harmless
    assert gc.get_threshold() == before


def burn(seconds: float) -> None:
    """Spend `seconds` of this thread's CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_frames_keep_the_ui_thread_within_its_cpu_budget() -> None:
    free = FramePacer()  # no budget: always the shortest interval
    burn(0.05)
    assert free.next_delay() == FRAME_S
    paced = FramePacer(budget=0.1, fast_frames=0)
    burn(0.003)  # a cheap frame: 3 ms at 10 % -> 30 ms, below the shortest interval
    assert paced.next_delay() == FRAME_S
    paced = FramePacer(budget=0.1, fast_frames=0)
    burn(0.02)  # 20 ms at 10 % -> 200 ms between frames
    assert 0.18 <= paced.next_delay() <= 0.3
    burn(0.2)  # very costly frames: capped, text still appears 3 times a second
    assert paced.next_delay() == MAX_FRAME_S
    starting = FramePacer(budget=0.1, fast_frames=2)  # a reply's first frames: full rate
    delays = []
    for _ in range(3):
        burn(0.03)
        delays.append(starting.next_delay())
    assert delays[:2] == [FRAME_S, FRAME_S] and delays[2] > 0.25


@pytest.mark.slow
async def test_replies_from_a_local_cpu_model_are_paced_and_others_are_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scripted_backend.install(monkeypatch)
    budgets: list[float | None] = []
    original = AssistantMessage.start_stream

    def start_stream(self: AssistantMessage, cpu_budget: float | None = None) -> None:
        budgets.append(cpu_budget)
        original(self, cpu_budget)

    monkeypatch.setattr(AssistantMessage, "start_stream", start_stream)
    wakes: list[float] = []
    original_generate = EngineWorker.generate

    def generate(self: EngineWorker, *args: Any, **kwargs: Any) -> Any:
        generation = original_generate(self, *args, **kwargs)
        wakes.append(generation._wake_interval)
        return generation

    monkeypatch.setattr(EngineWorker, "generate", generate)
    original_finish = AssistantMessage.finish

    async def slow_finish(self: AssistantMessage, *args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0.15)  # a long reply's end takes a while: the cursor waits for it
        await original_finish(self, *args, **kwargs)

    monkeypatch.setattr(AssistantMessage, "finish", slow_finish)
    panel_draws: list[int] = []
    original_panel = MetricsPanel.refresh_metrics
    monkeypatch.setattr(MetricsPanel, "refresh_metrics",
                        lambda self: (panel_draws.append(1), original_panel(self)))
    options = TuiOptions(model="scripted://demo?rate=40", backend="scripted",
                         sampling=SamplingParams(max_tokens=120), show_metrics=True)
    app = LampchatApp(options, ChatStore())
    blinking: list[bool] = []
    panel_per_tick: list[float] = []
    async with app.run_test(size=(120, 30)) as pilot:  # wide: the panel beside the chat
        while app.engine.info is None or app.loading:
            await pilot.pause(0.05)
        for backend in ("scripted", "llama.cpp"):  # a scripted model takes no CPU to decode
            monkeypatch.setattr(app.engine.info, "backend", backend)
            app.chat.prompt.load_text("hello")
            await pilot.press("enter")
            await pilot.pause(0.1)
            panel_draws.clear()
            seen = (0, 1)  # panel draws and live ticks while the reply streamed
            while app.chat.generation is not None:
                blinking.append(app.chat.prompt.cursor_blink)
                seen = (len(panel_draws), max(1, app.chat.reply._live_ticks))
                await pilot.pause(0.05)
            panel_per_tick.append(seen[0] / seen[1])
        blinking.append(app.chat.prompt.cursor_blink)
    assert budgets == [None, POLICY.local_cpu_budget]
    assert wakes == [0.0, POLICY.local_wake_s]
    # the panel: every live tick for the scripted model; once a second for the local one
    assert panel_per_tick[0] >= 0.9 and panel_per_tick[1] < 0.45
    # the cursor holds still while a reply streams and ends, and blinks again afterwards
    assert blinking[-1] and not any(blinking[:-1])


async def test_the_live_line_is_drawn_with_the_next_frame() -> None:
    app = LogHost()
    async with app.run_test(size=(80, 30)) as pilot:
        _, view = await streaming_reply(app)
        drawn: list[str] = []
        assert not view.with_next_frame(lambda: drawn.append("now"))  # no frame pending
        view.feed("Once upon")  # a frame is due: the live line goes with it
        assert view.with_next_frame(lambda: drawn.append("with the frame"))
        assert drawn == []
        await pilot.pause(FRAME_S * 3)
        assert drawn == ["with the frame"] and "Once upon" in "\n".join(screen_text(app))
