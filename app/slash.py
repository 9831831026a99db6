"""Slash commands typed in the chat input, as in Ollama's REPL (`/set temperature 0.3`, ...).

Headless: `run_slash(line, context)` changes the config and the conversation it is given
and returns a `SlashResult` saying what to show and what the UI still has to do (`action`:
load a model, start a new chat, quit, ...). The TUI and any REPL share it. No Textual here.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from app.config import SCHEMA, Config, display_value, field_for, save_config
from app.export import export_markdown
from app.history import (
    Conversation,
    load_conversation_file,
    new_conversation,
    save_conversation_file,
)
from app.history_store import HistoryStore
from engine.errors import LampchatError

Action = Literal["clear", "load_model", "show_model", "load_conversation", "system", "help",
                 "quit", "settings"]

RELOAD_KEYS = frozenset({"backend.default", "backend.device", "backend.threads",
                         "backend.gpu_layers", "generation.context_length", "model.default",
                         "model.chat_template"})
"""Keys that take effect only when the model is (re)loaded."""

ALIASES = {
    # Ollama's parameter names
    "num_ctx": "generation.context_length",
    "num_predict": "generation.max_tokens",
    "num_thread": "backend.threads",
    "num_gpu": "backend.gpu_layers",
    # short forms
    "ctx": "generation.context_length",
    "context": "generation.context_length",
    "max-tokens": "generation.max_tokens",
    "tokens": "generation.max_tokens",
    "system": "generation.system_prompt",
    "backend": "backend.default",
    "device": "backend.device",
    "model": "model.default",
    "theme": "ui.theme",
    "metrics": "ui.show_metrics",
}
"""Names accepted by `/set` besides `section.key` and a key that is unique across sections."""


@dataclass
class SlashContext:
    """What slash commands work on. The UI keeps it and reads it back after each command."""

    config: Config | None = None
    conversation: Conversation | None = None
    store: HistoryStore | None = None
    """Where conversations are auto-saved (None: not saved)."""
    model_label: str = ""
    """What `/model` without a name shows (e.g. "SmolLM2-135M · llama.cpp · cpu")."""


@dataclass
class SlashResult:
    """The outcome of one command: a message to show and, maybe, an action for the UI."""

    ok: bool = True
    message: str = ""
    action: Action | None = None
    value: Any = None
    """The action's argument: the model name, the new Conversation, the system prompt."""
    changed: tuple[str, ...] = ()
    """Dotted config keys this command changed (apply them; see RELOAD_KEYS)."""

    @property
    def reload_needed(self) -> bool:
        """Whether a changed key needs the model loaded again."""
        return any(key in RELOAD_KEYS for key in self.changed)


def _error(message: str) -> SlashResult:
    return SlashResult(ok=False, message=message)


@dataclass(frozen=True)
class SlashCommand:
    """One command: its usage line, one-line help and the function running it."""

    name: str
    usage: str
    help: str
    run: Callable[[str, SlashContext], SlashResult] = field(repr=False)


_COMMAND_WORD = re.compile(r"^/[A-Za-z?][\w-]*(\s|$)")


def is_slash(text: str) -> bool:
    """Whether chat input is a command: `/word ...`. `//text` and paths like `/usr/bin` are
    not (see `unescape`)."""
    return bool(_COMMAND_WORD.match(text.strip())) if text.strip().startswith("/") else False


def unescape(text: str) -> str:
    """The message to send for input that is not a command (`//x` sends `/x`)."""
    return text[1:] if text.startswith("//") else text


