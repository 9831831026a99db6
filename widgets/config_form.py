"""A settings form generated from a config schema: one row per key, grouped by section.

Each row shows the key, an editor (a switch for booleans, a drop-down for choices, a text
input otherwise), when the change takes effect, the key's help text and, inline, why a
value is invalid. Values are checked with the schema field's own `coerce`, so the form
accepts exactly what the config accepts. The form never writes files: the screen that holds
it saves `changes()`.

Fields are duck-typed (this package never imports `app`): anything with `section`, `key`,
`type`, `default`, `help`, `choices`, `secret`, `dotted`, `coerce(value)` and `allowed()`,
such as `app.config_schema.Field`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Input, Label, Select, Static, Switch

APPLY_LABELS = {
    "live": "applies now",
    "reload": "needs model reload",
    "restart": "applies at next start",
}
"""What each apply kind is called in the form."""

SOURCE_NOTES = {
    "env": "currently set by an environment variable, which overrides the file",
    "cli": "currently set by a command-line flag, which overrides the file",
    "session": "set in this session, not saved yet",
}


class FieldLike(Protocol):
    """What the form needs from a schema field."""

    section: str
    key: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None
    secret: bool

    @property
    def dotted(self) -> str: ...

    def coerce(self, value: Any) -> Any: ...

    def allowed(self) -> str: ...


def value_text(value: Any) -> str:
    """How a config value is written in a text input."""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def widget_id(dotted: str) -> str:
    """The DOM id of a key's editor (`generation.top_p` -> `cfg-generation--top_p`)."""
    return "cfg-" + dotted.replace(".", "--")


class FieldRow(Vertical):
    """One setting: label, editor, apply badge, help text, inline error."""

    def __init__(self, field: FieldLike, value: Any, source: str = "default",
                 apply: str = "live", choices: Sequence[str] | None = None) -> None:
        super().__init__(classes="field-row")
        self.field = field
        self.original = value
        self.source = source
        self.apply_kind = apply
        self.choices = tuple(choices) if choices is not None else field.choices
        self.value: Any = value
        self.error: str | None = None

    def compose(self) -> ComposeResult:
        field = self.field
        with Horizontal(classes="field-line"):
            yield Label(field.key, classes="field-key")
            yield self._editor()
            yield Static(APPLY_LABELS.get(self.apply_kind, ""), classes=f"apply {self.apply_kind}")
        help_text = field.help
        note = SOURCE_NOTES.get(self.source)
        if note:
            help_text = f"{help_text} ({note}.)"
        yield Static(help_text, classes="field-help", markup=False)
        yield Static("", classes="field-error", markup=False)

    def _editor(self) -> Widget:
        field = self.field
        ident = widget_id(field.dotted)
        if field.type is bool:
            return Switch(bool(self.value), id=ident)
        if self.choices and field.type is not list:
            options = list(self.choices)
            if self.value not in options:
                options.insert(0, self.value)
            return Select([(str(o), o) for o in options], value=self.value, allow_blank=False,
                          id=ident, compact=True)
        placeholder = "(empty)" if field.type is str else field.allowed()
        return Input(value_text(self.value), placeholder=placeholder, password=field.secret,
                     id=ident, compact=True, select_on_focus=False)

    @property
    def changed(self) -> bool:
        """Whether the (valid) value differs from the one the form started with."""
        return self.error is None and self.value != self.original

    def set_value(self, value: Any) -> None:
        """Show `value` in the editor (and validate it)."""
        editor = self.query_one(f"#{widget_id(self.field.dotted)}")
        if isinstance(editor, Switch):
            editor.value = bool(value)
        elif isinstance(editor, Select):
            editor.value = value
        elif isinstance(editor, Input):
            editor.value = value_text(value)
        self.check(value if not isinstance(editor, Input) else value_text(value))

    def check(self, raw: Any) -> None:
        """Validate `raw` (editor text or value) with the field; show or clear the error."""
        try:
            self.value = self.field.coerce(raw)
            self.error = None
        except ValueError as exc:
            self.error = f"{exc}; allowed: {self.field.allowed()}"
        error = self.query_one(".field-error", Static)
        error.update(Text(f"✗ {self.error}") if self.error else "")
        error.display = self.error is not None
        self.set_class(self.error is not None, "-invalid")
        self.set_class(self.changed, "-changed")


