"""The chat screen: the conversation, the prompt input, the sidebar and the metrics panel."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import cast

from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, ProgressBar, Static

from app.chat_host import ChatHost
from app.export import export_markdown
from app.history import Conversation, Message, message_state
from app.reply_stream import ReplyStream
from app.screens.dialogs import ConfirmScreen, TextPromptScreen
from app.tui_store import metrics_from_dict
from engine.errors import LampchatError
from engine.types import SamplingParams
from engine.worker import Generation
from widgets.in_order_keys import LineInput
from widgets.messages import AssistantMessage, ChatLog, MessageData, MessageView, code_blocks
from widgets.metrics_panel import MetricsPanel
from widgets.prompt_input import PromptInput
from widgets.sidebar import ConversationSidebar, ConversationSummary

log = logging.getLogger(__name__)

PANEL_MIN_WIDTH = 110
"""Terminal columns from which the metrics panel (42) sits beside the chat; below, the chat
keeps the width and F4 lays the panel over it."""


def message_to_data(message: Message) -> MessageData:
    """How a stored message is shown."""
    role = message.role if message.role in ("user", "assistant") else "system"
    metrics = metrics_from_dict(message.metrics)
    if metrics is not None:  # the history file keeps model and backend on the message
        metrics.model = metrics.model or message.model or ""
        metrics.backend = metrics.backend or message.backend or ""
    total = len(message.alternatives) + 1
    versions = (message.choice + 1, total) if total > 1 else None
    return MessageData(role, message.content, metrics, message_state(message),  # type: ignore[arg-type]
                       versions=versions)


class ChatScreen(Screen[None]):
    """The main screen. Conversation state lives here; the engine and store live on the app."""

    BINDINGS = [
        Binding("escape", "stop", "Stop", show=False),
        Binding("ctrl+r", "regenerate", "Regenerate", show=False),
        Binding("ctrl+n", "new_chat", "New", tooltip="New conversation"),
        Binding("ctrl+b", "toggle_sidebar", "Chats", tooltip="Conversation list"),
        Binding("ctrl+l", "edit_last", "Edit last", show=False),
        Binding("ctrl+o", "copy_reply", "Copy reply", show=False),
        Binding("ctrl+t", "copy_code", "Copy code", show=False),
        # priority: the prompt input (a TextArea) binds F6 and Ctrl+E itself
        Binding("f6", "system_prompt", "System prompt", show=False, priority=True),
        Binding("ctrl+e", "export", "Export", show=False, priority=True),
        # the conversation scrolls from the keyboard while the input keeps the focus
        Binding("pageup", "scroll_log('page_up')", "Scroll up", show=False, priority=True),
        Binding("pagedown", "scroll_log('page_down')", "Scroll down", show=False,
                priority=True),
        Binding("ctrl+f", "find", "Find", show=False, priority=True),
        Binding("ctrl+home", "scroll_log('home')", "Top", show=False, priority=True),
        Binding("ctrl+end", "scroll_log('end')", "Bottom", show=False, priority=True),
    ]

    def __init__(self) -> None:
        super().__init__(id="chat")
        self.conversation: Conversation | None = None
        self.reply: ReplyStream | None = None
        """The reply streaming now (until it is saved)."""
        self._cursor_blink = True
        self._code_index = 0
        self._reply_index = 0
        self.panel_wanted = False
        """Whether the metrics panel sits beside the chat when the terminal is wide enough."""
        self.panel_overlay = False
        """Whether F4 opened the panel over the chat in a narrow terminal."""
        self._summaries: list[ConversationSummary] = []
        self._model_text = ""
        self._regenerations = 0
        """Regenerations of the last reply (each moves a fixed seed on by one)."""
        self._find_index = -1
        self._list_filter = ""
        """Ctrl+F in the conversation list: only conversations holding this text."""
        self.queued: str | None = None
        """A message sent while a reply streamed: sent when it ends (Esc takes it back)."""
        self._drafts: dict[str, str] = {}
        """Unsent input per conversation, restored when you come back to it."""

    @property
    def lampchat(self) -> ChatHost:
        """The app, as the chat screen uses it."""
        return cast(ChatHost, self.app)

    @property
    def generation(self) -> Generation | None:
        """The streaming reply's generation."""
        return self.reply.generation if self.reply is not None else None

    @property
    def reply_view(self) -> AssistantMessage | None:
        """The streaming reply's message widget."""
        return self.reply.view if self.reply is not None else None

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
                    yield Static("↓ more below · Ctrl+End", id="new-text", markup=False)
                    yield Static("", id="queued", markup=False)
                yield Static("", id="welcome", markup=False)
                yield ChatLog(window=app.options.log_window, id="log")
                with Horizontal(id="find-row"):
                    yield LineInput(placeholder="Find in this conversation (Enter/↑ older match "
                                    "· ↓ newer · Esc closes)", id="find", compact=True)
                    yield Static("", id="find-status", markup=False)
                yield PromptInput(
                    history=app.prompt_history_items(),
                    placeholder="Message (Enter sends · Ctrl+J new line · ↑ earlier prompts)",
                    id="prompt",
                )
            yield MetricsPanel(app.session, id="metrics-panel")
        yield Footer(compact=True)

    async def on_mount(self) -> None:
        self.query_one("#sidebar").display = False
        self.panel_wanted = self.lampchat.options.show_metrics
        self.place_metrics_panel()
        self.query_one("#new-text").display = False
        self.query_one("#queued").display = False
        self.query_one("#find-row").display = False
        log_view = self.chat_log
        self.watch(log_view, "scroll_y", self._scrolled, init=False)
        self.watch(log_view, "virtual_size", self._scrolled, init=False)
        self.show_loading(None)
        self.prompt.focus()
        await self.lampchat.chat_ready(self)

    def on_resize(self) -> None:
        self.place_metrics_panel()

    @property
    def wide(self) -> bool:
        """Whether the metrics panel fits beside the chat (`PANEL_MIN_WIDTH` columns)."""
        return self.size.width >= PANEL_MIN_WIDTH

    def place_metrics_panel(self) -> None:
        """Beside the chat when wide enough and wanted; in a narrower terminal hidden, or over
        the chat when F4 asked for it."""
        panel = self.metrics_panel
        panel.set_class(not self.wide, "-overlay")
        panel.display = self.panel_wanted if self.wide else self.panel_overlay

    def toggle_metrics_panel(self) -> bool:
        """F4: show or hide the panel (beside the chat, or over it when narrow); returns
        whether it is shown now."""
        if self.wide:
            self.panel_wanted = not self.panel_wanted
        else:
            self.panel_overlay = not self.panel_overlay
        self.place_metrics_panel()
        return bool(self.metrics_panel.display)

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
        self._model_text = text
        self.refresh_welcome()

    def refresh_welcome(self) -> None:
        """The welcome line: shown over an empty conversation, saying what is loaded and
        where to go next."""
        welcome = self.query_one("#welcome", Static)
        empty = self.conversation is None or not self.conversation.messages
        welcome.display = empty
        if empty:
            model = self._model_text.split(" · ")[0] if self._model_text else ""
            now = f"Chatting with {model}." if model and model != "no model loaded" else \
                "No model is loaded yet."
            welcome.update(f"{now} F2 switches the model · Ctrl+B your conversations · "
                           "F1 help and keys")

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
        """Make `conversation` the current one and show it (keeping the input's unsent text
        with the one left, and bringing back this one's)."""
        if self.conversation is not None and self.conversation.id != conversation.id:
            self._drafts[self.conversation.id] = self.prompt.text
            self.prompt.load_text(self._drafts.pop(conversation.id, ""))
        self.conversation = conversation
        self._code_index = self._reply_index = 0
        self.lampchat.store.mirror(conversation)
        await self.chat_log.load([message_to_data(m) for m in conversation.messages])
        self.refresh_welcome()
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
        if self._list_filter:
            try:
                keep = self.lampchat.store.search(self._list_filter)
            except LampchatError as exc:
                self.notify(str(exc), severity="error")
                keep = {s.id for s in summaries}
            summaries = [s for s in summaries if s.id in keep]
        sidebar = self.query_one(ConversationSidebar)
        sidebar.query_one(".title", Static).update(Text(
            f"Matching {self._list_filter!r}" if self._list_filter else "Conversations"))
        current = self.conversation.id if self.conversation else None
        self._summaries = summaries
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
        if self.generating and self.queued is None:  # sent when the reply ends
            self.prompt.add_to_history(text)
            self.lampchat.remember_prompt(text)
            self.prompt.clear()
            self._set_queued(text)
            return
        if not self.ready_to_send():
            return
        self.prompt.add_to_history(text)
        self.lampchat.remember_prompt(text)
        self.prompt.clear()
        await self.send(text)

    def _set_queued(self, text: str | None) -> None:
        self.queued = text
        label = self.query_one("#queued", Static)
        label.display = text is not None
        if text is not None:
            short = text if len(text) <= 24 else text[:23] + "…"
            label.update(f"queued: {short!r} · Esc takes it back")

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
        self._regenerations = 0
        self._store_append(Message("user", text))
        self.refresh_welcome()
        await self.chat_log.add(MessageData("user", text))
        if self.query_one("#sidebar").display:
            await self.refresh_sidebar()
        await self.start_reply()

    async def start_reply(self, sampling: SamplingParams | None = None,
                          alternatives: Sequence[Message] = ()) -> bool:
        """Stream a reply to the conversation as it stands (`sampling`: the host's;
        `alternatives`: the earlier versions of the reply it replaces). False when it could
        not start (a toast said why)."""
        assert self.conversation is not None
        reply = await ReplyStream.start(self.lampchat, self, self.conversation, self.chat_log,
                                        self.metrics_panel, sampling=sampling,
                                        alternatives=alternatives)
        if reply is None:
            return False
        reply.on_saved = self._reply_saved
        self.reply = reply
        self._code_index = self._reply_index = 0
        # a blinking cursor is a screen update twice a second, each taking a slice of the CPU
        # a local model decodes on; it holds still while the reply streams
        self._cursor_blink = self.prompt.cursor_blink
        self.prompt.cursor_blink = False
        self.stream_reply(reply)
        return True

    @work(group="reply", exit_on_error=False)
    async def stream_reply(self, reply: ReplyStream) -> None:
        """Run the reply; the prompt's cursor blinks again once it is finished."""
        try:
            await reply.run()
        finally:
            self.prompt.cursor_blink = self._cursor_blink

    def _reply_saved(self) -> None:
        self.reply = None
        if self.queued is not None:  # the message sent while it streamed
            text = self.queued
            self._set_queued(None)
            self.call_later(self.send, text)

    async def wait_for_reply(self) -> None:
        """Wait until the running reply (if any) has finished."""
        for worker in list(self.workers):
            if worker.group == "reply":
                await worker.wait()

    # ---------------------------------------------------------------- actions

    def action_scroll_log(self, where: str) -> None:
        """PageUp/PageDown/Ctrl+Home/Ctrl+End: scroll the conversation; scrolled up, the view
        stops following a streaming reply until it is at the bottom again."""
        log_view = self.chat_log
        if where == "page_up":
            log_view.scroll_page_up(animate=False)
        elif where == "page_down" and log_view.max_scroll_y - log_view.scroll_y > \
                log_view.size.height:
            log_view.scroll_page_down(animate=False)
        elif where == "home":
            log_view.scroll_home(animate=False)
        else:  # the end, or a page down that reaches it: follow the stream again
            log_view.scroll_end(animate=False)
            log_view.anchor()

    # ------------------------------------------------------------------ find

    def action_find(self) -> None:
        """Ctrl+F: the find bar over the input; in the conversation list, a search of every
        conversation (an empty one shows them all again)."""
        sidebar = self.query_one(ConversationSidebar)
        if sidebar.display and self.focused is not None and sidebar in self.focused.ancestors:
            async def done(text: str | None) -> None:
                if text is not None:
                    self._list_filter = text.strip()
                    await self.refresh_sidebar()
                    sidebar.list_view.focus()

            self.app.push_screen(TextPromptScreen("Find in all conversations (empty: show all)",
                                                  self._list_filter, action="finds"), done)
            return
        self.query_one("#find-row").display = True
        self.query_one("#find", Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "find":
            event.stop()
            self._find(event.value, 0, restart=True)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "find":
            event.stop()
            self._find(event.value, 1)

    def on_key(self, event: events.Key) -> None:
        find = self.query_one("#find", Input)
        if self.focused is not find:
            return
        if event.key == "escape":
            event.stop()
            self._close_find()
        elif event.key == "up":  # older, as Enter
            event.stop()
            self._find(find.value, 1)
        elif event.key in ("down", "shift+enter"):  # newer
            event.stop()
            self._find(find.value, -1)

    def _close_find(self) -> None:
        self.query_one("#find-row").display = False
        for view in self.chat_log.query(MessageView):
            view.remove_class("-match", "-current-match")
        self._find_index = -1
        self.prompt.focus()

    def _find(self, text: str, step: int, restart: bool = False) -> None:
        """Mark the messages holding `text` (any case) and go to the next older one (`step`
        1), the next newer (-1) or, after an edit, the newest; say which it is."""
        views = [v for v in self.chat_log.query(MessageView) if v.data.role != "system"]
        needle = text.strip().casefold()
        hits = [v for v in views if needle and needle in v.data.content.casefold()]
        for view in views:
            view.set_class(view in hits, "-match")
            view.remove_class("-current-match")
        status = self.query_one("#find-status", Static)
        if not hits:
            self._find_index = -1
            status.update("no match" if needle else "")
            return
        if restart or not 0 <= self._find_index < len(hits):
            self._find_index = len(hits) - 1  # the newest first
        else:
            self._find_index = (self._find_index - step) % len(hits)
        current = hits[self._find_index]
        current.add_class("-current-match")
        self.chat_log.scroll_to_widget(current, animate=False, top=True)
        status.update(f"{len(hits) - self._find_index} of {len(hits)}")

    def _scrolled(self) -> None:
        """The "new text below" marker: shown while the view is not at the bottom and there is
        text under it."""
        log_view = self.chat_log
        self.query_one("#new-text").display = log_view.max_scroll_y - log_view.scroll_y > 1

    def action_stop(self) -> None:
        """Stop the reply (its partial text stays, marked as stopped) and give back a queued
        message to the input; with no reply, Esc clears the input (Ctrl+Z brings it back)."""
        if self.generation is not None:
            if self.queued is not None:
                if not self.prompt.text.strip():
                    self.prompt.load_text(self.queued)
                self._set_queued(None)
            self.generation.cancel()
        elif self.focused is self.prompt and self.prompt.text:
            self.prompt.clear()  # an edit like any other: Ctrl+Z undoes it
            return
        elif self.query_one("#sidebar").display and self.focused is not self.prompt:
            self.query_one("#sidebar").display = False
        self.prompt.focus()

    async def action_regenerate(self) -> None:
        """Replace the last reply with a new one; the earlier ones stay as its other versions
        (< and > on the focused reply flip between them)."""
        if self.conversation is None or not self.ready_to_send():
            return
        turns = self.conversation.messages
        if not any(t.role == "user" for t in turns):
            self.notify("Nothing to regenerate yet.", severity="warning")
            return
        previous = turns[-1] if turns[-1].role == "assistant" else None
        if previous is not None:
            self._store_truncate(len(turns) - 1)
            await self.chat_log.remove_last(1)
        sampling = self.lampchat.sampling()
        if sampling.seed is not None:  # a fixed seed would give the same reply again
            self._regenerations += 1
            seed = (sampling.seed + self._regenerations) % 2**32
            self.notify(f"Regenerating with seed {seed}: the configured seed "
                        f"{sampling.seed} would repeat the same reply.")
            sampling = replace(sampling, seed=seed)
        versions = previous.versions() if previous is not None else []
        if not await self.start_reply(sampling, versions) and previous is not None:
            self._store_append(previous)  # nothing replaces it: it stays as it was
            await self.chat_log.add(message_to_data(previous))

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
        """Copy the last reply to the clipboard (OSC 52); press again for the one before."""
        replies = [t.content for t in (self.conversation.messages if self.conversation else [])
                   if t.role == "assistant" and t.content]
        if not replies:
            self.notify("No reply to copy yet.", severity="warning")
            return
        index = len(replies) - 1 - (self._reply_index % len(replies))
        self._reply_index += 1
        self.app.copy_to_clipboard(replies[index])
        self.notify(f"Copied reply {index + 1} of {len(replies)} "
                    f"({len(replies[index])} characters).")

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

        self.app.push_screen(TextPromptScreen("Export this conversation to Markdown", default,
                                              action="exports"),
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
                             conversation.title or conversation.auto_title(), required=True),
            done,
        )

    def on_conversation_sidebar_delete(self, event: ConversationSidebar.Delete) -> None:
        event.stop()
        conversation_id = event.conversation_id

        async def done(yes: bool | None) -> None:
            if not yes:
                return
            kv_store = self.lampchat.engine.kv_store
            if kv_store is not None:  # its saved KV state goes with it
                kv_store.delete(conversation_id)
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

        title = next((c.title for c in self._summaries if c.id == conversation_id), "")
        question = f"Delete the conversation {title or '(untitled)'!r}? This cannot be undone."
        self.app.push_screen(ConfirmScreen(question, "Delete", "Keep", safe_default=True), done)

    # ------------------------------------------------------- any message (focus ring)

    async def on_message_view_act(self, event: MessageView.Act) -> None:
        """c / t / e / d on a focused message: copy it, copy its code, edit and resend from
        it (the earlier branch is kept as its own conversation), delete it; Esc: back."""
        event.stop()
        view, action = event.view, event.action
        if action == "leave":
            self.prompt.focus()
            return
        if action == "copy":
            self.app.copy_to_clipboard(view.data.content)
            self.notify("Message copied.", timeout=2)
            return
        if action == "code":
            blocks = code_blocks(view.data.content)
            if not blocks:
                self.notify("This message has no code block.", severity="warning")
                return
            self.app.copy_to_clipboard("\n\n".join(blocks))
            self.notify(f"{len(blocks)} code block(s) copied.", timeout=2)
            return
        if self.generating or self.conversation is None:
            self.notify("A reply is streaming; Esc stops it first.", severity="warning")
            return
        index = self._conversation_index(view)
        if index is None:
            return
        if action in ("previous", "next"):
            await self._choose_version(view, index, -1 if action == "previous" else 1)
            return
        messages = list(self.conversation.messages)
        if action == "edit":
            if messages[index].role != "user":
                self.notify("Only your own messages can be edited; Ctrl+R regenerates a reply.",
                            severity="warning")
                return
            if index < len(messages) - 1:  # the conversation as it was stays in the list
                self._keep_branch(messages)
            self._store_truncate(index)
            await self.show_conversation(self.conversation)
            self.prompt.load_text(messages[index].content)
            self.prompt.focus()
            self.notify("Edit the message and press Enter to send it again.", timeout=4)
        elif action == "delete":
            self._store_truncate(index)
            for message in messages[index + 1 :]:
                self._store_append(message)
            await self.show_conversation(self.conversation)
            self.prompt.focus()

    async def _choose_version(self, view: MessageView, index: int, step: int) -> None:
        """Show the reply's previous or next version (< and >): the conversation continues
        from the one shown, and the file records the choice."""
        assert self.conversation is not None
        message = self.conversation.messages[index]
        if not message.alternatives:
            if message.role == "assistant":
                self.notify("This reply has one version; Ctrl+R writes another.", timeout=3)
            return
        if index != len(self.conversation.messages) - 1:
            self.notify("Only the last reply's version can be changed: later messages "
                        "followed this one.", severity="warning")
            return
        choice = message.choice + step
        if not 0 <= choice <= len(message.alternatives):
            return
        message.choose(choice)
        self._store_truncate(index)
        self._store_append(message)
        data = message_to_data(message)
        view.data.versions = data.versions
        if isinstance(view, AssistantMessage):
            await view.finish(data.content, data.metrics, data.state)
        view.focus()

    def _conversation_index(self, view: MessageView) -> int | None:
        """The conversation's index of the message `view` shows."""
        count = 0
        for data in self.chat_log.messages:
            if data is view.data:
                return count if count < len(self.conversation.messages) else None
            if data.role != "system":
                count += 1
        return None

    def _keep_branch(self, messages: list[Message]) -> None:
        """Save the conversation as it is now as a conversation of its own."""
        try:
            store = self.lampchat.store
            copy = store.new(self.conversation.system_prompt if self.conversation else "")
            for message in messages:
                store.append(copy, message)
            title = (self.conversation.title or self.conversation.auto_title()) if \
                self.conversation else "conversation"
            store.rename(copy, f"{title} (before an edit)")
        except LampchatError as exc:
            self.notify(f"could not keep the earlier branch: {exc}", severity="error")

    def on_chat_log_earlier_loaded(self, event: ChatLog.EarlierLoaded) -> None:
        event.stop()
