"""A `lampchat bench --json` report, charted: one bar chart per figure, and the results table.

Opened from the metrics screen (F5, then `o`) with the path of a bench JSON file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from engine.bench.report import (
    case_key,
    higher_is_better,
    host_line,
    metric_label,
    metric_names,
    results_table,
)
from engine.bench.stats import Stat
from widgets.bar_chart import Bar, BarChart


def case_label(result: dict[str, Any]) -> str:
    """'model · backend · device' of one bench case."""
    model, backend, device = case_key(result)
    used = result.get("device_used")
    if used and used != device:
        device = f"{device}→{used}"
    return f"{Path(model).stem} · {backend} · {device}"


def status_text(result: dict[str, Any]) -> str:
    """'ok', or 'failed: why' / 'skipped: why'."""
    status = str(result.get("status") or "unknown")
    return status if status == "ok" else f"{status}: {result.get('error') or 'no reason given'}"


def _value(result: dict[str, Any], name: str) -> Stat | None:
    data = (result.get("metrics") or {}).get(name)
    if isinstance(data, dict):
        try:
            return Stat.from_dict(data)
        except (KeyError, TypeError, ValueError):
            return None
    return None


def charts(report: dict[str, Any]) -> list[tuple[str, list[Bar]]]:
    """(title, bars) for every figure of the report: speeds, TTFT, load time, peak RSS."""
    results = list(report.get("results") or [])
    out: list[tuple[str, list[Bar]]] = []
    for name in metric_names(report):
        bars = []
        for result in results:
            stat = _value(result, name)
            if stat is None:
                bars.append(Bar(case_label(result), None, status_text(result)))
                continue
            spread = f" ± {stat.stddev:.1f}" if stat.n > 1 else ""
            bars.append(Bar(case_label(result), stat.mean, f"{stat.mean:.1f}{spread}"))
        better = "higher is better" if higher_is_better(name) else "lower is better"
        out.append((f"{metric_label(name)} ({better})", bars))
    for key, title in (("load_s", "load s (lower is better)"),
                       ("peak_rss_mb", "peak RSS MB (lower is better)")):
        bars = [
            Bar(case_label(r), float(r[key]), f"{float(r[key]):.1f}")
            if isinstance(r.get(key), int | float) else Bar(case_label(r), None, status_text(r))
            for r in results
        ]
        if any(b.value is not None for b in bars):
            out.append((title, bars))
    return out


class BenchScreen(Screen[None]):
    """Charts and the table of one bench report. Esc goes back."""

    BINDINGS = [Binding("escape,q", "close", "Back")]

    def __init__(self, report: dict[str, Any], path: str = "") -> None:
        super().__init__(id="bench")
        self.report = report
        self.path = path

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="bench-body"):
            name = Path(self.path).name if self.path else ""
            yield Static(f"Bench report {name}".strip(), classes="title", markup=False)
            yield Static(host_line(self.report), classes="caption", markup=False)
            for index, (title, bars) in enumerate(charts(self.report)):
                yield BarChart(title, bars, id=f"chart-{index}")
            yield DataTable(id="bench-table", zebra_stripes=True, cursor_type="row")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = results_table(self.report)
        grid = self.query_one(DataTable)
        grid.add_columns(*table.headers)
        for row in table.rows:
            grid.add_row(*row)

    def action_close(self) -> None:
        self.dismiss(None)
