"""The chat screen: the conversation, the prompt input, the sidebar and the metrics panel."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, cast

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, ProgressBar, Static

from app.export import export_markdown
from app.history import Conversation, Message
from app.screens.dialogs import ConfirmScreen, TextPromptScreen
from app.tui_store import message_state, metrics_from_dict
from engine.errors import LampchatError
from engine.types import ReplyMetrics
from engine.worker import Generation
from widgets.frame_pacer import FRAME_S, LOCAL_CPU_BUDGET
from widgets.messages import (
    AssistantMessage,
    ChatLog,
    MessageData,
    MessageState,
    code_blocks,
    format_tps,
)
from widgets.metrics_panel import MetricsPanel
from widgets.prompt_input import PromptInput
from widgets.sidebar import ConversationSidebar, ConversationSummary

if TYPE_CHECKING:
    from app.tui import LampchatApp

log = logging.getLogger(__name__)

LIVE_REFRESH_S = 0.25
"""How often the live metrics (under the streaming reply, in the panel) are redrawn."""

REPAINT_AFTER_REPLY_S = 0.2
"""The whole screen is drawn again this long after a reply ends."""

LOCAL_BACKENDS = frozenset({"llama.cpp", "native", "onnx", "mlx"})
"""Backends that decode on this machine. On its CPU, whatever the UI thread does takes CPU from
the decode, so a reply's frames keep to a CPU budget, and the two below apply."""

LOCAL_WAKE_S = FRAME_S
"""Decoding on this machine's CPU: the engine wakes the UI for new tokens at most this often,
not for each token. Frames come no more often than this, so waking the UI more often would only
cost it CPU (every 0.05 s instead: TUI/ask decode about 0.01 lower, benchmarks/tui_vs_ask.py)."""

LOCAL_PANEL_REFRESH_S = 1.0
"""Decoding on this machine's CPU: how often the metrics panel is redrawn while a reply streams
(the live line under the reply still changes every `LIVE_REFRESH_S`)."""


def message_to_data(message: Message) -> MessageData:
    """How a stored message is shown."""
    role = message.role if message.role in ("user", "assistant") else "system"
    return MessageData(role, message.content, metrics_from_dict(message.metrics),  # type: ignore[arg-type]
                       message_state(message))  # type: ignore[arg-type]


