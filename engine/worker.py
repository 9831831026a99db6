"""The asyncio-facing engine: one thread owns the loaded model and runs one generation at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from engine.backends.base import Backend, ProgressCallback, run_thread_exit_hooks
from engine.controls import without_controls
from engine.errors import LampchatError
from engine.kv_store import KVStateStore, model_identity
from engine.memory import trim_heap
from engine.metrics import ReplyClock
from engine.models import friendly_name, is_generic, resolve_model
from engine.registry import create_backend
from engine.selection import Candidate, load_with_fallback, plan_load
from engine.types import (
    ChatMessage,
    LoadSettings,
    ModelInfo,
    Piece,
    ReplyMetrics,
    SamplingParams,
    StreamStats,
)

log = logging.getLogger(__name__)

_DONE = object()


class _Handoff:
    """Pieces from the engine thread to the event loop, waking the loop at most once per batch.

    The engine thread appends to a deque and schedules a wake-up only when none is pending, so
    a consumer that keeps up still gets every token at once, while one that lags (a busy UI)
    takes the backlog in one go instead of one loop callback per token. With `min_interval`,
    wake-ups are also at least that far apart (the first piece and the end still wake at
    once): a consumer that only shows text a few times a second need not wake for every token.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, min_interval: float = 0.0) -> None:
        self._loop = loop
        self._items: deque[object] = deque()
        self._ready = asyncio.Event()
        self._wake_pending = False
        self._min_interval = min_interval
        self._next_wake = 0.0

    def put(self, item: object) -> None:
        """Engine thread: queue `item`, waking the loop unless a wake-up is already on its way
        or, with `min_interval`, the last one was too recent."""
        self._items.append(item)
        if self._wake_pending:
            return
        now = time.monotonic()
        if item is _DONE or now >= self._next_wake:
            self._wake_pending = True
            self._next_wake = now + self._min_interval
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._wake_pending = False
        self._ready.set()
        if self._min_interval:  # what comes before the next wake-up waits at most this long
            self._loop.call_later(self._min_interval, self._wake_if_waiting)

    def _wake_if_waiting(self) -> None:
        self._next_wake = 0.0  # the next piece wakes the loop at once
        if self._items:
            self._ready.set()

    async def get(self) -> object:
        """Loop: the next item, waiting for one if none is queued."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()


class Generation:
    """One streaming reply. Iterate it for pieces; afterwards read `text`, `metrics`, `error`.

    A backend failing mid-stream does not raise: the partial text is kept, and
    `metrics.finish_reason` is "error" with `error` holding the one-line message.
    """

    def __init__(
        self, worker: EngineWorker, messages: Sequence[ChatMessage], sampling: SamplingParams,
        wake_interval: float = 0.0, conversation: str | None = None,
    ) -> None:
        self._worker = worker
        self._messages = list(messages)
        self._sampling = sampling
        self._wake_interval = wake_interval
        self._conversation = conversation
        self.restored_tokens = 0
        """Tokens of the prompt that a saved KV state supplied (0: none was used)."""
        self._cancel = threading.Event()
        self.text = ""
        self.metrics: ReplyMetrics | None = None
        self.error: str | None = None

    def cancel(self) -> None:
        """Stop this reply within one token (thread-safe; harmless once finished)."""
        self._cancel.set()
        backend = self._worker.backend
        if backend is not None and self._worker._running is self:
            backend.cancel()

    def __aiter__(self) -> AsyncIterator[Piece]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[Piece]:
        worker = self._worker
        async with worker._lock:
            if worker.backend is None:
                raise LampchatError("no model is loaded")
            loop = asyncio.get_running_loop()
            handoff = _Handoff(loop, self._wake_interval)
            worker._running = self
            future = loop.run_in_executor(worker._executor, self._run, worker.backend, handoff)
            try:
                while True:
                    item = await handoff.get()
                    if item is _DONE:
                        break
                    assert isinstance(item, Piece)
                    self.text += item.text
                    yield item
            finally:
                if not future.done():
                    self.cancel()
                await asyncio.shield(future)
                worker._running = None

    def _run(self, backend: Backend, handoff: _Handoff) -> None:
        """Engine thread: drive the backend's generator and hand pieces to the loop."""
        put = handoff.put
        clock = ReplyClock()
        stats = StreamStats()
        backend.reset_cancel()
        if self._cancel.is_set():
            backend.cancel()
        finish = None
        produced, capped = 0, False
        store, conversation = self._worker.kv_store, self._conversation
        identity = None
        if store is not None and conversation and backend.info is not None:
            identity = model_identity(backend.info.path, backend.name,
                                      **backend.state_settings())
            self._restore(backend, store, conversation, identity)
        try:
            pieces = backend.stream(self._messages, self._sampling, stats)
            try:
                for piece in pieces:
                    if self._cancel.is_set():
                        break
                    clock.token(piece.n_tokens)
                    clean = without_controls(piece.text)  # never a terminal sequence
                    put(piece if clean is piece.text else Piece(clean, piece.n_tokens))
                    produced += piece.n_tokens
                    if produced >= self._sampling.max_tokens:  # whatever a server sends on
                        capped = True
                        break
            finally:
                pieces.close()
        except LampchatError as exc:
            self.error = str(exc)
        except Exception as exc:  # a backend failing mid-stream must not kill the app
            log.exception("backend %s failed mid-stream", backend.name)
            self.error = f"{backend.name} failed: {exc}"
        clock.finish()
        if self.error is not None:
            finish = "error"
        elif self._cancel.is_set() or backend.cancelled:
            finish = "cancelled"
        elif capped:
            finish = "length"
        else:
            finish = stats.finish_reason or "stop"
        try:
            self.metrics = clock.metrics(
                backend.info, stats.prompt_tokens, finish, stats.tokens_estimated, self.error
            )
        except Exception as exc:  # absurd counts from a backend: the reply still ends
            log.exception("metrics of the reply failed")
            self.error = self.error or f"the reply's metrics could not be computed: {exc}"
            self.metrics = clock.metrics(backend.info, 0, "error", True, self.error)
        finally:
            put(_DONE)  # the waiting caller always hears the end
        if identity is not None and finish != "error":  # next on this thread, after the reply
            self._worker._executor.submit(self._save_state, backend, store, conversation,
                                          identity)

    def _restore(self, backend: Backend, store: KVStateStore, conversation: str,
                 identity: dict[str, object]) -> None:
        """Load the conversation's saved state when it holds more of this prompt than the
        cache does now (never trusted across models or settings: see `KVStateStore.load`)."""
        try:
            prompt = backend.prompt_tokens(self._messages)
            if prompt is None:
                return
            have = _common_prefix(backend.cached_tokens(), prompt)
            state = store.load(conversation, identity)
            if state is None or _common_prefix(state.tokens, prompt) <= have:
                return
            if backend.import_state(state):
                self.restored_tokens = _common_prefix(state.tokens, prompt)
                log.info("restored %d tokens of %s's KV state", self.restored_tokens,
                         conversation)
        except Exception:  # a state is an optimisation: the reply goes on without it
            log.exception("restoring the KV state of %s failed", conversation)

    @staticmethod
    def _save_state(backend: Backend, store: KVStateStore, conversation: str,
                    identity: dict[str, object]) -> None:
        try:
            state = backend.export_state()
            if state is not None:
                store.save(conversation, identity, state)
        except Exception:  # never a failure a user sees: the next resume is only slower
            log.exception("saving the KV state of %s failed", conversation)


