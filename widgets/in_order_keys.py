"""Text inputs whose keys all act in the order they were typed.

Textual inserts a printable key as the input handles it, but runs a bound key (Ctrl+U, Ctrl+W,
arrows, Enter) only once the key has bubbled up to the App: typed quickly, "Ctrl+U notes
Enter" became "notes", then Ctrl+U cleared it, then Enter submitted nothing. `InOrderKeys`
runs the widget's own bindings where it receives the key, so they keep their place among the
characters.
"""

from __future__ import annotations

from typing import cast

from textual import events
from textual.widget import Widget
from textual.widgets import Input


class InOrderKeys:
    """Mixin for a text input (before the Textual widget class among the bases): its own
    (non-priority) bindings run as its keys arrive."""

    async def _on_key(self, event: events.Key) -> None:
        """Run a binding of this widget now; anything else goes on to the next class's handler
        (Textual calls each class's `_on_key` in turn)."""
        widget = cast(Widget, self)
        for binding in widget._bindings.key_to_bindings.get(event.key, ()):
            if binding.priority:  # the App ran it before sending the key here
                continue
            if await widget.app.run_action(binding.action, widget):
                event.stop()
                event.prevent_default()  # handled: not the input's own handling nor the App's
                return


class LineInput(InOrderKeys, Input):
    """A one-line Input with in-order bindings."""
