"""Runs a bench: plans the (model, backend, device) cases, measures each in a fresh child
process (so one backend's memory cannot pollute another's), and collects their results.

A case that fails (missing backend, unreadable model, crash, timeout) becomes a result with
status "failed" and its one-line reason; the run goes on with the next case.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from engine.bench.child import empty_result, one_line
from engine.bench.config import BenchConfig, CaseSpec
from engine.bench.report import SCHEMA, SCHEMA_VERSION
from engine.devices import cpu_device
from engine.errors import LampchatError
from engine.formats.detect import detect_format
from engine.models import resolve_model
from engine.registry import canonical_name, detect, is_local, readers

log = logging.getLogger(__name__)

EventHandler = Callable[[dict[str, Any]], None]
"""Receives run events: "case_start", "progress", "case_end" (each with "index", "total")."""

_REPO_ROOT = Path(__file__).resolve().parents[2]


def devices_for(backend: str) -> list[str]:
    """Device ids `backend` can run on here (from `engine.devices`), the CPU at least."""
    if not is_local(backend):
        return ["auto"]
    try:
        ids = [d.id for d in detect().devices_for(backend)]
    except Exception:  # detection is best effort; the child reports a real failure
        log.warning("device detection failed for %s", backend, exc_info=True)
        ids = []
    return ids or ["cpu"]


def plan_cases(config: BenchConfig, log_file: str | None = None) -> list[CaseSpec]:
    """Every (model, backend, device) the run measures, in order.

    Local models: every backend that reads the model's format (or those asked for) on every
    device it can use here (or those asked for). A backend asked for that cannot read a
    model's format is a skipped case; a model whose format cannot be read a failed one.
    The remote backend (asked for, or implied by endpoint options) runs once per server model
    named with --model (names that are not local files), else on the server's first model.
    Raises LampchatError for an unknown backend name (a typo, not a failed case).
    """
    backends = list(dict.fromkeys(canonical_name(b) for b in config.backends))
    if config.remote and not backends:
        backends = ["remote"]
    local = [b for b in backends if b != "remote"]
    given = list(dict.fromkeys(config.models))
    cases: list[CaseSpec] = []
    if local or not backends:
        paths = [m for m in given if "remote" not in backends or Path(m).expanduser().exists()]
        if not given:
            paths = [resolve_model(None)]
        for model in dict.fromkeys(resolve_model(m) for m in paths):
            cases += _local_cases(config, model, local, log_file)
    if "remote" in backends:
        names = [m for m in given if not Path(m).expanduser().exists()] or [resolve_model(None)]
        cases += [CaseSpec.for_config(config, name, "remote", "auto", log_file)
                  for name in names]
    return cases


def _local_cases(config: BenchConfig, model: str, backends: list[str],
                 log_file: str | None) -> list[CaseSpec]:
    try:
        fmt = detect_format(model).format
    except LampchatError as exc:
        return [CaseSpec.for_config(config, model, backends[0] if len(backends) == 1
                                    else "auto", "auto", log_file, error=one_line(exc))]
    fmt_readers = readers(fmt)
    cases = []
    for backend in backends or list(fmt_readers):
        if backend not in fmt_readers:
            cases.append(CaseSpec.for_config(
                config, model, backend, "auto", log_file, status="skipped",
                error=f"{backend} does not read {fmt} models (readers: "
                      f"{', '.join(fmt_readers) or 'none'})"))
            continue
        devices = list(dict.fromkeys(config.devices)) or devices_for(backend)
        cases.extend(CaseSpec.for_config(config, model, backend, device, log_file)
                     for device in devices)
    return cases


def run_case(spec: CaseSpec, timeout_s: float, on_event: EventHandler | None = None,
             index: int = 0, total: int = 1) -> dict[str, Any]:
    """Measure one case in a child process; always returns a result (failed on any error)."""
    def emit(event: dict[str, Any]) -> None:
        if on_event is not None:
            on_event({**event, "index": index, "total": total, "case": spec.label})

    if spec.error:
        result = empty_result(spec)
        result["error"] = spec.error
        result["status"] = spec.status
        return result
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    started = time.perf_counter()
    result: dict[str, Any] | None = None
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.bench.child"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
            encoding="utf-8", errors="replace", env=env,
        )
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(OSError):
                proc.kill()

        timer = threading.Timer(timeout_s, kill)
        timer.daemon = True
        timer.start()
        try:
            assert proc.stdin is not None and proc.stdout is not None
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(json.dumps(spec.to_dict()))
                proc.stdin.close()
            for line in proc.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                if event.get("event") == "result":
                    result = event.get("result")
                elif event.get("event") == "progress":
                    emit(event)
            proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:  # interrupted: never leave the child running
                proc.kill()
                proc.wait()
        if isinstance(result, dict):
            return result
        stderr.seek(0)
        tail = [line.strip() for line in stderr.read().splitlines() if line.strip()]
    failed = empty_result(spec)
    if timed_out.is_set():
        failed["error"] = f"timed out after {timeout_s:g} s"
    else:
        why = tail[-1] if tail else "no output"
        failed["error"] = f"the bench process exited with status {proc.returncode}: {why}"
    failed["duration_s"] = round(time.perf_counter() - started, 3)
    return failed


def run_bench(config: BenchConfig, on_event: EventHandler | None = None,
              log_file: str | None = None) -> dict[str, Any]:
    """Run every planned case, one after the other, and return the report (a JSON-ready dict)."""
    config.validate()
    cases = plan_cases(config, log_file)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    results = []
    for i, spec in enumerate(cases):
        if on_event is not None:
            on_event({"event": "case_start", "index": i, "total": len(cases),
                      "case": spec.label})
        result = run_case(spec, config.timeout_s, on_event, i, len(cases))
        results.append(result)
        if on_event is not None:
            on_event({"event": "case_end", "index": i, "total": len(cases), "case": spec.label,
                      "result": result})
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "created": started.isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - t0, 3),
        "host": host_info(),
        "settings": config.to_dict(),
        "results": results,
    }


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def host_info() -> dict[str, Any]:
    """The machine and the library versions the figures were taken with."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(Exception):

        cpu = cpu_device().name
    return {
        "cpu": cpu,
        "cores_physical": psutil.cpu_count(logical=False),
        "cores_logical": psutil.cpu_count(logical=True),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in (
            "lampchat", "llama_cpp_python", "numpy", "onnxruntime", "mlx", "pyopencl")},
    }
