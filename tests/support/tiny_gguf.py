"""Tiny LLaMA GGUF files written with gguf.GGUFWriter, as llama.cpp's converter writes them,
with the bundled model's tokenizer (its tokens renamed where a test needs other specials)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from engine.models import default_model_path

LONG_FACTORS = np.geomspace(1.0, 40.0, 64).astype(np.float32)
SHORT_FACTORS = np.linspace(1.0, 1.5, 64).astype(np.float32)
"""LongRoPE factors for the tiny models (the first head_dim / 2 of them)."""


def bundled_tokenizer() -> dict[str, object]:
    """The bundled SmolLM2's tokenizer fields (GGUF keys -> values)."""
    reader = gguf.GGUFReader(str(default_model_path()))
    keys = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
            "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id")
    return {key: reader.fields[key].contents() for key in keys}


def renamed_vocabulary(tok: dict[str, object], renames: dict[int, str] | None
                       ) -> tuple[list[str], list[int]]:
    """The bundled tokens and token types, with `renames` (id -> text) made control tokens."""
    tokens = list(tok["tokenizer.ggml.tokens"])  # type: ignore[call-overload]
    types = list(tok["tokenizer.ggml.token_type"])  # type: ignore[call-overload]
    for i, text in (renames or {}).items():
        tokens[i] = text
        types[i] = int(gguf.TokenType.CONTROL)
    return tokens, types


