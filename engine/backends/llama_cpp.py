"""llama.cpp through llama-cpp-python, for GGUF files."""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil

from engine.backends.base import Backend, ProgressCallback, check_context
from engine.chat_template import (
    ChatTemplate,
    chosen_template,
    end_of_turn_ids,
    fallback_template,
)
from engine.devices import (
    KIND_LABELS,
    BackendSupport,
    DeviceReport,
    DeviceSet,
    Hardware,
    is_apple_silicon,
)
from engine.errors import DeviceUnavailableError, LampchatError, ModelLoadError
from engine.formats.detect import detect_format, validate_gguf
from engine.ggml_build import GGML_KINDS, llama_cpp_build
from engine.kv_store import KVState
from engine.memory import trim_heap
from engine.models import metadata_name
from engine.textstream import StopMatcher, Utf8Assembler
from engine.types import ChatMessage, LoadSettings, ModelInfo, Piece, SamplingParams, StreamStats

log = logging.getLogger(__name__)
_llama_log = logging.getLogger("llama.cpp")
# ggml_log_level: NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4, CONT=5 (continues the last line)
_LOG_LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING,
               4: logging.ERROR}
_log_callback: Any = None


def _route_llama_logs() -> None:
    """Send llama.cpp's and ggml's log output to Lampchat's log file, never the terminal."""
    global _log_callback
    if _log_callback is not None:
        return
    import llama_cpp  # loads llama.cpp's native library: only when it is used

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        message = text.decode("utf-8", errors="replace").rstrip()
        if message:
            _llama_log.log(_LOG_LEVELS.get(level, logging.DEBUG), "%s", message)

    _log_callback = callback
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


class _LogWriter(io.TextIOBase):
    """A file object that writes lines to the log (for llama-cpp-python's own prints)."""

    def write(self, text: str) -> int:
        if text.strip():
            _llama_log.info("%s", text.rstrip())
        return len(text)


def default_threads() -> int:
    """Physical cores, the thread count llama.cpp runs best with."""
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def gpu_offload_supported() -> bool:
    """Whether this llama.cpp build can offload layers to a GPU."""
    import llama_cpp  # loads llama.cpp's native library: only when it is used

    return bool(llama_cpp.llama_supports_gpu_offload())


def _quantization(metadata: dict[str, str]) -> str:
    import gguf  # gguf takes about 0.1 s to import: only when a GGUF file is read

    file_type = metadata.get("general.file_type")
    if file_type is None:
        return "unknown"
    try:
        name = gguf.LlamaFileType(int(file_type)).name
    except ValueError:
        return f"type {file_type}"
    return name.removeprefix("MOSTLY_")


def _libc_strlen() -> Any:
    """The C library's `strlen` as a ctypes function, or None where it cannot be found."""
    try:
        libc = ctypes.cdll.msvcrt if sys.platform == "win32" else ctypes.CDLL(None)
        return libc.strlen
    except (OSError, AttributeError):
        return None


LLAMA_CMAKE = {
    "cuda": "-DGGML_CUDA=on", "metal": "-DGGML_METAL=on", "vulkan": "-DGGML_VULKAN=on",
    "opencl": "-DGGML_OPENCL=on", "rocm": "-DGGML_HIP=on", "sycl": "-DGGML_SYCL=on",
}
"""The CMake flag that builds llama.cpp for each device kind."""


def _gpu_hint(found: DeviceSet) -> str:
    """How to reinstall llama-cpp-python for the GPU this machine has."""
    if found.has("cuda"):
        kind = "cuda"
    elif found.has("metal") or is_apple_silicon():
        kind = "metal"
    elif any(d.gpu for d in found.by_id.values()):
        kind = "vulkan"
    else:
        return ("for a GPU reinstall with CMAKE_ARGS=-DGGML_CUDA=on (or -DGGML_METAL=on, "
                "-DGGML_VULKAN=on); see README 'GPU installs'")
    return (f"reinstall with CMAKE_ARGS={LLAMA_CMAKE[kind]} for {KIND_LABELS[kind]}: "
            f"CMAKE_ARGS=\"{LLAMA_CMAKE[kind]}\" pip install --force-reinstall --no-cache-dir "
            "llama-cpp-python")


