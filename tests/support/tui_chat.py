"""Helpers for driving the chat screen in Pilot tests."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

from textual.widgets import Static

from app.cli import build_parser
from widgets.messages import AssistantMessage


async def wait_for(pilot: Any, condition: Callable[[], Any], timeout: float = 20.0) -> None:
    """Let the app run until `condition()` is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.02)


def meta(view: AssistantMessage) -> str:
    return str(view.query_one(".meta", Static).render())


def bench_report() -> dict[str, Any]:
    def stat(value: float) -> dict[str, Any]:
        return {"mean": value, "stddev": 0.0, "n": 1, "values": [value]}

    def case(backend: str, tg: float, ttft: float) -> dict[str, Any]:
        return {"model": "m", "model_path": "/m/Smol.gguf", "backend": backend, "device": "cpu",
                "status": "ok", "load_s": 0.5, "peak_rss_mb": 200.0,
                "metrics": {"pp32": stat(150.0), "tg8": stat(tg), "ttft_ms": stat(ttft)}}

    failed = {"model": "m", "model_path": "/m/Smol.gguf", "backend": "onnx", "device": "cpu",
              "status": "failed", "error": "boom"}
    return {"schema": "lampchat-bench", "version": 1, "host": {"cpu": "test"},
            "settings": {"pp": [32], "tg": 8, "repetitions": 1},
            "results": [case("llama.cpp", 57.57, 199.3), case("native", 30.0, 400.0), failed]}


def tui_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))
