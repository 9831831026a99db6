"""GGUF reading: dequantization against ggml itself, the q/k un-permutation, tokenizers against
llama.cpp's own tokenizer, and damaged files."""

from __future__ import annotations

import ctypes
import random
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest

from engine.errors import ModelLoadError
from engine.formats.detect import validate_gguf
from engine.formats.gguf_file import GGUFFile, dequantize
from engine.formats.gguf_reader import GGUFModel, permute_qk, unpermute_qk
from engine.formats.loader import load_model
from engine.tokenizer import tokenizer_from_gguf_vocab, vocab_from_gguf_fields
from engine.types import ChatMessage

# -- ggml's own quantizer and dequantizer, through ctypes ------------------------------------


class _Traits(ctypes.Structure):
    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                ("from_float_ref", ctypes.c_void_p)]


_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


@pytest.fixture(scope="module")
def ggml() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    lib.ggml_get_type_traits.restype = ctypes.POINTER(_Traits)
    lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                        ctypes.c_void_p]
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    return lib


def ggml_quantize(lib: ctypes.CDLL, x: np.ndarray, qtype: gguf.GGMLQuantizationType
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(quantized bytes, ggml's own dequantization of them) for a 2-D float32 array."""
    traits = lib.ggml_get_type_traits(int(qtype)).contents
    lib.ggml_quantize_init(int(qtype))
    x = np.ascontiguousarray(x, dtype=np.float32)
    nbytes = x.size // traits.blck_size * traits.type_size
    dst = np.zeros(nbytes, np.uint8)
    written = lib.ggml_quantize_chunk(int(qtype), x.ctypes.data, dst.ctypes.data, 0,
                                      x.shape[0], x.shape[1], None)
    assert written == nbytes
    ref = np.zeros(x.size, np.float32)
    _TO_FLOAT(traits.to_float)(dst.ctypes.data, ref.ctypes.data, x.size)
    return dst, ref.reshape(x.shape)


QTYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K",
          "IQ4_NL", "BF16", "F16"]


@pytest.mark.parametrize("name", QTYPES)
def test_dequantize_matches_ggml(ggml: ctypes.CDLL, name: str) -> None:
    qtype = gguf.GGMLQuantizationType[name]
    x = np.random.default_rng(1).standard_normal((6, 512)).astype(np.float32)
    raw, ref = ggml_quantize(ggml, x, qtype)
    mine = dequantize(raw, qtype, x.size).reshape(x.shape)
    np.testing.assert_array_equal(mine, ref)
    assert np.abs(mine - x).mean() < 0.3  # it is a quantization of x, not noise


def _write_llama_gguf(path: Path, tensors: dict[str, tuple[np.ndarray, object]],
                      n_head: int = 4, n_kv: int = 2, d: int = 256) -> None:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(128)
    w.add_embedding_length(d)
    w.add_block_count(1)
    w.add_feed_forward_length(512)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(5000.0)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    for name, (data, qtype) in tensors.items():
        if qtype is None:
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_loader_dequantizes_and_unpermutes_each_tensor(ggml: ctypes.CDLL, tmp_path: Path) -> None:
    """A tiny LLaMA GGUF whose tensors are quantized by ggml: the loader returns ggml's own
    dequantization under HF names, with the q/k rows put back in HF order."""
    rng = np.random.default_rng(2)
    d, n_head, n_kv = 256, 4, 2
    hf = {  # weights in HF layout
        "model.embed_tokens.weight": rng.standard_normal((64, d)),
        "model.layers.0.self_attn.q_proj.weight": rng.standard_normal((d, d)),
        "model.layers.0.self_attn.k_proj.weight": rng.standard_normal((d // 2, d)),
        "model.layers.0.self_attn.v_proj.weight": rng.standard_normal((d // 2, d)),
        "model.layers.0.self_attn.o_proj.weight": rng.standard_normal((d, d)),
        "model.layers.0.mlp.gate_proj.weight": rng.standard_normal((512, d)),
        "model.layers.0.mlp.up_proj.weight": rng.standard_normal((512, d)),
        "model.layers.0.mlp.down_proj.weight": rng.standard_normal((d, 512)),
        "model.layers.0.input_layernorm.weight": rng.standard_normal(d),
        "model.layers.0.post_attention_layernorm.weight": rng.standard_normal(d),
        "model.norm.weight": rng.standard_normal(d),
    }
    gguf_names = {
        "model.embed_tokens.weight": ("token_embd.weight", "Q8_0"),
        "model.layers.0.self_attn.q_proj.weight": ("blk.0.attn_q.weight", "Q4_K"),
        "model.layers.0.self_attn.k_proj.weight": ("blk.0.attn_k.weight", "Q4_0"),
        "model.layers.0.self_attn.v_proj.weight": ("blk.0.attn_v.weight", "Q6_K"),
        "model.layers.0.self_attn.o_proj.weight": ("blk.0.attn_output.weight", "Q4_1"),
        "model.layers.0.mlp.gate_proj.weight": ("blk.0.ffn_gate.weight", "Q2_K"),
        "model.layers.0.mlp.up_proj.weight": ("blk.0.ffn_up.weight", "Q3_K"),
        "model.layers.0.mlp.down_proj.weight": ("blk.0.ffn_down.weight", "Q5_K"),
        "model.layers.0.input_layernorm.weight": ("blk.0.attn_norm.weight", None),
        "model.layers.0.post_attention_layernorm.weight": ("blk.0.ffn_norm.weight", None),
        "model.norm.weight": ("output_norm.weight", None),
    }
    tensors: dict[str, tuple[np.ndarray, object]] = {}
    expected: dict[str, np.ndarray] = {}
    for name, w in hf.items():
        gname, qname = gguf_names[name]
        stored = w.astype(np.float32)
        if name.endswith("q_proj.weight"):
            stored = permute_qk(stored, n_head)  # what llama.cpp's converter does
        elif name.endswith("k_proj.weight"):
            stored = permute_qk(stored, n_kv)
        if qname is None:
            tensors[gname] = (stored, None)
            expected[name] = stored
            continue
        qtype = gguf.GGMLQuantizationType[qname]
        raw, ref = ggml_quantize(ggml, stored, qtype)
        tensors[gname] = (raw.reshape(stored.shape[0], -1), qtype)
        if name.endswith("q_proj.weight"):
            ref = unpermute_qk(ref, n_head)
        elif name.endswith("k_proj.weight"):
            ref = unpermute_qk(ref, n_kv)
        expected[name] = ref
    path = tmp_path / "tiny.gguf"
    _write_llama_gguf(path, tensors, n_head, n_kv, d)

    model = load_model(path)
    assert model.format == "gguf"
    assert model.quantization == "Q4_K_M"
    assert model.config["num_attention_heads"] == n_head
    assert model.config["num_key_value_heads"] == n_kv
    assert model.config["rope_theta"] == 5000.0
    assert model.config["tie_word_embeddings"] is True
    assert set(model.weights) == set(hf)
    for name, ref in expected.items():
        np.testing.assert_array_equal(model.weights[name], ref, err_msg=name)
        assert model.weights[name].dtype == np.float32
    # the un-permuted q/k are close to the HF originals (they were only quantized)
    q = model.weights["model.layers.0.self_attn.q_proj.weight"]
    assert np.abs(q - hf["model.layers.0.self_attn.q_proj.weight"]).mean() < 0.1
    half = load_model(path, dtype=np.float16)
    assert half.weights["model.norm.weight"].dtype == np.float16
    lazy = load_model(path, lazy=True).weights  # as the native backend reads them
    direct = 0
    for name, ref in expected.items():
        out = np.empty(lazy.shape(name), dtype=np.float32)
        if lazy.pop_into(name, out):  # dequantized straight into `out`
            direct += 1
        else:  # q/k, un-permuted after dequantizing
            out = lazy.pop(name)
        np.testing.assert_array_equal(out, ref, err_msg=name)
    assert direct == len(expected) - 2


def test_a_tensor_type_it_cannot_dequantize_is_refused_by_name(tmp_path: Path) -> None:
    q8_1 = gguf.GGMLQuantizationType.Q8_1
    block, size = gguf.GGML_QUANT_SIZES[q8_1]
    path = tmp_path / "q8_1.gguf"
    _write_llama_gguf(path, {
        "token_embd.weight": (np.zeros((64, 256 // block * size), np.uint8), q8_1),
        "output_norm.weight": (np.ones(256, np.float32), None)})
    refusal = r"GGUF tensor type Q8_1 is not supported \(token_embd.weight\)"
    with pytest.raises(ModelLoadError, match=refusal):
        load_model(path)
    lazy = load_model(path, lazy=True).weights  # reads nothing yet
    with pytest.raises(ModelLoadError, match=refusal):
        lazy.pop_into("model.embed_tokens.weight", np.empty((64, 256), dtype=np.float32))


def test_permutation_round_trip() -> None:
    x = np.arange(24 * 5, dtype=np.float32).reshape(24, 5)
    for heads in (1, 2, 3, 6):
        assert np.array_equal(unpermute_qk(permute_qk(x, heads), heads), x)
    assert not np.array_equal(unpermute_qk(x, 3), x)
    # within each head, llama.cpp interleaves the two rotary halves: rows (0, 2, 4, ...) of a
    # GGUF head are the first half of the HF head
    hf = unpermute_qk(x, 1)
    assert np.array_equal(hf[:12], x[0::2])
    assert np.array_equal(hf[12:], x[1::2])


# -- the default model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2(default_gguf: Path):
    return load_model(default_gguf)


@pytest.fixture(scope="module")
def llama_vocab(default_gguf: Path):
    return llama_cpp.Llama(str(default_gguf), vocab_only=True, verbose=False)


def test_default_model_config(smollm2) -> None:
    cfg = smollm2.config
    assert cfg["model_type"] == "llama"
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"],
            cfg["num_key_value_heads"], cfg["intermediate_size"], cfg["vocab_size"]) == (
        30, 576, 9, 3, 1536, 49152)
    assert cfg["rope_theta"] == 100000.0
    assert cfg["tie_word_embeddings"] is True
    assert "lm_head.weight" not in smollm2.weights
    assert smollm2.weights["model.embed_tokens.weight"].shape == (49152, 576)
    assert smollm2.quantization == "Q4_1"
    tok = smollm2.tokenizer
    assert [tok.id_to_token(i) for i in smollm2.eos_token_ids] == ["<|im_end|>", "<|endoftext|>"]
    assert smollm2.template.source == "gguf"
    prompt = smollm2.template.render([ChatMessage("user", "Hi")])
    assert prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


TOKENIZER_CASES = [
    "Hello world",
    "1234567890 and 3.14159, 2024-01-01",
    " leading space and trailing ",
    "naïve café — 你好世界 🎉🦙",
    "tabs\tand\nnewlines\n\n  indented\r\n",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "don't you'll we've I'M",
    "x²+y³=½ ٣٤ ⅷ",
    "   ",
    "a<|endoftext|>b<repo_name>c",
    "https://example.com/path?q=1&x=2",
    "def f(x):\n    return x**2  # comment",
]


@pytest.mark.parametrize("text", TOKENIZER_CASES)
def test_bpe_tokenizer_matches_llama_cpp(smollm2, llama_vocab, text: str) -> None:
    expected = llama_vocab.tokenize(text.encode(), add_bos=False, special=True)
    ids = smollm2.tokenizer.encode(text, add_special_tokens=False).ids
    assert ids == expected
    assert smollm2.tokenizer.decode(ids, skip_special_tokens=False) == text


def test_smollm_pre_tokenizer_splits_digits(smollm2) -> None:
    tok = smollm2.tokenizer
    ids = tok.encode("12345", add_special_tokens=False).ids
    assert [tok.id_to_token(i) for i in ids] == ["1", "2", "3", "4", "5"]


def _write_spm_gguf(path: Path, seed: int = 0) -> None:
    """A LLaMA/SentencePiece-style vocabulary (scores, byte tokens) in a vocab-only GGUF."""
    rng = random.Random(seed)
    corpus = ("the quick brown fox jumps over the lazy dog while singing and thinking about "
              "tokenizers nothing is faster than the speed of light hello world testing")
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    types = [2, 3, 3] + [6] * 256
    pieces = {"\u2581"} | set(corpus.replace(" ", ""))
    for word in corpus.split():
        word = "\u2581" + word
        for i in range(len(word)):
            for j in range(i + 2, min(len(word), i + 7) + 1):
                if rng.random() < 0.6:
                    pieces.add(word[i:j])
    ordered = sorted(pieces)
    tokens += ordered
    types += [1] * len(ordered)
    scores = [0.0] * 259 + [-rng.random() * 100 for _ in ordered]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_tensor("token_embd.weight", np.zeros((len(tokens), 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_sentencepiece_tokenizer_matches_llama_cpp(tmp_path: Path) -> None:
    path = tmp_path / "spm.gguf"
    _write_spm_gguf(path)
    ref = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    tok = tokenizer_from_gguf_vocab(vocab_from_gguf_fields(GGUFModel(path).field))
    cases = ["the quick brown fox", "hello world", "thinking about tokenizers",
             "Ünïcode ☃ xyz", "  two  spaces", "testing</s>the<s>", "nothing\nis faster", ""]
    for text in cases:
        expected = ref.tokenize(text.encode(), add_bos=True, special=True)
        assert tok.encode(text).ids == expected, text
    ids = tok.encode("Ünïcode ☃ the").ids
    assert tok.decode(ids) == "Ünïcode ☃ the"
    assert tok.id_to_token(ids[0]) == "<s>"  # SentencePiece models add BOS by default


# -- damaged files -------------------------------------------------------------------------


def test_truncated_gguf_is_a_clear_error(default_gguf: Path, tmp_path: Path) -> None:
    data = default_gguf.read_bytes()
    for cut in (3, 20, 1000, 3_000_000, len(data) - 10):
        bad = tmp_path / f"cut{cut}.gguf"
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelLoadError) as err:
            load_model(bad)
        message = str(err.value)
        assert str(bad) in message and "\n" not in message
        assert "truncated" in message or "damaged" in message or "empty" in message
        with pytest.raises(ModelLoadError):
            validate_gguf(bad)


def test_corrupted_gguf_header_is_a_clear_error(default_gguf: Path, tmp_path: Path) -> None:
    head = bytearray(default_gguf.read_bytes()[:200_000])
    head[8:16] = (10**12).to_bytes(8, "little")  # absurd tensor count
    bad = tmp_path / "count.gguf"
    bad.write_bytes(bytes(head))
    with pytest.raises(ModelLoadError, match="damaged"):
        GGUFFile(bad)
    head = bytearray(default_gguf.read_bytes()[:200_000])
    head[24:32] = (10**15).to_bytes(8, "little")  # first key's length runs off the end
    bad.write_bytes(bytes(head))
    with pytest.raises(ModelLoadError, match="damaged or truncated"):
        GGUFFile(bad)


def test_unsupported_architecture_is_named(tmp_path: Path) -> None:
    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "mamba")
    w.add_tensor("token_embd.weight", np.zeros((4, 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelLoadError, match="'mamba' is not supported"):
        load_model(tmp_path / "m.gguf")
