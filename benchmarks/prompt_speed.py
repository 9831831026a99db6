"""Prompt processing speed: llama.cpp's settings swept on this CPU, beside the native engine.

    .venv/bin/python benchmarks/prompt_speed.py [--tokens 1500] [--repeat 3]

One process; the bundled SmolLM2. For each llama.cpp setting (Lampchat's as shipped, then
`n_batch`/`n_ubatch`, flash attention and `n_threads_batch` varied one at a time) a fresh
context evaluates the same prompt of `--tokens` tokens; the native engine prefills the same
tokens. Rounds are interleaved (every setting once per round) and the median is printed, with
each setting's ratio to Lampchat's llama.cpp setting.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from engine.backends.llama_cpp import default_threads  # noqa: E402
from engine.models import default_model_path  # noqa: E402

TEXT = ("The lighthouse keeper climbed the stairs at dusk, as she had done every evening for "
        "thirty years, and lit the lamp that warned the ships away from the rocks. ")


def llama_settings(threads: int) -> dict[str, dict]:
    """Lampchat's llama.cpp setting, then each change tried alone."""
    shipped = {"n_threads": threads, "n_threads_batch": threads}
    logical = os.cpu_count() or threads
    return {
        "lampchat (n_batch 512, n_ubatch 512)": shipped,
        "n_batch 2048, n_ubatch 2048": {**shipped, "n_batch": 2048, "n_ubatch": 2048},
        "n_ubatch 128": {**shipped, "n_ubatch": 128},
        "n_ubatch 256": {**shipped, "n_ubatch": 256},
        "flash attention": {**shipped, "flash_attn": True},
        f"n_threads_batch {logical} (logical CPUs)": {**shipped, "n_threads_batch": logical},
    }


def time_llama(path: str, tokens: list[int], settings: dict) -> float:
    """Seconds to evaluate `tokens` in a fresh context with `settings`."""
    import llama_cpp  # the measured library

    with contextlib.redirect_stderr(io.StringIO()):
        llm = llama_cpp.Llama(model_path=path, n_ctx=4096, verbose=False, **settings)
    llm.eval(tokens[:8])  # warm-up, as llama-bench does
    llm.reset()
    start = time.perf_counter()
    llm.eval(tokens)
    seconds = time.perf_counter() - start
    llm.close()
    return seconds


def time_native(backend, tokens: list[int]) -> float:
    """Seconds for the native engine to prefill `tokens` into an empty cache."""
    generator = backend._generator
    generator.cache.truncate(0)
    start = time.perf_counter()
    generator.prefill(tokens)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=default_threads())
    args = parser.parse_args()
    # the libraries measured, loaded once the arguments are known
    import llama_cpp

    from engine.backends.native import NativeBackend
    from engine.types import LoadSettings

    path = str(default_model_path())
    with contextlib.redirect_stderr(io.StringIO()):
        vocab = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    tokens = vocab.tokenize((TEXT * (args.tokens // 20 + 1)).encode())[: args.tokens]
    native = NativeBackend()
    native.load(path, LoadSettings(n_ctx=4096, n_threads=args.threads))
    settings = llama_settings(args.threads)
    times: dict[str, list[float]] = {name: [] for name in [*settings, "native engine"]}
    for _ in range(args.repeat):
        for name, options in settings.items():
            times[name].append(time_llama(path, tokens, options))
        times["native engine"].append(time_native(native, tokens))
    base = statistics.median(times[next(iter(settings))])
    print(f"prompt of {len(tokens)} tokens, {args.threads} threads, {args.repeat} rounds "
          f"(median):")
    print(f"{'setting':<44} {'tok/s':>9} {'vs lampchat':>12}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<44} {len(tokens) / median:>9.0f} {base / median:>11.2f}x")


if __name__ == "__main__":
    main()
