"""What the installed llama-cpp-python was built with: its ggml backend registries and devices.

Asked through ctypes from the library llama_cpp loaded; cached per process (`devices.clear_cache`).
"""

from __future__ import annotations

import ctypes
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.devices import dist_version, guard, probe_cache

log = logging.getLogger(__name__)

GGML_KINDS = {
    "cuda": "cuda", "metal": "metal", "mtl": "metal", "vulkan": "vulkan", "opencl": "opencl",
    "rocm": "rocm", "hip": "rocm", "sycl": "sycl", "musa": "musa", "cann": "cann",
}
"""ggml registry names -> Lampchat device kinds."""
_GGML_DEV_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}


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




@probe_cache
def llama_cpp_build() -> LlamaCppBuild | None:
    """Probe llama-cpp-python's build and its ggml backend registry; None if not installed."""
    try:
        import llama_cpp  # optional
    except Exception as exc:
        log.info("llama_cpp not importable: %s", exc)
        return None
    problems: list[str] = []
    gpu = guard("llama.cpp gpu offload", lambda: bool(llama_cpp.llama_supports_gpu_offload()),
                 False, problems)
    system_info = guard(
        "llama.cpp system info",
        lambda: llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
        "", problems,
    )
    registries, devices = guard("ggml backend registry", lambda: _ggml_registry(llama_cpp),
                                 ([], []), problems)
    kinds = ["cpu"]
    for reg in registries:
        kind = GGML_KINDS.get(reg.lower())
        if kind and kind not in kinds:
            kinds.append(kind)
    for lib in _ggml_backend_libs(llama_cpp):  # dynamically loaded backends not registered yet
        kind = GGML_KINDS.get(lib)
        if kind and kind not in kinds:
            kinds.append(kind)
    return LlamaCppBuild(
        version=getattr(llama_cpp, "__version__", None) or dist_version("llama-cpp-python"),
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

