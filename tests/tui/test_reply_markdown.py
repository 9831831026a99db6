"""Reply Markdown: flat lists and tables, and long replies streamed into several widgets.

The screen text is read from the real compositor of a headless app, so these tests check what a
user would see: the same text as Textual's own Markdown for lists, a boxed table, Textual's
layout kept for list items that hold more than one block, and a streamed reply that ends up
exactly like the same reply rendered in one go.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from textual.containers import VerticalScroll
from textual.widgets import Markdown
from textual.widgets._markdown import MarkdownFence

from tests.support.markdown_host import LISTS, NESTED, WIDTH, Host, screen_text
from tests.support.scripted_backend import REPLY, long_reply
from widgets.flat_markdown import FlatMarkdown
from widgets.messages import CHUNK_BLOCKS, AssistantMessage, MessageData
from widgets.reply_markdown import FlatBlock, ReplyMarkdown, ReplyTable


async def render(widget_class: type[Markdown], text: str,
                 check: Callable[[Markdown], None] | None = None) -> list[str]:
    """The screen's lines with `text` in a `widget_class`; `check` runs on the live widget."""
    markdown = widget_class()
    app = Host(markdown)
    async with app.run_test(size=(WIDTH, 50)) as pilot:
        await markdown.update(text)
        await pilot.pause()
        if check is not None:
            check(markdown)
        return screen_text(app)


async def test_flat_lists_show_what_textual_shows_in_one_widget() -> None:
    def check(markdown: Markdown) -> None:
        lists = [block for block in markdown.children if isinstance(block, FlatBlock)]
        assert len(lists) == 2 and all(block.flat and not block.children for block in lists)
        assert lists[1].plain == " 3. three\n 4. four"

    ours = await render(ReplyMarkdown, LISTS, check)
    textual = await render(Markdown, LISTS)
    assert ours == textual  # bullets, numbering, hanging indents, margins
    assert "    of this screen, for sure" in ours  # wrapped under the text, not the bullet


async def test_items_with_more_than_a_paragraph_keep_textuals_layout() -> None:
    def check(markdown: Markdown) -> None:
        outer = markdown.children[0]
        assert isinstance(outer, FlatBlock) and not outer.flat and outer.children
        inner = next(w for w in outer.walk_children() if isinstance(w, FlatBlock))
        # the nested list is simple: flat again
        assert inner.flat and inner.plain.endswith("nested two")

    ours = await render(ReplyMarkdown, NESTED, check)
    textual = await render(Markdown, NESTED)
    assert ours == textual


async def test_a_table_is_one_boxed_widget_that_fits_its_width() -> None:
    def check(markdown: Markdown) -> None:
        table = markdown.query_one(ReplyTable)
        assert table.flat and not table.children
        assert table.plain == "Tea | Water | Minutes\nGreen | 80 °C | 2-3\nBlack | 95 °C | 3-5"

    lines = await render(ReplyMarkdown, REPLY, check)
    start = lines.index("  ┌───────┬───────┬─────────┐")
    assert lines[start:start + 6] == [
        "  ┌───────┬───────┬─────────┐",
        "  │ Tea   │ Water │ Minutes │",
        "  ├───────┼───────┼─────────┤",
        "  │ Green │ 80 °C │ 2-3     │",
        "  │ Black │ 95 °C │ 3-5     │",
        "  └───────┴───────┴─────────┘",
    ]
    wide = "| a | b |\n|---|---|\n| " + "many words " * 12 + "| x |\n"
    lines = await render(ReplyMarkdown, wide)
    assert len(lines) > 5 and all(len(line) <= WIDTH for line in lines)  # wrapped in its cell
    assert lines[3].startswith("  │ many words") and lines[3].endswith("│ x │")


def test_a_chunk_splits_off_a_block_that_began_in_the_new_text() -> None:
    # the last block starts inside the new text: split there
    live = FlatMarkdown("# A\n\npara one\n")
    written = len(live.source)
    live.append("\nsecond para")
    assert live.last_block_start >= written
    assert live.split_off_last_block() == "second para"
    assert live.source == "# A\n\npara one\n\n" and live.block_count == 2
    # the last block began in what was written: no split, and it is the one parsed again
    live = FlatMarkdown("# A\n\npara one")
    written = len(live.source)
    live.append(" goes on")
    assert live.last_block_start == live.source.index("para") < written
    written = len(live.source)
    live.append(" on\n\nnew")
    assert live.last_block_start >= written
    assert live.split_off_last_block() == "new" and live.source.endswith("goes on on\n\n")
    # what stays goes on streaming as if the split block had never come
    live.append("more of it")
    assert live.text_at(40) == FlatMarkdown("# A\n\npara one goes on on\n\nmore of it").text_at(40)
    with pytest.raises(ValueError):
        FlatMarkdown("just text").split_off_last_block()


