"""Measures one bench case in this process: `python -m engine.bench.child` (run by the runner).

The case (a `CaseSpec` as JSON) comes on stdin. Events go to stdout as JSON lines: "progress"
while running, then one "result". Anything else the libraries print lands on stderr, so it
cannot corrupt the events. A fresh process per case keeps each backend's peak RSS its own.

Per case: load the model through `EngineWorker` (timed), warm up both paths (untimed), then for
each repetition and each figure run Lampchat's path and the raw library call back to back
(A/B interleaved, each from a fresh context), so machine noise hits both alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, TextIO, TypeVar

from engine.backends.base import Backend
from engine.bench.adapters import BenchAdapter, RawBaseline, StreamTiming, Timeline, adapter_for
from engine.bench.config import CaseSpec, _is_default
from engine.bench.memory import GpuMemoryProbe, peak_rss_mb, rss_mb
from engine.bench.prompts import TG_PROMPT, TTFT_PROMPT, chat, prompt_of_tokens
from engine.bench.stats import Stat
from engine.errors import BackendUnavailableError, DeviceUnavailableError, LampchatError
from engine.types import ChatMessage, LoadSettings, SamplingParams
from engine.worker import EngineWorker

log = logging.getLogger(__name__)

T = TypeVar("T")
Emit = Callable[[dict[str, Any]], None]

GREEDY = SamplingParams(temperature=0.0, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0,
                        seed=0, max_tokens=1)
"""The settings of every timed generation, on both paths (greedy: both make the same tokens)."""

WARMUP_TOKENS = 8
RESULT_FIELDS = (
    "model", "model_path", "model_size_mb", "backend", "device", "device_used", "status",
    "error", "note", "info", "load_s", "metrics", "raw", "raw_calls", "raw_error", "overhead",
    "tokens", "peak_rss_mb", "rss_before_load_mb", "peak_rss_ratio", "gpu_memory_mb",
    "gpu_memory_source", "duration_s",
)
"""Every field of a case's result (all present, None when not measured)."""


class BenchFailure(LampchatError):
    """A case could not be measured."""


