"""Lampchat's own numpy engine: GGUF (dequantized), safetensors and PyTorch checkpoints."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.backends.base import Backend, ProgressCallback, check_context
from engine.chat_template import ChatTemplate, chosen_template, encode_prompt, end_of_turn_ids
from engine.devices import BackendSupport, Hardware, dist_version
from engine.errors import LampchatError, ModelLoadError
from engine.formats.detect import detect_format
from engine.formats.loader import load_model
from engine.kv_store import KVState
from engine.memory import trim_heap
from engine.models import metadata_name
from engine.native import ARCHITECTURES, build_model
from engine.native.base import NativeModel
from engine.native.generator import Generator
from engine.native.kv_cache import KVCache
from engine.native.opencl import ops_for_device
from engine.native.ops import NumpyOps
from engine.sampling import Sampler
from engine.textstream import token_pieces
from engine.types import ChatMessage, LoadSettings, ModelInfo, Piece, SamplingParams, StreamStats

log = logging.getLogger(__name__)

NATIVE_FORMATS = ("gguf", "safetensors", "pytorch")
"""Formats whose weights the native engine reads (GGUF is dequantized to float32)."""

WARM_UP_TOKENS = 8
"""Tokens of the warm-up prompt run at load."""


def limit_blas_threads(n: int) -> None:
    """Cap the threads numpy's BLAS uses for the matrix products (process-wide).

    OpenBLAS threads busy-wait, so more threads than free cores slows decoding a lot.
    """
    try:
        # loads the BLAS libraries: only when a model runs
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a declared dependency
        log.warning("threadpoolctl is not installed; BLAS uses its default thread count")
        return
    threadpool_limits(limits=max(1, int(n)), user_api="blas")


def _file_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


class NativeBackend(Backend):
    """Runs LLaMA-family and GPT-2 models with numpy, one model and one KV cache at a time."""

    name = "native"
    formats = NATIVE_FORMATS
    families = frozenset(ARCHITECTURES)
    auto_kinds = ("cpu",)  # its OpenCL path is portable rather than tuned: only when asked
    bench_adapter = "engine.bench.adapters.native:ADAPTER"

    @classmethod
    def probe(cls, hardware: Hardware) -> BackendSupport:
        """numpy on the CPU; OpenCL devices through pyopencl when it is installed."""
        version = dist_version("numpy")
        if hardware.opencl_installed is None:
            return BackendSupport("native", installed=True, version=version, kinds=["cpu"],
                                  build="numpy on CPU (OpenCL not probed)")
        if hardware.opencl:
            hardware.found.add_backend("opencl", "native")
            return BackendSupport(
                "native", installed=True, version=version, kinds=["cpu", "opencl"],
                build=f"numpy on CPU; OpenCL (pyopencl) on {len(hardware.opencl)} device(s)")
        if hardware.opencl_installed:
            return BackendSupport(
                "native", installed=True, version=version, kinds=["cpu"],
                build="numpy on CPU; pyopencl installed but no OpenCL device",
                hint=hardware.opencl_problem
                or "install an OpenCL driver, e.g. pip install pocl-binary-distribution",
                problem="pyopencl found no OpenCL device")
        return BackendSupport("native", installed=True, version=version, kinds=["cpu"],
                              build="numpy on CPU",
                              hint="for OpenCL: pip install 'lampchat[opencl]'")

    @classmethod
    def how_to_get(cls, kind: str) -> str | None:
        """OpenCL needs pyopencl and a driver."""
        return "pip install 'lampchat[opencl]' and an OpenCL driver" if kind == "opencl" else None

    def __init__(self) -> None:
        super().__init__()
        self._generator: Generator | None = None
        self._tokenizer: Any = None
        self._template: ChatTemplate | None = None
        self._eos_ids: frozenset[int] = frozenset()
        self._bos_id: int | None = None

    def load(
        self, model: str, settings: LoadSettings, progress: ProgressCallback | None = None
    ) -> ModelInfo:
        """Read the checkpoint, fuse its weights for fast decoding and allocate the KV cache."""
        report = progress or (lambda _f, _w: None)
        path = Path(model).expanduser()
        fmt = detect_format(path).format
        if fmt not in NATIVE_FORMATS:
            raise ModelLoadError(
                "the native backend reads GGUF, safetensors and PyTorch checkpoints; "
                f"{path} is {fmt}"
            )
        if settings.device not in ("auto", "cpu"):
            report(0.0, "opening the device")  # OpenCL compiles its kernels here
        ops = ops_for_device(settings.device, settings.options)  # numpy, or OpenCL
        if settings.n_threads:
            limit_blas_threads(settings.n_threads)

        started = time.perf_counter()
        report(0.0, "reading weights")
        # each tensor is read (dequantized, cast) as the model takes it: the peak stays near
        # the float32 weights, not the weights plus the copies that fusing them makes
        loaded = load_model(path, progress=lambda f, _what: report(0.98 * f, "reading weights"),
                            dtype=np.float32, lazy=True)
        if loaded.tokenizer is None:
            raise ModelLoadError(f"the model has no tokenizer (tokenizer.json): {path}")
        net = build_model(loaded.config, loaded.weights, ops=ops)
        loaded.weights.clear()  # whatever the model did not take, never read
        n_ctx = min(settings.n_ctx or net.max_positions, net.max_positions)
        self._generator = Generator(net, n_ctx)
        self._tokenizer = loaded.tokenizer
        template = self._template = chosen_template(loaded.template, settings.chat_template)
        eos = set(loaded.eos_token_ids)
        eos.update(end_of_turn_ids(template, loaded.tokenizer.token_to_id))
        if not eos and loaded.template.eos_token:
            eos_id = loaded.tokenizer.token_to_id(loaded.template.eos_token)
            eos |= {eos_id} if eos_id is not None else set()
        self._eos_ids = frozenset(eos)
        self._bos_id = None
        if loaded.metadata.get("tokenizer.ggml.add_bos_token") and loaded.template.bos_token:
            self._bos_id = loaded.tokenizer.token_to_id(loaded.template.bos_token)
        quant = loaded.quantization
        self.settings = settings
        self.info = ModelInfo(
            name=metadata_name(loaded.metadata) or (path.name if path.is_dir() else path.stem),
            path=str(path),
            backend=self.name,
            device=ops.device,
            format=loaded.format,
            quantization=quant if quant in ("F32", "unknown") else f"{quant} (run as F32)",
            n_params=net.n_params,
            context_length=n_ctx,
            file_size=_file_size(path),
            chat_template_source=template.source,
        )
        del loaded
        report(0.99, "warming up")
        self._warm_up(net, n_ctx)
        trim_heap()
        log.info("native: loaded %s (%s, %d params) in %.1fs", path, net.arch, net.n_params,
                 time.perf_counter() - started)
        report(1.0, "ready")
        return self.info

    def _warm_up(self, net: NativeModel, n_ctx: int) -> None:
        """A short prompt through the chat template and the model, as llama.cpp warms up a new
        context: the first reply then pays none of the first-call costs (BLAS's threads and
        buffers, numpy's first calls and its random module, the template's compilation), and
        is as quick as the second. The scratch cache it uses has the reply cache's size: a
        model may set itself up by it (LongRoPE's factors follow the context), and it is
        mapped, not filled, so only the positions written cost memory."""
        self.tokenize_prompt([ChatMessage("user", "hi")])
        if type(net.ops) is not NumpyOps:  # a device cache is allocated whole: not twice
            return
        cache = net.new_cache(n_ctx)
        logits = net.forward(np.zeros(WARM_UP_TOKENS, dtype=np.int64), cache, 0)
        Sampler(SamplingParams(temperature=0.7, seed=0))(logits)
        net.forward(np.zeros(1, dtype=np.int64), cache, WARM_UP_TOKENS)

    def unload(self) -> None:
        """Drop the model, its KV cache and tokenizer."""
        self._generator = None
        self._tokenizer = None
        self._template = None
        self.info = None
        trim_heap()

    def tokenize_prompt(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The prompt tokens for `messages`, rendered with the model's chat template."""
        if self._template is None or self._tokenizer is None:
            raise LampchatError("no model is loaded")
        return encode_prompt(self._template, self._tokenizer, messages, self._bos_id)

    # -- saved KV state --------------------------------------------------------------------

    def cached_tokens(self) -> Sequence[int]:
        """See `Backend.cached_tokens`."""
        return list(self._generator.cache.tokens) if self._generator is not None else []

    def _host_cache(self) -> KVCache | None:
        """The KV cache when it lives in host memory (not on an OpenCL device)."""
        generator = self._generator
        if generator is None or type(generator.model.ops) is not NumpyOps:
            return None
        return generator.cache

    def export_state(self) -> KVState | None:
        """The filled part of the KV cache (keys, then values), float32."""
        cache = self._host_cache()
        if cache is None or not cache.tokens:
            return None
        n = cache.length
        keys = np.ascontiguousarray(cache.keys[:, :, :n])
        values = np.ascontiguousarray(cache.values[:, :, :n])
        return KVState(tuple(cache.tokens), keys.tobytes() + values.tobytes())

    def import_state(self, state: KVState) -> bool:
        """Put a saved state's keys and values back in the cache."""
        cache = self._host_cache()
        n = len(state.tokens)
        if cache is None or not 0 < n < cache.max_ctx:
            return False
        layers, heads, _, head_dim = cache.keys.shape
        shape = (layers, heads, n, head_dim)
        size = int(np.prod(shape))
        if len(state.payload) != 2 * size * 4:
            return False
        data = np.frombuffer(state.payload, dtype=np.float32)
        cache.keys[:, :, :n] = data[:size].reshape(shape)
        cache.values[:, :, :n] = data[size:].reshape(shape)
        cache.tokens = list(state.tokens)
        return True

    def state_settings(self) -> dict[str, Any]:
        """See `Backend.state_settings`: the context length and the compute path."""
        generator = self._generator
        return {"n_ctx": generator.n_ctx if generator else None,
                "ops": generator.model.ops.name if generator else None}

    def stream(
        self, messages: Sequence[ChatMessage], sampling: SamplingParams, stats: StreamStats
    ) -> Iterator[Piece]:
        """Prefill the prompt (reusing the cached prefix), then decode token by token."""
        generator = self._generator
        if generator is None:
            raise LampchatError("no model is loaded")
        tokens = self.tokens_once(messages, self.tokenize_prompt)
        n_ctx = generator.n_ctx
        check_context(len(tokens), n_ctx)
        stats.prompt_tokens = len(tokens)
        new_tokens = generator.generate(
            tokens, Sampler(sampling), min(sampling.max_tokens, n_ctx - len(tokens)),
            self._eos_ids, self._cancel.is_set,
        )
        hit = yield from token_pieces(new_tokens, self._tokenizer, sampling.stop)
        stats.finish_reason = "stop" if hit else (generator.finish_reason or "stop")
