"""One tiny F32 GGUF per model family the native engine runs, written as llama.cpp's converter
writes each (shared by the end-to-end test and `benchmarks/native_families.py`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.support.tiny_gguf import write_gemma_gguf, write_gpt2_gguf, write_llama_gguf

FAMILIES: dict[str, Callable[[Path], Path]] = {
    "llama": lambda p: write_llama_gguf(p, layers=2),
    "llama3.1 (rope_freqs)": lambda p: write_llama_gguf(p, layers=2, rope_freqs=True),
    "qwen2": lambda p: write_llama_gguf(p, arch="qwen2", layers=2, qkv_bias=True),
    "qwen3": lambda p: write_llama_gguf(p, arch="qwen3", layers=2, qk_norm=True, head_dim=32),
    "phi3": lambda p: write_llama_gguf(p, arch="phi3", layers=2, untied=True),
    "phi3 (longrope)": lambda p: write_llama_gguf(p, arch="phi3", layers=2, untied=True,
                                                  longrope=True),
    "gemma2": lambda p: write_gemma_gguf(p, arch="gemma2", layers=2),
    "gemma3": lambda p: write_gemma_gguf(p, arch="gemma3", layers=6),
    "gpt2": lambda p: write_gpt2_gguf(p, untied=False),
    "gpt2 (untied)": lambda p: write_gpt2_gguf(p, untied=True),
}
"""Family name -> writer of a tiny model of it."""


def file_name(family: str) -> str:
    """A file name for `family`'s model."""
    return "".join(c if c.isalnum() else "-" for c in family).strip("-") + ".gguf"