async def test_a_long_streamed_reply_spans_chunks_and_equals_a_one_shot_render() -> None:
    text = long_reply(800)
    view = AssistantMessage(MessageData("assistant", ""))
    app = Host(view)
    async with app.run_test(size=(WIDTH, 40)) as pilot:
        view.start_stream()
        for start in range(0, len(text), 37):  # many small writes, as a model gives them
            view.feed(text[start:start + 37])
            if start % (37 * 8) == 0:
                await pilot.pause(0.12)  # let frames go by
        await view.finish(text, None)
        await pilot.pause()
        chunks = view.chunks
        assert len(chunks) > 1 and all(isinstance(c, FlatMarkdown) for c in chunks)
        assert all(c.block_count >= CHUNK_BLOCKS for c in chunks[:-1])
        assert view.source == text and view.full_updates == 0
        assert not view.markdown.display and not view.markdown.source

        def drawn(widget: FlatMarkdown) -> list[str]:  # the margins between chunks differ
            return [line for line in widget.text_at(WIDTH - 4).split("\n") if line.strip()]

        one_shot = FlatMarkdown(text)
        await app.screen.mount(one_shot)
        assert [line for c in chunks for line in drawn(c)] == drawn(one_shot)
        # and drawn in one go, it is what Textual's Markdown shows (tests/tui/test_flat_markdown.py)


async def test_a_streamed_code_line_cut_at_the_edge_ends_in_a_code_block_that_scrolls() -> None:
    """While streaming, a code line wider than the reply is cut at its edge; once the reply is
    finished it is drawn by Textual's Markdown, whose code block scrolls sideways to show it."""
    long_line = "print(" + ", ".join(f"value_{n}" for n in range(12)) + ")"
    assert len(long_line) > WIDTH
    text = f"Here:\n\n```python\n{long_line}\n```\n\nDone.\n"
    view = AssistantMessage(MessageData("assistant", ""))
    app = Host(view)
    async with app.run_test(size=(WIDTH, 30)) as pilot:
        view.start_stream()
        view.feed(text)
        await pilot.pause(0.2)  # a frame draws it
        live = view.chunks[-1]
        assert isinstance(live, FlatMarkdown) and live.cuts_code
        assert long_line not in "\n".join(screen_text(app))
        await view.finish(text, None)
        await pilot.pause()
        assert view.full_updates == 1 and view.markdown.display
        assert not [c for c in view.children if isinstance(c, FlatMarkdown)]
        fence = view.markdown.query_one(MarkdownFence)
        assert long_line in fence.code and fence.max_scroll_x > 0
        fence.scroll_to(x=fence.max_scroll_x, animate=False)
        await pilot.pause()
        assert "value_11)" in "\n".join(screen_text(app))  # the end of the line, scrolled to


async def test_cuts_code_is_measured_where_the_code_block_is_drawn() -> None:
    """A code line that fits the reply's width but not the list item it sits in is cut too;
    code that fits is not, and neither is a long line of prose (it wraps)."""
    fits, nested = FlatMarkdown(), FlatMarkdown()
    app = Host(fits)
    async with app.run_test(size=(WIDTH, 40)) as pilot:
        await app.query_one(VerticalScroll).mount(nested)
        await pilot.pause()
        line = "x" * (fits.size.width - 2)  # with its indent of two, exactly the reply's width
        fits.append(f"```\n{line}\n```\n\n" + "word " * 40)
        nested.append(f"- item\n\n  ```\n  {line}\n  ```\n")
        await pilot.pause()
        assert not fits.cuts_code and nested.cuts_code
        nested._lines(200)  # drawn wide enough, nothing is cut at that width
        assert not nested._cut


async def test_the_final_write_and_a_frame_never_interleave() -> None:
    """finish() while a frame's write is starting a new chunk (which awaits) must wait for it."""
    text = long_reply(400)
    cut = text.index("### Part 4")  # three parts: more than CHUNK_BLOCKS blocks
    view = AssistantMessage(MessageData("assistant", ""))
    app = Host(view)
    async with app.run_test(size=(WIDTH, 40)) as pilot:
        view.start_stream()
        view.feed(text[:cut])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while view.chunks[-1].block_count < CHUNK_BLOCKS:
            assert loop.time() < deadline, "the first part never rendered"
            await pilot.pause(0.05)
        view.feed(text[cut:])
        flush = asyncio.ensure_future(view._flush())
        await asyncio.sleep(0)  # the frame's write is now inside the new-chunk step
        await asyncio.wait_for(view.finish(text, None), 10)
        await flush
        assert len(view.chunks) == 2  # the frame's new chunk landed before the end
        assert view.source == text and view.data.state == "done"
