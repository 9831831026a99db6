"""`lampchat ask PROMPT`: one reply, streamed to stdout (or one JSON object with --json)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from app import file_lock
from app.config import load_config
from app.history import Message, load_conversation_file, new_conversation
from app.history_store import ConversationWriter
from app.model_names import resolve_name, store_system_prompt, with_store_defaults
from app.options import (
    add_config_option,
    add_history_options,
    add_model_options,
    add_sampling_options,
    load_settings_from_args,
    sampling_from_args,
)
from app.progress import stderr_progress
from engine.errors import LampchatError
from engine.registry import is_local
from engine.worker import EngineWorker


def add_parser(subparsers: Any) -> None:
    """Register `ask`."""
    parser = subparsers.add_parser("ask", help="ask one question, stream the reply to stdout")
    parser.add_argument("prompt", help="the prompt ('-' reads it from stdin)")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    add_model_options(parser)
    add_sampling_options(parser)
    add_history_options(parser)
    add_config_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run `ask`; returns the exit status."""
    raw = sys.stdin.buffer.read() if args.prompt == "-" else \
        args.prompt.encode("utf-8", "surrogateescape")
    prompt = raw.decode("utf-8", "replace")  # bytes that are not UTF-8 become U+FFFD
    if "\ufffd" in prompt and "\ufffd".encode() not in raw:
        print("lampchat: warning: the prompt holds bytes that are not UTF-8; they are sent as "
              "\ufffd", file=sys.stderr)
    if args.system is not None:
        args.system = args.system.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if not prompt.strip():
        raise LampchatError("the prompt is empty")
    return asyncio.run(_ask(args, prompt))


async def _ask(args: argparse.Namespace, prompt: str) -> int:
    config = load_config(args.config)  # flags > environment > config file > defaults
    for line in config.warning_lines():
        print(line, file=sys.stderr)
    backend = args.backend or config.backend()
    sampling, settings, model = config.sampling(), config.load_settings(), args.model
    store_system, unresolved = None, None
    if backend == "auto" or is_local(backend):  # a name `lampchat models` shows, or a path;
        # a server knows its own names
        try:
            entry = await asyncio.to_thread(resolve_name, args.model, config)
        except LampchatError as exc:  # raised once the prompt is saved (--save-history)
            unresolved = exc
        else:
            model = entry.path
            sampling, settings = with_store_defaults(entry, config, sampling, settings)
            store_system = store_system_prompt(entry, config)
    elif not model:
        model = config.model()
    sampling = sampling_from_args(args, sampling)
    sampling.validate()
    settings = load_settings_from_args(args, settings, config)

    # the conversation: --load-history's (its system prompt kept) or a new one
    if args.load_history:
        conv = load_conversation_file(args.load_history)
        for problem in conv.problems:
            print(f"lampchat: warning: {problem}", file=sys.stderr)
    else:
        conv = new_conversation(config.system_prompt() or store_system or "")
    if args.system is not None:
        conv.system_prompt = args.system
    writer = ConversationWriter()
    conv.path = None
    writer.append(conv, Message("user", prompt))
    if args.save_history:  # written now: the prompt is kept whatever happens next
        file_lock.hold(Path(args.save_history))  # one writer at a time across processes
        writer.write_all(conv, Path(args.save_history).expanduser())
    if unresolved is not None:
        raise unresolved
    messages = conv.chat_messages()

    worker = EngineWorker(kv_store=config.kv_store())
    loop = asyncio.get_running_loop()
    interrupted: list[int] = []
    generation = None
    loading = False

    def on_signal(signum: int) -> None:
        interrupted.append(signum)
        if generation is not None:
            generation.cancel()
        elif loading:  # a load cannot be stopped part-way: the process ends now instead
            # (the prompt is saved already; nothing else is written before the reply)
            sys.stderr.write("\nlampchat: interrupted while loading the model\n")
            sys.stderr.flush()
            os._exit(128 + signum)

    for signum in _SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        progress = None if args.json else stderr_progress("loading model")
        loading = True
        info = await worker.load(model, backend, settings, progress)
        loading = False
        if worker.fallback_note:
            print(f"lampchat: fell back: {worker.fallback_note}", file=sys.stderr)
        if interrupted:
            return 128 + interrupted[0]
        generation = worker.generate(messages, sampling, conversation=conv.id)
        writer.begin_reply(conv, model=info.name, backend=info.backend)
        async for piece in generation:
            if not args.json:
                sys.stdout.write(piece.text)
                sys.stdout.flush()
            writer.update_partial(conv, generation.text)
        metrics = generation.metrics
        assert metrics is not None
        writer.finish_reply(conv, generation.text, metrics=metrics.to_dict(),
                            interrupted=metrics.finish_reason in ("cancelled", "error"))
        if args.json:
            out = {
                "text": generation.text,
                "model": info.name,
                "chat_template": info.chat_template_source,
                **_metrics_fields(metrics.to_dict()),
            }
            print(json.dumps(out, ensure_ascii=False))
        elif generation.text and not generation.text.endswith("\n"):
            print()
        if generation.error:
            print(f"lampchat: error: {generation.error}", file=sys.stderr)
            return 1
        return 128 + interrupted[0] if interrupted else 0
    finally:
        writer.interrupt_all()  # a reply cut short by an exception is kept, marked interrupted
        for signum in _SIGNALS:
            loop.remove_signal_handler(signum)
        await worker.close()


_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
"""Signals that stop the reply; what was generated so far is still printed and saved."""


_JSON_FIELDS = (
    "backend",
    "device",
    "ttft_ms",
    "prompt_tokens",
    "prompt_tps",
    "completion_tokens",
    "decode_tps",
    "total_ms",
    "peak_rss_mb",
    "finish_reason",
)


def _metrics_fields(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {key: metrics[key] for key in _JSON_FIELDS}
    for key in ("ttft_ms", "prompt_tps", "decode_tps", "total_ms", "peak_rss_mb"):
        out[key] = round(out[key], 3)
    if metrics.get("tokens_estimated"):
        out["tokens_estimated"] = True
    return out
