"""Logits of a GGUF file from llama.cpp (the independent reference) and from the native
engine, for comparing the two."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.formats.loader import load_model
from engine.native import build_model


def llama_cpp_logits(path: Path, prompt: bytes, n_ctx: int = 128) -> tuple[list[int], np.ndarray]:
    """(prompt ids, logits at every position) from llama.cpp with `logits_all=True` and a
    float32 KV cache (its default, float16, alone puts it about 1e-3 off)."""
    import llama_cpp  # loads llama.cpp's native library

    llm = llama_cpp.Llama(str(path), n_ctx=n_ctx, logits_all=True, verbose=False, n_threads=2,
                          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    try:
        ids = llm.tokenize(prompt, add_bos=False, special=False)
        llm.eval(ids)
        return ids, np.array(llm.scores[: len(ids)])
    finally:
        llm.close()


def native_logits(path: Path, ids: list[int], n_ctx: int = 128) -> np.ndarray:
    """Logits at every position from the native engine on the same file."""
    loaded = load_model(path)
    net = build_model(loaded.config, loaded.weights)
    return net.forward(np.array(ids), net.new_cache(n_ctx), 0, all_logits=True)
