"""`lampchat ask PROMPT`: one reply, streamed to stdout (or one JSON object with --json)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from app.options import (
    add_model_options,
    add_sampling_options,
    load_settings_from_args,
    sampling_from_args,
)
from app.progress import stderr_progress
from engine.errors import LampchatError
from engine.types import ChatMessage
from engine.worker import EngineWorker


def add_parser(subparsers: Any) -> None:
    """Register `ask`."""
    parser = subparsers.add_parser("ask", help="ask one question, stream the reply to stdout")
    parser.add_argument("prompt", help="the prompt ('-' reads it from stdin)")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    add_model_options(parser)
    add_sampling_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run `ask`; returns the exit status."""
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt.strip():
        raise LampchatError("the prompt is empty")
    return asyncio.run(_ask(args, prompt))


async def _ask(args: argparse.Namespace, prompt: str) -> int:
    sampling = sampling_from_args(args)
    sampling.validate()
    settings = load_settings_from_args(args)
    messages = [ChatMessage("user", prompt)]
    if args.system:
        messages.insert(0, ChatMessage("system", args.system))

    worker = EngineWorker()
    loop = asyncio.get_running_loop()
    interrupted: list[int] = []
    generation = None

    def on_signal(signum: int) -> None:
        interrupted.append(signum)
        if generation is not None:
            generation.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        progress = None if args.json else stderr_progress("loading model")
        info = await worker.load(args.model, args.backend or "auto", settings, progress)
        if interrupted:
            return 128 + interrupted[0]
        generation = worker.generate(messages, sampling)
        async for piece in generation:
            if not args.json:
                sys.stdout.write(piece.text)
                sys.stdout.flush()
        metrics = generation.metrics
        assert metrics is not None
        if args.json:
            out = {
                "text": generation.text,
                "model": info.name,
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
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await worker.close()


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
