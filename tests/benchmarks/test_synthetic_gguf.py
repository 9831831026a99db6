"""benchmarks/synthetic_gguf.py: files of a real model's shape that llama.cpp and the native
engine both load, and on which they agree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from tests.support.cli import REPO
from tests.support.references import llama_cpp_logits, native_logits
from tests.support.synthetic import synthetic_gguf

pytestmark = [pytest.mark.slow]


synthetic = synthetic_gguf()
PROMPT = b"Hello, how are you doing today?"


@pytest.mark.parametrize(("quant", "tolerance"), [
    ("F32", 1e-3),
    # llama.cpp rounds activations to 8 bits for quantised matrices; numpy does not
    ("F16", 3e-2), ("Q8_0", 3e-2), ("Q4_0", 3e-2), ("Q4_K_M", 3e-2),
])
def test_tiny_preset_runs_alike_in_llama_cpp_and_native(tmp_path: Path, quant: str,
                                                       tolerance: float) -> None:
    path = synthetic.write("tiny", quant, tmp_path / f"tiny-{quant}.gguf", seed=1,
                           progress=False)
    ids, ref = llama_cpp_logits(path, PROMPT)
    ours = native_logits(path, ids)
    assert ours.shape == ref.shape == (len(ids), synthetic.PRESETS["tiny"].vocab)
    assert np.abs(ref).max() > 0.1  # the random weights reach the logits
    assert np.abs(ours - ref).max() / np.abs(ref).max() < tolerance
    assert ours[-1].argmax() == ref[-1].argmax()


def test_the_file_has_the_preset_shape_types_and_tokenizer(tmp_path: Path) -> None:
    path = synthetic.write("tiny", "Q4_K_M", tmp_path / "tiny.gguf", progress=False)
    reader = gguf.GGUFReader(str(path))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    preset = synthetic.PRESETS["tiny"]
    assert len(types) == sum(1 for _ in synthetic.tensors(preset))
    assert types["blk.0.attn_q.weight"] == "Q4_K"
    # as llama.cpp's Q4_K_M: more bits for attn_v and ffn_down of the last eighth of layers
    assert types["blk.0.attn_v.weight"] == "Q4_K" and types["blk.1.attn_v.weight"] == "Q6_K"
    assert types["blk.1.ffn_down.weight"] == "Q6_K"
    assert types["blk.0.attn_norm.weight"] == "F32"
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    assert len(tokens) == preset.vocab and len(set(tokens)) == len(tokens)
    assert "<|im_start|>" in reader.fields["tokenizer.chat_template"].contents()
    q = reader.fields["llama.attention.head_count_kv"].contents()
    assert q == preset.n_kv_heads


def test_same_seed_same_file_other_seed_other_weights(tmp_path: Path) -> None:
    a = synthetic.write("tiny", "Q4_0", tmp_path / "a.gguf", seed=3, progress=False)
    b = synthetic.write("tiny", "Q4_0", tmp_path / "b.gguf", seed=3, progress=False)
    c = synthetic.write("tiny", "Q4_0", tmp_path / "c.gguf", seed=4, progress=False)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes() and a.stat().st_size == c.stat().st_size


def test_a_7b_preset_has_7b_parameters_and_a_qwen2_file_runs_in_llama_cpp(
    tmp_path: Path,
) -> None:
    n = sum(int(np.prod(s)) for _n, s, _r in synthetic.tensors(synthetic.PRESETS["llama-7b"]))
    assert 6.7e9 < n < 6.8e9  # Llama-2 7B: 6.74 B
    path = synthetic.write("tiny-qwen2", "Q8_0", tmp_path / "qwen2.gguf", progress=False)
    ids, logits = llama_cpp_logits(path, PROMPT)
    assert logits.shape == (len(ids), synthetic.PRESETS["tiny-qwen2"].vocab)
    assert np.isfinite(logits).all()


def test_the_command_line_shows_progress_and_lists_presets(tmp_path: Path) -> None:
    out = tmp_path / "t.gguf"
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "synthetic_gguf.py"),
                             "tiny", "-q", "Q8_0", "-o", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "tensor 20/20" in result.stderr and "GiB" in result.stderr
    assert result.stdout.strip() == str(out)
    listing = subprocess.run([sys.executable, str(REPO / "benchmarks" / "synthetic_gguf.py"),
                              "--list"], capture_output=True, text=True, timeout=60)
    assert "llama3-8b" in listing.stdout and "qwen2.5-7b" in listing.stdout
