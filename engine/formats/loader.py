"""One entry point that loads any supported checkpoint into one in-memory weight set.

`load_model(path)` detects the format by content and returns a `LoadedModel`: an HF-style config,
HF-named numpy weights (memory-mapped where the format allows), the tokenizer, the chat template
and the end-of-generation ids. Native backends consume it; `lampchat convert` writes it out.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from engine.chat_template import ChatTemplate, end_of_turn_ids, fallback_template
from engine.errors import ModelLoadError, UnknownFormatError
from engine.formats import hf_folder
from engine.formats.detect import detect_format
from engine.formats.lazy_weights import LazyTensor, LazyWeights
from engine.formats.pytorch import iter_pytorch, pytorch_files
from engine.formats.safetensors_io import (
    cast_float,
    iter_safetensors,
    lazy_safetensors,
    read_header,
)
from engine.tokenizer import load_tokenizer_json, tokenizer_from_gguf_vocab, vocab_from_gguf_fields

Progress = Callable[[float, str], None]


@dataclass
class LoadedModel:
    """A checkpoint in memory: HF config, HF-named weights, tokenizer and chat template."""

    config: dict[str, Any]
    weights: MutableMapping[str, np.ndarray]
    """A dict, or `LazyWeights` read as taken (`load_model(lazy=True)`)."""
    tokenizer: Any  # tokenizers.Tokenizer | None
    template: ChatTemplate
    eos_token_ids: list[int]
    format: str
    quantization: str
    path: Path
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def model_type(self) -> str:
        """"llama" or "gpt2"."""
        return str(self.config.get("model_type", ""))

    @property
    def n_params(self) -> int:
        """Number of weights."""
        if isinstance(self.weights, LazyWeights):
            return self.weights.n_elements()
        return sum(int(a.size) for a in self.weights.values())


def load_model(
    path: str | Path, progress: Progress | None = None, dtype: Any = np.float32,
    lazy: bool = False,
) -> LoadedModel:
    """Load the model at `path` (file or folder), whatever its format.

    Floating-point weights come back as `dtype` (float32 or float16); with `lazy`, as
    `LazyWeights`, each dequantized or cast only when taken (`progress` then follows the
    reads). Raises ModelLoadError, UnknownFormatError or UnsafeCheckpointError with a
    one-line message.
    """
    info = detect_format(path)
    if info.format == "gguf":
        return load_gguf(info.path, progress, dtype, lazy)
    if info.format == "safetensors":
        return load_hf(info.path, progress, dtype, "safetensors", lazy)
    if info.format == "pytorch":
        return load_hf(info.path, progress, dtype, "pytorch", lazy)
    raise UnknownFormatError(
        f"{info.format} models are not read by this loader (use the {info.format} backend): "
        f"{info.path}"
    )


def load_gguf(
    path: Path, progress: Progress | None = None, dtype: Any = np.float32, lazy: bool = False
) -> LoadedModel:
    """Load a GGUF file: dequantized, un-permuted weights under HF names."""
    # imports gguf (0.1 s): only when a GGUF file is read
    from engine.formats.gguf_reader import GGUFModel

    model = GGUFModel(path)
    config = model.config()
    vocab = vocab_from_gguf_fields(model.field)
    tokenizer = tokenizer_from_gguf_vocab(vocab) if vocab is not None else None
    template_text = model.field("tokenizer.chat_template")
    bos = vocab.token_text(vocab.bos_id) if vocab else ""
    eos = vocab.token_text(vocab.eos_id) if vocab else ""
    tokens = vocab.tokens if vocab else []
    if template_text:
        template = ChatTemplate("gguf", str(template_text), bos, eos)
    else:
        template = fallback_template(model.arch, set(tokens), bos, eos)
    eos_ids = vocab.eos_ids() if vocab else []
    index = {t: i for i, t in enumerate(tokens)}
    eos_ids += [i for i in end_of_turn_ids(template, index.get) if i not in eos_ids]
    if not eos_ids and config.get("eos_token_id") is not None:
        eos_ids = [int(config["eos_token_id"])]
    metadata = model.metadata
    if vocab is not None:
        metadata = {**metadata, "tokenizer.ggml.add_bos_token": vocab.add_bos}
    del vocab, tokens, index
    model.drop_vocabulary()  # in the tokenizer now: not held while the weights are read
    weights = model.lazy_weights(dtype, progress) if lazy else model.weights(dtype, progress)
    return LoadedModel(
        config=config,
        weights=weights,
        tokenizer=tokenizer,
        template=template,
        eos_token_ids=eos_ids,
        format="gguf",
        quantization=model.quantization,
        path=Path(path),
        metadata=metadata,
    )


HF_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2", "gemma3_text", "gpt2")
"""config.json model types whose weights this loader reads (engine.native decides what runs)."""


def load_hf(
    path: Path, progress: Progress | None = None, dtype: Any = np.float32,
    fmt: str = "safetensors", lazy: bool = False,
) -> LoadedModel:
    """Load an HF-style folder (or a lone weights file next to its config.json). With `lazy`,
    safetensors stay mapped and are cast (bfloat16 included) only when taken."""

    folder = path if path.is_dir() else path.parent
    config = hf_folder.read_config(folder)
    model_type = config.get("model_type")
    if model_type not in HF_MODEL_TYPES:
        raise ModelLoadError(
            f"model_type {model_type!r} is not supported by the native loader "
            f"(supported: {', '.join(HF_MODEL_TYPES)}): {folder}"
        )
    files = [path] if path.is_file() else _weight_files(folder, fmt)
    if not files:
        raise ModelLoadError(f"model folder holds no {fmt} weights: {folder}")
    weights: MutableMapping[str, np.ndarray] = {}
    lazy_tensors: dict[str, LazyTensor] = {}
    stored: dict[str, int] = {}  # elements per stored dtype, before any cast
    want = np.dtype(dtype) if dtype is not None else None
    for i, file in enumerate(files):
        span = (i / len(files), (i + 1) / len(files))
        if fmt == "safetensors":

            for key, info in read_header(file)[0].items():
                if key != "__metadata__":
                    size = int(np.prod([int(d) for d in info["shape"]]))
                    stored[str(info["dtype"])] = stored.get(str(info["dtype"]), 0) + size
        if lazy and fmt == "safetensors":
            lazy_tensors.update(lazy_safetensors(file, want))
            continue
        for name, arr in _iter_file(file, fmt, None, progress, span):
            if fmt != "safetensors":
                stored[arr.dtype.name] = stored.get(arr.dtype.name, 0) + int(arr.size)
            if lazy:
                lazy_tensors[name] = LazyTensor(tuple(arr.shape), partial(cast_float, arr, want))
            else:
                weights[name] = cast_float(arr, want)
    if lazy:
        weights = LazyWeights(normalize_names(lazy_tensors, str(model_type)), progress)
    else:
        weights = normalize_names(weights, str(model_type))
    tok_path = folder / "tokenizer.json"
    tokenizer = load_tokenizer_json(tok_path) if tok_path.is_file() else None
    quant = _quant_name(stored)
    return LoadedModel(
        config=config,
        weights=weights,
        tokenizer=tokenizer,
        template=(template := hf_folder.chat_template(folder, config, tokenizer)),
        eos_token_ids=hf_folder.eos_token_ids(folder, config, tokenizer, template),
        format=fmt,
        quantization=quant,
        path=Path(path),
    )


def _weight_files(folder: Path, fmt: str) -> list[Path]:

    if fmt == "safetensors":
        return hf_folder.safetensors_files(folder)

    return pytorch_files(folder)


def _iter_file(
    file: Path, fmt: str, dtype: Any, progress: Progress | None, span: tuple[float, float]
) -> Any:
    if fmt == "safetensors":

        return iter_safetensors(file, dtype, progress, span)

    return iter_pytorch(file, dtype, progress, span)


def normalize_names(weights: dict[str, Any], model_type: str) -> dict[str, Any]:
    """HF names as the native engine expects them (GPT-2 without the "transformer." prefix and
    without its causal-mask buffers); values are arrays or `LazyTensor`s."""
    if model_type != "gpt2":
        return weights
    out: dict[str, Any] = {}
    for name, arr in weights.items():
        short = name.removeprefix("transformer.")
        if short.endswith((".attn.bias", ".attn.masked_bias")) and len(arr.shape) == 4:
            continue  # the causal mask buffer of old GPT-2 checkpoints
        out[short] = arr
    return out


def _quant_name(counts: dict[str, int]) -> str:
    """The dtype holding most elements, as "F32", "F16", "BF16", ..."""
    if not counts:
        return "unknown"
    name = max(counts, key=counts.__getitem__)
    return {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}.get(name, name.upper())
