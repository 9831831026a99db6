"""The settings screen (F3) on its own: editing, inline validation, saving with comments kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Button, Input, Select, Static, Switch

from app.config import load_config
from app.screens.settings import SettingsResult, apply_kind
from tests.support.settings_host import UNSET, SettingsHost
from widgets.config_form import widget_id

pytestmark = [pytest.mark.slow]

COMMENTED = """\
# My Lampchat settings: keep these notes!
[generation]
# warmer replies for brainstorming
temperature = 0.9   # was 0.7
max_tokens = 256

# a section I wrote by hand, keys in my own order
[ui]
show_metrics = false
theme = "nord"

[backend]
threads = 2 # two cores here
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(COMMENTED, encoding="utf-8")
    return path


async def type_into(pilot: Any, dotted: str, text: str) -> None:
    """Focus a key's input, clear it and type `text`, as a user would."""
    editor = pilot.app.settings.query_one(f"#{widget_id(dotted)}", Input)
    editor.focus()
    await pilot.pause()
    await pilot.press("home", "ctrl+k", *text)
    await pilot.pause()


def error_text(app: SettingsHost, dotted: str) -> str:
    row = app.settings.form.rows[dotted]
    error = row.query_one(".field-error", Static)
    return str(error.render()) if error.display else ""


async def test_edit_and_save_keeps_comments_order_and_untouched_keys(config_file: Path) -> None:
    config = load_config(config_file, env={})
    app = SettingsHost(config)
    async with app.run_test(size=(120, 50)) as pilot:
        await pilot.pause()
        await type_into(pilot, "generation.temperature", "0.3")
        status = str(app.settings.query_one("#settings-status", Static).render())
        assert "generation.temperature (applies now)" in status
        await pilot.press("ctrl+s")
        await pilot.pause()
    assert config_file.read_text() == COMMENTED.replace("temperature = 0.9", "temperature = 0.3")
    assert app.result == SettingsResult(
        changed={"generation.temperature": 0.3}, needs_reload=False, saved=True, config=config)
    assert config.get("generation.temperature") == 0.3
    assert load_config(config_file, env={}).get("generation.temperature") == 0.3


async def test_invalid_values_are_shown_inline_and_cannot_be_saved(config_file: Path) -> None:
    app = SettingsHost(load_config(config_file, env={}))
    async with app.run_test(size=(120, 50)) as pilot:
        await pilot.pause()
        save = app.settings.query_one("#save", Button)
        await type_into(pilot, "generation.temperature", "hot")
        assert "'hot' is not a number" in error_text(app, "generation.temperature")
        assert "allowed: a number, >= 0 and <= 10" in error_text(app, "generation.temperature")
        await type_into(pilot, "generation.top_p", "1.5")
        assert "1.5 is out of range" in error_text(app, "generation.top_p")
        assert save.disabled
        status = str(app.settings.query_one("#settings-status", Static).render())
        assert "Cannot save: 2 invalid value(s)" in status
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.settings.is_current and app.result is UNSET
        assert app.focused is app.settings.query_one(
            f"#{widget_id('generation.temperature')}", Input)
        await type_into(pilot, "generation.temperature", "0.2")
        await type_into(pilot, "generation.top_p", "0.5")
        assert not save.disabled
        assert error_text(app, "generation.temperature") == ""
    assert config_file.read_text() == COMMENTED  # nothing was written


async def test_switch_select_and_reload_keys(config_file: Path) -> None:
    config = load_config(config_file, env={})
    app = SettingsHost(config)
    async with app.run_test(size=(120, 50)) as pilot:
        await pilot.pause()
        device = app.settings.query_one(f"#{widget_id('backend.device')}", Select)
        device.focus()
        await pilot.press("enter", "down", "enter")  # auto -> cpu
        await pilot.pause()
        assert device.value == "cpu"
        stream = app.settings.query_one(f"#{widget_id('ui.stream')}", Switch)
        stream.focus()
        await pilot.press("space")
        await type_into(pilot, "backend.threads", "4")
        status = str(app.settings.query_one("#settings-status", Static).render())
        assert "backend.device (needs model reload)" in status
        assert "offered to reload the model" in status
        await pilot.click("#save")
        await pilot.pause()
    assert app.result.changed == {"backend.device": "cpu", "ui.stream": False,
                                  "backend.threads": 4}
    assert app.result.needs_reload and app.result.reload_needed and app.result.saved
    saved = load_config(config_file, env={})
    assert saved.get("backend.device") == "cpu" and saved.get("backend.threads") == 4
    assert saved.get("ui.stream") is False
    text = config_file.read_text()
    assert "threads = 4 # two cores here" in text
    assert text.startswith("# My Lampchat settings: keep these notes!\n")


