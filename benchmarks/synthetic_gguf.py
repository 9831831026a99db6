"""Write a GGUF of a real model's shape with random weights, for speed and memory benchmarks.

Speed and memory do not depend on what the weights say, so a file with the tensor shapes,
quantisation and tokenizer of a 7B model measures what the real one would. The tokenizer and
chat template are the bundled SmolLM2's (its vocabulary padded with unused tokens to the
preset's size, or cut to it with the merges that stay within it), so llama.cpp loads and
chats with the file like with the real model.

    .venv/bin/python benchmarks/synthetic_gguf.py llama-7b -q Q4_0 -o /tmp/llama-7b-q4_0.gguf
    .venv/bin/python benchmarks/synthetic_gguf.py --list

Tensors are written one at a time, straight from random blocks of the chosen type (no float
copy of the model is ever made), so a 7B file needs a few hundred MB of memory. The same seed
writes the same file. F32/F16 weights are normal with std 0.02; quantised blocks hold random
quants under a fixed scale, which is a valid block of that type (llama.cpp reads it as it
reads any other).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import gguf  # noqa: E402
from gguf import GGMLQuantizationType as Q  # noqa: E402

from engine.models import default_model_path  # noqa: E402


@dataclass(frozen=True)
class Preset:
    """A model's shape, as its GGUF metadata gives it."""

    arch: str
    vocab: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_ff: int
    context: int
    rope_base: float
    rms_eps: float = 1e-5
    qkv_bias: bool = False
    tied: bool = False
    size_label: str = ""


PRESETS: dict[str, Preset] = {
    "llama-7b": Preset("llama", 32000, 4096, 32, 32, 32, 11008, 4096, 10000.0, 1e-5,
                       size_label="7B"),
    "llama3-8b": Preset("llama", 128256, 4096, 32, 32, 8, 14336, 8192, 500000.0, 1e-5,
                        size_label="8B"),
    "qwen2.5-7b": Preset("qwen2", 152064, 3584, 28, 28, 4, 18944, 32768, 1000000.0, 1e-6,
                         qkv_bias=True, size_label="7B"),
    "tiny": Preset("llama", 49152, 256, 2, 4, 2, 512, 2048, 10000.0, 1e-5, tied=True,
                   size_label="tiny"),
    "tiny-qwen2": Preset("qwen2", 49280, 256, 2, 4, 2, 512, 2048, 1000000.0, 1e-6,
                         qkv_bias=True, size_label="tiny"),
}
"""Shapes of Llama-2 7B, Llama-3 8B and Qwen2.5 7B, and tiny ones for tests."""

QUANTS = {"F32": Q.F32, "F16": Q.F16, "Q8_0": Q.Q8_0, "Q4_0": Q.Q4_0, "Q4_K_M": Q.Q4_K}
"""What `--quant` takes; Q4_K_M is Q4_K with Q6_K where llama.cpp's Q4_K_M puts it."""

FILE_TYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q8_0": 7, "Q4_K_M": 15}
"""`general.file_type` (llama_ftype) for each choice."""

WEIGHT_STD = 0.02


def tensors(p: Preset) -> Iterator[tuple[str, tuple[int, ...], str]]:
    """(GGUF name, numpy shape, role) of every tensor, in llama.cpp's converter's order."""
    head_dim = p.d_model // p.n_heads
    kv = p.n_kv_heads * head_dim
    yield "token_embd.weight", (p.vocab, p.d_model), "embed"
    for i in range(p.n_layers):
        b = f"blk.{i}"
        yield f"{b}.attn_norm.weight", (p.d_model,), "norm"
        yield f"{b}.attn_q.weight", (p.d_model, p.d_model), "matrix"
        yield f"{b}.attn_k.weight", (kv, p.d_model), "matrix"
        yield f"{b}.attn_v.weight", (kv, p.d_model), "attn_v"
        if p.qkv_bias:
            yield f"{b}.attn_q.bias", (p.d_model,), "bias"
            yield f"{b}.attn_k.bias", (kv,), "bias"
            yield f"{b}.attn_v.bias", (kv,), "bias"
        yield f"{b}.attn_output.weight", (p.d_model, p.d_model), "matrix"
        yield f"{b}.ffn_norm.weight", (p.d_model,), "norm"
        yield f"{b}.ffn_gate.weight", (p.d_ff, p.d_model), "matrix"
        yield f"{b}.ffn_up.weight", (p.d_ff, p.d_model), "matrix"
        yield f"{b}.ffn_down.weight", (p.d_model, p.d_ff), "ffn_down"
    yield "output_norm.weight", (p.d_model,), "norm"
    if not p.tied:
        yield "output.weight", (p.vocab, p.d_model), "output"


