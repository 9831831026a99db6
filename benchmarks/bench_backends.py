"""Prompt and decode speed of MLX-CPU and ONNX on SmolLM2-135M float32, next to the native
engine and llama.cpp, in one run.

    .venv/bin/python benchmarks/bench_backends.py [--prompt 256] [--decode 128] [--repeat 3]
        [--rounds 1] [--hf HF_DIR] [--onnx ONNX_DIR] [--json]

Without --hf / --onnx the bundled SmolLM2 GGUF is converted to a float32 HF folder and exported
to ONNX (float32) in a temporary directory first. Each engine runs in its own child process
(its own peak RSS, no library state shared), one after the other; with --rounds R the engines
take turns R times and the medians are reported, which evens out a busy machine.
Measured on the same token ids for every engine: prompt processing (pp) tokens/s for a
`--prompt`-token prompt, then greedy decode tokens/s over `--decode` tokens after it.
llama.cpp runs the default GGUF (Q4_1, not float32) as the reference. The check of issue 6:
ONNX decode >= native decode (exit status 1 when it fails).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TEXT = (
    "The lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a can of "
    "oil and a rag. From the gallery he could see the whole bay: fishing boats returning, gulls "
    "circling the harbour wall, and far out the dark line where the sea met the sky. "
)
ENGINES = ("native", "onnx", "mlx", "llama.cpp")


def _peak_rss_mb() -> float:
    """This process's peak RSS. On Linux VmHWM, which starts afresh at exec (ru_maxrss would
    carry the parent's peak, e.g. the conversion's, into the child)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _prompt_ids(hf_dir: str, n: int) -> list[int]:
    """`n` token ids of plain English text, from the model's own tokenizer."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(hf_dir) / "tokenizer.json"))
    ids: list[int] = []
    text = TEXT
    while len(ids) < n:
        ids = tok.encode(text, add_special_tokens=False).ids
        text += TEXT
    return ids[:n]


def _result(engine: str, load_s: float, pp: list[float], decode: list[float],
            **extra: Any) -> dict[str, Any]:
    return {"engine": engine, "load_s": load_s, "pp_tps": statistics.median(pp),
            "decode_tps": statistics.median(decode), "peak_rss_mb": _peak_rss_mb(), **extra}


def child_native(args: argparse.Namespace, ids: list[int]) -> dict[str, Any]:
    """The native engine (numpy) on the float32 HF folder."""
    from engine.backends.native import NativeBackend
    from engine.sampling import Sampler
    from engine.types import LoadSettings, SamplingParams

    backend = NativeBackend()
    started = time.perf_counter()
    backend.load(args.hf, LoadSettings(n_ctx=len(ids) + args.decode + 8, device="cpu"))
    load_s = time.perf_counter() - started
    generator = backend._generator
    assert generator is not None
    greedy = Sampler(SamplingParams(temperature=0.0, repeat_penalty=1.0))
    pp, decode = [], []
    for _ in range(args.repeat):
        generator.cache.truncate(0)
        t0 = time.perf_counter()
        logits = generator.prefill(ids)
        pp.append(len(ids) / (time.perf_counter() - t0))
        assert logits is not None
        t0 = time.perf_counter()
        for _ in range(args.decode):
            logits = generator.step(greedy(logits))
        decode.append(args.decode / (time.perf_counter() - t0))
    return _result("native (float32)", load_s, pp, decode)


def child_onnx(args: argparse.Namespace, ids: list[int]) -> dict[str, Any]:
    """onnxruntime (CPU provider, threads = physical cores) on the float32 ONNX export."""
    import numpy as np
    import onnxruntime

    from engine.backends.onnx import OnnxBackend, default_threads
    from engine.types import LoadSettings

    backend = OnnxBackend()
    started = time.perf_counter()
    backend.load(args.onnx, LoadSettings(n_ctx=len(ids) + args.decode + 8, device="cpu"))
    load_s = time.perf_counter() - started
    pp, decode = [], []
    for _ in range(args.repeat):
        backend.reset_cache()
        t0 = time.perf_counter()
        logits = backend.prefill(ids)
        pp.append(len(ids) / (time.perf_counter() - t0))
        assert logits is not None
        t0 = time.perf_counter()
        for _ in range(args.decode):
            logits = backend.step(int(np.argmax(logits)))
        decode.append(args.decode / (time.perf_counter() - t0))
    return _result("onnx (float32, CPU EP)", load_s, pp, decode,
                   threads=default_threads(), onnxruntime=onnxruntime.__version__)


def child_mlx(args: argparse.Namespace, ids: list[int]) -> dict[str, Any]:
    """mlx-lm on MLX's CPU device, on the float32 HF folder (greedy `generate_step`)."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    from engine.backends.mlx import MLXBackend
    from engine.types import LoadSettings

    backend = MLXBackend()
    started = time.perf_counter()
    backend.load(args.hf, LoadSettings(n_ctx=len(ids) + args.decode + 8, device="cpu"))
    load_s = time.perf_counter() - started
    model = backend._model
    pp, decode = [], []
    for _ in range(args.repeat):
        steps = generate_step(mx.array(ids, dtype=mx.int32), model, max_tokens=args.decode + 1)
        t0 = time.perf_counter()
        next(steps)  # the prompt pass and the first token
        pp.append(len(ids) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for _ in range(args.decode):
            next(steps)
        decode.append(args.decode / (time.perf_counter() - t0))
        steps.close()
    return _result("mlx-lm (float32, mlx[cpu])", load_s, pp, decode, mlx=mx.__version__)


def child_llama_cpp(args: argparse.Namespace, ids: list[int]) -> dict[str, Any]:
    """llama.cpp on the GGUF (the bundled one is Q4_1), threads = physical cores."""
    import contextlib
    import io

    import llama_cpp
    import numpy as np

    from engine.backends.onnx import default_threads

    threads = default_threads()
    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        llm = llama_cpp.Llama(model_path=args.gguf, n_ctx=len(ids) + args.decode + 8,
                              n_threads=threads, n_threads_batch=threads, n_batch=512,
                              verbose=False)
    load_s = time.perf_counter() - started
    n_vocab = llm.n_vocab()
    pp, decode = [], []
    for _ in range(args.repeat):
        llm.reset()
        llm._ctx.kv_cache_clear()
        t0 = time.perf_counter()
        llm.eval(ids)
        pp.append(len(ids) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for _ in range(args.decode):
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))
            llm.eval([int(np.argmax(logits))])
        decode.append(args.decode / (time.perf_counter() - t0))
    quant = Path(args.gguf).stem.rsplit(".", 1)[-1]
    return _result(f"llama.cpp (GGUF {quant})", load_s, pp, decode, threads=threads)


