"""MLX through mlx-lm, for HF-style folders (safetensors, MLX-quantized ones included).

Runs on Apple silicon (Metal), and on Linux through `mlx[cpu]` or MLX's CUDA packages. The
prompt is rendered with Lampchat's own chat template and tokenizer (as in every backend) and
streamed with `mlx_lm.stream_generate`, with the shared sampling settings mapped to mlx-lm's
sampler and logits processors.
"""

from __future__ import annotations

import gc
import logging
import os
import platform
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from engine.backends.base import Backend, ProgressCallback, at_thread_exit, check_context
from engine.chat_template import ChatTemplate, chosen_template, encode_prompt
from engine.devices import (
    KIND_LABELS,
    BackendSupport,
    Hardware,
    dist_version,
    is_apple_silicon,
    probe_cache,
)
from engine.errors import (
    BackendUnavailableError,
    DeviceUnavailableError,
    LampchatError,
    ModelLoadError,
)
from engine.formats import hf_folder
from engine.formats.detect import detect_format
from engine.kv_store import KVState
from engine.memory import trim_heap
from engine.sampling import PENALTY_LAST_N
from engine.textstream import token_pieces
from engine.tokenizer import load_tokenizer_json
from engine.types import (
    ChatMessage,
    FinishReason,
    LoadSettings,
    ModelInfo,
    Piece,
    SamplingParams,
    StreamStats,
)

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'lampchat[mlx]'"
MLX_FORMATS = ("safetensors", "mlx")
"""Formats mlx-lm reads: HF folders with safetensors weights, plain or MLX-quantized."""


PREFILL_STEP = 512
"""Prompt tokens per mlx-lm prefill step; a cancel is noticed between steps."""


class _PrefillCancelled(Exception):
    """Raised from mlx-lm's prompt progress callback to stop a cancelled prefill."""


def import_mlx() -> tuple[Any, Any]:
    """`(mlx.core, mlx_lm)`, or BackendUnavailableError with the install hint."""
    try:
        import mlx.core as mx  # optional (the mlx extra)
        import mlx_lm  # optional (the mlx extra)
    except Exception as exc:  # ImportError, or a broken native library
        raise BackendUnavailableError(
            f"the MLX backend needs mlx and mlx-lm ({INSTALL_HINT}): {exc}"
        ) from exc
    return mx, mlx_lm


def mlx_device(mx: Any, device: str) -> Any:
    """The MLX device for a Lampchat device name ("auto", "cpu", "metal", "cuda", "gpu")."""
    kind = (device or "auto").strip().lower().partition(":")[0]
    if kind == "auto":
        return mx.default_device()
    if kind == "cpu":
        return mx.cpu
    if kind in ("metal", "cuda", "gpu"):
        has_gpu = bool(mx.metal.is_available()) or bool(
            getattr(mx, "cuda", None) is not None and mx.cuda.is_available()
        )
        if not has_gpu:
            raise DeviceUnavailableError(
                f"MLX has no {kind} device in this install (MLX uses Metal on Apple silicon; "
                "for CUDA: pip install 'mlx[cuda12]')"
            )
        return mx.gpu
    raise DeviceUnavailableError(f"MLX cannot run on device {device!r} (choose cpu, metal or cuda)")


def _device_label(mx: Any, dev: Any) -> str:
    if dev == mx.cpu:
        return "cpu"
    if mx.metal.is_available():
        return "metal"
    return "cuda"


def _weights_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _quantization(config: dict[str, Any]) -> str:
    quant = config.get("quantization") or config.get("quantization_config")
    if isinstance(quant, dict) and "bits" in quant:
        return f"MLX {quant['bits']}-bit (group {quant.get('group_size', '?')})"
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "")
    return {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}.get(dtype, dtype or "unknown")


