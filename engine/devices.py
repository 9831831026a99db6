"""Which compute devices this machine has, and which Lampchat backend can use which of them.

Every probe is optional and guarded: a missing package or a broken driver yields an entry in
`DeviceReport.problems`, never an exception. Results are cached per process (`clear_cache`).

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
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import psutil

from engine.errors import DeviceUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")

GPU_KINDS = ("cuda", "metal", "vulkan", "rocm", "opencl", "sycl", "musa", "directml", "cann")
"""Device kinds other than the CPU, in the order a tie is broken."""

DEVICE_KINDS = ("cpu", *GPU_KINDS)
"""Every device kind Lampchat knows; `--device` takes one of these (or `auto`, or `KIND:N`)."""

KIND_LABELS = {
    "cpu": "CPU", "cuda": "CUDA", "metal": "Metal", "vulkan": "Vulkan", "rocm": "ROCm",
    "opencl": "OpenCL", "sycl": "SYCL", "musa": "MUSA", "directml": "DirectML", "cann": "CANN",
}

AUTO_KINDS: dict[str, tuple[str, ...]] = {
    "native": ("cpu",),
}
"""Device kinds automatic choice may pick per backend (default: all it can use).

The native engine's OpenCL path is portable rather than tuned, so it runs only when asked
for (``--device opencl``)."""

_GGML_KINDS = {
    "cuda": "cuda", "metal": "metal", "mtl": "metal", "vulkan": "vulkan", "opencl": "opencl",
    "rocm": "rocm", "hip": "rocm", "sycl": "sycl", "musa": "musa", "cann": "cann",
}
_GGML_DEV_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}
_LLAMA_CMAKE = {
    "cuda": "-DGGML_CUDA=on", "metal": "-DGGML_METAL=on", "vulkan": "-DGGML_VULKAN=on",
    "opencl": "-DGGML_OPENCL=on", "rocm": "-DGGML_HIP=on", "sycl": "-DGGML_SYCL=on",
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


def _guard(what: str, probe: Callable[[], T], default: T, problems: list[str]) -> T:
    try:
        return probe()
    except Exception as exc:  # a broken driver or package must never crash detection
        log.warning("device probe %s failed", what, exc_info=True)
        problems.append(f"{what}: {type(exc).__name__}: {exc}")
        return default


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
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
    import subprocess

    try:
        out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@dataclass
class LlamaCppBuild:
    """What the installed llama-cpp-python was built with."""

    version: str | None
    gpu_offload: bool
    registries: list[str]
    """ggml backend registries, e.g. ["CPU"] or ["CUDA", "CPU"]."""
    devices: list[dict[str, Any]]
    """ggml devices: registry, name, description, type, free, total."""
    kinds: list[str]
    """Lampchat device kinds the build supports (always "cpu" first)."""
    system_info: str = ""
    problems: list[str] = field(default_factory=list)


@lru_cache(maxsize=1)
def llama_cpp_build() -> LlamaCppBuild | None:
    """Probe llama-cpp-python's build and its ggml backend registry; None if not installed."""
    try:
        import llama_cpp
    except Exception as exc:
        log.info("llama_cpp not importable: %s", exc)
        return None
    problems: list[str] = []
    gpu = _guard("llama.cpp gpu offload", lambda: bool(llama_cpp.llama_supports_gpu_offload()),
                 False, problems)
    system_info = _guard(
        "llama.cpp system info",
        lambda: llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
        "", problems,
    )
    registries, devices = _guard("ggml backend registry", lambda: _ggml_registry(llama_cpp),
                                 ([], []), problems)
    kinds = ["cpu"]
    for reg in registries:
        kind = _GGML_KINDS.get(reg.lower())
        if kind and kind not in kinds:
            kinds.append(kind)
    for lib in _ggml_backend_libs(llama_cpp):  # dynamically loaded backends not registered yet
        kind = _GGML_KINDS.get(lib)
        if kind and kind not in kinds:
            kinds.append(kind)
    return LlamaCppBuild(
        version=getattr(llama_cpp, "__version__", None) or _dist_version("llama-cpp-python"),
        gpu_offload=gpu, registries=registries, devices=devices, kinds=kinds,
        system_info=system_info, problems=problems,
    )


def _ggml_lib_dir(llama_cpp: Any) -> Path:
    return Path(llama_cpp.__file__).resolve().parent / "lib"


