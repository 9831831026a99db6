"""Compute devices: their types, the names users type, and the hardware probes.

Every probe is optional and guarded: a missing package or a broken driver yields a problem line,
never an exception. Results are cached per process (`clear_cache`). Which backend can use which
device is each backend's own knowledge (`Backend.probe`); `engine.registry.detect` puts the two
together into a `DeviceReport`.

Device names users type (``--device``, ``[backend] device``): ``auto``, ``cpu``, a kind such as
``cuda``, ``metal``, ``opencl``, ``vulkan``, or a kind with an index such as ``cuda:1`` or
``opencl:0`` (the numbering of `lampchat devices`).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import logging
import os
import platform
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import psutil

from engine.errors import DeviceUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

GPU_KINDS = ("cuda", "metal", "vulkan", "rocm", "opencl", "sycl", "musa", "directml", "cann")
"""Device kinds other than the CPU, in the order a tie is broken."""

DEVICE_KINDS = ("cpu", *GPU_KINDS)
"""Every device kind Lampchat knows; `--device` takes one of these (or `auto`, or `KIND:N`)."""

KIND_LABELS = {
    "cpu": "CPU", "cuda": "CUDA", "metal": "Metal", "vulkan": "Vulkan", "rocm": "ROCm",
    "opencl": "OpenCL", "sycl": "SYCL", "musa": "MUSA", "directml": "DirectML", "cann": "CANN",
}

_SIMD_FLAGS = (
    # x86-64
    "sse3", "ssse3", "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw",
    "avx512vl", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
    # arm64
    "neon", "asimd", "asimdhp", "asimddp", "sve", "sve2", "i8mm", "bf16",
)


@dataclass
class Device:
    """One compute device, merged from every probe that saw it."""

    id: str
    """What `--device` takes to pick exactly this device: "cpu", "cuda:0", "opencl:1"."""
    kind: str
    index: int
    name: str
    gpu: bool
    """A GPU or other accelerator (preferred over the CPU by automatic choice)."""
    total_memory: int | None = None
    free_memory: int | None = None
    compute_units: int | None = None
    backends: list[str] = field(default_factory=list)
    """Lampchat backends that can run on this device."""
    sources: list[str] = field(default_factory=list)
    """Probes that saw it (psutil, ggml, nvml, opencl, mlx, onnxruntime, platform)."""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class BackendSupport:
    """What one backend's installed build can run on."""

    backend: str
    installed: bool
    version: str | None = None
    kinds: list[str] = field(default_factory=list)
    """Device kinds the build supports (whether or not such a device is present)."""
    build: str = ""
    """One line on the build, e.g. "CPU-only build" or "CUDA build"."""
    hint: str | None = None
    """How to get more (a GPU build, the missing package)."""
    problem: str | None = None

    def usable_kinds(self, devices: Iterable[Device]) -> list[str]:
        """Kinds the build supports that this machine has a device for."""
        present = {d.kind for d in devices if self.backend in d.backends}
        return [k for k in self.kinds if k in present]


@dataclass
class DeviceReport:
    """Everything detected: devices, backend builds, and probes that failed."""

    devices: list[Device]
    backends: list[BackendSupport]
    problems: list[str] = field(default_factory=list)

    def support(self, backend: str) -> BackendSupport | None:
        """The entry for `backend`, or None if it was not probed."""
        return next((b for b in self.backends if b.backend == backend), None)

    def devices_for(self, backend: str) -> list[Device]:
        """Devices `backend` can run on, in detection order."""
        return [d for d in self.devices if backend in d.backends]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "devices": [asdict(d) for d in self.devices],
            "backends": [asdict(b) for b in self.backends],
            "problems": list(self.problems),
        }


# ---------------------------------------------------------------------------------------------
# Device names


