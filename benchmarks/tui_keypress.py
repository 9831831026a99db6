"""Benchmark: keypress-to-screen latency in the chat screen with a long conversation loaded.

A conversation of `--messages` messages (Markdown replies with metrics) is written to a
history file and opened the way `lampchat --load-history FILE` opens it, in the real
`LampchatApp`, headless (`App.run_test`). Then `--keys` characters are typed into the prompt
one at a time, each as a real key event through the app's driver; the latency of a keypress
is the time from sending the event to the first frame composed with the new character in the
prompt. The same is measured with an empty conversation, side by side, for comparison.

Target (TUI issue): with a 500-message conversation loaded, a keypress reaches the screen in
under 50 ms (checked on the 95th percentile; the median and max are printed too).

    .venv/bin/python benchmarks/tui_keypress.py                     # 500 messages, 60 keys
    .venv/bin/python benchmarks/tui_keypress.py --messages 100 --keys 20   # a quick check

Exit status 0 when the target passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from textual import events  # noqa: E402

from app.history import (  # noqa: E402
    Message,
    load_conversation_file,
    new_conversation,
    save_conversation_file,
)
from app.options import TuiOptions  # noqa: E402
from app.tui import LampchatApp  # noqa: E402
from app.tui_store import ChatStore  # noqa: E402
from tests.support.scripted_backend import REPLY  # noqa: E402

TARGET_MS = 50.0
TYPED = "the quick brown fox jumps over the lazy dog and then asks for more tea please "


def write_conversation(path: Path, n_messages: int) -> None:
    """A history file with `n_messages` alternating prompts and Markdown replies."""
    conv = new_conversation("You are a helpful assistant.", title="long chat")
    for i in range(n_messages):
        if i % 2 == 0:
            conv.messages.append(Message("user", f"Question {i // 2 + 1}: how do I brew tea?"))
        else:
            conv.messages.append(Message(
                "assistant", REPLY, model="SmolLM2-135M-Instruct", backend="llama.cpp",
                metrics={"ttft_ms": 35.0, "decode_tps": 120.0, "completion_tokens": 110,
                         "prompt_tokens": 40, "finish_reason": "stop"},
            ))
    save_conversation_file(conv, path)


async def measure(history: Path | None, n_keys: int, size: tuple[int, int],
                  gap_s: float) -> dict[str, Any]:
    """Type `n_keys` characters; per-key latency (ms) and what was loaded."""
    options = TuiOptions(skip_initial_load=True, show_metrics=False)
    if history is not None:
        options.load_history = load_conversation_file(history)
    app = LampchatApp(options, ChatStore())
    latencies: list[float] = []
    async with app.run_test(size=size) as pilot:
        await pilot.pause(0.5)
        chat = app.chat
        prompt = chat.prompt
        prompt.focus()
        await pilot.pause(0.2)
        expected = ""
        frame_seen = asyncio.Event()
        original_display = app._display

        def display(screen: Any, renderable: Any) -> None:
            original_display(screen, renderable)
            if renderable is not None and not app._batch_count and prompt.text == expected:
                frame_seen.set()

        app._display = display  # type: ignore[method-assign]
        driver = app._driver
        assert driver is not None
        for i in range(n_keys):
            char = TYPED[i % len(TYPED)]
            key = "space" if char == " " else char
            expected = prompt.text + char
            frame_seen.clear()
            start = time.perf_counter()
            event = events.Key(key, char)
            event.set_sender(app)
            driver.send_message(event)
            await asyncio.wait_for(frame_seen.wait(), 10)
            latencies.append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(gap_s)
        app._display = original_display  # type: ignore[method-assign]
        assert prompt.text == expected, (prompt.text, expected)
        loaded = len(chat.chat_log.messages)
        hidden = chat.chat_log.hidden_count
    return {"latencies": latencies, "loaded": loaded, "hidden": hidden}


def summary(latencies: list[float]) -> tuple[float, float, float]:
    """Median, 95th percentile and max."""
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95, ordered[-1]


async def run(n_messages: int, n_keys: int, size: tuple[int, int],
              gap_s: float) -> dict[str, Any]:
    """Both cases, side by side."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.toml"
        write_conversation(path, n_messages)
        empty = await measure(None, n_keys, size, gap_s)
        long = await measure(path, n_keys, size, gap_s)
    return {"messages": n_messages, "empty": empty, "long": long}


def report(out: dict[str, Any]) -> bool:
    """Print the figures with PASS/FAIL; True when the target passes."""
    med_e, p95_e, max_e = summary(out["empty"]["latencies"])
    med_l, p95_l, max_l = summary(out["long"]["latencies"])
    long = out["long"]
    ok = p95_l < TARGET_MS and long["loaded"] == out["messages"]
    print(f"TUI keypress -> screen, {len(long['latencies'])} keys typed into the prompt")
    print(f"  empty conversation:       median {med_e:.1f} ms, p95 {p95_e:.1f} ms, "
          f"max {max_e:.1f} ms")
    print(f"  {out['messages']}-message conversation: median {med_l:.1f} ms, p95 {p95_l:.1f} ms, "
          f"max {max_l:.1f} ms ({long['loaded']} messages loaded, {long['hidden']} of them not "
          f"mounted until scrolled to)")
    print(f"  ratio long/empty (median): {med_l / med_e:.2f}")
    print(f"  target: p95 < {TARGET_MS:.0f} ms  [{'PASS' if ok else 'FAIL'}]")
    print(f"RESULT: {'PASS' if ok else 'FAIL'}")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=500, help="conversation length")
    parser.add_argument("--keys", type=int, default=60, help="characters typed")
    parser.add_argument("--gap-ms", type=float, default=30.0, help="pause between keys")
    parser.add_argument("--width", type=int, default=120)
    parser.add_argument("--height", type=int, default=40)
    args = parser.parse_args(argv)
    out = asyncio.run(run(args.messages, args.keys, (args.width, args.height),
                          args.gap_ms / 1000))
    return 0 if report(out) else 1


if __name__ == "__main__":
    raise SystemExit(main())
