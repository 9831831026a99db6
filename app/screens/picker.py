"""The model picker (F2): a modal list of models, driven by the keyboard alone.

Contract with the app shell (see also `app/screens/__init__.py`)::

    ModelPickerScreen(entries, current=None, *, query="", more=None)

- `entries`: a `list[ModelEntry]` (from `app.model_catalog.list_models(config)`), or a
  callable returning one; a callable runs on a thread worker under a loading indicator,
  so the picker opens at once either way.
- `current`: the path of the loaded model; its row is marked ● and starts highlighted.
- `query`: initial filter text.
- `more`: an optional callable whose entries are added when it returns (on a thread), e.g.
  `partial(app.model_catalog.remote_entries, config)`, since servers can be slow. The
  quickest way to open: `ModelPickerScreen(partial(list_models, config,
  include_remote=False), current, more=partial(remote_entries, config))`.

Keys: type to filter; Up/Down/PageUp/PageDown move; Tab switches the backend of the
highlighted model (when several can run it); Enter chooses; Ctrl+R lists the models anew
(after a download, or a change to the stores); Ctrl+D closes the picker and calls `download`
(the app's download dialog), when given; Esc closes.

Dismisses with a `ModelChoice` (`model`, `backend`, `name`, `endpoint`; `model` and
`backend` are what `EngineWorker.load` takes; for a remote model, `endpoint` names its
`[remote.NAME]` table and `app.model_catalog.load_settings_for(choice, config, settings)`
adds that endpoint's options to the load settings) or `None` (Esc). Choosing a damaged model
shows its error and keeps the picker open. The picker never loads anything itself: the
shell loads the choice in the background with a progress indicator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, LoadingIndicator

from widgets.model_table import ModelChoice, ModelEntry, ModelTable

__all__ = ["ModelChoice", "ModelEntry", "ModelPickerScreen"]

log = logging.getLogger(__name__)


class ModelPickerScreen(ModalScreen[ModelChoice | None]):
    """Choose a model to load; see the module docstring for the contract."""

    DEFAULT_CSS = """
    ModelPickerScreen { align: center middle; }
    ModelPickerScreen > #picker {
        width: 90%;
        max-width: 130;
        height: 85%;
        border: round $primary;
        border-title-color: $text;
        border-title-style: bold;
        border-subtitle-color: $text-muted;
        background: $surface;
        padding: 0 1;
    }
    ModelPickerScreen LoadingIndicator { height: 3; }
    """

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("ctrl+r", "rescan", "Rescan"),
        Binding("ctrl+d", "download", "Download…", priority=True),  # over the filter's delete
    ]

    def __init__(self, entries: list[ModelEntry] | Callable[[], list[ModelEntry]],
                 current: str | None = None, *, query: str = "",
                 more: Callable[[], list[ModelEntry]] | None = None,
                 download: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._listers = [f for f in (entries if callable(entries) else None, more) if f]
        self._entries = [] if callable(entries) else list(entries)
        self._current = current
        self._query = query
        self._download = download

    def compose(self) -> ComposeResult:
        with Vertical(id="picker") as box:
            box.border_title = "Models"
            box.border_subtitle = "Enter load · Tab backend · ^R rescan · ^D download · Esc close"
            yield ModelTable(self._entries, self._current, query=self._query)
            if self._listers:
                yield LoadingIndicator()
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#model-filter", Input).focus()
        if self._listers:
            self._list_models(self.app)

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _list_models(self, app: App[object]) -> None:
        def deliver(callback: Callable[..., None], *args: object) -> None:
            if self.is_attached:  # the picker may have been closed meanwhile
                app.call_from_thread(callback, *args)

        for lister in self._listers:
            try:
                entries = lister()
            except Exception as exc:  # listing must never take the app down
                log.exception("listing models failed")
                deliver(self._listing_failed, str(exc))
                continue
            deliver(self._listed, entries)
        deliver(self._listing_done)

    def _listed(self, entries: list[ModelEntry]) -> None:
        if not self.is_attached:
            return
        known = {(e.path, e.endpoint) for e in self._entries}
        self._entries += [e for e in entries if (e.path, e.endpoint) not in known or not e.path]
        self.query_one(ModelTable).set_entries(self._entries)

    def _listing_failed(self, message: str) -> None:
        self.app.notify(f"could not list models: {message}", severity="error")

    def _listing_done(self) -> None:
        if self.is_attached:
            self.query(LoadingIndicator).remove()

    @property
    def table(self) -> ModelTable:
        """The model table (for the shell and tests)."""
        return self.query_one(ModelTable)

    @on(ModelTable.Selected)
    def _selected(self, event: ModelTable.Selected) -> None:
        event.stop()
        if event.entry.error is not None:
            self.notify(event.entry.error, title="Cannot load this model", severity="error")
            return
        self.dismiss(event.choice)

    def action_close(self) -> None:
        """Close without choosing."""
        self.dismiss(None)

    def action_rescan(self) -> None:
        """List the models anew (the stores and folders are scanned again)."""
        if not self._listers:
            self.notify("This list cannot be refreshed.", severity="warning")
            return
        self._entries = []
        self.table.set_entries([])
        if not self.query(LoadingIndicator):
            self.query_one("#picker", Vertical).mount(LoadingIndicator())
        self._list_models(self.app)

    def action_download(self) -> None:
        """Close the picker and open the download dialog."""
        if self._download is None:
            self.notify("Downloading is not available here.", severity="warning")
            return
        self.dismiss(None)
        self._download()
