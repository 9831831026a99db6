"""benchmarks/synthetic_gguf.py, imported as a module (benchmarks/ is not a package)."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tests.support.cli import REPO


def synthetic_gguf() -> ModuleType:
    """The synthetic GGUF writer (`write`, `PRESETS`, `tensors`, ...)."""
    name = "synthetic_gguf"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "synthetic_gguf.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module
