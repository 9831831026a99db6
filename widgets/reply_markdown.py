"""Markdown for replies: Textual's Markdown with flat lists and tables.

Textual builds a list from a widget per item (a row, its bullet, a column, the paragraph) and a
table from a widget per cell. A structured 4,000-token reply becomes about 1,100 widgets, and
on a slow machine mounting and laying them out takes longer than a fast model takes to write
them. Here a list whose items are single paragraphs, and any table, is one widget that draws
itself for its width: the same reply needs about 260 widgets. A list item holding more than
one paragraph (nested lists, code) keeps Textual's layout.

Replies loaded from history and re-rendered replies use it; a reply that streams is drawn by
`FlatMarkdown` (widgets/flat_markdown.py), which looks the same.
"""

from __future__ import annotations

import contextlib
from typing import ClassVar

from markdown_it.token import Token
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.geometry import Size
from textual.widgets import Markdown
from textual.widgets._markdown import (
    MarkdownBlock,
    MarkdownBullet,
    MarkdownBulletList,
    MarkdownOrderedList,
    MarkdownParagraph,
    MarkdownTable,
)

from widgets.code_fence import CodeFence
from widgets.layout_pass import OneLayoutPass

LIST_SUFFIX = ". "


class Part:
    """A piece of a list or table while it is parsed (an item, a row, a cell): plain data, not
    a widget, so parsing a table or a list creates no widgets that are thrown away."""

    def __init__(self, markdown: Markdown, token: Token, bullet: str = "") -> None:
        self.bullet = bullet
        self.ordered = bool(token.info)
        self.tag = token.tag
        self._blocks: list[MarkdownBlock | Part] = []
        self._content = Content("")

    def build_from_token(self, token: Token) -> None:
        """Take the inline text (a cell's)."""
        self._content = MarkdownBlock._token_to_content(self, token)  # type: ignore[arg-type]


