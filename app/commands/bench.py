"""`lampchat bench`: the benchmark suite (llama-bench conventions) and backend comparison.

Measures load time, ppN, tgN, TTFT, peak RSS and GPU memory for every model × backend × device
(or those selected), each case in a fresh process, with Lampchat's overhead against each
backend's raw library call. `--compare OLD.json [NEW.json]` shows a before/after table.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table as RichTable

from app.logs import log_path
from engine.bench.config import (
    DEFAULT_N_CTX,
    DEFAULT_PP,
    DEFAULT_REPETITIONS,
    DEFAULT_TG,
    DEFAULT_TIMEOUT_S,
    BenchConfig,
)
from engine.bench.report import (
    Table,
    check_writable,
    compare_table,
    host_line,
    load_report,
    overhead_table,
    results_table,
    table_markdown,
    to_markdown,
    write_json,
    write_text,
)
from engine.bench.runner import plan_cases, run_bench
from engine.errors import LampchatError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is out of range (must be >= 1)")
    return value


def _sizes(text: str) -> tuple[int, ...]:
    parts = [p for p in text.replace(" ", "").split(",") if p]
    if not parts:
        raise argparse.ArgumentTypeError("give at least one size, e.g. 128,512")
    return tuple(_positive_int(p) for p in parts)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is out of range (must be > 0)")
    return value


def _split(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for value in values or []:
        out += [v.strip() for v in value.split(",") if v.strip()]
    return out


def add_parser(subparsers: Any) -> None:
    """Register `bench`."""
    parser = subparsers.add_parser(
        "bench",
        help="benchmark models × backends × devices (ppN, tgN, TTFT, memory, overhead)",
        description="Benchmark in llama-bench's conventions. Each model × backend × device runs "
        "in its own process; warm-up is excluded; figures are mean ± stddev.",
    )
    pick = parser.add_argument_group("what to measure (repeat or comma-separate; default: all)")
    pick.add_argument("--model", "-m", action="append", metavar="PATH",
                      help="model file or folder (default: the bundled SmolLM2-135M-Instruct)")
    pick.add_argument("--all-models", action="store_true",
                      help="every local model Lampchat knows: the default one and those under "
                      "the config's model.dirs (as `lampchat models` lists them)")
    pick.add_argument("--backend", "-b", action="append", metavar="NAME",
                      help="backend (default: every backend that reads the model's format)")
    pick.add_argument("--device", "-d", action="append", metavar="DEV",
                      help="device, e.g. cpu, cuda, opencl:0 (default: every device a backend "
                      "can use here)")
    how = parser.add_argument_group("how")
    how.add_argument("-r", "--repetitions", type=_positive_int, default=DEFAULT_REPETITIONS,
                     metavar="N", help=f"repetitions per figure (default {DEFAULT_REPETITIONS})")
    how.add_argument("-p", "--n-prompt", type=_sizes, default=DEFAULT_PP, metavar="N[,N]",
                     help="prompt sizes for ppN (default 128,512)")
    how.add_argument("-n", "--n-gen", type=_positive_int, default=DEFAULT_TG, metavar="N",
                     help=f"tokens to generate for tgN (default {DEFAULT_TG})")
    how.add_argument("--threads", "-t", type=_positive_int, metavar="N",
                     help="CPU threads (default: the backend's choice)")
    how.add_argument("--ctx", type=_positive_int, default=DEFAULT_N_CTX, metavar="N",
                     help=f"context length to load with (default {DEFAULT_N_CTX})")
    how.add_argument("--no-raw", action="store_true",
                     help="skip the raw library baselines (no overhead figures; about half "
                     "the time)")
    how.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT_S, metavar="S",
                     help=f"give up on a case after S seconds (default {DEFAULT_TIMEOUT_S:g})")
    remote = parser.add_argument_group(
        "remote server (OpenAI-compatible; adds the remote backend; --model: its model names)")
    remote.add_argument("--base-url", metavar="URL",
                        help="the server, e.g. http://127.0.0.1:8080/v1")
    remote.add_argument("--api-key-env", metavar="VAR",
                        help="environment variable holding the server's API key")
    remote.add_argument("--endpoint", metavar="NAME",
                        help="a [remote.NAME] endpoint from the config")
    parser.add_argument("--config", metavar="FILE",
                        help="config file (model.dirs for --all-models, [remote] endpoints)")
    out = parser.add_argument_group("output")
    out.add_argument("--json", metavar="FILE", help="write the full results as JSON")
    out.add_argument("--markdown", metavar="FILE", help="write the tables as Markdown")
    out.add_argument("--compare", nargs="+", metavar="JSON",
                     help="OLD.json: compare this run with it; OLD.json NEW.json: compare two "
                     "files without running")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run `bench`; returns the exit status (1 when no case could be measured)."""
    compare = args.compare or []
    if len(compare) > 2:
        raise LampchatError("--compare takes OLD.json, or OLD.json NEW.json")
    for path in filter(None, (args.json, args.markdown)):
        check_writable(path)
    old = load_report(compare[0]) if compare else None
    out = _stdout_console()
    if len(compare) == 2:
        if args.json:
            raise LampchatError("--json needs a bench run; with two --compare files nothing runs")
        assert old is not None
        new = load_report(compare[1])
        table = compare_table(old, new)
        print_table(out, table)
        if args.markdown:
            write_text(table_markdown(table), args.markdown)
        return 0

    backends = _split(args.backend)
    models = _split(args.model)
    if args.all_models:
        models += [m for m in _catalog_models(args.config) if m not in models]
    config = BenchConfig(
        models=models, backends=backends, devices=_split(args.device),
        remote=_remote_options(args, backends),
        repetitions=args.repetitions, pp=tuple(args.n_prompt), tg=args.n_gen,
        threads=args.threads, n_ctx=args.ctx, raw=not args.no_raw, timeout_s=args.timeout,
    )
    try:
        config.validate()
    except ValueError as exc:
        raise LampchatError(str(exc)) from None
    report = _run_with_progress(config)
    print_report(out, report, old)
    if args.json:
        write_json(report, args.json)
    if args.markdown:
        write_text(to_markdown(report, old), args.markdown)
    return 0 if any(r.get("status") == "ok" for r in report["results"]) else 1


