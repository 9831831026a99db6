"""Model output made safe for a terminal: no character a terminal acts on."""

from __future__ import annotations

import re

TERMINAL_CONTROLS = re.compile("[\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]")
"""Characters a terminal acts on (ESC starting a sequence that sets the title, clears the
screen or writes the clipboard via OSC 52; CR, backspace, bell; C1 controls), which model
output must never carry to it. Newline and tab stay."""


def without_controls(text: str) -> str:
    """`text` without `TERMINAL_CONTROLS`. Per character, so that a sequence split across
    pieces is defused too (its ESC is gone; the rest is plain text)."""
    return TERMINAL_CONTROLS.sub("", text) if TERMINAL_CONTROLS.search(text) else text