REPACKED_TYPES = frozenset({"Q4_0", "Q4_K", "IQ4_NL"})
"""Weight types a CPU build with REPACK copies into a layout for its SIMD units at load (seen
in llama.cpp's log as a CPU_REPACK buffer; Q4_1, Q6_K, Q8_0, F16 and F32 are used in place)."""


def use_mmap(n_gpu_layers: int, types: set[str]) -> bool:
    """Whether to map the file rather than read it.

    With the file mapped, weights that are repacked stay resident twice: the mapped pages
    touched to repack them, and the copy. A 7B Q4_0 model (3.8 GB) peaked at 7.4 GB of RSS
    mapped and 4.0 GB read (benchmarks/README.md, "7B-shaped"). So a model on the CPU of a
    repacking build whose weights (`types`, ggml type names) get repacked is read; otherwise
    (GPU offload, weights used in place) it is mapped.
    """
    if n_gpu_layers != 0 or not types & REPACKED_TYPES:
        return True
    build = llama_cpp_build()
    return not (build is not None and "REPACK = 1" in build.system_info)


KV_HEADROOM = 0.8
"""A context's KV cache may take at most this share of the memory available at load."""


def context_for(parsed: Any, asked: int) -> int:
    """The context to give llama.cpp: `asked` (0: the model's), at most the length the model
    was trained for (past it a model answers garbage, and `--ctx 1000000000` drove llama.cpp
    to 20 GB); ModelLoadError when its KV cache would not fit the memory available."""
    arch = str(parsed.fields.get("general.architecture") or "")
    trained = parsed.fields.get(f"{arch}.context_length")
    n_ctx = asked or (trained if isinstance(trained, int) else 4096)
    if isinstance(trained, int) and 0 < trained < n_ctx:
        log.info("context %d asked; the model was trained for %d: using %d", n_ctx, trained,
                 trained)
        n_ctx = trained
    layers = parsed.fields.get(f"{arch}.block_count")
    kv_heads = parsed.fields.get(f"{arch}.attention.head_count_kv",
                                 parsed.fields.get(f"{arch}.attention.head_count"))
    dims = (parsed.fields.get(f"{arch}.attention.key_length") or 0) + \
        (parsed.fields.get(f"{arch}.attention.value_length") or 0)
    if not dims and parsed.fields.get(f"{arch}.attention.head_count"):
        embd = parsed.fields.get(f"{arch}.embedding_length") or 0
        dims = 2 * embd // parsed.fields[f"{arch}.attention.head_count"]
    if isinstance(layers, int) and isinstance(kv_heads, int) and dims:
        need = n_ctx * layers * kv_heads * dims * 2  # float16 keys and values
        free = psutil.virtual_memory().available
        if need > KV_HEADROOM * free:
            raise ModelLoadError(f"a context of {n_ctx:,} tokens needs about "
                                 f"{need / 2**30:.1f} GiB for its KV cache and "
                                 f"{free / 2**30:.1f} GiB is free: use a smaller --ctx")
    return n_ctx