def _ggml_backend_libs(llama_cpp: Any) -> list[str]:
    """Names of ggml backend libraries shipped as separate files (libggml-cuda.so -> "cuda")."""
    out = []
    try:
        for path in sorted(_ggml_lib_dir(llama_cpp).glob("*ggml-*")):
            match = re.match(r"(?:lib)?ggml-([a-z0-9]+)", path.name)
            if match and match.group(1) not in ("base", "cpu"):
                out.append(match.group(1))
    except OSError:
        pass
    return out


def _ggml_handle(llama_cpp: Any) -> Any:
    """A ctypes handle exporting the ggml registry functions (the one llama_cpp loaded)."""
    candidates: list[Any] = []
    lib = getattr(getattr(llama_cpp, "llama_cpp", None), "_lib", None)
    if lib is not None:
        candidates.append(lib)
    lib_dir = _ggml_lib_dir(llama_cpp)
    for pattern in ("*ggml.*", "*ggml-base.*", "*llama.*"):
        for path in sorted(lib_dir.glob(pattern)):
            try:
                candidates.append(ctypes.CDLL(str(path)))
            except OSError:
                continue
    for handle in candidates:
        if hasattr(handle, "ggml_backend_reg_count") and hasattr(handle, "ggml_backend_dev_memory"):
            return handle
    raise OSError(f"no library in {lib_dir} exports ggml_backend_reg_count")


def _ggml_registry(llama_cpp: Any) -> tuple[list[str], list[dict[str, Any]]]:
    lib = _ggml_handle(llama_cpp)
    vp, size_t = ctypes.c_void_p, ctypes.c_size_t
    sigs: dict[str, tuple[list[Any], Any]] = {
        "ggml_backend_reg_count": ([], size_t),
        "ggml_backend_reg_get": ([size_t], vp),
        "ggml_backend_reg_name": ([vp], ctypes.c_char_p),
        "ggml_backend_dev_count": ([], size_t),
        "ggml_backend_dev_get": ([size_t], vp),
        "ggml_backend_dev_name": ([vp], ctypes.c_char_p),
        "ggml_backend_dev_description": ([vp], ctypes.c_char_p),
        "ggml_backend_dev_type": ([vp], ctypes.c_int),
        "ggml_backend_dev_memory": ([vp, ctypes.POINTER(size_t), ctypes.POINTER(size_t)], None),
        "ggml_backend_dev_backend_reg": ([vp], vp),
    }
    fns = {}
    for name, (argtypes, restype) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, restype
        fns[name] = fn

    def text(raw: bytes | None) -> str:
        return (raw or b"").decode("utf-8", "replace")

    registries = [
        text(fns["ggml_backend_reg_name"](fns["ggml_backend_reg_get"](i)))
        for i in range(int(fns["ggml_backend_reg_count"]()))
    ]
    devices = []
    for i in range(int(fns["ggml_backend_dev_count"]())):
        dev = fns["ggml_backend_dev_get"](i)
        free, total = size_t(0), size_t(0)
        fns["ggml_backend_dev_memory"](dev, ctypes.byref(free), ctypes.byref(total))
        reg = fns["ggml_backend_dev_backend_reg"](dev)
        dev_type = int(fns["ggml_backend_dev_type"](dev))
        devices.append({
            "registry": text(fns["ggml_backend_reg_name"](reg)) if reg else "",
            "name": text(fns["ggml_backend_dev_name"](dev)),
            "description": text(fns["ggml_backend_dev_description"](dev)),
            "type": _GGML_DEV_TYPES.get(dev_type, str(dev_type)),
            "free": int(free.value),
            "total": int(total.value),
        })
    return registries, devices


@lru_cache(maxsize=1)
def opencl_devices() -> tuple[list[dict[str, Any]], str | None]:
    """OpenCL devices through pyopencl, numbered as `opencl:N`, and a problem line if any.

    Raises ImportError when pyopencl is not installed.
    """
    import pyopencl as cl

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


@lru_cache(maxsize=1)
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


