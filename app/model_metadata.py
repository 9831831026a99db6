"""Cheap model metadata for the model picker: size, quantization, parameters, context length.

Only headers are read (a GGUF key/value table and tensor table, safetensors JSON headers,
config.json), never the weights, so describing a model takes milliseconds. A damaged model
gives `ModelMeta.error` (one line) instead of raising.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.chat_template import BUILTINS, builtin_for
from engine.errors import LampchatError
from engine.formats.gguf_reader import GEMMA_ARCHES
from engine.formats.hf_folder import (
    context_length,
    read_config,
    safetensors_files,
    tokenizer_config,
)
from engine.formats.safetensors_io import read_header
from engine.models import metadata_name

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ModelMeta:
    """What the picker shows about one model; None where unknown."""

    file_size: int | None = None
    quantization: str | None = None
    n_params: int | None = None
    context_length: int | None = None
    error: str | None = None
    architecture: str | None = None
    """GGUF `general.architecture` or config.json `model_type`: which backends can run it."""
    chat_template: str | None = None
    """Where the chat template comes from: the model's own ("gguf", "tokenizer_config.json",
    "chat_template.jinja") or "built-in (NAME)" for a model that ships none."""
    model_name: str | None = None
    """The name its metadata gives (GGUF basename, size label, finetune), for a file whose
    own name says nothing ("model.gguf")."""


def read_metadata(path: Path, fmt: str) -> ModelMeta:
    """Describe the model at `path` of format `fmt`; damage becomes `error`, never an exception."""
    size = total_size(path)
    try:
        if fmt == "gguf":
            meta = gguf_metadata(path)
        elif path.is_dir():
            meta = folder_metadata(path)
        elif fmt == "safetensors":
            meta = safetensors_metadata([path])
        else:
            meta = ModelMeta()
    except LampchatError as exc:
        return ModelMeta(file_size=size, error=str(exc))
    except Exception as exc:  # a damaged header must never break the listing
        log.warning("could not read the metadata of %s", path, exc_info=True)
        return ModelMeta(file_size=size, error=f"cannot read {path.name}: {exc}")
    return ModelMeta(size, meta.quantization, meta.n_params, meta.context_length, meta.error,
                     meta.architecture, meta.chat_template, meta.model_name)


def total_size(path: Path) -> int | None:
    """The size of a file, or of every file under a folder."""
    try:
        if not path.is_dir():
            return path.stat().st_size
        total = 0
        for root, _dirs, files in os.walk(path):
            for name in files:
                try:
                    total += (Path(root) / name).stat().st_size
                except OSError:
                    continue
        return total
    except OSError:
        return None


# -- GGUF ------------------------------------------------------------------------------------

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
           10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")
_WANTED = ("general.architecture", "general.file_type", "general.alignment", "general.name",
           "general.basename", "general.size_label", "general.finetune")


class _Damaged(Exception):
    pass


class _Cursor:
    """Reads little-endian GGUF values from a memory map, with bounds checks."""

    def __init__(self, data: mmap.mmap) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> int:
        start = self.pos
        if n < 0 or start + n > len(self.data):
            raise _Damaged("the header runs past the end of the file")
        self.pos = start + n
        return start

    def unpack(self, fmt: str) -> Any:
        start = self.take(struct.calcsize(fmt))
        return struct.unpack_from(fmt, self.data, start)[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        start = self.take(n)
        return bytes(self.data[start:start + n]).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        self.take(self.unpack("<Q"))

    def skip_strings(self, count: int) -> None:
        """Skip `count` strings (a vocabulary: tens of thousands) in one tight loop."""
        data, pos, size = self.data, self.pos, len(self.data)
        read_len = _U64.unpack_from
        for _ in range(count):
            if pos + 8 > size:
                raise _Damaged("the header runs past the end of the file")
            pos += 8 + read_len(data, pos)[0]
        if pos > size:
            raise _Damaged("the header runs past the end of the file")
        self.pos = pos

    def find_strings(self, count: int, wanted: frozenset[bytes]) -> set[str]:
        """Skip `count` strings like `skip_strings`, returning those of them in `wanted`."""
        data, pos, size = self.data, self.pos, len(self.data)
        read_len = _U64.unpack_from
        lengths = {len(w) for w in wanted}
        found = set()
        for _ in range(count):
            if pos + 8 > size:
                raise _Damaged("the header runs past the end of the file")
            n = read_len(data, pos)[0]
            if n in lengths and data[pos + 8 : pos + 8 + n] in wanted:
                found.add(data[pos + 8 : pos + 8 + n].decode())
            pos += 8 + n
        if pos > size:
            raise _Damaged("the header runs past the end of the file")
        self.pos = pos
        return found

    def value(self, vtype: int, keep: bool) -> Any:
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype])
        if vtype == _STRING:
            if keep:
                return self.string()
            self.skip_string()
            return None
        if vtype == _ARRAY:
            item_type, count = self.unpack("<I"), self.unpack("<Q")
            if item_type in _SCALAR:
                self.take(struct.calcsize(_SCALAR[item_type]) * count)
            elif item_type == _STRING:
                self.skip_strings(count)
            else:
                raise _Damaged(f"unknown GGUF array item type {item_type}")
            return None
        raise _Damaged(f"unknown GGUF value type {vtype}")


def gguf_metadata(path: Path) -> ModelMeta:
    """Quantization, parameter count and context length from a GGUF file's header.

    Checks that every tensor's data lies inside the file, so a truncated download is reported.
    """
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            return _parse_gguf(path, data)
        except (_Damaged, struct.error, OverflowError, MemoryError, ValueError) as exc:
            return ModelMeta(error=f"GGUF file is damaged or truncated: {path} ({exc})")


def _parse_gguf(path: Path, data: mmap.mmap) -> ModelMeta:
    import gguf  # gguf takes about 0.1 s to import: only when a GGUF file is read

    cur = _Cursor(data)
    start = cur.take(4)
    if bytes(data[start:start + 4]) != b"GGUF":
        raise _Damaged("no GGUF magic")
    version = cur.unpack("<I")
    if version < 2:
        return ModelMeta(error=f"GGUF version {version} is too old to load: {path}")
    n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
    fields: dict[str, Any] = {}
    arch = ""
    own_template = False
    specials: set[str] = set()
    for _ in range(n_kv):
        key = cur.string()
        vtype = cur.unpack("<I")
        own_template = own_template or key == "tokenizer.chat_template"
        if key == "tokenizer.ggml.tokens" and vtype == _ARRAY:
            item_type, count = cur.unpack("<I"), cur.unpack("<Q")
            if item_type != _STRING:
                raise _Damaged("tokenizer.ggml.tokens is not a list of strings")
            specials = cur.find_strings(count, TEMPLATE_TOKENS)
            continue
        keep = key in _WANTED or key.endswith(".context_length")
        value = cur.value(vtype, keep)
        if keep:
            fields[key] = value
            if key == "general.architecture":
                arch = str(value)
    shapes: list[tuple[int, int, int]] = []  # (n_elements, type, offset)
    for _ in range(n_tensors):
        cur.skip_string()
        n_dims = cur.unpack("<I")
        if n_dims > 8:
            raise _Damaged(f"a tensor has {n_dims} dimensions")
        n_elements = 1
        for _ in range(n_dims):
            n_elements *= cur.unpack("<Q")
        shapes.append((n_elements, cur.unpack("<I"), cur.unpack("<Q")))
    if not shapes:
        return ModelMeta(error=f"GGUF file holds no tensors: {path}")
    alignment = int(fields.get("general.alignment") or 32)
    data_start = -(-cur.pos // alignment) * alignment
    end = 0
    type_counts: Counter[int] = Counter()
    for n_elements, ttype, offset in shapes:
        block, type_size = gguf.GGML_QUANT_SIZES.get(gguf.GGMLQuantizationType(ttype), (1, 0))
        end = max(end, data_start + offset + n_elements // block * type_size)
        type_counts[ttype] += n_elements
    if end > len(data):
        return ModelMeta(error=f"GGUF file is truncated ({len(data)} of {end} bytes): {path}")
    context = fields.get(f"{arch}.context_length")
    family = GEMMA_ARCHES.get(arch, arch) or None  # as the HF model_type names it
    return ModelMeta(
        quantization=_gguf_quantization(fields.get("general.file_type"), type_counts),
        n_params=sum(n for n, _t, _o in shapes),
        context_length=int(context) if context else None,
        architecture=family,
        chat_template="gguf" if own_template else _builtin(family, specials),
        model_name=metadata_name(fields),
    )


TEMPLATE_TOKENS = frozenset(t.encode() for b in BUILTINS.values() for t in b.requires)
"""The special tokens that decide which built-in template a model without one gets."""


def _builtin(family: str | None, vocabulary: set[str]) -> str:
    return f"built-in ({builtin_for(family, vocabulary).name})"


def _gguf_quantization(file_type: Any, type_counts: Counter[int]) -> str | None:
    import gguf  # gguf takes about 0.1 s to import: only when a GGUF file is read

    if file_type is not None:
        try:
            name = gguf.LlamaFileType(int(file_type)).name
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            pass
    if not type_counts:
        return None
    return gguf.GGMLQuantizationType(type_counts.most_common(1)[0][0]).name


# -- safetensors and HF-style folders ---------------------------------------------------------


def safetensors_metadata(files: list[Path]) -> ModelMeta:
    """Parameter count and the commonest dtype, from safetensors headers."""

    n_params = 0
    dtypes: Counter[str] = Counter()
    for file in files:
        header, _ = read_header(file)
        for name, info in header.items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in info["shape"]:
                count *= int(dim)
            n_params += count
            dtypes[str(info["dtype"])] += count
    quant = dtypes.most_common(1)[0][0] if dtypes else None
    return ModelMeta(quantization=quant, n_params=n_params or None)


def folder_metadata(folder: Path) -> ModelMeta:
    """Context length and quantization from config.json; parameters from safetensors headers."""

    config = read_config(folder) if (folder / "config.json").is_file() else {}
    weights = safetensors_metadata(safetensors_files(folder))
    quant = _config_quantization(config) or weights.quantization
    model_type = str(config["model_type"]).lower() if config.get("model_type") else None
    return ModelMeta(quantization=quant, n_params=weights.n_params,
                     context_length=_config_context(config), architecture=model_type,
                     chat_template=_folder_template(folder, model_type))


def _folder_template(folder: Path, family: str | None) -> str:
    """Where a folder's chat template comes from (see `ModelMeta.chat_template`); the
    special tokens of a model without one are read from tokenizer_config.json."""
    if (folder / "chat_template.jinja").is_file():
        return "chat_template.jinja"
    tcfg = tokenizer_config(folder)
    if tcfg.get("chat_template"):
        return "tokenizer_config.json"
    added = tcfg.get("added_tokens_decoder")
    names = {str(t.get("content")) for t in added.values() if isinstance(t, dict)} \
        if isinstance(added, dict) else set()
    return _builtin(family, names)


def _config_context(config: dict[str, Any]) -> int | None:
    text = config.get("text_config")
    return context_length(config) or (context_length(text) if isinstance(text, dict) else None)


def _config_quantization(config: dict[str, Any]) -> str | None:
    quant = config.get("quantization") or config.get("quantization_config")
    if isinstance(quant, dict):
        bits = quant.get("bits") or quant.get("w_bit")
        method = quant.get("quant_method") or quant.get("mode")
        if bits:
            return f"{bits}-bit" + (f" {method}" if isinstance(method, str) else "")
        if isinstance(method, str):
            return method
    dtype = config.get("torch_dtype") or config.get("dtype")
    names = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
    return names.get(dtype) if isinstance(dtype, str) else None
