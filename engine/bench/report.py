"""Bench reports: the JSON file, and the tables shown in the terminal and written as Markdown.

Tables are plain data (`Table`): the CLI draws them with rich, `to_markdown` writes them as
pipe tables, so both always show the same thing.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.bench.stats import Stat, ratio
from engine.errors import LampchatError
from engine.files import parse_json

SCHEMA = "lampchat-bench"
SCHEMA_VERSION = 1

HIGHER_IS_BETTER = ("pp", "tg")
"""Metric name prefixes where a bigger number is better (speeds); the rest are costs."""

NOISE_RATIO = 0.03
"""With no spread to judge by, a change under 3% counts as no change."""


@dataclass
class Table:
    """A titled table of strings; `align` holds "l" or "r" per column."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    align: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class BenchFileError(LampchatError):
    """A bench JSON file is missing, unreadable or not a bench report."""


# -- files --------------------------------------------------------------------------------------


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a bench JSON file; raise BenchFileError with a one-line reason."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchFileError(f"bench file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchFileError(f"cannot read bench file {p}: {exc}") from None
    try:
        data = parse_json(text)
    except ValueError as exc:
        raise BenchFileError(f"{p} is not valid JSON ({exc})") from None
    problem = check_report(data)
    if problem:
        raise BenchFileError(f"{p} is not a lampchat bench report: {problem}")
    return data


def check_report(data: Any) -> str | None:
    """What is wrong with a report's structure, or None when it is usable."""
    if not isinstance(data, dict):
        return "the top level is not an object"
    if data.get("schema") != SCHEMA:
        return f"its schema is {data.get('schema')!r}, not {SCHEMA!r}"
    if not isinstance(data.get("version"), int) or data["version"] > SCHEMA_VERSION:
        return f"unsupported version {data.get('version')!r}"
    results = data.get("results")
    if not isinstance(results, list):
        return "it has no results list"
    for i, r in enumerate(results):
        if not isinstance(r, dict) or not {"backend", "device", "status"} <= set(r):
            return f"result {i + 1} lacks backend/device/status"
        for key in ("metrics", "raw"):
            block = r.get(key)
            if block is None:
                continue
            if not isinstance(block, dict):
                return f"result {i + 1}: {key} is not an object"
            for name, stat in block.items():
                try:
                    Stat.from_dict(stat)
                except (KeyError, TypeError, ValueError, AttributeError):
                    return f"result {i + 1}: {key}.{name} is not a mean/stddev/n record"
    return None


