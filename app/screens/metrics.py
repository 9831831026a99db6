"""The full metrics screen (F5): live numbers, session charts and a table of the last replies."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Sparkline, Static

from app.screens.bench import BenchScreen
from app.screens.dialogs import TextPromptScreen
from engine.bench.report import load_report
from engine.errors import LampchatError
from widgets.messages import format_ms
from widgets.metrics_panel import SessionMetrics, render_rows

REFRESH_S = 0.5
TABLE_ROWS = 50


class MetricsScreen(Screen[None]):
    """Everything measured this session. Esc or F5 goes back to the chat."""

    BINDINGS = [
        Binding("escape,f5,q", "close", "Back", tooltip="Back to chat"),
        Binding("o", "open_bench", "Bench file", tooltip="Chart a `lampchat bench --json` file"),
    ]

    def __init__(self, session: SessionMetrics, live: bool = True,
                 bench_path: str = "") -> None:
        super().__init__(id="metrics")
        self.session = session
        self.live = live
        self.bench_path = bench_path
        """The bench file offered by `o` (the last one opened)."""
        self._shown_replies = -1

    def compose(self) -> ComposeResult:
        with Horizontal(id="metrics-top"):
            with Vertical(id="metrics-now"):
                yield Static("Now", classes="title")
                yield Static("", id="metrics-rows", markup=False)
            with Vertical(id="metrics-charts"):
                yield Static("", id="tps-caption", classes="caption", markup=False)
                yield Sparkline([], id="tps-chart")
                yield Static("", id="ttft-caption", classes="caption", markup=False)
                yield Sparkline([], id="ttft-chart")
        yield Static("Last replies  (o: chart a `lampchat bench --json` file)", classes="title",
                     markup=False)
        yield DataTable(id="replies", zebra_stripes=True, cursor_type="row")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(
            "#", "Model", "Backend", "TTFT", "Decode tok/s", "Prompt tok/s", "Prompt", "Reply",
            "Total", "Peak RSS", "End",
        )
        self.refresh_metrics()
        if self.live:
            self.set_interval(REFRESH_S, self.refresh_metrics)

    def refresh_metrics(self) -> None:
        """Redraw everything from the session."""
        session = self.session
        if self.live:
            session.sample_rss()
        self.query_one("#metrics-rows", Static).update(render_rows(session.rows(), width=16))
        tps = session.tps_series()
        ttft = session.ttft_series()
        self.query_one("#tps-caption", Static).update(
            "Decode tokens/s per reply"
            + (f"  (min {min(tps):.1f}, max {max(tps):.1f})" if tps else "")
        )
        self.query_one("#ttft-caption", Static).update(
            "TTFT per reply"
            + (f"  (min {format_ms(min(ttft))}, max {format_ms(max(ttft))})" if ttft else "")
        )
        self.query_one("#tps-chart", Sparkline).data = tps[-120:]
        self.query_one("#ttft-chart", Sparkline).data = ttft[-120:]
        table = self.query_one(DataTable)
        first = max(0, len(session.replies) - TABLE_ROWS)
        if self._shown_replies == len(session.replies):
            return
        self._shown_replies = len(session.replies)
        table.clear()
        for number, m in enumerate(session.replies[first:], start=first + 1):
            table.add_row(
                str(number),
                m.model,
                m.backend,
                format_ms(m.ttft_ms),
                f"{m.decode_tps:.1f}",
                f"{m.prompt_tps:.1f}",
                str(m.prompt_tokens),
                str(m.completion_tokens),
                format_ms(m.total_ms),
                f"{m.peak_rss_mb:.0f} MB",
                m.finish_reason,
            )

    def action_close(self) -> None:
        self.dismiss(None)

    def action_open_bench(self) -> None:
        """Ask for a `lampchat bench --json` file and chart it."""
        default = self.bench_path or str(Path.cwd() / "bench.json")
        self.app.push_screen(TextPromptScreen("Bench JSON file to chart", default, action="opens"),
                             self._open_bench)

    def _open_bench(self, path: str | None) -> None:
        if not path or not path.strip():
            return
        self.open_bench(path.strip())

    def open_bench(self, path: str) -> bool:
        """Chart the bench report at `path`; a bad file is a notification."""
        try:
            report = load_report(path)
        except LampchatError as exc:
            self.notify(str(exc), title="Bench report", severity="error")
            return False
        self.bench_path = path
        self.app.push_screen(BenchScreen(report, path))
        return True
