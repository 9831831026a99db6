"""FlatMarkdown: a streaming reply drawn by one widget looks exactly like ReplyMarkdown.

Every sample is shown twice in a real headless app, once by `ReplyMarkdown` (Textual's block
widgets) and once by `FlatMarkdown`, and the screens are compared cell by cell from the real
compositor: the same characters, and the same styles (colours within 4 of 255 per channel, the
rounding of blended translucent colours), in a dark and a light theme.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from textual.app import App
from textual.containers import Vertical
from textual.geometry import Offset
from textual.selection import Selection
from textual.widgets import Markdown

from tests.support.markdown_host import LISTS, NESTED, WIDTH, Host, screen_text
from tests.support.scripted_backend import REPLY, long_reply
from widgets.flat_markdown import FlatMarkdown, parse_blocks
from widgets.reply_markdown import ReplyMarkdown

SAMPLES = {
    "lists": LISTS,
    "nested lists": NESTED,
    "mixed lists": "1. first\n   - sub a\n   - sub b\n2. second\n\n   more para\n3. third\n\n"
                   "- a\n  1. x\n  2. y\n    - deep\n      - deeper\n",
    "reply": REPLY,
    "headings": "# Title one\n\nText under.\n\n## Second level heading that is rather long "
                "and wraps around\n\npara\n\n### Third\n\n#### Fourth\n\n##### Five\n\n"
                "###### Six\n\nend",
    "code": "Before\n\n```python\ndef f(x):\n    return x * 2  # a comment long enough to run "
            "past the edge of the screen\n```\n\nAfter\n\n    indented code\n\ntext",
    "quotes": "> A quote that is long enough to wrap around the width of the screen for sure\n"
              "> second line\n\n> - a list in a quote\n> - two\n\npara\n\n> nested\n>\n"
              "> > inner quote\n\nend",
    "rules": "para\n\n---\n\nafter rule\n\n***\n",
    "table": "| a | b |\n|---|---|\n| " + "many words " * 12 + "| x |\n\nafter",
    "inline": "Some *em* and **strong** and ~~strike~~ and `code` and a [link](http://x.y) "
              "here.\nsoft break\\\nhard break",
    "long reply": long_reply(600),
}

Cell = tuple[str, tuple[Any, ...]]


def _rgb(color: Any) -> tuple[int, int, int] | None:
    return None if color is None else tuple(color.get_truecolor())  # type: ignore[return-value]


def screen_cells(app: App[Any]) -> list[list[Cell]]:
    """Every cell of the screen: its character and (colour, background, bold, italic, strike,
    underline)."""
    rows = []
    for strip in app.screen._compositor.render_strips():
        row: list[Cell] = []
        for segment in strip:
            style = segment.style
            key = (None, None, False, False, False, False)
            if style:
                key = (_rgb(style.color), _rgb(style.bgcolor), bool(style.bold),
                       bool(style.italic), bool(style.strike), bool(style.underline))
            row.extend((char, key) for char in segment.text)
        rows.append(row)
    return rows


def _close(a: tuple[int, int, int] | None, b: tuple[int, int, int] | None) -> bool:
    if a is None or b is None:
        return a == b
    return max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 4


def same_cell(a: Cell, b: Cell) -> bool:
    """Whether two cells look the same (a blank's colour, bold or italic cannot be seen)."""
    (char, (fg, bg, *flags)), (other, (fg2, bg2, *flags2)) = a, b
    if char != other or not _close(bg, bg2):
        return False
    if char.isspace():
        return flags[2:] == flags2[2:]  # strike and underline show on a blank
    return flags == flags2 and _close(fg, fg2)


async def show(widget: Markdown | FlatMarkdown, text: str, theme: str) -> tuple[list[str],
                                                                                 list[list[Cell]]]:
    """The screen's text and cells with `text` in `widget`."""
    app = Host(widget)
    async with app.run_test(size=(WIDTH, 200)) as pilot:
        app.theme = theme
        if isinstance(widget, Markdown):
            await widget.update(text)
        else:
            widget.append(text)
        await pilot.pause()
        return screen_text(app), screen_cells(app)


@pytest.mark.parametrize("theme", ["textual-dark", "textual-light"])
@pytest.mark.parametrize("name", list(SAMPLES))
async def test_flat_markdown_shows_what_reply_markdown_shows(name: str, theme: str) -> None:
    text = SAMPLES[name]
    blocks_text, blocks_cells = await show(ReplyMarkdown(), text, theme)
    flat_text, flat_cells = await show(FlatMarkdown(), text, theme)
    assert flat_text == blocks_text
    differ = [(y, x, a, b) for y, (row, other) in enumerate(zip(blocks_cells, flat_cells,
                                                                  strict=True))
              for x, (a, b) in enumerate(zip(row, other, strict=True)) if not same_cell(a, b)]
    assert not differ, f"{len(differ)} cells differ, first {differ[0]}"


def test_the_comparison_sees_a_wrong_colour() -> None:
    plain = ("x", ((224, 224, 224), (18, 18, 18), False, False, False, False))
    assert same_cell(plain, ("x", ((222, 226, 224), (18, 18, 20), False, False, False, False)))
    assert not same_cell(plain, ("x", ((200, 224, 224), (18, 18, 18), False, False, False, False)))
    assert not same_cell(plain, ("x", ((224, 224, 224), (18, 18, 18), True, False, False, False)))
    assert not same_cell(("x", plain[1]), ("y", plain[1]))


async def test_a_reply_streamed_in_small_pieces_draws_as_in_one_go() -> None:
    text = long_reply(500)
    streamed, whole = FlatMarkdown(), FlatMarkdown(text)
    async with Host(Vertical(streamed, whole)).run_test(size=(WIDTH, 20)) as pilot:
        for start in range(0, len(text), 23):
            streamed.append(text[start:start + 23])
        await pilot.pause()
        assert streamed.source == text
        assert streamed.text_at(56) == whole.text_at(56)
        assert streamed.block_count == whole.block_count == len(parse_blocks(text))
        # the blocks before the last were parsed once and kept: only the last is parsed again
        assert len(streamed._done) == streamed.block_count - 1


def test_line_separators_other_than_newline_stay_inside_their_block() -> None:
    """markdown-it breaks lines at "\\n" only; a form feed or U+2028 from a model must not
    shift where the streamed blocks are cut."""
    text = "para one\u2028 more\x0c still\n\nsecond para\n\nthird para\n\nfourth"
    streamed, whole = FlatMarkdown(), FlatMarkdown(text)
    for start in range(0, len(text), 3):
        streamed.append(text[start:start + 3])
    expected = ["para one\u2028 more\x0c still\n", "second para\n", "third para\n", "fourth"]
    assert [block.text for block in whole._blocks] == expected
    assert [block.text for block in streamed._blocks] == expected


async def test_a_frame_renders_only_the_lines_it_changed() -> None:
    widget = FlatMarkdown("# Title\n\nA first paragraph.\n\nA second")
    app = Host(widget)
    async with app.run_test(size=(WIDTH, 20)) as pilot:
        await pilot.pause()
        title = widget.render_line(0)
        last = widget.render_line(widget.size.height - 2)
        widget.append(" paragraph, longer now.")
        await pilot.pause()
        assert widget.render_line(0) is title  # untouched: the same rendered line
        new_last = widget.render_line(widget.size.height - 2)
        assert new_last is not last and "longer now" in new_last.text
        assert "A second paragraph, longer now." in "\n".join(screen_text(app))


async def test_code_blocks_links_and_selection() -> None:
    widget = FlatMarkdown("See [the docs](https://example.org/docs).\n\n```sh\nls -l\n```\n\n"
                          "- item\n\n  ```\n  nested\n  ```\n")
    opened: list[str] = []
    app = Host(widget)
    async with app.run_test(size=(WIDTH, 20)) as pilot:
        app.open_url = lambda url, **_: opened.append(url)  # type: ignore[method-assign]
        await pilot.pause()
        assert widget.code_blocks == ["ls -l", "nested"]
        line = "\n".join(screen_text(app))
        assert "See the docs." in line and "ls -l" in line
        x = next(i for i, row in enumerate(screen_text(app)) if "the docs" in row)
        column = screen_text(app)[x].index("the docs")
        await pilot.click(offset=(column + 2, x))
        assert opened == ["https://example.org/docs"]
        selected = widget.get_selection(Selection.from_offsets(Offset(0, 0), Offset(7, 0)))
        assert selected is not None and selected[0] == "See the"


async def test_a_theme_change_redraws_the_code_in_the_new_colours() -> None:
    text = SAMPLES["code"]
    widget = FlatMarkdown(text)
    app = Host(widget)
    async with app.run_test(size=(WIDTH, 40)) as pilot:
        await pilot.pause()
        dark = screen_cells(app)
        app.theme = "textual-light"
        await pilot.pause()
        light = screen_cells(app)
    _, expected = await show(ReplyMarkdown(), text, "textual-light")
    assert light != dark
    assert all(same_cell(a, b) for row, other in zip(expected, light, strict=False)
               for a, b in zip(row, other, strict=True))


def test_the_sample_text_has_every_kind_of_block() -> None:
    kinds = {block.kind for text in SAMPLES.values() for block in parse_blocks(text)}
    assert {"paragraph", "h1", "h2", "h3", "fence", "quote", "hr", "bullets", "numbers",
            "table"} <= kinds
    assert re.search(r"^    indented", SAMPLES["code"], re.MULTILINE)


@pytest.mark.parametrize("kind", [FlatMarkdown, ReplyMarkdown])
async def test_a_code_line_cut_at_the_edge_ends_in_an_arrow(kind: type) -> None:
    """A code line cut at the edge looked like a line that ends there: streaming (FlatMarkdown)
    and finished (ReplyMarkdown), its last visible cell is `MORE`; a line that fits has none."""
    from widgets.code_fence import MORE

    rows, _ = await show(kind(), SAMPLES["code"], "textual-dark")
    cut = next(row for row in rows if "return x * 2" in row)
    assert cut.rstrip().endswith(MORE) and "past the edge" not in cut
    assert not next(row for row in rows if "def f(x)" in row).rstrip().endswith(MORE)