@lru_cache(maxsize=1)
def mlx_info() -> dict[str, Any] | None:
    """MLX's default device and GPU support; None if MLX is not installed."""
    try:
        import mlx.core as mx
    except Exception as exc:
        log.info("mlx not importable: %s", exc)
        return None
    metal = bool(mx.metal.is_available())
    cuda_mod = getattr(mx, "cuda", None)
    cuda = bool(cuda_mod is not None and cuda_mod.is_available())
    info: dict[str, Any] = {
        "default_device": str(mx.default_device()), "metal": metal, "cuda": cuda,
    }
    if metal or cuda:
        try:
            info["gpu"] = {k: v for k, v in mx.device_info(mx.gpu).items()}
        except Exception as exc:
            info["gpu_problem"] = str(exc)
    return info


@lru_cache(maxsize=1)
def onnx_providers() -> list[str] | None:
    """onnxruntime's available execution providers; None if it is not installed."""
    try:
        import onnxruntime
    except Exception as exc:
        log.info("onnxruntime not importable: %s", exc)
        return None
    return list(onnxruntime.get_available_providers())


def _is_apple_silicon() -> bool:
    return platform.system() == "Darwin" and platform.machine() == "arm64"


# ---------------------------------------------------------------------------------------------
# Putting it together


class _Devices:
    """Devices merged by id as probes report them."""

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


ALL_BACKENDS = ("llama.cpp", "native", "mlx", "onnx")
"""Backends with local devices (the remote backend runs on its server)."""


@lru_cache(maxsize=16)
def detect(backends: tuple[str, ...] = ALL_BACKENDS, opencl: bool = True) -> DeviceReport:
    """Probe the CPU, GPUs and `backends`' builds (cached per argument set).

    `opencl=False` skips enumerating OpenCL devices (the slowest probe), which automatic
    choice does not need.
    """
    problems: list[str] = []
    cpu = _guard("cpu", cpu_device, None, problems)
    if cpu is None:
        mem = psutil.virtual_memory()
        cpu = Device(id="cpu", kind="cpu", index=0, name=platform.machine() or "CPU", gpu=False,
                     total_memory=int(mem.total), free_memory=int(mem.available))
    cpu = replace(cpu, backends=[], sources=list(cpu.sources), details=dict(cpu.details))
    found = _Devices()
    supports: list[BackendSupport] = []

    nvml, problem = _guard("nvml", nvml_devices, ([], None), problems)
    if problem:
        problems.append(problem)
    for d in nvml:
        found.add("cuda", d["index"], d["name"], "nvml", total=d["total"], free=d["free"])

    if _is_apple_silicon():
        found.add("metal", 0, "Apple GPU", "platform", total=cpu.total_memory,
                  free=cpu.free_memory, unified_memory=True)

    cl_devs: list[dict[str, Any]] = []
    cl_installed: bool | None = None
    if opencl:
        cl_installed = True
        try:
            cl_devs, problem = opencl_devices()
        except ImportError:
            cl_installed, problem = False, None
        except Exception as exc:
            log.warning("OpenCL probe failed", exc_info=True)
            problem = f"OpenCL: {type(exc).__name__}: {exc}"
        if problem:
            problems.append(problem)
        for d in cl_devs:
            found.add("opencl", d["index"], d["name"], "opencl", gpu=d["gpu"], total=d["total"],
                      units=d["compute_units"], backend="native", platform=d["platform"],
                      type=d["type"], fp16=d["fp16"], version=d["version"])

    probes: dict[str, Callable[[], BackendSupport]] = {
        "llama.cpp": lambda: _llama_support(found),
        "native": lambda: _native_support(cl_devs, cl_installed, problem),
        "mlx": lambda: _mlx_support(found),
        "onnx": lambda: _onnx_support(found),
    }
    for name in backends:
        if name in probes:
            fallback = BackendSupport(name, installed=False, problem="probe failed")
            supports.append(_guard(name, probes[name], fallback, problems))

    for support in supports:
        if support.installed and "cpu" in support.kinds:
            cpu.backends.append(support.backend)
    return DeviceReport(devices=[cpu, *found.ordered()], backends=supports, problems=problems)