class ChatScreen(Screen[None]):
    """The main screen. Conversation state lives here; the engine and store live on the app."""

    BINDINGS = [
        Binding("escape", "stop", "Stop"),
        Binding("ctrl+r", "regenerate", "Regenerate"),
        Binding("ctrl+n", "new_chat", "New chat"),
        Binding("ctrl+b", "toggle_sidebar", "Chats"),
        Binding("ctrl+l", "edit_last", "Edit last", show=False),
        Binding("ctrl+o", "copy_reply", "Copy reply", show=False),
        Binding("ctrl+t", "copy_code", "Copy code", show=False),
        # priority: the prompt input (a TextArea) binds F6 and Ctrl+E itself
        Binding("f6", "system_prompt", "System prompt", show=False, priority=True),
        Binding("ctrl+e", "export", "Export", show=False, priority=True),
    ]

    def __init__(self) -> None:
        super().__init__(id="chat")
        self.conversation: Conversation | None = None
        self.generation: Generation | None = None
        self.reply_view: AssistantMessage | None = None
        self._live_timer: Timer | None = None
        self._cursor_blink = True
        self._live_ticks = 0
        self._panel_every = 1
        """The panel is redrawn every this many live refreshes."""
        self._code_index = 0

    @property
    def lampchat(self) -> LampchatApp:
        """The app, typed."""
        return cast("LampchatApp", self.app)

    # ----------------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        app = self.lampchat
        with Horizontal(id="body"):
            yield ConversationSidebar(id="sidebar")
            with Vertical(id="main"):
                with Horizontal(id="statusbar"):
                    yield Static("no model loaded", id="model-label", markup=False)
                    yield ProgressBar(total=1.0, show_eta=False, id="load-progress")
                    yield Static("", id="load-label", markup=False)
                yield ChatLog(window=app.options.log_window, id="log")
                yield PromptInput(
                    history=app.prompt_history_items(),
                    placeholder="Message (Enter sends · Ctrl+J new line · ↑ earlier prompts)",
                    id="prompt",
                )
            yield MetricsPanel(app.session, id="metrics-panel")
        yield Footer()

    async def on_mount(self) -> None:
        self.query_one("#sidebar").display = False
        self.query_one("#metrics-panel").display = self.lampchat.options.show_metrics
        self.show_loading(None)
        self.prompt.focus()
        await self.lampchat.chat_ready(self)

    @property
    def prompt(self) -> PromptInput:
        """The prompt input."""
        return self.query_one("#prompt", PromptInput)

    @property
    def chat_log(self) -> ChatLog:
        """The conversation view."""
        return self.query_one("#log", ChatLog)

    @property
    def metrics_panel(self) -> MetricsPanel:
        """The F4 panel."""
        return self.query_one("#metrics-panel", MetricsPanel)

    @property
    def generating(self) -> bool:
        """Whether a reply is streaming."""
        return self.generation is not None

    # ----------------------------------------------------------- status bar

    def set_model_label(self, text: str) -> None:
        """Show what is loaded."""
        self.query_one("#model-label", Static).update(text)

    def show_loading(self, fraction: float | None, what: str = "") -> None:
        """Show model-load progress (None hides it)."""
        bar = self.query_one("#load-progress", ProgressBar)
        label = self.query_one("#load-label", Static)
        bar.display = label.display = fraction is not None
        if fraction is not None:
            bar.update(progress=fraction)
            label.update(what)

    # ---------------------------------------------------------- conversations

    async def show_conversation(self, conversation: Conversation) -> None:
        """Make `conversation` the current one and show it."""
        self.conversation = conversation
        self._code_index = 0
        self.lampchat.store.mirror(conversation)
        await self.chat_log.load([message_to_data(m) for m in conversation.messages])
        if self.query_one("#sidebar").display:
            await self.refresh_sidebar()

    async def refresh_sidebar(self) -> None:
        """Reload the conversation list."""
        try:
            conversations = self.lampchat.store.list()
        except LampchatError as exc:
            self.notify(str(exc), severity="error")
            return
        summaries = [
            ConversationSummary(
                c.id, c.title, self.lampchat.format_time(c.updated), c.n_messages, c.problem
            )
            for c in conversations
        ]
        current = self.conversation.id if self.conversation else None
        await self.query_one(ConversationSidebar).show(summaries, current)

    def _store_append(self, message: Message) -> None:
        assert self.conversation is not None
        try:
            self.lampchat.store.append(self.conversation, message)
        except LampchatError as exc:
            self.notify(f"could not save the message: {exc}", severity="error")
            if not self.conversation.messages or self.conversation.messages[-1] is not message:
                self.conversation.messages.append(message)

    def _store_truncate(self, n_messages: int) -> None:
        assert self.conversation is not None
        try:
            self.lampchat.store.truncate(self.conversation, n_messages)
        except LampchatError as exc:
            self.notify(f"could not save the conversation: {exc}", severity="error")
            del self.conversation.messages[n_messages:]

    # ---------------------------------------------------------------- sending

    async def on_prompt_input_submitted(self, event: PromptInput.Submitted) -> None:
        event.stop()
        text = event.text
        if not text.strip():
            return
        if text.lstrip().startswith("/"):
            self.prompt.add_to_history(text)
            self.lampchat.remember_prompt(text)
            self.prompt.clear()
            await self.lampchat.run_slash(text.strip())
            return
        if not self.ready_to_send():
            return
        self.prompt.add_to_history(text)
        self.lampchat.remember_prompt(text)
        self.prompt.clear()
        await self.send(text)

    def ready_to_send(self) -> bool:
        """Whether a new reply can start now (if not, say why)."""
        if self.generating:
            self.notify("A reply is streaming; Esc stops it.", severity="warning")
            return False
        if self.lampchat.loading:
            self.notify("The model is still loading.", severity="warning")
            return False
        if self.lampchat.engine.info is None:
            self.notify("No model is loaded; F2 picks one.", severity="warning")
            return False
        return True

    async def send(self, text: str) -> None:
        """Add `text` as the user's message and start the reply."""
        assert self.conversation is not None
        self._store_append(Message("user", text))
        await self.chat_log.add(MessageData("user", text))
        if self.query_one("#sidebar").display:
            await self.refresh_sidebar()
        await self.start_reply()

    async def start_reply(self) -> None:
        """Stream a reply to the conversation as it stands."""
        assert self.conversation is not None
        messages = self.conversation.chat_messages()
        info = self.lampchat.engine.info
        local_cpu = info is not None and info.backend in LOCAL_BACKENDS and info.device == "cpu"
        try:
            generation = self.lampchat.engine.generate(
                messages, self.lampchat.sampling(), LOCAL_WAKE_S if local_cpu else 0.0)
        except (ValueError, LampchatError) as exc:
            self.notify(f"cannot start a reply: {exc}", severity="error")
            return
        self.chat_log.anchor()  # a new reply is followed again, even after scrolling up
        view = cast(AssistantMessage, await self.chat_log.add(MessageData("assistant", "")))
        view.start_stream(LOCAL_CPU_BUDGET if local_cpu else None)
        self._panel_every = round(LOCAL_PANEL_REFRESH_S / LIVE_REFRESH_S) if local_cpu else 1
        self._live_ticks = 0
        self.generation = generation
        self.reply_view = view
        self._code_index = 0
        try:
            self.lampchat.store.begin_reply(
                self.conversation, info.name if info else "", info.backend if info else ""
            )
        except LampchatError as exc:
            self.notify(f"could not save the reply: {exc}", severity="warning")
        session = self.lampchat.session
        session.start_reply()
        self._live_timer = self.set_interval(LIVE_REFRESH_S, self._refresh_live)
        self.lampchat.gc_pause.hold()
        # a blinking cursor is a screen update twice a second, each taking a slice of the CPU
        # a local model decodes on; it holds still while the reply streams
        self._cursor_blink = self.prompt.cursor_blink
        self.prompt.cursor_blink = False
        self.stream_reply(generation, view)

    @work(group="reply", exit_on_error=False)
    async def stream_reply(self, generation: Generation, view: AssistantMessage) -> None:
        """Feed the reply's pieces to its view (coalesced there per frame), then finish it.
        The prompt's cursor blinks again once the reply is finished; full garbage collections
        wait until the finished reply is on screen."""
        try:
            await self._stream_reply(generation, view)
        finally:
            self.prompt.cursor_blink = self._cursor_blink
            self.call_after_refresh(self.lampchat.gc_pause.release)

    async def _stream_reply(self, generation: Generation, view: AssistantMessage) -> None:
        session = self.lampchat.session
        store = self.lampchat.store
        conversation = self.conversation
        assert conversation is not None
        failure: str | None = None
        try:
            async for piece in generation:
                view.feed(piece.text)
                session.tokens(piece.n_tokens)
                store.update_partial(conversation, generation.text)
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
        await view.finish(generation.text, metrics, state)
        try:
            message = store.finish_reply(conversation, generation.text, metrics, state != "done")
        except LampchatError as exc:
            self.notify(f"could not save the reply: {exc}", severity="error")
            message = None
        if message is None:  # saving failed: keep it in memory at least
            conversation.messages.append(Message(
                "assistant", generation.text, metrics=metrics.to_dict() if metrics else None,
                interrupted=state != "done"))
        self.generation = None
        self.reply_view = None
        session.finish_reply(metrics)
        self.lampchat.reply_finished(metrics)
        if error:
            self.notify(error, title="Reply failed", severity="error")
        self.metrics_panel.refresh_metrics()
        # Frames repaint only what changed; once the reply is over (and its last frame is on
        # screen), the whole screen is drawn again, so that nothing a frame left behind (a lost
        # write, a stale line) outlives it.
        self.set_timer(REPAINT_AFTER_REPLY_S, self.refresh)

    def _refresh_live(self) -> None:
        """Every `LIVE_REFRESH_S` while a reply streams: the panel now (or every
        `LOCAL_PANEL_REFRESH_S`), and the live metrics line under the reply with the reply's
        next frame when one is due.

        The line lies next to the text the frame draws, so drawing both is one small update.
        The panel is drawn on its own: a screen update redraws the box around everything that
        changed, and a box from the panel to the reply would be most of the screen."""
        session = self.lampchat.session
        self._live_ticks += 1
        if self.metrics_panel.display and (self._live_ticks - 1) % self._panel_every == 0:
            session.sample_rss()
            self.metrics_panel.refresh_metrics()
        view = self.reply_view
        if view is not None and view.with_next_frame(self._draw_live):
            return
        self._draw_live()

    def _draw_live(self) -> None:
        session = self.lampchat.session
        if self.reply_view is not None:
            ttft = session.live_ttft_ms
            text = "waiting for the first token…" if ttft is None else (
                f"streaming · {session.live_tokens} tokens · {format_tps(session.live_tps)}"
            )
            self.reply_view.set_meta(text)

    async def wait_for_reply(self) -> None:
        """Wait until the running reply (if any) has finished."""
        for worker in list(self.workers):
            if worker.group == "reply":
                await worker.wait()

    # ---------------------------------------------------------------- actions

    def action_stop(self) -> None:
        """Stop the reply; its partial text stays, marked as stopped."""
        if self.generation is not None:
            self.generation.cancel()
        elif self.query_one("#sidebar").display and self.focused is not self.prompt:
            self.query_one("#sidebar").display = False
        self.prompt.focus()

    async def action_regenerate(self) -> None:
        """Replace the last reply with a new one."""
        if self.conversation is None or not self.ready_to_send():
            return
        turns = self.conversation.messages
        if not any(t.role == "user" for t in turns):
            self.notify("Nothing to regenerate yet.", severity="warning")
            return
        if turns[-1].role == "assistant":
            self._store_truncate(len(turns) - 1)
            await self.chat_log.remove_last(1)
        await self.start_reply()

    async def action_edit_last(self) -> None:
        """Put the last prompt back in the input, and drop it and its reply."""
        if self.conversation is None:
            return
        if self.generating:
            self.notify("A reply is streaming; Esc stops it.", severity="warning")
            return
        turns = self.conversation.messages
        index = next((i for i in range(len(turns) - 1, -1, -1) if turns[i].role == "user"), None)
        if index is None:
            self.notify("No message to edit yet.", severity="warning")
            return
        text = turns[index].content
        removed = len(turns) - index
        self._store_truncate(index)
        await self.chat_log.remove_last(removed)
        self.prompt.set_prompt(text)
        self.prompt.focus()
        self.notify("Edit the message, then Enter to resend.")

    def _last_reply(self) -> str | None:
        if self.conversation is None:
            return None
        return next(
            (t.content for t in reversed(self.conversation.messages) if t.role == "assistant"), None
        )

    def action_copy_reply(self) -> None:
        """Copy the last reply to the clipboard (OSC 52)."""
        reply = self._last_reply()
        if not reply:
            self.notify("No reply to copy yet.", severity="warning")
            return
        self.app.copy_to_clipboard(reply)
        self.notify(f"Copied the last reply ({len(reply)} characters).")

    def action_copy_code(self) -> None:
        """Copy a code block of the last reply; press again for the one before it."""
        blocks = code_blocks(self._last_reply() or "")
        if not blocks:
            self.notify("The last reply has no code block.", severity="warning")
            return
        index = len(blocks) - 1 - (self._code_index % len(blocks))
        self._code_index += 1
        self.app.copy_to_clipboard(blocks[index])
        self.notify(f"Copied code block {index + 1} of {len(blocks)}.")

    async def action_new_chat(self) -> None:
        """Start a new conversation (the current one stays in the list)."""
        if self.generation is not None:
            self.generation.cancel()
            await self.wait_for_reply()
        try:
            conversation = self.lampchat.store.new(self.lampchat.default_system_prompt())
        except LampchatError as exc:
            self.notify(str(exc), severity="error")
            return
        await self.show_conversation(conversation)
        self.prompt.focus()

    async def action_toggle_sidebar(self) -> None:
        """Show or hide the conversation list."""
        sidebar = self.query_one(ConversationSidebar)
        sidebar.display = not sidebar.display
        if sidebar.display:
            await self.refresh_sidebar()
            sidebar.list_view.focus()
        else:
            self.prompt.focus()

    def action_system_prompt(self) -> None:
        """Edit this conversation's system prompt."""
        if self.conversation is None:
            return
        current = self.conversation.system_prompt

        async def done(value: str | None) -> None:
            if value is not None and self.conversation is not None:
                await self.set_system_prompt(value)

        self.app.push_screen(
            TextPromptScreen("System prompt for this conversation", current, multiline=True), done
        )

    def action_export(self) -> None:
        """Export this conversation to a Markdown file (asks for the path)."""
        conversation = self.conversation
        if conversation is None or not conversation.messages:
            self.notify("Nothing to export yet.", severity="warning")
            return
        default = str(Path.cwd() / f"lampchat-{conversation.id}.md")

        def done(value: str | None) -> None:
            if value is None or not value.strip() or conversation is None:
                return
            try:
                written = export_markdown(conversation, value.strip())
            except LampchatError as exc:
                self.notify(str(exc), title="Not exported", severity="error")
                return
            self.notify(f"Exported to {written}.")

        self.app.push_screen(TextPromptScreen("Export this conversation to Markdown", default),
                             done)

    async def set_system_prompt(self, text: str) -> None:
        """Set this conversation's system prompt (it applies from the next reply)."""
        assert self.conversation is not None
        try:
            self.lampchat.store.set_system_prompt(self.conversation, text.strip())
        except LampchatError as exc:
            self.notify(str(exc), severity="error")
        await self.add_note(
            f"System prompt set: {text.strip()}" if text.strip() else "System prompt cleared."
        )

    async def add_note(self, text: str) -> None:
        """Show a note from Lampchat in the log (not part of the conversation)."""
        await self.chat_log.add(MessageData("system", text))

    # ---------------------------------------------------------------- sidebar

    async def on_conversation_sidebar_open(self, event: ConversationSidebar.Open) -> None:
        event.stop()
        if isinstance(event, ConversationSidebar.Rename | ConversationSidebar.Delete):
            return
        if self.generating:
            self.notify("A reply is streaming; Esc stops it first.", severity="warning")
            return
        try:
            conversation = self.lampchat.store.get(event.conversation_id)
        except (LampchatError, KeyError) as exc:
            self.notify(f"cannot open that conversation: {exc}", severity="error")
            return
        await self.show_conversation(conversation)
        self.prompt.focus()

    def on_conversation_sidebar_rename(self, event: ConversationSidebar.Rename) -> None:
        event.stop()
        store = self.lampchat.store
        try:
            conversation = store.get(event.conversation_id)
        except (LampchatError, KeyError) as exc:
            self.notify(str(exc), severity="error")
            return

        async def done(title: str | None) -> None:
            if title is None or not title.strip():
                return
            try:
                store.rename(conversation, title.strip())
            except LampchatError as exc:
                self.notify(str(exc), severity="error")
            await self.refresh_sidebar()

        self.app.push_screen(
            TextPromptScreen("Rename conversation",
                             conversation.title or conversation.auto_title()),
            done,
        )

    def on_conversation_sidebar_delete(self, event: ConversationSidebar.Delete) -> None:
        event.stop()
        conversation_id = event.conversation_id

        async def done(yes: bool | None) -> None:
            if not yes:
                return
            if self.conversation is not None and self.conversation.id == conversation_id:
                if self.generating:
                    self.notify("A reply is streaming; Esc stops it first.", severity="warning")
                    return
                try:
                    self.lampchat.store.delete(conversation_id)
                except LampchatError as exc:
                    self.notify(str(exc), severity="error")
                await self.action_new_chat()
            else:
                try:
                    self.lampchat.store.delete(conversation_id)
                except LampchatError as exc:
                    self.notify(str(exc), severity="error")
            await self.refresh_sidebar()

        self.app.push_screen(ConfirmScreen("Delete this conversation?", "Delete", "Keep"), done)

    def on_chat_log_earlier_loaded(self, event: ChatLog.EarlierLoaded) -> None:
        event.stop()