def parse_device(spec: str | None) -> tuple[str, int | None]:
    """Split "cuda:1" into ("cuda", 1); "auto"/"" give ("auto", None).

    Raises DeviceUnavailableError for a name Lampchat does not know.
    """
    text = (spec or "auto").strip().lower()
    if text in ("", "auto"):
        return "auto", None
    kind, sep, index = text.partition(":")
    if kind != "gpu" and kind not in DEVICE_KINDS:
        choices = ", ".join(["auto", "gpu", *DEVICE_KINDS])
        raise DeviceUnavailableError(
            f"unknown device {spec!r} (choose one of: {choices}, or KIND:N)"
        )
    if not sep:
        return kind, None
    if not index.isdigit():
        raise DeviceUnavailableError(f"bad device {spec!r}: the part after ':' must be a number")
    return kind, int(index)



# ---------------------------------------------------------------------------------------------
# Probes (each cached; each returns what it found and never raises)

_CACHED: list[Any] = []


def probe_cache(fn: F) -> F:
    """Cache a probe for the process; `clear_cache` forgets it (probes in other modules too)."""
    cached = lru_cache(maxsize=16)(fn)
    _CACHED.append(cached)
    return cached  # type: ignore[return-value]


def clear_cache() -> None:
    """Forget every cached probe (the next `detect` probes again)."""
    for fn in _CACHED:
        fn.cache_clear()


def guard(what: str, probe: Callable[[], T], default: T, problems: list[str]) -> T:
    """`probe()`, or `default` with a problem line when it raises."""
    try:
        return probe()
    except Exception as exc:  # a broken driver or package must never crash detection
        log.warning("device probe %s failed", what, exc_info=True)
        problems.append(f"{what}: {type(exc).__name__}: {exc}")
        return default


