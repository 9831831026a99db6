"""`convert --to onnx` for every family whose math the exported graph has, refused by name
for the others, and optimum's older split folders."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.backends.onnx import OnnxBackend
from engine.errors import LampchatError
from engine.formats.loader import load_model
from engine.native import build_model
from engine.onnx_export import export_onnx
from engine.types import LoadSettings
from tests.support.cli import run_lampchat
from tests.support.tiny_gguf import write_gemma_gguf, write_gpt2_gguf, write_llama_gguf

pytestmark = [pytest.mark.slow]

TOKENS = [1, 504, 3458, 282, 4649, 314, 1530, 30, 77, 1000, 2000, 3000]


def _onnx_logits(folder: Path, file: str | None = None) -> tuple[np.ndarray, OnnxBackend]:
    backend = OnnxBackend()
    backend.load(str(folder if file is None else folder / file), LoadSettings(device="cpu"))
    logits = backend.prefill(TOKENS)
    assert logits is not None
    return logits, backend


@pytest.mark.parametrize(("name", "options"), [
    ("qwen2", {"arch": "qwen2", "layers": 2, "qkv_bias": True}),
    ("phi3", {"arch": "phi3", "layers": 2, "untied": True}),
])
def test_qwen2_and_phi3_export_and_match_the_native_engine(tmp_path: Path, name: str,
                                                           options: dict) -> None:
    """Qwen2's q/k/v biases and Phi-3's fused weights reach the graph: its logits equal the
    native engine's (itself checked against llama.cpp) on the same file."""
    path = write_llama_gguf(tmp_path / f"{name}.gguf", **options)
    export_onnx(path, tmp_path / "onnx")
    loaded = load_model(path)
    net = build_model(loaded.config, loaded.weights)
    ref = net.forward(np.asarray(TOKENS), net.new_cache(32), 0)
    got, backend = _onnx_logits(tmp_path / "onnx")
    assert backend.info is not None and backend.info.context_length == 256
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-4


@pytest.mark.parametrize(("maker", "named"), [
    (lambda p: write_llama_gguf(p, arch="qwen3", layers=1, qk_norm=True), "has no q/k norms"),
    (lambda p: write_gemma_gguf(p, arch="gemma2", layers=2), "'gemma2'"),
    (lambda p: write_gpt2_gguf(p, untied=False), "'gpt2'"),
    (lambda p: write_llama_gguf(p, arch="phi3", layers=1, longrope=True), "'longrope'"),
])
def test_what_the_graph_would_get_wrong_is_refused_in_one_line(tmp_path: Path, maker,
                                                                named: str) -> None:
    path = maker(tmp_path / "model.gguf")
    with pytest.raises(LampchatError, match=re.escape(named)):
        export_onnx(path, tmp_path / "direct")
    result = run_lampchat("convert", str(path), "--to", "onnx", "-o", str(tmp_path / "onnx"))
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert last.startswith("lampchat: error: ONNX export runs") or "longrope" in last, last
    assert not (tmp_path / "onnx").exists()


def test_a_legacy_split_optimum_folder_runs_its_with_past_decoder(tmp_path: Path) -> None:
    """optimum's older export: `decoder_model.onnx` (no KV cache) and
    `decoder_with_past_model.onnx`. The folder runs the with-past one, from an empty cache on
    the first step, with the same logits as the merged file."""
    from onnx import TensorProto, helper, save

    path = write_llama_gguf(tmp_path / "llama.gguf", layers=2)
    export_onnx(path, tmp_path / "onnx")
    expected, _ = _onnx_logits(tmp_path / "onnx")
    split = tmp_path / "split"
    shutil.copytree(tmp_path / "onnx", split)
    (split / "model.onnx").rename(split / "decoder_with_past_model.onnx")
    no_cache = helper.make_graph(  # a decoder without past inputs, as optimum's first half
        [helper.make_node("Cast", ["input_ids"], ["logits"], to=TensorProto.FLOAT)], "decoder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "seq"])])
    save(helper.make_model(no_cache, opset_imports=[helper.make_opsetid("", 17)]),
         str(split / "decoder_model.onnx"))
    got, backend = _onnx_logits(split)
    assert backend.info is not None and backend.info.path == str(split)
    assert np.array_equal(got, expected)
    assert backend.step(5) is not None  # and decodes on from its cache
