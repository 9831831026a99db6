"""The LLaMA family: RMSNorm, RoPE, grouped-query attention, SwiGLU, optionally tied embeddings.

Weights use the HF names (`model.layers.N.self_attn.q_proj.weight`, ...). At load q/k/v are
fused into one `(q + 2 kv, d)` matrix and gate/up into one `(2 ffn, d)` matrix, so that a
decode step runs four matrix products per layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.errors import ModelLoadError
from engine.formats.hf_folder import context_length
from engine.native.base import (
    NativeModel,
    Weights,
    config_int,
    count_params,
    cpu_only,
    discard,
    fuse,
    take,
    take_optional,
)
from engine.native.kv_cache import KVCache
from engine.native.ops import NumpyOps, rope_tables


@dataclass(frozen=True)
class LlamaConfig:
    """The hyperparameters the forward pass needs, read from an HF `config.json` dict."""

    vocab_size: int
    hidden_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate_size: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    max_positions: int
    tie_word_embeddings: bool
    attention_bias: bool
    mlp_bias: bool
    qk_norm: bool = False
    """Per-head RMSNorm of q and k before RoPE (Qwen3)."""
    rope_freq_factors: tuple[float, ...] | None = None
    """RoPE frequency divisors per dimension pair (a GGUF's `rope_freqs.weight`, Llama 3.1+)."""
    windows: tuple[int | None, ...] = ()
    """Each layer's sliding attention window (None: full attention)."""

    @classmethod
    def from_hf(cls, config: dict[str, Any]) -> LlamaConfig:
        """Read a LLaMA config; raise ModelLoadError for missing or inconsistent values."""
        hidden = config_int(config, "hidden_size")
        n_heads = config_int(config, "num_attention_heads")
        n_kv = config_int(config, "num_key_value_heads", default=n_heads)
        if n_heads % n_kv:
            raise ModelLoadError(f"{n_heads} attention heads do not group into {n_kv} kv heads")
        refuse_unsupported(config)
        rope = config.get("rope_parameters") or config.get("rope_scaling") or None
        theta = config.get("rope_theta") or (rope or {}).get("rope_theta") or 10000.0
        kind = rope.get("rope_type", rope.get("type", "default")) if rope else "default"
        if kind == "default":
            rope = None
        elif kind in ("longrope", "su"):
            rope = longrope_parameters(config, rope, hidden // n_heads)
        elif kind not in ("linear", "llama3"):
            raise ModelLoadError(f"rope_scaling type {kind!r} is not supported natively "
                                 "(it runs default, linear, llama3 and longrope)")
        return cls(
            vocab_size=config_int(config, "vocab_size"),
            hidden_size=hidden,
            n_layers=config_int(config, "num_hidden_layers"),
            n_heads=n_heads,
            n_kv_heads=n_kv,
            head_dim=config_int(config, "head_dim", default=hidden // n_heads),
            intermediate_size=config_int(config, "intermediate_size"),
            rms_norm_eps=float(config.get("rms_norm_eps") or 1e-6),
            rope_theta=float(theta),
            rope_scaling=rope,
            max_positions=context_length(config, windowed=True) or 4096,
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            attention_bias=bool(config.get("attention_bias", False)),
            mlp_bias=bool(config.get("mlp_bias", False)),
            qk_norm=bool(config.get("qk_norm", False)),
            rope_freq_factors=tuple(config["rope_freq_factors"])
            if config.get("rope_freq_factors") else None,
            windows=layer_windows(config),
        )


def longrope_parameters(config: dict[str, Any], rope: dict[str, Any],
                        default_head_dim: int) -> dict[str, Any]:
    """Phi-3's LongRoPE ("su") parameters, checked: per-pair `short_factor`/`long_factor`,
    the pretrained context they switch at, and the attention factor (transformers' default
    when absent: `sqrt(1 + ln(factor) / ln(original))`)."""
    half = int(config.get("head_dim") or default_head_dim) // 2
    factors = {}
    for key in ("short_factor", "long_factor"):
        value = rope.get(key)
        if not isinstance(value, list) or len(value) != half:
            raise ModelLoadError(f"rope_scaling {key} must list {half} numbers for LongRoPE")
        factors[key] = [float(v) for v in value]
    length = config_int(config, "max_position_embeddings")
    original = int(config.get("original_max_position_embeddings")
                   or rope.get("original_max_position_embeddings") or length)
    factor = length / original
    attention = rope.get("attention_factor")
    if attention is None:
        attention = math.sqrt(1 + math.log(factor) / math.log(original)) if factor > 1 else 1.0
    return {"rope_type": "longrope", **factors, "original_max_position_embeddings": original,
            "attention_factor": float(attention)}


def layer_windows(config: dict[str, Any]) -> tuple[int | None, ...]:
    """Each layer's sliding window, as transformers reads it: `layer_types` when given, else
    every layer for Mistral and Phi-3, the layers from `max_window_layers` on for Qwen2/3
    (when `use_sliding_window`), none for LLaMA (which has no sliding window)."""
    n = config_int(config, "num_hidden_layers")
    window = config.get("sliding_window")
    valid = isinstance(window, int) and not isinstance(window, bool) and window > 0
    types = config.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != n:
            raise ModelLoadError(f"config option layer_types must list one type per layer "
                                 f"({n})")
        unknown = sorted(set(types) - {"full_attention", "sliding_attention"})
        if unknown:
            raise ModelLoadError(f"config option layer_types value {unknown[0]!r} is not "
                                 "supported natively (it runs full_attention and "
                                 "sliding_attention)")
        if "sliding_attention" in types and not valid:
            raise ModelLoadError(f"config option sliding_window={window!r} is not a window "
                                 "size, but layer_types has sliding_attention layers")
        return tuple(window if kind == "sliding_attention" else None for kind in types)
    if not valid or config.get("use_sliding_window", True) is False:
        return (None,) * n
    model_type = config.get("model_type")
    if model_type in ("mistral", "phi3"):
        return (window,) * n
    if model_type in ("qwen2", "qwen3"):
        first = int(config.get("max_window_layers", 28))
        return tuple(window if i >= first else None for i in range(n))
    return (None,) * n


UNSUPPORTED_KEYS = ("attn_logit_softcapping", "final_logit_softcapping", "query_pre_attn_scalar",
                    "use_qk_norm", "qk_layernorm", "no_rope_layers")
"""Config keys that change a LLaMA-family model's math in ways this engine does not implement:
a model setting any of them is refused by name rather than run wrongly."""


def refuse_unsupported(config: dict[str, Any]) -> None:
    """Raise ModelLoadError naming the first config option this engine would get wrong."""
    act = config.get("hidden_act", config.get("hidden_activation", "silu"))
    if act not in ("silu", "swish"):
        raise ModelLoadError(f"hidden_act {act!r} is not supported for "
                             f"{config.get('model_type', 'llama')} models (the native engine "
                             "runs silu)")
    for key in UNSUPPORTED_KEYS:
        if config.get(key) not in (None, False, 0, []):
            raise ModelLoadError(f"config option {key}={config[key]!r} is not supported for "
                                 f"{config.get('model_type', 'llama')} models natively")
    factor = config.get("partial_rotary_factor")
    if factor not in (None, 1, 1.0):
        raise ModelLoadError(f"config option partial_rotary_factor={factor!r} is not supported "
                             "natively")


def rope_inv_freq(cfg: LlamaConfig, long: bool = False) -> np.ndarray:
    """Inverse frequencies for RoPE, with "linear", "llama3" or "longrope" scaling when
    configured (`long`: LongRoPE's long factors, for contexts past the pretrained one)."""
    hd = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    if cfg.rope_freq_factors is not None:
        if len(cfg.rope_freq_factors) != hd // 2:
            raise ModelLoadError(f"rope_freqs has {len(cfg.rope_freq_factors)} factors; the "
                                 f"head dimension {hd} needs {hd // 2}")
        return inv / np.asarray(cfg.rope_freq_factors, dtype=np.float64)
    scaling = cfg.rope_scaling
    if not scaling:
        return inv
    kind = scaling.get("rope_type", scaling.get("type"))
    factor = float(scaling.get("factor", 1.0))
    if kind == "linear":
        return inv / factor
    if kind == "longrope":
        return inv / np.asarray(scaling["long_factor" if long else "short_factor"], np.float64)
    if kind == "llama3":
        low = float(scaling.get("low_freq_factor", 1.0))
        high = float(scaling.get("high_freq_factor", 4.0))
        original = float(scaling.get("original_max_position_embeddings", 8192))
        wavelen = 2 * math.pi / inv
        smooth = (original / wavelen - low) / (high - low)
        scaled = np.where(wavelen > original / low, inv / factor, inv)
        medium = (wavelen <= original / low) & (wavelen >= original / high)
        return np.where(medium, (1 - smooth) * inv / factor + smooth * inv, scaled)
    raise ModelLoadError(f"RoPE scaling {kind!r} is not supported by the native backend")


def _biases(
    weights: Weights, prefix: str, names: tuple[str, ...], sizes: tuple[int, ...]
) -> np.ndarray:
    """The biases of `prefix{name}_proj` concatenated (zeros for any the checkpoint lacks)."""
    parts = [take_optional(weights, f"{prefix}{name}_proj.bias", (size,))
             for name, size in zip(names, sizes, strict=True)]
    return np.concatenate([b if b is not None else np.zeros(size, np.float32)
                           for b, size in zip(parts, sizes, strict=True)])


@dataclass
class LlamaLayer:
    """One decoder layer's weights, fused and in the ops object's representation."""

    attn_norm: Any
    wqkv: Any
    bqkv: Any
    wo: Any
    bo: Any
    mlp_norm: Any
    w_gate_up: Any
    b_gate_up: Any
    w_down: Any
    b_down: Any
    q_norm: Any = None
    k_norm: Any = None


class LlamaModel(NativeModel):
    """A LLaMA-family decoder built from HF-named weights."""

    arch = "llama"

    def __init__(
        self,
        config: dict[str, Any],
        weights: Weights,
        ops: NumpyOps | None = None,
    ) -> None:
        super().__init__(ops)
        cfg = self.cfg = LlamaConfig.from_hf(config)
        ops = self.ops
        d, hd = cfg.hidden_size, cfg.head_dim
        q_dim, kv_dim = cfg.n_heads * hd, cfg.n_kv_heads * hd
        self.vocab_size, self.n_layers = cfg.vocab_size, cfg.n_layers
        self.n_kv_heads, self.head_dim = cfg.n_kv_heads, hd
        self.max_positions = cfg.max_positions
        self.scale = 1.0 / math.sqrt(hd)
        embed = take(weights, "model.embed_tokens.weight", (cfg.vocab_size, d))
        n_params = embed.size
        self.layers: list[LlamaLayer] = []
        for i in range(cfg.n_layers):
            p = f"model.layers.{i}."
            attn = p + "self_attn."
            wqkv = fuse(weights, [attn + "q_proj.weight", attn + "k_proj.weight",
                                  attn + "v_proj.weight"], [(q_dim, d), (kv_dim, d), (kv_dim, d)],
                        fused=attn + "qkv_proj.weight")  # Phi-3 stores them fused
            f = cfg.intermediate_size
            w_gate_up = fuse(weights, [p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"],
                             [(f, d), (f, d)], fused=p + "mlp.gate_up_proj.weight")
            bqkv = bo = b_gate_up = b_down = None
            if cfg.attention_bias:
                bqkv = _biases(weights, p + "self_attn.", ("q", "k", "v"), (q_dim, kv_dim, kv_dim))
                bo = _biases(weights, p + "self_attn.", ("o",), (d,))
            if cfg.mlp_bias:
                b_gate_up = _biases(weights, p + "mlp.", ("gate", "up"), (f, f))
                b_down = _biases(weights, p + "mlp.", ("down",), (d,))
            parts = {
                "attn_norm": take(weights, p + "input_layernorm.weight", (d,)),
                "wqkv": wqkv,
                "bqkv": bqkv,
                "wo": take(weights, p + "self_attn.o_proj.weight", (d, q_dim)),
                "bo": bo,
                "mlp_norm": take(weights, p + "post_attention_layernorm.weight", (d,)),
                "w_gate_up": w_gate_up,
                "b_gate_up": b_gate_up,
                "w_down": take(weights, p + "mlp.down_proj.weight", (d, cfg.intermediate_size)),
                "b_down": b_down,
            }
            if cfg.qk_norm:
                parts["q_norm"] = take(weights, attn + "q_norm.weight", (hd,))
                parts["k_norm"] = take(weights, attn + "k_norm.weight", (hd,))
            n_params += count_params(*parts.values())
            self.layers.append(
                LlamaLayer(**{k: None if w is None else ops.prepare(w) for k, w in parts.items()})
            )
        self.embed = embed
        self.norm = ops.prepare(take(weights, "model.norm.weight", (d,)))
        if cfg.tie_word_embeddings or "lm_head.weight" not in weights:
            discard(weights, "lm_head.weight")
            lm_head = embed
        else:
            lm_head = take(weights, "lm_head.weight", (cfg.vocab_size, d))
            n_params += lm_head.size
        self.lm_head = ops.prepare(lm_head)
        self.n_params = int(n_params + d)
        self.windows = cfg.windows or (None,) * cfg.n_layers
        if any(self.windows):
            cpu_only(ops, f"{config.get('model_type', 'llama')} models with a sliding window",
                     "the OpenCL attention kernel has no window")
        self.long_rope: bool | None = None
        """LongRoPE: whether the global table holds the long factors (None: no LongRoPE)."""
        self.tables = [self._global_rope(long=False)]
        self.layer_table = [0] * cfg.n_layers
        """Which of `tables` (cos, sin) each layer rotates with."""
        self.embed_scale: float | None = None
        self.attn_softcap: float | None = None
        self.final_softcap: float | None = None

    def _global_rope(self, long: bool) -> tuple[np.ndarray, np.ndarray]:
        """cos and sin of the (scaled) global RoPE, times LongRoPE's attention factor."""
        cfg = self.cfg
        cos, sin = rope_tables(cfg.head_dim, cfg.max_positions, cfg.rope_theta,
                               rope_inv_freq(cfg, long))
        if cfg.rope_scaling and cfg.rope_scaling.get("rope_type") == "longrope":
            self.long_rope = long
            mscale = np.float32(cfg.rope_scaling["attention_factor"])
            cos, sin = cos * mscale, sin * mscale
        return cos, sin

    def new_cache(self, n_ctx: int) -> KVCache:
        """An empty cache for `n_ctx` positions. With LongRoPE the factors follow the context
        as in llama.cpp: the long ones when `n_ctx` exceeds the pretrained context."""
        if self.long_rope is not None:
            long = n_ctx > self.cfg.rope_scaling["original_max_position_embeddings"]
            if long != self.long_rope:
                self.tables[0] = self._global_rope(long)
        return super().new_cache(n_ctx)

    def forward(
        self, tokens: np.ndarray, cache: KVCache, start: int, all_logits: bool = False
    ) -> np.ndarray:
        """See `NativeModel.forward`."""
        ops, cfg = self.ops, self.cfg
        t = len(tokens)
        rows = [(cos[start : start + t], sin[start : start + t]) for cos, sin in self.tables]
        x = ops.embed(self.embed, tokens)
        if self.embed_scale is not None:
            x = x * np.float32(self.embed_scale)
        for i, layer in enumerate(self.layers):
            x = self._block(x, layer, cache, i, start, *rows[self.layer_table[i]])
        if not all_logits:
            x = x[-1:]
        logits = ops.fetch(ops.linear(ops.rms_norm(x, self.norm, cfg.rms_norm_eps), self.lm_head))
        if self.final_softcap:
            logits = np.tanh(logits / np.float32(self.final_softcap)) * np.float32(
                self.final_softcap)
        return logits if all_logits else logits[0]

    def _block(
        self,
        x: Any,
        layer: LlamaLayer,
        cache: KVCache,
        i: int,
        start: int,
        cos: np.ndarray,
        sin: np.ndarray,
    ) -> Any:
        ops, eps = self.ops, self.cfg.rms_norm_eps
        x = x + self._attend(ops.rms_norm(x, layer.attn_norm, eps), layer, cache, i, start,
                             cos, sin)
        return x + self._feed_forward(ops.rms_norm(x, layer.mlp_norm, eps), layer)

    def _attend(
        self,
        h: Any,
        layer: LlamaLayer,
        cache: KVCache,
        i: int,
        start: int,
        cos: np.ndarray,
        sin: np.ndarray,
    ) -> Any:
        """Self-attention of the normed `h`, through the output projection."""
        ops, cfg = self.ops, self.cfg
        t, hd = h.shape[0], cfg.head_dim
        n_q, n_kv = cfg.n_heads, cfg.n_kv_heads
        qkv = ops.linear(h, layer.wqkv, layer.bqkv)
        if layer.q_norm is not None:  # per-head RMSNorm of q and k (Qwen3, Gemma 3)
            q_end, k_end = n_q * hd, (n_q + n_kv) * hd
            qkv[:, :q_end] = ops.rms_norm(qkv[:, :q_end].reshape(t * n_q, hd), layer.q_norm,
                                          cfg.rms_norm_eps).reshape(t, q_end)
            qkv[:, q_end:k_end] = ops.rms_norm(qkv[:, q_end:k_end].reshape(t * n_kv, hd),
                                               layer.k_norm, cfg.rms_norm_eps).reshape(t, -1)
        qk = ops.apply_rope(qkv[:, : (n_q + n_kv) * hd].reshape(t, n_q + n_kv, hd), cos, sin)
        values = qkv[:, (n_q + n_kv) * hd :].reshape(t, n_kv, hd)
        ops.store_kv(cache, i, start, qk[:, n_q:], values)
        window, softcap = self.windows[i], self.attn_softcap
        if window or softcap:  # (only numpy's attention takes these: see `cpu_only`)
            attn = ops.attention(qk[:, :n_q], cache, i, start, self.scale, window, softcap)
        else:
            attn = ops.attention(qk[:, :n_q], cache, i, start, self.scale)
        return ops.linear(attn, layer.wo, layer.bo)

    def _feed_forward(self, h: Any, layer: LlamaLayer) -> Any:
        """The gated MLP of the normed `h`."""
        ops = self.ops
        hidden = ops.swiglu(ops.linear(h, layer.w_gate_up, layer.b_gate_up))
        return ops.linear(hidden, layer.w_down, layer.b_down)
