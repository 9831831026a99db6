"""Checks of a GGUF file's metadata for what llama.cpp asserts on (an abort of the whole
process) or allocates from without bounds: finite hyperparameters, plausible counts that
agree with the tensors, a vocabulary without duplicates."""

from __future__ import annotations

import math
import re
from typing import Any

from engine.errors import ModelLoadError
from engine.formats.gguf_file import GGUFFile

COUNT_LIMITS = {
    "block_count": 4096,
    "embedding_length": 1 << 17,
    "feed_forward_length": 1 << 20,
    "attention.head_count": 4096,
    "attention.head_count_kv": 4096,
    "attention.key_length": 1 << 14,
    "attention.value_length": 1 << 14,
    "context_length": 1 << 24,
    "vocab_size": 1 << 24,
    "expert_count": 4096,
}
"""Hyperparameters read as counts, and far more than any real model has of each."""

_BLOCK = re.compile(r"^blk\.(\d+)\.")


def check_metadata(gguf: GGUFFile) -> None:
    """Raise ModelLoadError, naming the key, for metadata a loader would crash on."""
    fields, path = gguf.fields, gguf.path
    for key, value in fields.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ModelLoadError(f"GGUF metadata {key} is {value}, not a finite number: {path}")
        if isinstance(value, list) and value and isinstance(value[0], float) \
                and not all(math.isfinite(v) for v in value):
            raise ModelLoadError(f"GGUF metadata {key} holds a value that is not a finite "
                                 f"number: {path}")
    arch = str(fields.get("general.architecture") or "")
    for name, limit in COUNT_LIMITS.items():
        value = fields.get(f"{arch}.{name}")
        for item in value if isinstance(value, list) else [value]:
            if item is None:
                continue
            if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= limit:
                raise ModelLoadError(f"GGUF metadata {arch}.{name} = {_short(item)} is not a "
                                     f"plausible count (0 to {limit:,}): {path}")
    blocks = {int(m.group(1)) for t in gguf.tensors if (m := _BLOCK.match(t.name))}
    count = fields.get(f"{arch}.block_count")
    if blocks and isinstance(count, int) and count != max(blocks) + 1:
        raise ModelLoadError(f"GGUF metadata {arch}.block_count = {count:,} but the file holds "
                             f"tensors for {max(blocks) + 1} blocks: {path}")
    heads = fields.get(f"{arch}.attention.head_count")
    if isinstance(heads, int) and heads == 0 and blocks:
        raise ModelLoadError(f"GGUF metadata {arch}.attention.head_count is 0: {path}")
    _check_vocab(fields, path)


def _check_vocab(fields: dict[str, Any], path: Any) -> None:
    tokens = fields.get("tokenizer.ggml.tokens")
    if tokens is None:
        return
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise ModelLoadError(f"GGUF metadata tokenizer.ggml.tokens is not a list of strings: "
                             f"{path}")
    if len(set(tokens)) != len(tokens):
        seen: set[str] = set()
        twice = next(t for t in tokens if t in seen or seen.add(t))  # type: ignore[func-returns-value]
        raise ModelLoadError(f"GGUF vocabulary lists the token {twice!r} twice: {path}")
    for key in ("tokenizer.ggml.token_type", "tokenizer.ggml.scores"):
        other = fields.get(key)
        if isinstance(other, list) and len(other) != len(tokens):
            raise ModelLoadError(f"GGUF metadata {key} has {len(other):,} entries for "
                                 f"{len(tokens):,} tokens: {path}")
    for key in ("bos", "eos", "unknown", "padding", "eot"):
        token_id = fields.get(f"tokenizer.ggml.{key}_token_id")
        if isinstance(token_id, int) and not 0 <= token_id < len(tokens):
            raise ModelLoadError(f"GGUF metadata tokenizer.ggml.{key}_token_id = "
                                 f"{_short(token_id)} is not a token of the {len(tokens):,}: "
                                 f"{path}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."
