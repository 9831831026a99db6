"""Markdown drawn by a single widget, for replies while they stream.

Textual's Markdown mounts a widget per block. While a fast model writes, a frame adds several
blocks, and mounting them (composing, styling, laying out) takes most of the frame: about
12 ms a block on a slow machine, so the end of a long reply reaches the screen well after its
last token (benchmarks/tui_stream.py). `FlatMarkdown` parses its source and draws every block
as lines of one widget, with the same layout as `ReplyMarkdown` (margins, indents, code blocks,
lists, quotes, tables) and the same styles through component classes: a new block costs its
parse and its lines, and a frame lays out one widget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import accumulate
from typing import ClassVar

from markdown_it import MarkdownIt
from markdown_it.token import Token
from textual.color import Color
from textual.content import Content
from textual.geometry import Size
from textual.strip import Strip
from textual.style import Style
from textual.visual import Visual
from textual.widget import Widget
from textual.widgets import Markdown
from textual.widgets._markdown import MarkdownBlock, MarkdownFence

from widgets.code_fence import MORE
from widgets.layout_pass import OneLayoutPass, relayout_if_resized
from widgets.reply_markdown import LIST_SUFFIX, draw_table

_PARSER = MarkdownIt("gfm-like")
_BLANK = Content("")

_OPEN_KINDS = {
    "paragraph_open": "paragraph",
    "blockquote_open": "quote",
    "bullet_list_open": "bullets",
    "ordered_list_open": "numbers",
    "list_item_open": "item",
    "table_open": "table",
    "thead_open": "thead",
    "tbody_open": "tbody",
    "tr_open": "row",
    "th_open": "cell",
    "td_open": "cell",
}

_MARGINS = {  # (top, bottom) of a block directly in the document, as Textual's CSS sets them
    "paragraph": (0, 1), "h1": (2, 1), "h2": (2, 1), "h3": (1, 1), "h4": (1, 1), "h5": (1, 1),
    "h6": (1, 1), "fence": (1, 1), "hr": (0, 1), "quote": (1, 1), "bullets": (0, 1),
    "numbers": (0, 1), "table": (0, 1),
}


@dataclass(frozen=True)
class Place:
    """Where a block sits: straight in the document or not, inside a list or not (Textual's
    CSS gives margins by place), inside quotes."""

    top: bool = True
    in_list: bool = False
    quotes: int = 0
    """How many quotes the block is in (each tints the background)."""

    def inside(self, block: Block) -> Place:
        """The place of `block`'s children."""
        return Place(False, self.in_list or block.kind == "item",
                     self.quotes + (block.kind == "quote"))


DOCUMENT = Place()


@dataclass
class Block:
    """One parsed block: its kind, inline text, children, and what code blocks need."""

    kind: str
    content: Content = field(default_factory=lambda: Content(""))
    children: list[Block] = field(default_factory=list)
    info: str = ""
    """A list item's number, a code block's language."""
    code: str = ""
    level: int = 0
    """Nesting depth in the token stream (a bullet's symbol goes by it)."""
    lines: tuple[int, int] = (0, 0)
    """The source lines the block spans."""
    text: str = ""
    """A top-level block's source."""
    start: int = 0
    """Where a top-level block's first line starts in the source."""


def _inline(token: Token) -> Content:
    """Textual's conversion of inline Markdown (emphasis, code, links) to Content."""
    return MarkdownBlock._token_to_content(None, token)  # type: ignore[arg-type]


def parse_blocks(source: str) -> list[Block]:
    """The top-level blocks of `source`, as Textual's Markdown reads them."""
    root = Block("root")
    stack = [root]
    for token in _PARSER.parse(source):
        kind = token.type
        if kind == "heading_open" or kind in _OPEN_KINDS:
            block = Block(token.tag if kind == "heading_open" else _OPEN_KINDS[kind],
                          info=token.info, level=token.level,
                          lines=tuple(token.map or (0, 0)))  # type: ignore[arg-type]
            stack[-1].children.append(block)
            stack.append(block)
        elif kind.endswith("_close") and len(stack) > 1:
            stack.pop()
        elif kind == "inline":
            stack[-1].content = _inline(token)
        elif kind in ("fence", "code_block"):
            stack[-1].children.append(Block("fence", info=token.info, code=token.content.rstrip(),
                                            lines=tuple(token.map or (0, 0))))  # type: ignore[arg-type]
        elif kind == "hr":
            stack[-1].children.append(Block("hr", lines=tuple(token.map or (0, 0))))  # type: ignore[arg-type]
    # markdown-it numbers lines by "\n" alone (str.splitlines also breaks at "\u2028" and others)
    offsets = list(accumulate((len(line) + 1 for line in source.split("\n")), initial=0))
    for block in root.children:
        first, last = block.lines
        block.start = offsets[first]
        block.text = source[block.start:offsets[last]]
    return root.children


