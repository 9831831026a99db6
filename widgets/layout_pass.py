"""Fewer layout passes while a reply streams: a mixin and a helper for content-sized widgets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.geometry import Size
from textual.widget import Widget

if TYPE_CHECKING:
    _Base = Widget
else:
    _Base = object


class OneLayoutPass(_Base):
    """When a layout pass gives this widget a new size, it does not ask for another pass.

    Textual stores a widget's new virtual size through a reactive that requests a layout, so
    every widget that a pass resizes requests a second pass and a repaint of its whole region.
    When a streaming reply grows by a line, that is every widget from the reply up to the
    scrolling log: the second pass redraws the whole visible log again, for nothing, since the
    first pass already placed everything at its new size. Widgets whose size comes from their
    content alone (`height: auto`, a scrolling log) take the new size quietly instead; the
    scrollbars are still updated, and a change of scrollbar visibility still lays out again.

    Put it first among the bases: it is not a widget class, so Textual's CSS (which follows
    the first widget base) still sees the widget's own base.
    """

    def _size_updated(
        self, size: Size, virtual_size: Size, container_size: Size, layout: bool = True
    ) -> bool:
        return super()._size_updated(size, virtual_size, container_size, layout=False)


def relayout_if_resized(widget: Widget, before: Size) -> None:
    """After `widget` was repainted with new content (`refresh()` without layout), ask for a
    layout pass only if its content height at its width is no longer `before.height`.

    A pass arranges the whole screen; while a reply streams, most frames only add words to a
    line that is already there, and a repaint of the one widget is enough.
    """
    width = before.width
    if not width or widget.get_content_height(before, before, width) != before.height:
        widget.refresh(layout=True)
