"""Session metrics (what the TUI measures) and the F4 side panel that shows them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Sparkline, Static

from engine.metrics import rss_bytes
from engine.types import ModelInfo, ReplyMetrics
from widgets.layout_pass import relayout_if_resized
from widgets.messages import format_ms, format_tps


def format_mb(value: float | None) -> str:
    """Megabytes (or gigabytes when large)."""
    if value is None:
        return "n/a"
    return f"{value:.0f} MB" if value < 10_000 else f"{value / 1024:.1f} GB"


@dataclass
class SessionMetrics:
    """Everything the metrics panel and screen show, updated by the chat screen.

    `rss_source` and `clock` are injectable so that snapshots can show constant values.
    """

    replies: list[ReplyMetrics] = field(default_factory=list)
    model: ModelInfo | None = None
    context_limit: int | None = None
    context_used: int = 0
    gpu_memory: str | None = None
    streaming: bool = False
    live_tokens: int = 0
    live_start: float = 0.0
    live_first: float | None = None
    rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    rss_source: Callable[[], float] = field(default=lambda: rss_bytes() / 2**20)
    clock: Callable[[], float] = field(default=time.perf_counter)
    max_replies: int = 200

    def sample_rss(self) -> None:
        """Read the process's RSS now and keep its peak."""
        self.rss_mb = self.rss_source()
        self.peak_rss_mb = max(self.peak_rss_mb, self.rss_mb)

    def start_reply(self, prompt_tokens_guess: int = 0) -> None:
        """A reply started streaming."""
        self.streaming = True
        self.live_tokens = 0
        self.live_start = self.clock()
        self.live_first = None

    def tokens(self, n: int) -> None:
        """`n` more tokens arrived."""
        if n > 0 and self.live_first is None:
            self.live_first = self.clock()
        self.live_tokens += n

    def finish_reply(self, metrics: ReplyMetrics | None) -> None:
        """The reply ended; `metrics` are the engine's final measurements."""
        self.streaming = False
        if metrics is None:
            return
        self.replies.append(metrics)
        del self.replies[: -self.max_replies]
        self.context_used = metrics.prompt_tokens + metrics.completion_tokens
        self.peak_rss_mb = max(self.peak_rss_mb, metrics.peak_rss_mb)

    @property
    def last(self) -> ReplyMetrics | None:
        """The last finished reply's metrics."""
        return self.replies[-1] if self.replies else None

    @property
    def live_ttft_ms(self) -> float | None:
        """TTFT of the reply streaming now (None before its first token)."""
        if self.live_first is None:
            return None
        return (self.live_first - self.live_start) * 1000

    @property
    def live_tps(self) -> float:
        """Decode tokens/s of the reply streaming now."""
        if self.live_first is None or self.live_tokens < 2:
            return 0.0
        elapsed = self.clock() - self.live_first
        return (self.live_tokens - 1) / elapsed if elapsed > 0 else 0.0

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) rows for display."""
        last = self.last
        if self.streaming:
            ttft = self.live_ttft_ms
            ttft_text = "…" if ttft is None else format_ms(ttft)
            tps_text = format_tps(self.live_tps) + " (live)"
            tokens_text = f"{self.live_tokens} so far"
            # the streaming reply's prompt figures come at its end: not the last reply's
            prompt_text = prompt_tokens_text = "…"
        else:
            produced = last is not None and last.completion_tokens > 0  # a reply stopped
            # before its first token has no TTFT or speed
            ttft_text = format_ms(last.ttft_ms) if last and produced else "–"
            tps_text = format_tps(last.decode_tps) if last and produced else "–"
            tokens_text = f"{last.completion_tokens}" if last else "–"
            prompt_text = format_tps(last.prompt_tps) if last and produced else "–"
            prompt_tokens_text = f"{last.prompt_tokens:,}" if last else "–"
        limit = self.context_limit or (self.model.context_length if self.model else None)
        context = f"{self.context_used:,} / {limit:,}" if limit else f"{self.context_used:,}"
        model = self.model
        return [
            ("Model", model.name if model else "none loaded"),
            ("Backend", f"{model.backend} on {model.device}" if model else "–"),
            ("TTFT", ttft_text),
            ("Decode", tps_text),
            ("Prompt", prompt_text),
            ("Prompt tokens", prompt_tokens_text),
            ("Reply tokens", tokens_text),
            ("Context", context),
            ("RSS", f"{format_mb(self.rss_mb)} (peak {format_mb(self.peak_rss_mb)})"),
            ("GPU memory", self.gpu_memory or "n/a"),
            ("Replies", str(len(self.replies))),
        ]

    def tps_series(self) -> list[float]:
        """Decode tokens/s of the session's replies."""
        return [m.decode_tps for m in self.replies]

    def ttft_series(self) -> list[float]:
        """TTFT (ms) of the session's replies."""
        return [m.ttft_ms for m in self.replies]


def render_rows(rows: list[tuple[str, str]], width: int = 14) -> str:
    """Rows as aligned 'label  value' lines."""
    return "\n".join(f"{label:<{width}}{value}" for label, value in rows)


def chart_caption(tokens_per_s: bool, series: list[float]) -> str:
    """A chart's title with its scale: the last reply's value, and the lowest and highest
    shown (the chart's bottom and top), e.g. "tok/s 52.1 · replies 48.0–55.3"."""
    name = "tok/s" if tokens_per_s else "TTFT"
    if not series:
        return name
    shown = series[-40:]

    def fmt(value: float) -> str:
        return f"{value:.1f}" if tokens_per_s else format_ms(value)

    scale = f" · replies {fmt(min(shown))}–{fmt(max(shown))}" if len(shown) >= 2 else ""
    return f"{name} {fmt(shown[-1])}{scale}"


class MetricsPanel(VerticalScroll):
    """The F4 side panel: live numbers and tokens/s and TTFT sparklines."""

    DEFAULT_CSS = """
    MetricsPanel { width: 42; border-left: solid $primary 50%; padding: 0 1; }
    MetricsPanel > .title { text-style: bold; color: $accent; }
    MetricsPanel > .caption { color: $text-muted; margin-top: 1; }
    MetricsPanel > Sparkline { height: 3; }
    """

    def __init__(self, session: SessionMetrics, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.session = session
        self._rows_text: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("Metrics", classes="title")
        yield Static("", id="rows", markup=False)
        yield Static("tok/s", id="tps-caption", classes="caption", markup=False)
        yield Sparkline([], id="tps")
        yield Static("TTFT", id="ttft-caption", classes="caption", markup=False)
        yield Sparkline([], id="ttft")

    def refresh_metrics(self) -> None:
        """Redraw from `session`: only what changed, and a layout pass only when the rows
        need another line (it is called several times a second while a reply streams)."""
        rows = self.query_one("#rows", Static)
        text = render_rows(self.session.rows())
        if text != self._rows_text:
            self._rows_text = text
            before = rows.content_size
            rows.update(text, layout=False)
            relayout_if_resized(rows, before)
        for sparkline_id, series in (("#tps", self.session.tps_series()),
                                     ("#ttft", self.session.ttft_series())):
            caption = self.query_one(f"{sparkline_id}-caption", Static)
            caption.update(chart_caption(sparkline_id == "#tps", series), layout=False)
            sparkline = self.query_one(sparkline_id, Sparkline)
            # one sample would be drawn as a solid block the full height: a chart needs two
            sparkline.display = len(series) >= 2
            if list(sparkline.data or []) != series[-40:]:
                sparkline.data = series[-40:]