def dist_version(name: str) -> str | None:
    """The installed version of distribution `name`, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@probe_cache
def cpu_device() -> Device:
    """The CPU: cores, SIMD features and system memory."""
    mem = psutil.virtual_memory()
    logical = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        usable = logical
    name, flags = _cpu_name_and_flags()
    return Device(
        id="cpu", kind="cpu", index=0, name=name, gpu=False,
        total_memory=int(mem.total), free_memory=int(mem.available), compute_units=usable,
        backends=[], sources=["psutil"],
        details={
            "arch": platform.machine(),
            "physical_cores": psutil.cpu_count(logical=False),
            "logical_cores": logical,
            "usable_cores": usable,
            "simd": flags,
        },
    )


def _cpu_name_and_flags() -> tuple[str, list[str]]:
    name = platform.processor() or platform.machine() or "CPU"
    flags: set[str] = set()
    try:
        import cpuinfo  # py-cpuinfo, optional

        info = cpuinfo.get_cpu_info()
        name = info.get("brand_raw") or name
        flags.update(str(f).lower() for f in info.get("flags", ()))
    except Exception:
        try:
            text = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            text = ""
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key == "model name" and value.strip():
                name = value.strip()
            elif key in ("flags", "features"):
                flags.update(value.split())
    if "pni" in flags:
        flags.add("sse3")
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        flags.add("neon")
        name = _sysctl("machdep.cpu.brand_string") or name
    return name, [f for f in _SIMD_FLAGS if f in flags]


def _sysctl(key: str) -> str | None:

    try:
        out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@probe_cache
def opencl_devices() -> tuple[list[dict[str, Any]], str | None]:
    """OpenCL devices through pyopencl, numbered as `opencl:N`, and a problem line if any.

    Raises ImportError when pyopencl is not installed.
    """
    import pyopencl as cl  # optional (the opencl extra)

    try:
        platforms = cl.get_platforms()
    except Exception as exc:  # no ICD, or a broken one (e.g. PLATFORM_NOT_FOUND_KHR)
        return [], f"no OpenCL platform: {exc}"
    out: list[dict[str, Any]] = []
    problems: list[str] = []
    for p_index, plat in enumerate(platforms):
        try:
            devs = plat.get_devices()
        except Exception as exc:
            problems.append(f"OpenCL platform {p_index}: {exc}")
            continue
        for d_index, dev in enumerate(devs):
            try:
                extensions = str(dev.extensions).split()
                out.append({
                    "index": len(out),
                    "platform": str(plat.name).strip(),
                    "platform_index": p_index,
                    "device_index": d_index,
                    "name": str(dev.name).strip(),
                    "vendor": str(dev.vendor).strip(),
                    "version": str(dev.version).strip(),
                    "type": _cl_type(cl, int(dev.type)),
                    "gpu": bool(dev.type & (cl.device_type.GPU | cl.device_type.ACCELERATOR)),
                    "total": int(dev.global_mem_size),
                    "compute_units": int(dev.max_compute_units),
                    "max_alloc": int(dev.max_mem_alloc_size),
                    "fp16": "cl_khr_fp16" in extensions,
                    "fp64": "cl_khr_fp64" in extensions,
                })
            except Exception as exc:
                problems.append(f"OpenCL device {p_index}.{d_index}: {exc}")
    return out, "; ".join(problems) or None


def _cl_type(cl: Any, bits: int) -> str:
    names = [name for name, flag in (("GPU", cl.device_type.GPU), ("CPU", cl.device_type.CPU),
                                     ("accelerator", cl.device_type.ACCELERATOR))
             if bits & flag]
    return "/".join(names) or "other"


@probe_cache
def nvml_devices() -> tuple[list[dict[str, Any]], str | None]:
    """NVIDIA GPUs through the driver's NVML library (ctypes), with free memory."""
    system = platform.system()
    if system == "Darwin":
        return [], None
    names = ["nvml.dll"] if system == "Windows" else ["libnvidia-ml.so.1", "libnvidia-ml.so"]
    lib = None
    for name in names:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        return [], None  # no NVIDIA driver: nothing to report

    class Memory(ctypes.Structure):
        _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong),
                    ("used", ctypes.c_ulonglong)]

    if lib.nvmlInit_v2() != 0:
        return [], "NVML: nvmlInit failed (driver not loaded?)"
    out: list[dict[str, Any]] = []
    try:
        count = ctypes.c_uint(0)
        if lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
            return [], "NVML: cannot count devices"
        for i in range(count.value):
            handle = ctypes.c_void_p()
            if lib.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)) != 0:
                continue
            name = ctypes.create_string_buffer(96)
            lib.nvmlDeviceGetName(handle, name, 96)
            mem = Memory()
            ok = lib.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(mem)) == 0
            out.append({
                "index": i, "name": name.value.decode("utf-8", "replace"),
                "total": int(mem.total) if ok else None, "free": int(mem.free) if ok else None,
            })
    finally:
        lib.nvmlShutdown()
    return out, None


def is_apple_silicon() -> bool:
    """macOS on an arm64 CPU."""
    return platform.system() == "Darwin" and platform.machine() == "arm64"


# ---------------------------------------------------------------------------------------------
# Devices found, merged across probes


class DeviceSet:
    """Devices merged by id as probes report them (backends add themselves in `probe`)."""
    def __init__(self) -> None:
        self.by_id: dict[str, Device] = {}

    def add(self, kind: str, index: int, name: str, source: str, *, gpu: bool = True,
            total: int | None = None, free: int | None = None, units: int | None = None,
            backend: str | None = None, **details: Any) -> Device:
        dev_id = f"{kind}:{index}"
        dev = self.by_id.get(dev_id)
        if dev is None:
            dev = self.by_id[dev_id] = Device(id=dev_id, kind=kind, index=index, name=name, gpu=gpu)
        if not dev.name or dev.name.startswith(KIND_LABELS.get(kind, kind)):
            dev.name = name or dev.name
        dev.total_memory = dev.total_memory if dev.total_memory is not None else total
        dev.free_memory = dev.free_memory if dev.free_memory is not None else free
        dev.compute_units = dev.compute_units if dev.compute_units is not None else units
        if source not in dev.sources:
            dev.sources.append(source)
        if backend and backend not in dev.backends:
            dev.backends.append(backend)
        for key, value in details.items():
            dev.details.setdefault(key, value)
        return dev

    def add_backend(self, kind: str, backend: str) -> None:
        for dev in self.by_id.values():
            if dev.kind == kind and backend not in dev.backends:
                dev.backends.append(backend)

    def has(self, kind: str) -> bool:
        return any(d.kind == kind for d in self.by_id.values())

    def ordered(self) -> list[Device]:
        rank = {k: i for i, k in enumerate(GPU_KINDS)}
        return sorted(self.by_id.values(), key=lambda d: (rank.get(d.kind, 99), d.index))



