"""The native engine against llama.cpp on a tiny F32 GGUF of every family it runs, in one run.

    .venv/bin/python benchmarks/native_families.py [--tokens 64] [--repeat 3]

For each family (the models of `tests/support/family_models.py`, written as llama.cpp's
converter writes them): the largest logit difference over a 21-token prompt, relative to the
largest logit (llama.cpp with `logits_all=True` and a float32 KV cache); how many leading
tokens of the `--tokens`-token greedy replies of `lampchat ask --backend native` and
`--backend llama.cpp` are equal (the reply texts tokenized again); and both backends' decode
tokens/s as `ask --json` reports them (median of `--repeat`), with their ratio. The models
are tiny (d=64), so the speeds measure per-token overhead more than arithmetic.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PROMPT = (b"The lighthouse keeper climbed the stairs at dusk, lit the lamp, and watched the "
          b"boats come home")


def _ask(path: Path, backend: str, tokens: int) -> dict:
    command = [sys.executable, "-m", "app", "ask", "-m", str(path), "--backend", backend,
               "--temperature", "0", "--max-tokens", str(tokens), "--json", "--threads", "2",
               "Tell me a story."]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    if done.returncode:
        raise SystemExit(f"{backend} failed on {path.name}: {done.stderr.strip()}")
    return json.loads(done.stdout)


def _token_ids(path: Path, text: str) -> list[int]:
    import llama_cpp  # the reference's tokenizer, for counting equal tokens

    llm = llama_cpp.Llama(str(path), n_ctx=64, verbose=False, vocab_only=True)
    try:
        return llm.tokenize(text.encode(), add_bos=False, special=True)
    finally:
        llm.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import numpy as np

    from tests.support.family_models import FAMILIES, file_name
    from tests.support.references import llama_cpp_logits, native_logits

    print("| family | max logit diff (rel.) | greedy tokens equal | native tok/s | "
          "llama.cpp tok/s | native / llama.cpp |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for family, write in FAMILIES.items():
            path = write(Path(tmp) / file_name(family))
            ids, ref = llama_cpp_logits(path, PROMPT)
            ours = native_logits(path, ids)
            diff = float(np.abs(ours - ref).max() / np.abs(ref).max())
            speeds: dict[str, list[float]] = {"native": [], "llama.cpp": []}
            texts: dict[str, str] = {}
            for _ in range(args.repeat):
                for backend in speeds:
                    reply = _ask(path, backend, args.tokens)
                    speeds[backend].append(float(reply["decode_tps"]))
                    texts[backend] = reply["text"]
            a, b = _token_ids(path, texts["native"]), _token_ids(path, texts["llama.cpp"])
            same = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                        min(len(a), len(b)))
            native, cpp = (statistics.median(speeds[k]) for k in ("native", "llama.cpp"))
            print(f"| {family} | {diff:.1e} | {same}/{len(b)} | {native:.0f} | {cpp:.0f} | "
                  f"{native / cpp:.2f} |", flush=True)


if __name__ == "__main__":
    main()