class EngineWorker:
    """Owns the loaded model on one dedicated thread; switch models without restarting."""

    def __init__(self, kv_store: KVStateStore | None = None) -> None:
        self.kv_store = kv_store
        """Where replies' KV states are kept per conversation (None: not kept)."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lampchat-engine")
        self._lock = asyncio.Lock()
        self._running: Generation | None = None
        self.backend: Backend | None = None
        self.fallback_note: str | None = None
        """What failed before the loaded backend/device was chosen (None: the first choice)."""

    @property
    def info(self) -> ModelInfo | None:
        """What is loaded, or None."""
        return self.backend.info if self.backend else None

    @property
    def busy(self) -> bool:
        """Whether a generation is running."""
        return self._running is not None

    async def load(
        self,
        model: str | None = None,
        backend: str = "auto",
        settings: LoadSettings | None = None,
        progress: ProgressCallback | None = None,
        fallback: Sequence[str] | None = None,
    ) -> ModelInfo:
        """Load a model (the default one when `model` is empty), replacing what is loaded.

        `progress` is called from the engine thread. Backend and device are chosen by
        `engine.selection.plan_load` (`settings.device`, `fallback`); when a choice fails to
        load the next is tried and `fallback_note` says what failed and what was chosen.
        If nothing loads, the previous model is loaded again and the error is raised.
        """
        settings = settings or LoadSettings()
        async with self._lock:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor, self._load_sync, model, backend, settings, progress, fallback
            )

    def _load_sync(
        self,
        model: str | None,
        backend_name: str,
        settings: LoadSettings,
        progress: ProgressCallback | None,
        fallback: Sequence[str] | None = None,
    ) -> ModelInfo:
        path = resolve_model(model)
        plan = plan_load(path, backend_name, settings.device, fallback)
        previous = self.backend
        previous_spec = None
        if previous is not None and previous.info is not None:
            previous_spec = (previous.info.path, previous.name, getattr(previous, "settings", None))
            self._unload_sync()

        def attempt(candidate: Candidate) -> Backend:
            new = create_backend(candidate.backend)
            try:
                new.load(path, replace(settings, device=candidate.device), progress)
            except BaseException:
                with contextlib.suppress(Exception):  # keep the load error, not a cleanup one
                    new.unload()
                raise
            return new

        try:
            new, _chosen, self.fallback_note = load_with_fallback(plan, attempt)
        except Exception:
            if previous_spec is not None:
                self._reload(previous_spec)
            raise
        self.backend = new
        if new.info is not None and new.local:  # one name everywhere (a server names its own)
            name = friendly_name(Path(path))
            new.info.name = settings.label or (new.info.name if is_generic(name) else name)
        return new.info  # type: ignore[return-value]

    def _flush_states(self) -> None:
        if self.kv_store is not None:
            self.kv_store.flush()

    def _reload(self, spec: tuple[str, str, LoadSettings | None]) -> None:
        path, name, settings = spec
        try:
            backend = create_backend(name)
            backend.load(path, settings or LoadSettings())
            self.backend = backend
        except Exception:
            log.exception("could not reload the previous model %s", path)

    def _unload_sync(self) -> None:
        if self.backend is not None:
            self.backend.unload()
            self.backend = None
            trim_heap()

    async def unload(self) -> None:
        """Unload the model and release its memory."""
        async with self._lock:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._unload_sync)

    def generate(
        self, messages: Sequence[ChatMessage], sampling: SamplingParams,
        wake_interval: float = 0.0, conversation: str | None = None,
    ) -> Generation:
        """Start a reply to `messages`; iterate the result to run it.

        With `wake_interval`, the event loop is woken for new pieces at most that often (the
        first piece and the end at once): for a consumer that shows text a few times a second.
        With `conversation` (an id) and a `kv_store`, the conversation's saved KV state is
        restored first when it holds more of the prompt than the cache, and saved after.
        """
        sampling.validate()
        return Generation(self, messages, sampling, wake_interval, conversation)

    def cancel(self) -> None:
        """Cancel the running generation, if any."""
        if self._running is not None:
            self._running.cancel()

    async def close(self) -> None:
        """Cancel, unload and stop the engine thread (saved KV states written first)."""
        self.cancel()
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._flush_states)
            await self.unload()
        finally:
            with contextlib.suppress(RuntimeError):  # the executor is already shut down
                await asyncio.get_running_loop().run_in_executor(
                    self._executor, run_thread_exit_hooks
                )
            self._executor.shutdown(wait=True, cancel_futures=True)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