def write_json(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write `report` to `path` atomically (a partial file never replaces a good one)."""
    p = Path(path).expanduser()
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def write_text(text: str, path: str | os.PathLike[str]) -> Path:
    """Write `text` to `path` atomically."""
    p = Path(path).expanduser()
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def check_writable(path: str | os.PathLike[str]) -> None:
    """Raise BenchFileError now if `path` cannot be written at the end of a long run."""
    p = Path(path).expanduser()
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise BenchFileError(f"{p} is a folder, not a file")
    if not parent.is_dir():
        raise BenchFileError(f"cannot write {p}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise BenchFileError(f"cannot write {p}: permission denied")


# -- helpers ------------------------------------------------------------------------------------


def metric_names(report: dict[str, Any]) -> list[str]:
    """The figures in a report, in its order: ppN..., tgN, ttft_ms."""
    settings = report.get("settings") or {}
    names = [f"pp{n}" for n in settings.get("pp", [])]
    if settings.get("tg"):
        names.append(f"tg{settings['tg']}")
    names.append("ttft_ms")
    for r in report.get("results", []):
        for name in r.get("metrics") or {}:
            if name not in names:
                names.append(name)
    return names


def metric_label(name: str) -> str:
    """Column heading of a figure."""
    if name == "ttft_ms":
        return "TTFT ms"
    if name in ("load_s", "peak_rss_mb"):
        return {"load_s": "load s", "peak_rss_mb": "peak RSS MB"}[name]
    return f"{name} t/s"


def higher_is_better(name: str) -> bool:
    """Whether a bigger value of this figure is an improvement."""
    return name.startswith(HIGHER_IS_BETTER)


def case_key(result: dict[str, Any]) -> tuple[str, str, str]:
    """What identifies a case across runs: (model file name, backend, device)."""
    path = str(result.get("model_path") or result.get("model") or "")
    return (Path(path).name or path, str(result.get("backend")), str(result.get("device")))


def _stat(result: dict[str, Any], block: str, name: str) -> Stat | None:
    data = (result.get(block) or {}).get(name)
    return Stat.from_dict(data) if isinstance(data, dict) else None


def _num(value: Any, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _digits(name: str) -> int:
    return 0 if name.startswith("pp") else 1


def _status(result: dict[str, Any]) -> str:
    status = result.get("status")
    if status == "ok":
        return "ok" + (f" ({result['note']})" if result.get("note") else "")
    word = "skipped" if status == "skipped" else "failed"
    return f"{word}: {result.get('error') or 'unknown error'}"


def model_label(result: dict[str, Any]) -> str:
    """The model's file (or folder) name, as cases are matched across runs."""
    return case_key(result)[0] or "—"


# -- tables -------------------------------------------------------------------------------------


def results_table(report: dict[str, Any]) -> Table:
    """One row per case: load time, speeds (mean ± stddev), TTFT, memory, status."""
    names = metric_names(report)
    reps = (report.get("settings") or {}).get("repetitions")
    table = Table(
        title=f"lampchat bench — mean ± stddev over {reps} repetition(s)",
        headers=["model", "backend", "device", "load s", *[metric_label(n) for n in names],
                 "peak RSS MB", "RSS ÷ size", "GPU MB", "status"],
        align=["l", "l", "l", "r", *["r"] * len(names), "r", "r", "r", "l"],
    )
    for r in report.get("results", []):
        stats = [_stat(r, "metrics", n) for n in names]
        table.rows.append([
            model_label(r), str(r.get("backend")), _device(r),
            _num(r.get("load_s"), 2),
            *[s.format(_digits(n)) if s else "—" for s, n in zip(stats, names, strict=True)],
            _num(r.get("peak_rss_mb"), 0), _num(r.get("peak_rss_ratio"), 2),
            _num(r.get("gpu_memory_mb"), 0), _status(r),
        ])
    table.notes.append("ppN: prompt tokens/s; tgN: decode tokens/s; TTFT of a short chat "
                       "prompt from a fresh context; RSS ÷ size: peak RSS over the model file "
                       "size (each case runs in its own process).")
    return table


def _device(result: dict[str, Any]) -> str:
    asked, used = result.get("device"), result.get("device_used")
    return str(asked) if not used or used == asked else f"{asked} → {used}"


def overhead_table(report: dict[str, Any]) -> Table:
    """Lampchat's streaming path against each backend's raw library call."""
    names = [n for n in metric_names(report) if n != "ttft_ms"]
    table = Table(
        title="Lampchat overhead — Lampchat ÷ raw library call (1.00 = none; > 1 = faster)",
        headers=["model", "backend", "device", *[f"{n} ×" for n in names], "TTFT +ms",
                 *[f"raw {metric_label(n)}" for n in names], "raw TTFT ms", "raw calls"],
        align=["l", "l", "l", *["r"] * len(names), "r", *["r"] * len(names), "r", "l"],
    )
    for r in report.get("results", []):
        if r.get("status") != "ok":
            continue
        over = r.get("overhead")
        if not over and not r.get("raw_error"):
            continue  # no baseline was asked for (--no-raw) or the backend has none
        if not over:
            why = r.get("raw_error")
            table.rows.append([model_label(r), str(r.get("backend")), _device(r),
                               *["—"] * len(names), "—", *["—"] * len(names), "—",
                               f"no raw baseline: {why}"])
            continue
        raw = [_stat(r, "raw", n) for n in names]
        ttft = _stat(r, "raw", "ttft_ms")
        calls = r.get("raw_calls") or {}
        table.rows.append([
            model_label(r), str(r.get("backend")), _device(r),
            *[_num(over.get(n), 3) for n in names],
            f"{over['ttft_extra_ms']:+.1f}" if over.get("ttft_extra_ms") is not None else "—",
            *[s.format(_digits(n)) if s else "—" for s, n in zip(raw, names, strict=True)],
            ttft.format(1) if ttft else "—",
            "; ".join(f"{k}: {v}" for k, v in calls.items()),
        ])
    return table


def _verdict(name: str, old: Stat, new: Stat) -> str:
    change = new.mean - old.mean
    noise = old.stddev + new.stddev
    if (noise and abs(change) <= noise) or (not noise and old.mean and
                                            abs(change) / abs(old.mean) < NOISE_RATIO):
        return "≈ (noise)"
    better = change > 0 if higher_is_better(name) else change < 0
    return "better" if better else "worse"


def compare_table(old: dict[str, Any], new: dict[str, Any]) -> Table:
    """Before/after per case and figure: old, new, new ÷ old and whether it got better."""
    table = Table(
        title="lampchat bench — compare (new ÷ old)",
        headers=["model", "backend", "device", "figure", "old", "new", "new ÷ old", "verdict"],
        align=["l", "l", "l", "l", "r", "r", "r", "l"],
    )
    old_by_key = {case_key(r): r for r in old.get("results", [])}
    new_by_key = {case_key(r): r for r in new.get("results", [])}
    for key in list(dict.fromkeys([*old_by_key, *new_by_key])):
        o, n = old_by_key.get(key), new_by_key.get(key)
        model, backend, device = key
        if o is None or n is None or o.get("status") != "ok" or n.get("status") != "ok":
            which = ("only in new" if o is None else "only in old" if n is None
                     else f"old: {_status(o)}; new: {_status(n)}")
            table.rows.append([model, backend, device, "—", "—", "—", "—", which])
            continue
        names = [m for m in metric_names(new) if m in (o.get("metrics") or {})
                 and m in (n.get("metrics") or {})]
        for name in names:
            so, sn = _stat(o, "metrics", name), _stat(n, "metrics", name)
            assert so is not None and sn is not None
            r = ratio(sn.mean, so.mean)
            table.rows.append([model, backend, device, metric_label(name), so.format(_digits(name)),
                               sn.format(_digits(name)), _num(r, 3), _verdict(name, so, sn)])
        for name in ("load_s", "peak_rss_mb"):
            vo, vn = o.get(name), n.get(name)
            if vo is None or vn is None:
                continue
            so, sn = Stat.of([vo]), Stat.of([vn])
            table.rows.append([model, backend, device, metric_label(name), _num(vo, 2),
                               _num(vn, 2), _num(ratio(vn, vo), 3), _verdict(name, so, sn)])
    table.notes.append(f"old: {old.get('created', '?')}; new: {new.get('created', '?')}. "
                       "Speeds: > 1 is faster; TTFT, load and RSS: < 1 is better. A change "
                       "within the sum of both stddevs is marked as noise.")
    return table


def host_line(report: dict[str, Any]) -> str:
    """One line on the machine and settings a report was taken with."""
    host = report.get("host") or {}
    s = report.get("settings") or {}
    threads = s.get("threads") or "default"
    load = host.get("load_avg")
    return (f"{host.get('cpu', '?')}, {host.get('cores_physical', '?')} cores "
            f"({host.get('cores_logical', '?')} threads), {host.get('ram_gb', '?')} GB RAM, "
            f"{host.get('os', '?')}; llama-cpp-python "
            f"{(host.get('versions') or {}).get('llama_cpp_python') or '—'}; "
            f"threads={threads}, n_ctx={s.get('n_ctx')}, repetitions={s.get('repetitions')}"
            + (f"; load average at the end {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}"
               if load else ""))


# -- markdown -----------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table_markdown(table: Table) -> str:
    """A table as a GitHub pipe table with its title and notes."""
    aligns = table.align or ["l"] * len(table.headers)
    lines = [f"### {table.title}", "",
             "| " + " | ".join(_md_cell(h) for h in table.headers) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in aligns) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    if table.notes:
        lines.append("")
        lines += table.notes
    return "\n".join(lines) + "\n"


def to_markdown(report: dict[str, Any], compare_with: dict[str, Any] | None = None) -> str:
    """The whole report as Markdown: host, results, overhead and (optionally) the comparison."""
    parts = [f"## lampchat bench — {report.get('created', '')}", "", host_line(report), "",
             table_markdown(results_table(report))]
    overhead = overhead_table(report)
    if overhead.rows:
        parts.append(table_markdown(overhead))
    if compare_with is not None:
        parts.append(table_markdown(compare_table(compare_with, report)))
    return "\n".join(parts)
