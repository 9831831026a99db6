"""One reply's path from the engine to the screen.

backend (engine/backends) -> `EngineWorker` (engine/worker.py) -> `ReplyStream` (here) ->
`AssistantMessage` (widgets/messages.py). A `ReplyStream` owns the reply's `Generation`: it
feeds the pieces to the message widget (which coalesces them into frames), checkpoints the
partial text off the event loop, redraws the live metrics, holds off full garbage collections
while the reply streams, and saves the finished reply. `POLICY` holds its timing constants,
each with the measurement behind it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from textual.screen import Screen
from textual.timer import Timer

from app.chat_host import ChatHost
from app.history import Conversation, Message
from engine.errors import LampchatError
from engine.registry import is_local
from engine.types import ReplyMetrics, SamplingParams
from engine.worker import Generation
from widgets.frame_pacer import FRAME_S, LOCAL_CPU_BUDGET
from widgets.messages import AssistantMessage, ChatLog, MessageData, MessageState, format_tps
from widgets.metrics_panel import MetricsPanel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamPolicy:
    """How often a streaming reply wakes the UI and redraws what changes."""

    live_refresh_s: float = 0.25
    """The live metrics (the line under the reply, the panel) are redrawn this often."""
    repaint_after_s: float = 0.2
    """The whole screen is drawn again this long after a reply ends: frames repaint only what
    changed, so nothing a frame left behind (a lost write, a stale line) outlives the reply."""
    local_wake_s: float = FRAME_S
    """Decoding on this machine's CPU: the engine wakes the UI for new tokens at most this
    often, not for each token. Frames come no more often than this, so waking the UI more
    often would only cost it CPU (every 0.05 s instead: TUI/ask decode about 0.01 lower,
    benchmarks/tui_vs_ask.py)."""
    local_panel_refresh_s: float = 1.0
    """Decoding on this machine's CPU: the metrics panel is redrawn this often while a reply
    streams (the live line under the reply still changes every `live_refresh_s`)."""
    local_cpu_budget: float = LOCAL_CPU_BUDGET
    """Decoding on this machine's CPU: the share of a core a reply's frames may take (whatever
    the UI thread does stalls llama.cpp's threads; widgets/frame_pacer.py)."""


POLICY = StreamPolicy()


class ReplyStream:
    """One reply, from `start` to the saved message. Created by `ReplyStream.start`."""

    def __init__(self, host: ChatHost, screen: Screen[None], conversation: Conversation,
                 generation: Generation, view: AssistantMessage, panel: MetricsPanel,
                 local_cpu: bool, policy: StreamPolicy = POLICY,
                 on_saved: Callable[[], None] | None = None) -> None:
        self.host = host
        self.screen = screen
        self.conversation = conversation
        self.generation = generation
        self.view = view
        self.panel = panel
        self.policy = policy
        self._panel_every = (round(policy.local_panel_refresh_s / policy.live_refresh_s)
                             if local_cpu else 1)
        """The panel is redrawn every this many live refreshes."""
        self._live_ticks = 0
        self._live_timer: Timer | None = None
        self._checkpoint: asyncio.Task[None] | None = None
        self._streaming = True
        self.on_saved = on_saved
        """Called once the reply is saved, before the app hears that it ended."""

    @classmethod
    async def start(cls, host: ChatHost, screen: Screen[None], conversation: Conversation,
                    log_view: ChatLog, panel: MetricsPanel,
                    policy: StreamPolicy = POLICY,
                    sampling: SamplingParams | None = None,
                    alternatives: Sequence[Message] = ()) -> ReplyStream | None:
        """Ask the engine for a reply to `conversation` (with `sampling`, else the host's)
        and add its (empty) message to `log_view`; None, with a toast saying why, when it
        cannot start. `alternatives`: the earlier versions of the reply it replaces."""
        info = host.engine.info
        local_cpu = info is not None and is_local(info.backend) and info.device == "cpu"
        try:
            generation = host.engine.generate(
                conversation.chat_messages(), sampling or host.sampling(),
                policy.local_wake_s if local_cpu else 0.0, conversation=conversation.id)
        except (ValueError, LampchatError) as exc:
            host.notify(f"cannot start a reply: {exc}", severity="error")
            return None
        log_view.anchor()  # a new reply is followed again, even after scrolling up
        total = len(alternatives) + 1
        view = await log_view.add(MessageData("assistant", "",
                                              versions=(total, total) if total > 1 else None))
        assert isinstance(view, AssistantMessage)
        view.start_stream(policy.local_cpu_budget if local_cpu else None)
        try:
            host.store.begin_reply(conversation, info.name if info else "",
                                   info.backend if info else "", alternatives)
        except LampchatError as exc:
            host.notify(f"could not save the reply: {exc}", severity="warning")
        return cls(host, screen, conversation, generation, view, panel, local_cpu, policy)

    def cancel(self) -> None:
        """Stop the reply; its partial text stays, marked stopped."""
        self.generation.cancel()

    async def run(self) -> None:
        """Stream the reply to its view, then finish and save it. Full garbage collections
        wait until the finished reply is on screen."""
        self.host.session.start_reply()
        self._live_timer = self.screen.set_interval(self.policy.live_refresh_s,
                                                    self._refresh_live)
        self.host.gc_pause.hold()
        try:
            await self._run()
        finally:
            self.screen.call_after_refresh(self.host.gc_pause.release)

    async def _run(self) -> None:
        host, generation, view = self.host, self.generation, self.view
        failure: str | None = None
        try:
            async for piece in generation:
                view.feed(piece.text)
                host.session.tokens(piece.n_tokens)
                self._maybe_checkpoint()
        except LampchatError as exc:
            failure = str(exc)
        except Exception as exc:  # never let a reply take the app down
            log.exception("reply failed")
            failure = f"the reply failed: {exc}"
        finally:
            if self._live_timer is not None:
                self._live_timer.stop()
                self._live_timer = None
        metrics = generation.metrics
        error = generation.error or failure
        state: MessageState = "done"
        if error:
            state = "error"
            metrics = metrics or ReplyMetrics(error=error, finish_reason="error")
            metrics.error = metrics.error or error
        elif metrics is not None and metrics.finish_reason == "cancelled":
            state = "stopped"
        self._streaming = False
        await view.finish(generation.text, metrics, state)
        self._save(generation.text, metrics, state)
        if self.on_saved is not None:
            self.on_saved()
        host.session.finish_reply(metrics)
        host.reply_finished(metrics)
        if error:
            host.notify(error, title="Reply failed", severity="error")
        self.panel.refresh_metrics()
        self.screen.set_timer(self.policy.repaint_after_s, self.screen.refresh)

    # -- saving ---------------------------------------------------------------------------

    def _maybe_checkpoint(self) -> None:
        """Record the partial text; when the store says a checkpoint is due, write it to its
        side file from a thread, one write at a time (an fsync must not stall the UI)."""
        due = self.host.store.record_partial(self.conversation, self.generation.text)
        if not due or (self._checkpoint is not None and not self._checkpoint.done()):
            return
        self._checkpoint = asyncio.create_task(
            asyncio.to_thread(self.host.store.checkpoint, self.conversation))

    def _save(self, text: str, metrics: ReplyMetrics | None, state: MessageState) -> None:
        store, conversation = self.host.store, self.conversation
        try:
            message = store.finish_reply(conversation, text, metrics, state != "done")
        except LampchatError as exc:
            self.host.notify(f"could not save the reply: {exc}", severity="error")
            message = None
        if message is None:  # saving failed: keep it in memory at least
            conversation.messages.append(Message(
                "assistant", text, metrics=metrics.to_dict() if metrics else None,
                interrupted=state != "done"))

    # -- live metrics ---------------------------------------------------------------------

    def _refresh_live(self) -> None:
        """Every `live_refresh_s` while the reply streams: the panel now (or every
        `local_panel_refresh_s`), and the live line under the reply with the reply's next
        frame when one is due.

        The line lies next to the text the frame draws, so drawing both is one small update.
        The panel is drawn on its own: a screen update redraws the box around everything that
        changed, and a box from the panel to the reply would be most of the screen."""
        self._live_ticks += 1
        if self.panel.display and (self._live_ticks - 1) % self._panel_every == 0:
            self.host.session.sample_rss()
            self.panel.refresh_metrics()
        if self.view.with_next_frame(self._draw_live):
            return
        self._draw_live()

    def _draw_live(self) -> None:
        if not self._streaming:
            return
        session = self.host.session
        text = "waiting for the first token…" if session.live_ttft_ms is None else (
            f"streaming · {session.live_tokens} tokens · {format_tps(session.live_tps)}"
        )
        self.view.set_meta(text)
