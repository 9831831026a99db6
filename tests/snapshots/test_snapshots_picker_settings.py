"""SVG snapshots of the model picker and the settings screen (pytest-textual-snapshot).

Content is deterministic: the models are real files made in a temporary home folder (hard
links of the bundled GGUF, a truncated copy, a small safetensors folder) found by the real
catalog, plus the model list of a real HTTP server on loopback; paths show as `~/...`.
Update after a deliberate UI change with `pytest --snapshot-update` and look at the SVGs.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import Input

from app.config import load_config
from app.model_catalog import list_models
from tests.support.hf_folders import make_hf_folder
from tests.support.picker_host import PickerHost
from tests.support.settings_host import SettingsHost
from widgets.config_form import widget_id
from widgets.model_entry import ModelEntry

pytestmark = [pytest.mark.slow]

SIZE = (110, 32)


async def steady_cursor(pilot) -> None:
    """Stop input cursors blinking, so the screenshot does not depend on timing."""
    for editor in pilot.app.screen.query(Input):
        editor.cursor_blink = False
    await pilot.pause()


class _Models(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = json.dumps({"data": [{"id": "llama3.1:8b", "context_length": 131072}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Models)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def picker_entries(home: Path, default_gguf: Path, server: str) -> list[ModelEntry]:
    models = home / "models"
    (models / "chat").mkdir(parents=True)
    os.link(default_gguf, models / "SmolLM2-135M-Instruct-Q4_1.gguf")
    os.link(default_gguf, models / "chat" / "smollm2-tuned.gguf")
    data = default_gguf.read_bytes()
    (models / "half-downloaded.gguf").write_bytes(data[: len(data) // 2])
    make_hf_folder(models / "tiny-llama-hf", context=4096)
    config_file = home / "config.toml"
    config_file.write_text(
        '[model]\ndirs = ["~/models"]\ndefault = "SmolLM2-135M-Instruct-Q4_1"\n'
        f'[remote.gpu-box]\nbase_url = "{server}"\n'
    )
    config = load_config(config_file, env={})
    return list_models(config, cache_path=home / "cache.json")


def test_picker_snapshot(snap_compare, picker_entries: list[ModelEntry]) -> None:
    current = picker_entries[0].path
    assert snap_compare(PickerHost(picker_entries, current), run_before=steady_cursor,
                        terminal_size=SIZE)


def test_picker_filtered_snapshot(snap_compare, picker_entries: list[ModelEntry]) -> None:
    assert snap_compare(PickerHost(picker_entries), press=[*"smol", "down", "tab"],
                        run_before=steady_cursor, terminal_size=SIZE)


@pytest.fixture
def settings_config(home: Path):
    path = home / ".config" / "lampchat" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text('# my settings\n[model]\ndirs = ["~/models"]\n\n'
                    '[generation]\ntemperature = 0.4  # a little calmer\n')
    return load_config(path, env={})


def test_settings_snapshot(snap_compare, settings_config) -> None:
    assert snap_compare(SettingsHost(settings_config), run_before=steady_cursor,
                        terminal_size=SIZE)


def test_settings_invalid_value_snapshot(snap_compare, settings_config) -> None:
    async def edit(pilot) -> None:
        await steady_cursor(pilot)
        screen = pilot.app.settings
        editor = screen.query_one(f"#{widget_id('generation.temperature')}")
        editor.focus()
        await pilot.pause()
        await pilot.press("home", "ctrl+k", *"hot")
        await pilot.press("shift+tab")
        await pilot.press("home", "ctrl+k", *"300")  # max_tokens: valid, changed
        await pilot.pause()
        screen.form.scroll_to_widget(screen.form.rows["generation.top_p"], animate=False,
                                     top=False)
        await pilot.pause()

    assert snap_compare(SettingsHost(settings_config), run_before=edit, terminal_size=SIZE)


def test_picker_80x24_snapshot(snap_compare, picker_entries: list[ModelEntry]) -> None:
    assert snap_compare(PickerHost(picker_entries, picker_entries[0].path),
                        run_before=steady_cursor, terminal_size=(80, 24))


def test_settings_80x24_snapshot(snap_compare, settings_config) -> None:
    assert snap_compare(SettingsHost(settings_config), run_before=steady_cursor,
                        terminal_size=(80, 24))


def test_picker_140x45_snapshot(snap_compare, picker_entries: list[ModelEntry]) -> None:
    assert snap_compare(PickerHost(picker_entries, picker_entries[0].path),
                        run_before=steady_cursor, terminal_size=(140, 45))


def test_settings_140x45_snapshot(snap_compare, settings_config) -> None:
    assert snap_compare(SettingsHost(settings_config), run_before=steady_cursor,
                        terminal_size=(140, 45))
