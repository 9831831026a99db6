"""The native architectures against mlx-lm (an independent implementation, on the CPU).

Small randomly initialised LLaMA and GPT-2 models are written as real HF folders
(config.json + model.safetensors) and as PyTorch checkpoints, read back through the format
loader as a user's checkpoint would be, and run by both engines with the same weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.errors import ModelLoadError
from engine.formats.loader import load_model
from engine.native import build_model
from engine.native.generator import Generator
from engine.sampling import Sampler
from engine.types import SamplingParams
from tests.support import torch_checkpoint
from tests.support.tiny_models import (
    gpt2_config,
    gpt2_weights,
    llama_config,
    llama_weights,
    mlx_logits,
    write_folder,
)
from tests.support.tiny_models import mlx_modules as _mlx

TOKENS = np.array([1, 5, 7, 99, 200, 3, 4, 5, 6, 7, 8, 9, 250, 17, 42, 42, 42, 0, 11, 12],
                  dtype=np.int64)
GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.0)
TOLERANCE = 1e-4
"""Relative max error allowed between two float32 implementations of the same model."""


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def mlx_greedy(folder: Path, prompt: list[int], n: int) -> list[int]:
    """mlx-lm's greedy continuation (full passes, no cache: independent of ours)."""
    mx, mlx_utils = _mlx()
    model, _ = mlx_utils.load_model(folder)
    seq = list(prompt)
    for _ in range(n):
        seq.append(int(mx.argmax(model(mx.array([seq]))[0, -1]).item()))
    return seq[len(prompt):]


