"""The interface every backend implements."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

from engine.devices import BackendSupport, DeviceReport, Hardware, device_unavailable
from engine.errors import LampchatError
from engine.kv_store import KVState
from engine.types import ChatMessage, LoadSettings, ModelInfo, Piece, SamplingParams, StreamStats

log = logging.getLogger(__name__)

_THREAD_EXIT_HOOKS: list[Callable[[], None]] = []


def at_thread_exit(hook: Callable[[], None]) -> None:
    """Register `hook` to run on a thread that used a backend, before that thread ends.

    For libraries with per-thread state that must be torn down by hand (MLX's streams).
    """
    if hook not in _THREAD_EXIT_HOOKS:
        _THREAD_EXIT_HOOKS.append(hook)


def run_thread_exit_hooks() -> None:
    """Run the registered hooks on the calling thread (the engine thread as it closes)."""
    for hook in _THREAD_EXIT_HOOKS:
        try:
            hook()
        except Exception:
            log.exception("thread exit hook %r failed", hook)

ProgressCallback = Callable[[float, str], None]
"""Called with (fraction done in [0, 1], what is happening)."""


def check_context(n_prompt: int, n_ctx: int) -> None:
    """Raise a clear error when a prompt of `n_prompt` tokens leaves no room in the context."""
    if n_prompt >= n_ctx:
        raise LampchatError(
            f"the conversation is {n_prompt} tokens, more than the context of {n_ctx}; "
            "start a new conversation or raise the context length"
        )


class Backend(ABC):
    """A model runtime. All calls except `cancel` come from the engine thread.

    Lifecycle: `load` -> any number of `stream` -> `unload`. `stream` is a
    generator; the worker closes it early when the user cancels, and `cancel`
    (thread-safe) asks a running decode step to stop as soon as it can.
    """

    name: ClassVar[str]
    """The name users type (`--backend`)."""
    formats: ClassVar[tuple[str, ...]] = ()
    """Model formats it reads (`engine.formats.detect` names)."""
    families: ClassVar[frozenset[str] | None] = None
    """Model architectures it runs (`model_type` / `general.architecture`); None: whatever its
    library knows, which Lampchat cannot list."""
    local: ClassVar[bool] = True
    """Runs on this machine, so the device setting applies (False: on a server)."""
    install_hint: ClassVar[str] = ""
    """What to install when its library is missing."""
    auto_kinds: ClassVar[tuple[str, ...] | None] = None
    """Device kinds automatic choice may pick (None: every kind its build supports)."""
    bench_adapter: ClassVar[str | None] = None
    """"module:attribute" of its `engine.bench.adapters.BenchAdapter` (None: the generic one)."""

    @classmethod
    def runs(cls, family: str | None) -> bool:
        """Whether it runs models of architecture `family` (unknown: assume so)."""
        return family is None or cls.families is None or family.lower() in cls.families

    @classmethod
    def probe(cls, hardware: Hardware) -> BackendSupport:
        """What its installed build can run on; adds itself to the devices it can use."""
        return BackendSupport(cls.name, installed=True, kinds=["cpu"], build="CPU")

    @classmethod
    def how_to_get(cls, kind: str) -> str | None:
        """What to install to use device kind `kind`, or None if nothing would."""
        return None

    @classmethod
    def check_device(cls, kind: str, index: int | None, spec: str,
                     report: Callable[[], DeviceReport]) -> None:
        """Raise DeviceUnavailableError unless it can run on device `spec` here."""
        full = report()
        support = full.support(cls.name)
        if support is None or not support.installed:
            return  # creating the backend reports the missing package
        device_unavailable(cls.name, kind, index, spec, full, support)

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self.info: ModelInfo | None = None
        self.settings: LoadSettings | None = None
        self._tokens_memo: tuple[ModelInfo | None, tuple[ChatMessage, ...], list[int]] | None = None

    @abstractmethod
    def load(
        self, model: str, settings: LoadSettings, progress: ProgressCallback | None = None
    ) -> ModelInfo:
        """Load `model` (a path or a backend-specific name) and describe it."""

    @abstractmethod
    def unload(self) -> None:
        """Release the model and its memory."""

    @abstractmethod
    def stream(
        self, messages: Sequence[ChatMessage], sampling: SamplingParams, stats: StreamStats
    ) -> Iterator[Piece]:
        """Yield the reply piece by piece, filling `stats` as it goes.

        Sets `stats.prompt_tokens` before the first piece and
        `stats.finish_reason` before returning.
        """

    # -- saved KV state (engine.kv_store): backends that can, override these ---------------

    kv_state_why_not: ClassVar[str] = "this backend cannot save its KV cache"
    """Said in the log when a conversation's state cannot be kept."""

    def prompt_tokens(self, messages: Sequence[ChatMessage]) -> list[int] | None:
        """The tokens `messages` are sent as, for a loaded backend with a `tokenize_prompt`
        of its own (None: not known before streaming, e.g. a server's)."""
        tokenize = getattr(self, "tokenize_prompt", None)
        if tokenize is None or self.info is None:
            return None
        return self.tokens_once(messages, tokenize)

    def tokens_once(
        self, messages: Sequence[ChatMessage], tokenize: Callable[[Sequence[ChatMessage]], Any]
    ) -> list[int]:
        """`tokenize(messages)`, remembered for the next call with the same messages and model:
        the worker reads a prompt's tokens (to restore a saved state) just before streaming
        it, and the prompt is rendered and tokenized once, not twice."""
        key = tuple(messages)
        memo = self._tokens_memo
        if memo is not None and memo[0] is self.info and memo[1] == key:
            return list(memo[2])
        tokens = list(tokenize(messages))
        self._tokens_memo = (self.info, key, tokens)
        return list(tokens)

    def cached_tokens(self) -> Sequence[int]:
        """The tokens the KV cache holds now."""
        return ()

    def export_state(self) -> KVState | None:
        """The KV cache as bytes, with the tokens it holds (None: nothing, or not possible)."""
        return None

    def import_state(self, state: KVState) -> bool:
        """Make the KV cache hold `state` (from `export_state` of the same model and
        settings); False when it cannot."""
        return False

    def state_settings(self) -> dict[str, Any]:
        """The settings a saved state is only valid for (beyond the model file)."""
        return {"n_ctx": self.settings.n_ctx if self.settings else None}

    def cancel(self) -> None:
        """Ask the current generation to stop (thread-safe)."""
        self._cancel.set()

    def reset_cancel(self) -> None:
        """Clear a cancel request before a new generation."""
        self._cancel.clear()

    @property
    def cancelled(self) -> bool:
        """Whether a cancel was requested for the current generation."""
        return self._cancel.is_set()