CHILDREN = {"native": child_native, "onnx": child_onnx, "mlx": child_mlx,
            "llama.cpp": child_llama_cpp}


def _run_child(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", kind, "--hf", args.hf, "--onnx", args.onnx,
           "--gguf", args.gguf, "--prompt", str(args.prompt), "--decode", str(args.decode),
           "--repeat", str(args.repeat)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        return {"engine": kind, "error": lines[-1] if lines else f"exit {result.returncode}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def _prepare(args: argparse.Namespace, tmp: Path) -> None:
    """Fill in the default GGUF, and convert/export the float32 models that were not given."""
    from engine.models import default_model_path

    args.gguf = args.gguf or str(default_model_path())
    if not args.hf:
        from engine.convert import convert

        print("converting the default model to a float32 HF folder...", file=sys.stderr)
        args.hf = str(convert(args.gguf, tmp / "hf").out_dir)
    if not args.onnx:
        from engine.onnx_export import export_onnx

        print("exporting it to ONNX (float32)...", file=sys.stderr)
        args.onnx = str(export_onnx(args.hf, tmp / "onnx").out_dir)


def _report(rows: list[dict[str, Any]], args: argparse.Namespace) -> int:
    print(f"SmolLM2-135M, prompt {args.prompt} tokens, decode {args.decode} tokens, "
          f"{args.rounds} round(s) x {args.repeat} repeat(s), {os.cpu_count()} CPUs "
          "(medians; a shared machine makes these noisy: compare the ratios)")
    print(f"{'engine':34} {'pp tok/s':>9} {'decode tok/s':>13} {'pp/native':>10} "
          f"{'dec/native':>11} {'peak RSS':>9} {'load s':>7}")
    native = next((r for r in rows if r["engine"].startswith("native") and "error" not in r),
                  None)
    for r in rows:
        if "error" in r:
            print(f"{r['engine']:34} failed: {r['error']}")
            continue
        ratios = ("", "")
        if native:
            ratios = (f"{r['pp_tps'] / native['pp_tps']:.2f}x",
                      f"{r['decode_tps'] / native['decode_tps']:.2f}x")
        print(f"{r['engine']:34} {r['pp_tps']:9.1f} {r['decode_tps']:13.1f} {ratios[0]:>10} "
              f"{ratios[1]:>11} {r['peak_rss_mb']:7.0f}MB {r['load_s']:7.1f}")
    onnx = next((r for r in rows if r["engine"].startswith("onnx") and "error" not in r), None)
    if native and onnx:
        ok = onnx["decode_tps"] >= native["decode_tps"]
        print(f"check: ONNX decode >= native decode: {'PASS' if ok else 'FAIL'} "
              f"({onnx['decode_tps']:.1f} vs {native['decode_tps']:.1f} tok/s)")
        return 0 if ok else 1
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hf", default="", help="float32 HF folder (default: convert)")
    parser.add_argument("--onnx", default="", help="float32 ONNX folder (default: export)")
    parser.add_argument("--gguf", default="", help="GGUF for llama.cpp (default: the bundled)")
    parser.add_argument("--prompt", type=int, default=256, help="prompt tokens")
    parser.add_argument("--decode", type=int, default=128, help="decoded tokens")
    parser.add_argument("--repeat", type=int, default=3, help="runs per engine per round")
    parser.add_argument("--rounds", type=int, default=1, help="times the engines take turns")
    parser.add_argument("--engines", default=",".join(ENGINES),
                        help=f"comma-separated subset of {', '.join(ENGINES)}")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON too")
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        ids = _prompt_ids(args.hf, args.prompt)
        print(json.dumps(CHILDREN[args.child](args, ids)))
        return 0
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        parser.error(f"unknown engines: {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="lampchat-bench-") as tmp:
        _prepare(args, Path(tmp))
        runs: dict[str, list[dict[str, Any]]] = {e: [] for e in engines}
        for round_no in range(args.rounds):
            for engine in engines:
                print(f"round {round_no + 1}/{args.rounds}: {engine}...", file=sys.stderr)
                runs[engine].append(_run_child(engine, args))
    rows = [_merge(results) for results in runs.values()]
    status = _report(rows, args)
    if args.json:
        print(json.dumps(rows, indent=2))
    return status


def _merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from a engine's rounds: medians of the speeds, the largest peak RSS."""
    good = [r for r in results if "error" not in r]
    if not good:
        return results[0]
    row = dict(good[0])
    for key in ("pp_tps", "decode_tps", "load_s"):
        row[key] = statistics.median(r[key] for r in good)
    row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in good)
    return row


if __name__ == "__main__":
    sys.exit(main())