def run_slash(line: str, context: SlashContext) -> SlashResult:
    """Run one command line. Never raises for user errors: they come back with ok=False."""
    name, _, arg = line.strip().partition(" ")
    name = name.lower()
    command = COMMANDS.get(ALIAS_COMMANDS.get(name, name))
    if command is None:
        close = difflib.get_close_matches(name, [*COMMANDS, *ALIAS_COMMANDS], n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        return _error(f"unknown command {name}; {hint}/help lists the commands")
    try:
        return command.run(arg.strip(), context)
    except LampchatError as exc:
        return _error(str(exc))


def resolve_key(name: str) -> str:
    """The dotted key meant by `name`: `section.key`, an alias, or a key unique across
    sections (`temperature`). LampchatError listing candidates otherwise."""
    name = name.strip().lower().replace("-", "_")
    if name in ALIASES or name.replace("_", "-") in ALIASES:
        return ALIASES.get(name) or ALIASES[name.replace("_", "-")]
    if "." in name:
        return field_for(name).dotted
    owners = [section for section, keys in SCHEMA.items() if name in keys]
    if len(owners) == 1:
        return f"{owners[0]}.{name}"
    if owners:
        choices = ", ".join(f"{s}.{name}" for s in owners)
        raise LampchatError(f"{name!r} is ambiguous: write one of {choices}")
    known = [k for keys in SCHEMA.values() for k in keys] + list(ALIASES)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise LampchatError(f"unknown setting {name!r}{hint}; /set lists them")


def _need_config(context: SlashContext) -> Config:
    if context.config is None:
        raise LampchatError("settings are not available here")
    return context.config


def _need_conversation(context: SlashContext) -> Conversation:
    if context.conversation is None:
        context.conversation = new_conversation()
    return context.conversation


def _path_arg(arg: str, usage: str) -> Path:
    if not arg:
        raise LampchatError(f"usage: {usage}")
    try:
        parts = shlex.split(arg)
    except ValueError:
        parts = [arg]
    text = " ".join(parts) if len(parts) > 1 else (parts[0] if parts else arg)
    return Path(text).expanduser()


def _shown(config: Config, dotted: str) -> str:
    return display_value(field_for(dotted), config.get(dotted))


# -- the commands -------------------------------------------------------------------------------


def _set(arg: str, context: SlashContext) -> SlashResult:
    config = _need_config(context)
    if not arg:
        lines = [f"{f.dotted} = {_shown(config, f.dotted)}" for f, _v, _s in config.items()]
        return SlashResult(message="Settings (/set KEY VALUE changes one):\n" + "\n".join(lines))
    key, _, value = arg.partition(" ")
    if key.lower() == "parameter":  # Ollama: /set parameter temperature 0.3
        key, _, value = value.strip().partition(" ")
    dotted = resolve_key(key)
    if dotted == "generation.system_prompt":
        return _system(value.strip(), context)
    if not value.strip():
        return SlashResult(message=f"{dotted} = {_shown(config, dotted)} "
                                   f"({config.source(dotted)}); allowed: "
                                   f"{field_for(dotted).allowed()}")
    config.set(dotted, _unquote(value.strip()))
    note = " (takes effect when the model is reloaded)" if dotted in RELOAD_KEYS else ""
    return SlashResult(message=f"{dotted} = {_shown(config, dotted)}{note}; /config save keeps "
                               f"it", action="settings", changed=(dotted,))


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _config(arg: str, context: SlashContext) -> SlashResult:
    config = _need_config(context)
    what = arg.split()[0].lower() if arg else ""
    if what == "save":
        pending = config.unsaved()
        save_config(config)
        count = len(pending)
        return SlashResult(message=f"saved {count} setting{'s' if count != 1 else ''} to "
                                   f"{config.path}")
    if what == "path":
        return SlashResult(message=str(config.path))
    if what in ("show", ""):
        lines = [f"{f.dotted} = {_shown(config, f.dotted)}  # {source}"
                 for f, _value, source in config.items()]
        return SlashResult(message=f"config file: {config.path}\n" + "\n".join(lines))
    return _error("usage: /config save | show | path")


def _system(arg: str, context: SlashContext) -> SlashResult:
    conv = _need_conversation(context)
    if not arg:
        shown = conv.system_prompt or "(none)"
        return SlashResult(message=f"system prompt: {shown}")
    text = "" if arg in ('""', "''") else _unquote(arg)
    if context.store is not None and conv.path is not None and conv.path.exists():
        context.store.set_system_prompt(conv, text)
    else:
        conv.system_prompt = text
    message = f"system prompt set: {text}" if text else "system prompt cleared"
    return SlashResult(message=message, action="system", value=text)


def _clear(arg: str, context: SlashContext) -> SlashResult:
    old = context.conversation
    system = old.system_prompt if old is not None else ""
    if context.store is not None:
        conv = context.store.create(system_prompt=system)
    else:
        conv = new_conversation(system)
    context.conversation = conv
    return SlashResult(message="new conversation", action="clear", value=conv)


def _save(arg: str, context: SlashContext) -> SlashResult:
    path = _path_arg(arg, "/save PATH")
    conv = _need_conversation(context)
    save_conversation_file(conv, path)
    count = len(conv.messages)
    return SlashResult(message=f"saved {count} message{'s' if count != 1 else ''} to {path}")


def _load(arg: str, context: SlashContext) -> SlashResult:
    path = _path_arg(arg, "/load PATH")
    conv = load_conversation_file(path)
    problems = list(conv.problems)
    if context.store is not None:
        context.store.adopt(conv)  # continued in a new file in the history dir
    else:
        conv.path = None  # never written back to the file it came from
        conv.problems = []
    context.conversation = conv
    count = len(conv.messages)
    message = f"loaded {count} message{'s' if count != 1 else ''} from {path}"
    if problems:
        message += f" ({len(problems)} problem{'s' if len(problems) != 1 else ''}: {problems[0]})"
    return SlashResult(message=message, action="load_conversation", value=conv)


def _export(arg: str, context: SlashContext) -> SlashResult:
    path = _path_arg(arg, "/export PATH")
    written = export_markdown(_need_conversation(context), path)
    return SlashResult(message=f"exported to {written}")


def _model(arg: str, context: SlashContext) -> SlashResult:
    if not arg:
        return SlashResult(message=context.model_label or "no model is loaded",
                           action="show_model")
    name = _unquote(arg)
    return SlashResult(message=f"loading {name}", action="load_model", value=name)


def _help(arg: str, context: SlashContext) -> SlashResult:
    width = max(len(c.usage) for c in COMMANDS.values())
    lines = [f"{c.usage.ljust(width)}  {c.help}" for c in COMMANDS.values()]
    return SlashResult(message="\n".join(lines), action="help")


def _quit(arg: str, context: SlashContext) -> SlashResult:
    return SlashResult(message="bye", action="quit")


COMMANDS: dict[str, SlashCommand] = {
    c.name: c
    for c in (
        SlashCommand("/set", "/set KEY VALUE",
                     "change a setting for this session, e.g. /set temperature 0.3 "
                     "(/set alone lists them)", _set),
        SlashCommand("/config", "/config save|show|path",
                     "save the session's settings to the config file, or show them", _config),
        SlashCommand("/system", "/system TEXT", "set this conversation's system prompt "
                     '(/system "" clears it)', _system),
        SlashCommand("/model", "/model NAME", "load a model (a path or a name); without NAME: "
                     "show the loaded one", _model),
        SlashCommand("/clear", "/clear", "start a new conversation (the old one stays saved)",
                     _clear),
        SlashCommand("/save", "/save PATH", "save this conversation to a file "
                     "(--load-history and /load read it)", _save),
        SlashCommand("/load", "/load PATH", "continue a conversation saved with /save or "
                     "--save-history", _load),
        SlashCommand("/export", "/export PATH", "export this conversation as Markdown", _export),
        SlashCommand("/help", "/help", "list the commands", _help),
        SlashCommand("/bye", "/bye", "quit", _quit),
    )
}
"""Every command, in the order /help lists them."""

ALIAS_COMMANDS = {"/?": "/help", "/quit": "/bye", "/exit": "/bye", "/new": "/clear",
                  "/settings": "/config"}