@probe_cache
def mlx_info() -> dict[str, Any] | None:
    """MLX's default device and GPU support; None if MLX is not installed."""
    try:
        import mlx.core as mx  # optional (the mlx extra)
    except Exception as exc:
        log.info("mlx not importable: %s", exc)
        return None
    metal = bool(mx.metal.is_available())
    cuda_mod = getattr(mx, "cuda", None)
    cuda = bool(cuda_mod is not None and cuda_mod.is_available())
    info: dict[str, Any] = {
        "default_device": str(mx.default_device()), "metal": metal, "cuda": cuda,
    }
    if metal or cuda:
        try:
            info["gpu"] = {k: v for k, v in mx.device_info(mx.gpu).items()}
        except Exception as exc:
            info["gpu_problem"] = str(exc)
    return info


def mlx_overrides(config: dict[str, Any]) -> dict[str, Any]:
    """Config keys mlx-lm must be given explicitly: transformers v5 writes RoPE's base and
    scaling under `rope_parameters`, which mlx-lm 0.32 does not read (it would run the
    default base of 10,000 and answer wrong text with no warning)."""
    params = config.get("rope_parameters")
    if not isinstance(params, dict):
        return {}
    out: dict[str, Any] = {}
    if "full_attention" in params:  # Gemma 3: one set per layer type
        local = params.get("sliding_attention") or {}
        if "rope_local_base_freq" not in config and "rope_theta" in local:
            out["rope_local_base_freq"] = local["rope_theta"]
        params = params["full_attention"] or {}
    if "rope_theta" not in config and "rope_theta" in params:
        out["rope_theta"] = params["rope_theta"]
    kind = params.get("rope_type", params.get("type", "default"))
    if "rope_scaling" not in config and kind != "default":
        out["rope_scaling"] = {k: v for k, v in params.items() if k != "rope_theta"}
    return out


def runs_windows(config: dict[str, Any]) -> bool:
    """Whether mlx-lm (0.32) computes this model's sliding window: Gemma 3, and LLaMA configs
    with `layer_types`. It runs full attention for the others (Mistral, Gemma 2, Qwen2, Phi-3),
    so their context is limited to the window, where full attention is exact."""
    model_type = config.get("model_type")
    return model_type == "gemma3_text" or (model_type == "llama"
                                           and bool(config.get("layer_types")))