@dataclass
class Hardware:
    """What the hardware probes found, before any backend is asked."""

    cpu: Device
    found: DeviceSet
    opencl: list[dict[str, Any]]
    """OpenCL devices (`opencl_devices`); empty when not probed or none."""
    opencl_installed: bool | None
    """pyopencl importable; None: OpenCL was not probed."""
    opencl_problem: str | None
    problems: list[str]


def scan_hardware(opencl: bool = True) -> Hardware:
    """Probe the CPU, NVIDIA GPUs, Apple's GPU and (unless `opencl` is False) OpenCL devices.

    `opencl=False` skips enumerating OpenCL devices (the slowest probe), which automatic
    choice does not need.
    """
    problems: list[str] = []
    cpu = guard("cpu", cpu_device, None, problems)
    if cpu is None:
        mem = psutil.virtual_memory()
        cpu = Device(id="cpu", kind="cpu", index=0, name=platform.machine() or "CPU", gpu=False,
                     total_memory=int(mem.total), free_memory=int(mem.available))
    cpu = replace(cpu, backends=[], sources=list(cpu.sources), details=dict(cpu.details))
    found = DeviceSet()
    nvml, problem = guard("nvml", nvml_devices, ([], None), problems)
    if problem:
        problems.append(problem)
    for d in nvml:
        found.add("cuda", d["index"], d["name"], "nvml", total=d["total"], free=d["free"])
    if is_apple_silicon():
        found.add("metal", 0, "Apple GPU", "platform", total=cpu.total_memory,
                  free=cpu.free_memory, unified_memory=True)
    cl_devs: list[dict[str, Any]] = []
    cl_installed: bool | None = None
    cl_problem: str | None = None
    if opencl:
        cl_installed = True
        try:
            cl_devs, cl_problem = opencl_devices()
        except ImportError:
            cl_installed = False
        except Exception as exc:
            log.warning("OpenCL probe failed", exc_info=True)
            cl_problem = f"OpenCL: {type(exc).__name__}: {exc}"
        if cl_problem:
            problems.append(cl_problem)
        for d in cl_devs:
            found.add("opencl", d["index"], d["name"], "opencl", gpu=d["gpu"], total=d["total"],
                      units=d["compute_units"], platform=d["platform"], type=d["type"],
                      fp16=d["fp16"], version=d["version"])
    return Hardware(cpu, found, cl_devs, cl_installed, cl_problem, problems)


def device_unavailable(backend: str, kind: str, index: int | None, spec: str,
                       report: DeviceReport, support: BackendSupport) -> None:
    """Raise DeviceUnavailableError unless `report` has a `kind` device `backend` can use."""
    label = KIND_LABELS.get(kind, kind)
    devices = [d for d in report.devices_for(backend) if kind in ("gpu", d.kind)]
    if kind == "gpu":
        devices = [d for d in devices if d.gpu]
    if kind != "gpu" and kind not in support.kinds:
        raise DeviceUnavailableError(f"{backend} cannot use {label} ({support.build})")
    if not devices or (index is not None and all(d.index != index for d in devices)):
        raise DeviceUnavailableError(f"{backend} found no {label} device {spec!r}")
