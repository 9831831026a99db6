"""`lampchat ask` versus raw llama-cpp-python, side by side in one run (issue 2's benchmark).

Same model (the bundled default unless --model), same prompt, same threads and context, greedy
decoding on both sides. Runs are interleaved (Lampchat, raw, Lampchat, raw, ...) so machine
noise hits both alike, and each figure is judged on the median of the per-pair values:

- decode tokens/s: Lampchat ≥ 0.97 × raw;
- TTFT: Lampchat ≤ raw + 5 ms.

Modes (default: engine):

- engine: in one process, Lampchat's engine path as `lampchat ask` uses it (EngineWorker +
  llama.cpp backend, pieces timed where the async consumer receives them) against a second
  `llama_cpp.Llama` with the same settings driven through
  `create_chat_completion(stream=True)`. Each repetition runs the prompt from an empty KV cache
  ("cold") and then again with the prompt cached ("cached"; a chat's next turn), on both sides.
- cli: the real `lampchat ask --json` process against a fresh Python process that loads the
  same model with llama-cpp-python and streams the same chat completion; both report TTFT from
  the request (after loading) and decode tokens/s the same way.
- abort-callback: a diagnostic, not a check. Decode ms/token of one raw `Llama` with no abort
  callback, with a Python ctypes abort callback (what engine/backends/llama_cpp.py installs
  for cancel; ggml calls it after every graph node, about 600 times per token on SmolLM2),
  and with a C function as the callback (libc `strlen` on a 2-byte flag buffer: no GIL).

Decode tokens/s is computed the same way on both sides: tokens after the first one over the
time from the first token to the last. Lampchat's own per-reply metric (`decode_tps` in
`ask --json`: completion tokens over that time) is printed next to it.

Usage:
    .venv/bin/python benchmarks/bench_ask_vs_raw.py                     # engine mode, 7 reps
    .venv/bin/python benchmarks/bench_ask_vs_raw.py --mode cli --reps 5
    .venv/bin/python benchmarks/bench_ask_vs_raw.py --mode abort-callback --reps 10
    .venv/bin/python benchmarks/bench_ask_vs_raw.py --mode both --reps 10 --max-tokens 128 \
        --threads 2 --json ask_vs_raw.json
Exit status: 0 when every check passes, 1 when one fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from engine.backends.llama_cpp import default_threads  # noqa: E402
from engine.models import default_model_path  # noqa: E402
from engine.types import ChatMessage, LoadSettings, SamplingParams  # noqa: E402

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
SYSTEM = "You are a helpful assistant."
DECODE_MIN_RATIO = 0.97
TTFT_MAX_EXTRA_MS = 5.0


@dataclass
class Run:
    """One timed reply."""

    ttft_ms: float
    tokens: int
    decode_tps: float
    """Tokens after the first over first->last token time (the same formula on both sides)."""
    text: str = ""
    reported_decode_tps: float | None = None
    """Lampchat's own metric (completion tokens / decode time), where there is one."""


@dataclass
class Series:
    """Paired runs of one mode: lampchat[i] and raw[i] ran back to back."""

    name: str
    lampchat: list[Run] = field(default_factory=list)
    raw: list[Run] = field(default_factory=list)


def decode_tps(first: float | None, last: float | None, tokens: int) -> float:
    """Tokens after the first over the time from the first to the last."""
    if first is None or last is None or tokens < 2 or last <= first:
        return 0.0
    return (tokens - 1) / (last - first)


def messages() -> list[ChatMessage]:
    return [ChatMessage("system", SYSTEM), ChatMessage("user", PROMPT)]


def sampling(max_tokens: int) -> SamplingParams:
    """Greedy, fixed seed, no repeat penalty: both sides make the same tokens."""
    return SamplingParams(temperature=0.0, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0,
                          seed=0, max_tokens=max_tokens)


# -- raw llama-cpp-python --------------------------------------------------------------------


def raw_llama(model: str, n_ctx: int, threads: int) -> Any:
    """A `Llama` loaded the way Lampchat's backend loads it on the CPU."""
    import llama_cpp

    with contextlib.redirect_stderr(io.StringIO()):
        return llama_cpp.Llama(model_path=model, n_ctx=n_ctx, n_threads=threads,
                               n_threads_batch=threads, n_gpu_layers=0, verbose=False)


