"""The settings screen (F3): every config key as a form, saved to config.toml through tomlkit.

Contract with the app shell (see also `app/screens/__init__.py`)::

    SettingsScreen(config: Config)

Dismisses with `SettingsResult` or `None` (cancelled, nothing changed):

- `changed: dict[str, Any]`: dotted key -> new value for every key the user changed (a dict,
  so `set(result.changed)` and `"ui.theme" in result.changed` work too);
- `needs_reload: bool` (alias `reload_needed`): a changed key only takes effect when the
  model is loaded again (backend, device, fallback, threads, GPU layers, context length,
  remote endpoints); the shell then offers to reload;
- `saved: bool`: written to the config file (False when saving failed: the values are
  still applied for this session, as `/set` would);
- `config: Config`: the same object that was passed in, with the changes set on it.

Which keys apply how is `APPLY_KINDS` (shown next to each key). Save (Ctrl+S) is refused
while any value is invalid; Reset puts every default in the form (saved only with Save);
Esc cancels. Saving keeps the file's comments, order and untouched keys (`save_config`),
and refuses to overwrite a file that could not be parsed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Button, Footer, Static

from app.config import save_config
from engine.errors import LampchatError
from widgets.config_form import APPLY_LABELS, ConfigForm
from widgets.model_entry import short_path

if TYPE_CHECKING:
    from app.config import Config

log = logging.getLogger(__name__)

RELOAD_KEYS = frozenset({
    "backend.default", "backend.device", "backend.fallback", "backend.threads",
    "backend.gpu_layers", "generation.context_length", "remote.default", "model.chat_template",
})
"""Keys that take effect when the model is loaded again."""
RESTART_KEYS = frozenset({
    "model.default", "model.cache_dir", "session.auto_save", "session.history_dir",
    "session.history_file", "session.max_history", "ui.color", "ui.stream",
})
"""Keys read once at start."""

SECTION_TITLES = {
    "model": "Model — what to load and where to find models",
    "generation": "Generation — sampling and the system prompt",
    "backend": "Backend — how models run",
    "session": "Session — conversation history",
    "ui": "Interface",
    "remote": "Remote — OpenAI-compatible servers",
}


def apply_kind(dotted: str) -> str:
    """"live", "reload" or "restart": when a change to `dotted` takes effect."""
    if dotted in RELOAD_KEYS or dotted.count(".") == 2:  # remote.NAME.key
        return "reload"
    if dotted in RESTART_KEYS:
        return "restart"
    return "live"


@dataclass
class SettingsResult:
    """What the settings screen changed; see the module docstring."""

    changed: dict[str, Any] = field(default_factory=dict)
    needs_reload: bool = False
    saved: bool = False
    config: Config | None = None

    @property
    def reload_needed(self) -> bool:
        """Alias of `needs_reload`."""
        return self.needs_reload


class SettingsScreen(Screen[SettingsResult | None]):
    """Edit and save the configuration; see the module docstring for the contract."""

    DEFAULT_CSS = """
    SettingsScreen { layout: vertical; }
    SettingsScreen > #settings-title {
        height: 1; padding: 0 2; background: $panel; color: $text; text-style: bold;
    }
    SettingsScreen > #settings-status {
        height: auto; min-height: 1; padding: 0 2; color: $text-muted;
    }
    SettingsScreen > #settings-status.-error { color: $text-error; }
    SettingsScreen > #settings-buttons { height: 3; padding: 0 2; align-horizontal: right; }
    SettingsScreen > #settings-buttons Button { margin-left: 2; }
    """

    BINDINGS = [
        Binding("ctrl+s", "save", "Save", priority=True),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self._applied: dict[str, Any] = {}

    def compose(self) -> ComposeResult:
        yield Static(f"Settings — {short_path(str(self.config.path))}", id="settings-title")
        yield ConfigForm(
            list(self.config.items()),
            apply={f.dotted: apply_kind(f.dotted) for f, _v, _s in self.config.items()},
            choices=self._theme_choices(),
            section_titles=SECTION_TITLES,
            id="settings-form",
        )
        yield Static("", id="settings-status")
        with Horizontal(id="settings-buttons"):
            yield Button("Reset to defaults", id="reset")
            yield Button("Cancel", id="cancel")
            yield Button("Save", id="save", variant="primary")
        yield Footer(compact=True)

    def _theme_choices(self) -> dict[str, list[str]]:
        try:
            themes = sorted(self.app.available_themes)
        except Exception:
            return {}
        return {"ui.theme": themes} if themes else {}

    def on_mount(self) -> None:
        self._update_status()
        rows = list(self.form.rows.values())
        if rows:
            rows[0].query("Input, Select, Switch").first().focus()

    @property
    def form(self) -> ConfigForm:
        """The form (for tests and the shell)."""
        return self.query_one(ConfigForm)

    # -- status --------------------------------------------------------------------------

    @on(ConfigForm.Changed)
    def _form_changed(self, event: ConfigForm.Changed) -> None:
        self._update_status()

    def _update_status(self) -> None:
        form = self.form
        errors = form.errors
        changes = form.changes()
        status = self.query_one("#settings-status", Static)
        save = self.query_one("#save", Button)
        problem = self._save_blocker(errors)
        save.disabled = problem is not None
        status.set_class(bool(errors) or self.config.parse_failed, "-error")
        if problem is not None:
            status.update(Text(problem))
            return
        if not changes:
            pending = len(self.config.unsaved())
            status.update("No changes." if not pending else
                          f"No changes in the form; Save also writes {pending} value(s) set "
                          f"in this session with /set.")
            return
        parts = [f"{k} ({APPLY_LABELS[form.apply_kind(k)]})" for k in changes]
        text = f"{len(changes)} change(s): " + ", ".join(parts) + "."
        if any(form.apply_kind(k) == "reload" for k in changes):
            text += " After saving you will be offered to reload the model."
        status.update(Text(text))

    def _save_blocker(self, errors: dict[str, str]) -> str | None:
        if self.config.parse_failed:
            return (f"{self.config.path} could not be parsed, so it will not be saved over; "
                    f"fix it or move it away first.")
        if errors:
            keys = ", ".join(errors)
            return f"Cannot save: {len(errors)} invalid value(s) ({keys}); fix them first."
        return None

    # -- actions ------------------------------------------------------------------------------

    @on(Button.Pressed, "#save")
    def _save_pressed(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    @on(Button.Pressed, "#reset")
    def _reset_pressed(self) -> None:
        self.form.reset_to_defaults()
        self.notify("Defaults are in the form; Save writes them.")

    def action_save(self) -> None:
        """Apply the changes and write them to the config file; refused while invalid."""
        form = self.form
        problem = self._save_blocker(form.errors)
        if problem is not None:
            self.app.bell()
            self._update_status()
            first = next(iter(form.errors), None)
            if first:
                form.rows[first].query("Input, Select, Switch").first().focus()
            return
        changes = form.changes()
        if not changes and not self.config.unsaved():
            self.notify("Nothing to save.")
            self.dismiss(self._result(saved=False) if self._applied else None)
            return
        try:
            for dotted, value in changes.items():
                self.config.set(dotted, value)
        except LampchatError as exc:  # the form checks the same way: should not happen
            self._show_error(str(exc))
            return
        self._applied.update(changes)

        try:
            save_config(self.config)
        except LampchatError as exc:
            self._show_error(f"Not saved: {exc}. The changes apply to this session.")
            return
        except Exception as exc:
            log.exception("saving the config failed")
            self._show_error(f"Not saved: {exc}. The changes apply to this session.")
            return
        form.mark_saved()
        self.dismiss(self._result(saved=True))

    def action_cancel(self) -> None:
        """Close; edits that were not saved are dropped (failed saves still apply)."""
        self.dismiss(self._result(saved=False) if self._applied else None)

    def _result(self, saved: bool) -> SettingsResult:
        changed = dict(self._applied)
        return SettingsResult(
            changed=changed,
            needs_reload=any(apply_kind(k) == "reload" for k in changed),
            saved=saved,
            config=self.config,
        )

    def _show_error(self, message: str) -> None:
        status = self.query_one("#settings-status", Static)
        status.set_class(True, "-error")
        status.update(Text(message))
        self.notify(message, title="Settings", severity="error", timeout=8)
