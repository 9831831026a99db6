"""A host app for Markdown widgets, sample replies, and reading the screen back."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from textual.app import App, ComposeResult
from textual.containers import VerticalScroll

WIDTH = 60


LISTS = """\
Intro

- one item that is long enough to wrap around the width of this screen, for sure
- two `code` and **bold**

3. three
4. four
"""


NESTED = """\
- top item
  - nested one
  - nested two
- item with code:

  ```python
  x = 1
  ```
- plain
"""


class Host(App[None]):
    """A scrolling view with one widget in it."""

    def __init__(self, widget: Any) -> None:
        super().__init__()
        self.widget = widget

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield self.widget


def screen_text(app: App[Any]) -> list[str]:
    """The screen's lines, right-trimmed, without trailing blank lines."""
    console = Console(width=WIDTH, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(app.screen._compositor)
    lines = [line.rstrip() for line in console.export_text().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines
