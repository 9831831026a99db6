"""The TUI on the real default model through the real llama.cpp backend (Pilot, headless).

`lampchat` with no model opens on the bundled SmolLM2; a prompt gets a streamed reply with
its metrics line; the picker (F2) loads a model from the real catalog and the conversation
continues with it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Static

from app.screens.chat import ChatScreen
from app.tui_main import build_app
from tests.support.tui_chat import meta, tui_args, wait_for
from widgets.messages import AssistantMessage

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

SLOW = 300.0  # the machine may be shared: generous timeouts, never timed assertions


async def test_real_default_model_replies_with_metrics_and_picker_switch(
        tmp_path: Path, default_gguf: Path) -> None:
    config = tmp_path / "config.toml"
    # no saved KV state: after the reload the regenerated reply is compared with a cold one,
    # and a restored prefix evaluates the prompt's last token alone (llama.cpp's batch order
    # moves float16 sums a little, which can flip a greedy near-tie)
    config.write_text(f'[session]\nhistory_dir = "{tmp_path / "history"}"\nkv_cache_mb = 0\n')
    app = build_app(tui_args("--config", str(config), "--max-tokens", "12", "--temperature",
                             "0", "--seed", "1", "--ctx", "1024"))
    assert app.options.model is None  # nothing configured: the bundled default model
    async with app.run_test(size=(110, 36)) as pilot:
        await wait_for(pilot, lambda: app.engine.info is not None and not app.loading, SLOW)
        info = app.engine.info
        assert info.backend == "llama.cpp" and Path(info.path) == default_gguf
        chat = app.chat
        label = str(chat.query_one("#model-label", Static).render())
        assert "llama.cpp · cpu · ctx 1,024" in label
        chat.prompt.focus()
        await pilot.press(*"Name a colour.", "enter")
        await wait_for(pilot, lambda: chat.generation is None
                       and len(chat.conversation.messages) == 2, SLOW)
        view = chat.chat_log.last_view("assistant")
        assert isinstance(view, AssistantMessage) and view.data.state == "done"
        assert view.data.content.strip()
        metrics = view.data.metrics
        assert metrics.backend == "llama.cpp" and 0 < metrics.completion_tokens <= 12
        assert metrics.ttft_ms > 0 and metrics.decode_tps > 0
        line = meta(view)
        assert f"{info.name} · llama.cpp · TTFT " in line and "tok/s" in line
        first_reply = view.data.content

        # F2: the picker lists the real catalog; Enter loads the chosen model in the background
        await pilot.press("f2")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ModelPickerScreen", SLOW)
        picker = app.screen
        await wait_for(pilot, lambda: picker.table.shown, SLOW)
        await pilot.press(*"smol", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen) and not app.loading
                       and app.recent and len(app._notifications) > 0, SLOW)
        assert any("Loaded" in n.message for n in app._notifications)
        assert Path(app.engine.info.path) == default_gguf
        # the conversation continues on the (re)loaded model, same greedy reply to the same prompt
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: chat.generation is None
                       and chat.conversation.messages[-1].content
                       and len(chat.query(AssistantMessage)) == 1
                       and chat.chat_log.last_view("assistant").data.state == "done", SLOW)
        assert chat.conversation.messages[-1].content == first_reply
        await pilot.press("ctrl+q")
        await pilot.pause(0.5)
    saved = list((tmp_path / "history").glob("*.toml"))
    assert len(saved) == 1 and "Name a colour." in saved[0].read_text()
