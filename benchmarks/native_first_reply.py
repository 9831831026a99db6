"""The native engine's first reply against its second, and its peak memory, in new processes.

    .venv/bin/python benchmarks/native_first_reply.py [--repeat 3]

Each run loads the bundled SmolLM2 (float32, n_ctx 4096) in a child process and times two
replies to different ~30-token prompts (TTFT of a 1-token reply each), then reads the peak
RSS. `--eager` runs the KV cache as plain `np.zeros` (numpy asks for transparent huge pages:
the first reply faults in a 2 MB page per layer and head); the default is `lazy_zeros`.
Both variants run alternately in one invocation, so their ratio is what to read.
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
if sys.argv[2] == "eager":
    kv.lazy_zeros = lambda shape: np.zeros(shape, dtype=np.float32)
from engine.backends.native import NativeBackend
from engine.models import default_model_path
from engine.types import ChatMessage, LoadSettings, SamplingParams, StreamStats
backend = NativeBackend()
backend.load(str(default_model_path()), LoadSettings(n_ctx=4096))
after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
ttft = []
for prompt in ("Tell me about the sea and its tides.", "Name three colours of a sunset."):
    start = time.perf_counter()
    pieces = backend.stream([ChatMessage("user", prompt)],
                            SamplingParams(max_tokens=1, temperature=0), StreamStats())
    next(iter(pieces), None)
    ttft.append(time.perf_counter() - start)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"ttft": ttft, "peak_mb": peak, "after_load_mb": after_load,
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
    results: dict[str, list[dict]] = {"lazy": [], "eager": []}
    for _ in range(args.repeat):
        for kind in ("lazy", "eager"):
            results[kind].append(run(kind))
    print("| KV cache | first TTFT | second TTFT | first / second | peak RSS | / f32 weights |")
    print("|---|---|---|---|---|---|")
    for kind, runs in results.items():
        first = statistics.median(r["ttft"][0] for r in runs)
        second = statistics.median(r["ttft"][1] for r in runs)
        peak = statistics.median(r["peak_mb"] for r in runs)
        weights = runs[0]["weights_mb"]
        print(f"| {kind} | {first * 1000:.0f} ms | {second * 1000:.0f} ms | "
              f"{first / second:.2f} | {peak:.0f} MB | {peak / weights:.2f} |")


if __name__ == "__main__":
    main()
