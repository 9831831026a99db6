"""ONNX backend and exporter on the real converted SmolLM2 (float32, and int8 weights)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.backends.onnx import OnnxBackend, choose_providers
from engine.errors import DeviceUnavailableError, LampchatError, ModelLoadError
from engine.types import ChatMessage, LoadSettings, SamplingParams, StreamStats
from engine.worker import EngineWorker
from tests.support.cli import GREEDY_PROMPT, run_lampchat

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=32)


@pytest.fixture(scope="module")
def onnx_backend(smollm2_onnx_dir: Path):
    backend = OnnxBackend()
    backend.load(str(smollm2_onnx_dir), LoadSettings(n_ctx=512, device="cpu"))
    yield backend
    backend.unload()


def test_export_writes_the_convention(smollm2_onnx_dir: Path) -> None:
    import onnx

    names = {p.name for p in smollm2_onnx_dir.iterdir()}
    assert {"model.onnx", "model.onnx.data", "config.json", "tokenizer.json",
            "tokenizer_config.json"} <= names
    assert (smollm2_onnx_dir / "model.onnx").stat().st_size < 2**20  # the weights are external
    model = onnx.load(str(smollm2_onnx_dir / "model.onnx"), load_external_data=False)
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    assert inputs[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert "past_key_values.29.value" in inputs and "past_key_values.30.key" not in inputs
    assert outputs[0] == "logits" and "present.0.key" in outputs and "present.29.value" in outputs
    ops = {n.op_type for n in model.graph.node}
    assert {"Attention", "RotaryEmbedding", "RMSNormalization"} <= ops
    # fused q/k/v and gate/up: 4 matrix products per layer, plus the output projection
    assert sum(n.op_type == "MatMul" for n in model.graph.node) == 4 * 30
    onnx.checker.check_model(str(smollm2_onnx_dir / "model.onnx"))


def test_logits_match_the_native_engine(onnx_backend: OnnxBackend, smollm2_hf_dir: Path) -> None:
    from engine.formats.loader import load_model
    from engine.native import build_model

    loaded = load_model(smollm2_hf_dir)
    net = build_model(loaded.config, loaded.weights)
    tokens = [1, 504, 3458, 282, 4649, 314, 1530, 30]
    ref = net.forward(np.asarray(tokens), net.new_cache(32), 0)
    onnx_backend.reset_cache()
    got = onnx_backend.prefill(tokens)
    assert got is not None
    assert np.abs(got - ref).max() / np.abs(ref).max() < 1e-3


def test_greedy_agrees_with_native(onnx_backend: OnnxBackend, smollm2_greedy_reference) -> None:
    prompt_ids, expected = smollm2_greedy_reference
    assert onnx_backend.tokenize_prompt([ChatMessage("user", GREEDY_PROMPT)]) == prompt_ids
    assert list(onnx_backend.generate_ids(prompt_ids, GREEDY)) == expected
    # again from the cached prefix: the cache reuse must not change the result
    assert list(onnx_backend.generate_ids(prompt_ids, GREEDY)) == expected


def test_multi_turn_cache_matches_a_cold_start(onnx_backend: OnnxBackend) -> None:
    turn1 = [ChatMessage("user", "Name a colour.")]
    short = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=12)
    reply = "".join(p.text for p in onnx_backend.stream(turn1, short, StreamStats()))
    turn2 = [*turn1, ChatMessage("assistant", reply), ChatMessage("user", "And another one?")]
    warm = "".join(p.text for p in onnx_backend.stream(turn2, short, StreamStats()))
    onnx_backend.reset_cache()  # cold: forget the cached conversation
    cold = "".join(p.text for p in onnx_backend.stream(turn2, short, StreamStats()))
    assert warm == cold and warm


async def test_worker_streams_with_metrics_and_cancels(smollm2_onnx_dir: Path) -> None:
    worker = EngineWorker()
    try:
        info = await worker.load(str(smollm2_onnx_dir), "onnx", LoadSettings(n_ctx=512))
        assert (info.backend, info.format, info.device) == ("onnx", "onnx", "cpu")
        assert info.quantization == "F32" and info.n_params and info.n_params > 130e6
        messages = [ChatMessage("user", "What is the capital of France?")]
        gen = worker.generate(messages, SamplingParams(temperature=0, max_tokens=24))
        async for _ in gen:
            pass
        assert "Paris" in gen.text
        m = gen.metrics
        assert m is not None and m.backend == "onnx" and m.finish_reason == "stop"
        assert m.prompt_tokens > 10 and m.completion_tokens > 3
        assert m.prompt_tps > 0 and m.decode_tps > 0 and m.peak_rss_mb > 100

        story = worker.generate([ChatMessage("user", "Tell me a very long story.")],
                                SamplingParams(temperature=0.7, seed=3, max_tokens=400))
        seen = 0
        async for _ in story:
            seen += 1
            if seen == 3:
                story.cancel()
        assert story.metrics is not None and story.metrics.finish_reason == "cancelled"
        assert story.metrics.completion_tokens < 10
        # the model still works after a cancel, and a seed repeats the same reply
        texts = []
        for _ in range(2):
            again = worker.generate(messages, SamplingParams(temperature=0.9, seed=7,
                                                             max_tokens=16))
            async for _ in again:
                pass
            texts.append(again.text)
        assert texts[0] == texts[1] and texts[0]
    finally:
        await worker.close()


def test_providers_follow_the_device() -> None:
    cpu_only = ["CPUExecutionProvider"]
    cuda = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("auto", cpu_only) == (["CPUExecutionProvider"], "cpu")
    assert choose_providers("auto", cuda) == (cuda, "cuda")
    assert choose_providers("cpu", cuda) == (["CPUExecutionProvider"], "cpu")
    assert choose_providers("cuda:0", cuda) == (cuda, "cuda")
    dml = ["DmlExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("directml", dml) == (dml, "directml")
    coreml = ["CoreMLExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("metal", coreml) == (coreml, "metal")
    with pytest.raises(DeviceUnavailableError, match="onnxruntime-gpu"):
        choose_providers("cuda", cpu_only)
    with pytest.raises(DeviceUnavailableError, match="no directml execution provider"):
        choose_providers("directml", cpu_only)
    with pytest.raises(DeviceUnavailableError, match="cannot run on device"):
        choose_providers("opencl", cpu_only)


def test_forced_missing_device_is_a_clear_error(smollm2_onnx_dir: Path) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(DeviceUnavailableError, match="no cuda execution provider"):
        OnnxBackend().load(str(smollm2_onnx_dir), LoadSettings(device="cuda"))


def test_bad_files_get_one_line_errors(tmp_path: Path, smollm2_onnx_dir: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    # an ONNX model that is not an LLM
    folder = tmp_path / "adder"
    folder.mkdir()
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])], "add",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              str(folder / "model.onnx"))
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(smollm2_onnx_dir / name, folder / name)
    with pytest.raises(ModelLoadError, match="not a decoder LLM with a KV cache"):
        OnnxBackend().load(str(folder), LoadSettings())
    # no tokenizer
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="no tokenizer.json"):
        OnnxBackend().load(str(folder), LoadSettings())
    # a truncated model file, through the CLI: one line, no traceback
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(smollm2_onnx_dir / name, broken / name)
    # the graph without its external weights file
    shutil.copy(smollm2_onnx_dir / "model.onnx", broken / "model.onnx")
    with pytest.raises(ModelLoadError, match="onnxruntime cannot load"):
        OnnxBackend().load(str(broken), LoadSettings())
    data = (smollm2_onnx_dir / "model.onnx").read_bytes()
    (broken / "model.onnx").write_bytes(data[: len(data) // 2])
    result = run_lampchat("ask", "-m", str(broken), "--backend", "onnx", "--max-tokens", "4", "hi")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "damaged or truncated" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    # a GGUF file given to the ONNX backend
    from engine.models import default_model_path

    with pytest.raises(LampchatError, match="is gguf"):
        OnnxBackend().load(str(default_model_path()), LoadSettings())


def test_int8_export_is_smaller_and_still_answers(tmp_path: Path, smollm2_hf_dir: Path,
                                                  smollm2_onnx_dir: Path) -> None:
    out = tmp_path / "int8"
    result = run_lampchat("convert", str(smollm2_hf_dir), "--to", "onnx", "--int8", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "int8 weights" in result.stdout and "building the graph" in result.stderr
    def weights_size(folder: Path) -> int:
        return sum(p.stat().st_size for p in folder.glob("model.onnx*"))

    assert weights_size(out) < 0.45 * weights_size(smollm2_onnx_dir)
    listing = run_lampchat("models", "--dir", str(tmp_path))
    assert listing.returncode == 0 and "onnx" in listing.stdout and "8-bit" in listing.stdout
    answer = run_lampchat("ask", "-m", str(out), "--backend", "onnx", "--temperature", "0",
                          "--max-tokens", "16", "What is the capital of France?")
    assert answer.returncode == 0, answer.stderr
    assert "Paris" in answer.stdout


def test_convert_refuses_a_non_empty_folder_and_int8_without_onnx(
        tmp_path: Path, smollm2_hf_dir: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = run_lampchat("convert", str(smollm2_hf_dir), "--to", "onnx", "-o", str(tmp_path))
    assert result.returncode == 1 and "not empty" in result.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"
    result = run_lampchat("convert", str(smollm2_hf_dir), "--int8", "-o", str(tmp_path / "x"))
    assert result.returncode == 1 and "--int8 applies to --to onnx only" in result.stderr


def test_concurrent_cancel_is_harmless(onnx_backend: OnnxBackend) -> None:
    """cancel() from another thread before a stream starts stops it at once."""
    onnx_backend.reset_cancel()
    onnx_backend.cancel()
    stats = StreamStats()
    pieces = list(onnx_backend.stream([ChatMessage("user", "Hello")], GREEDY, stats))
    assert sum(p.n_tokens for p in pieces) == 0 and stats.finish_reason == "cancelled"
    onnx_backend.reset_cancel()
