"""What the command palette and chat commands do in the TUI.

`palette_commands` lists Lampchat's actions for the command palette; `run_slash_line` runs a
`/command` typed in the chat input (parsed and checked by `app.slash`) and applies its result to
the app: a new conversation, a setting, a model to load.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from textual.app import SystemCommand

from app.history import Conversation
from app.options import ModelSpec
from app.slash import SlashContext, run_slash
from engine.errors import LampchatError

log = logging.getLogger(__name__)


def palette_commands(app: Any) -> Iterable[SystemCommand]:
    """The command palette's entries for Lampchat's actions (Ctrl+P); `app` is the
    `LampchatApp` (typed loosely: the app imports this module)."""
    chat = app.chat
    actions: list[tuple[str, str, Callable[[], Any]]] = [
        ("New chat", "Start a new conversation (Ctrl+N)", chat.action_new_chat),
        ("Stop reply", "Stop the streaming reply (Esc)", chat.action_stop),
        ("Regenerate reply", "Replace the last reply (Ctrl+R)", chat.action_regenerate),
        ("Edit last message", "Edit and resend the last message (Ctrl+L)",
         chat.action_edit_last),
        ("Copy last reply", "Copy the last reply to the clipboard (Ctrl+O)",
         chat.action_copy_reply),
        ("Copy code block", "Copy a code block of the last reply (Ctrl+T)",
         chat.action_copy_code),
        ("Conversations", "Show or hide the conversation list (Ctrl+B)",
         chat.action_toggle_sidebar),
        ("System prompt", "Edit this conversation's system prompt (F6)",
         chat.action_system_prompt),
        ("Export to Markdown", "Write this conversation as a Markdown file (Ctrl+E)",
         chat.action_export),
        ("Pick model", "Open the model picker (F2)", app.action_pick_model),
        ("Settings", "Edit the configuration (F3)", app.action_settings),
        ("Metrics panel", "Show or hide the metrics panel (F4)", app.action_toggle_metrics),
        ("Metrics screen", "Every metric of this session (F5)", app.action_metrics_screen),
        ("Next model", "Load the next recently used model (Ctrl+Down)",
         partial(app.action_cycle_model, 1)),
        ("Previous model", "Load the previous recently used model (Ctrl+Up)",
         partial(app.action_cycle_model, -1)),
        ("Reload model", "Load the current model again", app.reload_model),
        ("Help", "Keys and commands (F1)", app.action_help),
    ]
    for title, help_text, callback in actions:
        yield SystemCommand(title, help_text, callback)


async def run_slash_line(app: Any, line: str) -> None:
    """Run a slash command typed in the chat input (app.slash), then do what it asks, on
    `app` (the `LampchatApp`)."""
    chat = app.chat
    context = SlashContext(app.options.config, chat.conversation, app.store.history,
                           app.model_label(app.engine.info))
    before = chat.conversation
    try:
        result = await asyncio.to_thread(run_slash, line, context)
    except Exception as exc:  # a bug in a command must not take the app down
        log.exception("slash command %r failed", line)
        app.notify(f"{line.split()[0]} failed: {exc}", severity="error")
        return
    if not result.ok:
        await chat.add_note(result.message)
        app.notify(result.message, title=line.split()[0], severity="error")
        return
    action = result.action
    if action == "help":
        app.action_help()
        return
    if action == "quit":
        await app.action_quit()
        return
    if action in ("clear", "load_conversation") and isinstance(result.value, Conversation):
        if chat.generation is not None:
            chat.generation.cancel()
            await chat.wait_for_reply()
        app.store.keep(result.value)
        await chat.show_conversation(result.value)
    elif action == "system" and chat.conversation is before and before is not None:
        app.store.keep(before)
        try:
            app.store.write_mirror()
        except LampchatError as exc:
            app.notify(str(exc), severity="error")
    if result.message and action != "clear":
        await chat.add_note(result.message)
    if action == "load_model" and result.value:
        app.load_model(ModelSpec(str(result.value), app.options.backend))
    elif action == "settings" and app.options.config is not None:
        app.apply_config(app.options.config, set(result.changed))
        if result.reload_needed:
            app.notify("Reload the model to apply this (command palette: Reload model).")
    elif action == "clear":
        app.notify(result.message or "New conversation.")
