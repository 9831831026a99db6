"""`lampchat rm NAME`: remove a model pulled into the Hugging Face cache (asks first)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from app.options import add_config_option


def add_parser(subparsers: Any) -> None:
    """Register `rm`."""
    parser = subparsers.add_parser(
        "rm", help="remove a model pulled into the Hugging Face cache",
        description="Remove a model that `lampchat pull` (or another tool) put in the Hugging "
        "Face cache. Models in other stores are removed with their own tool (ollama rm ...); "
        "files in your model folders are yours to delete.")
    parser.add_argument("name", metavar="NAME", help="the model's name in `lampchat models`")
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask")
    add_config_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run `rm`; returns the exit status."""
    # the catalog and huggingface_hub only for this command
    from app.config import load_config
    from app.hub_remove import removal_for
    from app.model_catalog import find_entry, list_models
    from widgets.model_entry import format_size

    config = load_config(args.config, create=False)
    entry = find_entry(args.name, list_models(config, include_remote=False))
    removal = removal_for(entry)
    if not args.yes:
        if not sys.stdin.isatty():
            print(f"lampchat: error: remove {entry.name} ({format_size(removal.size)})? "
                  "Pass --yes to remove it without asking", file=sys.stderr)
            return 1
        answer = input(f"Remove {entry.name} ({format_size(removal.size)}) from the Hugging "
                       "Face cache? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return 1
    removal.run()
    print(f"removed {entry.name} ({format_size(removal.size)} freed)")
    return 0
