"""A finished reply's code block: it says where its lines go on past the right edge and
scrolls sideways from the keyboard.

Textual's code block scrolls sideways, but with its scrollbar hidden a line cut at the edge
looked like a line that ends there. Here the last visible cell of such a line shows `MORE`, as
the streaming reply draws it (widgets/flat_markdown.py), and `scroll_columns` moves the code
(Left/Right on a focused reply).
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Region
from textual.strip import Strip
from textual.widgets import Label
from textual.widgets._markdown import MarkdownFence

MORE = "→"
"""Drawn in the last visible cell of a code line that goes on past the edge."""
INDENT = 2
"""The code's left padding (Textual's code block CSS)."""


class CodeLines(Label):
    """The code, with `MORE` drawn over the last visible cell of a cut line."""

    def render_lines(self, crop: Region) -> list[Strip]:
        strips = super().render_lines(crop)
        fence = self.parent
        if not isinstance(fence, CodeFence):
            return strips
        edge = int(fence.scroll_x) + fence.scrollable_content_region.width - 1
        if not crop.x <= edge < crop.right:
            return strips
        ends = fence.line_ends
        at = edge - crop.x
        marked = []
        for y, strip in zip(range(crop.y, crop.bottom), strips, strict=False):
            if y < len(ends) and ends[y] > edge + 1:
                marker = Segment(MORE, self.rich_style + Style(bold=True))
                strip = Strip.join([strip.crop(0, at), Strip([marker], 1),
                                    strip.crop(at + 1, strip.cell_length)])
            marked.append(strip)
        return marked


class CodeFence(MarkdownFence):
    """Textual's code block with `CodeLines` inside."""

    def compose(self):  # type: ignore[no-untyped-def]  # Textual's signature
        yield CodeLines(self._highlighted_code, id="code-content", expand=True)

    @property
    def line_ends(self) -> list[int]:
        """Where each row of the code ends, counting the padding (0 for the blank rows)."""
        return [0, *(INDENT + cell_len(line) for line in self.code.split("\n")), 0]

    @property
    def is_cut(self) -> bool:
        """Whether some line goes on past the right edge as it is scrolled now."""
        edge = int(self.scroll_x) + self.scrollable_content_region.width
        return max(self.line_ends) > edge

    def scroll_columns(self, columns: int) -> None:
        """Scroll the code sideways by `columns` (negative: to the left)."""
        self.scroll_to(x=max(self.scroll_x + columns, 0), animate=False)

    def watch_scroll_x(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_x(old_value, new_value)
        for lines in self.query(CodeLines):
            lines.refresh()
