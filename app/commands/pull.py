"""`lampchat pull REPO[:QUANT|/FILE]`: a model from the Hugging Face hub into its cache."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(subparsers: Any) -> None:
    """Register `pull`."""
    parser = subparsers.add_parser(
        "pull", help="download a model from the Hugging Face hub (resumable)",
        description="Download a GGUF (org/repo, org/repo:QUANT, org/repo/FILE.gguf; org/repo "
        "alone takes its only GGUF, else its Q4_K_M) or a safetensors repo's folder into the "
        "Hugging Face cache, where `lampchat models`, the picker and other tools find it. "
        "An interrupted pull resumes; HF_TOKEN is used for gated repos.")
    parser.add_argument("spec", metavar="REPO[:QUANT|/FILE]", help="what to download")
    parser.add_argument("--list", action="store_true",
                        help="list the repo's GGUF files (quantization and size) and stop")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run `pull`; returns the exit status."""
    # huggingface_hub and the pull code only for this command
    from app.hub_pull import PullError, hub_api, plan_pull, pull, repo_choices
    from app.progress import line_progress, stderr_progress
    from widgets.model_entry import format_size

    api = hub_api()
    if args.list:
        print(repo_choices(args.spec, api))
        return 0
    plan = plan_pull(args.spec, api)
    label = f"pulling {plan.label}"
    report = stderr_progress(label) or line_progress(label)

    def progress(done: int, total: int, what: str) -> None:
        report(done / total if total else 1.0, what)

    try:
        path = pull(plan, progress=progress, api=api)
    except KeyboardInterrupt:
        raise PullError("pull interrupted; run it again to resume") from None
    print(f"pulled {plan.label} ({format_size(plan.size)}) -> {path}")
    print(f"chat with it: lampchat -m {plan.label}", file=sys.stderr)
    return 0
