"""The download dialog (Ctrl+D in the model picker): a Hugging Face repo, what it offers with
sizes, and Enter to download it in the background (`lampchat pull` in the app).

Dismisses with the spec to pull (`org/repo:Q4_K_M`, `org/repo/FILE.gguf`, `org/repo`) or None.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from engine.errors import LampchatError
from widgets.in_order_keys import LineInput

log = logging.getLogger(__name__)

Lister = Callable[[str], list[tuple[str, str]]]
"""repo -> [(spec to pull, label)] (see `app.hub_pull.pull_options`)."""


class DownloadScreen(ModalScreen[str | None]):
    """Ask for a repo, list what it offers, return the choice."""

    DEFAULT_CSS = """
    DownloadScreen { align: center middle; }
    DownloadScreen > #download {
        width: 90%; max-width: 90; height: auto; max-height: 90%;
        border: round $primary; border-title-style: bold; background: $surface; padding: 0 1;
    }
    DownloadScreen #download-options { height: auto; max-height: 12; }
    DownloadScreen #download-status { color: $text-muted; margin: 1 0 0 0; }
    DownloadScreen #download-status.-error { color: $text-error; }
    """

    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, lister: Lister) -> None:
        super().__init__()
        self._lister = lister

    def compose(self) -> ComposeResult:
        with Vertical(id="download") as box:
            box.border_title = "Download from the Hugging Face hub"
            box.border_subtitle = "Enter lists / downloads · ↑↓ choose · Esc cancels"
            yield LineInput(placeholder="org/repo, e.g. bartowski/SmolLM2-135M-Instruct-GGUF",
                        id="download-repo", compact=True)
            yield OptionList(id="download-options")
            yield Static("Type a repo and press Enter to see its files.", id="download-status")

    def on_mount(self) -> None:
        self.query_one(OptionList).display = False
        self.query_one(Input).focus()

    @on(Input.Submitted, "#download-repo")
    def _repo_given(self, event: Input.Submitted) -> None:
        repo = event.value.strip()
        if repo:
            self._status(f"asking the hub about {repo}…")
            self._list(repo)

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _list(self, repo: str) -> None:
        try:
            options = self._lister(repo)
        except LampchatError as exc:
            self.app.call_from_thread(self._status, str(exc), True)
            return
        except Exception as exc:  # the dialog must never take the app down
            log.exception("listing %s failed", repo)
            self.app.call_from_thread(self._status, f"cannot list {repo}: {exc}", True)
            return
        self.app.call_from_thread(self._show, repo, options)

    def _show(self, repo: str, options: list[tuple[str, str]]) -> None:
        if not self.is_attached:
            return
        choices = self.query_one(OptionList)
        choices.clear_options()
        choices.add_options([Option(Text(label), id=spec) for spec, label in options])
        choices.display = True
        choices.highlighted = 0
        choices.focus()
        self._status(f"{repo}: {len(options)} to choose from; Enter downloads the highlighted "
                     "one (the chat stays usable)")

    @on(OptionList.OptionSelected, "#download-options")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def _status(self, text: str, error: bool = False) -> None:
        if self.is_attached:
            status = self.query_one("#download-status", Static)
            status.update(Text(text))
            status.set_class(error, "-error")

    def action_close(self) -> None:
        """Close without downloading."""
        self.dismiss(None)