def _catalog_models(config_file: str | None) -> list[str]:
    """The paths of the local models in the catalog (default model first)."""
    # every subcommand module is imported to build the parser: keep it light
    from app.config import load_config
    from app.model_catalog import list_models

    entries = list_models(load_config(config_file, create=False), include_remote=False)
    return [e.path for e in entries if e.path and e.format != "remote"]


def _remote_options(args: argparse.Namespace, backends: list[str]) -> dict[str, Any]:
    """The remote endpoint's options when the remote backend is asked for (or implied)."""
    flags = args.base_url or args.api_key_env or args.endpoint
    if not flags and "remote" not in [b.strip().lower() for b in backends]:
        return {}
    # every subcommand module is imported to build the parser: keep it light
    from app.remote_catalog import remote_options_from_args

    namespace = argparse.Namespace(backend="remote", base_url=args.base_url,
                                   api_key_env=args.api_key_env, endpoint=args.endpoint,
                                   config=args.config)
    options = remote_options_from_args(namespace, None)
    if not options:
        raise LampchatError("the remote backend needs a server: give --base-url URL or "
                            "--endpoint NAME (or set [remote] in the config)")
    return options


def _stdout_console() -> Console:
    if sys.stdout.isatty():
        return Console()
    return Console(width=max(200, shutil.get_terminal_size((200, 24)).columns))


def _run_with_progress(config: BenchConfig) -> dict[str, Any]:
    log_file = str(log_path())
    cases = plan_cases(config, log_file)
    err = Console(stderr=True)
    what = ", ".join(c.label for c in cases)
    sizes = ",".join(map(str, config.pp))
    err.print(f"bench: {len(cases)} case(s) {escape('[' + what + ']')}; "
              f"{config.repetitions} repetition(s); pp {sizes}, tg {config.tg}", highlight=False)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[case]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    tasks: dict[int, TaskID] = {}

    def on_event(event: dict[str, Any]) -> None:
        index = event["index"]
        kind = event["event"]
        if kind == "case_start":
            tasks[index] = progress.add_task(
                "starting", total=None,
                case=escape(f"[{index + 1}/{event['total']}] {event['case']}"))
        elif kind == "progress" and index in tasks:
            progress.update(tasks[index], total=event["steps"], completed=event["done"],
                            description=event["label"])
        elif kind == "case_end" and index in tasks:
            progress.remove_task(tasks.pop(index))
            progress.console.print(_case_line(event["case"], event["result"]), highlight=False)

    with progress:
        return run_bench(config, on_event, log_file)


def _status_word(result: dict[str, Any]) -> str:
    return "skipped" if result.get("status") == "skipped" else "failed"


def _case_line(label: str, result: dict[str, Any]) -> str:
    took = f" ({result['duration_s']:.1f} s)" if result.get("duration_s") else ""
    if result.get("status") != "ok":
        mark = "[yellow]–[/]" if result.get("status") == "skipped" else "[red]✗[/]"
        why = escape(str(result.get("error")))
        return f"{mark} {escape(label)}: {_status_word(result)}: {why}{took}"
    metrics = result.get("metrics") or {}
    parts = [f"{name} {stat['mean']:.1f}" + (" ms" if name == "ttft_ms" else " t/s")
             for name, stat in metrics.items()]
    return f"[green]✓[/] {escape(label)}: {', '.join(parts)}{took}"


def print_table(console: Console, table: Table) -> None:
    """Draw a report table with rich."""
    rich_table = RichTable(title=table.title, box=box.SIMPLE_HEAVY, title_justify="left")
    for header, align in zip(table.headers, table.align or ["l"] * len(table.headers),
                             strict=True):
        rich_table.add_column(header, justify="right" if align == "r" else "left",
                              overflow="fold")
    for row in table.rows:
        rich_table.add_row(*row)
    console.print(rich_table)
    for note in table.notes:
        console.print(note, style="dim", highlight=False)


def print_report(console: Console, report: dict[str, Any],
                 old: dict[str, Any] | None = None) -> None:
    """The results, the overhead table and, with `old`, the comparison."""
    console.print(host_line(report), style="dim", highlight=False)
    print_table(console, results_table(report))
    over = overhead_table(report)
    if over.rows:
        print_table(console, over)
    if old is not None:
        print_table(console, compare_table(old, report))
