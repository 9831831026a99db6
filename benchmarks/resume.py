"""Resuming a long conversation with and without its saved KV state, next to a fresh short
prompt, each in a new process (`lampchat ask --json`).

    .venv/bin/python benchmarks/resume.py [--pairs 5] [--backend llama.cpp] [--turns 6]

First the bundled model writes a conversation of about 1,500 tokens (`--turns` long replies,
saved with --save-history). Then, interleaved `--pairs` times: `ask --load-history` with one
short new message and a saved state (`session.kv_cache_mb` on; the state of the previous
run of the same conversation is restored), the same without (`session.kv_cache_mb = 0`), and
a fresh short prompt. Prints the median TTFT of each and the ratios to the fresh prompt.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOPICS = ["the sea", "lighthouses", "storms at night", "old ships", "gulls and harbours",
          "the lamp room", "winter on the coast", "tides"]


def ask(env: dict[str, str], *args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "app", "ask", "--json", *args], env=env,
                          capture_output=True, text=True, cwd=REPO, check=False)
    if done.returncode:
        raise SystemExit(done.stderr.strip())
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--backend", default="llama.cpp")
    parser.add_argument("--turns", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": f"{tmp}/cache",
               "XDG_CONFIG_HOME": f"{tmp}/config", "XDG_DATA_HOME": f"{tmp}/data",
               "XDG_STATE_HOME": f"{tmp}/state"}
        off = {**env, "LAMPCHAT_SESSION__KV_CACHE_MB": "0"}
        conv = Path(tmp) / "long.toml"
        common = ["--backend", args.backend, "--temperature", "0", "--ctx", "4096"]
        tokens = 0
        for turn in range(args.turns):
            history = ["--load-history", str(conv)] if conv.exists() else []
            reply = ask(off, *common, *history, "--save-history", str(conv), "-n", "240",
                        f"Write a long, detailed story about {TOPICS[turn % len(TOPICS)]}.")
            tokens = reply["prompt_tokens"] + reply["completion_tokens"]
        print(f"conversation: {tokens} tokens in {args.turns} turns", flush=True)
        ask(env, *common, "--load-history", str(conv), "-n", "4", "Thanks.")  # saves a state
        ttft: dict[str, list[float]] = {"resumed, state": [], "resumed, no state": [],
                                        "fresh short prompt": []}
        for i in range(args.pairs):
            question = f"In one line: what was story {i + 1} about?"
            ttft["resumed, state"].append(ask(env, *common, "--load-history", str(conv), "-n",
                                              "4", question)["ttft_ms"])
            ttft["resumed, no state"].append(ask(off, *common, "--load-history", str(conv),
                                                 "-n", "4", question)["ttft_ms"])
            ttft["fresh short prompt"].append(ask(off, *common, "-n", "4",
                                                  question)["ttft_ms"])
        fresh = statistics.median(ttft["fresh short prompt"])
        print("| run | median TTFT | / fresh short prompt |")
        print("|---|---|---|")
        for name, values in ttft.items():
            value = statistics.median(values)
            print(f"| {name} | {value:.0f} ms | {value / fresh:.1f}x |")


if __name__ == "__main__":
    main()
