"""Export a LLaMA-family model to an ONNX decoder with a KV cache, using only `onnx.helper`.

The graph follows the convention of optimum and the onnxruntime-genai model builder:

- inputs `input_ids`, `attention_mask`, `position_ids` (int64) and
  `past_key_values.{i}.key/.value` (float32, `[batch, kv_heads, past, head_dim]`);
- outputs `logits` (`[batch, seq, vocab]`) and `present.{i}.key/.value`.

It is built from opset-23 operators (RMSNormalization, RotaryEmbedding, Attention with grouped
query heads). q/k/v and gate/up are fused into one matrix product each, the causal and padding
mask is computed inside the graph, and tied embeddings are shared by the lookup and the output
projection. Weights are float32, or int8 per output channel (DequantizeLinear) with `int8=True`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.convert import user_file_mode, write_configs
from engine.errors import BackendUnavailableError, LampchatError, ModelLoadError
from engine.files import parse_json, staged_folder
from engine.formats.loader import load_model
from engine.native.llama import LlamaConfig, rope_inv_freq
from engine.native.ops import rope_tables
from engine.native.phi3 import split_fused

Progress = Callable[[float, str], None]

OPSET = 23
IR_VERSION = 11
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
EXTERNAL_DATA_ABOVE = 64 * 2**20
"""Weights larger than this go to an external data file next to model.onnx: protobuf caps a
file at 2 GB, and onnxruntime maps external data instead of parsing it (measured on SmolLM2:
session peak RSS 681 MB instead of 878 MB, load 6.5 s instead of 10 s)."""


@dataclass
class OnnxExportResult:
    """What an export wrote."""

    out_dir: Path
    source_format: str
    quantization: str
    n_layers: int
    n_params: int
    bytes_written: int
    int8: bool


def _import_onnx() -> Any:
    try:
        import onnx  # optional
    except ImportError as exc:
        raise BackendUnavailableError(
            f"exporting to ONNX needs the onnx package (pip install 'lampchat[onnx]'): {exc}"
        ) from exc
    return onnx


class _GraphBuilder:
    """Collects nodes and initializers with unique names."""

    def __init__(self, onnx: Any, int8: bool) -> None:
        self.onnx = onnx
        self.helper = onnx.helper
        self.int8 = int8
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.n_weights = 0
        self._count = 0

    def name(self, base: str) -> str:
        self._count += 1
        return f"{base}_{self._count}"

    def node(self, op: str, inputs: list[str], n_out: int = 1, base: str | None = None,
             **attrs: Any) -> Any:
        outs = [self.name(base or op.lower()) for _ in range(n_out)]
        self.nodes.append(self.helper.make_node(op, inputs, outs, name=self.name(op), **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper  # optional (the onnx extra)

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def ints(self, values: list[int]) -> str:
        return self.const(self.name("ints"), np.asarray(values, dtype=np.int64))

    def matmul(self, x: str, weight: np.ndarray, name: str) -> str:
        """`x @ weight.T` for an HF `(out, in)` weight, float32 or int8 per output channel."""
        self.n_weights += int(weight.size)
        w_t = np.ascontiguousarray(weight.T.astype(np.float32))  # (in, out)
        if not self.int8:
            return self.node("MatMul", [x, self.const(name, w_t)])
        scale = np.abs(w_t).max(axis=0) / 127.0
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        q = np.clip(np.rint(w_t / scale), -127, 127).astype(np.int8)
        w = self.node("DequantizeLinear",
                      [self.const(name + ".q", q), self.const(name + ".scale", scale)], axis=1)
        return self.node("MatMul", [x, w])


def _rope_tables(config: dict[str, Any], head_dim: int, n_pos: int) -> tuple[np.ndarray, ...]:

    cfg = LlamaConfig.from_hf(config)
    return rope_tables(head_dim, n_pos, cfg.rope_theta, rope_inv_freq(cfg))


def build_llama_graph(
    config: dict[str, Any],
    weights: dict[str, np.ndarray],
    int8: bool = False,
    progress: Callable[[float], None] | None = None,
) -> Any:
    """An `onnx.ModelProto` for the LLaMA model `config` with HF-named `weights` (consumed)."""
    onnx = _import_onnx()
    from onnx import TensorProto  # optional (the onnx extra)
    from onnx import helper as oh  # optional (the onnx extra)

    cfg = LlamaConfig.from_hf(config)
    d, hd, nq, nkv = cfg.hidden_size, cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
    q_dim, kv_dim = nq * hd, nkv * hd
    g = _GraphBuilder(onnx, int8)

    def take(name: str, shape: tuple[int, ...]) -> np.ndarray:
        arr = weights.pop(name, None)
        if arr is None:
            raise ModelLoadError(f"the model has no weight {name}")
        if tuple(arr.shape) != shape:
            raise ModelLoadError(f"weight {name} has shape {tuple(arr.shape)}, expected {shape}")
        return np.asarray(arr, dtype=np.float32)

    inputs = [
        oh.make_tensor_value_info("input_ids", TensorProto.INT64,
                                  ["batch_size", "sequence_length"]),
        oh.make_tensor_value_info("attention_mask", TensorProto.INT64,
                                  ["batch_size", "total_sequence_length"]),
        oh.make_tensor_value_info("position_ids", TensorProto.INT64,
                                  ["batch_size", "sequence_length"]),
    ]
    outputs = [oh.make_tensor_value_info("logits", TensorProto.FLOAT,
                                         ["batch_size", "sequence_length", cfg.vocab_size])]
    for i in range(cfg.n_layers):
        for kind in ("key", "value"):
            inputs.append(oh.make_tensor_value_info(
                f"past_key_values.{i}.{kind}", TensorProto.FLOAT,
                ["batch_size", nkv, "past_sequence_length", hd]))
            outputs.append(oh.make_tensor_value_info(
                f"present.{i}.{kind}", TensorProto.FLOAT,
                ["batch_size", nkv, "total_sequence_length", hd]))

    # The mask: key j is visible to query i (at absolute position past + i) when j <= past + i
    # and attention_mask[b, j] is 1. Shape [batch, 1, seq, total].
    total = g.node("Gather", [g.node("Shape", ["attention_mask"]), g.ints([1])], axis=0)
    seq = g.node("Gather", [g.node("Shape", ["input_ids"]), g.ints([1])], axis=0)
    past = g.node("Sub", [total, seq])
    zero, one = g.ints([0]), g.ints([1])
    scalar = g.ints([])  # shape [] for Reshape to a scalar

    def to_scalar(t: str) -> str:
        return g.node("Reshape", [t, scalar])

    q_pos = g.node("Range", [to_scalar(past), to_scalar(total), to_scalar(one)])
    k_pos = g.node("Range", [to_scalar(zero), to_scalar(total), to_scalar(one)])
    causal = g.node("LessOrEqual", [g.node("Unsqueeze", [k_pos, zero]),
                                    g.node("Unsqueeze", [q_pos, one])])  # [seq, total]
    padding = g.node("Unsqueeze", [g.node("Cast", ["attention_mask"], to=TensorProto.BOOL),
                                   g.ints([1, 2])])  # [batch, 1, 1, total]
    mask = g.node("And", [causal, padding], base="attn_mask")

    cos, sin = _rope_tables(config, hd, cfg.max_positions)
    cos_name, sin_name = g.const("rope.cos", cos), g.const("rope.sin", sin)
    eps = float(cfg.rms_norm_eps)

    embed = take("model.embed_tokens.weight", (cfg.vocab_size, d))
    embed_name = g.const("model.embed_tokens.weight", embed)
    g.n_weights += int(embed.size)
    x = g.node("Gather", [embed_name, "input_ids"], axis=0, base="embeds")
    split_qkv = g.ints([q_dim, kv_dim, kv_dim])
    f = cfg.intermediate_size
    split_gu = g.ints([f, f])
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        norm1 = g.const(p + "input_layernorm.weight", take(p + "input_layernorm.weight", (d,)))
        g.n_weights += 2 * d  # both norms of the layer
        h = g.node("RMSNormalization", [x, norm1], epsilon=eps, axis=-1)
        wqkv = np.concatenate([take(p + "self_attn.q_proj.weight", (q_dim, d)),
                               take(p + "self_attn.k_proj.weight", (kv_dim, d)),
                               take(p + "self_attn.v_proj.weight", (kv_dim, d))])
        qkv = g.matmul(h, wqkv, p + "self_attn.qkv_proj.weight")
        if cfg.attention_bias:
            bias = np.concatenate([_bias(weights, p + f"self_attn.{n}_proj.bias", size)
                                   for n, size in (("q", q_dim), ("k", kv_dim), ("v", kv_dim))])
            qkv = g.node("Add", [qkv, g.const(p + "self_attn.qkv_proj.bias", bias)])
        q, k, v = g.node("Split", [qkv, split_qkv], n_out=3, axis=-1)
        q = g.node("RotaryEmbedding", [q, cos_name, sin_name, "position_ids"], num_heads=nq)
        k = g.node("RotaryEmbedding", [k, cos_name, sin_name, "position_ids"], num_heads=nkv)
        attn = g.name("attn")
        g.nodes.append(oh.make_node(
            "Attention",
            [q, k, v, mask, f"past_key_values.{i}.key", f"past_key_values.{i}.value"],
            [attn, f"present.{i}.key", f"present.{i}.value"],
            name=g.name("Attention"), q_num_heads=nq, kv_num_heads=nkv,
            scale=float(1.0 / np.sqrt(hd)),
        ))
        o = g.matmul(attn, take(p + "self_attn.o_proj.weight", (d, q_dim)),
                     p + "self_attn.o_proj.weight")
        if cfg.attention_bias:
            o = g.node("Add", [o, g.const(p + "self_attn.o_proj.bias",
                                          _bias(weights, p + "self_attn.o_proj.bias", d))])
        x = g.node("Add", [x, o], base="residual")
        norm2 = g.const(p + "post_attention_layernorm.weight",
                        take(p + "post_attention_layernorm.weight", (d,)))
        h = g.node("RMSNormalization", [x, norm2], epsilon=eps, axis=-1)
        w_gu = np.concatenate([take(p + "mlp.gate_proj.weight", (f, d)),
                               take(p + "mlp.up_proj.weight", (f, d))])
        gu = g.matmul(h, w_gu, p + "mlp.gate_up_proj.weight")
        if cfg.mlp_bias:
            bias = np.concatenate([_bias(weights, p + "mlp.gate_proj.bias", f),
                                   _bias(weights, p + "mlp.up_proj.bias", f)])
            gu = g.node("Add", [gu, g.const(p + "mlp.gate_up_proj.bias", bias)])
        gate, up = g.node("Split", [gu, split_gu], n_out=2, axis=-1)
        act = g.node("Mul", [g.node("Mul", [gate, g.node("Sigmoid", [gate])]), up])
        down = g.matmul(act, take(p + "mlp.down_proj.weight", (d, f)), p + "mlp.down_proj.weight")
        if cfg.mlp_bias:
            down = g.node("Add", [down, g.const(p + "mlp.down_proj.bias",
                                                _bias(weights, p + "mlp.down_proj.bias", d))])
        x = g.node("Add", [x, down], base="residual")
        if progress:
            progress((i + 1) / (cfg.n_layers + 1))
    norm = g.const("model.norm.weight", take("model.norm.weight", (d,)))
    h = g.node("RMSNormalization", [x, norm], epsilon=eps, axis=-1)
    lm_head = weights.pop("lm_head.weight", None)
    if cfg.tie_word_embeddings or lm_head is None:
        # logits = h @ embed.T, sharing the embedding matrix (Gemm wants 2-D input)
        flat = g.node("Reshape", [h, g.ints([-1, d])])
        logits2d = g.node("Gemm", [flat, embed_name], transB=1)
        shape = g.node("Concat", [g.node("Slice", [g.node("Shape", [h]), zero, g.ints([2])]),
                                  g.ints([cfg.vocab_size])], axis=0)
        g.nodes.append(oh.make_node("Reshape", [logits2d, shape], ["logits"],
                                    name=g.name("Reshape")))
    else:
        if tuple(lm_head.shape) != (cfg.vocab_size, d):
            raise ModelLoadError(f"weight lm_head.weight has shape {tuple(lm_head.shape)}")
        logits = g.matmul(h, np.asarray(lm_head, np.float32), "lm_head.weight")
        g.nodes.append(oh.make_node("Identity", [logits], ["logits"], name=g.name("Identity")))
    graph = oh.make_graph(g.nodes, "lampchat_llama", inputs, outputs, g.initializers)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", OPSET)],
                          producer_name="lampchat", ir_version=IR_VERSION)
    model.metadata_props.add(key="lampchat.n_params", value=str(g.n_weights + d))
    model.metadata_props.add(key="lampchat.weights", value="int8" if int8 else "float32")
    if progress:
        progress(1.0)
    return model


def _bias(weights: dict[str, np.ndarray], name: str, size: int) -> np.ndarray:
    arr = weights.pop(name, None)
    return np.zeros(size, np.float32) if arr is None else np.asarray(arr, np.float32)


def save_model(model: Any, folder: Path) -> None:
    """Write `model.onnx` into `folder`, its weights in `model.onnx.data` when they are large."""
    onnx = _import_onnx()
    size = sum(len(t.raw_data) for t in model.graph.initializer)
    path = folder / MODEL_FILE
    if size > EXTERNAL_DATA_ABOVE:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=DATA_FILE, size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


def export_onnx(
    src: str | Path,
    out_dir: str | Path,
    int8: bool = False,
    progress: Progress | None = None,
    force: bool = False,
) -> OnnxExportResult:
    """Export the LLaMA-family model at `src` (GGUF, safetensors, PyTorch) to an ONNX folder.

    Writes model.onnx (+ model.onnx.data with the weights when large), config.json,
    generation_config.json, tokenizer.json and tokenizer_config.json into `out_dir`, through a
    temporary folder, so that a failed export leaves nothing half-written.
    """
    _import_onnx()

    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise LampchatError(f"output path exists and is not a folder: {out}")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise LampchatError(f"output folder is not empty: {out} (use --force to overwrite)")
    src_path = Path(src).expanduser()

    def report(fraction: float, what: str) -> None:
        if progress is not None:
            progress(fraction, what)

    report(0.0, f"reading {src_path.name}")
    loaded = load_model(src_path, lambda f, w: report(0.5 * f, w), np.float32)
    config = exportable_config(loaded.config, loaded.weights, src_path)
    if loaded.tokenizer is None:
        raise ModelLoadError(f"the model has no tokenizer: {src_path}")
    n_layers = int(loaded.config.get("num_hidden_layers", 0))
    source_format, quantization = loaded.format, loaded.quantization
    model = build_llama_graph(config, loaded.weights, int8,
                              lambda f: report(0.5 + 0.3 * f, "building the graph"))
    with staged_folder(out, user_file_mode()) as tmp:
        report(0.8, "writing config and tokenizer")
        write_configs(loaded, tmp, "float32")
        _mark_onnx_config(tmp / "config.json", int8)
        loaded.tokenizer.save(str(tmp / "tokenizer.json"))
        report(0.85, f"writing {MODEL_FILE}")
        save_model(model, tmp)
        n_params = int(next((p.value for p in model.metadata_props
                             if p.key == "lampchat.n_params"), "0"))
        del model
        report(0.99, "finishing")
    report(1.0, "done")
    written = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    return OnnxExportResult(out_dir=out, source_format=source_format, quantization=quantization,
                            n_layers=n_layers, n_params=n_params, bytes_written=written,
                            int8=int8)


EXPORTABLE = ("llama", "mistral", "qwen2", "phi3")
"""The model types the exported graph computes exactly."""

NOT_EXPORTABLE = {
    "qwen3": "q/k norms",
    "gemma2": "GeGLU, soft-capping and sliding-window layers",
    "gemma3_text": "GeGLU, q/k norms and sliding-window layers",
    "gpt2": "learned positions and LayerNorm",
}
"""Model types the native engine runs but the graph does not, and what it lacks for them."""


def exportable_config(config: dict[str, Any], weights: dict[str, np.ndarray],
                      src: Path) -> dict[str, Any]:
    """The LLaMA config the graph is built from (Qwen2's biases, Phi-3's fused weights split
    in place), or a one-line refusal naming what the graph would get wrong."""
    model_type = str(config.get("model_type"))
    if model_type not in EXPORTABLE:
        lacks = NOT_EXPORTABLE.get(model_type)
        why = f"the exported graph has no {lacks}" if lacks else "not a LLaMA-family model"
        raise LampchatError(f"ONNX export runs {', '.join(EXPORTABLE)} models; {src} is "
                            f"{model_type!r} ({why})")
    if model_type == "qwen2":
        config = {**config, "attention_bias": True}
    if model_type == "phi3":
        split_fused(config, weights)
    cfg = LlamaConfig.from_hf(config)  # refuses, by name, what no engine runs
    kind = (cfg.rope_scaling or {}).get("rope_type")
    if kind == "longrope":
        raise LampchatError(f"ONNX export does not run rope_scaling type 'longrope' ({src}): "
                            "its factors switch with the context")
    return config


def _mark_onnx_config(path: Path, int8: bool) -> None:
    """Note the ONNX export in config.json (readers of HF configs ignore unknown keys)."""
    config = parse_json(path.read_text(encoding="utf-8"))
    config["torch_dtype"] = "float32"
    config["lampchat_onnx"] = {"file": MODEL_FILE, "opset": OPSET,
                               "weights": "int8" if int8 else "float32"}
    if int8:  # what model pickers read; MLX's own key is "quantization", so no clash
        config["quantization_config"] = {"quant_method": "int8 per channel", "bits": 8}
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
