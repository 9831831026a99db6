"""Backend names, the classes behind them, and which backend reads which format."""

from __future__ import annotations

import importlib

from engine.backends.base import Backend
from engine.errors import BackendError, BackendUnavailableError

BACKENDS: dict[str, str] = {
    "llama.cpp": "engine.backends.llama_cpp:LlamaCppBackend",
    "native": "engine.backends.native:NativeBackend",
    "mlx": "engine.backends.mlx:MLXBackend",
    "onnx": "engine.backends.onnx:OnnxBackend",
    "remote": "engine.backends.remote:RemoteBackend",
}
"""Every backend Lampchat knows, by the name users type."""

FORMAT_BACKENDS: dict[str, tuple[str, ...]] = {
    "gguf": ("llama.cpp", "native"),
    "safetensors": ("native", "mlx"),
    "pytorch": ("native",),
    "onnx": ("onnx",),
    "mlx": ("mlx",),
}
"""For each detected model format, the backends that can run it, preferred first."""

ALIASES = {"llama-cpp": "llama.cpp", "llamacpp": "llama.cpp", "llama_cpp": "llama.cpp"}


def canonical_name(name: str) -> str:
    """Return the canonical backend name, or raise BackendError listing the choices."""
    name = ALIASES.get(name.strip().lower(), name.strip().lower())
    if name not in BACKENDS:
        choices = ", ".join(["auto", *BACKENDS])
        raise BackendError(f"unknown backend {name!r} (choose one of: {choices})")
    return name


def create_backend(name: str) -> Backend:
    """Instantiate the backend called `name`, importing its module on demand."""
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
    return backend_cls()