LLAMA_VARIANTS = {
    "gqa-tied": {},
    "mha-untied-bias": dict(num_key_value_heads=4, tie_word_embeddings=False,
                            attention_bias=True, mlp_bias=True),
    "llama3-rope": dict(rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                      "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                      "original_max_position_embeddings": 16}),
    "linear-rope-head-dim": dict(head_dim=32, rope_scaling={"rope_type": "linear",
                                                            "factor": 2.0}),
}


@pytest.mark.parametrize("variant", LLAMA_VARIANTS)
def test_llama_logits_match_mlx_lm(tmp_path: Path, variant: str):
    config = llama_config(**LLAMA_VARIANTS[variant])
    weights = llama_weights(config)
    folder = write_folder(tmp_path / variant, config, weights)
    loaded = load_model(folder)
    net = build_model(loaded.config, loaded.weights)
    assert not loaded.weights, "the model takes every tensor it uses"
    ours = net.forward(TOKENS, net.new_cache(64), 0, all_logits=True)
    assert _rel_err(ours, mlx_logits(folder, TOKENS)) < TOLERANCE
    assert net.n_params == sum(a.size for a in weights.values())


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = gpt2_config()
    return write_folder(tmp_path_factory.mktemp("gpt2") / "gpt2", config, gpt2_weights(config))


@pytest.fixture(scope="module")
def gpt2_reference(gpt2_folder: Path) -> np.ndarray:
    return mlx_logits(gpt2_folder, TOKENS)


def test_gpt2_logits_match_mlx_lm(gpt2_folder: Path, gpt2_reference: np.ndarray):
    loaded = load_model(gpt2_folder)
    assert (loaded.format, loaded.model_type) == ("safetensors", "gpt2")
    n_weights = loaded.n_params
    net = build_model(loaded.config, loaded.weights)
    ours = net.forward(TOKENS, net.new_cache(64), 0, all_logits=True)
    assert _rel_err(ours, gpt2_reference) < TOLERANCE
    assert net.n_params == n_weights


def test_gpt2_greedy_generation_matches_mlx_lm(gpt2_folder: Path):
    loaded = load_model(gpt2_folder)
    generator = Generator(build_model(loaded.config, loaded.weights), 64)
    prompt = TOKENS[:6].tolist()
    assert list(generator.generate(prompt, Sampler(GREEDY), 16)) == mlx_greedy(
        gpt2_folder, prompt, 16)


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_gpt2_from_a_pytorch_checkpoint(
    tmp_path: Path, gpt2_folder: Path, gpt2_reference: np.ndarray, layout: str
):
    """The same GPT-2 as a `pytorch_model.bin` (HF's `transformer.` names, the old attention
    mask buffers, a tied lm_head), read by the restricted unpickler."""
    config = gpt2_config()
    state = {f"transformer.{k}": v for k, v in gpt2_weights(config).items()}
    for i in range(config["n_layer"]):
        state[f"transformer.h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 64, 64), np.float32))
    state["lm_head.weight"] = state["transformer.wte.weight"]
    folder = tmp_path / "gpt2-pt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    torch_checkpoint.save_state_dict(folder / "pytorch_model.bin", state, layout)
    loaded = load_model(folder)
    assert loaded.format == "pytorch"
    net = build_model(loaded.config, loaded.weights)
    ours = net.forward(TOKENS, net.new_cache(64), 0, all_logits=True)
    assert _rel_err(ours, gpt2_reference) < TOLERANCE


def test_gpt2_reads_names_with_or_without_the_transformer_prefix(gpt2_reference: np.ndarray):
    config = gpt2_config()
    bare = gpt2_weights(config)
    prefixed = {f"transformer.{k}": v for k, v in bare.items()}
    bare["h.0.attn.bias"] = np.tril(np.ones((1, 1, 64, 64), np.float32))  # old mask buffer
    for weights in (prefixed, bare):
        net = build_model(config, dict(weights))
        ours = net.forward(TOKENS, net.new_cache(64), 0, all_logits=True)
        assert _rel_err(ours, gpt2_reference) < TOLERANCE


@pytest.fixture(scope="module")
def llama_pair(tmp_path_factory: pytest.TempPathFactory):
    config = llama_config()
    folder = write_folder(tmp_path_factory.mktemp("llama") / "llama", config,
                          llama_weights(config))
    loaded = load_model(folder)
    return folder, build_model(loaded.config, loaded.weights)


def test_decoding_with_the_kv_cache_matches_one_full_pass(llama_pair):
    folder, net = llama_pair
    reference = mlx_logits(folder, TOKENS)
    cache = net.new_cache(64)
    net.forward(TOKENS[:7], cache, 0)
    steps = [net.forward(TOKENS[i : i + 1], cache, i) for i in range(7, len(TOKENS))]
    assert _rel_err(np.stack(steps), reference[7:]) < TOLERANCE


def test_chunked_prefill_and_prefix_reuse_give_the_same_logits(llama_pair):
    _, net = llama_pair
    whole = Generator(net, 64).prefill(TOKENS.tolist())
    chunked = Generator(net, 64, chunk=3)
    assert _rel_err(chunked.prefill(TOKENS.tolist()), whole) < 1e-5
    # a second prompt sharing 12 tokens only computes the rest, with the same result
    other = [*TOKENS[:12].tolist(), 77, 78, 79]
    computed: list[int] = []
    original = net.forward

    def spy(tokens, cache, start, all_logits=False):
        computed.extend(tokens.tolist())
        return original(tokens, cache, start, all_logits)

    net.forward = spy
    try:
        reused = chunked.prefill(other)
    finally:
        del net.forward
    assert computed == [77, 78, 79]
    assert _rel_err(reused, Generator(net, 64).prefill(other)) < 1e-5
    assert chunked.cache.tokens == other


def test_greedy_generation_matches_mlx_lm(llama_pair):
    folder, net = llama_pair
    prompt = TOKENS[:6].tolist()
    generator = Generator(net, 64)
    assert list(generator.generate(prompt, Sampler(GREEDY), 12)) == mlx_greedy(folder, prompt, 12)
    assert generator.finish_reason == "length"


def test_generation_ends_on_an_end_token_a_full_context_or_a_cancel(llama_pair):
    _, net = llama_pair
    prompt = TOKENS[:6].tolist()
    generator = Generator(net, 64)
    first = next(generator.generate(prompt, Sampler(GREEDY), 5))
    assert list(generator.generate(prompt, Sampler(GREEDY), 5, stop_ids={first})) == []
    assert generator.finish_reason == "stop"

    small = Generator(net, 10)
    assert len(list(small.generate(prompt, Sampler(GREEDY), 50))) == 10 - len(prompt) + 1
    assert small.finish_reason == "length"

    calls = []
    tokens = list(generator.generate(prompt, Sampler(GREEDY), 50,
                                     cancelled=lambda: calls.append(1) or len(calls) > 3))
    assert generator.finish_reason == "cancelled"
    assert len(tokens) == 3  # checked before each forward pass: prefill, then two steps
    assert generator.cache.length == len(prompt) + 2


def test_unsupported_or_incomplete_checkpoints_get_clear_errors():
    config = llama_config()
    state = llama_weights(config)
    with pytest.raises(ModelLoadError, match="does not run 'bert'"):
        build_model({"model_type": "bert"}, dict(state))
    broken = dict(state)
    del broken["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(ModelLoadError, match="model.layers.1.mlp.up_proj.weight"):
        build_model(config, broken)
    wrong = dict(state)
    wrong["model.layers.0.self_attn.k_proj.weight"] = np.zeros((64, 64), np.float32)
    with pytest.raises(ModelLoadError, match=r"k_proj.weight.*\(64, 64\)"):
        build_model(config, wrong)
    with pytest.raises(ModelLoadError, match="activation 'relu'"):
        build_model(gpt2_config(activation_function="relu"), gpt2_weights(gpt2_config()))