class MLXBackend(Backend):
    """Runs HF-style folders with mlx-lm; one model at a time, generation on the engine thread."""

    name = "mlx"
    formats = MLX_FORMATS
    install_hint = INSTALL_HINT
    bench_adapter = "engine.bench.adapters.mlx:ADAPTER"

    @classmethod
    def probe(cls, hardware: Hardware) -> BackendSupport:
        """MLX's build: Metal or CUDA when its GPU is available, else the CPU."""
        info = mlx_info()
        if info is None:
            return BackendSupport("mlx", installed=False, hint=INSTALL_HINT,
                                  problem="mlx is not installed")
        kinds = ["cpu"]
        gpu = info.get("gpu", {})
        memory = gpu.get("memory_size") or gpu.get("total_memory")
        name = str(gpu.get("device_name") or "")
        if info["metal"]:
            kinds.append("metal")
            hardware.found.add("metal", 0, name or "Apple GPU", "mlx", total=memory,
                               backend="mlx")
        if info["cuda"]:
            kinds.append("cuda")
            hardware.found.add("cuda", 0, name or "CUDA GPU", "mlx", total=memory, backend="mlx")
        gpu_names = [KIND_LABELS[k] for k in kinds[1:]]
        text = f"{', '.join(gpu_names)} build" if gpu_names else "CPU-only build"
        hint = None
        if not gpu_names:
            hint = ("for Metal: pip install mlx (macOS, Apple silicon)"
                    if platform.system() == "Darwin" else "for CUDA: pip install 'mlx[cuda12]'")
        return BackendSupport("mlx", installed=True, version=dist_version("mlx"), kinds=kinds,
                              build=text, hint=hint)

    @classmethod
    def how_to_get(cls, kind: str) -> str | None:
        """MLX's GPU builds."""
        if kind == "metal":
            return ("MLX uses Metal on macOS with Apple silicon" if is_apple_silicon()
                    else "Metal needs macOS on Apple silicon")
        return "pip install 'mlx[cuda12]'" if kind == "cuda" else None

    def __init__(self) -> None:
        super().__init__()
        self._mx: Any = None
        self._model: Any = None
        self._mlx_tokenizer: Any = None
        self._tokenizer: Any = None
        self._template: ChatTemplate | None = None
        self._stream: Any = None
        self._eos_ids: frozenset[int] = frozenset()
        self._n_ctx = 0
        self.finish_reason: FinishReason = "stop"
        """How the last `generate_ids` ended."""
        self._cache: list[Any] | None = None
        self._cache_tokens: list[int] = []

    def load(
        self, model: str, settings: LoadSettings, progress: ProgressCallback | None = None
    ) -> ModelInfo:
        """Load an HF-style folder (safetensors + config.json + tokenizer) with mlx-lm."""
        report = progress or (lambda _f, _w: None)
        mx, mlx_lm = import_mlx()
        path = Path(model).expanduser()
        info = detect_format(path)
        if info.format not in MLX_FORMATS:
            raise ModelLoadError(
                f"the MLX backend reads HF-style safetensors folders (plain or MLX-quantized); "
                f"{path} is {info.format}"
            )
        folder = info.path if info.path.is_dir() else info.path.parent
        if not (folder / "tokenizer.json").is_file():
            raise ModelLoadError(f"the model folder has no tokenizer.json: {folder}")

        config = hf_folder.read_config(folder)
        device = mlx_device(mx, settings.device)
        started = time.perf_counter()
        report(0.05, "loading weights with mlx-lm")
        try:
            if device != mx.default_device():
                mx.set_default_device(device)
            net, mlx_tokenizer = mlx_lm.load(str(folder), model_config=mlx_overrides(config))
        except LampchatError:
            raise
        except Exception as exc:  # mlx-lm raises ValueError/KeyError/FileNotFoundError...
            text = " ".join(str(exc).split())[:300]
            raise ModelLoadError(f"mlx-lm cannot load {folder}: {text}") from exc
        report(0.85, "loading tokenizer")
        tokenizer = load_tokenizer_json(folder / "tokenizer.json")
        template = chosen_template(hf_folder.chat_template(folder, config, tokenizer),
                                   settings.chat_template)
        eos = set(hf_folder.eos_token_ids(folder, config, tokenizer, template))
        for token_id in eos:
            mlx_tokenizer.add_eos_token(str(token_id))
        self._mx = mx
        self._model = net
        self._cache, self._cache_tokens = None, []
        self._mlx_tokenizer = mlx_tokenizer
        self._tokenizer = tokenizer
        self._template = template
        self._eos_ids = frozenset(eos | set(mlx_tokenizer.eos_token_ids))
        self._stream = mx.new_stream(device)
        # MLX does not tear down its per-thread streams by itself: left to interpreter shutdown
        # they can abort the process ("terminate called without an active exception")
        if hasattr(mx, "clear_streams"):
            at_thread_exit(mx.clear_streams)
        max_pos = hf_folder.context_length(config, windowed=runs_windows(config)) or 4096
        self._n_ctx = min(settings.n_ctx or max_pos, max_pos)
        n_params = _count_params(mx, net, config)
        self.settings = settings
        self.info = ModelInfo(
            name=folder.name,
            path=str(path),
            backend=self.name,
            device=_device_label(mx, device),
            format=info.format,
            quantization=_quantization(config),
            n_params=int(n_params),
            context_length=self._n_ctx,
            file_size=_weights_size(folder),
            chat_template_source=self._template.source,
        )
        log.info("mlx: loaded %s on %s in %.1fs", folder, device, time.perf_counter() - started)
        report(1.0, "ready")
        return self.info

    def unload(self) -> None:
        """Drop the model and return MLX's cached buffers to the system."""
        self._model = None
        self._cache, self._cache_tokens = None, []
        self._mlx_tokenizer = None
        self._tokenizer = None
        self._template = None
        self._stream = None
        self.info = None
        gc.collect()
        if self._mx is not None:
            self._mx.clear_cache()
        trim_heap()

    def tokenize_prompt(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The prompt tokens for `messages`, rendered with the model's chat template."""
        if self._template is None or self._tokenizer is None:
            raise LampchatError("no model is loaded")
        return encode_prompt(self._template, self._tokenizer, messages, None)

    def generate_ids(self, tokens: Sequence[int], sampling: SamplingParams) -> Iterator[int]:
        """Yield up to `sampling.max_tokens` new token ids after the prompt `tokens`, from
        `mlx_lm.stream_generate`; an end-of-generation token ends it unyielded.

        Afterwards `finish_reason` is "stop", "length" or "cancelled".
        """
        from mlx_lm.generate import stream_generate  # optional (the mlx extra)

        # optional (the mlx extra)
        from mlx_lm.sample_utils import make_logits_processors, make_sampler

        mx = self._mx
        if self._model is None or mx is None:
            raise LampchatError("no model is loaded")
        self.finish_reason = "length"
        if sampling.seed is not None:
            mx.random.seed(sampling.seed)
        sampler = make_sampler(
            temp=0.0 if sampling.greedy else sampling.temperature,
            top_p=sampling.top_p if sampling.top_p < 1.0 else 0.0,
            min_p=sampling.min_p,
            top_k=sampling.top_k,
        )
        mx.reset_peak_memory()
        keep = self._reuse_cache(tokens)
        processors = None
        if sampling.repeat_penalty != 1.0:
            penalty = make_logits_processors(
                repetition_penalty=sampling.repeat_penalty,
                repetition_context_size=PENALTY_LAST_N,
            )[0]
            # mlx-lm passes only the tokens it was given (those after the cached prefix): put
            # the cached ones back, so the penalty sees the same window as without the cache.
            before = mx.array(list(tokens[:keep][-PENALTY_LAST_N:]), dtype=mx.int32)

            def with_prefix(seen: Any, logits: Any) -> Any:
                return penalty(mx.concatenate([before, seen.astype(mx.int32)]), logits)

            processors = [with_prefix]
        seen = list(tokens[:keep])
        responses = stream_generate(
            self._model, self._mlx_tokenizer, mx.array(list(tokens[keep:]), dtype=mx.int32),
            max_tokens=min(sampling.max_tokens, self._n_ctx - len(tokens)),
            sampler=sampler, logits_processors=processors, stream=self._stream,
            prefill_step_size=PREFILL_STEP, prompt_progress_callback=self._prefill_progress,
            prompt_cache=self._cache,
        )
        seen.extend(tokens[keep:])
        last = None
        failed = True
        try:
            for response in responses:
                last = response
                # The last response repeats nothing: with "length" it carries the final new
                # token; with "stop" the end token, which is not shown.
                token = int(response.token)
                seen.append(token)
                if response.finish_reason == "stop" or token in self._eos_ids:
                    self.finish_reason = "stop"
                    failed = False
                    return
                failed = False
                yield token
                failed = True
                if response.finish_reason is not None:
                    failed = False
                    return
                if self.cancelled:
                    self.finish_reason = "cancelled"
                    failed = False
                    return
            failed = False
        except _PrefillCancelled:
            self.finish_reason = "cancelled"
            failed = False
        finally:
            responses.close()
            self._note_cache(seen, failed)
            if last is not None:
                log.info("mlx: prompt %.1f tok/s, decode %.1f tok/s, peak %.3f GB",
                         last.prompt_tps, last.generation_tps, last.peak_memory)

    def reset_cache(self) -> None:
        """Forget the cached conversation."""
        self._cache, self._cache_tokens = None, []

    # -- saved KV state --------------------------------------------------------------------

    def cached_tokens(self) -> Sequence[int]:
        """See `Backend.cached_tokens`."""
        return list(self._cache_tokens)

    def export_state(self) -> KVState | None:
        """mlx-lm's prompt cache, in its own file form (`save_prompt_cache`: each layer's
        cache class and arrays), for the tokens it holds."""
        from mlx_lm.models.cache import save_prompt_cache  # optional (the mlx extra)

        if self._model is None or self._cache is None or not self._cache_tokens:
            return None
        with tempfile.TemporaryDirectory(prefix="lampchat-mlx-") as tmp:
            path = os.path.join(tmp, "state.safetensors")
            save_prompt_cache(path, self._cache)
            with open(path, "rb") as fh:
                payload = fh.read()
        return KVState(tuple(self._cache_tokens), payload)

    def import_state(self, state: KVState) -> bool:
        """Make the prompt cache a saved one: the same cache classes as this model makes, each
        holding exactly the state's tokens."""
        # optional (the mlx extra)
        from mlx_lm.models.cache import load_prompt_cache, make_prompt_cache

        n = len(state.tokens)
        if self._model is None or not 0 < n < self._n_ctx:
            return False
        with tempfile.TemporaryDirectory(prefix="lampchat-mlx-") as tmp:
            path = os.path.join(tmp, "state.safetensors")
            with open(path, "wb") as fh:
                fh.write(state.payload)
            cache = load_prompt_cache(path)
            self._mx.eval([layer.state for layer in cache])  # read before the file goes
        expected = [type(layer) for layer in make_prompt_cache(self._model)]
        if [type(layer) for layer in cache] != expected:
            return False
        if any(int(getattr(layer, "offset", -1)) != n for layer in cache):
            return False
        self._cache, self._cache_tokens = cache, list(state.tokens)
        return True

    def _reuse_cache(self, tokens: Sequence[int]) -> int:
        """Trim the KV cache to its common prefix with `tokens` (at most all but the last
        token); returns how many cached tokens are kept."""
        # optional (the mlx extra)
        from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache

        cache = self._cache
        if cache is None or not can_trim_prompt_cache(cache):
            self._cache, self._cache_tokens = make_prompt_cache(self._model), []
            return 0
        common = 0
        for a, b in zip(self._cache_tokens, tokens, strict=False):
            if a != b:
                break
            common += 1
        keep = min(common, len(tokens) - 1)
        offset = int(getattr(cache[0], "offset", len(self._cache_tokens)))
        trim_prompt_cache(cache, offset - keep)
        del self._cache_tokens[keep:]
        return keep

    def _note_cache(self, seen: list[int], failed: bool) -> None:
        """Record which tokens the KV cache holds after a generation (None: unknown)."""
        cache = self._cache
        offset = int(getattr(cache[0], "offset", -1)) if cache else -1
        if failed or offset < 0 or offset > len(seen):
            self._cache, self._cache_tokens = None, []
        else:
            self._cache_tokens = seen[:offset]

    def _prefill_progress(self, _done: int, _total: int) -> None:
        if self.cancelled:
            raise _PrefillCancelled

    def stream(
        self, messages: Sequence[ChatMessage], sampling: SamplingParams, stats: StreamStats
    ) -> Iterator[Piece]:
        """Stream a reply with `mlx_lm.stream_generate`."""
        tokens = self.tokens_once(messages, self.tokenize_prompt)
        check_context(len(tokens), self._n_ctx)
        stats.prompt_tokens = len(tokens)
        ids = self.generate_ids(tokens, sampling)
        hit = yield from token_pieces(ids, self._tokenizer, sampling.stop)
        stats.finish_reason = "stop" if hit else self.finish_reason


def _count_params(mx: Any, net: Any, config: dict[str, Any]) -> int:
    """Weights in the model; MLX-quantized matrices count their unpacked values, and their
    per-group scales and biases are not counted."""
    quant = config.get("quantization")
    bits = int(quant.get("bits", 0)) if isinstance(quant, dict) else 0
    params = dict(_flatten(net.parameters()))
    total = 0
    for name, value in params.items():
        prefix = name.rsplit(".", 1)[0]
        quantized = bits and f"{prefix}.scales" in params
        if quantized and name.endswith((".scales", ".biases")):
            continue
        if quantized and value.dtype == mx.uint32:
            total += int(value.size) * (32 // bits)
        else:
            total += int(value.size)
    return total


def _flatten(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(name, array) pairs of an MLX parameter tree (nested dicts and lists)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _flatten(value, f"{prefix}{key}.")
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from _flatten(value, f"{prefix}{i}.")
    else:
        yield prefix.rstrip("."), tree
