"""GGUF files: metadata, an HF-style config, and dequantized weights under HF tensor names.

llama.cpp's converter permutes the rows of the LLaMA q/k projections so that RoPE can rotate
adjacent pairs; `unpermute_qk` undoes it so the weights match the HF layout (rotate-half RoPE).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ModelLoadError
from engine.formats.gguf_checks import check_metadata
from engine.formats.gguf_file import GGUFFile, GGUFTensorInfo
from engine.formats.lazy_weights import LazyTensor, LazyWeights

Progress = Callable[[float, str], None]

LLAMA_ARCHES = ("llama", "qwen2", "qwen3", "phi3")
"""GGUF architectures laid out like LLaMA (RMSNorm, RoPE, GQA, SwiGLU); their HF model_type is
the same name. Only "llama" has its q/k rows permuted by the converter."""

GEMMA_ARCHES = {"gemma2": "gemma2", "gemma3": "gemma3_text"}
"""GGUF Gemma architectures -> HF model_type. Their converter stores RMSNorm weights plus one
(Gemma scales by `1 + weight`); the reader subtracts it again."""

_HF_CLASSES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
               "qwen3": "Qwen3ForCausalLM", "phi3": "Phi3ForCausalLM",
               "gemma2": "Gemma2ForCausalLM", "gemma3": "Gemma3ForCausalLM"}
_BIG_GEMMA_LAYERS = {"gemma2": 46, "gemma3": 62}
"""The 27B models' layer counts: llama.cpp scales their attention by hidden / heads instead of
the head size (their query_pre_attn_scalar, which GGUF does not record)."""
_PHI3_BLOCK = {  # Phi-3 keeps q/k/v and gate/up fused, in GGUF as in HF
    "attn_qkv.weight": "self_attn.qkv_proj.weight",
    "ffn_up.weight": "mlp.gate_up_proj.weight",
}

_LLAMA_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LLAMA_BLOCK = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GEMMA_BLOCK = {
    **_LLAMA_BLOCK,
    "post_attention_norm.weight": "post_attention_layernorm.weight",
    "ffn_norm.weight": "pre_feedforward_layernorm.weight",
    "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
}
_GPT2_NAMES = {
    "token_embd.weight": "wte.weight",
    "position_embd.weight": "wpe.weight",
    "output_norm.weight": "ln_f.weight",
    "output_norm.bias": "ln_f.bias",
    "output.weight": "lm_head.weight",
}
_GPT2_BLOCK = {
    "attn_norm.weight": "ln_1.weight",
    "attn_norm.bias": "ln_1.bias",
    "attn_qkv.weight": "attn.c_attn.weight",
    "attn_qkv.bias": "attn.c_attn.bias",
    "attn_output.weight": "attn.c_proj.weight",
    "attn_output.bias": "attn.c_proj.bias",
    "ffn_norm.weight": "ln_2.weight",
    "ffn_norm.bias": "ln_2.bias",
    "ffn_up.weight": "mlp.c_fc.weight",
    "ffn_up.bias": "mlp.c_fc.bias",
    "ffn_down.weight": "mlp.c_proj.weight",
    "ffn_down.bias": "mlp.c_proj.bias",
}
_GPT2_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
"""HF GPT-2 stores these as Conv1D (in, out); GGUF stores them transposed."""

_ROPE_TENSORS = ("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight")
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.(.+)$")
_BIG_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
               "tokenizer.ggml.merges")


def unpermute_qk(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (use n_kv_heads for k)."""
    rows = weight.shape[0]
    rest = weight.shape[1:]
    return (
        weight.reshape(n_head, rows // n_head // 2, 2, *rest)
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def permute_qk(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Apply llama.cpp's q/k row permutation (the inverse of `unpermute_qk`)."""
    rows = weight.shape[0]
    rest = weight.shape[1:]
    return (
        weight.reshape(n_head, 2, rows // n_head // 2, *rest)
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


class GGUFModel:
    """A GGUF file opened for reading (tensor data stays memory-mapped)."""

    def __init__(self, path: Path) -> None:

        self.path = Path(path)
        self.file = GGUFFile(self.path)
        if not self.file.tensors:
            raise ModelLoadError(f"GGUF file holds no tensors: {self.path}")
        check_metadata(self.file)
        self._meta: dict[str, Any] | None = None
        self._config: dict[str, Any] | None = None

    # -- metadata ---------------------------------------------------------------------------
    def field(self, key: str, default: Any = None) -> Any:
        """One metadata value (strings decoded, arrays as lists), or `default`."""
        return self.file.fields.get(key, default)

    @property
    def metadata(self) -> dict[str, Any]:
        """All metadata except the (large) vocabulary arrays and the GGUF header fields."""
        if self._meta is None:
            self._meta = {
                k: v
                for k, v in self.file.fields.items()
                if not k.startswith("GGUF.") and k not in _BIG_ARRAYS
            }
        return self._meta

    def drop_vocabulary(self) -> None:
        """Forget the vocabulary arrays (tokens, scores, types, merges) once the tokenizer is
        built: tens of MB of Python strings otherwise held while the weights are read."""
        self.config()
        for key in _BIG_ARRAYS:
            self.file.fields.pop(key, None)

    @property
    def arch(self) -> str:
        """The `general.architecture` value, e.g. "llama" or "gpt2"."""
        return str(self.field("general.architecture", "") or "")

    def arch_field(self, key: str, default: Any = None) -> Any:
        """`{arch}.{key}` from the metadata."""
        return self.field(f"{self.arch}.{key}", default)

    @property
    def tensor_names(self) -> list[str]:
        """GGUF tensor names, in file order."""
        return [t.name for t in self.file.tensors]

    @property
    def n_params(self) -> int:
        """Total number of weights."""
        return sum(t.n_elements for t in self.file.tensors)

    @property
    def quantization(self) -> str:
        """The file type, e.g. "Q4_1", from `general.file_type` or the commonest tensor type."""
        import gguf  # gguf takes about 0.1 s to import: only when a GGUF file is read

        ftype = self.field("general.file_type")
        if ftype is not None:
            try:
                name = gguf.LlamaFileType(int(ftype)).name
                return name.removeprefix("MOSTLY_").removeprefix("ALL_")
            except ValueError:
                pass
        counts: dict[str, int] = {}
        for t in self.file.tensors:
            if len(t.shape) > 1:
                counts[t.qtype.name] = counts.get(t.qtype.name, 0) + t.n_elements
        return max(counts, key=counts.__getitem__) if counts else "unknown"

    @property
    def context_length(self) -> int | None:
        """The model's trained context length, if recorded."""
        value = self.arch_field("context_length")
        return int(value) if value is not None else None

    def config(self) -> dict[str, Any]:
        """An HF `config.json` dict for the model (LLaMA family or GPT-2); made once, before
        `drop_vocabulary`, and a fresh copy each call."""
        if self._config is None:
            self._config = self._make_config()
        return copy.deepcopy(self._config)

    def _make_config(self) -> dict[str, Any]:
        arch = self.arch
        names = set(self.tensor_names)
        n_vocab = self.arch_field("vocab_size")
        if n_vocab is None:
            tokens = self.field("tokenizer.ggml.tokens")
            n_vocab = len(tokens) if tokens is not None else self._embd_rows()
        bos = self.field("tokenizer.ggml.bos_token_id")
        eos = self.field("tokenizer.ggml.eos_token_id")
        if arch in LLAMA_ARCHES or arch in GEMMA_ARCHES:
            n_head = int(self._need("attention.head_count"))
            hidden = int(self._need("embedding_length"))
            cfg: dict[str, Any] = {
                "architectures": [_HF_CLASSES[arch]],
                "model_type": GEMMA_ARCHES.get(arch, arch),
                "hidden_size": hidden,
                "num_hidden_layers": int(self._need("block_count")),
                "num_attention_heads": n_head,
                "num_key_value_heads": int(self.arch_field("attention.head_count_kv", n_head)),
                "intermediate_size": int(self._need("feed_forward_length")),
                "vocab_size": int(n_vocab),
                "rms_norm_eps": float(self.arch_field("attention.layer_norm_rms_epsilon", 1e-5)),
                "rope_theta": float(self.arch_field("rope.freq_base", 10000.0)),
                "max_position_embeddings": int(self.arch_field("context_length", 2048)),
                "tie_word_embeddings": "output.weight" not in names,
                "hidden_act": "silu",
                "attention_bias": "blk.0.attn_q.bias" in names,
                "mlp_bias": False,
                "head_dim": int(self.arch_field("attention.key_length", hidden // n_head)),
            }
            rotated = self.arch_field("rope.dimension_count")
            if rotated and int(rotated) != cfg["head_dim"]:  # refused by name downstream
                cfg["partial_rotary_factor"] = int(rotated) / cfg["head_dim"]
            scaling = self.arch_field("rope.scaling.type")
            factor = self.arch_field("rope.scaling.factor")
            if scaling and scaling != "none" and factor:
                cfg["rope_scaling"] = {"rope_type": str(scaling), "factor": float(factor)}
            window = self.arch_field("attention.sliding_window")
            if window:
                cfg["sliding_window"] = int(window)
                if arch == "llama":  # Mistral is written as llama; its window is recorded
                    cfg["model_type"] = "mistral"
                    cfg["architectures"] = ["MistralForCausalLM"]
            if "rope_factors_long.weight" in names:  # Phi-3 128k: LongRoPE
                cfg["rope_scaling"] = self._longrope(cfg)
            freqs = next((t for t in self.file.tensors if t.name == "rope_freqs.weight"), None)
            if freqs is not None:  # Llama 3.1+: RoPE frequency factors, as llama.cpp applies them
                cfg["rope_freq_factors"] = [float(v) for v in self.file.array(freqs).ravel()]
            if arch in GEMMA_ARCHES:
                self._gemma_config(cfg)
        elif arch == "gpt2":
            cfg = {
                "architectures": ["GPT2LMHeadModel"],
                "model_type": "gpt2",
                "n_embd": int(self._need("embedding_length")),
                "n_layer": int(self._need("block_count")),
                "n_head": int(self._need("attention.head_count")),
                "n_positions": int(self.arch_field("context_length", 1024)),
                "n_ctx": int(self.arch_field("context_length", 1024)),
                "n_inner": int(self.arch_field("feed_forward_length", 0)) or None,
                "layer_norm_epsilon": float(self.arch_field("attention.layer_norm_epsilon", 1e-5)),
                "vocab_size": int(n_vocab),
                "activation_function": "gelu_new",
                "tie_word_embeddings": "output.weight" not in names,
            }
        else:
            raise ModelLoadError(
                f"GGUF architecture {arch or '(none)'!r} is not supported by the native loader "
                f"(supported: {', '.join((*LLAMA_ARCHES, *GEMMA_ARCHES))}, gpt2): {self.path}"
            )
        if bos is not None:
            cfg["bos_token_id"] = int(bos)
        if eos is not None:
            cfg["eos_token_id"] = int(eos)
        cfg["torch_dtype"] = "float32"
        return cfg

    def _longrope(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """LongRoPE's parameters as Phi-3's converter stores them: factor tensors, the
        pretrained context and the attention factor."""
        factors = {t.name: [float(v) for v in self.file.array(t).ravel()]
                   for t in self.file.tensors
                   if t.name in ("rope_factors_long.weight", "rope_factors_short.weight")}
        scaling: dict[str, Any] = {
            "rope_type": "longrope",
            "long_factor": factors["rope_factors_long.weight"],
            "short_factor": factors.get("rope_factors_short.weight",
                                        factors["rope_factors_long.weight"]),
        }
        original = self.arch_field("rope.scaling.original_context_length")
        if original:
            cfg["original_max_position_embeddings"] = int(original)
        attention = self.arch_field("rope.scaling.attn_factor")
        if attention is not None:
            scaling["attention_factor"] = float(attention)
        return scaling

    def _gemma_config(self, cfg: dict[str, Any]) -> None:
        """The Gemma keys of `cfg`, as llama.cpp reads the file."""
        arch, n_layers = self.arch, cfg["num_hidden_layers"]
        big = n_layers == _BIG_GEMMA_LAYERS[arch]
        cfg["hidden_activation"] = "gelu_pytorch_tanh"
        cfg["hidden_act"] = "gelu_pytorch_tanh"
        cfg["query_pre_attn_scalar"] = (cfg["hidden_size"] // cfg["num_attention_heads"] if big
                                        else cfg["head_dim"])
        cfg["attn_logit_softcapping"] = self.arch_field("attn_logit_softcapping")
        cfg["final_logit_softcapping"] = self.arch_field("final_logit_softcapping")
        if arch == "gemma3":
            cfg["rope_local_base_freq"] = float(self.arch_field("rope.freq_base_swa", 10000.0))
            pattern = self.arch_field("attention.sliding_window_pattern", 6)
            if isinstance(pattern, list):  # one flag per layer: sliding or not
                cfg["layer_types"] = ["sliding_attention" if flag else "full_attention"
                                      for flag in pattern]
            else:
                cfg["sliding_window_pattern"] = int(pattern or 6)

    def _need(self, key: str) -> Any:
        value = self.arch_field(key)
        if value is None:
            raise ModelLoadError(f"GGUF metadata lacks {self.arch}.{key}: {self.path}")
        return value

    def _embd_rows(self) -> int:
        for t in self.file.tensors:
            if t.name == "token_embd.weight":
                return int(t.shape[0])
        raise ModelLoadError(f"GGUF file has no token_embd.weight: {self.path}")

    # -- weights ----------------------------------------------------------------------------
    def hf_name(self, name: str) -> str | None:
        """The HF tensor name for a GGUF tensor name, or None for tensors HF has no place for."""
        if self.arch in LLAMA_ARCHES:
            top, block, prefix = _LLAMA_NAMES, _LLAMA_BLOCK, "model.layers"
        elif self.arch in GEMMA_ARCHES:
            top, block, prefix = _LLAMA_NAMES, _GEMMA_BLOCK, "model.layers"
        else:
            top, block, prefix = _GPT2_NAMES, _GPT2_BLOCK, "h"
        if name in top:
            return top[name]
        m = _BLOCK_RE.match(name)
        if m and self.arch == "phi3" and m.group(2) in _PHI3_BLOCK:
            return f"{prefix}.{m.group(1)}.{_PHI3_BLOCK[m.group(2)]}"
        if m and m.group(2) in block:
            return f"{prefix}.{m.group(1)}.{block[m.group(2)]}"
        return None

    def iter_weights(
        self, dtype: Any = np.float32, progress: Progress | None = None
    ) -> Iterator[tuple[str, np.ndarray]]:
        """Yield (HF name, array) for every tensor, dequantized to `dtype` and un-permuted."""
        weights = self.lazy_weights(dtype, progress)
        for hf in list(weights):
            yield hf, weights.pop(hf)

    def lazy_weights(
        self, dtype: Any = np.float32, progress: Progress | None = None
    ) -> LazyWeights:
        """Every tensor under its HF name, read (dequantized to `dtype`, un-permuted) when it
        is looked up."""
        cfg = self.config()
        dtype = np.dtype(dtype)
        tensors: dict[str, LazyTensor] = {}
        for t in self.file.tensors:
            if t.name in _ROPE_TENSORS:  # read into the config (RoPE)
                continue
            hf = self.hf_name(t.name)
            if hf is None:
                raise ModelLoadError(
                    f"GGUF tensor {t.name!r} has no HF equivalent for {self.arch}: {self.path}"
                )
            shape = tuple(t.shape)[::-1] if hf.endswith(_GPT2_CONV1D) else tuple(t.shape)
            as_stored = dtype == np.float32 and not self._transformed(hf, cfg)
            tensors[hf] = LazyTensor(shape, partial(self._read, t, hf, cfg, dtype),
                                     partial(self._read_into, t) if as_stored else None)
        return LazyWeights(tensors, progress)

    def _read_into(self, t: GGUFTensorInfo, out: np.ndarray) -> None:
        try:
            self.file.array_into(t, out)
        except NotImplementedError as exc:
            raise self._unsupported(t) from exc

    def _unsupported(self, t: GGUFTensorInfo) -> ModelLoadError:
        return ModelLoadError(
            f"GGUF tensor type {t.qtype.name} is not supported ({t.name}): {self.path}")

    def _transformed(self, hf: str, cfg: dict[str, Any]) -> bool:
        """Whether `_read` changes the tensor after dequantizing it."""
        if cfg["model_type"] == "llama":
            return hf.endswith(("q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias"))
        if self.arch in GEMMA_ARCHES:
            return hf.endswith("norm.weight")
        return hf.endswith(_GPT2_CONV1D)

    def _read(self, t: GGUFTensorInfo, hf: str, cfg: dict[str, Any], dtype: np.dtype
              ) -> np.ndarray:
        try:
            arr = self.file.array(t)
        except NotImplementedError as exc:
            raise self._unsupported(t) from exc
        if arr.dtype != dtype:
            arr = arr.astype(dtype)
        if not self._transformed(hf, cfg):
            return arr
        if cfg["model_type"] == "llama":
            heads = cfg["num_attention_heads" if ".q_proj." in hf else "num_key_value_heads"]
            return unpermute_qk(arr, heads)
        if self.arch in GEMMA_ARCHES:
            return arr - np.asarray(1.0, dtype=arr.dtype)  # stored as 1 + weight
        return np.ascontiguousarray(arr.T)

    def weights(
        self, dtype: Any = np.float32, progress: Progress | None = None
    ) -> dict[str, np.ndarray]:
        """Every tensor as `iter_weights` yields it, in a dict."""
        return dict(self.iter_weights(dtype, progress))
