"""Check `lampchat bench` results against the speed and memory targets.

The targets are for 7B models on GPU hardware (issue 8):

- TTFT of the short chat prompt under 200 ms;
- tgN (decode) over 20 tokens/s;
- memory under 1.5 x the model file size: the larger of peak RSS and GPU memory.

Either check a bench JSON file you already have, or let this script run the bench first:

    lampchat bench -m llama-2-7b-chat.Q4_K_M.gguf -b llama.cpp -d cuda --json 7b.json
    .venv/bin/python benchmarks/check_targets.py 7b.json

    .venv/bin/python benchmarks/check_targets.py --model llama-2-7b-chat.Q4_K_M.gguf \
        --backend llama.cpp --device cuda            # runs the bench, then checks

Every measured case is checked; a case that failed or was skipped counts as FAIL, and so does
GPU memory that could not be read on a GPU device. A case run on the CPU is judged on memory
only: the speed targets are for a GPU, so its TTFT and decode figures are printed as N/A with
what was measured. Prints one line per target and case, then RESULT: PASS|FAIL (and which
targets were not judged); exits 0 only when every judged target passes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from engine.bench.report import BenchFileError, load_report  # noqa: E402

TTFT_MAX_MS = 200.0
DECODE_MIN_TPS = 20.0
MEMORY_MAX_RATIO = 1.5


def check_case(result: dict[str, Any], ttft_max: float, decode_min: float,
               memory_max: float) -> list[tuple[str, bool | None, str]]:
    """(target, passed, detail) for one case of a bench report; passed is None for a target
    this case cannot judge (speed on the CPU)."""
    name = Path(str(result.get("model_path") or result.get("model"))).name
    device = result.get("device_used") or result.get("device")
    label = f"{name} · {result.get('backend')} · {device}"
    if result.get("status") != "ok":
        return [(label, False, f"not measured: {result.get('status')}: {result.get('error')}")]
    metrics = result.get("metrics") or {}
    out: list[tuple[str, bool | None, str]] = []
    on_cpu = str(device or "cpu").split(":")[0] == "cpu"
    cpu_note = "; the speed targets are for a GPU, not judged on the CPU"
    ttft = (metrics.get("ttft_ms") or {}).get("mean")
    out.append((f"{label}: TTFT < {ttft_max:g} ms",
                None if on_cpu else ttft is not None and ttft < ttft_max,
                (f"{ttft:.1f} ms" if ttft is not None else "not measured")
                + (cpu_note if on_cpu else "")))
    tg = next((name for name in metrics if name.startswith("tg")), None)
    tps = metrics[tg]["mean"] if tg else None
    out.append((f"{label}: {tg or 'tgN'} > {decode_min:g} tok/s",
                None if on_cpu else tps is not None and tps > decode_min,
                (f"{tps:.1f} tok/s" if tps is not None else "not measured")
                + (cpu_note if on_cpu else "")))
    size = result.get("model_size_mb")
    rss = result.get("peak_rss_mb")
    gpu = result.get("gpu_memory_mb")
    device = str(result.get("device_used") or "cpu")
    nvidia = device.startswith(("cuda", "gpu"))
    if result.get("backend") == "remote":
        return out  # the memory is the server's
    if not size or rss is None:
        out.append((f"{label}: memory < {memory_max:g} x size", False, "not measured"))
    elif nvidia and gpu is None:
        out.append((f"{label}: memory < {memory_max:g} x size", False,
                    f"GPU memory unknown (peak RSS {rss:.0f} MB; NVIDIA: needs the driver's "
                    "NVML, or pip install nvidia-ml-py for per-process figures)"))
    else:
        memory = max(rss, gpu or 0.0)
        ratio = memory / size
        what = f"peak RSS {rss:.0f} MB" + (f", GPU {gpu:.0f} MB" if gpu is not None else "")
        out.append((f"{label}: memory < {memory_max:g} x size", ratio < memory_max,
                    f"{ratio:.2f} x ({what}; model {size:.0f} MB)"))
    return out


def run_bench(args: argparse.Namespace) -> Path:
    """Run `lampchat bench` for the given model and return its JSON file."""
    out = Path(tempfile.mkdtemp(prefix="lampchat-targets-")) / "bench.json"
    command = [sys.executable, "-m", "app", "bench", "-m", args.model, "--json", str(out),
               "-r", str(args.repetitions)]
    for flag, value in (("-b", args.backend), ("-d", args.device)):
        if value:
            command += [flag, value]
    print("running:", " ".join(command[2:]), flush=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(command, cwd=REPO, env=env, check=False)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="*", help="bench JSON files to check")
    parser.add_argument("--model", help="run `lampchat bench` on this model first")
    parser.add_argument("--backend", help="with --model: the backend (default: all for it)")
    parser.add_argument("--device", help="with --model: the device (default: all)")
    parser.add_argument("-r", "--repetitions", type=int, default=5)
    parser.add_argument("--ttft-ms", type=float, default=TTFT_MAX_MS)
    parser.add_argument("--decode-tps", type=float, default=DECODE_MIN_TPS)
    parser.add_argument("--memory-ratio", type=float, default=MEMORY_MAX_RATIO)
    args = parser.parse_args(argv)
    files = [Path(p) for p in args.json]
    if args.model:
        files.append(run_bench(args))
    if not files:
        parser.error("give bench JSON files, or --model to run the bench")
    checks: list[tuple[str, bool | None, str]] = []
    for path in files:
        try:
            report = load_report(path)
        except BenchFileError as exc:
            print(f"FAIL  {exc}")
            return 1
        for result in report["results"]:
            checks += check_case(result, args.ttft_ms, args.decode_tps, args.memory_ratio)
    for name, passed, detail in checks:
        print(f"{'N/A ' if passed is None else 'PASS' if passed else 'FAIL'}  {name}: {detail}")
    judged = [passed for _, passed, _ in checks if passed is not None]
    ok = bool(judged) and all(judged)
    unjudged = len(checks) - len(judged)
    note = f" ({unjudged} target(s) not judged: a CPU run judges memory only)" if unjudged else ""
    print(f"RESULT: {'PASS' if ok else 'FAIL'}{note}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
