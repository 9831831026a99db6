"""Convert a checkpoint (GGUF, PyTorch, safetensors) to an HF-style folder.

The folder holds config.json, generation_config.json, model.safetensors, tokenizer.json and a
tokenizer_config.json carrying the chat template, so that HF-style loaders (the native engine,
mlx-lm, transformers) can read it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import LampchatError, ModelLoadError
from engine.files import staged_folder
from engine.formats.loader import LoadedModel, load_model
from engine.formats.safetensors_io import save_safetensors

Progress = Callable[[float, str], None]

OUTPUT_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                "tokenizer_config.json", "special_tokens_map.json")
DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass
class ConvertResult:
    """What a conversion wrote."""

    out_dir: Path
    source_format: str
    quantization: str
    n_tensors: int
    n_params: int
    bytes_written: int


def user_file_mode() -> int:
    """The mode a new file gets under the user's umask (0o644 under the usual 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def convert(
    src: str | Path,
    out_dir: str | Path,
    dtype: str = "float32",
    progress: Progress | None = None,
    force: bool = False,
) -> ConvertResult:
    """Convert the model at `src` into an HF-style folder at `out_dir`.

    `out_dir` must be absent or empty unless `force` is set; files are written to a temporary
    folder beside it and moved into place only when everything succeeded, so a failed
    conversion leaves nothing half-written.
    """
    if dtype not in DTYPES:
        raise LampchatError(f"unknown dtype {dtype!r} (choose float32 or float16)")
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise LampchatError(f"output path exists and is not a folder: {out}")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise LampchatError(f"output folder is not empty: {out} (use --force to overwrite)")
    src_path = Path(src).expanduser()
    if out.resolve() == src_path.resolve():
        raise LampchatError("the output folder is the model folder itself")

    def report(fraction: float, what: str) -> None:
        if progress is not None:
            progress(fraction, what)

    report(0.0, f"reading {src_path.name}")
    model = load_model(src_path, lambda f, w: report(0.85 * f, w), DTYPES[dtype])
    with staged_folder(out, user_file_mode()) as tmp:
        report(0.86, "writing config")
        write_configs(model, tmp, dtype)
        report(0.88, "writing tokenizer")
        if model.tokenizer is not None:
            model.tokenizer.save(str(tmp / "tokenizer.json"))
        report(0.9, "writing model.safetensors")

        weights = export_weights(model)
        save_safetensors(weights, tmp / "model.safetensors")
        report(0.99, "finishing")
    report(1.0, "done")
    written = sum((out / n).stat().st_size for n in OUTPUT_FILES if (out / n).is_file())
    return ConvertResult(
        out_dir=out,
        source_format=model.format,
        quantization=model.quantization,
        n_tensors=len(weights),
        n_params=sum(int(a.size) for a in weights.values()),
        bytes_written=written,
    )


def export_weights(model: LoadedModel) -> dict[str, np.ndarray]:
    """The weights to save: tied output weights are left out, as HF does."""
    weights = dict(model.weights)
    if model.config.get("tie_word_embeddings") and "lm_head.weight" in weights:
        embed = weights.get("model.embed_tokens.weight", weights.get("wte.weight"))
        if embed is not None and np.array_equal(embed, weights["lm_head.weight"]):
            del weights["lm_head.weight"]
    if not weights:
        raise ModelLoadError(f"the model holds no weights: {model.path}")
    return weights


def write_configs(model: LoadedModel, folder: Path, dtype: str) -> None:
    """config.json, generation_config.json, tokenizer_config.json, special_tokens_map.json."""
    config = {**model.config, "torch_dtype": dtype}
    _dump(folder / "config.json", config)
    gen: dict[str, Any] = {"_from_model_config": True}
    if config.get("bos_token_id") is not None:
        gen["bos_token_id"] = config["bos_token_id"]
    if model.eos_token_ids:
        ids = model.eos_token_ids
        gen["eos_token_id"] = ids[0] if len(ids) == 1 else ids
    _dump(folder / "generation_config.json", gen)
    tcfg: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": int(
            config.get("max_position_embeddings") or config.get("n_positions") or 2048
        ),
        "clean_up_tokenization_spaces": False,
    }
    specials: dict[str, str] = {}
    tok = model.tokenizer
    for key, token_id in (("bos_token", config.get("bos_token_id")),
                          ("eos_token", model.eos_token_ids[0] if model.eos_token_ids else None),
                          ("unk_token", None), ("pad_token", None)):
        text = model.template.bos_token if key == "bos_token" else ""
        if tok is not None and token_id is not None:
            text = tok.id_to_token(int(token_id)) or text
        if key == "eos_token" and model.template.eos_token:
            text = model.template.eos_token
        if text:
            tcfg[key] = text
            specials[key] = text
    add_bos = model.metadata.get("tokenizer.ggml.add_bos_token")
    if add_bos is not None:
        tcfg["add_bos_token"] = bool(add_bos)
    if model.template.source != "fallback":
        tcfg["chat_template"] = model.template.template
    _dump(folder / "tokenizer_config.json", tcfg)
    _dump(folder / "special_tokens_map.json", specials)


def _dump(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