class ConfigForm(VerticalScroll):
    """Every field of a schema, grouped by section, with inline validation.

    `fields` yields `(field, current value, source)` (as `app.config.Config.items()` does).
    `apply` maps a dotted key to "live", "reload" or "restart" (default "live").
    `choices` adds drop-down choices for keys the schema leaves open (e.g. theme names).
    Posts `ConfigForm.Changed` after every edit.
    """

    DEFAULT_CSS = """
    ConfigForm { height: 1fr; padding: 0 1; }
    ConfigForm > .section-title {
        margin: 1 0 0 0; padding: 0 1; text-style: bold; color: $text-accent;
        border-bottom: solid $primary 50%;
    }
    ConfigForm .field-row { height: auto; margin: 1 0 0 0; }
    ConfigForm .field-line { height: 1; }
    ConfigForm .field-key { width: 20; padding-left: 1; text-style: bold; }
    ConfigForm .field-line Input, ConfigForm .field-line Select { width: 1fr; max-width: 60; }
    ConfigForm .field-line Switch { border: none; height: 1; padding: 0; width: auto; }
    ConfigForm .apply { width: 24; padding-left: 2; color: $text-muted; }
    ConfigForm .apply.reload { color: $text-warning; }
    ConfigForm .field-help { padding-left: 21; color: $text-muted; }
    ConfigForm .field-error { padding-left: 21; color: $text-error; display: none; }
    ConfigForm .field-row:focus-within .field-key { background: $accent 30%; }
    ConfigForm .field-row.-changed .field-key { color: $text-success; }
    ConfigForm .field-row.-invalid .field-key { color: $text-error; }
    """

    class Changed(Message):
        """A value was edited (valid or not)."""

        def __init__(self, form: ConfigForm, dotted: str) -> None:
            super().__init__()
            self.form = form
            self.dotted = dotted

        @property
        def control(self) -> ConfigForm:
            return self.form

    def __init__(self, fields: Iterable[tuple[FieldLike, Any, str]], *,
                 apply: Mapping[str, str] | None = None,
                 choices: Mapping[str, Sequence[str]] | None = None,
                 section_titles: Mapping[str, str] | None = None,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._fields = list(fields)
        self._apply = dict(apply or {})
        self._choices = dict(choices or {})
        self._titles = dict(section_titles or {})
        self.rows: dict[str, FieldRow] = {}

    def compose(self) -> ComposeResult:
        section = None
        for field, value, source in self._fields:
            if field.section != section:
                section = field.section
                title = self._titles.get(section, f"[{section}]")
                yield Static(title, classes="section-title", markup=False)
            row = FieldRow(field, value, source, self._apply.get(field.dotted, "live"),
                           self._choices.get(field.dotted))
            self.rows[field.dotted] = row
            yield row

    # -- reading the form ------------------------------------------------------------------

    @property
    def errors(self) -> dict[str, str]:
        """dotted key -> why its value is invalid."""
        return {k: row.error for k, row in self.rows.items() if row.error is not None}

    def values(self) -> dict[str, Any]:
        """dotted key -> current (valid) value; invalid keys keep their original value."""
        return {k: (row.value if row.error is None else row.original)
                for k, row in self.rows.items()}

    def changes(self) -> dict[str, Any]:
        """dotted key -> new value, for every valid value that differs from the original."""
        return {k: row.value for k, row in self.rows.items() if row.changed}

    def apply_kind(self, dotted: str) -> str:
        """"live", "reload" or "restart" for a key."""
        return self._apply.get(dotted, "live")

    # -- changing the form -----------------------------------------------------------------

    def set_value(self, dotted: str, value: Any) -> None:
        """Put `value` in a key's editor (validated like typed input)."""
        self.rows[dotted].set_value(value)
        self.post_message(self.Changed(self, dotted))

    def reset_to_defaults(self) -> None:
        """Put every key's default value in the form (nothing is saved until Save)."""
        for row in self.rows.values():
            row.set_value(row.field.default)
        self.post_message(self.Changed(self, ""))

    def revert(self) -> None:
        """Put every key's original value back."""
        for row in self.rows.values():
            row.set_value(row.original)
        self.post_message(self.Changed(self, ""))

    def mark_saved(self) -> None:
        """Make the current values the new originals (after a successful save)."""
        for row in self.rows.values():
            if row.error is None:
                row.original = row.value
            row.set_class(False, "-changed")

    # -- editor events -----------------------------------------------------------------------

    def _row_of(self, widget: Widget) -> FieldRow | None:
        for ancestor in widget.ancestors_with_self:
            if isinstance(ancestor, FieldRow):
                return ancestor
        return None

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        self._edited(event.input, event.value)

    @on(Input.Submitted)
    def _input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.screen.focus_next()

    @on(Switch.Changed)
    def _switch_changed(self, event: Switch.Changed) -> None:
        self._edited(event.switch, event.value)

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        if event.value is not Select.NULL:
            self._edited(event.select, event.value)

    def _edited(self, editor: Widget, raw: Any) -> None:
        row = self._row_of(editor)
        if row is None:
            return
        before = (row.value, row.error)
        row.check(raw)
        if (row.value, row.error) != before:
            self.post_message(self.Changed(self, row.field.dotted))