class LlamaCppBackend(Backend):
    """Runs GGUF models with llama.cpp; one instance owns one model and one context."""

    name = "llama.cpp"
    formats = ("gguf",)
    install_hint = "pip install llama-cpp-python"
    bench_adapter = "engine.bench.adapters.llama_cpp:ADAPTER"

    @classmethod
    def probe(cls, hardware: Hardware) -> BackendSupport:
        """The build's GPU kinds from its ggml registry; its GPUs join the device list."""
        build = llama_cpp_build()
        if build is None:
            return BackendSupport("llama.cpp", installed=False, hint=cls.install_hint,
                                  problem="llama-cpp-python is not installed")
        found = hardware.found
        counters: dict[str, int] = {}
        for dev in build.devices:
            kind = GGML_KINDS.get(dev["registry"].lower())
            if kind is None or dev["type"] == "cpu":
                continue
            index = counters.get(kind, 0)
            counters[kind] = index + 1
            found.add(kind, index, dev["description"] or dev["name"], "ggml",
                      gpu=dev["type"] in ("gpu", "igpu"), total=dev["total"] or None,
                      free=dev["free"] or None, backend="llama.cpp", ggml_name=dev["name"])
        for kind in build.kinds[1:]:
            found.add_backend(kind, "llama.cpp")
        gpu_kinds = build.kinds[1:]
        if gpu_kinds:
            label = ", ".join(KIND_LABELS.get(k, k) for k in gpu_kinds)
            missing = [k for k in gpu_kinds if not found.has(k)]
            text = f"{label} build"
            hint = (f"no {', '.join(KIND_LABELS.get(k, k) for k in missing)} device found"
                    if missing else None)
        else:
            text = "CPU-only build"
            hint = _gpu_hint(found)
        return BackendSupport("llama.cpp", installed=True, version=build.version,
                              kinds=build.kinds, build=text, hint=hint,
                              problem="; ".join(build.problems) or None)

    @classmethod
    def how_to_get(cls, kind: str) -> str | None:
        """The CMake flag that builds llama.cpp for `kind`."""
        if kind == "metal" and not is_apple_silicon():
            return "Metal needs macOS on Apple silicon"
        return f"reinstall with CMAKE_ARGS={LLAMA_CMAKE[kind]}" if kind in LLAMA_CMAKE else None

    @classmethod
    def check_device(cls, kind: str, index: int | None, spec: str,
                     report: Callable[[], DeviceReport]) -> None:
        """Asks the library itself (its build and ggml devices): "cuda" with a CPU-only build
        fails here instead of silently running on the CPU."""
        label = KIND_LABELS.get(kind, kind)
        build = llama_cpp_build()
        kinds = build.kinds if build else []
        if kind == "gpu":
            if len(kinds) > 1:
                return
            raise DeviceUnavailableError(
                "this llama.cpp build is CPU-only (see README 'GPU installs')"
            )
        if kind not in kinds:
            flag = LLAMA_CMAKE.get(kind)
            how = f"; reinstall with CMAKE_ARGS={flag}" if flag else ""
            built = "CPU-only" if len(kinds) <= 1 else "built for " + ", ".join(kinds[1:])
            raise DeviceUnavailableError(
                f"{label} is not available in this llama.cpp build ({built}{how})"
            )
        assert build is not None
        count = sum(1 for d in build.devices if GGML_KINDS.get(d["registry"].lower()) == kind)
        if count == 0 or (index is not None and index >= count):
            raise DeviceUnavailableError(f"llama.cpp found no {label} device {spec!r}")

    def __init__(self) -> None:
        super().__init__()
        self._llm: Any = None
        self._template: ChatTemplate | None = None
        self._abort_callback: Any = None
        self._abort_flag: Any = None  # ctypes buffer [flag, 0] read by the C callback
        self._add_bos = True
        self._end_of_turn: frozenset[int] = frozenset()
        """End-of-turn tokens the template writes (llama.cpp's own end-of-generation set may
        lack them, e.g. <|im_end|> in a model whose eos is <|endoftext|>)."""

    def load(
        self, model: str, settings: LoadSettings, progress: ProgressCallback | None = None
    ) -> ModelInfo:
        """Validate the GGUF file, then load it with the chat template from its metadata."""
        report = progress or (lambda _f, _w: None)
        path = Path(model).expanduser()
        fmt = detect_format(path).format
        if fmt != "gguf":
            raise ModelLoadError(f"the llama.cpp backend reads GGUF files; {path} is {fmt}")
        report(0.05, "checking file")
        parsed = validate_gguf(path)
        try:
            import llama_cpp  # loads llama.cpp's native library: only when it is used
        except ImportError as exc:
            raise ModelLoadError(f"llama-cpp-python is not installed ({exc})") from exc
        _route_llama_logs()
        n_gpu_layers = settings.n_gpu_layers
        if settings.device == "cpu":
            n_gpu_layers = 0
        elif n_gpu_layers is None:
            n_gpu_layers = -1 if gpu_offload_supported() else 0
        threads = settings.n_threads or default_threads()
        types = {t.qtype.name for t in parsed.tensors if t.name != "token_embd.weight"}
        kwargs = {"use_mmap": use_mmap(n_gpu_layers, types),
                  **settings.options.get("llama_kwargs", {})}
        n_ctx = context_for(parsed, settings.n_ctx)
        report(0.2, "loading weights")
        sink = _LogWriter()
        try:
            # verbose=True keeps llama-cpp-python from redirecting file descriptors 1 and 2
            # (which would blank a running TUI); its prints go to the log instead.
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                llm = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_threads=threads,
                    n_threads_batch=threads,
                    n_gpu_layers=n_gpu_layers,
                    verbose=True,
                    **kwargs,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"llama.cpp could not load {path}: {exc}") from exc
        llm.verbose = False
        self._llm = llm
        report(0.9, "preparing context")
        self._install_abort_callback()
        metadata = dict(llm.metadata)
        vocab = llm._model.vocab
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        bos = llm._model.token_get_text(llm.token_bos()) if llm.token_bos() >= 0 else ""
        eos = llm._model.token_get_text(llm.token_eos()) if llm.token_eos() >= 0 else ""
        template_text = metadata.get("tokenizer.chat_template")
        tokens = parsed.fields.get("tokenizer.ggml.tokens") or []
        if template_text:
            self._template = ChatTemplate("gguf", template_text, bos, eos)
        else:
            arch = str(parsed.fields.get("general.architecture") or "")
            self._template = fallback_template(arch, set(tokens), bos, eos)
        self._template = chosen_template(self._template, settings.chat_template)
        source = self._template.source
        index = {t: i for i, t in enumerate(tokens)}
        self._end_of_turn = frozenset(end_of_turn_ids(self._template, index.get))
        self.settings = settings
        self.info = ModelInfo(
            name=metadata_name(metadata) or path.stem,
            path=str(path),
            backend=self.name,
            device=self._device_label(n_gpu_layers),
            format="gguf",
            quantization=_quantization(metadata),
            n_params=int(llm._model.n_params()),
            context_length=int(llm.n_ctx()),
            file_size=path.stat().st_size,
            chat_template_source=source,
        )
        report(1.0, "ready")
        return self.info

    def _device_label(self, n_gpu_layers: int) -> str:
        if n_gpu_layers == 0 or not gpu_offload_supported():
            return "cpu"
        return "gpu"

    def _install_abort_callback(self) -> None:
        """Let llama.cpp stop mid-decode when a cancel arrives.

        llama.cpp polls the callback at every graph node (hundreds of times per token), so a
        Python callback costs decode speed. Where the C library is reachable, the callback is
        libc's `strlen` over a two-byte buffer `[flag, 0]`: it returns 0 (go on) until
        `cancel` sets the flag to 1 (abort), without entering Python.
        """
        import llama_cpp  # loads llama.cpp's native library: only when it is used

        strlen = _libc_strlen()
        if strlen is not None:
            self._abort_flag = ctypes.create_string_buffer(2)
            self._abort_flag[0] = b"\x01" if self._cancel.is_set() else b"\x00"
            callback = ctypes.cast(strlen, llama_cpp.ggml_abort_callback)
            data = ctypes.cast(self._abort_flag, ctypes.c_void_p)
        else:

            @llama_cpp.ggml_abort_callback
            def callback(_data: ctypes.c_void_p) -> bool:
                return self._cancel.is_set()

            data = ctypes.c_void_p(0)
        self._abort_callback = callback
        llama_cpp.llama_set_abort_callback(self._llm._ctx.ctx, callback, data)

    def cancel(self) -> None:
        """Ask the running generation to stop, mid-decode included (thread-safe)."""
        super().cancel()
        if self._abort_flag is not None:
            self._abort_flag[0] = b"\x01"

    def reset_cancel(self) -> None:
        """Clear a cancel request before a new generation."""
        super().reset_cancel()
        if self._abort_flag is not None:
            self._abort_flag[0] = b"\x00"

    def unload(self) -> None:
        """Free the model, its context and their memory."""
        if self._llm is not None:
            self._llm.close()
            self._llm = None
        self._abort_callback = None
        self._abort_flag = None
        self.info = None
        trim_heap()

    def tokenize_prompt(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The prompt tokens for `messages`, rendered with the model's chat template."""
        assert self._llm is not None and self._template is not None
        prompt = self._template.render(messages)
        add_bos = self._add_bos and not (
            self._template.bos_token and prompt.startswith(self._template.bos_token)
        )
        return self._llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)

    # -- saved KV state --------------------------------------------------------------------

    def cached_tokens(self) -> Sequence[int]:
        """See `Backend.cached_tokens`."""
        llm = self._llm
        return [] if llm is None else [int(t) for t in llm.input_ids[: llm.n_tokens]]

    def export_state(self) -> KVState | None:
        """llama.cpp's context state (`llama_state_get_data`: the KV cells in use, the RNG,
        the last logits) with the tokens it holds."""
        import llama_cpp  # llama.cpp's library: loaded with the model already

        llm = self._llm
        if llm is None or llm.n_tokens == 0:
            return None
        size = llama_cpp.llama_state_get_size(llm._ctx.ctx)
        buffer = (ctypes.c_uint8 * int(size))()
        written = int(llama_cpp.llama_state_get_data(llm._ctx.ctx, buffer, size))
        if written <= 0 or written > size:
            return None
        return KVState(tuple(self.cached_tokens()), bytes(memoryview(buffer)[:written]))

    def import_state(self, state: KVState) -> bool:
        """Restore a state of this model and settings; the next reply evaluates only what
        follows its tokens."""
        import llama_cpp  # llama.cpp's library: loaded with the model already

        llm = self._llm
        if llm is None or not state.tokens or len(state.tokens) >= llm.n_ctx():
            return False
        buffer = (ctypes.c_uint8 * len(state.payload)).from_buffer_copy(state.payload)
        if llama_cpp.llama_state_set_data(llm._ctx.ctx, buffer, len(state.payload)) != \
                len(state.payload):
            return False
        llm.input_ids[: len(state.tokens)] = state.tokens
        llm.n_tokens = len(state.tokens)
        return True

    def state_settings(self) -> dict[str, Any]:
        """See `Backend.state_settings`: the context length and the layers on the GPU."""
        llm = self._llm
        kwargs = (self.settings.options.get("llama_kwargs") if self.settings else None) or {}
        return {"n_ctx": llm.n_ctx() if llm else None,
                "n_gpu_layers": getattr(getattr(llm, "model_params", None), "n_gpu_layers",
                                        None),
                "llama_kwargs": repr(sorted(kwargs.items()))}

    def stream(
        self, messages: Sequence[ChatMessage], sampling: SamplingParams, stats: StreamStats
    ) -> Iterator[Piece]:
        """Generate token by token, detokenizing and matching stop strings as it goes."""
        import llama_cpp  # loads llama.cpp's native library: only when it is used

        llm = self._llm
        if llm is None:
            raise LampchatError("no model is loaded")
        tokens = self.tokens_once(messages, self.tokenize_prompt)
        n_ctx = llm.n_ctx()
        check_context(len(tokens), n_ctx)
        stats.prompt_tokens = len(tokens)
        max_tokens = min(sampling.max_tokens, n_ctx - len(tokens))
        if sampling.seed is not None:
            llm.set_seed(sampling.seed)
        else:
            llm.set_seed(int.from_bytes(os.urandom(4), "little"))
        temp = 0.0 if sampling.greedy else sampling.temperature
        vocab = llm._model.vocab
        utf8 = Utf8Assembler()
        stops = StopMatcher(sampling.stop)
        pending = 0
        count = 0
        stats.finish_reason = "stop"
        generator = llm.generate(
            tokens,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=sampling.min_p,
            temp=temp,
            repeat_penalty=sampling.repeat_penalty,
        )
        try:
            for token in generator:
                if llama_cpp.llama_vocab_is_eog(vocab, token) or token in self._end_of_turn:
                    break
                count += 1
                pending += 1
                text, hit = stops.feed(utf8.feed(llm.detokenize([token])))
                if text:
                    yield Piece(text, pending)
                    pending = 0
                if hit:
                    break
                if count >= max_tokens:
                    stats.finish_reason = "length"
                    break
        except RuntimeError as exc:
            if not self._cancel.is_set():
                raise LampchatError(f"llama.cpp failed while generating: {exc}") from exc
            stats.finish_reason = "cancelled"
        finally:
            generator.close()
        tail = stops.feed(utf8.flush())[0] + stops.flush()
        if tail or pending:
            yield Piece(tail, pending)