def raw_chat(llm: Any, max_tokens: int, fresh: bool) -> Run:
    """One `create_chat_completion(stream=True)`, timed where the chunks arrive."""
    s = sampling(max_tokens)
    if fresh:
        llm.reset()
    start = time.perf_counter()
    first = last = None
    tokens = 0
    parts: list[str] = []
    for chunk in llm.create_chat_completion(
        messages=[{"role": m.role, "content": m.content} for m in messages()], stream=True,
        temperature=s.temperature, top_k=s.top_k, top_p=s.top_p, min_p=s.min_p,
        repeat_penalty=s.repeat_penalty, seed=s.seed, max_tokens=s.max_tokens,
    ):
        content = chunk["choices"][0]["delta"].get("content")
        if not content:
            continue
        now = time.perf_counter()
        first = now if first is None else first
        last = now
        tokens += 1  # llama-cpp-python streams one chunk per token
        parts.append(content)
    ttft = ((first or time.perf_counter()) - start) * 1000
    return Run(ttft, tokens, decode_tps(first, last, tokens), "".join(parts))


# -- Lampchat's engine path ------------------------------------------------------------------


async def lampchat_chat(worker: Any, max_tokens: int, fresh: bool) -> Run:
    """One reply through EngineWorker.generate, timed where the async consumer gets pieces."""
    if fresh:
        await asyncio.get_running_loop().run_in_executor(
            worker._executor, worker.backend._llm.reset)
    start = time.perf_counter()
    first = last = None
    tokens = 0
    generation = worker.generate(messages(), sampling(max_tokens))
    async for piece in generation:
        if piece.n_tokens <= 0:
            continue
        now = time.perf_counter()
        first = now if first is None else first
        last = now
        tokens += piece.n_tokens
    if generation.error:
        raise RuntimeError(generation.error)
    ttft = ((first or time.perf_counter()) - start) * 1000
    m = generation.metrics
    return Run(ttft, tokens, decode_tps(first, last, tokens), generation.text,
               m.decode_tps if m else None)


async def engine_mode(model: str, reps: int, max_tokens: int, threads: int,
                      n_ctx: int) -> list[Series]:
    """Interleaved cold and cached runs of both paths in this process."""
    from engine.worker import EngineWorker

    worker = EngineWorker()
    await worker.load(model, "llama.cpp", LoadSettings(n_ctx=n_ctx, n_threads=threads,
                                                       device="cpu"))
    llm = raw_llama(model, n_ctx, threads)
    loop = asyncio.get_running_loop()

    async def raw(fresh: bool) -> Run:  # on the engine thread too, like Lampchat's decode
        return await loop.run_in_executor(worker._executor, raw_chat, llm, max_tokens, fresh)

    cold, cached = Series("engine · cold prompt"), Series("engine · cached prompt")
    try:
        await lampchat_chat(worker, 8, True)  # warm-up, untimed
        await raw(True)
        for rep in range(reps):
            order = [("lampchat", lampchat_chat), ("raw", None)]
            if rep % 2:  # alternate who goes first
                order.reverse()
            for name, _ in order:
                if name == "lampchat":
                    cold.lampchat.append(await lampchat_chat(worker, max_tokens, True))
                    cached.lampchat.append(await lampchat_chat(worker, max_tokens, False))
                else:
                    cold.raw.append(await raw(True))
                    cached.raw.append(await raw(False))
            _tick(rep, reps, cold)
    finally:
        llm.close()
        await worker.close()
    return [cold, cached]


# -- real processes --------------------------------------------------------------------------


RAW_CHILD = """
import contextlib, io, json, sys, time
sys.path.insert(0, {repo!r})
from benchmarks.bench_ask_vs_raw import raw_chat, raw_llama
llm = raw_llama({model!r}, {n_ctx}, {threads})
run = raw_chat(llm, {max_tokens}, True)
print(json.dumps(run.__dict__))
"""