def _llama_support(found: _Devices) -> BackendSupport:
    build = llama_cpp_build()
    if build is None:
        return BackendSupport("llama.cpp", installed=False, hint="pip install llama-cpp-python",
                              problem="llama-cpp-python is not installed")
    counters: dict[str, int] = {}
    for dev in build.devices:
        kind = _GGML_KINDS.get(dev["registry"].lower())
        if kind is None or dev["type"] == "cpu":
            continue
        index = counters.get(kind, 0)
        counters[kind] = index + 1
        found.add(kind, index, dev["description"] or dev["name"], "ggml",
                  gpu=dev["type"] in ("gpu", "igpu"), total=dev["total"] or None,
                  free=dev["free"] or None, backend="llama.cpp", ggml_name=dev["name"])
    for kind in build.kinds[1:]:
        found.add_backend(kind, "llama.cpp")
    gpu_kinds = build.kinds[1:]
    if gpu_kinds:
        label = ", ".join(KIND_LABELS.get(k, k) for k in gpu_kinds)
        missing = [k for k in gpu_kinds if not found.has(k)]
        text = f"{label} build"
        hint = (f"no {', '.join(KIND_LABELS.get(k, k) for k in missing)} device found"
                if missing else None)
    else:
        text = "CPU-only build"
        hint = _llama_gpu_hint(found)
    return BackendSupport("llama.cpp", installed=True, version=build.version, kinds=build.kinds,
                          build=text, hint=hint, problem="; ".join(build.problems) or None)


def _llama_gpu_hint(found: _Devices) -> str:
    """How to reinstall llama-cpp-python for the GPU this machine has."""
    if found.has("cuda"):
        kind = "cuda"
    elif found.has("metal") or _is_apple_silicon():
        kind = "metal"
    elif any(d.gpu for d in found.by_id.values()):
        kind = "vulkan"
    else:
        return ("for a GPU reinstall with CMAKE_ARGS=-DGGML_CUDA=on (or -DGGML_METAL=on, "
                "-DGGML_VULKAN=on); see README 'GPU installs'")
    return (f"reinstall with CMAKE_ARGS={_LLAMA_CMAKE[kind]} for {KIND_LABELS[kind]}: "
            f"CMAKE_ARGS=\"{_LLAMA_CMAKE[kind]}\" pip install --force-reinstall --no-cache-dir "
            "llama-cpp-python")


def _native_support(cl_devs: list[dict[str, Any]], cl_installed: bool | None,
                    cl_problem: str | None) -> BackendSupport:
    kinds = ["cpu"]
    hint = None
    if cl_installed is None:
        text = "numpy on CPU (OpenCL not probed)"
    elif cl_devs:
        kinds.append("opencl")
        text = f"numpy on CPU; OpenCL (pyopencl) on {len(cl_devs)} device(s)"
    elif cl_installed:
        text = "numpy on CPU; pyopencl installed but no OpenCL device"
        hint = cl_problem or "install an OpenCL driver, e.g. pip install pocl-binary-distribution"
        return BackendSupport("native", installed=True, version=_dist_version("numpy"),
                              kinds=kinds, build=text, hint=hint,
                              problem="pyopencl found no OpenCL device")
    else:
        text = "numpy on CPU"
        hint = "for OpenCL: pip install 'lampchat[opencl]'"
    return BackendSupport("native", installed=True, version=_dist_version("numpy"), kinds=kinds,
                          build=text, hint=hint)


def _mlx_support(found: _Devices) -> BackendSupport:
    info = mlx_info()
    if info is None:
        return BackendSupport("mlx", installed=False, hint="pip install 'lampchat[mlx]'",
                              problem="mlx is not installed")
    kinds = ["cpu"]
    gpu = info.get("gpu", {})
    memory = gpu.get("memory_size") or gpu.get("total_memory")
    name = str(gpu.get("device_name") or "")
    if info["metal"]:
        kinds.append("metal")
        found.add("metal", 0, name or "Apple GPU", "mlx", total=memory, backend="mlx")
    if info["cuda"]:
        kinds.append("cuda")
        found.add("cuda", 0, name or "CUDA GPU", "mlx", total=memory, backend="mlx")
    gpu_names = [KIND_LABELS[k] for k in kinds[1:]]
    text = f"{', '.join(gpu_names)} build" if gpu_names else "CPU-only build"
    hint = None
    if not gpu_names:
        hint = ("for Metal: pip install mlx (macOS, Apple silicon)" if platform.system() == "Darwin"
                else "for CUDA: pip install 'mlx[cuda12]'")
    return BackendSupport("mlx", installed=True, version=_dist_version("mlx"), kinds=kinds,
                          build=text, hint=hint)


_ORT_KINDS = {
    "CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda",
    "CoreMLExecutionProvider": "metal", "DmlExecutionProvider": "directml",
    "ROCMExecutionProvider": "rocm", "MIGraphXExecutionProvider": "rocm",
}


