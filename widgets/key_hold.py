"""Keys typed while a dialog is on its way are held for it, not lost or sent beneath it.

A screen pushed by a key (or by a message a key posted) has no focused widget until it has
mounted, so keys typed quickly after that key went to the widget underneath or to nowhere:
"r", Ctrl+U, "notes", Enter renamed nothing. `KeyHoldApp` holds keys from `hold_keys()` until
something gains focus (or `HOLD_S` passes, for screens with nothing to focus), then replays
them in the order they were typed; keys already sent to the widget below that come back
unhandled are held as well.
"""

from __future__ import annotations

from typing import Any

from textual import events
from textual.app import App

HOLD_S = 1.0
"""The longest keys are held for a screen that never takes the focus (a busy machine can take
most of a second to mount a dialog)."""


class KeyHoldApp(App[Any]):
    """An App that can hold keys for a screen that is being opened."""

    _held_keys: list[events.Key] | None = None

    def hold_keys(self) -> None:
        """Hold keys until a widget gains focus or `HOLD_S` passes."""
        if self._held_keys is None:
            self._held_keys = []
            self.set_timer(HOLD_S, self.release_keys)

    def release_keys(self) -> None:
        """Replay the held keys, in the order they were typed."""
        held, self._held_keys = self._held_keys, None
        for key in sorted(held or (), key=lambda k: k.time):
            self.post_message(events.Key(key.key, key.character))

    def push_screen(self, *args: Any, **kwargs: Any) -> Any:
        if self.screen_stack:  # not the first screen, which nothing was typed for
            self.hold_keys()
        return super().push_screen(*args, **kwargs)

    async def on_event(self, event: events.Event) -> None:
        if (self._held_keys is not None and isinstance(event, events.Key)
                and not event.is_forwarded):
            self._held_keys.append(event)
            return
        await super().on_event(event)

    def on_key(self, event: events.Key) -> None:
        """A key that reached a widget before the hold began and came back unhandled (the
        widget that asked for the dialog has it next) is held too, instead of acted on."""
        if self._held_keys is not None:
            self._held_keys.append(event)
            event.prevent_default()  # not App's bindings either

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        if self._held_keys is not None:
            self.call_after_refresh(self.release_keys)
