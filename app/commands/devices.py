"""`lampchat devices`: the compute devices found, which backend can use which, and GPU builds."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.devices import DeviceReport
from engine.registry import detect


def add_parser(subparsers: Any) -> None:
    """Register `devices`."""
    parser = subparsers.add_parser(
        "devices", help="list CPUs, GPUs and OpenCL devices and which backend can use them"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run `devices`; returns the exit status."""
    report = detect()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        return 0
    console = Console(file=sys.stdout, highlight=False)
    console.print(devices_table(report))
    console.print(backends_table(report))
    for problem in report.problems:
        console.print(f"[yellow]probe problem:[/] {escape(problem)}")
    return 0


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _memory(free: int | None, total: int | None) -> str:
    if total is None and free is None:
        return "?"
    if free is None:
        return f"{_size(total)} total"
    return f"{_size(free)} free of {_size(total)}"


def devices_table(report: DeviceReport) -> Table:
    """One row per device: id, name, memory, compute units, backends that can use it."""
    table = Table(title="Devices", title_justify="left")
    table.add_column("Device", style="bold")
    table.add_column("Name")
    table.add_column("Memory")
    table.add_column("Units", justify="right")
    table.add_column("Backends")
    table.add_column("Details", overflow="fold")
    for dev in report.devices:
        details = dict(dev.details)
        if dev.kind == "cpu":
            cores = f"{details.get('physical_cores') or '?'} cores"
            usable = f"{details.get('usable_cores')} usable"
            simd = " ".join(details.get("simd") or ["-"])
            extra = f"{details.get('arch')}, {cores}, {usable}; SIMD: {simd}"
        else:
            kind = "GPU" if dev.gpu else "not a GPU"
            parts = [kind, *(f"{k}: {v}" for k, v in details.items() if k in
                             ("platform", "type", "fp16", "unified_memory", "ggml_name"))]
            extra = "; ".join(parts + [f"seen by {', '.join(dev.sources)}"])
        table.add_row(*map(escape, (
            dev.id, dev.name, _memory(dev.free_memory, dev.total_memory),
            str(dev.compute_units) if dev.compute_units is not None else "?",
            ", ".join(dev.backends) or "-", extra,
        )))
    return table


def backends_table(report: DeviceReport) -> Table:
    """One row per backend: installed version, build, device kinds, and how to get more."""
    table = Table(title="Backends", title_justify="left")
    table.add_column("Backend", style="bold")
    table.add_column("Version")
    table.add_column("Build")
    table.add_column("Devices here")
    table.add_column("Note", overflow="fold")
    for support in report.backends:
        if not support.installed:
            table.add_row(support.backend, "-", "[dim]not installed[/]", "-",
                          escape(support.hint or support.problem or ""))
            continue
        usable = [d.id for d in report.devices_for(support.backend)]
        note = "; ".join(x for x in (support.hint, support.problem) if x)
        table.add_row(*map(escape, (support.backend, support.version or "?", support.build,
                                    ", ".join(usable) or "-", note)))
    return table
