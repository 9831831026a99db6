"""Automatic choice of backend and device for a model, and falling back when a load fails.

`plan_load` lists what to try, best first: GPU-capable (backend, device) pairs, then the CPU,
over the backends that read the model's format (or the one asked for), followed by
`backend.fallback`. `load_with_fallback` tries them in order and says what failed and what it
chose, e.g. "llama.cpp on cuda: CUDA error: out of memory -> llama.cpp on cpu".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from engine.devices import KIND_LABELS, BackendSupport, DeviceReport, parse_device
from engine.errors import (
    BackendError,
    DeviceUnavailableError,
    LampchatError,
    UnknownFormatError,
    UnsafeCheckpointError,
)
from engine.formats.detect import detect_format
from engine.registry import (
    auto_kinds,
    canonical_name,
    detect,
    how_to_get,
    is_local,
    readers,
    require_device,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

NO_FALLBACK_ERRORS: tuple[type[BaseException], ...] = (UnknownFormatError, UnsafeCheckpointError)
"""Failures no other backend or device can do better on: raised at once."""


@dataclass(frozen=True)
class Candidate:
    """One (backend, device) pair to try; `device` goes to `LoadSettings.device`."""

    backend: str
    device: str

    @property
    def label(self) -> str:
        """E.g. "llama.cpp on cuda"."""
        return f"{self.backend} on {self.device}"


@dataclass(frozen=True)
class Failure:
    """A candidate that failed to load, and why."""

    candidate: Candidate
    message: str
    error: BaseException


def plan_load(
    model_path: str,
    backend: str = "auto",
    device: str = "auto",
    fallback: Sequence[str] | None = None,
) -> list[Candidate]:
    """The (backend, device) pairs to try for `model_path`, best first.

    - `backend` "auto": the format's readers that are installed; else that backend first.
    - `fallback`: backends to try after the first choice (None: the format's other readers
      when `backend` is auto, none when it is forced). Backends that cannot read the format
      or are not installed are skipped.
    - `device` "auto": each backend's GPU devices first, then the CPU. Any other value is
      forced: only that device is tried, and DeviceUnavailableError says why none can use it.
    """
    kind, index = parse_device(device)
    backends = _backend_order(model_path, backend, fallback)
    if not is_local(backends[0]):
        return [Candidate(backends[0], "auto")]
    backends = [b for b in backends if is_local(b)]
    report = detect(tuple(backends), opencl=kind not in ("auto", "cpu"))
    if kind == "auto":
        return _auto_candidates(backends, report)
    return _forced_candidates(backends, report, kind, index, device)


def _support(report: DeviceReport, backend: str) -> BackendSupport:
    found = report.support(backend)
    if found is not None:
        return found
    # a backend with no probe (a third-party or test backend): assume the CPU only
    return BackendSupport(backend, installed=True, kinds=["cpu"], build="CPU")


def _backend_order(model_path: str, backend: str, fallback: Sequence[str] | None) -> list[str]:
    forced = bool(backend) and backend != "auto"
    primary = canonical_name(backend) if forced else None
    format_readers: tuple[str, ...] | None = None
    if not forced or fallback:
        try:
            format_readers = readers(detect_format(model_path).format)
        except LampchatError:
            if not forced:
                raise
    extra = [canonical_name(name) for name in fallback or ()]
    if primary is None:
        assert format_readers is not None
        installed = _installed(format_readers)
        order = installed or list(format_readers[:1])  # none installed: loading names the package
        rest = extra if fallback is not None else order[1:]
        order = order[:1] + [b for b in rest if b in installed]
    else:
        usable = [b for b in extra if format_readers is None or b in format_readers]
        order = [primary, *_installed(usable)]
    return list(dict.fromkeys(order))


def _installed(backends: Iterable[str]) -> list[str]:
    names = list(backends)
    report = detect(tuple(b for b in names if is_local(b)), opencl=False)
    return [b for b in names if _support(report, b).installed]


def _auto_kinds(support: BackendSupport, report: DeviceReport) -> list[str]:
    allowed = auto_kinds(support)
    devices = report.devices_for(support.backend)
    gpu_kinds = [k for k in support.kinds if k != "cpu" and k in allowed
                 and any(d.kind == k and d.gpu for d in devices)]
    return gpu_kinds


def _auto_candidates(backends: list[str], report: DeviceReport) -> list[Candidate]:
    gpu: list[Candidate] = []
    cpu: list[Candidate] = []
    for name in backends:
        support = _support(report, name)
        gpu.extend(Candidate(name, kind) for kind in _auto_kinds(support, report))
        if "cpu" in support.kinds or not support.installed:
            cpu.append(Candidate(name, "cpu"))
    return gpu + cpu


def _forced_candidates(backends: list[str], report: DeviceReport, kind: str, index: int | None,
                       spec: str) -> list[Candidate]:
    out: list[Candidate] = []
    reasons: list[str] = []
    label = KIND_LABELS.get(kind, "GPU" if kind == "gpu" else kind)
    for name in backends:
        support = _support(report, name)
        if not support.installed:
            reasons.append(f"{name}: {support.problem or 'not installed'}")
            continue
        if kind == "cpu":
            if "cpu" in support.kinds:
                out.append(Candidate(name, "cpu"))
            continue
        devices = [d for d in report.devices_for(name)
                   if (d.kind == kind or (kind == "gpu" and d.gpu))
                   and (index is None or d.index == index)]
        if devices:
            chosen = devices[0].kind if kind == "gpu" else spec.strip().lower()
            out.append(Candidate(name, chosen))
        elif kind != "gpu" and kind not in support.kinds and support.problem:
            # installed for this kind, but nothing found (e.g. pyopencl without a device)
            hint = f" ({support.hint})" if support.hint else ""
            reasons.append(f"{name}: {support.problem}{hint}")
        elif kind != "gpu" and kind not in support.kinds:
            how = how_to_get(name, kind)
            if support.kinds == ["cpu"]:
                what = "is a CPU-only build" if name == "llama.cpp" else "runs on the CPU only"
            else:
                what = "runs on " + ", ".join(support.kinds)
            reasons.append(f"{name} {what}" + (f" ({how})" if how else ""))
        else:
            reasons.append(f"{name} found no {label} device"
                           + (f" number {index}" if index is not None else ""))
    if not out:
        why = "; ".join(reasons) or "no backend can use it"
        raise DeviceUnavailableError(
            f"device {spec!r} is not available: {why} (see `lampchat devices` and README "
            "'GPU installs')"
        )
    return out


# ---------------------------------------------------------------------------------------------
# Trying candidates


def one_line(exc: BaseException) -> str:
    """A short one-line description of a load failure."""
    text = str(exc) if isinstance(exc, LampchatError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def fallback_note(failures: Sequence[Failure], chosen: Candidate) -> str | None:
    """E.g. "llama.cpp on cuda: out of memory -> llama.cpp on cpu"; None if nothing failed."""
    if not failures:
        return None
    tried = "; ".join(f"{f.candidate.label}: {f.message}" for f in failures)
    return f"{tried} -> {chosen.label}"


def load_with_fallback(
    candidates: Sequence[Candidate], attempt: Callable[[Candidate], T]
) -> tuple[T, Candidate, str | None]:
    """Call `attempt` on each candidate until one succeeds.

    Returns (its result, the candidate, a fallback note or None). Before each attempt the
    device is checked against the backend's real build (`require_device`). When every
    candidate fails, the first (most preferred) failure is raised, naming the others.
    """
    if not candidates:
        raise BackendError("no backend and device to try")
    failures: list[Failure] = []
    for candidate in candidates:
        try:
            if is_local(candidate.backend):
                require_device(candidate.backend, candidate.device)
            result = attempt(candidate)
        except NO_FALLBACK_ERRORS:
            raise
        except Exception as exc:
            log.warning("loading with %s failed", candidate.label, exc_info=True)
            failures.append(Failure(candidate, one_line(exc), exc))
            continue
        note = fallback_note(failures, candidate)
        if note:
            log.info("fell back: %s", note)
        return result, candidate, note
    raise _all_failed(failures)


def _all_failed(failures: list[Failure]) -> BaseException:
    first = failures[0]
    different = [f for f in failures[1:] if f.message != first.message]
    if not different:  # e.g. a damaged file: every backend says the same
        return first.error
    others = "; ".join(f"{f.candidate.label}: {f.message}" for f in different)
    message = f"{first.message} (with {first.candidate.label}; also failed: {others})"
    cls = type(first.error) if isinstance(first.error, LampchatError) else BackendError
    try:
        err = cls(message)
    except Exception:
        err = BackendError(message)
    err.__cause__ = first.error
    return err