def one_line(exc: BaseException) -> str:
    """A short one-line description of a failure."""
    text = str(exc) if isinstance(exc, LampchatError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def empty_result(spec: CaseSpec) -> dict[str, Any]:
    """A result with every field, nothing measured yet."""
    result: dict[str, Any] = dict.fromkeys(RESULT_FIELDS)
    path = Path(spec.model)
    result.update(model=path.name or spec.model, model_path=spec.model, backend=spec.backend,
                  device=spec.device, status="failed")
    if spec.backend == "remote":  # a server's model: nothing on disk here

        result["model"] = "server's model" if _is_default(spec.model) else spec.model
        return result
    with contextlib.suppress(OSError):
        result["model_size_mb"] = _size_bytes(path) / 2**20 if path.exists() else None
    return result


def _size_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


class _Case:
    """The measurement of one case; `run` fills `result`."""

    def __init__(self, spec: CaseSpec, emit: Emit) -> None:
        self.spec = spec
        self.emit = emit
        self.worker = EngineWorker()
        self.result = empty_result(spec)
        self.backend: Backend | None = None
        self.adapter: BenchAdapter | None = None
        self.raw: RawBaseline | None = None
        self.done = 0
        self.steps = 1
        self.gpu: GpuMemoryProbe | None = None

    # -- plumbing ---------------------------------------------------------------------------

    def progress(self, label: str) -> None:
        if self.gpu is not None and self.done:
            self.gpu.sample()
        self.emit({"event": "progress", "done": self.done, "steps": self.steps, "label": label})

    async def on_engine(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the worker's engine thread (the thread that owns the model)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.worker._executor, partial(fn, *args))

    async def fresh(self) -> None:
        assert self.adapter is not None and self.backend is not None
        if self.adapter.fresh_context is not None:
            await self.on_engine(self.adapter.fresh_context, self.backend)

    # -- the two paths ----------------------------------------------------------------------

    async def lampchat(self, messages: Sequence[ChatMessage], max_tokens: int) -> StreamTiming:
        """Lampchat's real path: EngineWorker.generate, timed where the pieces arrive."""
        await self.fresh()
        timeline = Timeline()
        generation = self.worker.generate(messages, replace(GREEDY, max_tokens=max_tokens))
        async for piece in generation:
            timeline.mark(piece.n_tokens)
        if generation.error:
            raise BenchFailure(generation.error)
        metrics = generation.metrics
        return timeline.done(metrics.prompt_tokens if metrics else 0)

    async def raw_chat(self, messages: Sequence[ChatMessage], max_tokens: int) -> StreamTiming:
        assert self.raw is not None
        sampling = replace(GREEDY, max_tokens=max_tokens)
        return await self.on_engine(self._uncancelled, self.raw.chat, messages, sampling)

    async def raw_prompt(self, tokens: list[int]) -> float:
        assert self.raw is not None
        return await self.on_engine(self._uncancelled, self.raw.prompt, tokens)

    async def raw_pp(self, messages: Sequence[ChatMessage]) -> tuple[float, int]:
        """(seconds, prompt tokens) of the raw prompt evaluation of `messages`."""
        assert self.raw is not None and self.adapter is not None
        if self.adapter.tokenize is None:
            seconds = await self.on_engine(self._uncancelled, self.raw.prompt_messages, messages)
            return seconds, 0
        ids = await self.tokenize(messages)
        return await self.raw_prompt(ids), len(ids)

    def _uncancelled(self, fn: Callable[..., T], *args: Any) -> T:
        """Call `fn` with the backend's cancel flag clear.

        The worker may leave the flag set after a reply that finished on its own (it cancels
        when the reply's thread is still winding down); Lampchat clears it before each reply,
        and a raw call must too, or llama.cpp's abort callback stops it.
        """
        assert self.backend is not None
        self.backend.reset_cancel()
        return fn(*args)

    async def tokenize(self, messages: Sequence[ChatMessage]) -> list[int]:
        assert self.adapter is not None and self.adapter.tokenize is not None
        return await self.on_engine(self.adapter.tokenize, self.backend, messages)

    # -- the case ---------------------------------------------------------------------------

    async def load(self) -> None:
        spec = self.spec
        self.progress("loading")
        self.result["rss_before_load_mb"] = rss_mb()
        if spec.backend != "remote" and spec.device != "cpu":
            self.gpu = GpuMemoryProbe()
        settings = LoadSettings(n_ctx=spec.n_ctx, n_threads=spec.threads, device=spec.device,
                                options=dict(spec.options))
        start = time.perf_counter()
        info = await self.worker.load(spec.model, spec.backend, settings)
        self.result["load_s"] = time.perf_counter() - start
        self.done += 1
        backend = self.worker.backend
        assert backend is not None
        if info.backend != spec.backend:
            raise BenchFailure(f"{spec.backend} did not load it ({info.backend} did instead)")
        self.backend = backend
        self.adapter = adapter_for(spec.backend, backend)
        self.result.update(model=info.name, model_path=info.path, device_used=info.device,
                           info=info.to_dict(), note=getattr(self.worker, "fallback_note", None))
        if info.file_size:
            self.result["model_size_mb"] = info.file_size / 2**20
        if not spec.raw:
            return
        if self.adapter.raw is None:
            self.result["raw_error"] = f"no raw baseline for {spec.backend} (no bench adapter)"
            return
        try:
            self.raw = await self.on_engine(self.adapter.raw, backend)
            self.result["raw_calls"] = dict(self.raw.calls)
        except Exception as exc:
            log.warning("raw baseline for %s unavailable", spec.backend, exc_info=True)
            self.result["raw_error"] = one_line(exc)

    @property
    def shared_cache(self) -> bool:
        """Whether the two paths may hit each other's cached prompt (no fresh context: e.g.
        a server's prompt cache); then each path gets its own prompts."""
        return self.adapter is not None and self.adapter.fresh_context is None

    def ttft_messages(self, side: str, rep: int) -> list[ChatMessage]:
        """The short chat prompt; with a shared cache, a per-path, per-repetition variant of
        the same length (a cached copy would flatter whichever path ran second)."""
        if not self.shared_cache:
            return chat(TTFT_PROMPT)
        return chat(f"({'AB'[side == 'raw']}{rep % 10}) {TTFT_PROMPT}")

    async def prompts(self) -> dict[tuple[int, int, str], list[ChatMessage]]:
        """The ppN prompts of every repetition (and of the warm-up, repetition -1), per path
        (the same for both, unless the paths share a prompt cache)."""
        assert self.adapter is not None
        tokenize = None
        if self.adapter.tokenize is not None:
            backend = self.backend
            tokenize_fn = self.adapter.tokenize

            def tokenize(messages: Sequence[ChatMessage]) -> list[int]:
                return tokenize_fn(backend, messages)  # type: ignore[arg-type]

        shared = self.shared_cache

        def build() -> dict[tuple[int, int, str], list[ChatMessage]]:
            out = {}
            for rep in range(-1, self.spec.repetitions):
                for n in self.spec.pp:
                    seed = 1000 * (rep + 2) + n
                    out[(rep, n, "lampchat")] = prompt_of_tokens(n, seed, tokenize)
                    out[(rep, n, "raw")] = (prompt_of_tokens(n, seed + 500, tokenize) if shared
                                            else out[(rep, n, "lampchat")])
            return out

        return await self.on_engine(build)

    async def run(self) -> None:
        spec = self.spec
        await self.load()
        pp_prompts = await self.prompts()
        tests = [f"pp{n}" for n in spec.pp] + [f"tg{spec.tg}", "ttft_ms"]
        paths = 2 if self.raw is not None else 1
        self.steps = 2 + spec.repetitions * len(tests) * paths
        lamp: dict[str, list[float]] = {t: [] for t in tests}
        raw: dict[str, list[float]] = {t: [] for t in tests}
        tokens: dict[str, list[float]] = {t: [] for t in tests}

        self.progress("warm-up")
        n_warm = max(spec.pp)
        await self.warm_up(pp_prompts[(-1, n_warm, "lampchat")], pp_prompts[(-1, n_warm, "raw")])
        self.done += 1
        paths = 2 if self.raw is not None else 1  # the raw baseline may have failed to warm up
        self.steps = 2 + spec.repetitions * len(tests) * paths

        for rep in range(spec.repetitions):
            for test in tests:
                where = f"{test} · rep {rep + 1}/{spec.repetitions}"
                sides = ["lampchat", "raw"] if rep % 2 == 0 else ["raw", "lampchat"]
                for side in sides:  # A/B, then B/A: neither path always goes first
                    if side == "lampchat":
                        self.progress(f"{where} · lampchat")
                        value, count = await self.measure_lampchat(
                            test, pp_prompts.get((rep, _n(test), side)), rep)
                        lamp[test].append(value)
                        tokens[test].append(count)
                    elif self.raw is not None:
                        self.progress(f"{where} · raw")
                        try:
                            counted = tokens[test]
                            raw[test].append(await self.measure_raw(
                                test, pp_prompts.get((rep, _n(test), side)), rep,
                                sum(counted) / len(counted) if counted else 0.0))
                        except Exception as exc:
                            log.warning("raw baseline failed", exc_info=True)
                            self.result["raw_error"] = one_line(exc)
                            self.raw = None
                    else:
                        continue
                    self.done += 1
        self.finish(tests, lamp, raw, tokens)

    async def warm_up(self, pp_messages: list[ChatMessage],
                      raw_pp_messages: list[ChatMessage]) -> None:
        """One untimed run of each kind of work on each path."""
        await self.lampchat(pp_messages, 1)
        await self.lampchat(self.ttft_messages("lampchat", 9), WARMUP_TOKENS)
        if self.raw is not None:
            try:
                await self.raw_pp(raw_pp_messages)
                await self.raw_chat(self.ttft_messages("raw", 9), WARMUP_TOKENS)
            except Exception as exc:
                log.warning("raw baseline failed in the warm-up", exc_info=True)
                self.result["raw_error"] = one_line(exc)
                self.raw = None

    async def measure_lampchat(
        self, test: str, pp_messages: list[ChatMessage] | None, rep: int = 0
    ) -> tuple[float, float]:
        """(the figure, its token count) for one repetition of `test` on Lampchat's path."""
        if test.startswith("pp"):
            assert pp_messages is not None
            timing = await self.lampchat(pp_messages, 1)
            return timing.prompt_tokens / timing.ttft_s, timing.prompt_tokens
        if test.startswith("tg"):
            timing = await self.lampchat(chat(TG_PROMPT), self.spec.tg)
            if timing.decode_tokens < 1:
                raise BenchFailure(f"{test}: the model stopped after {timing.tokens} token(s)")
            return timing.decode_tps, timing.tokens
        timing = await self.lampchat(self.ttft_messages("lampchat", rep), 1)
        return timing.ttft_s * 1000, timing.prompt_tokens

    async def measure_raw(self, test: str, pp_messages: list[ChatMessage] | None,
                          rep: int = 0, lampchat_tokens: float = 0.0) -> float:
        """The figure for one repetition of `test` with the raw library call.

        A raw prompt with no token count of its own (a server's) is counted as Lampchat's
        prompts of the same size were (the server's usage count), else as N.
        """
        if test.startswith("pp"):
            assert pp_messages is not None
            seconds, n_tokens = await self.raw_pp(pp_messages)
            return (n_tokens or lampchat_tokens or _n(test)) / seconds
        if test.startswith("tg"):
            timing = await self.raw_chat(chat(TG_PROMPT), self.spec.tg)
            if timing.decode_tokens < 1:
                raise BenchFailure(f"raw {test}: the model stopped after {timing.tokens} token(s)")
            return timing.decode_tps
        return (await self.raw_chat(self.ttft_messages("raw", rep), 1)).ttft_s * 1000

    def finish(self, tests: list[str], lamp: dict[str, list[float]],
               raw: dict[str, list[float]], tokens: dict[str, list[float]]) -> None:
        result = self.result
        result["metrics"] = {t: Stat.of(lamp[t]).to_dict() for t in tests}
        result["tokens"] = {t: round(sum(v) / len(v), 1) for t, v in tokens.items()}
        if self.raw is not None and all(raw[t] for t in tests):
            result["raw"] = {t: Stat.of(raw[t]).to_dict() for t in tests}
            result["overhead"] = overhead(result["metrics"], result["raw"])
        peak = peak_rss_mb()
        result["peak_rss_mb"] = peak
        size = result.get("model_size_mb")
        result["peak_rss_ratio"] = peak / size if size else None
        assert self.adapter is not None and self.backend is not None
        if self.adapter.gpu_memory_mb is not None:
            try:
                result["gpu_memory_mb"] = self.adapter.gpu_memory_mb(self.backend)
                if result["gpu_memory_mb"] is not None:
                    result["gpu_memory_source"] = f"{self.spec.backend} backend"
            except Exception:
                log.warning("reading GPU memory failed", exc_info=True)
        if (result["gpu_memory_mb"] is None and self.gpu is not None
                and result.get("device_used") not in (None, "cpu")):
            self.gpu.sample()
            result["gpu_memory_mb"], result["gpu_memory_source"] = self.gpu.result()


def _n(test: str) -> int:
    digits = "".join(ch for ch in test if ch.isdigit())
    return int(digits) if digits else 0


def overhead(metrics: dict[str, Any], raw: dict[str, Any]) -> dict[str, float | None]:
    """Lampchat ÷ raw for each speed (1.0: no overhead), and TTFT's extra milliseconds."""
    out: dict[str, float | None] = {}
    for test, stat in metrics.items():
        base = raw.get(test, {}).get("mean")
        mean = stat.get("mean")
        if test == "ttft_ms":
            out["ttft_extra_ms"] = round(mean - base, 3) if base is not None else None
            out["ttft_ratio"] = round(mean / base, 4) if base else None
        else:
            out[test] = round(mean / base, 4) if base else None
    return out


async def measure_case(spec: CaseSpec, emit: Emit) -> dict[str, Any]:
    """Measure one case; never raises: a failure is a result with status "failed", a backend or
    device this install lacks one with status "skipped" (both with the one-line reason in
    "error")."""
    started = time.perf_counter()
    case = _Case(spec, emit)
    if spec.error:
        case.result["error"] = spec.error
        case.result["status"] = spec.status
        return case.result
    try:
        await case.run()
        case.result["status"] = "ok"
    except (BackendUnavailableError, DeviceUnavailableError) as exc:
        log.info("bench case %s skipped: %s", spec.label, exc)
        case.result["status"] = "skipped"
        case.result["error"] = one_line(exc)
    except Exception as exc:
        log.warning("bench case %s failed", spec.label, exc_info=True)
        case.result["status"] = "failed"
        case.result["error"] = one_line(exc)
    finally:
        try:
            await asyncio.wait_for(case.worker.close(), timeout=60)
        except Exception:
            log.warning("closing the worker failed", exc_info=True)
    case.result["duration_s"] = round(time.perf_counter() - started, 3)
    return _rounded(case.result)


def _rounded(result: dict[str, Any]) -> dict[str, Any]:
    for key in ("model_size_mb", "load_s", "peak_rss_mb", "rss_before_load_mb",
                "peak_rss_ratio", "gpu_memory_mb"):
        if isinstance(result.get(key), float):
            result[key] = round(result[key], 4)
    return result


def _protocol_stream() -> TextIO:
    """A private copy of stdout for the events; fd 1 itself now points at stderr."""
    fd = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(fd, "w", buffering=1, encoding="utf-8")


def _setup_logging(log_file: str | None) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler: logging.Handler = logging.NullHandler()
    if log_file:
        with contextlib.suppress(OSError):
            handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s bench-child[%(process)d] %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)


def main() -> int:
    """Read a case from stdin, measure it, write events to stdout."""
    events = _protocol_stream()

    def emit(event: dict[str, Any]) -> None:
        events.write(json.dumps(event) + "\n")

    try:
        spec = CaseSpec.from_dict(json.loads(sys.stdin.read()))
    except (ValueError, TypeError) as exc:
        emit({"event": "error", "error": f"bad case description: {exc}"})
        return 2
    _setup_logging(spec.log_file)
    result = asyncio.run(measure_case(spec, emit))
    emit({"event": "result", "result": result})
    events.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
