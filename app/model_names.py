"""Model names that work everywhere (`-m`, `model.default`, `/model`, the palette), and the
generation defaults a model's store keeps for it. No Textual."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.config import field_for
from app.model_catalog import find_entry, list_models
from engine.models import default_model_path, friendly_name, is_generic
from engine.types import LoadSettings, SamplingParams
from widgets.model_entry import ModelEntry

if TYPE_CHECKING:
    from app.config import Config

log = logging.getLogger(__name__)

OLLAMA_KEYS = {"temperature": "temperature", "top_k": "top_k", "top_p": "top_p",
               "min_p": "min_p", "repeat_penalty": "repeat_penalty", "seed": "seed",
               "num_predict": "max_tokens"}
"""Ollama parameters -> Lampchat's [generation] keys (and SamplingParams fields)."""


def resolve_name(wanted: str | None, config: Config | None,
                 env: Mapping[str, str] | None = None) -> ModelEntry:
    """The model `wanted` names (empty: `model.default`, else the bundled model): an
    existing path as it is, else a name `lampchat models` shows (see `find_entry`). Raises
    LampchatError with one line when nothing, or more than one model, matches."""
    name = (wanted or "").strip() or (config.model() if config is not None else None) or ""
    if not name:
        path = default_model_path()
        return ModelEntry(friendly_name(path), str(path), "gguf", source="bundled")
    path = Path(name).expanduser()
    if path.exists():  # a generic file name is left for the loaded model's metadata to name
        label = "" if is_generic(friendly_name(path)) else friendly_name(path)
        return ModelEntry(label, str(path), "unknown", source="path")
    return find_entry(name, list_models(config, include_remote=False, env=env))


def with_store_defaults(entry: ModelEntry, config: Config | None, sampling: SamplingParams,
                        settings: LoadSettings) -> tuple[SamplingParams, LoadSettings]:
    """`sampling` and `settings` with the parameters `entry`'s store keeps for it (Ollama's
    stop words, temperature, num_ctx, ...) wherever the config leaves the default; a value
    Lampchat would refuse is skipped (logged). Command-line flags are applied after this."""
    params = entry.params or {}

    def unset(dotted: str) -> bool:
        return config is None or config.source(dotted) == "default"

    def checked(dotted: str, value: Any) -> Any:
        try:
            return field_for(dotted).coerce(value)
        except (ValueError, TypeError) as exc:
            log.info("ignoring %s's %s=%r: %s", entry.name, dotted, value, exc)
            return None

    changes: dict[str, Any] = {}
    for ollama, key in OLLAMA_KEYS.items():
        if ollama in params and unset(f"generation.{key}"):
            value = checked(f"generation.{key}", params[ollama])
            if value is not None and not (key == "seed" and value < 0):
                changes[key] = value
    stop = params.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if isinstance(stop, list):
        words = tuple(w for w in stop if isinstance(w, str) and w)
        changes["stop"] = tuple(dict.fromkeys((*sampling.stop, *words)))
    sampling = replace(sampling, **changes)
    if "num_ctx" in params and unset("generation.context_length"):
        n_ctx = checked("generation.context_length", params["num_ctx"])
        if n_ctx is not None:
            settings = replace(settings, n_ctx=n_ctx)
    return sampling, replace(settings, label=entry.name)


def store_system_prompt(entry: ModelEntry, config: Config | None) -> str | None:
    """The system prompt `entry`'s store keeps, unless the config sets one."""
    if not entry.system or (config is not None and config.system_prompt()):
        return None
    return entry.system.strip() or None
