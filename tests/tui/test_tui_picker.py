"""The model picker (F2) on its own: filter as you type, keyboard navigation, Enter, Esc, Tab."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, LoadingIndicator, Static

from app.config import load_config
from app.model_catalog import list_models
from tests.support.picker_host import UNSET, PickerHost
from widgets.model_table import ModelChoice, ModelEntry, ModelTable


@pytest.fixture(scope="module")
def entries(tmp_path_factory: pytest.TempPathFactory, default_gguf: Path) -> list[ModelEntry]:
    """Real catalog entries: the default model, two GGUF copies and a truncated GGUF."""
    base = tmp_path_factory.mktemp("picker")
    root = base / "models"
    (root / "chat").mkdir(parents=True)
    os.link(default_gguf, root / "alpha-chat.gguf")
    os.link(default_gguf, root / "chat" / "beta-coder.gguf")
    data = default_gguf.read_bytes()
    (root / "broken.gguf").write_bytes(data[: len(data) // 3])
    config_file = base / "config.toml"
    config_file.write_text(f'[model]\ndirs = ["{root}"]\n')
    found = list_models(load_config(config_file, env={}), cache_path=base / "cache.json")
    assert [e.name for e in found] == [
        "SmolLM2-135M-Instruct", "alpha-chat", "beta-coder", "broken"]
    return found


def shown_names(table: ModelTable) -> list[str]:
    return [e.name for e in table.shown]


async def test_lists_every_entry_with_its_details(entries: list[ModelEntry]) -> None:
    app = PickerHost(entries, current=entries[2].path)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        table = app.picker.table
        assert shown_names(table) == [e.name for e in entries]
        grid = table.query_one(DataTable)
        row = [str(cell) for cell in grid.get_row_at(1)]
        assert row[0].strip() == "alpha-chat"
        assert row[1:] == ["gguf", "llama.cpp ⇄", "98.4 MB", "Q4_1", "135M", "8K"]
        assert str(grid.get_row_at(0)[0]).endswith("(default)")
        assert str(grid.get_row_at(3)[4]) == "damaged"
        # the loaded model is marked and highlighted first
        assert str(grid.get_row_at(2)[0]).startswith("●")
        assert table.highlighted == entries[2]
        assert app.focused is app.picker.query_one("#model-filter", Input)
        detail = str(app.picker.query_one("#model-detail", Static).render())
        assert "template: gguf" in detail  # SmolLM2 ships its own chat template


async def test_type_to_filter_then_enter_chooses(entries: list[ModelEntry]) -> None:
    app = PickerHost(entries)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        await pilot.press(*"coder")
        await pilot.pause()
        assert shown_names(app.picker.table) == ["beta-coder"]
        await pilot.press("enter")
        await pilot.pause()
        assert app.result == ModelChoice(entries[2].path, "llama.cpp", "beta-coder")
        assert app.result.entry == entries[2]
        assert not app.picker.is_attached


@pytest.mark.slow
async def test_filter_matches_every_word_of_the_entry_not_its_folders(
    entries: list[ModelEntry],
) -> None:
    app = PickerHost(entries)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        table = app.picker.table
        await pilot.press(*"gguf q4_1 chat")
        await pilot.pause()
        # beta-coder lies in a folder named "chat": folders do not count, wherever the
        # checkout (and so the bundled model) lies
        assert shown_names(table) == ["alpha-chat"]
        await pilot.press(*" zzz")
        await pilot.pause()
        assert shown_names(table) == []
        assert table.highlighted is None
        detail = app.picker.query_one("#model-detail", Static)
        assert "No model matches" in str(detail.render())
        await pilot.press("enter")  # nothing to choose: stays open
        await pilot.pause()
        assert app.result is UNSET and app.picker.is_attached
        for _ in range(4):
            await pilot.press("backspace")
        await pilot.pause()
        assert shown_names(table) == ["alpha-chat"]
        await pilot.press(*" q4_1.gguf")  # the file's own name counts
        await pilot.pause()
        assert shown_names(table) == []
        for _ in range(len(" q4_1.gguf")):
            await pilot.press("backspace")
        await pilot.press(*" alpha-chat.gguf")
        await pilot.pause()
        assert shown_names(table) == ["alpha-chat"]


async def test_up_down_and_enter(entries: list[ModelEntry]) -> None:
    app = PickerHost(entries)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        table = app.picker.table
        assert table.highlighted == entries[0]
        await pilot.press("down", "down")
        assert table.highlighted == entries[2]
        await pilot.press("up")
        assert table.highlighted == entries[1]
        await pilot.press("pagedown")
        assert table.highlighted == entries[-1]
        await pilot.press("up", "up", "enter")
        await pilot.pause()
        assert app.result.model == entries[1].path


async def test_escape_closes_without_a_choice(entries: list[ModelEntry]) -> None:
    app = PickerHost(entries)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        await pilot.press(*"alpha", "escape")
        await pilot.pause()
        assert app.result is None
        assert not app.picker.is_attached


async def test_tab_switches_the_backend(entries: list[ModelEntry]) -> None:
    app = PickerHost(entries, query="alpha")
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        grid = app.picker.table.query_one(DataTable)
        assert str(grid.get_row_at(0)[2]) == "llama.cpp ⇄"
        await pilot.press("tab")
        assert str(grid.get_row_at(0)[2]) == "native ⇄"
        assert app.focused is app.picker.query_one("#model-filter", Input)
        await pilot.press("enter")
        await pilot.pause()
        assert app.result == ModelChoice(entries[1].path, "native", "alpha-chat")


async def test_damaged_model_is_refused_and_the_picker_stays(entries: list[ModelEntry]) -> None:
    app = PickerHost(entries, query="broken")
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        detail = app.picker.query_one("#model-detail", Static)
        assert "truncated" in str(detail.render())
        assert detail.has_class("-error")
        await pilot.press("enter")
        await pilot.pause()
        assert app.result is UNSET and app.picker.is_attached
        assert any("truncated" in str(n.message) for n in app._notifications)


async def test_clicking_a_row_twice_chooses_it(entries: list[ModelEntry]) -> None:
    app = PickerHost(entries)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        grid = app.picker.table.query_one(DataTable)
        offset = (10, 2)  # second data row (after the header)
        await pilot.click(grid, offset=offset)
        await pilot.click(grid, offset=offset)
        await pilot.pause()
        assert app.result is not UNSET and app.result.model == entries[1].path


async def test_entries_from_a_slow_lister_arrive_while_the_picker_is_open(
        entries: list[ModelEntry]) -> None:
    release = threading.Event()

    def slow_lister() -> list[ModelEntry]:
        release.wait(10)
        return entries

    app = PickerHost(slow_lister)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        assert app.picker.query(LoadingIndicator)  # open at once, still listing
        await pilot.press(*"beta")  # typing works while the list is loading
        release.set()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not app.picker.query(LoadingIndicator)
        assert shown_names(app.picker.table) == ["beta-coder"]


async def test_a_failing_lister_is_reported_not_raised() -> None:
    def broken() -> list[ModelEntry]:
        raise OSError("disk on fire")

    app = PickerHost(broken)
    async with app.run_test(size=(120, 30)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert any("disk on fire" in str(n.message) for n in app._notifications)
        detail = app.picker.query_one("#model-detail", Static)
        assert "No models found" in str(detail.render())
        await pilot.press("escape")
        await pilot.pause()
        assert app.result is None


async def test_closing_while_listing_is_harmless(entries: list[ModelEntry]) -> None:
    release = threading.Event()
    more_called = threading.Event()

    def slow_lister() -> list[ModelEntry]:
        release.wait(10)
        return entries

    def more() -> list[ModelEntry]:
        more_called.set()
        return []

    app = PickerHost(slow_lister, more=more)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert app.result is None
        release.set()
        assert more_called.wait(10)
        await pilot.pause(0.2)
        assert app.is_running  # the late results went nowhere, nothing crashed


async def test_more_entries_are_added_after_the_first_ones(entries: list[ModelEntry]) -> None:
    release = threading.Event()
    remote = ModelEntry("llama3:8b (gpu-box)", "llama3:8b", "remote", ("remote",),
                        context_length=8192, endpoint="gpu-box")

    def slow_remote() -> list[ModelEntry]:
        release.wait(10)
        return [remote]

    app = PickerHost(entries[:2], more=slow_remote)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        assert shown_names(app.picker.table) == [e.name for e in entries[:2]]
        release.set()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert shown_names(app.picker.table)[-1] == "llama3:8b (gpu-box)"
        grid = app.picker.table.query_one(DataTable)
        assert str(grid.get_row_at(2)[2]) == "remote:gpu-box"
        await pilot.press(*"gpu", "enter")
        await pilot.pause()
    assert app.result == ModelChoice("llama3:8b", "remote", "llama3:8b (gpu-box)", "gpu-box")
