"""`lampchat convert`: the HF folder it writes is right (checked against llama.cpp through an
independent implementation, mlx-lm), and bad input or output paths lose nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest
from safetensors.numpy import load_file

from engine.formats.gguf_reader import permute_qk
from engine.formats.loader import load_model
from tests.support import torch_checkpoint
from tests.support.cli import run_lampchat

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def gguf_model(default_gguf: Path):
    return load_model(default_gguf)


def test_converted_folder_holds_the_gguf_weights(smollm2_hf_dir: Path, gguf_model) -> None:
    names = {p.name for p in smollm2_hf_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json"} <= names
    config = json.loads((smollm2_hf_dir / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["num_key_value_heads"] == 3 and config["rope_theta"] == 100000.0
    assert config["tie_word_embeddings"] is True
    tcfg = json.loads((smollm2_hf_dir / "tokenizer_config.json").read_text())
    assert tcfg["chat_template"] == gguf_model.template.template
    assert tcfg["eos_token"] == "<|im_end|>"
    gen = json.loads((smollm2_hf_dir / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [2, 0]

    tensors = load_file(str(smollm2_hf_dir / "model.safetensors"))
    assert set(tensors) == set(gguf_model.weights)
    assert "lm_head.weight" not in tensors  # tied, as HF stores it
    for name, arr in tensors.items():
        assert arr.dtype == np.float32
        np.testing.assert_array_equal(arr, gguf_model.weights[name], err_msg=name)

    folder = load_model(smollm2_hf_dir)
    assert folder.format == "safetensors" and folder.quantization == "F32"
    assert folder.config == gguf_model.config
    assert folder.eos_token_ids == [2, 0]
    assert folder.template.template == gguf_model.template.template
    for text in ("Hello 2024 wörld", PROMPT):
        assert folder.tokenizer.encode(text).ids == gguf_model.tokenizer.encode(text).ids


def _write_f32_gguf(folder: Path, src: Path, out: Path) -> None:
    """An F32 GGUF written from the converted folder's weights (q/k permuted back the way
    llama.cpp's converter does), with the original vocabulary."""
    model = load_model(folder)
    orig = gguf.GGUFReader(src)
    cfg = model.config
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_rope_dimension_count(cfg["hidden_size"] // cfg["num_attention_heads"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(orig.fields["tokenizer.ggml.tokens"].contents())
    w.add_token_types(orig.fields["tokenizer.ggml.token_type"].contents())
    w.add_token_merges(orig.fields["tokenizer.ggml.merges"].contents())
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
             "output_norm.weight"}
    block = {"input_layernorm.weight": "attn_norm", "self_attn.q_proj.weight": "attn_q",
             "self_attn.k_proj.weight": "attn_k", "self_attn.v_proj.weight": "attn_v",
             "self_attn.o_proj.weight": "attn_output", "post_attention_layernorm.weight":
             "ffn_norm", "mlp.gate_proj.weight": "ffn_gate", "mlp.up_proj.weight": "ffn_up",
             "mlp.down_proj.weight": "ffn_down"}
    for name, arr in model.weights.items():
        if name in names:
            gname = names[name]
        else:
            _, _, layer, rest = name.split(".", 3)
            gname = f"blk.{layer}.{block[rest]}.weight"
        if rest_is(name, "q_proj"):
            arr = permute_qk(arr, cfg["num_attention_heads"])
        elif rest_is(name, "k_proj"):
            arr = permute_qk(arr, cfg["num_key_value_heads"])
        w.add_tensor(gname, np.ascontiguousarray(arr, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def rest_is(name: str, proj: str) -> bool:
    return name.endswith(f"self_attn.{proj}.weight")


def _llama_greedy(path: Path, ids: list[int], n: int) -> tuple[np.ndarray, list[int]]:
    llm = llama_cpp.Llama(str(path), n_ctx=256, logits_all=True, verbose=False, n_threads=2,
                          seed=0)
    llm.eval(ids)
    logits = np.array(llm.scores[len(ids) - 1], dtype=np.float32)
    out = []
    for _ in range(n):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(token)
        llm.eval([token])
    llm.close()
    return logits, out


def _mlx_greedy(folder: Path, ids: list[int], n: int) -> tuple[np.ndarray, list[int]]:
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.generate import generate_step

    model, _tokenizer = load(str(folder))
    logits = np.array(model(mx.array([ids]))[0, -1].astype(mx.float32))
    steps = generate_step(mx.array(ids), model, max_tokens=n,
                          sampler=lambda logprobs: mx.argmax(logprobs, axis=-1))
    return logits, [int(token) for token, _ in steps]


def test_converted_folder_runs_like_llama_cpp(
    smollm2_hf_dir: Path, default_gguf: Path, gguf_model, tmp_path: Path
) -> None:
    """mlx-lm (an independent LLaMA implementation) on the converted folder vs llama.cpp on an
    F32 GGUF of the same weights: logits within 1e-3 relative, 32 identical greedy tokens; and
    the same greedy continuation as llama.cpp on the original Q4_1 file."""
    ids = gguf_model.tokenizer.encode(PROMPT).ids
    f32 = tmp_path / "smollm2-f32.gguf"
    _write_f32_gguf(smollm2_hf_dir, default_gguf, f32)
    ref_logits, ref_tokens = _llama_greedy(f32, ids, 32)
    mlx_logits, mlx_tokens = _mlx_greedy(smollm2_hf_dir, ids, 32)
    rel = np.abs(mlx_logits - ref_logits).max() / np.abs(ref_logits).max()
    assert rel < 1e-3, rel
    assert mlx_tokens == ref_tokens
    assert "Paris" in gguf_model.tokenizer.decode(mlx_tokens)
    _, q4_tokens = _llama_greedy(default_gguf, ids, 16)
    assert mlx_tokens[:16] == q4_tokens


def test_convert_shows_progress_and_float16(default_gguf: Path, tmp_path: Path) -> None:
    out = tmp_path / "half"
    result = run_lampchat("convert", str(default_gguf), "-o", str(out), "--dtype", "float16")
    assert result.returncode == 0, result.stderr
    assert "converting:" in result.stderr and "100%" in result.stderr
    assert "134.5M params" in result.stdout
    tensors = load_file(str(out / "model.safetensors"))
    assert {a.dtype for a in tensors.values()} == {np.dtype(np.float16)}
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "float16"
    assert load_model(out).quantization == "F16"


def test_convert_refuses_a_non_empty_output(default_gguf: Path, tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = run_lampchat("convert", str(default_gguf), "-o", str(out))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "not empty" in result.stderr and "--force" in result.stderr
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"


def test_convert_damaged_input_writes_nothing(default_gguf: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(default_gguf.read_bytes()[:2_000_000])
    out = tmp_path / "out"
    result = run_lampchat("convert", str(bad), "-o", str(out))
    assert result.returncode == 1
    assert "truncated" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gguf"]  # no temp folder left


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_convert_pytorch_gpt2(tmp_path: Path, layout: str) -> None:
    """A small random GPT-2 saved as torch.save does (zip and legacy formats, written here
    without torch) converts to the same weights, with HF GPT-2 names."""
    from tests.support.tiny_models import gpt2_config, gpt2_weights

    config = gpt2_config(n_embd=32, n_layer=2, n_head=4, vocab_size=100)
    weights = gpt2_weights(config)
    state = {f"transformer.{k}": v for k, v in weights.items()}
    for i in range(config["n_layer"]):
        state[f"transformer.h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 64, 64), np.float32))
    state["lm_head.weight"] = weights["wte.weight"]
    src = tmp_path / "gpt2"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(config))
    torch_checkpoint.save_state_dict(src / "pytorch_model.bin", state, layout)
    out = tmp_path / "out"
    result = run_lampchat("convert", str(src), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "(pytorch, F32)" in result.stdout
    tensors = load_file(str(out / "model.safetensors"))
    assert set(tensors) == set(weights)  # no prefix, no mask buffers, lm_head tied to wte
    for name, arr in weights.items():
        np.testing.assert_array_equal(tensors[name], arr, err_msg=name)
    assert json.loads((out / "config.json").read_text())["n_head"] == 4


def test_converted_files_get_the_users_umask_not_0600(smollm2_hf_dir: Path) -> None:
    mask = os.umask(0)
    os.umask(mask)
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        mode = (smollm2_hf_dir / name).stat().st_mode & 0o777
        assert mode == 0o666 & ~mask, (name, oct(mode))
