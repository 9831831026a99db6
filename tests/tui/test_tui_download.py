"""The picker's download dialog against a hub on loopback (the real `huggingface_hub`
client): a repo's files with sizes, the download in the background while the chat answers,
then the model in the picker."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input, OptionList

from app.options import TuiOptions
from app.screens.download import DownloadScreen
from app.screens.picker import ModelPickerScreen
from app.tui import LampchatApp
from app.tui_store import ChatStore
from tests.support import scripted_backend
from tests.support.fake_hub import FakeHub, HubRepo
from tests.support.tui_chat import wait_for
from widgets.messages import AssistantMessage, MessageView


@pytest.fixture
def hub(default_gguf: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("HOME", str(tmp_path))  # this test's own hub cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / ".cache"))
    with FakeHub() as hub:
        data = default_gguf.read_bytes()
        hub.repos["org/smol-GGUF"] = HubRepo({"smol.Q4_K_M.gguf": data,
                                              "smol.Q8_0.gguf": data[:100_000] + b"8" * 1000})
        hub.chunk_delay = 0.02  # about 8 s for the 98 MB file: the chat answers meanwhile
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        yield hub


async def test_download_from_the_picker_while_the_chat_answers(hub: FakeHub, tmp_path: Path,
                                                               monkeypatch) -> None:
    scripted_backend.install(monkeypatch)
    app = LampchatApp(TuiOptions(model="scripted://demo?rate=0", backend="scripted"),
                      ChatStore())
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.engine.info is not None)
        await pilot.press("f2")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelPickerScreen))
        await pilot.press("ctrl+d")
        await wait_for(pilot, lambda: isinstance(app.screen, DownloadScreen))
        app.screen.query_one(Input).value = "org/smol-GGUF"
        await pilot.press("enter")
        options = app.screen.query_one(OptionList)
        await wait_for(pilot, lambda: options.option_count == 2)
        labels = [str(options.get_option_at_index(i).prompt) for i in range(2)]
        assert labels == ["Q8_0 · 101.0 kB", "Q4_K_M · 98.4 MB"]  # by size, with sizes
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, DownloadScreen))
        await wait_for(pilot, lambda: app.chat.query_one("#load-progress").display)
        await pilot.press(*"hello", "enter")  # the chat answers while the download runs
        await wait_for(pilot, lambda: any(
            view.query(".meta") for view in app.chat.query(AssistantMessage)), timeout=30)
        assert not any("Downloaded" in str(n.message) for n in app._notifications)
        await wait_for(pilot, lambda: any("Downloaded org/smol-GGUF:Q4_K_M" in str(n.message)
                                          for n in app._notifications), timeout=60)
        assert not app.chat.query_one("#load-progress").display
        await pilot.press("f2")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelPickerScreen))
        picker = app.screen
        await wait_for(pilot, lambda: any(e.name == "org/smol-GGUF" for e in picker.table.entries))
        entry = next(e for e in picker.table.entries if e.name == "org/smol-GGUF")
        assert entry.source == "huggingface" and entry.quantization == "Q4_1"
        from app.hub_pull import pull_options  # the dialog now marks it downloaded

        assert pull_options("org/smol-GGUF")[1] == ("org/smol-GGUF:Q4_K_M",
                                                    "Q4_K_M · 98.4 MB · downloaded")


async def test_a_failed_model_load_writes_its_error_into_the_chat(monkeypatch) -> None:
    """`/model NAME` with an unknown name left "loading NAME" and only a toast."""
    scripted_backend.install(monkeypatch)
    app = LampchatApp(TuiOptions(model="scripted://demo?rate=0", backend="scripted"),
                      ChatStore())
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.engine.info is not None and not app.loading)
        app.options.backend = "auto"  # /model NAME then resolves NAME as a user's would
        app.chat.prompt.focus()
        app.chat.prompt.load_text("/model no-such-model")
        await pilot.press("enter")
        notes = lambda: [v.data.content for v in app.chat.query(MessageView)  # noqa: E731
                         if v.data.role == "system"]
        await wait_for(pilot, lambda: any("Model not loaded" in n for n in notes()))
        assert ("Model not loaded: model not found: no-such-model (`lampchat models` lists the "
                "names)") in notes()
        assert not app.loading and app.engine.info is not None  # the old model stays
