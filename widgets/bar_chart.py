"""A horizontal bar chart drawn with block characters (one bar per labelled value)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Static

_EIGHTHS = " ▏▎▍▌▋▊▉█"


@dataclass(frozen=True)
class Bar:
    """One bar: its label, its value (None: no value) and the text shown after it."""

    label: str
    value: float | None
    text: str = ""


def bar_text(value: float, top: float, width: int) -> str:
    """A bar of `value` out of `top`, `width` cells at most, in eighths of a cell."""
    if top <= 0 or value <= 0:
        return ""
    eighths = round(min(value / top, 1.0) * width * 8)
    full, rest = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[rest] if rest else "")


def render_bars(bars: list[Bar], width: int = 40, label_width: int | None = None) -> str:
    """The chart as plain text lines: 'label  ████▌ text'."""
    if not bars:
        return "(no data)"
    label_width = label_width or max(len(b.label) for b in bars)
    top = max((b.value or 0.0) for b in bars)
    lines = []
    for bar in bars:
        label = bar.label[:label_width].ljust(label_width)
        if bar.value is None:
            lines.append(f"{label}  {bar.text or '—'}")
            continue
        drawn = bar_text(bar.value, top, width)
        lines.append(f"{label}  {drawn.ljust(width)} {bar.text}")
    return "\n".join(lines)


class BarChart(Static):
    """A titled horizontal bar chart."""

    DEFAULT_CSS = """
    BarChart { height: auto; margin-bottom: 1; }
    """

    def __init__(self, title: str, bars: list[Bar], width: int = 40, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.title = title
        self.bars = bars
        self.bar_width = width

    def on_mount(self) -> None:
        self.update(self.render_text())

    def render_text(self) -> Text:
        """The title and the bars."""
        text = Text(self.title + "\n", style="bold")
        text.append(render_bars(self.bars, self.bar_width))
        return text
