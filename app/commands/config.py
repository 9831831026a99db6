"""`lampchat config show|path|validate|set`: inspect and check the config file."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from app.config import (
    Config,
    config_path,
    display_value,
    field_for,
    load_config,
    save_config,
    validate_file,
)
from app.options import add_config_option


def add_parser(subparsers: Any) -> None:
    """Register `config` and its actions."""
    parser = subparsers.add_parser("config", help="show, locate or check the config file")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    show = actions.add_parser("show", help="the effective config and where each value came from")
    path = actions.add_parser("path", help="the config file's location")
    validate = actions.add_parser("validate", help="check the config file; exit 1 on problems")
    setter = actions.add_parser("set", help="set KEY (section.key) to VALUE in the config file")
    setter.add_argument("key", help="e.g. generation.temperature")
    setter.add_argument("value", help="e.g. 0.3 (lists: a,b or [\"a\", \"b\"])")
    for sub in (show, path, validate, setter):
        add_config_option(sub)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; returns the exit status."""
    if args.action == "path":
        print(config_path(args.config))
        return 0
    if args.action == "validate":
        return _validate(args)
    config = load_config(args.config)
    for line in config.warning_lines():
        print(line, file=sys.stderr)
    if args.action == "set":
        config.set(args.key, args.value)
        save_config(config)
        print(f"{args.key} = {_shown(config, args.key)}  (saved to {config.path})")
        return 0
    print(render_effective(config))
    return 0


def _validate(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    if not path.exists():
        print(f"{path}: no config file; the defaults apply")
        return 0
    problems = validate_file(path)
    for problem in problems:
        print(problem)
    if problems:
        count = len(problems)
        print(f"{count} problem{'s' if count != 1 else ''} in {path}", file=sys.stderr)
        return 1
    print(f"{path}: OK")
    return 0


def _shown(config: Config, dotted: str) -> str:
    return display_value(field_for(dotted), config.get(dotted))


def render_effective(config: Config) -> str:
    """The effective config as TOML, each value followed by its source; secrets hidden."""
    lines = [f"# config file: {config.path}" + ("" if config.path.exists() else " (missing)")]
    section = None
    for field, _value, source in config.items():
        if field.section != section:
            section = field.section
            lines += ["", f"[{section}]"]
        lines.append(f"{field.key} = {_shown(config, field.dotted)}  # {source}")
    return "\n".join(lines)
