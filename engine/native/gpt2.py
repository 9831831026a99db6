"""GPT-2: LayerNorm, learned positions, GELU (tanh approximation), fused qkv.

Weights use the HF names, with or without the `transformer.` prefix. GPT-2's Conv1D weights
are stored `[in, out]`; they are transposed once at load to the `(out, in)` layout `linear`
expects. The LM head is the token embeddings, unless `tie_word_embeddings` is false: then
`lm_head.weight`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.errors import ModelLoadError
from engine.native.base import (
    NativeModel,
    Weights,
    config_int,
    count_params,
    discard,
    rename,
    take,
)
from engine.native.kv_cache import KVCache
from engine.native.ops import NumpyOps

_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


@dataclass(frozen=True)
class GPT2Config:
    """The hyperparameters the forward pass needs, read from an HF `config.json` dict."""

    vocab_size: int
    n_embd: int
    n_layer: int
    n_head: int
    n_inner: int
    n_positions: int
    layer_norm_epsilon: float
    scale_by_layer: bool
    tie_word_embeddings: bool

    @classmethod
    def from_hf(cls, config: dict[str, Any]) -> GPT2Config:
        """Read a GPT-2 config; raise ModelLoadError for missing or unsupported values."""
        n_embd = config_int(config, "n_embd", "hidden_size")
        n_head = config_int(config, "n_head", "num_attention_heads")
        if n_embd % n_head:
            raise ModelLoadError(f"n_embd {n_embd} is not a multiple of n_head {n_head}")
        activation = config.get("activation_function", "gelu_new")
        if activation not in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
            raise ModelLoadError(f"GPT-2 activation {activation!r} is not supported natively")
        return cls(
            vocab_size=config_int(config, "vocab_size"),
            n_embd=n_embd,
            n_layer=config_int(config, "n_layer", "num_hidden_layers"),
            n_head=n_head,
            n_inner=config_int(config, "n_inner", default=4 * n_embd),
            n_positions=config_int(config, "n_positions", "max_position_embeddings", default=1024),
            layer_norm_epsilon=float(config.get("layer_norm_epsilon") or 1e-5),
            scale_by_layer=bool(config.get("scale_attn_by_inverse_layer_idx", False)),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", True)),
        )


@dataclass
class GPT2Layer:
    """One block's weights, linear weights `(out, in)`, in the ops object's representation."""

    ln1_w: Any
    ln1_b: Any
    w_qkv: Any
    b_qkv: Any
    w_proj: Any
    b_proj: Any
    ln2_w: Any
    ln2_b: Any
    w_fc: Any
    b_fc: Any
    w_out: Any
    b_out: Any


def _conv1d(weights: Weights, name: str, n_in: int, n_out: int) -> np.ndarray:
    """A Conv1D weight `[in, out]`, transposed to a contiguous `(out, in)`."""
    return take(weights, name, (n_in, n_out), transpose=True)


class GPT2Model(NativeModel):
    """A GPT-2 decoder built from HF-named weights."""

    arch = "gpt2"

    def __init__(
        self,
        config: dict[str, Any],
        weights: Weights,
        ops: NumpyOps | None = None,
    ) -> None:
        super().__init__(ops)
        cfg = self.cfg = GPT2Config.from_hf(config)
        ops = self.ops
        for name in list(weights):
            if name.endswith(_IGNORED_SUFFIXES):
                del weights[name]
            elif name.startswith("transformer."):
                rename(weights, name, name.removeprefix("transformer."))
        d, f = cfg.n_embd, cfg.n_inner
        self.vocab_size, self.n_layers = cfg.vocab_size, cfg.n_layer
        self.n_kv_heads, self.head_dim = cfg.n_head, d // cfg.n_head
        self.max_positions = cfg.n_positions
        self.embed = take(weights, "wte.weight", (cfg.vocab_size, d))
        self.positions = take(weights, "wpe.weight", (cfg.n_positions, d))
        n_params = self.embed.size + self.positions.size
        self.layers: list[GPT2Layer] = []
        for i in range(cfg.n_layer):
            p = f"h.{i}."
            parts = {
                "ln1_w": take(weights, p + "ln_1.weight", (d,)),
                "ln1_b": take(weights, p + "ln_1.bias", (d,)),
                "w_qkv": _conv1d(weights, p + "attn.c_attn.weight", d, 3 * d),
                "b_qkv": take(weights, p + "attn.c_attn.bias", (3 * d,)),
                "w_proj": _conv1d(weights, p + "attn.c_proj.weight", d, d),
                "b_proj": take(weights, p + "attn.c_proj.bias", (d,)),
                "ln2_w": take(weights, p + "ln_2.weight", (d,)),
                "ln2_b": take(weights, p + "ln_2.bias", (d,)),
                "w_fc": _conv1d(weights, p + "mlp.c_fc.weight", d, f),
                "b_fc": take(weights, p + "mlp.c_fc.bias", (f,)),
                "w_out": _conv1d(weights, p + "mlp.c_proj.weight", f, d),
                "b_out": take(weights, p + "mlp.c_proj.bias", (d,)),
            }
            n_params += count_params(*parts.values())
            self.layers.append(GPT2Layer(**{k: ops.prepare(w) for k, w in parts.items()}))
        self.ln_f_w = ops.prepare(take(weights, "ln_f.weight", (d,)))
        self.ln_f_b = ops.prepare(take(weights, "ln_f.bias", (d,)))
        if cfg.tie_word_embeddings:
            discard(weights, "lm_head.weight")
            self.lm_head = ops.prepare(self.embed)
        else:  # an LM head of its own (tie_word_embeddings: false)
            if "lm_head.weight" not in weights:
                raise ModelLoadError("the config says tie_word_embeddings: false, but the "
                                     "checkpoint has no lm_head.weight")
            head = take(weights, "lm_head.weight", (cfg.vocab_size, d))
            n_params += head.size
            self.lm_head = ops.prepare(head)
        self.n_params = int(n_params + 2 * d)

    def forward(
        self, tokens: np.ndarray, cache: KVCache, start: int, all_logits: bool = False
    ) -> np.ndarray:
        """See `NativeModel.forward`."""
        ops, cfg = self.ops, self.cfg
        t = len(tokens)
        x = ops.embed(self.embed, tokens) + self.positions[start : start + t]
        for i, layer in enumerate(self.layers):
            x = self._block(x, layer, cache, i, start)
        if not all_logits:
            x = x[-1:]
        h = ops.layer_norm(x, self.ln_f_w, self.ln_f_b, cfg.layer_norm_epsilon)
        logits = ops.fetch(ops.linear(h, self.lm_head))
        return logits if all_logits else logits[0]

    def _block(self, x: Any, layer: GPT2Layer, cache: KVCache, i: int, start: int) -> Any:
        ops, cfg = self.ops, self.cfg
        t, n, hd = x.shape[0], cfg.n_head, self.head_dim
        eps = cfg.layer_norm_epsilon
        scale = 1.0 / math.sqrt(hd) / ((i + 1) if cfg.scale_by_layer else 1)
        h = ops.layer_norm(x, layer.ln1_w, layer.ln1_b, eps)
        qkv = ops.linear(h, layer.w_qkv, layer.b_qkv).reshape(t, 3, n, hd)
        ops.store_kv(cache, i, start, qkv[:, 1], qkv[:, 2])
        attn = ops.attention(qkv[:, 0], cache, i, start, scale)
        x = x + ops.linear(attn, layer.w_proj, layer.b_proj)
        h = ops.layer_norm(x, layer.ln2_w, layer.ln2_b, eps)
        hidden = ops.gelu(ops.linear(h, layer.w_fc, layer.b_fc))
        return x + ops.linear(hidden, layer.w_out, layer.b_out)
