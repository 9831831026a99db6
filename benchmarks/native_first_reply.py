"""The native engine's first reply against its second, and its peak memory, in new processes.

    .venv/bin/python benchmarks/native_first_reply.py [--repeat 3]

Each run loads the bundled SmolLM2 (float32, n_ctx 4096) in a child process and times three
replies (TTFT of a 1-token reply each): a first ~39-token prompt; a second, different one,
whose template prefix the cache reuses (only its last ~8 tokens are evaluated, so it is not
the same work); and the first prompt again with the cache emptied, the same work as the first
reply: `first / again` is the first-call overhead. Then it reads the peak RSS; the load time
(warm-up included) is printed too. Variants, run alternately: `shipped`; `no-warm-up` without
the warm-up at load; `eager-kv`, the KV cache as plain `np.zeros` (numpy asks for transparent
huge pages: the first reply faults in a 2 MB page per layer and head); `eager-weights`, every
tensor read and dequantized before the model is built (`load_model(lazy=False)`) instead of as
the model takes it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
import engine.native.kv_cache as kv
if sys.argv[2] == "eager-kv":
    kv.lazy_zeros = lambda shape: np.zeros(shape, dtype=np.float32)
import engine.backends.native as native
from engine.backends.native import NativeBackend
if sys.argv[2] == "no-warm-up":
    NativeBackend._warm_up = lambda self, *args: None
if sys.argv[2] == "eager-weights":
    load = native.load_model
    native.load_model = lambda *args, **kwargs: load(*args, **{**kwargs, "lazy": False})
from engine.models import default_model_path
from engine.types import ChatMessage, LoadSettings, SamplingParams, StreamStats
backend = NativeBackend()
started = time.perf_counter()
backend.load(str(default_model_path()), LoadSettings(n_ctx=4096))
load_s = time.perf_counter() - started
after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
ttft = []
FIRST = "Tell me about the sea and its tides."
for prompt in (FIRST, "Name three colours of a sunset.", FIRST):
    if len(ttft) == 2:  # the same work as the first reply: its whole prompt, cache emptied
        backend._generator.cache.truncate(0)
    start = time.perf_counter()
    pieces = backend.stream([ChatMessage("user", prompt)],
                            SamplingParams(max_tokens=1, temperature=0), StreamStats())
    next(iter(pieces), None)
    ttft.append(time.perf_counter() - start)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"ttft": ttft, "peak_mb": peak, "after_load_mb": after_load, "load_s": load_s,
                  "weights_mb": backend.info.n_params * 4 / 2**20}))
"""


def run(kind: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(REPO), kind], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {"shipped": [], "no-warm-up": [], "eager-kv": [],
                                       "eager-weights": []}
    for _ in range(args.repeat):
        for kind in results:
            results[kind].append(run(kind))
    print("| variant | first TTFT | second TTFT (prefix reused) | the first prompt again | "
          "first / again | peak RSS | / f32 weights | load |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, runs in results.items():
        first, second, again = (statistics.median(r["ttft"][i] for r in runs)
                                for i in range(3))
        peak = statistics.median(r["peak_mb"] for r in runs)
        weights = runs[0]["weights_mb"]
        load = statistics.median(r["load_s"] for r in runs)
        print(f"| {kind} | {first * 1000:.0f} ms | {second * 1000:.0f} ms | "
              f"{again * 1000:.0f} ms | {first / again:.2f} | {peak:.0f} MB | "
              f"{peak / weights:.2f} | {load:.2f} s |")


if __name__ == "__main__":
    main()