def cli_lampchat(model: str, max_tokens: int, threads: int, n_ctx: int) -> Run:
    """`lampchat ask --json` in its own process."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "app", "ask", PROMPT, "--json", "--model", model,
         "--backend", "llama.cpp", "--system", SYSTEM, "--temperature", "0", "--seed", "0",
         "--repeat-penalty", "1.0", "--max-tokens", str(max_tokens), "--threads", str(threads),
         "--ctx", str(n_ctx), "--device", "cpu"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"lampchat ask failed: {proc.stderr.strip()[-300:]}")
    data = json.loads(proc.stdout)
    n = int(data["completion_tokens"])
    decode_s = n / data["decode_tps"] if data.get("decode_tps") else 0.0
    same_formula = (n - 1) / decode_s if decode_s > 0 and n > 1 else 0.0
    return Run(float(data["ttft_ms"]), n, same_formula, data["text"], data["decode_tps"])


def cli_raw(model: str, max_tokens: int, threads: int, n_ctx: int) -> Run:
    """llama-cpp-python in a fresh process: load, then one streamed chat completion."""
    code = RAW_CHILD.format(repo=str(REPO), model=model, n_ctx=n_ctx, threads=threads,
                            max_tokens=max_tokens)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"raw llama-cpp-python failed: {proc.stderr.strip()[-300:]}")
    return Run(**json.loads(proc.stdout.strip().splitlines()[-1]))


def cli_mode(model: str, reps: int, max_tokens: int, threads: int, n_ctx: int) -> list[Series]:
    """Interleaved process pairs (each loads the model, then streams one reply)."""
    series = Series("cli · ask --json vs raw process")
    cli_lampchat(model, 8, threads, n_ctx)  # warm the page cache and imports, untimed
    cli_raw(model, 8, threads, n_ctx)
    for rep in range(reps):
        runs: list[tuple[str, Callable[..., Run]]] = [("lampchat", cli_lampchat),
                                                      ("raw", cli_raw)]
        if rep % 2:
            runs.reverse()
        for name, fn in runs:
            getattr(series, name).append(fn(model, max_tokens, threads, n_ctx))
        _tick(rep, reps, series)
    return [series]


# -- abort callback cost (diagnostic) --------------------------------------------------------


def abort_callback_mode(model: str, reps: int, max_tokens: int, threads: int,
                        n_ctx: int) -> None:
    """Print decode ms/token with no, a Python and a C abort callback, interleaved."""
    import ctypes
    import threading

    import llama_cpp

    llm = raw_llama(model, n_ctx, threads)
    flag_event = threading.Event()
    calls = [0]

    @llama_cpp.ggml_abort_callback
    def python_cb(_data: Any) -> bool:
        calls[0] += 1
        return flag_event.is_set()

    libc = ctypes.CDLL(None)
    c_cb = ctypes.cast(libc.strlen, llama_cpp.ggml_abort_callback)
    flag = ctypes.create_string_buffer(2)  # strlen() reads 0 (go on) or 1 (abort)
    modes = {
        "none": (ctypes.cast(None, llama_cpp.ggml_abort_callback), ctypes.c_void_p(0)),
        "python": (python_cb, ctypes.c_void_p(0)),
        "c (strlen)": (c_cb, ctypes.cast(flag, ctypes.c_void_p)),
    }
    prompt = llm.tokenize(PROMPT.encode(), add_bos=True)

    def per_token_ms(n: int) -> float:
        llm.reset()
        llm.eval(prompt)
        start = time.perf_counter()
        for _ in range(n):
            llm.eval([prompt[-1]])
        return (time.perf_counter() - start) / n * 1000

    llama_cpp.llama_set_abort_callback(llm._ctx.ctx, *modes["python"])
    per_token_ms(1)
    calls[0] = 0
    per_token_ms(4)
    print(f"python abort callback calls per decoded token: {calls[0] / 5:.0f}")
    llama_cpp.llama_set_abort_callback(llm._ctx.ctx, *modes["c (strlen)"])
    flag[0] = b"\x01"
    try:
        llm.reset()
        llm.eval(prompt)
        print("c (strlen) callback: did NOT abort")
    except RuntimeError as exc:
        print(f"c (strlen) callback with the flag set aborts: {exc}")
    flag[0] = b"\x00"
    times: dict[str, list[float]] = {name: [] for name in modes}
    for rep in range(reps):
        for name, (cb, data) in modes.items():
            llama_cpp.llama_set_abort_callback(llm._ctx.ctx, cb, data)
            times[name].append(per_token_ms(max_tokens))
        print(f"  rep {rep + 1}/{reps}: " + ", ".join(
            f"{n} {v[-1]:.2f}" for n, v in times.items()) + " ms/token", file=sys.stderr)
    base = times["none"]
    for name, values in times.items():
        ratio = statistics.median(b / v for b, v in zip(base, values, strict=True))
        print(f"  {name:11s} {_fmt(values, 2)} ms/token; decode speed vs none "
              f"(median of pairs) {ratio:.3f}")
    llm.close()


# -- report ----------------------------------------------------------------------------------


def _tick(rep: int, reps: int, series: Series) -> None:
    lamp, raw = series.lampchat[-1], series.raw[-1]
    print(f"  [{series.name}] rep {rep + 1}/{reps}: lampchat {lamp.decode_tps:6.1f} tok/s "
          f"ttft {lamp.ttft_ms:6.1f} ms | raw {raw.decode_tps:6.1f} tok/s "
          f"ttft {raw.ttft_ms:6.1f} ms", file=sys.stderr, flush=True)


def _fmt(values: Iterable[float], digits: int = 1) -> str:
    vals = list(values)
    mean = statistics.fmean(vals)
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{mean:.{digits}f} ± {sd:.{digits}f} (median {statistics.median(vals):.{digits}f})"


def judge(series: Series) -> dict[str, Any]:
    """Per-pair decode ratios and TTFT differences, their medians, and the verdicts."""
    pairs = list(zip(series.lampchat, series.raw, strict=True))
    ratios = [a.decode_tps / b.decode_tps for a, b in pairs if b.decode_tps > 0]
    extra = [a.ttft_ms - b.ttft_ms for a, b in pairs]
    ratio = statistics.median(ratios) if ratios else 0.0
    extra_ms = statistics.median(extra)
    same_text = all(a.text == b.text for a, b in pairs)
    return {
        "mode": series.name,
        "reps": len(pairs),
        "lampchat_decode_tps": [round(r.decode_tps, 2) for r in series.lampchat],
        "raw_decode_tps": [round(r.decode_tps, 2) for r in series.raw],
        "lampchat_reported_decode_tps": [round(r.reported_decode_tps, 2)
                                         for r in series.lampchat if r.reported_decode_tps],
        "lampchat_ttft_ms": [round(r.ttft_ms, 2) for r in series.lampchat],
        "raw_ttft_ms": [round(r.ttft_ms, 2) for r in series.raw],
        "tokens": [r.tokens for r in series.lampchat],
        "decode_ratio_median": round(ratio, 4),
        "ttft_extra_ms_median": round(extra_ms, 2),
        "same_text": same_text,
        "decode_pass": ratio >= DECODE_MIN_RATIO,
        "ttft_pass": extra_ms <= TTFT_MAX_EXTRA_MS,
    }


def print_verdict(series: Series, verdict: dict[str, Any]) -> None:
    ok = "PASS" if verdict["decode_pass"] else "FAIL"
    tt = "PASS" if verdict["ttft_pass"] else "FAIL"
    reported = verdict["lampchat_reported_decode_tps"]
    print(f"\n== {series.name} ({verdict['reps']} pairs, {statistics.fmean(verdict['tokens']):.0f} "
          f"tokens each) ==")
    print(f"  decode tok/s  lampchat {_fmt(r.decode_tps for r in series.lampchat)}")
    print(f"                raw      {_fmt(r.decode_tps for r in series.raw)}")
    if reported:
        print(f"                (lampchat's own metric: {_fmt(reported)})")
    print(f"  TTFT ms       lampchat {_fmt(r.ttft_ms for r in series.lampchat)}")
    print(f"                raw      {_fmt(r.ttft_ms for r in series.raw)}")
    print(f"  decode ratio (median of pairs) {verdict['decode_ratio_median']:.3f} "
          f"(need >= {DECODE_MIN_RATIO})  {ok}")
    print(f"  TTFT extra   (median of pairs) {verdict['ttft_extra_ms_median']:+.1f} ms "
          f"(need <= +{TTFT_MAX_EXTRA_MS:g} ms)  {tt}")
    print(f"  same greedy text on both sides: {'yes' if verdict['same_text'] else 'NO'}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="GGUF file (default: the bundled SmolLM2-135M)")
    parser.add_argument("--mode", choices=("engine", "cli", "both", "abort-callback"),
                        default="engine")
    parser.add_argument("--reps", type=int, default=7, help="interleaved pairs (default 7)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.reps < 1 or args.max_tokens < 2:
        parser.error("--reps must be >= 1 and --max-tokens >= 2")
    model = str(Path(args.model).expanduser() if args.model else default_model_path())
    print(f"model {Path(model).name}, threads {args.threads}, ctx {args.ctx}, "
          f"max_tokens {args.max_tokens}, greedy, {args.reps} interleaved pairs; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    if args.mode == "abort-callback":
        abort_callback_mode(model, args.reps, args.max_tokens, args.threads, args.ctx)
        return 0
    series: list[Series] = []
    if args.mode in ("engine", "both"):
        series += asyncio.run(engine_mode(model, args.reps, args.max_tokens, args.threads,
                                          args.ctx))
    if args.mode in ("cli", "both"):
        series += cli_mode(model, args.reps, args.max_tokens, args.threads, args.ctx)
    verdicts = [judge(s) for s in series]
    for s, v in zip(series, verdicts, strict=True):
        print_verdict(s, v)
    passed = all(v["decode_pass"] and v["ttft_pass"] for v in verdicts)
    print(f"\noverall: {'PASS' if passed else 'FAIL'} (machine load average now "
          f"{os.getloadavg()[0]:.2f}; a shared machine makes single pairs noisy)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": model, "threads": args.threads, "ctx": args.ctx,
            "max_tokens": args.max_tokens, "results": verdicts, "pass": passed}, indent=2))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
