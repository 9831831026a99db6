"""Command-line options shared by `lampchat`, `lampchat ask` and other subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from engine.types import LoadSettings, SamplingParams


def _ranged(
    kind: Callable[[str], Any],
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        if lo is not None and (value < lo or (lo_open and value == lo)):
            bound = f"> {lo}" if lo_open else f">= {lo}"
            raise argparse.ArgumentTypeError(f"{text} is out of range (must be {bound})")
        if hi is not None and value > hi:
            raise argparse.ArgumentTypeError(f"{text} is out of range (must be <= {hi})")
        return value

    parse.__name__ = kind.__name__
    return parse


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """--config PATH (else $LAMPCHAT_CONFIG, else the platform's config dir)."""
    parser.add_argument(
        "--config", metavar="PATH", help="config file (default: $LAMPCHAT_CONFIG or the "
        "platform's config dir, see `lampchat config path`)"
    )


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, --backend, --threads, --ctx, --gpu-layers."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        "-m",
        metavar="PATH",
        help="model file or folder (default: the bundled SmolLM2-135M-Instruct)",
    )
    group.add_argument(
        "--backend", "-b", metavar="NAME", help="auto, llama.cpp, native, mlx, onnx or remote"
    )
    group.add_argument("--threads", type=_ranged(int, 1), metavar="N", help="CPU threads")
    group.add_argument(
        "--ctx", type=_ranged(int, 0), metavar="N", help="context length (0: the model's)"
    )
    group.add_argument(
        "--gpu-layers", type=_ranged(int, -1), metavar="N", help="layers to offload (-1: all)"
    )


def add_sampling_options(parser: argparse.ArgumentParser) -> None:
    """--system and the sampling settings."""
    group = parser.add_argument_group("generation")
    group.add_argument("--system", metavar="TEXT", help="system prompt")
    group.add_argument("--temperature", "-t", type=_ranged(float, 0.0), metavar="T")
    group.add_argument("--top-k", type=_ranged(int, 0), metavar="K")
    group.add_argument("--top-p", type=_ranged(float, 0.0, 1.0, lo_open=True), metavar="P")
    group.add_argument("--min-p", type=_ranged(float, 0.0, 1.0), metavar="P")
    group.add_argument("--repeat-penalty", type=_ranged(float, 0.0, lo_open=True), metavar="R")
    group.add_argument("--max-tokens", "-n", type=_ranged(int, 1), metavar="N")
    group.add_argument("--seed", type=_ranged(int, 0), metavar="N")


def sampling_from_args(
    args: argparse.Namespace, base: SamplingParams | None = None
) -> SamplingParams:
    """`base` with every sampling option given on the command line applied."""
    given = {
        name: getattr(args, name)
        for name in (
            "temperature",
            "top_k",
            "top_p",
            "min_p",
            "repeat_penalty",
            "max_tokens",
            "seed",
        )
        if getattr(args, name, None) is not None
    }
    return replace(base or SamplingParams(), **given)


def load_settings_from_args(
    args: argparse.Namespace, base: LoadSettings | None = None
) -> LoadSettings:
    """`base` with --threads, --ctx and --gpu-layers applied."""
    settings = replace(base or LoadSettings())
    if getattr(args, "threads", None) is not None:
        settings.n_threads = args.threads
    if getattr(args, "ctx", None) is not None:
        settings.n_ctx = args.ctx
    if getattr(args, "gpu_layers", None) is not None:
        settings.n_gpu_layers = args.gpu_layers
    return settings