class FlatMarkdown(OneLayoutPass, Widget):
    """Markdown drawn as one widget; `append` adds streamed text."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "em", "strong", "s", "code_inline", "h1", "h2", "h3", "h4", "h5", "h6", "h1-fill",
        "h2-fill", "h3-fill", "h4-fill", "h5-fill", "h6-fill", "fence",
        "quote", "quote-border", "rule", "list-bullet", "table", "table-header", "table-line",
    }
    DEFAULT_CSS = """
    FlatMarkdown {
        height: auto;
        padding: 0 2 0 2;
        color: $foreground;
        &:dark > .code_inline { background: $warning 10%; color: $text-warning 95%; }
        &:light > .code_inline { background: $error 5%; color: $text-error 95%; }
        & > .em { text-style: italic; }
        & > .strong { text-style: bold; }
        & > .s { text-style: strike; }
        & > .h1 { color: $markdown-h1-color; text-style: $markdown-h1-text-style; }
        & > .h1-fill { background: $markdown-h1-background; }
        & > .h2 { color: $markdown-h2-color; text-style: $markdown-h2-text-style; }
        & > .h2-fill { background: $markdown-h2-background; }
        & > .h3 { color: $markdown-h3-color; text-style: $markdown-h3-text-style; }
        & > .h3-fill { background: $markdown-h3-background; }
        & > .h4 { color: $markdown-h4-color; text-style: $markdown-h4-text-style; }
        & > .h4-fill { background: $markdown-h4-background; }
        & > .h5 { color: $markdown-h5-color; text-style: $markdown-h5-text-style; }
        & > .h5-fill { background: $markdown-h5-background; }
        & > .h6 { color: $markdown-h6-color; text-style: $markdown-h6-text-style; }
        & > .h6-fill { background: $markdown-h6-background; }
        & > .fence { color: rgb(210,210,210); background: black 10%; }
        &:light > .fence { background: white 30%; }
        & > .quote { background: $boost; }
        & > .quote-border { color: $text-primary 50%; }
        &:light > .quote-border { color: $text-secondary; }
        & > .rule { color: $secondary; }
        & > .list-bullet { color: $text-primary; }
        &:light > .list-bullet { color: $text-secondary; }
        &:light > .table { background: white 30%; }
        & > .table-header { color: $primary; text-style: bold; }
        & > .table-line { color: $foreground 30%; }
    }
    """

    def __init__(self, markdown: str = "", **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._source = ""
        self._blocks: list[Block] = []
        self._done: list[Block] = []
        """The blocks before the last: complete, never parsed again."""
        self._tail_at = 0
        """Where the last block starts in the source."""
        self._drawn: tuple[int, list[Content]] | None = None
        self._cache: dict[tuple[str, int], list[Content]] = {}
        """Lines of top-level blocks by (source, width): a frame draws only what changed."""
        self._cut: set[tuple[str, int]] = set()
        """The keys of `_cache` whose lines cut a code line at the edge."""
        self._cutting = False
        self._strips: dict[int, tuple[Content, int, Strip]] = {}
        """Rendered lines by the id of their Content: a frame renders only new lines."""
        self._highlights: dict[tuple[str, str], Content] = {}
        if markdown:
            self.append(markdown)

    @property
    def source(self) -> str:
        """The Markdown source shown."""
        return self._source

    @property
    def block_count(self) -> int:
        """How many top-level blocks the source holds."""
        return len(self._blocks)

    @property
    def code_blocks(self) -> list[str]:
        """The bodies of the code blocks drawn, in order (nested ones too)."""
        found: list[str] = []

        def walk(blocks: list[Block]) -> None:
            for block in blocks:
                if block.kind == "fence":
                    found.append(block.code)
                walk(block.children)

        walk(self._blocks)
        return found

    @property
    def cuts_code(self) -> bool:
        """Whether a code line is cut at the widget's edge, at its present width (or the last
        it was drawn at, when folded away). Textual's code block would scroll sideways to show
        the rest."""
        width = self.size.width or (self._drawn[0] if self._drawn else 0)
        if not width or not self._blocks:
            return False
        self._lines(width)  # drawn at this width, if not yet
        return bool(self._cut)

    def text_at(self, width: int) -> str:
        """The text drawn for a content width of `width` cells (tests compare it)."""
        return "\n".join(line.plain for line in self._lines(width))

    def append(self, text: str) -> None:
        """Add `text` to the source and draw it on the next refresh. Only the last block is
        parsed again: the blocks before it are complete (as Textual's streaming assumes)."""
        self._source += text
        tail = self._source[self._tail_at:]
        blocks = parse_blocks(tail)
        for block in blocks:
            block.start += self._tail_at
        if len(blocks) > 1:
            self._tail_at = blocks[-1].start
            self._done.extend(blocks[:-1])
            blocks = blocks[-1:]
        self._blocks = self._done + blocks
        self.redraw()

    @property
    def last_block_start(self) -> int:
        """Where the last block starts in the source (the line it begins on)."""
        return self._tail_at

    def split_off_last_block(self) -> str:
        """Take the last block away, to go on in another widget, and return its source. The
        text before it (blank lines included) stays, and so does everything else."""
        if not self._done:
            raise ValueError("there is no block before the last one to keep")
        text = self._source[self._tail_at:]
        self._source = self._source[:self._tail_at]
        last = self._done.pop()  # the last block again: a later append parses it anew
        self._tail_at = last.start
        self._blocks = [*self._done, last]
        self.redraw()
        return text

    def redraw(self) -> None:
        """Forget the drawn lines; lay out again only if the height changed."""
        before = self.content_size
        self._drawn = None
        self.refresh()
        if self.is_mounted:
            relayout_if_resized(self, before)

    def notify_style_update(self) -> None:
        self._highlights.clear()  # highlighting depends on the theme (dark or light)
        self._cache.clear()
        self._cut.clear()
        self._strips.clear()
        self._drawn = None
        super().notify_style_update()

    async def action_link(self, href: str) -> None:
        """Open a clicked link, as Textual's Markdown does."""
        self.app.open_url(href)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self._lines(width)) if width else 0

    def get_content_width(self, container: Size, viewport: Size) -> int:
        return container.width

    def render(self) -> Content:
        return Content("\n").join(self._lines(self.size.width))

    def render_line(self, y: int) -> Strip:
        """One line, rendered once for as long as it is drawn (a selection renders the
        whole widget, as Textual does)."""
        if self.text_selection is not None:
            return super().render_line(y)
        width = self.size.width
        lines = self._lines(width)
        if y >= len(lines):
            return Strip.blank(width, self.visual_style.rich_style)
        line = lines[y]
        cached = self._strips.get(id(line))
        if cached is None or cached[0] is not line or cached[1] != width:
            strips = Visual.to_strips(self, line, width, 1, self.visual_style)
            cached = (line, width, strips[0] if strips else Strip.blank(width))
            self._strips[id(line)] = cached
        return cached[2]

    def _lines(self, width: int) -> list[Content]:
        if not self._blocks:
            return []
        if self._drawn is None or self._drawn[0] != width:
            fresh: dict[tuple[str, int], list[Content]] = {}
            cut: set[tuple[str, int]] = set()
            parts: list[tuple[Block, list[Content]]] = []
            for block in self._blocks:
                key = (block.text, width)
                drawn = self._cache.get(key)
                if drawn is None:
                    self._cutting = False
                    drawn = self._draw_block(block, max(width, 4), DOCUMENT)
                    if self._cutting:
                        cut.add(key)
                elif key in self._cut:
                    cut.add(key)
                fresh[key] = drawn
                parts.append((block, drawn))
            self._cache, self._cut = fresh, cut
            lines = self._stack(parts, DOCUMENT)
            self._drawn = (width, lines)
            drawn_ids = {id(line) for line in lines}
            self._strips = {key: value for key, value in self._strips.items() if key in drawn_ids}
        return self._drawn[1]

    # drawing: each function returns a block's lines, each exactly `width` cells

    def _margins(self, block: Block, place: Place) -> tuple[int, int]:
        if block.kind == "paragraph" and not place.top:
            return 0, 0
        if block.kind in ("bullets", "numbers") and place.in_list:
            return 0, 0
        return _MARGINS.get(block.kind, (0, 0))

    def _stack(self, parts: list[tuple[Block, list[Content]]], place: Place) -> list[Content]:
        """Blocks one under the other, with their vertical margins collapsed as Textual does."""
        lines: list[Content] = []
        below = None
        for block, drawn in parts:
            top, bottom = self._margins(block, place)
            lines.extend([_BLANK] * (top if below is None else max(top, below)))
            lines.extend(drawn)
            below = bottom
        lines.extend([_BLANK] * (below or 0))
        return lines

    def _draw_children(self, block: Block, width: int, place: Place) -> list[Content]:
        inner = place.inside(block)
        parts = [(child, self._draw_block(child, width, inner)) for child in block.children]
        return self._stack(parts, inner)

    def _draw_block(self, block: Block, width: int, place: Place) -> list[Content]:
        kind = block.kind
        if kind == "paragraph":
            return block.content.wrap(width) or [Content("")]
        if kind in ("h1", "h2", "h3", "h4", "h5", "h6"):
            return self._draw_heading(block, width)
        if kind == "fence":
            return self._draw_fence(block, width, place)
        if kind == "hr":
            return [Content(""), Content("─" * width).stylize(".rule")]  # under a padding line
        if kind == "quote":
            inner = self._draw_children(block, max(width - 3, 1), place)
            background = self._fill(place.inside(block))
            border = Content("▌").stylize(self._border_style(self._fill(place), background))
            return [Content.assemble(border, " ", line.pad_right(width - 3 - line.cell_length),
                                     " ").stylize_before(background) for line in inner]
        if kind in ("bullets", "numbers"):
            return self._draw_list(block, width, place)
        if kind == "table":
            headers, rows = _table_cells(block)
            table = draw_table(headers, rows, width)
            fill = self._fill(place, "table")
            return [line.pad_right(width - line.cell_length).stylize_before(fill)
                    for line in table.split("\n")]
        return self._draw_children(block, width, place)

    def _draw_heading(self, block: Block, width: int) -> list[Content]:
        kind = block.kind
        lines = block.content.wrap(width) or [Content("")]
        if kind == "h1":  # centred
            lines = [line.pad_left((width - line.cell_length) // 2) for line in lines]
        lines = [line.stylize_before(f".{kind}") for line in lines]
        if kind != "h3":  # as wide as the document (h3 is as wide as its text)
            lines = [line.pad_right(width - line.cell_length) for line in lines]
        return [line.stylize_before(f".{kind}-fill") for line in lines]

    def _fill(self, place: Place, name: str | None = None) -> Style:
        """A solid background (and text colour) for a block at `place`: the widget's
        background, tinted once per quote the block is in, then by the component class `name`.
        Textual blends a component class's translucent background wrongly when it styles
        Content, so blocks with one get the colour worked out here."""
        base = self.get_visual_style()
        background = base.background or Color(0, 0, 0)
        for _ in range(place.quotes):
            background += self.get_component_styles("quote").background
        foreground = base.foreground
        if name is not None:
            styles = self.get_component_styles(name)
            if styles.has_rule("background"):
                background += styles.background
            if styles.has_rule("color"):
                foreground = styles.color
        return Style(background=background, foreground=foreground)

    def _border_style(self, outside: Style, inside: Style) -> Style:
        """A quote's bar: on the quote's background, its colour blended over what is around
        the quote (as Textual draws an outer border)."""
        color = self.get_component_styles("quote-border").color
        assert outside.background is not None
        return Style(background=inside.background, foreground=outside.background + color)

    def _highlight(self, code: str, language: str) -> Content:
        key = (code, language)
        if key not in self._highlights:
            app = self.app
            self._highlights[key] = MarkdownFence.highlight(
                code, language, ansi=app.native_ansi_color, dark=app.current_theme.dark)
        return self._highlights[key]

    def _draw_fence(self, block: Block, width: int, place: Place) -> list[Content]:
        """A code block: a blank line, each line indented by two, a blank line. A line longer
        than the width is cut at the edge with `MORE` in its last cell (the finished reply's
        code block scrolls sideways to show the rest: see `cuts_code`)."""
        code = self._highlight(block.code, block.info)
        lines = [Content(""), *(Content.assemble("  ", line) for line in code.split("\n")),
                 Content("")]
        style = self._fill(place, "fence")
        drawn = []
        for line in lines:
            if line.cell_length > width:
                self._cutting = True
                line = Content.assemble(line.truncate(max(width - 1, 0)), (MORE, "bold"))
            drawn.append(line.truncate(width, pad=True).stylize_before(style))
        return drawn

    def _draw_list(self, block: Block, width: int, place: Place) -> list[Content]:
        items = [item for item in block.children if item.kind == "item"]
        if block.kind == "numbers":
            start = 1
            if items and items[0].info.isdigit():
                start = int(items[0].info)
            symbols = [f"{n}{LIST_SUFFIX}" for n in range(start, start + len(items))]
            size = max((len(symbol) for symbol in symbols), default=0)
            symbols = [symbol.rjust(size + 1) for symbol in symbols]
        else:
            bullets = Markdown.BULLETS  # by depth, as ReplyMarkdown's lists show them
            symbols = [bullets[(item.level // 2) % len(bullets)] for item in items]
        lines: list[Content] = []
        for symbol, item in zip(symbols, items, strict=True):
            indent = len(symbol)
            inner = self._draw_children(item, max(width - indent, 1), place.inside(block))
            inner = inner or [Content("")]
            lines.append(Content.assemble((symbol, ".list-bullet"), inner[0]))
            lines.extend(Content.assemble(" " * indent, line) for line in inner[1:])
        return lines


def _table_cells(block: Block) -> tuple[list[Content], list[list[Content]]]:
    headers: list[Content] = []
    rows: list[list[Content]] = []
    for section in block.children:
        for row in section.children:
            cells = [cell.content for cell in row.children]
            if section.kind == "thead":
                headers = cells
            elif cells:
                rows.append(cells)
    return headers, rows
