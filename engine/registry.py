"""Every backend Lampchat knows, and the questions asked of all of them.

Each backend class declares what it knows in its own module (`engine.backends.base.Backend`:
formats, model families, local or remote, device probe, install hints, bench adapter). This
module lists them, one line each, and answers for the rest of Lampchat: which backends read a
format or run a family, which devices each can use here (`detect`), whether one can run on a
device (`require_device`). To add a backend: one module in `engine/backends/` and one line in
`BACKENDS`.
"""

from __future__ import annotations

import importlib
import logging

from engine.backends.base import Backend
from engine.devices import (
    BackendSupport,
    DeviceReport,
    guard,
    parse_device,
    probe_cache,
    scan_hardware,
)
from engine.errors import BackendError, BackendUnavailableError

log = logging.getLogger(__name__)

BACKENDS: dict[str, str] = {
    "llama.cpp": "engine.backends.llama_cpp:LlamaCppBackend",
    "native": "engine.backends.native:NativeBackend",
    "mlx": "engine.backends.mlx:MLXBackend",
    "onnx": "engine.backends.onnx:OnnxBackend",
    "remote": "engine.backends.remote:RemoteBackend",
}
"""Every backend, by the name users type; for a format, the earlier one is preferred."""

ALIASES = {"llama-cpp": "llama.cpp", "llamacpp": "llama.cpp", "llama_cpp": "llama.cpp"}


def canonical_name(name: str) -> str:
    """Return the canonical backend name, or raise BackendError listing the choices."""
    name = ALIASES.get(name.strip().lower(), name.strip().lower())
    if name not in BACKENDS:
        choices = ", ".join(["auto", *BACKENDS])
        raise BackendError(f"unknown backend {name!r} (choose one of: {choices})")
    return name


def backend_class(name: str) -> type[Backend]:
    """The class behind backend `name` (its module is imported on first use).

    Backend modules import their libraries (llama_cpp, mlx, onnxruntime) only when loading a
    model, so this succeeds whether or not the library is installed.
    """
    name = canonical_name(name)
    module_name, _, class_name = BACKENDS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend {name!r} is not available in this install ({exc}); "
            f"see README for the extra to install"
        ) from exc
    backend_cls: type[Backend] = getattr(module, class_name)
    return backend_cls


def create_backend(name: str) -> Backend:
    """Instantiate the backend called `name`."""
    return backend_class(name)()


def _classes() -> list[type[Backend]]:
    out = []
    for name in BACKENDS:
        try:
            out.append(backend_class(name))
        except BackendUnavailableError:
            log.warning("backend %s cannot be imported", name, exc_info=True)
    return out


def readers(fmt: str, family: str | None = None) -> tuple[str, ...]:
    """Backends that read format `fmt` (and run architecture `family`, when given), preferred
    first."""
    return tuple(cls.name for cls in _classes()
                 if fmt in cls.formats and cls.runs(family))


def local_backends() -> tuple[str, ...]:
    """Backends that run on this machine (the device setting applies to them)."""
    return tuple(cls.name for cls in _classes() if cls.local)


def is_local(name: str) -> bool:
    """Whether backend `name` runs on this machine (an unknown name: assume so; loading it
    says what is wrong)."""
    try:
        return backend_class(name).local
    except BackendError:
        return True


@probe_cache
def detect(backends: tuple[str, ...] | None = None, opencl: bool = True) -> DeviceReport:
    """The devices here, and what each local backend's build can run on (cached per argument
    set; `engine.devices.clear_cache` forgets it).

    `backends`: the local backends to probe (None: all). `opencl=False` skips enumerating
    OpenCL devices (the slowest probe), which automatic choice does not need.
    """
    hardware = scan_hardware(opencl)
    names = local_backends() if backends is None else backends
    supports: list[BackendSupport] = []
    for name in names:
        try:
            cls = backend_class(name)
        except BackendError:
            continue
        if not cls.local:
            continue
        fallback = BackendSupport(name, installed=False, problem="probe failed")
        supports.append(guard(name, lambda cls=cls: cls.probe(hardware), fallback,
                              hardware.problems))
    cpu = hardware.cpu
    for support in supports:
        if support.installed and "cpu" in support.kinds:
            cpu.backends.append(support.backend)
    return DeviceReport(devices=[cpu, *hardware.found.ordered()], backends=supports,
                        problems=hardware.problems)


def how_to_get(backend: str, kind: str) -> str | None:
    """What to install for `backend` to use device kind `kind`, or None if nothing would."""
    return backend_class(backend).how_to_get(kind)


def auto_kinds(support: BackendSupport) -> tuple[str, ...]:
    """Device kinds automatic choice may pick for the backend `support` describes."""
    try:
        allowed = backend_class(support.backend).auto_kinds
    except BackendError:
        allowed = None
    return tuple(support.kinds) if allowed is None else allowed


def require_device(backend: str, device: str) -> None:
    """Raise DeviceUnavailableError unless `backend` can run on `device` here."""
    kind, index = parse_device(device)
    if kind in ("auto", "cpu"):
        return
    try:
        cls = backend_class(backend)
    except BackendError:
        return  # creating the backend reports what is wrong
    cls.check_device(kind, index, device, detect)
