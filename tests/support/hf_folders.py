"""HF-style model folders made in tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file


def make_hf_folder(folder: Path, context: int = 2048, dtype=np.float16) -> int:
    """A small but well-formed HF-style safetensors folder; returns its parameter count."""
    folder.mkdir(parents=True)
    tensors = {
        "model.embed_tokens.weight": np.zeros((64, 16), dtype=dtype),
        "model.layers.0.mlp.up_proj.weight": np.ones((32, 16), dtype=dtype),
        "model.norm.weight": np.ones((16,), dtype=dtype),
    }
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "max_position_embeddings": context,
        "torch_dtype": "float16", "hidden_size": 16,
    }))
    (folder / "tokenizer.json").write_text("{}")
    return sum(t.size for t in tensors.values())
