"""`lampchat convert SRC -o DIR`: write an HF-style folder from a GGUF, PyTorch or safetensors
model."""

from __future__ import annotations

import argparse
import time
from typing import Any

from app.progress import line_progress, stderr_progress
from engine.convert import DTYPES, convert
from engine.errors import LampchatError


def add_parser(subparsers: Any) -> None:
    """Register `convert`."""
    parser = subparsers.add_parser(
        "convert",
        help="convert a GGUF or PyTorch model to an HF-style folder (safetensors) or ONNX",
        description="Write config.json, model.safetensors, tokenizer.json and "
        "tokenizer_config.json (with the chat template) into DIR.",
    )
    parser.add_argument("src", metavar="SRC", help="model file or folder to convert")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--dtype", choices=sorted(DTYPES), default="float32", help="weight type (default float32)"
    )
    parser.add_argument(
        "--force", action="store_true", help="write into DIR even if it is not empty"
    )
    parser.add_argument(
        "--to", choices=("hf", "onnx"), default="hf",
        help="hf: safetensors folder (default); onnx: model.onnx with a KV cache (LLaMA family)",
    )
    parser.add_argument(
        "--int8", action="store_true", help="with --to onnx: int8 weights (per output channel)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run `convert`; returns the exit status."""
    progress = stderr_progress("converting") or line_progress("converting")
    start = time.monotonic()
    if args.to == "onnx":
        return _run_onnx(args, progress, start)
    if args.int8:
        raise LampchatError("--int8 applies to --to onnx only")
    result = convert(args.src, args.output, args.dtype, progress, args.force)
    elapsed = time.monotonic() - start
    print(
        f"converted {args.src} ({result.source_format}, {result.quantization}) -> "
        f"{result.out_dir}: {result.n_tensors} tensors, {result.n_params / 1e6:.1f}M params, "
        f"{args.dtype}, {result.bytes_written / 1e6:.0f} MB in {elapsed:.1f}s"
    )
    return 0


def _run_onnx(args: argparse.Namespace, progress: Any, start: float) -> int:
    """`--to onnx`: export through engine.onnx_export."""
    # every subcommand module is imported to build the parser: keep it light
    from engine.onnx_export import export_onnx

    result = export_onnx(args.src, args.output, args.int8, progress, args.force)
    print(
        f"exported {args.src} ({result.source_format}, {result.quantization}) -> "
        f"{result.out_dir}: ONNX, {result.n_layers} layers, {result.n_params / 1e6:.1f}M params, "
        f"{'int8' if result.int8 else 'float32'} weights, {result.bytes_written / 1e6:.0f} MB "
        f"in {time.monotonic() - start:.1f}s"
    )
    return 0
