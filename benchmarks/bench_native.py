"""Native engine speed and memory on SmolLM2-135M in float32, next to llama.cpp, in one run.

    .venv/bin/python benchmarks/bench_native.py [--model HF_DIR] [--prompt 256] [--decode 128]

Without --model, the bundled SmolLM2 GGUF is converted to a float32 HF folder in a temporary
directory first. Each engine runs in its own child process, so each peak RSS is its own.
Reported: prompt processing (pp) tokens/s for a `--prompt`-token prompt, greedy decode
tokens/s over `--decode` tokens after it (median of `--repeat` runs), peak RSS, and the size
of the float32 weights. llama.cpp runs the default GGUF (Q4_1); both use `--threads` (2) threads.
Targets (issue 5): decode >= 30 tok/s, pp >= 400 tok/s, peak RSS < 1.5 x float32 weights.
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
TARGET_DECODE = 30.0
TARGET_PP = 400.0
TARGET_RSS_RATIO = 1.5


def _peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM belongs to the process's own memory map, whereas
    getrusage's ru_maxrss also carries the parent's peak across fork + exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # KiB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _prompt_ids(encode: Any, n: int) -> list[int]:
    ids: list[int] = []
    text = TEXT
    while len(ids) < n:
        ids = encode(text)
        text += TEXT
    return ids[:n]


def child_native(model: str, n_prompt: int, n_decode: int, repeat: int,
                 threads: int) -> dict[str, Any]:
    """Load the model with the native backend and time pp and greedy decode."""
    import numpy as np

    from engine.backends.native import NativeBackend
    from engine.sampling import Sampler
    from engine.types import LoadSettings, SamplingParams

    backend = NativeBackend()
    started = time.perf_counter()
    info = backend.load(model, LoadSettings(n_ctx=n_prompt + n_decode + 8, n_threads=threads))
    load_s = time.perf_counter() - started
    rss_loaded = _peak_rss_mb()
    generator = backend._generator
    assert generator is not None
    ids = _prompt_ids(lambda t: backend._tokenizer.encode(t, add_special_tokens=False).ids,
                      n_prompt)
    greedy = Sampler(SamplingParams(temperature=0.0, repeat_penalty=1.0))
    pp, decode = [], []
    for _ in range(repeat):
        generator.cache.truncate(0)
        t0 = time.perf_counter()
        logits = generator.prefill(ids)
        pp.append(n_prompt / (time.perf_counter() - t0))
        assert logits is not None
        t0 = time.perf_counter()
        for _ in range(n_decode):
            logits = generator.step(greedy(logits))
        decode.append(n_decode / (time.perf_counter() - t0))
    return {
        "engine": "native (float32)",
        "load_s": load_s,
        "pp_tps": statistics.median(pp),
        "decode_tps": statistics.median(decode),
        "peak_rss_mb": _peak_rss_mb(),
        "rss_after_load_mb": rss_loaded,
        "weights_f32_mb": info.n_params * 4 / 2**20,
        "blas_threads": threads,
        "numpy": np.__version__,
    }


def child_llama_cpp(model: str, n_prompt: int, n_decode: int, repeat: int,
                    threads: int) -> dict[str, Any]:
    """The same measurements with llama.cpp on the GGUF, `threads` threads."""
    import contextlib
    import io

    import llama_cpp
    import numpy as np

    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        llm = llama_cpp.Llama(model_path=model, n_ctx=n_prompt + n_decode + 8, n_threads=threads,
                              n_threads_batch=threads, n_batch=512, verbose=False)
    load_s = time.perf_counter() - started
    n_vocab = llm.n_vocab()
    ids = _prompt_ids(lambda t: llm.tokenize(t.encode(), add_bos=False), n_prompt)
    pp, decode = [], []
    for _ in range(repeat):
        llm.reset()
        llm._ctx.kv_cache_clear()
        t0 = time.perf_counter()
        llm.eval(ids)
        pp.append(n_prompt / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for _ in range(n_decode):
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))
            llm.eval([int(np.argmax(logits))])
        decode.append(n_decode / (time.perf_counter() - t0))
    return {
        "engine": "llama.cpp (GGUF Q4_1)",
        "load_s": load_s,
        "pp_tps": statistics.median(pp),
        "decode_tps": statistics.median(decode),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _run_child(kind: str, model: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", kind, "--model", model, "--prompt",
           str(args.prompt), "--decode", str(args.decode), "--repeat", str(args.repeat),
           "--threads", str(args.threads)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        return {"engine": kind, "error": result.stderr.strip().splitlines()[-1:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def _convert_default(out: Path) -> Path:
    from engine.convert import convert
    from engine.models import default_model_path

    print(f"converting the default GGUF to float32 in {out} ...", file=sys.stderr)
    convert(str(default_model_path()), str(out), "float32", None, True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="float32 HF folder (default: convert the default GGUF)")
    parser.add_argument("--gguf", help="GGUF for llama.cpp (default: the bundled SmolLM2)")
    parser.add_argument("--prompt", type=int, default=256)
    parser.add_argument("--decode", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="threads for both engines")
    parser.add_argument("--skip-llama-cpp", action="store_true")
    parser.add_argument("--child", choices=["native", "llama.cpp"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        run = child_native if args.child == "native" else child_llama_cpp
        print(json.dumps(run(args.model, args.prompt, args.decode, args.repeat, args.threads)))
        return 0

    from engine.models import default_model_path

    gguf = args.gguf or str(default_model_path())
    with tempfile.TemporaryDirectory(prefix="bench-native-") as tmp:
        model = args.model or str(_convert_default(Path(tmp) / "smollm2-f32"))
        rows = [_run_child("native", model, args)]
        if not args.skip_llama_cpp:
            rows.append(_run_child("llama.cpp", gguf, args))
    _report(rows, args)
    return 0


def _report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\nprompt {args.prompt} tokens, decode {args.decode} tokens, median of {args.repeat}; "
          f"{args.threads} threads; load average {os.getloadavg()[0]:.2f} "
          "(a shared machine makes figures noisy)")
    print(f"{'engine':24} {'pp tok/s':>9} {'decode tok/s':>13} {'peak RSS MB':>12} {'load s':>7}")
    for row in rows:
        if "error" in row:
            print(f"{row['engine']:24} failed: {row['error']}")
            continue
        print(f"{row['engine']:24} {row['pp_tps']:9.1f} {row['decode_tps']:13.1f} "
              f"{row['peak_rss_mb']:12.0f} {row['load_s']:7.2f}")
    native = rows[0]
    if "error" in native:
        return
    weights = native["weights_f32_mb"]
    ratio = native["peak_rss_mb"] / weights
    checks = [
        (f"decode >= {TARGET_DECODE:.0f} tok/s", native["decode_tps"] >= TARGET_DECODE),
        (f"pp{args.prompt} >= {TARGET_PP:.0f} tok/s", native["pp_tps"] >= TARGET_PP),
        (f"peak RSS {native['peak_rss_mb']:.0f} MB = {ratio:.2f} x float32 weights "
         f"({weights:.0f} MB) < {TARGET_RSS_RATIO}", ratio < TARGET_RSS_RATIO),
    ]
    for label, ok in checks:
        print(f"  [{'ok' if ok else 'MISS'}] {label}")
    if len(rows) > 1 and "error" not in rows[1]:
        ref = rows[1]
        print(f"  native / llama.cpp: pp {native['pp_tps'] / ref['pp_tps']:.2f}x, "
              f"decode {native['decode_tps'] / ref['decode_tps']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