class ItemPart(Part):
    """A list item: its bullet and its blocks."""

    def __init__(self, markdown: Markdown, token: Token, bullet: str = "") -> None:
        if not token.info:  # a bullet for the depth (Textual counts widget ancestors)
            bullet = markdown.BULLETS[(token.level // 2) % len(markdown.BULLETS)]
        super().__init__(markdown, token, bullet or token.info)


class FlatBlock(OneLayoutPass, MarkdownBlock):
    """A block that draws all its lines itself, for the width it is given."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._flat = False
        self._drawn: tuple[int, Content] | None = None

    @property
    def flat(self) -> bool:
        """Whether the block draws itself (False: it kept Textual's widgets)."""
        return self._flat

    @property
    def plain(self) -> str:
        """The block's text, whatever the width (tests compare it)."""
        raise NotImplementedError

    def draw(self, width: int) -> Content:
        """The block's lines for `width` cells, joined with newlines."""
        raise NotImplementedError

    def _lines(self, width: int) -> Content:
        if self._drawn is None or self._drawn[0] != width:
            self._drawn = (width, self.draw(max(width, 4)))
        return self._drawn[1]

    def get_content_width(self, container: Size, viewport: Size) -> int:
        if not self._flat:
            return super().get_content_width(container, viewport)
        return max((line.cell_length for line in self._lines(container.width).split("\n")),
                   default=0)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        if not self._flat:
            return super().get_content_height(container, viewport, width)
        return self._lines(width).plain.count("\n") + 1 if width else 0

    def render(self) -> Content:  # type: ignore[override]
        if not self._flat:
            return super().render()
        return self._lines(self.content_region.width or self.size.width)


def _item_content(item: Part) -> Content | None:
    """The text of a list item that holds one paragraph and nothing else, else None."""
    blocks = item._blocks
    if len(blocks) == 1 and type(blocks[0]) is ReplyParagraph and not blocks[0]._blocks:
        return blocks[0]._content
    if not blocks:
        return Content("")
    return None


class FlatList(FlatBlock):
    """A list of one-paragraph items, drawn as one widget with hanging indents.

    Mixed in after Textual's list class, which keeps its CSS (Textual styles a widget by the
    classes along its first bases only); the list classes take `compose` and
    `_update_from_block` from here explicitly.
    """

    _items: list[tuple[str, Content]]

    def bullets(self) -> list[str]:
        """One symbol per item, each padded to the same width."""
        raise NotImplementedError

    def _items_parts(self) -> list[Part]:
        return [block for block in self._blocks if isinstance(block, ItemPart)]

    def _collect(self) -> list[tuple[str, Content]] | None:
        contents: list[Content] = []
        for block in self._blocks:
            if not isinstance(block, ItemPart):
                return None
            content = _item_content(block)
            if content is None:
                return None
            contents.append(content)
        return list(zip(self.bullets(), contents, strict=True))

    def compose(self) -> ComposeResult:
        items = self._collect()
        if items is None:  # Textual's layout: a row per item, its bullet, then its blocks
            for symbol, item in zip(self.bullets(), self._items_parts(), strict=True):
                bullet = MarkdownBullet()
                bullet.symbol = symbol
                yield Horizontal(bullet, Vertical(*item._blocks))
            self._blocks.clear()
            return
        self._flat = True
        self._items = items
        self._blocks.clear()
        yield from ()

    @property
    def plain(self) -> str:
        return "\n".join(symbol + content.plain for symbol, content in self._items)

    def draw(self, width: int) -> Content:
        lines: list[Content] = []
        for symbol, content in self._items:
            indent = len(symbol)
            wrapped = content.wrap(max(1, width - indent)) or [Content("")]
            lines.append(Content.assemble((symbol, ".list-bullet"), wrapped[0]))
            lines.extend(Content.assemble(" " * indent, line) for line in wrapped[1:])
        return Content("\n").join(lines)


LIST_CSS = """
{name} > .list-bullet {{ color: $text-primary; }}
{name}:light > .list-bullet {{ color: $text-secondary; }}
"""


class ReplyBulletList(MarkdownBulletList, FlatList):
    """A bullet list; flat when every item is one paragraph."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"list-bullet"}
    DEFAULT_CSS = LIST_CSS.format(name="ReplyBulletList")
    compose = FlatList.compose

    def bullets(self) -> list[str]:
        return [item.bullet for item in self._items_parts()]


class ReplyOrderedList(MarkdownOrderedList, FlatList):
    """A numbered list; flat when every item is one paragraph."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"list-bullet"}
    DEFAULT_CSS = LIST_CSS.format(name="ReplyOrderedList")
    compose = FlatList.compose

    def bullets(self) -> list[str]:
        items = self._items_parts()
        start = 1
        if items and items[0].ordered:
            with contextlib.suppress(ValueError):
                start = int(items[0].bullet)
        symbols = [f"{number}{LIST_SUFFIX}" for number in range(start, start + len(items))]
        size = max((len(symbol) for symbol in symbols), default=0)
        return [symbol.rjust(size + 1) for symbol in symbols]


class ReplyParagraph(MarkdownParagraph):
    """A paragraph (a class of its own, so that list items can tell it apart)."""


class ReplyTable(MarkdownTable, FlatBlock):
    """A table drawn as one widget: a header row, a rule under it, and the rows."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"table-header", "table-line"}
    DEFAULT_CSS = """
    ReplyTable > .table-header { color: $primary; text-style: bold; }
    ReplyTable > .table-line { color: $foreground 30%; }
    """

    def _get_headers_and_rows(self) -> tuple[list[Content], list[list[Content]]]:
        headers: list[Content] = []
        rows: list[list[Content]] = []
        for section in self._blocks:  # thead, tbody
            for row in getattr(section, "_blocks", ()):
                cells = [cell._content for cell in getattr(row, "_blocks", ())]
                if section.tag == "thead":  # type: ignore[union-attr]
                    headers = cells
                elif cells:
                    rows.append(cells)
        return headers, rows

    def compose(self) -> ComposeResult:
        self._headers, self._rows = self._get_headers_and_rows()
        self._blocks.clear()
        self._flat = True
        yield from ()

    @property
    def plain(self) -> str:
        rows = [self._headers, *self._rows]
        return "\n".join(" | ".join(cell.plain for cell in row) for row in rows)

    def draw(self, width: int) -> Content:
        return draw_table(self._headers, self._rows, width)


def column_widths(cells: list[list[Content]], width: int) -> list[int]:
    """Each column as wide as its widest cell; the widest shrink until the table fits."""
    columns = len(cells[0])
    widths = [max(max(row[i].cell_length for row in cells), 1) for i in range(columns)]
    room = max(width - 3 * columns - 1, columns)  # "│ " + " │ " between + " │"
    while sum(widths) > room and max(widths) > 1:
        widths[widths.index(max(widths))] -= 1
    return widths


def draw_table(headers: list[Content], rows: list[list[Content]], width: int) -> Content:
    """A table for `width` cells: a header row, a rule under it, the rows, in a box (styled
    with the component classes `table-header` and `table-line`)."""
    columns = max([len(headers), *(len(row) for row in rows)])
    if not columns:
        return Content("")

    def pad(row: list[Content]) -> list[Content]:
        return [*row, *[Content("")] * (columns - len(row))]

    header, body = pad(headers), [pad(row) for row in rows]
    widths = column_widths([header, *body], width)

    def rule(left: str, middle: str, right: str) -> Content:
        line = left + middle.join("─" * (w + 2) for w in widths) + right
        return Content(line).stylize(".table-line")

    bar = Content("│").stylize(".table-line")

    def draw_row(cells: list[Content], style: str | None) -> list[Content]:
        wrapped = [cell.wrap(widths[i]) or [Content("")] for i, cell in enumerate(cells)]
        out: list[Content] = []
        for line in range(max(len(parts) for parts in wrapped)):
            parts: list[Content | tuple[str, str] | str] = [bar]
            for i, cell_lines in enumerate(wrapped):
                part = cell_lines[line] if line < len(cell_lines) else Content("")
                part = part.pad_right(widths[i] - part.cell_length)
                parts.extend([" ", part.stylize(style) if style else part, " ", bar])
            out.append(Content.assemble(*parts))
        return out

    lines = [rule("┌", "┬", "┐"), *draw_row(header, ".table-header"), rule("├", "┼", "┤")]
    for row in body:
        lines.extend(draw_row(row, None))
    lines.append(rule("└", "┴", "┘"))
    return Content("\n").join(lines)


class ReplyMarkdown(OneLayoutPass, Markdown):
    """Textual's Markdown, with flat lists and tables (see the module's docstring)."""

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        """The height for `width`. Textual arranges a container whose children all have
        dynamic heights for the size of its parent, and the chat log grows as a reply streams
        below, so every earlier reply would be arranged again; blocks are `height: auto`, so
        the width alone decides the height."""
        if not self._nodes:
            return 0
        return self.arrange(Size(width, 0)).total_region.height

    BLOCKS = {
        **Markdown.BLOCKS,
        "paragraph_open": ReplyParagraph,
        "bullet_list_open": ReplyBulletList,
        "ordered_list_open": ReplyOrderedList,
        "table_open": ReplyTable,
        "thead_open": Part,
        "tbody_open": Part,
        "tr_open": Part,
        "th_open": Part,
        "td_open": Part,
        "list_item_ordered_open": ItemPart,
        "list_item_unordered_open": ItemPart,
        "fence": CodeFence,
        "code_block": CodeFence,
    }


