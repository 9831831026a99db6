"""The interface every backend implements."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar

from engine.errors import LampchatError
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

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self.info: ModelInfo | None = None
        self.settings: LoadSettings | None = None

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
