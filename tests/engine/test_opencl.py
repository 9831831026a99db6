"""The native engine on OpenCL (PoCL's real device here) against the same engine on numpy.

SmolLM2-135M converted to an HF folder (`smollm2_hf_dir`, float32) is built twice from the
same weights: once with numpy ops, once with `OpenCLOps`. Both compute in float32 and differ
only in summation order, so their logits must agree within 1e-4 and greedy decoding must pick
the same tokens. (Measured here: both are about 5e-5 from a float64 evaluation of the same
weights, so 1e-4 is float32's own noise, not a loose bound.)
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from engine.formats.loader import load_model
from engine.native import build_model
from engine.native.base import NativeModel
from engine.native.opencl import ops_for_device
from engine.native.opencl.ops import OpenCLOps
from engine.types import ChatMessage
from tests.support.cli import run_lampchat

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

LOGITS_TOL = 1e-4
GREEDY_TOKENS = 32
QUESTION = "What is the capital of France? Answer in one sentence."


def _build(folder: Path, ops=None) -> tuple[NativeModel, list[int]]:
    loaded = load_model(folder, dtype=np.float32)
    prompt = loaded.template.render([ChatMessage("user", QUESTION)])
    ids = loaded.tokenizer.encode(prompt, add_special_tokens=False).ids
    return build_model(loaded.config, loaded.weights, ops=ops), list(ids)


@pytest.fixture(scope="module")
def numpy_model(smollm2_hf_dir: Path) -> tuple[NativeModel, list[int]]:
    return _build(smollm2_hf_dir)


@pytest.fixture(scope="module")
def opencl_model(smollm2_hf_dir: Path) -> NativeModel:
    ops = ops_for_device("opencl", {"opencl_weights": "float32"})
    model, _ = _build(smollm2_hf_dir, ops)
    return model


def _greedy(model: NativeModel, prompt: list[int], n: int) -> tuple[list[int], np.ndarray]:
    """n greedy tokens and the logits of every step (prompt's last first)."""
    cache = model.new_cache(len(prompt) + n + 1)
    logits = model.forward(np.asarray(prompt), cache, 0)
    steps, tokens = [logits], []
    for pos in range(len(prompt), len(prompt) + n):
        tokens.append(int(np.argmax(logits)))
        logits = model.forward(np.asarray(tokens[-1:]), cache, pos)
        steps.append(logits)
    return tokens, np.stack(steps)


@pytest.fixture(scope="module")
def numpy_greedy(numpy_model) -> tuple[list[int], np.ndarray]:
    model, prompt = numpy_model
    return _greedy(model, prompt, GREEDY_TOKENS)


def test_weights_live_on_the_device(opencl_model):
    ops = opencl_model.ops
    assert isinstance(ops, OpenCLOps) and not ops.half_weights
    layer = opencl_model.layers[0]
    assert layer.wqkv.buf.size == layer.wqkv.nbytes == 4 * np.prod(layer.wqkv.shape)
    # every matrix and norm of all 30 layers, plus the final norm and the (tied) LM head
    assert ops.weight_bytes > 4 * 130e6


def test_prompt_logits_equal_numpy_within_1e_4(numpy_model, opencl_model):
    model, prompt = numpy_model
    want = model.forward(np.asarray(prompt), model.new_cache(64), 0, all_logits=True)
    got = opencl_model.forward(np.asarray(prompt), opencl_model.new_cache(64), 0,
                               all_logits=True)
    assert got.shape == want.shape == (len(prompt), 49152)
    assert np.abs(got - want).max() < LOGITS_TOL


def test_32_greedy_tokens_identical_and_each_step_within_1e_4(numpy_model, numpy_greedy,
                                                               opencl_model):
    _, prompt = numpy_model
    want_tokens, want_logits = numpy_greedy
    tokens, logits = _greedy(opencl_model, prompt, GREEDY_TOKENS)
    assert tokens == want_tokens
    assert np.abs(logits - want_logits).max() < LOGITS_TOL


def _rounded_to_half(model: NativeModel) -> NativeModel:
    """The numpy model with every matrix rounded to float16 (what half weights hold)."""
    twin = copy.copy(model)

    def half(w):
        return w.astype(np.float16).astype(np.float32) if w is not None and w.ndim == 2 else w

    twin.layers = [dataclasses.replace(layer, **{f.name: half(getattr(layer, f.name))
                                                 for f in dataclasses.fields(layer)})
                   for layer in model.layers]
    twin.lm_head = half(model.lm_head)  # tied: the lookup table (`embed`) stays float32
    return twin


def test_float16_weights(smollm2_hf_dir, numpy_model, numpy_greedy):
    """Half weights (vload_half, core OpenCL: PoCL runs them though it lacks cl_khr_fp16).

    Against numpy on the same rounded weights: float32 noise again (1e-4). Against the
    float32 weights: rounding to half moves the logits by a few hundredths (bound 0.25) and
    the answer starts the same way.
    """
    ops = ops_for_device("opencl", {"opencl_weights": "float16"})
    assert ops.half_weights
    half_model, prompt = _build(smollm2_hf_dir, ops)
    assert half_model.layers[0].w_gate_up.half and not half_model.layers[0].attn_norm.half
    n = 8
    tokens, logits = _greedy(half_model, prompt, n)
    ref_tokens, ref_logits = _greedy(_rounded_to_half(numpy_model[0]), prompt, n)
    assert tokens == ref_tokens
    assert np.abs(logits - ref_logits).max() < LOGITS_TOL
    f32_tokens, f32_logits = numpy_greedy
    assert 1e-3 < np.abs(logits[0] - f32_logits[0]).max() < 0.25
    assert tokens[:4] == f32_tokens[:4]


def _ask(folder: Path, device: str, env: dict[str, str] | None = None):
    return run_lampchat("ask", "--backend", "native", "--device", device, "--json",
                        "--temperature", "0", "-n", "10", "-m", str(folder), QUESTION, env=env)


def test_lampchat_ask_on_opencl_matches_the_cpu_and_names_the_device(smollm2_hf_dir):
    cpu = _ask(smollm2_hf_dir, "cpu")
    ocl = _ask(smollm2_hf_dir, "opencl")
    assert cpu.returncode == 0 and ocl.returncode == 0, cpu.stderr + ocl.stderr
    on_cpu, on_cl = json.loads(cpu.stdout), json.loads(ocl.stdout)
    assert on_cl["text"] == on_cpu["text"] and "Paris" in on_cl["text"]
    assert on_cpu["device"] == "cpu"
    assert on_cl["device"].startswith("opencl:0 (") and on_cl["backend"] == "native"
    assert ocl.stderr == ""


def test_no_opencl_device_is_one_clear_line(smollm2_hf_dir):
    """PoCL with no driver enabled: a real OpenCL platform that has no device."""
    env = {"POCL_DEVICES": "none"}
    result = _ask(smollm2_hf_dir, "opencl", env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("lampchat: error: device 'opencl' is not available")
    assert ("native: pyopencl found no OpenCL device (install an OpenCL driver, e.g. pip "
            "install pocl-binary-distribution)") in lines[0]
    table = run_lampchat("devices", "--json", env=env)
    assert table.returncode == 0, table.stderr
    report = json.loads(table.stdout)
    assert not [d for d in report["devices"] if d["kind"] == "opencl"]
    native = next(b for b in report["backends"] if b["backend"] == "native")
    assert native["kinds"] == ["cpu"] and "no OpenCL device" in native["build"]

