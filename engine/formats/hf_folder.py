"""HF-style model folders: config.json, weight files (single or sharded), tokenizer files and
chat template."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.chat_template import ChatTemplate, end_of_turn_ids, fallback_template
from engine.errors import ModelLoadError
from engine.files import parse_json

SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_INDEX = "pytorch_model.bin.index.json"


def read_json(path: Path, what: str | None = None) -> Any:
    """Parse a JSON file, or raise ModelLoadError naming it."""
    try:
        return parse_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelLoadError(f"cannot read {what or path.name}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{what or path.name} is not valid JSON: {path} ({exc})") from exc


def read_config(folder: Path) -> dict[str, Any]:
    """The folder's config.json, or ModelLoadError."""
    path = folder / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"model folder has no config.json: {folder}")
    cfg = read_json(path, "config.json")
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"config.json is not a JSON object: {path}")
    return cfg


def shard_files(folder: Path, index_name: str) -> list[Path]:
    """The weight files listed by a sharded checkpoint's index, checked to exist."""
    index = read_json(folder / index_name)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelLoadError(f"{index_name} has no weight_map: {folder}")
    files: list[Path] = []
    for name in dict.fromkeys(weight_map.values()):
        path = folder / str(name)
        if not path.is_file():
            raise ModelLoadError(f"shard {name} listed in {index_name} is missing: {folder}")
        files.append(path)
    return files


def safetensors_files(folder: Path) -> list[Path]:
    """The folder's safetensors weight files (sharded via index, or model.safetensors, or all)."""
    if (folder / SAFETENSORS_INDEX).is_file():
        return shard_files(folder, SAFETENSORS_INDEX)
    if (folder / "model.safetensors").is_file():
        return [folder / "model.safetensors"]
    return sorted(folder.glob("*.safetensors"))


def _token_text(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("content", ""))
    return str(value) if value else ""


CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len",
                "seq_length", "max_sequence_length")
"""config.json keys that hold a model's trained context length, in the order they are read."""


def context_length(config: dict[str, Any], windowed: bool = False) -> int | None:
    """The context a model computes exactly: its trained length, or its sliding window when
    that is smaller and in use, for engines that compute full attention (past the window
    they would be wrong). `windowed`: the engine computes sliding windows itself (the native
    engine), so the trained length stands."""
    length = None
    for key in CONTEXT_KEYS:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            length = value
            break
    window = config.get("sliding_window")
    if (not windowed and isinstance(window, int) and not isinstance(window, bool) and window > 0
            and config.get("use_sliding_window", True) is not False
            and (length is None or window < length)):
        return window
    return length


def tokenizer_config(folder: Path) -> dict[str, Any]:
    """tokenizer_config.json as a dict ({} if absent)."""
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return {}
    cfg = read_json(path, "tokenizer_config.json")
    return cfg if isinstance(cfg, dict) else {}


def chat_template(folder: Path, config: dict[str, Any] | None = None,
                  tokenizer: Any = None) -> ChatTemplate:
    """The chat template from chat_template.jinja or tokenizer_config.json; else the built-in
    one for the model's family and vocabulary (`config`'s model_type, `tokenizer`'s tokens)."""
    tcfg = tokenizer_config(folder)
    bos, eos = _token_text(tcfg.get("bos_token")), _token_text(tcfg.get("eos_token"))
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return ChatTemplate("chat_template.jinja", jinja.read_text(encoding="utf-8"), bos, eos)
    template = tcfg.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    if isinstance(template, str) and template.strip():
        return ChatTemplate("tokenizer_config.json", template, bos, eos)
    vocabulary = tokenizer.get_vocab(with_added_tokens=True) if tokenizer is not None else {}
    return fallback_template((config or {}).get("model_type"), vocabulary, bos, eos)


def eos_token_ids(folder: Path, config: dict[str, Any], tokenizer: Any,
                  template: ChatTemplate | None = None) -> list[int]:
    """End-of-generation ids from generation_config.json, config.json and the tokenizer, and the
    end-of-turn tokens `template` writes."""
    ids: list[int] = []

    def add(value: Any) -> None:
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, int) and v not in ids:
                ids.append(v)

    gen = folder / "generation_config.json"
    if gen.is_file():
        data = read_json(gen, "generation_config.json")
        if isinstance(data, dict):
            add(data.get("eos_token_id"))
    add(config.get("eos_token_id"))
    eos = _token_text(tokenizer_config(folder).get("eos_token"))
    if eos and tokenizer is not None:
        add(tokenizer.token_to_id(eos))
    if template is not None and tokenizer is not None:
        add(end_of_turn_ids(template, tokenizer.token_to_id))
    return ids