async def test_reset_puts_defaults_in_the_form_and_save_writes_them(config_file: Path) -> None:
    app = SettingsHost(load_config(config_file, env={}))
    async with app.run_test(size=(120, 50)) as pilot:
        await pilot.pause()
        await pilot.click("#reset")
        await pilot.pause()
        values = app.settings.form.values()
        assert values["generation.temperature"] == 0.7
        assert values["ui.theme"] == "textual-dark"
        assert values["backend.threads"] == 0
        await pilot.press("ctrl+s")
        await pilot.pause()
    expected = (COMMENTED.replace("temperature = 0.9", "temperature = 0.7")
                .replace("max_tokens = 256", "max_tokens = 512")
                .replace("show_metrics = false", "show_metrics = true")
                .replace('theme = "nord"', 'theme = "textual-dark"')
                .replace("threads = 2", "threads = 0"))
    assert config_file.read_text() == expected
    assert app.result.needs_reload  # threads went back to 0


async def test_escape_cancels_without_touching_anything(config_file: Path) -> None:
    config = load_config(config_file, env={})
    app = SettingsHost(config)
    async with app.run_test(size=(120, 50)) as pilot:
        await pilot.pause()
        await type_into(pilot, "generation.max_tokens", "99")
        await pilot.press("escape")
        await pilot.pause()
    assert app.result is None
    assert config.get("generation.max_tokens") == 256 and config.unsaved() == {}
    assert config_file.read_text() == COMMENTED


async def test_unparsable_file_is_never_saved_over(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    broken = "[generation\ntemperature = 0.5\n"
    path.write_text(broken)
    config = load_config(path, env={})
    app = SettingsHost(config)
    async with app.run_test(size=(120, 50)) as pilot:
        await pilot.pause()
        status = app.settings.query_one("#settings-status", Static)
        assert "could not be parsed" in str(status.render())
        assert app.settings.query_one("#save", Button).disabled
        await type_into(pilot, "generation.temperature", "0.1")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.settings.is_current
    assert path.read_text() == broken


async def test_first_run_template_keeps_its_comments(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "config.toml"
    config = load_config(path, env={})  # writes the commented template
    template = path.read_text()
    assert "# temperature = 0.7\n" in template
    app = SettingsHost(config)
    async with app.run_test(size=(120, 50)) as pilot:
        await pilot.pause()
        await type_into(pilot, "generation.temperature", "0.25")
        await pilot.press("ctrl+s")
        await pilot.pause()
    assert path.read_text() == template.replace("# temperature = 0.7\n", "temperature = 0.25\n")


async def test_failed_save_keeps_the_screen_and_applies_for_the_session(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    config = load_config(blocker / "config.toml", env={}, create=False)
    app = SettingsHost(config)
    async with app.run_test(size=(120, 50)) as pilot:
        await pilot.pause()
        await type_into(pilot, "generation.top_k", "7")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.settings.is_current
        status = str(app.settings.query_one("#settings-status", Static).render())
        assert status.startswith("Not saved:") and "apply to this session" in status
        await pilot.press("escape")
        await pilot.pause()
    assert app.result == SettingsResult({"generation.top_k": 7}, False, False, config)
    assert config.get("generation.top_k") == 7


async def test_every_schema_key_is_in_the_form_with_help_and_apply_kind(
        tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[remote.local]\nbase_url = "http://127.0.0.1:8080/v1"\napi_key = "sk-1"\n')
    config = load_config(path, env={"LAMPCHAT_GENERATION__TOP_K": "5"})
    app = SettingsHost(config)
    async with app.run_test(size=(120, 50)) as pilot:
        await pilot.pause()
        rows = app.settings.form.rows
        assert list(rows) == [f.dotted for f, _v, _s in config.items()]
        assert "remote.local.base_url" in rows
        for dotted, row in rows.items():
            assert str(row.query_one(".field-help", Static).render()).startswith(
                row.field.help[:20])
            badge = str(row.query_one(".apply", Static).render())
            assert badge == {"live": "applies now", "reload": "needs model reload",
                             "restart": "applies at next start"}[apply_kind(dotted)]
        assert apply_kind("generation.temperature") == "live"
        assert apply_kind("generation.context_length") == "reload"
        assert apply_kind("model.default") == "restart"
        top_k_help = str(rows["generation.top_k"].query_one(".field-help", Static).render())
        assert "environment variable" in top_k_help
        secret = app.settings.query_one(f"#{widget_id('remote.local.api_key')}", Input)
        assert secret.password
        theme = app.settings.query_one(f"#{widget_id('ui.theme')}", Select)
        assert theme.value == "textual-dark"
        assert "nord" in [value for _label, value in theme._options]
