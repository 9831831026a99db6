"""The native engine on OpenCL next to the same engine on numpy, SmolLM2-135M, in one run.

    .venv/bin/python benchmarks/bench_opencl.py [--model HF_DIR] [--prompt 128] [--decode 32]
        [--repeat 2] [--device opencl] [--half] [--json]

Without --model, the bundled SmolLM2 GGUF is converted to a float32 HF folder in a temporary
directory first. Each configuration runs in its own child process (load, one warm-up pass
that also compiles the OpenCL kernels for the shapes used, then `--repeat` timed runs):
prompt processing (pp) tokens/s for a `--prompt`-token prompt and greedy decode tokens/s over
`--decode` tokens after it, medians. `--half` adds OpenCL with float16 weights. Ratios are
OpenCL / numpy from the same run. Here OpenCL means PoCL's portable CPU device unless
`--device opencl:N` names another; the native engine never picks OpenCL by itself.
"""

from __future__ import annotations

import argparse
import json
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


def _prompt_ids(encode: Any, n: int) -> list[int]:
    ids: list[int] = []
    text = TEXT
    while len(ids) < n:
        ids = encode(text)
        text += TEXT
    return ids[:n]


def child(model: str, device: str, weights: str, n_prompt: int, n_decode: int,
          repeat: int) -> dict[str, Any]:
    """Load with the native backend on `device` and time pp and greedy decode."""
    from engine.backends.native import NativeBackend
    from engine.sampling import Sampler
    from engine.types import LoadSettings, SamplingParams

    backend = NativeBackend()
    started = time.perf_counter()
    info = backend.load(model, LoadSettings(n_ctx=n_prompt + n_decode + 8, device=device,
                                            options={"opencl_weights": weights}))
    load_s = time.perf_counter() - started
    generator = backend._generator
    assert generator is not None
    ids = _prompt_ids(lambda t: backend._tokenizer.encode(t, add_special_tokens=False).ids,
                      n_prompt)
    greedy = Sampler(SamplingParams(temperature=0.0, repeat_penalty=1.0))
    pp, decode, tokens = [], [], []
    for run in range(repeat + 1):  # run 0 warms up (PoCL compiles kernels per launch shape)
        generator.cache.truncate(0)
        t0 = time.perf_counter()
        logits = generator.prefill(ids)
        pp_s = time.perf_counter() - t0
        assert logits is not None
        out = []
        t0 = time.perf_counter()
        for _ in range(n_decode):
            out.append(greedy(logits))
            logits = generator.step(out[-1])
        decode_s = time.perf_counter() - t0
        if run:
            pp.append(n_prompt / pp_s)
            decode.append(n_decode / decode_s)
        tokens = out
    ops = generator.model.ops
    return {
        "device": info.device,
        "weights": "float16" if getattr(ops, "half_weights", False) else "float32",
        "load_s": round(load_s, 2),
        "pp_tps": round(statistics.median(pp), 2),
        "decode_tps": round(statistics.median(decode), 2),
        "tokens": tokens,
    }


def _run_child(model: str, device: str, weights: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", model, device, weights, str(args.prompt),
           str(args.decode), str(args.repeat)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        return {"device": device, "weights": weights, "error": done.stderr.strip()[-500:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _convert(tmp: Path) -> str:
    from engine.models import default_model_path

    out = tmp / "SmolLM2-135M-Instruct"
    subprocess.run([sys.executable, "-m", "app", "convert", str(default_model_path()), "-o",
                    str(out)], check=True, cwd=REPO, capture_output=True)
    return str(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="an HF folder (default: the bundled GGUF, converted)")
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens (pp)")
    parser.add_argument("--decode", type=int, default=32, help="greedy tokens decoded")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs (median)")
    parser.add_argument("--device", default="opencl", help="OpenCL device (opencl, opencl:N)")
    parser.add_argument("--half", action="store_true", help="also OpenCL with float16 weights")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-opencl-") as tmp:
        model = args.model or _convert(Path(tmp))
        configs = [("cpu", "float32"), (args.device, "float32")]
        if args.half:
            configs.append((args.device, "float16"))
        rows = []
        for device, weights in configs:
            print(f"running native on {device} ({weights} weights)...", file=sys.stderr)
            rows.append(_run_child(model, device, weights, args))
    base = rows[0]
    for row in rows:
        if "error" not in row and "error" not in base:
            row["pp_vs_numpy"] = round(row["pp_tps"] / base["pp_tps"], 3)
            row["decode_vs_numpy"] = round(row["decode_tps"] / base["decode_tps"], 3)
            row["same_tokens_as_numpy"] = row["tokens"] == base["tokens"]
    if args.json:
        print(json.dumps({"prompt": args.prompt, "decode": args.decode, "rows": rows}))
        return 0
    print(f"SmolLM2-135M, native engine, {args.prompt}-token prompt, {args.decode} greedy "
          f"tokens, median of {args.repeat} (machine shared: compare ratios, not absolutes)")
    head = f"{'device':<38} {'weights':<8} {'load s':>7} {'pp tok/s':>9} {'decode tok/s':>13} " \
           f"{'pp ratio':>9} {'dec ratio':>10} same tokens"
    print(head)
    for row in rows:
        if "error" in row:
            print(f"{row['device']:<38} {row['weights']:<8} failed: {row['error']}")
            continue
        print(f"{row['device']:<38} {row['weights']:<8} {row['load_s']:>7.1f} "
              f"{row['pp_tps']:>9.1f} {row['decode_tps']:>13.2f} "
              f"{row.get('pp_vs_numpy', 1):>9.2f} {row.get('decode_vs_numpy', 1):>10.2f} "
              f"{row.get('same_tokens_as_numpy')}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, model, device, weights, n_prompt, n_decode, repeat = sys.argv
        result = child(model, device, weights, int(n_prompt), int(n_decode), int(repeat))
        print(json.dumps(result))
        sys.exit(0)
    sys.exit(main())