def _onnx_support(found: _Devices) -> BackendSupport:
    providers = onnx_providers()
    if providers is None:
        return BackendSupport("onnx", installed=False, hint="pip install 'lampchat[onnx]'",
                              problem="onnxruntime is not installed")
    kinds = ["cpu"]
    for provider in providers:
        kind = _ORT_KINDS.get(provider)
        if kind and kind not in kinds:
            kinds.append(kind)
            found.add_backend(kind, "onnx")
    if "directml" in kinds and not found.has("directml"):
        found.add("directml", 0, "DirectML device", "onnxruntime", backend="onnx")
    short = [p.removesuffix("ExecutionProvider") for p in providers]
    version = _dist_version("onnxruntime") or _dist_version("onnxruntime-gpu")
    hint = None
    if len(kinds) == 1 and platform.system() != "Darwin":
        hint = "for CUDA: pip install onnxruntime-gpu"
        if platform.system() == "Windows":
            hint += "; for DirectML: pip install onnxruntime-directml"
    return BackendSupport("onnx", installed=True, version=version, kinds=kinds,
                          build="providers: " + ", ".join(short), hint=hint)


def how_to_get(backend: str, kind: str) -> str | None:
    """What to install for `backend` to use device kind `kind`, or None if nothing would."""
    if kind == "metal" and not (platform.system() == "Darwin" and platform.machine() == "arm64"):
        return "Metal needs macOS on Apple silicon"
    if backend == "llama.cpp" and kind in _LLAMA_CMAKE:
        return f"reinstall with CMAKE_ARGS={_LLAMA_CMAKE[kind]}"
    if backend == "mlx" and kind == "cuda":
        return "pip install 'mlx[cuda12]'"
    if backend == "mlx" and kind == "metal":
        return "MLX uses Metal on macOS with Apple silicon"
    if backend == "onnx" and kind == "cuda":
        return "pip install onnxruntime-gpu"
    if backend == "native" and kind == "opencl":
        return "pip install 'lampchat[opencl]' and an OpenCL driver"
    return None


def clear_cache() -> None:
    """Forget every cached probe (the next `detect` probes again)."""
    for fn in (detect, cpu_device, llama_cpp_build, opencl_devices, nvml_devices, mlx_info,
               onnx_providers):
        fn.cache_clear()


def require_device(backend: str, device: str) -> None:
    """Raise DeviceUnavailableError unless `backend` can run on `device` here.

    For llama.cpp this asks the library itself (its build and its ggml devices), so a backend
    can call it in `load` before touching hardware: "cuda" with a CPU-only build fails here
    instead of silently running on the CPU.
    """
    kind, index = parse_device(device)
    if kind in ("auto", "cpu"):
        return
    label = KIND_LABELS.get(kind, kind)
    if backend == "llama.cpp":
        build = llama_cpp_build()
        kinds = build.kinds if build else []
        if kind == "gpu":
            if len(kinds) > 1:
                return
            raise DeviceUnavailableError(
                "this llama.cpp build is CPU-only (see README 'GPU installs')"
            )
        if kind not in kinds:
            flag = _LLAMA_CMAKE.get(kind)
            how = f"; reinstall with CMAKE_ARGS={flag}" if flag else ""
            built = "CPU-only" if len(kinds) <= 1 else "built for " + ", ".join(kinds[1:])
            raise DeviceUnavailableError(
                f"{label} is not available in this llama.cpp build ({built}{how})"
            )
        assert build is not None
        count = sum(1 for d in build.devices if _GGML_KINDS.get(d["registry"].lower()) == kind)
        if count == 0 or (index is not None and index >= count):
            raise DeviceUnavailableError(f"llama.cpp found no {label} device {device!r}")
        return
    report = detect()
    support = report.support(backend)
    if support is None or not support.installed:
        return  # creating the backend reports the missing package
    devices = [d for d in report.devices_for(backend) if kind in ("gpu", d.kind)]
    if kind == "gpu":
        devices = [d for d in devices if d.gpu]
    if kind != "gpu" and kind not in support.kinds:
        raise DeviceUnavailableError(f"{backend} cannot use {label} ({support.build})")
    if not devices or (index is not None and all(d.index != index for d in devices)):
        raise DeviceUnavailableError(f"{backend} found no {label} device {device!r}")
