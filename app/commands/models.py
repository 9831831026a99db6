"""`lampchat models`: the default model, the models already in other tools' stores (Ollama, the
Hugging Face cache, LM Studio, GPT4All, llama.cpp's cache) and those in `model.dirs` and `--dir`
folders, with where each was found, the backends that run it, its detected format, size,
quantization, parameters and context length."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from app.options import add_config_option


def add_parser(subparsers: Any) -> None:
    """Register `models`."""
    parser = subparsers.add_parser(
        "models", help="list the default model, the models in other tools' stores and in your "
        "model folders"
    )
    parser.add_argument(
        "--dir", "-d", action="append", default=[], metavar="PATH",
        help="also scan this folder (repeatable; adds to `model.dirs` from the config)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON array")
    add_config_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run `models`; returns the exit status (damaged models are listed, not fatal)."""
    # every subcommand module is imported to build the parser: keep it light
    from app.config import load_config
    from app.model_catalog import list_models

    config = load_config(args.config, create=False)
    if args.dir:
        dirs = [*config.get("model.dirs"), *args.dir]
        config = load_config(args.config, cli={"model.dirs": dirs}, create=False)
    for line in config.warning_lines():
        print(line, file=sys.stderr)
    entries = list_models(config)
    if args.json:
        print(json.dumps([asdict(e) for e in entries], indent=2, ensure_ascii=False))
    else:
        print(render_table(entries))
    return 0


def render_table(entries: list[Any]) -> str:
    """A plain-text table, one model a row; a damaged model's row carries its error."""
    # every subcommand module is imported to build the parser: keep it light
    from app.model_stores import STORE_LABELS
    from widgets.model_entry import format_context, format_params, format_size

    header = ("NAME", "SOURCE", "BACKENDS", "FORMAT", "SIZE", "QUANT", "PARAMS", "CONTEXT",
              "PATH")
    rows: list[tuple[str, ...]] = []
    errors: dict[int, str] = {}
    for e in entries:
        name = f"{e.name} (default)" if e.is_default else e.name
        source = STORE_LABELS.get(e.source, e.source or "-")
        backends = ",".join(e.backends) or "-"
        where = e.path or (f"endpoint {e.endpoint}" if e.endpoint else "-")
        if e.error:
            errors[len(rows)] = e.error
            rows.append((name, source, backends, e.format, format_size(e.file_size), "-", "-",
                         "-", where))
            continue
        rows.append((name, source, backends, e.format, format_size(e.file_size),
                     e.quantization or "-", format_params(e.n_params),
                     format_context(e.context_length), where))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for n, row in enumerate([header, *rows]):
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
        if n - 1 in errors:
            lines.append(f"    error: {errors[n - 1]}")
    if not rows:
        lines.append("(no models found)")
    return "\n".join(lines)
