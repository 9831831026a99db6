"""onnxruntime, for decoder-only LLM ONNX models with a KV cache.

The model follows the convention of optimum and the onnxruntime-genai model builder (and of
`lampchat convert --to onnx`): inputs `input_ids`, `attention_mask`, `position_ids`,
`past_key_values.{i}.key/.value`; outputs `logits`, `present.{i}.key/.value`. The folder also
holds config.json and tokenizer.json (plus tokenizer_config.json for the chat template).

The KV cache stays in onnxruntime's memory between steps (IO binding: each step's `present`
outputs are bound as the next step's `past` inputs) and is kept across replies, so a new turn
only computes its new tokens. Execution providers follow the device: CUDA, CoreML, DirectML,
ROCm or the CPU, whichever the installed onnxruntime offers.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from engine.backends.base import Backend, ProgressCallback, check_context
from engine.chat_template import ChatTemplate, chosen_template, encode_prompt
from engine.devices import BackendSupport, Hardware, dist_version, is_apple_silicon, probe_cache
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
from engine.sampling import Sampler
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

INSTALL_HINT = "pip install 'lampchat[onnx]'"
PREFILL_CHUNK = 512
"""Prompt tokens per forward pass (bounds the attention scores' memory)."""

DEVICE_PROVIDERS: dict[str, tuple[str, ...]] = {
    "cuda": ("CUDAExecutionProvider", "TensorrtExecutionProvider"),
    "metal": ("CoreMLExecutionProvider",),
    "coreml": ("CoreMLExecutionProvider",),
    "directml": ("DmlExecutionProvider",),
    "rocm": ("ROCMExecutionProvider", "MIGraphXExecutionProvider"),
}
"""onnxruntime execution providers for each Lampchat device kind, preferred first."""

AUTO_ORDER = ("cuda", "directml", "metal", "rocm")
"""Device kinds tried, in order, when the device is "auto"."""

PROVIDER_HINTS = {
    "cuda": "pip install onnxruntime-gpu",
    "directml": "pip install onnxruntime-directml (Windows)",
    "metal": "the CoreML provider comes with onnxruntime on macOS",
    "coreml": "the CoreML provider comes with onnxruntime on macOS",
    "rocm": "install an onnxruntime build with ROCm or MIGraphX",
}

PREFERRED_FILES = ("model.onnx", "decoder_model_merged.onnx", "decoder_with_past_model.onnx",
                   "model_quantized.onnx")
"""Which .onnx file of a folder to run: Lampchat's and genai's name, optimum's merged decoder,
or the with-past half of optimum's older split export (its `decoder_model.onnx` has no KV
cache; the with-past one runs the first step too, from an empty cache)."""

_KV_DEVICE = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda"}
"""Providers whose KV cache stays in device memory between steps."""


def import_onnxruntime() -> Any:
    """The onnxruntime module, or BackendUnavailableError with the install hint."""
    try:
        import onnxruntime  # optional (the onnx extra)
    except Exception as exc:  # ImportError, or a broken native library
        raise BackendUnavailableError(
            f"the ONNX backend needs onnxruntime ({INSTALL_HINT}): {exc}"
        ) from exc
    return onnxruntime


def choose_providers(device: str, available: Sequence[str]) -> tuple[list[str], str]:
    """The execution providers for `device` and the device kind they run on.

    "auto" takes the first GPU kind whose provider is available, else the CPU. A forced device
    whose provider is missing raises DeviceUnavailableError saying what to install. The CPU
    provider always comes last, for operators a GPU provider lacks.
    """
    kind = (device or "auto").strip().lower().partition(":")[0]
    if kind == "gpu":
        kind = next((k for k in AUTO_ORDER if _present(k, available)), "cuda")
    if kind == "auto":
        kind = next((k for k in AUTO_ORDER if _present(k, available)), "cpu")
    cpu = ["CPUExecutionProvider"]
    if kind == "cpu":
        return cpu, "cpu"
    if kind not in DEVICE_PROVIDERS:
        raise DeviceUnavailableError(
            f"onnxruntime cannot run on device {device!r} "
            "(choose cpu, cuda, metal, directml or rocm)"
        )
    found = [p for p in DEVICE_PROVIDERS[kind] if p in available]
    if not found:
        short = ", ".join(p.removesuffix("ExecutionProvider") for p in available) or "none"
        raise DeviceUnavailableError(
            f"this onnxruntime has no {kind} execution provider (it has: {short}); "
            f"{PROVIDER_HINTS[kind]}"
        )
    return found[:1] + cpu, "metal" if kind == "coreml" else kind


def _present(kind: str, available: Sequence[str]) -> bool:
    return any(p in available for p in DEVICE_PROVIDERS[kind])


def default_threads() -> int:
    """Physical cores: onnxruntime's matrix products run best with one thread per core."""
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def _model_file(path: Path) -> Path:
    if path.is_file():
        return path
    for name in PREFERRED_FILES:
        if (path / name).is_file():
            return path / name
    files = sorted(path.glob("*.onnx"))
    if not files:
        raise ModelLoadError(f"the folder holds no .onnx model: {path}")
    return files[0]


PROVIDER_KINDS = {provider: kind for kind, providers in DEVICE_PROVIDERS.items()
                  if kind != "coreml" for provider in providers}
"""onnxruntime execution providers -> Lampchat device kinds."""


@probe_cache
def onnx_providers() -> list[str] | None:
    """onnxruntime's available execution providers; None if it is not installed."""
    try:
        import onnxruntime  # optional (the onnx extra)
    except Exception as exc:
        log.info("onnxruntime not importable: %s", exc)
        return None
    return list(onnxruntime.get_available_providers())


class OnnxBackend(Backend):
    """Runs decoder-only ONNX models with onnxruntime; one model and one KV cache at a time."""

    name = "onnx"
    formats = ("onnx",)
    install_hint = INSTALL_HINT
    bench_adapter = "engine.bench.adapters.onnx:ADAPTER"

    @classmethod
    def probe(cls, hardware: Hardware) -> BackendSupport:
        """onnxruntime's execution providers, as device kinds."""
        providers = onnx_providers()
        if providers is None:
            return BackendSupport("onnx", installed=False, hint=cls.install_hint,
                                  problem="onnxruntime is not installed")
        found = hardware.found
        kinds = ["cpu"]
        for provider in providers:
            kind = PROVIDER_KINDS.get(provider)
            if kind and kind not in kinds:
                kinds.append(kind)
                found.add_backend(kind, "onnx")
        if "directml" in kinds and not found.has("directml"):
            found.add("directml", 0, "DirectML device", "onnxruntime", backend="onnx")
        short = [p.removesuffix("ExecutionProvider") for p in providers]
        version = dist_version("onnxruntime") or dist_version("onnxruntime-gpu")
        hint = None
        if len(kinds) == 1 and platform.system() != "Darwin":
            hint = "for CUDA: pip install onnxruntime-gpu"
            if platform.system() == "Windows":
                hint += "; for DirectML: pip install onnxruntime-directml"
        return BackendSupport("onnx", installed=True, version=version, kinds=kinds,
                              build="providers: " + ", ".join(short), hint=hint)

    @classmethod
    def how_to_get(cls, kind: str) -> str | None:
        """The onnxruntime package with `kind`'s provider."""
        if kind == "metal" and not is_apple_silicon():
            return "Metal needs macOS on Apple silicon"
        return "pip install onnxruntime-gpu" if kind == "cuda" else None

    def __init__(self) -> None:
        super().__init__()
        self._ort: Any = None
        self._session: Any = None
        self._tokenizer: Any = None
        self._template: ChatTemplate | None = None
        self._eos_ids: frozenset[int] = frozenset()
        self._bos_id: int | None = None
        self._n_layers = 0
        self._kv_shape: tuple[int, int] = (0, 0)
        self._kv_dtype: Any = np.float32
        self._kv_device = "cpu"
        self._input_names: set[str] = set()
        self._n_ctx = 0
        self._past: list[Any] = []
        self._cache_tokens: list[int] = []
        self.finish_reason: FinishReason = "stop"
        """How the last `generate_ids` ended."""

    def load(
        self, model: str, settings: LoadSettings, progress: ProgressCallback | None = None
    ) -> ModelInfo:
        """Open an ONNX folder (model.onnx + config.json + tokenizer.json) in onnxruntime."""
        report = progress or (lambda _f, _w: None)
        ort = import_onnxruntime()
        path = Path(model).expanduser()
        info = detect_format(path)
        if info.format != "onnx":
            raise ModelLoadError(f"the ONNX backend reads .onnx models; {path} is {info.format}")
        file = _model_file(info.path)
        folder = file.parent

        if not (folder / "tokenizer.json").is_file():
            raise ModelLoadError(f"the ONNX model folder has no tokenizer.json: {folder}")
        config = hf_folder.read_config(folder)
        providers, kind = choose_providers(settings.device, ort.get_available_providers())
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.n_threads or default_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        started = time.perf_counter()
        report(0.05, f"opening {file.name} ({', '.join(providers)})")
        try:
            session = ort.InferenceSession(str(file), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            text = " ".join(str(exc).split())
            text = text if len(text) <= 300 else text[:297] + "..."
            raise ModelLoadError(f"onnxruntime cannot load {file}: {text}") from exc
        report(0.9, "reading the tokenizer")
        self._check_signature(session, file, config)
        tokenizer = load_tokenizer_json(folder / "tokenizer.json")
        template = chosen_template(hf_folder.chat_template(folder, config, tokenizer),
                                   settings.chat_template)
        self._ort = ort
        self._session = session
        self._tokenizer = tokenizer
        self._template = template
        self._eos_ids = frozenset(hf_folder.eos_token_ids(folder, config, tokenizer, template))
        tcfg = hf_folder.tokenizer_config(folder)
        self._bos_id = None
        if tcfg.get("add_bos_token") and template.bos_token:
            self._bos_id = tokenizer.token_to_id(template.bos_token)
        used = session.get_providers()[0]
        self._kv_device = _KV_DEVICE.get(used, "cpu")
        max_pos = hf_folder.context_length(config)
        if max_pos is None:
            raise ModelLoadError(f"{folder / 'config.json'} gives no context length "
                                 f"({', '.join(hf_folder.CONTEXT_KEYS)})")
        self._n_ctx = min(settings.n_ctx or max_pos, max_pos)
        self._past, self._cache_tokens = [], []
        meta = session.get_modelmeta().custom_metadata_map
        n_params = int(meta["lampchat.n_params"]) if "lampchat.n_params" in meta else None
        weights = meta.get("lampchat.weights") or str(config.get("torch_dtype") or "")
        quant = {"float32": "F32", "float16": "F16", "int8": "INT8 per channel"}.get(
            weights, weights or "unknown")
        self.settings = settings
        self.info = ModelInfo(
            name=folder.name if path.is_dir() else file.stem,
            path=str(path),
            backend=self.name,
            device=kind if used != "CPUExecutionProvider" else "cpu",
            format="onnx",
            quantization=quant,
            n_params=n_params,
            context_length=self._n_ctx,
            file_size=sum(p.stat().st_size for p in folder.iterdir() if p.is_file()
                          and (p.suffix in (".onnx", ".data") or p.name.endswith("_data"))),
            chat_template_source=template.source,
        )
        log.info("onnx: loaded %s with %s in %.1fs", file, used, time.perf_counter() - started)
        report(1.0, "ready")
        return self.info

    def _check_signature(self, session: Any, file: Path, config: dict[str, Any]) -> None:
        """Check the KV-cache convention and read the cache's layout from it."""
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        n_layers = 0
        while f"past_key_values.{n_layers}.key" in inputs:
            n_layers += 1
        missing = [n for n in ("input_ids",) if n not in inputs]
        if "logits" not in outputs:
            missing.append("logits (output)")
        if n_layers == 0:
            missing.append("past_key_values.0.key")
        elif f"present.{n_layers - 1}.value" not in outputs:
            missing.append(f"present.{n_layers - 1}.value (output)")
        if missing:
            raise ModelLoadError(
                f"{file} is not a decoder LLM with a KV cache in the optimum/genai convention "
                f"(missing {', '.join(missing)})"
            )
        past = inputs["past_key_values.0.key"]
        shape = list(past.shape)
        if len(shape) != 4:
            raise ModelLoadError(
                f"{file}: past_key_values.0.key must be [batch, kv_heads, past, head_dim] "
                f"(got {shape})"
            )
        heads = config.get("num_key_value_heads") or config.get("num_attention_heads")
        hidden, n_heads = config.get("hidden_size"), config.get("num_attention_heads")
        dim = config.get("head_dim") or (hidden // n_heads if hidden and n_heads else None)
        shape[1] = shape[1] if isinstance(shape[1], int) else heads
        shape[3] = shape[3] if isinstance(shape[3], int) else dim
        if not isinstance(shape[1], int) or not isinstance(shape[3], int):
            raise ModelLoadError(
                f"{file}: the KV cache's heads and head size are neither fixed in the model nor "
                "in config.json (num_key_value_heads, head_dim)"
            )
        self._n_layers = n_layers
        self._kv_shape = (int(shape[1]), int(shape[3]))
        self._kv_dtype = np.float16 if past.type == "tensor(float16)" else np.float32
        self._input_names = set(inputs)

    def unload(self) -> None:
        """Close the session and drop the KV cache."""
        self._session = None
        self._past, self._cache_tokens = [], []
        self._tokenizer = None
        self._template = None
        self.info = None
        trim_heap()

    def tokenize_prompt(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The prompt tokens for `messages`, rendered with the model's chat template."""
        if self._template is None or self._tokenizer is None:
            raise LampchatError("no model is loaded")
        return encode_prompt(self._template, self._tokenizer, messages, self._bos_id)

    # -- the KV cache -------------------------------------------------------------------------

    def _empty_past(self) -> list[Any]:
        heads, dim = self._kv_shape
        empty = np.zeros((1, heads, 0, dim), dtype=self._kv_dtype)
        value = self._ort.OrtValue.ortvalue_from_numpy(empty)
        return [value] * (2 * self._n_layers)

    def _truncate_cache(self, keep: int) -> None:
        """Keep the first `keep` cached positions."""
        if keep == len(self._cache_tokens) and self._past:
            return
        if keep == 0 or not self._past or self._kv_device != "cpu":
            # (a cache in GPU memory is not sliced here: start over instead)
            self._past, self._cache_tokens = self._empty_past(), []
            return
        ort_value = self._ort.OrtValue
        self._past = [ort_value.ortvalue_from_numpy(np.ascontiguousarray(v.numpy()[:, :, :keep]))
                      for v in self._past]
        del self._cache_tokens[keep:]

    def _forward(self, tokens: Sequence[int]) -> np.ndarray:
        """Run `tokens` after the cached ones; return the last position's logits."""
        session = self._session
        start = len(self._cache_tokens)
        n = len(tokens)
        binding = session.io_binding()
        binding.bind_cpu_input("input_ids", np.asarray([tokens], dtype=np.int64))
        if "attention_mask" in self._input_names:
            binding.bind_cpu_input("attention_mask", np.ones((1, start + n), dtype=np.int64))
        if "use_cache_branch" in self._input_names:  # optimum's merged decoder
            binding.bind_cpu_input("use_cache_branch", np.array([start > 0]))
        if "position_ids" in self._input_names:
            binding.bind_cpu_input("position_ids",
                                   np.arange(start, start + n, dtype=np.int64)[None])
        for i in range(self._n_layers):
            binding.bind_ortvalue_input(f"past_key_values.{i}.key", self._past[2 * i])
            binding.bind_ortvalue_input(f"past_key_values.{i}.value", self._past[2 * i + 1])
        binding.bind_output("logits")
        for i in range(self._n_layers):
            binding.bind_output(f"present.{i}.key", self._kv_device)
            binding.bind_output(f"present.{i}.value", self._kv_device)
        session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        logits = outputs[0].numpy()
        self._past = list(outputs[1:])
        self._cache_tokens.extend(tokens)
        return np.asarray(logits[0, -1], dtype=np.float32)

    def prefill(self, tokens: Sequence[int]) -> np.ndarray | None:
        """Make the cache hold `tokens`, reusing the cached prefix; None if cancelled."""
        common = 0
        for a, b in zip(self._cache_tokens, tokens, strict=False):
            if a != b:
                break
            common += 1
        self._truncate_cache(min(common, len(tokens) - 1))
        pos = len(self._cache_tokens)
        logits = None
        while pos < len(tokens):
            if self.cancelled:
                return None
            chunk = list(tokens[pos : pos + PREFILL_CHUNK])
            logits = self._forward(chunk)
            pos += len(chunk)
        return logits

    def step(self, token: int) -> np.ndarray:
        """Feed one token after the cached ones; return the logits for the next."""
        return self._forward([token])

    def reset_cache(self) -> None:
        """Forget the cached conversation."""
        self._truncate_cache(0)

    # -- saved KV state --------------------------------------------------------------------

    def cached_tokens(self) -> Sequence[int]:
        """See `Backend.cached_tokens`."""
        return list(self._cache_tokens)

    def export_state(self) -> KVState | None:
        """The cached keys and values of every layer (in the model's KV type), when they live
        in host memory (a cache in GPU memory is not copied out)."""
        n = len(self._cache_tokens)
        if self._session is None or not n or self._kv_device != "cpu" or not self._past:
            return None
        arrays = [np.ascontiguousarray(value.numpy()) for value in self._past]
        if any(a.shape[2] != n or a.dtype != self._kv_dtype for a in arrays):
            return None
        return KVState(tuple(self._cache_tokens), b"".join(a.tobytes() for a in arrays))

    def import_state(self, state: KVState) -> bool:
        """Make the cache hold a saved state's keys and values."""
        n = len(state.tokens)
        if self._session is None or self._kv_device != "cpu" or not 0 < n < self._n_ctx:
            return False
        heads, dim = self._kv_shape
        size = heads * n * dim
        if len(state.payload) != 2 * self._n_layers * size * np.dtype(self._kv_dtype).itemsize:
            return False
        data = np.frombuffer(state.payload, dtype=self._kv_dtype)
        make = self._ort.OrtValue.ortvalue_from_numpy
        self._past = [make(data[i * size:(i + 1) * size].reshape(1, heads, n, dim).copy())
                      for i in range(2 * self._n_layers)]
        self._cache_tokens = list(state.tokens)
        return True

    def state_settings(self) -> dict[str, Any]:
        """See `Backend.state_settings`: the context length and the KV type."""
        return {"n_ctx": self._n_ctx, "kv_dtype": np.dtype(self._kv_dtype).name}

    # -- generation -----------------------------------------------------------------------

    def generate_ids(self, tokens: Sequence[int], sampling: SamplingParams) -> Iterator[int]:
        """Yield up to `sampling.max_tokens` new token ids after the prompt `tokens`.

        An end-of-generation token ends it unyielded. Afterwards `finish_reason` is "stop",
        "length" or "cancelled" (checked before every forward pass).
        """
        if self._session is None:
            raise LampchatError("no model is loaded")
        self.finish_reason = "length"
        max_tokens = min(sampling.max_tokens, self._n_ctx - len(tokens))
        sampler = Sampler(sampling)
        try:
            logits = self.prefill(tokens)
        except Exception:
            self._past, self._cache_tokens = [], []  # a failed run leaves the cache unknown
            raise
        history = list(tokens)
        for count in range(1, max_tokens + 1):
            if logits is None or self.cancelled:
                self.finish_reason = "cancelled"
                return
            token = sampler(logits, history)
            if token in self._eos_ids:
                self.finish_reason = "stop"
                return
            yield token
            history.append(token)
            if count == max_tokens:
                break
            if self.cancelled:
                self.finish_reason = "cancelled"
                return
            logits = self._forward([token])

    def stream(
        self, messages: Sequence[ChatMessage], sampling: SamplingParams, stats: StreamStats
    ) -> Iterator[Piece]:
        """Prefill the prompt (reusing the cached prefix), then decode token by token."""
        tokens = self.tokens_once(messages, self.tokenize_prompt)
        check_context(len(tokens), self._n_ctx)
        stats.prompt_tokens = len(tokens)
        ids = self.generate_ids(tokens, sampling)
        hit = yield from token_pieces(ids, self._tokenizer, sampling.stop)
        stats.finish_reason = "stop" if hit else self.finish_reason
