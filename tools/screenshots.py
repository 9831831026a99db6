"""Export the README's SVG screenshots of the TUI: chat, picker, settings, metrics.

The chat and metrics screens show a real conversation with the bundled SmolLM2 model through
llama.cpp (greedy, so the replies repeat); the picker shows the real model catalog of a
temporary models folder. Run from the repository root:

    .venv/bin/python -m tools.screenshots            # writes assets/screenshots/*.svg
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "assets" / "screenshots"
SIZE = (120, 38)
PROMPTS = ("Write a Python function that reverses a string.", "What is the capital of France?")


async def wait_for(pilot: Any, condition: Callable[[], Any], timeout: float = 600) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise TimeoutError("the app did not get there in time")
        await pilot.pause(0.05)


async def shoot(app: Any, pilot: Any, name: str) -> None:
    app.clear_notifications()
    for widget in app.screen.query("Input, TextArea"):
        widget.cursor_blink = False
    await pilot.pause(0.3)
    app.save_screenshot(filename=f"{name}.svg", path=str(OUT))
    print(f"wrote {OUT / (name + '.svg')}")


async def main(home: Path) -> None:
    from app.model_catalog import list_models  # noqa: F401  (imported before HOME changes)
    from app.tui_main import build_app
    from engine.models import default_model_path

    models = home / "models"
    (models / "coding").mkdir(parents=True)
    os.link(default_model_path(), models / "SmolLM2-135M-Instruct-Q4_1.gguf")
    os.link(default_model_path(), models / "coding" / "smollm2-coder.gguf")
    config = home / "config.toml"
    config.write_text(
        "# Lampchat settings\n[model]\ndirs = [\"~/models\"]\n\n[generation]\n"
        "temperature = 0.0  # greedy: the same reply every time\nmax_tokens = 120\nseed = 1\n\n"
        "[ui]\nshow_metrics = true\n"
    )
    from app.cli import build_parser

    app = build_app(build_parser().parse_args(["--config", str(config)]))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine.info is not None and not app.loading)
        chat = app.chat
        for prompt in PROMPTS:
            chat.prompt.focus()
            n = len(chat.conversation.messages)
            chat.prompt.load_text(prompt)
            await pilot.press("enter")
            await wait_for(pilot, lambda n=n: chat.generation is None
                           and len(chat.conversation.messages) == n + 2)
        chat.chat_log.scroll_end(animate=False)
        await shoot(app, pilot, "chat")
        await pilot.press("f5")
        await wait_for(pilot, lambda: app.screen.id == "metrics")
        await shoot(app, pilot, "metrics")
        await pilot.press("escape")
        await pilot.press("f2")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ModelPickerScreen")
        await wait_for(pilot, lambda: app.screen.table.shown)
        await shoot(app, pilot, "picker")
        await pilot.press("escape")
        await pilot.press("f3")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "SettingsScreen")
        await shoot(app, pilot, "settings")
        await pilot.press("escape")
        await pilot.press("ctrl+q")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="lampchat-shots-") as tmp:
        home = Path(tmp)
        os.environ.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
                          XDG_DATA_HOME=str(home / ".local/share"),
                          XDG_STATE_HOME=str(home / ".local/state"),
                          XDG_CACHE_HOME=str(home / ".cache"),
                          LAMPCHAT_LOG_FILE=str(home / "lampchat.log"))
        asyncio.run(main(home))