def add_tokenizer(writer: gguf.GGUFWriter, tok: dict[str, object], tokens: list[str],
                  types: list[int]) -> None:
    """The bundled model's GPT-2 tokenizer fields, with `tokens` and `types`."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(str(tok["tokenizer.ggml.pre"]))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(list(tok["tokenizer.ggml.merges"]))  # type: ignore[call-overload]
    writer.add_bos_token_id(int(tok["tokenizer.ggml.bos_token_id"]))  # type: ignore[call-overload]
    writer.add_eos_token_id(int(tok["tokenizer.ggml.eos_token_id"]))  # type: ignore[call-overload]
    writer.add_add_bos_token(False)


def write_llama_gguf(path: Path, *, renames: dict[int, str] | None = None,
                     template: str | None = None, zero_logits: bool = False,
                     seed: int = 0, arch: str = "llama", layers: int = 1,
                     head_dim: int | None = None, qkv_bias: bool = False,
                     qk_norm: bool = False, rope_freqs: bool = False,
                     untied: bool = False, sliding_window: int | None = None,
                     longrope: bool = False, rope_dims: int | None = None,
                     block_count: int | None = None, rms_eps: float = 1e-5) -> Path:
    """A small LLaMA-layout GGUF (d=64, 4 heads, 2 kv heads) with the bundled tokenizer, written
    as llama.cpp's converter writes `arch` ("llama", "qwen2", "qwen3").

    `renames`: token id -> new text (made a control token); `template`: the chat template to
    embed (None: none); `zero_logits`: the final norm is zero, so every logit is 0 and greedy
    picks token 0; `head_dim`: other than d/heads (written as attention.key_length);
    `qkv_bias`, `qk_norm`, `rope_freqs` (Llama 3.1's frequency factors), `untied`: those
    tensors too; `block_count`, `rms_eps`: metadata other than the tensors say (crafted
    files); `rope_dims`: rotate only that many dimensions of each head (partial rotary);
    `longrope`: Phi-3's LongRoPE (context 2048, pretrained 512), as its converter
    writes it."""
    tok = bundled_tokenizer()
    tokens, types = renamed_vocabulary(tok, renames)
    vocab, d, heads, kv, ff = len(tokens), 64, 4, 2, 128
    hd = head_dim or d // heads
    writer = gguf.GGUFWriter(path, arch)
    writer.add_context_length(2048 if longrope else 256)
    writer.add_embedding_length(d)
    writer.add_block_count(layers if block_count is None else block_count)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(rms_eps)
    writer.add_rope_dimension_count(rope_dims or hd)
    if sliding_window:
        writer.add_sliding_window(sliding_window)
    if head_dim:
        writer.add_key_length(hd)
        writer.add_value_length(hd)
    writer.add_vocab_size(vocab)
    add_tokenizer(writer, tok, tokens, types)
    if template is not None:
        writer.add_chat_template(template)
    rng = np.random.default_rng(seed)

    def rand(*shape: int, scale: float = 0.05) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    writer.add_tensor("token_embd.weight", rand(vocab, d, scale=0.3))
    if rope_freqs:
        writer.add_tensor("rope_freqs.weight", rng.uniform(1.0, 8.0, hd // 2).astype(np.float32))
    if longrope:
        writer.add_rope_scaling_orig_ctx_len(512)
        writer.add_rope_scaling_attn_factors(float(np.sqrt(1 + np.log(4) / np.log(512))))
        writer.add_tensor("rope_factors_long.weight", LONG_FACTORS[: hd // 2])
        writer.add_tensor("rope_factors_short.weight", SHORT_FACTORS[: hd // 2])
    for i in range(layers):
        b = f"blk.{i}."
        writer.add_tensor(b + "attn_norm.weight", 1 + rand(d))
        q, k, v = (rand(heads * hd, d, scale=0.2), rand(kv * hd, d, scale=0.2),
                   rand(kv * hd, d, scale=0.2))
        if arch == "phi3":  # q/k/v fused, as Phi-3 is written
            writer.add_tensor(b + "attn_qkv.weight", np.concatenate([q, k, v]))
        else:
            writer.add_tensor(b + "attn_q.weight", q)
            writer.add_tensor(b + "attn_k.weight", k)
            writer.add_tensor(b + "attn_v.weight", v)
        if qkv_bias:
            writer.add_tensor(b + "attn_q.bias", rand(heads * hd, scale=0.5))
            writer.add_tensor(b + "attn_k.bias", rand(kv * hd, scale=0.5))
            writer.add_tensor(b + "attn_v.bias", rand(kv * hd, scale=0.5))
        if qk_norm:
            writer.add_tensor(b + "attn_q_norm.weight", 1 + rand(hd, scale=0.3))
            writer.add_tensor(b + "attn_k_norm.weight", 1 + rand(hd, scale=0.3))
        writer.add_tensor(b + "attn_output.weight", rand(d, heads * hd, scale=0.2))
        writer.add_tensor(b + "ffn_norm.weight", 1 + rand(d))
        gate, up = rand(ff, d, scale=0.2), rand(ff, d, scale=0.2)
        if arch == "phi3":  # gate and up fused, gate first
            writer.add_tensor(b + "ffn_up.weight", np.concatenate([gate, up]))
        else:
            writer.add_tensor(b + "ffn_gate.weight", gate)
            writer.add_tensor(b + "ffn_up.weight", up)
        writer.add_tensor(b + "ffn_down.weight", rand(d, ff, scale=0.2))
    norm = np.zeros(d, np.float32) if zero_logits else 1 + rand(d)
    writer.add_tensor("output_norm.weight", norm)
    if untied:
        writer.add_tensor("output.weight", rand(vocab, d, scale=0.3))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_gpt2_gguf(path: Path, *, untied: bool, seed: int = 0) -> Path:
    """A 2-layer GPT-2 (d=64) with the bundled tokenizer; `untied`: an output.weight of its
    own (tie_word_embeddings: false), else the LM head is the token embeddings."""
    tok = bundled_tokenizer()
    tokens = list(tok["tokenizer.ggml.tokens"])  # type: ignore[call-overload]
    vocab, d, heads, ff, ctx, layers = len(tokens), 64, 4, 256, 128, 2
    writer = gguf.GGUFWriter(path, "gpt2")
    writer.add_context_length(ctx)
    writer.add_embedding_length(d)
    writer.add_feed_forward_length(ff)
    writer.add_block_count(layers)
    writer.add_head_count(heads)
    writer.add_layer_norm_eps(1e-5)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(str(tok["tokenizer.ggml.pre"]))
    writer.add_token_list(tokens)
    writer.add_token_types(list(tok["tokenizer.ggml.token_type"]))  # type: ignore[call-overload]
    writer.add_token_merges(list(tok["tokenizer.ggml.merges"]))  # type: ignore[call-overload]
    writer.add_eos_token_id(int(tok["tokenizer.ggml.eos_token_id"]))  # type: ignore[call-overload]
    rng = np.random.default_rng(seed)

    def rand(*shape: int, scale: float = 0.05) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    writer.add_tensor("token_embd.weight", rand(vocab, d))
    writer.add_tensor("position_embd.weight", rand(ctx, d))
    for i in range(layers):
        b = f"blk.{i}."
        for name, shape in (("attn_norm", (d,)), ("ffn_norm", (d,))):
            writer.add_tensor(b + name + ".weight", 1 + rand(*shape))
            writer.add_tensor(b + name + ".bias", rand(*shape))
        for name, (n_out, n_in) in (("attn_qkv", (3 * d, d)), ("attn_output", (d, d)),
                                    ("ffn_up", (ff, d)), ("ffn_down", (d, ff))):
            writer.add_tensor(b + name + ".weight", rand(n_out, n_in, scale=0.1))
            writer.add_tensor(b + name + ".bias", rand(n_out))
    writer.add_tensor("output_norm.weight", 1 + rand(d))
    writer.add_tensor("output_norm.bias", rand(d))
    if untied:
        writer.add_tensor("output.weight", rand(vocab, d, scale=0.5))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_gemma_gguf(path: Path, *, arch: str, layers: int, sliding_window: int = 4,
                     seed: int = 0, renames: dict[int, str] | None = None) -> Path:
    """A small Gemma 2 or Gemma 3 GGUF (d=64, 4 heads of 32, 2 kv heads) with the bundled
    tokenizer, written as llama.cpp's converter writes them: RMSNorm weights stored plus one,
    no q/k permutation, soft-capping (Gemma 2) or q/k norms and a sliding-layer rope base
    (Gemma 3), tied embeddings. `renames`: token id -> new text (made a control token)."""
    tok = bundled_tokenizer()
    tokens, types = renamed_vocabulary(tok, renames)
    vocab, d, heads, kv, hd, ff = len(tokens), 64, 4, 2, 32, 128
    writer = gguf.GGUFWriter(path, arch)
    writer.add_context_length(256)
    writer.add_embedding_length(d)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_key_length(hd)
    writer.add_value_length(hd)
    writer.add_sliding_window(sliding_window)
    if arch == "gemma2":
        writer.add_attn_logit_softcapping(20.0)
        writer.add_final_logit_softcapping(15.0)
    else:
        writer.add_rope_freq_base(1_000_000.0)
    writer.add_vocab_size(vocab)
    add_tokenizer(writer, tok, tokens, types)
    rng = np.random.default_rng(seed)

    def rand(*shape: int, scale: float = 0.05) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def norm(n: int) -> np.ndarray:  # the converter writes Gemma's norms as 1 + weight
        return 1 + rand(n, scale=0.2)

    writer.add_tensor("token_embd.weight", rand(vocab, d, scale=0.1))
    for i in range(layers):
        b = f"blk.{i}."
        writer.add_tensor(b + "attn_norm.weight", norm(d))
        writer.add_tensor(b + "attn_q.weight", rand(heads * hd, d, scale=0.2))
        writer.add_tensor(b + "attn_k.weight", rand(kv * hd, d, scale=0.2))
        writer.add_tensor(b + "attn_v.weight", rand(kv * hd, d, scale=0.2))
        if arch == "gemma3":
            writer.add_tensor(b + "attn_q_norm.weight", norm(hd))
            writer.add_tensor(b + "attn_k_norm.weight", norm(hd))
        writer.add_tensor(b + "attn_output.weight", rand(d, heads * hd, scale=0.2))
        writer.add_tensor(b + "post_attention_norm.weight", norm(d))
        writer.add_tensor(b + "ffn_norm.weight", norm(d))
        writer.add_tensor(b + "ffn_gate.weight", rand(ff, d, scale=0.2))
        writer.add_tensor(b + "ffn_up.weight", rand(ff, d, scale=0.2))
        writer.add_tensor(b + "ffn_down.weight", rand(d, ff, scale=0.2))
        writer.add_tensor(b + "post_ffw_norm.weight", norm(d))
    writer.add_tensor("output_norm.weight", norm(d))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
