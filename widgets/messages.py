"""Chat message widgets: user prompts, streaming Markdown replies, and the scrolling log.

A streaming reply is drawn by `FlatMarkdown` (widgets/flat_markdown.py): one widget that parses
the Markdown and draws every block as its own lines, looking exactly like `ReplyMarkdown`. Text
fed to a reply is buffered and written at most once per frame, however fast tokens arrive; only
the last block is parsed again. A long reply goes on in a new `FlatMarkdown` every
`CHUNK_BLOCKS` blocks, so a write lays out only the newest part; the finished ones that lie more
than a screen above the view are folded into a `Fold` of the same height until the view comes
near them again. When the reply ends, the streamed chunks stay if they hold exactly the reply;
otherwise the reply's `ReplyMarkdown` renders it once. A frame lays out the screen only when the
reply needs another line (widgets/layout_pass.py), and the live metrics line is drawn with the
frame, not on its own. Replies loaded from history are drawn by `ReplyMarkdown`.

The log mounts only the most recent messages (`ChatLog.window`); older ones are loaded on
demand, so a long conversation keeps layout cheap (textual#5163).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.events import Resize
from textual.geometry import Region
from textual.message import Message
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Button, Markdown, Static

from engine.types import ReplyMetrics
from widgets.code_fence import CodeFence
from widgets.flat_markdown import FlatMarkdown
from widgets.frame_pacer import FramePacer
from widgets.layout_pass import OneLayoutPass, relayout_if_resized
from widgets.reply_markdown import ReplyMarkdown

MessageState = Literal["done", "streaming", "stopped", "error", "interrupted"]

CHUNK_BLOCKS = 12
"""A streaming reply goes on in a new `FlatMarkdown` once the current one holds this many
top-level blocks. A write then draws and lays out only the widget it lands in, not the whole
reply, and finished chunks can be folded (benchmarks/tui_stream.py)."""

_FENCE = re.compile(r"^(```|~~~)[^\n]*\n(.*?)^\1[ \t]*$", re.DOTALL | re.MULTILINE)


def code_blocks(markdown: str) -> list[str]:
    """The bodies of the fenced code blocks in `markdown`, in order."""
    return [match.group(2) for match in _FENCE.finditer(markdown)]


def format_tps(value: float) -> str:
    """Tokens per second, short."""
    return f"{value:.1f} tok/s" if value < 1000 else f"{value:,.0f} tok/s"


def format_ms(value: float) -> str:
    """Milliseconds, or seconds when long."""
    return f"{value:.0f} ms" if value < 10_000 else f"{value / 1000:.1f} s"


def reply_meta(metrics: ReplyMetrics | None, state: MessageState = "done",
               versions: tuple[int, int] | None = None) -> str:
    """The line under a reply: which version it is (of several), model, backend, TTFT,
    tokens/s (and why it ended early)."""
    parts: list[str] = [f"‹ {versions[0]}/{versions[1]} ›"] if versions else []
    if metrics is not None:
        if metrics.model:
            parts.append(metrics.model)
        if metrics.backend:
            parts.append(metrics.backend)
        if metrics.completion_tokens:
            parts.append(f"TTFT {format_ms(metrics.ttft_ms)}")
            parts.append(format_tps(metrics.decode_tps))
        else:  # stopped or failed before its first token: no TTFT, no speed
            parts.append("TTFT –")
        approx = "~" if metrics.tokens_estimated else ""
        parts.append(f"{approx}{metrics.completion_tokens} tokens")
        if metrics.finish_reason == "length":
            parts.append("max tokens reached")
    if state == "stopped":
        parts.append("stopped")
    elif state == "interrupted":
        parts.append("interrupted")
    elif state == "error" and metrics is not None and metrics.error:
        parts.append(f"error: {metrics.error}")
    elif state == "error":
        parts.append("error")
    return " · ".join(parts)


@dataclass
class MessageData:
    """What the log shows for one message."""

    role: Literal["user", "assistant", "system"]
    content: str
    metrics: ReplyMetrics | None = None
    state: MessageState = "done"
    extra: dict[str, object] = field(default_factory=dict)
    versions: tuple[int, int] | None = None
    """A reply with earlier versions: (this one's number, how many), from 1."""


class Fold(Widget):
    """Stands in for a finished part of a streaming reply that lies far above the view: the
    same height, and nothing inside for a layout pass to walk. The part comes back (`unfold`)
    when the view scrolls near it, the width changes, or the reply is re-rendered."""

    DEFAULT_CSS = """
    Fold { width: 1fr; }
    """

    def __init__(self, folded: Widget) -> None:
        super().__init__()
        self.folded = folded
        self.styles.height = folded.region.height

    def unfold(self) -> None:
        """Show the part again in place of this stand-in."""
        self.folded.display = True
        self.remove()


class MessageView(OneLayoutPass, Vertical):
    """Base class of a message in the log. User and assistant messages take the focus
    (Shift+Tab from the input reaches the last one): Up/Down move between them; `c`, `t`,
    `e`, `d` ask the screen to copy, copy the code of, edit or delete the message, and `<`,
    `>` to show a reply's previous or next version."""

    DEFAULT_CSS = """
    MessageView { height: auto; margin: 0 1 1 1; padding: 0 1; }
    MessageView > .role { color: $text-muted; text-style: bold; height: 1; }
    MessageView:focus { background: $boost; }
    """

    ROLE_LABEL: ClassVar[str] = ""

    BINDINGS = [
        Binding("up", "step(-1)", "Earlier", show=False),
        Binding("down", "step(1)", "Later", show=False),
        Binding("c", "act('copy')", "Copy"),
        Binding("t", "act('code')", "Copy code"),
        Binding("e", "act('edit')", "Edit"),
        Binding("d", "act('delete')", "Delete"),
        Binding("less_than_sign", "act('previous')", "Earlier version", show=False),
        Binding("greater_than_sign", "act('next')", "Later version", show=False),
        Binding("escape", "act('leave')", "Back", show=False),
    ]

    class Act(Message):
        """A key asked for `action` ("copy", "code", "edit", "delete", "leave", and for a
        reply's versions "previous", "next") on `view`."""

        def __init__(self, view: MessageView, action: str) -> None:
            super().__init__()
            self.view = view
            self.action = action

    def __init__(self, data: MessageData, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.data = data
        self.can_focus = data.role in ("user", "assistant")

    def action_step(self, step: int) -> None:
        """Focus the message `step` places away (Up/Down)."""
        views = [v for v in self.screen.query(MessageView) if v.can_focus]
        if self in views:
            index = views.index(self) + step
            if 0 <= index < len(views):
                views[index].focus()
                views[index].scroll_visible(animate=False)
            elif index >= len(views):
                self.post_message(self.Act(self, "leave"))

    def action_act(self, action: str) -> None:
        """Ask the screen to do `action` with this message."""
        self.post_message(self.Act(self, action))

    @property
    def text(self) -> str:
        """The message's text."""
        return self.data.content


class UserMessage(MessageView):
    """A prompt the user sent, shown as plain text."""

    ROLE_LABEL = "You"

    def compose(self) -> ComposeResult:
        yield Static(self.ROLE_LABEL, classes="role")
        yield Static(self.data.content, markup=False, classes="body")


class SystemNote(MessageView):
    """A note from Lampchat in the log (slash command output, system prompt changes)."""

    def compose(self) -> ComposeResult:
        yield Static(self.data.content, markup=False, classes="body")


class AssistantMessage(MessageView):
    """A reply: Markdown that can stream, and a metrics line under it. Left/Right scroll its
    code blocks sideways (a line cut at the edge ends in `→`)."""

    ROLE_LABEL = "Assistant"
    SIDEWAYS = 8
    """Columns Left/Right scroll the code by."""

    BINDINGS = [
        Binding("left", "scroll_code(-1)", "Code left", show=False),
        Binding("right", "scroll_code(1)", "Code right", show=False),
    ]

    def __init__(self, data: MessageData, **kwargs: object) -> None:
        super().__init__(data, **kwargs)
        self._pending: list[str] = []
        self._live: FlatMarkdown | None = None
        """The widget the stream writes to (the last chunk); None when not streaming."""
        self._writing = asyncio.Lock()
        """Held while text goes to the screen: a frame's write and the final one never
        interleave (starting a new chunk awaits)."""
        self._timer: Timer | None = None
        self._pacer = FramePacer()
        self._delay = self._pacer.min_s
        self._after_frame: list[Callable[[], object]] = []
        self.shown_chars = 0
        """Characters written to the screen so far (for tests and benchmarks)."""
        self.full_updates = 0
        """How many times the whole reply was re-rendered at its end (0 when streaming sufficed)."""

    def action_scroll_code(self, direction: int) -> None:
        """Scroll the reply's code blocks sideways (those wider than the reply)."""
        for fence in self.query(CodeFence):
            fence.scroll_columns(direction * self.SIDEWAYS)

    def compose(self) -> ComposeResult:
        yield Static(self.ROLE_LABEL, classes="role")
        yield ReplyMarkdown(self.data.content, classes="body")
        yield Static(reply_meta(self.data.metrics, self.data.state, self.data.versions),
                     markup=False, classes="meta")

    def on_mount(self) -> None:
        self._mark_state()

    def _mark_state(self) -> None:
        """Classes for the state: "-streaming" on the metrics line only (a class on the message
        would restyle every block of a long reply when it ends), the others on the message."""
        state = self.data.state
        self.query_one(".meta", Static).set_class(state == "streaming", "-streaming")
        for other in ("stopped", "error", "interrupted"):
            self.set_class(state == other, f"-{other}")

    @property
    def markdown(self) -> Markdown:
        """The reply's Markdown widget (empty and hidden while a streamed reply is shown by
        its chunks)."""
        return self.query_one(Markdown)

    @property
    def chunks(self) -> list[Markdown | FlatMarkdown]:
        """The widgets that show the reply, in order: the chunks a streamed reply is drawn in
        (see `CHUNK_BLOCKS`), else the Markdown widget."""
        flat = [child for child in self.children if isinstance(child, FlatMarkdown)]
        return flat or [self.markdown]

    @property
    def source(self) -> str:
        """The Markdown source shown, all chunks together."""
        return "".join(chunk.source for chunk in self.chunks)

    @property
    def streaming(self) -> bool:
        """Whether the reply is still streaming."""
        return self._live is not None

    def start_stream(self, cpu_budget: float | None = None) -> None:
        """Begin streaming: later `feed` calls append text, one write per frame. With a
        `cpu_budget`, frames are spaced to keep the UI thread within it (see FramePacer)."""
        self._pacer = FramePacer(cpu_budget)
        self._delay = self._pacer.min_s
        self.data.state = "streaming"
        self._mark_state()
        self._live = FlatMarkdown(self.markdown.source, classes="body")
        self.markdown.display = False
        self.mount(self._live, before=self.query_one(".meta"))

    def feed(self, text: str) -> None:
        """Queue streamed text; it reaches the screen on the next frame. A frame is scheduled
        only when text is waiting, so nothing wakes the UI while the model thinks."""
        self._pending.append(text)
        if self._timer is None and self._live is not None:
            self._timer = self.set_timer(self._delay, self._flush, name="reply-frame")

    async def _flush(self) -> None:
        self._timer = None
        async with self._writing:
            await self._write_pending()
        self._run_after_frame()
        self._delay = self._pacer.next_delay()

    def _run_after_frame(self) -> None:
        callbacks, self._after_frame = self._after_frame, []
        for callback in callbacks:
            callback()

    async def _write_pending(self) -> None:
        live = self._live
        if not self._pending or live is None:
            return
        chunk = "".join(self._pending)
        self._pending.clear()
        self.shown_chars += len(chunk)
        full, written = live.block_count >= CHUNK_BLOCKS, len(live.source)
        live.append(chunk)
        if full and live.last_block_start >= written:  # a block began: it opens a new chunk
            self._live = FlatMarkdown(live.split_off_last_block(), classes="body")
            await self.mount(self._live, after=live)
            self.fold_far_above()

    def fold_far_above(self) -> None:
        """Fold the finished chunks that lie more than a screen above the log's view, so that
        each frame's layout pass walks only the part of a long reply near the view."""
        log = self.parent
        if not isinstance(log, ChatLog) or not log.is_vertical_scroll_end:
            return
        view = log.content_region
        if not view.height:
            return
        for chunk in self.chunks[:-1]:
            if chunk.display and chunk.region.bottom < view.y - view.height:
                self.mount(Fold(chunk), before=chunk)
                chunk.display = False

    def unfold_all(self) -> None:
        """Bring back every folded chunk."""
        for fold in self.query_children(Fold):
            fold.unfold()

    def set_meta(self, text: str) -> None:
        """Replace the line under the reply (a layout pass only if it needs more lines)."""
        meta = self.query_one(".meta", Static)
        before = meta.content_size
        meta.update(text, layout=False)
        relayout_if_resized(meta, before)

    def with_next_frame(self, callback: Callable[[], object]) -> bool:
        """Run `callback` right after the next frame's write, if a frame is due: its screen
        update then happens with the frame's, not on its own. False when no frame is due."""
        if self._timer is None:
            return False
        self._after_frame.append(callback)
        return True

    async def finish(
        self, text: str, metrics: ReplyMetrics | None, state: MessageState = "done"
    ) -> None:
        """End the stream: write what is left. The streamed chunks stay when they show `text`
        already; otherwise the Markdown widget renders the whole reply once. So it does when a
        chunk cuts a code line at its edge: Textual's code block scrolls sideways to show it."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self._after_frame.clear()
        async with self._writing:
            await self._write_pending()
            streamed, self._live = self._live is not None, None
        self.data.content = text
        self.data.metrics = metrics
        self.data.state = state
        self._mark_state()
        flat = [chunk for chunk in self.chunks if isinstance(chunk, FlatMarkdown)]
        if not (streamed and self.source == text) or any(chunk.cuts_code for chunk in flat):
            self.full_updates += 1
            self.unfold_all()
            for chunk in flat:
                await chunk.remove()
            self.markdown.display = True
            await self.markdown.update(text)
        self.shown_chars = len(text)
        self.set_meta(reply_meta(metrics, state, self.data.versions))


def make_view(data: MessageData) -> MessageView:
    """The widget for `data`."""
    if data.role == "assistant":
        return AssistantMessage(data)
    if data.role == "user":
        return UserMessage(data)
    return SystemNote(data)


class ChatLog(OneLayoutPass, VerticalScroll):
    """The scrolling conversation. Only the last `window` messages are mounted at first.

    It stays anchored to the bottom (following a stream) until the user scrolls up.
    """

    DEFAULT_CSS = """
    ChatLog { height: 1fr; }
    ChatLog > #earlier { width: 100%; margin: 0 1; }
    """

    class EarlierLoaded(Message):
        """Older messages were mounted at the top."""

    def __init__(self, window: int = 60, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.window = window
        self.messages: list[MessageData] = []
        self._first_mounted = 0
        self._folded_width = 0

    @property
    def hidden_count(self) -> int:
        """How many older messages are not mounted."""
        return self._first_mounted

    def on_mount(self) -> None:
        self.anchor()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self.unfold_near(new_value - old_value)

    def on_resize(self, event: Resize) -> None:
        if event.size.width != self._folded_width:
            self._folded_width = event.size.width
            for message in self.query_children(AssistantMessage):
                message.unfold_all()

    def unfold_near(self, shift: float = 0) -> None:
        """Bring back folded chunks within a screen of the view, once the view has moved by
        `shift` lines (folds far above the view stay folded)."""
        view = self.content_region
        near = Region(view.x, view.y - view.height, view.width, view.height * 3)
        for fold in self.query(Fold):
            if fold.region.translate((0, -round(shift))).overlaps(near):
                fold.unfold()

    async def action_scroll_home(self) -> None:
        """Home: load the older messages first (if any are not mounted), then go to the top."""
        await self.load_earlier()
        self.scroll_home(animate=False)

    def _earlier_label(self) -> str:
        return f"▲ {self._first_mounted} earlier messages (click, or Home to load)"

    async def load(self, messages: list[MessageData]) -> None:
        """Show `messages` (a whole conversation), replacing what is shown."""
        self.messages = list(messages)
        self._first_mounted = max(0, len(self.messages) - self.window)
        with self.app.batch_update():
            await self.remove_children()
            views: list[Static | MessageView] = []
            if self._first_mounted:
                views.append(Button(self._earlier_label(), id="earlier", compact=True))
            views.extend(make_view(m) for m in self.messages[self._first_mounted :])
            if views:
                await self.mount_all(views)
        self.anchor()

    async def add(self, data: MessageData) -> MessageView:
        """Append a message at the bottom."""
        self.messages.append(data)
        view = make_view(data)
        await self.mount(view)
        return view

    async def remove_last(self, count: int = 1) -> None:
        """Remove the last `count` conversation messages (and the notes shown after them)."""
        views: list[MessageView] = []
        for view in reversed(list(self.query(MessageView))):
            if count <= 0:
                break
            views.append(view)
            if view.data.role != "system":
                count -= 1
        gone = {id(view.data) for view in views}
        self.messages = [m for m in self.messages if id(m) not in gone]
        for view in views:
            await view.remove()

    async def load_earlier(self, count: int | None = None) -> None:
        """Mount up to `count` (default: `window`) more of the older messages."""
        if not self._first_mounted:
            return
        count = count or self.window
        start = max(0, self._first_mounted - count)
        views = [make_view(m) for m in self.messages[start : self._first_mounted]]
        self._first_mounted = start
        button = self.query_one("#earlier", Button)
        await self.mount_all(views, after=button)
        if start:
            button.label = self._earlier_label()
        else:
            await button.remove()
        self.post_message(self.EarlierLoaded())

    async def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "earlier":
            event.stop()
            await self.load_earlier()

    def last_view(self, role: str | None = None) -> MessageView | None:
        """The last mounted message view (of `role`, if given)."""
        for view in reversed(list(self.query(MessageView))):
            if role is None or view.data.role == role:
                return view
        return None