def tensor_type(quant: str, role: str, name: str, n_layers: int) -> Q:
    """The type llama.cpp's quantiser gives this tensor for `quant`."""
    if role in ("norm", "bias"):
        return Q.F32
    if quant != "Q4_K_M":
        return QUANTS[quant]
    if role == "output":
        return Q.Q6_K
    if role in ("attn_v", "ffn_down"):
        layer = int(name.split(".")[1])
        more_bits = (layer < n_layers // 8 or layer >= 7 * n_layers // 8
                     or (layer - n_layers // 8) % 3 == 2)
        return Q.Q6_K if more_bits else Q.Q4_K
    return Q.Q4_K


def _f16_bytes(value: float) -> np.ndarray:
    return np.array([value], dtype=np.float16).view(np.uint8)


def random_tensor(shape: tuple[int, ...], qtype: Q, role: str,
                  rng: np.random.Generator) -> np.ndarray:
    """Random data of `qtype` for a tensor of `shape` (uint8 blocks for quantised types)."""
    if qtype in (Q.F32, Q.F16):
        if role == "norm":
            data = 1.0 + rng.standard_normal(shape, dtype=np.float32) * 0.1
        else:
            data = rng.standard_normal(shape, dtype=np.float32) * WEIGHT_STD
        return data.astype(np.float16 if qtype == Q.F16 else np.float32)
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    rows, cols = shape[0], int(np.prod(shape[1:]))
    if cols % block:
        raise ValueError(f"{cols} columns are not a multiple of {qtype.name}'s block ({block})")
    data = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    # scales that keep each weight's spread near WEIGHT_STD
    if qtype == Q.Q8_0:  # d (f16), 32 x int8 (std ~74)
        data[..., 0:2] = _f16_bytes(WEIGHT_STD / 74)
    elif qtype == Q.Q4_0:  # d (f16), 32 x 4-bit (std ~4.6)
        data[..., 0:2] = _f16_bytes(WEIGHT_STD / 4.6)
    elif qtype == Q.Q4_K:  # d, dmin (f16), 12 bytes of 6-bit scales and mins, 128 bytes quants
        data[..., 0:2] = _f16_bytes(WEIGHT_STD / (4.6 * 32))
        data[..., 2:4] = _f16_bytes(WEIGHT_STD / (8 * 32))
    elif qtype == Q.Q6_K:  # 128 + 64 bytes quants, 16 x int8 scales, d (f16)
        data[..., 192:208] = rng.integers(1, 32, size=(rows, cols // block, 16), dtype=np.uint8)
        data[..., 208:210] = _f16_bytes(WEIGHT_STD / (18.5 * 16))
    else:
        raise ValueError(f"cannot write {qtype.name}")
    return data.reshape(rows, -1)


TOKENIZER_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
                "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_space_prefix",
                "tokenizer.chat_template")
"""The GGUF keys of the tokenizer and chat template that the synthetic model takes over."""


def _tokenizer_fields(source: Path | None = None) -> dict[str, object]:
    reader = gguf.GGUFReader(str(source or default_model_path()))
    return {key: reader.fields[key].contents() for key in TOKENIZER_KEYS}


def write_tokenizer(out: Path, source: Path | None = None) -> Path:
    """A GGUF holding only the tokenizer and chat template of `source` (default: the bundled
    model): about 2 MB, for machines without the bundled model (benchmarks/gpu_check.sh)."""
    fields = _tokenizer_fields(source)
    writer = gguf.GGUFWriter(out, "llama")
    for key, value in fields.items():
        if key == "tokenizer.ggml.token_type":
            writer.add_token_types(value)  # type: ignore[arg-type]
        elif isinstance(value, list):
            writer.add_array(key, value)
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        else:
            writer.add_string(key, str(value))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    return out


def write(preset_name: str, quant: str, out: Path, seed: int = 0,
          progress: bool = True, tokenizer: Path | None = None) -> Path:
    """Write the synthetic model; returns `out`. `tokenizer`: the GGUF whose tokenizer and chat
    template it takes (default: the bundled model)."""
    p = PRESETS[preset_name]
    if quant not in QUANTS:
        raise ValueError(f"unknown quant {quant!r} (choose one of: {', '.join(QUANTS)})")
    tok = _tokenizer_fields(tokenizer)
    tokens = list(tok["tokenizer.ggml.tokens"])  # type: ignore[call-overload]
    types = list(tok["tokenizer.ggml.token_type"])  # type: ignore[call-overload]
    merges = list(tok["tokenizer.ggml.merges"])  # type: ignore[call-overload]
    if len(tokens) > p.vocab:  # Llama-2's 32,000: keep the first tokens and their merges
        tokens, types = tokens[: p.vocab], types[: p.vocab]
        kept = set(tokens)
        merges = [m for m in merges
                  if (parts := m.split(" ")) and len(parts) == 2 and parts[0] in kept
                  and parts[1] in kept and parts[0] + parts[1] in kept]
    pad = p.vocab - len(tokens)
    tokens += [f"<|synthetic_pad_{i}|>" for i in range(pad)]
    types += [int(gguf.TokenType.UNUSED)] * pad

    writer = gguf.GGUFWriter(out, p.arch)
    a = p.arch
    writer.add_name(f"synthetic {preset_name} {quant}")
    writer.add_basename(f"synthetic-{preset_name}")
    writer.add_size_label(p.size_label)
    writer.add_file_type(FILE_TYPES[quant])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(p.context)
    writer.add_embedding_length(p.d_model)
    writer.add_block_count(p.n_layers)
    writer.add_feed_forward_length(p.d_ff)
    writer.add_head_count(p.n_heads)
    writer.add_head_count_kv(p.n_kv_heads)
    writer.add_rope_freq_base(p.rope_base)
    writer.add_layer_norm_rms_eps(p.rms_eps)
    writer.add_rope_dimension_count(p.d_model // p.n_heads)
    writer.add_vocab_size(p.vocab)
    writer.add_tokenizer_model(str(tok["tokenizer.ggml.model"]))
    writer.add_tokenizer_pre(str(tok["tokenizer.ggml.pre"]))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(int(tok["tokenizer.ggml.bos_token_id"]))  # type: ignore[call-overload]
    writer.add_eos_token_id(int(tok["tokenizer.ggml.eos_token_id"]))  # type: ignore[call-overload]
    writer.add_unk_token_id(int(tok["tokenizer.ggml.unknown_token_id"]))  # type: ignore[call-overload]
    writer.add_pad_token_id(int(tok["tokenizer.ggml.padding_token_id"]))  # type: ignore[call-overload]
    writer.add_add_bos_token(bool(tok["tokenizer.ggml.add_bos_token"]))
    writer.add_add_space_prefix(bool(tok["tokenizer.ggml.add_space_prefix"]))
    writer.add_chat_template(str(tok["tokenizer.chat_template"]))
    assert writer.arch == a

    plan = []
    for name, shape, role in tensors(p):
        qtype = tensor_type(quant, role, name, p.n_layers)
        n = int(np.prod(shape))
        if qtype in (Q.F32, Q.F16):
            nbytes = n * (4 if qtype == Q.F32 else 2)
            dtype = np.dtype(np.float32 if qtype == Q.F32 else np.float16)
            writer.add_tensor_info(name, shape, dtype, nbytes)
        else:
            block, size = gguf.GGML_QUANT_SIZES[qtype]
            nbytes = n // block * size
            byte_shape = (shape[0], int(np.prod(shape[1:])) // block * size)
            writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=qtype)
        plan.append((name, shape, role, qtype, nbytes))
    total = sum(item[-1] for item in plan)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    start = shown = time.monotonic()
    done = 0
    for index, (_name, shape, role, qtype, nbytes) in enumerate(plan):
        rng = np.random.default_rng([seed, index])
        writer.write_tensor_data(random_tensor(shape, qtype, role, rng))
        done += nbytes
        now = time.monotonic()
        if progress and (now - shown >= 0.5 or index == len(plan) - 1):
            shown = now
            rate = done / max(now - start, 1e-6) / 2**20
            print(f"\r{out.name}: tensor {index + 1}/{len(plan)}, {done / 2**30:.2f} of "
                  f"{total / 2**30:.2f} GiB, {rate:.0f} MiB/s, "
                  f"{(total - done) / 2**20 / max(rate, 1e-6):.0f} s left ", end="",
                  file=sys.stderr, flush=True)
    writer.close()
    if progress:
        print(file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", nargs="?", choices=sorted(PRESETS))
    parser.add_argument("-q", "--quant", default="Q4_0", choices=list(QUANTS))
    parser.add_argument("-o", "--output", type=Path, help="the file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tokenizer", type=Path,
                        help="GGUF to take the tokenizer from (default: the bundled model)")
    parser.add_argument("--write-tokenizer", type=Path, metavar="FILE",
                        help="only write the tokenizer (a small GGUF) to FILE")
    parser.add_argument("--list", action="store_true", help="list the presets")
    args = parser.parse_args(argv)
    if args.write_tokenizer:
        print(write_tokenizer(args.write_tokenizer, args.tokenizer))
        return 0
    if args.list or not args.preset:
        for name, p in PRESETS.items():
            n = sum(int(np.prod(s)) for _n, s, _r in tensors(p))
            print(f"{name:12} {p.arch:6} {n / 1e9:6.2f}B params  d={p.d_model} "
                  f"layers={p.n_layers} heads={p.n_heads}/{p.n_kv_heads} ff={p.d_ff} "
                  f"vocab={p.vocab} ctx={p.context}")
        return 0
    out = args.output or Path(f"synthetic-{args.preset}-{args.quant.lower()}.gguf")
    write(args.preset, args.quant, out, args.seed, tokenizer=args.tokenizer)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
