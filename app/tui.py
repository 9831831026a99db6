"""The Lampchat Textual app: the shell around the chat screen, the engine and the stores.

The app owns the `EngineWorker` (one engine thread), the conversation store, the session
metrics and the recently used models. Screens reach them through the app. Model loads run
on Textual workers with progress in the status bar, so the UI never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.message import Message
from textual.screen import Screen

from app.gc_pause import FullCollectionPause
from app.history import Conversation
from app.model_names import resolve_name, with_store_defaults
from app.options import ModelSpec, TuiOptions, options_from_config
from app.screens.chat import ChatScreen
from app.screens.dialogs import ConfirmScreen
from app.screens.help import HelpScreen
from app.screens.metrics import MetricsScreen
from app.slash import COMMANDS
from app.tui_commands import palette_commands, run_slash_line
from app.tui_store import ChatStore
from engine.devices import clear_cache
from engine.errors import LampchatError
from engine.models import default_model_path
from engine.registry import detect, is_local
from engine.types import LoadSettings, ModelInfo, ReplyMetrics, SamplingParams
from engine.worker import EngineWorker
from widgets.key_hold import KeyHoldApp
from widgets.metrics_panel import SessionMetrics, format_mb
from widgets.model_entry import ModelEntry

log = logging.getLogger(__name__)

CSS_FILE = Path(__file__).resolve().parent.parent / "assets" / "lampchat.tcss"
MAX_RECENT = 8
QUIT_TIMEOUT_S = 15.0
SAMPLING_KEYS = frozenset({"temperature", "top_k", "top_p", "min_p", "repeat_penalty",
                           "max_tokens", "seed"})
"""[generation] keys that are SamplingParams fields of the same name."""
LOAD_KEYS = {"generation.context_length": "n_ctx", "backend.threads": "n_threads",
             "backend.gpu_layers": "n_gpu_layers", "backend.device": "device",
             "model.chat_template": "chat_template"}
"""Config keys -> LoadSettings fields (used from the next model load)."""
EXIT_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP")
                     if hasattr(signal, n))


class LoadProgress(Message):
    """Model-load progress, posted from the engine thread."""

    def __init__(self, fraction: float, what: str) -> None:
        super().__init__()
        self.fraction = fraction
        self.what = what


class ModelCommands(Provider):
    """Command palette entries that load a model: one per known model."""

    async def search(self, query: str) -> Hits:
        app = self.app
        assert isinstance(app, LampchatApp)
        matcher = self.matcher(query)
        for spec in await app.known_models():
            text = f"Load model: {spec.title}"
            if (score := matcher.match(text)) > 0:
                yield Hit(score, matcher.highlight(text), partial(app.load_model, spec),
                          help=f"{spec.model} ({spec.backend})")

    async def discover(self) -> Hits:
        app = self.app
        assert isinstance(app, LampchatApp)
        for spec in await app.known_models():
            yield DiscoveryHit(f"Load model: {spec.title}", partial(app.load_model, spec),
                               help=f"{spec.model} ({spec.backend})")


class LampchatApp(KeyHoldApp, App[int]):
    """The full-screen chat app."""

    TITLE = "Lampchat"
    CSS_PATH = str(CSS_FILE)
    COMMANDS = App.COMMANDS | {ModelCommands}
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", priority=True, show=False),  # in help: fits 80 cols
        Binding("f1", "help", "Help"),
        Binding("question_mark", "help", "Help", show=False),
        Binding("f2", "pick_model", "Model"),
        Binding("f3", "settings", "Settings"),
        Binding("f4", "toggle_metrics", "Panel", tooltip="Metrics side panel"),
        Binding("f5", "metrics_screen", "Stats", tooltip="Metrics screen"),
        Binding("ctrl+up", "cycle_model(-1)", "Previous model", show=False),
        Binding("ctrl+down", "cycle_model(1)", "Next model", show=False),
    ]

    def __init__(
        self,
        options: TuiOptions | None = None,
        store: ChatStore | None = None,
        engine: EngineWorker | None = None,
    ) -> None:
        super().__init__()
        self.options = options or TuiOptions()
        self.store: ChatStore = store or ChatStore()
        self.engine = engine or EngineWorker()
        self.session = SessionMetrics()
        self.gc_pause = FullCollectionPause()
        """Full garbage collections wait while a reply streams (see app/gc_pause.py)."""
        self.loading = False
        self.recent: list[ModelSpec] = []
        self.store_entry: ModelEntry | None = None
        """The catalog entry of the loaded model (its store's defaults apply to replies)."""
        self._cycle: list[ModelSpec] | None = None
        """The order Ctrl+Up/Down walk while cycling (None: the next press takes `recent`)."""
        self._prompts: list[str] = []
        self._quitting = False
        self._engine_closed = False
        self._models_cache: list[ModelSpec] | None = None
        self._saved_theme = self.options.theme
        self.unexpected_error: str | None = None
        """What ended the app, when an exception nothing handled did."""
        self.signalled: int | None = None
        """The signal that asked the app to quit, if any."""
        self.exited = threading.Event()
        """Set once the app has fully exited (cancels the signal watchdog)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous_handlers: dict[int, Any] = {}
        self.startup_warnings: list[str] = []
        """Config problems to show once the app is up."""

    # ------------------------------------------------------------------ setup

    def get_default_screen(self) -> Screen[Any]:
        return ChatScreen()

    @property
    def chat(self) -> ChatScreen:
        """The chat screen (always at the bottom of the stack)."""
        screen = self.screen_stack[0]
        assert isinstance(screen, ChatScreen)
        return screen

    async def on_mount(self) -> None:
        if self.options.theme in self.available_themes:
            self.theme = self.options.theme
        elif self.options.theme:
            self.notify(f"unknown theme {self.options.theme!r}; using {self.theme}",
                        severity="warning")
        self._saved_theme = self.theme
        for warning in self.startup_warnings:
            self.notify(warning, title="Config", severity="warning", timeout=10)
        self.theme_changed_signal.subscribe(self, self._on_theme_changed)
        self._loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            for signum in EXIT_SIGNALS:
                with contextlib.suppress(ValueError, OSError):
                    self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    async def chat_ready(self, chat: ChatScreen) -> None:
        """Called once the chat screen is mounted: show a conversation, load the model."""
        conversation = self.initial_conversation()
        await chat.show_conversation(conversation)
        chat.set_model_label("no model loaded")
        if not self.options.skip_initial_load:
            self.load_model(ModelSpec(self.options.model or "", self.options.backend))

    def initial_conversation(self) -> Conversation:
        """The conversation shown at start: --load-history's, or a new one."""
        loaded = self.options.load_history
        if loaded is not None:
            problems = list(loaded.problems)
            try:
                conversation = self.store.adopt(loaded)
            except LampchatError as exc:
                self.notify(str(exc), severity="error")
                conversation = self.store.keep(loaded)
            for problem in problems[:3]:
                self.notify(problem, title="History file damaged", severity="warning")
            return conversation
        # --save-history names the file of a new conversation: it does not take an old one
        if (self.options.resume and self.store.history is not None
                and self.store.save_history is None):
            last = self._last_conversation()
            if last is not None:
                return last
        return self.store.new(self.options.system_prompt)

    def _last_conversation(self) -> Conversation | None:
        """The most recently updated saved conversation that reads whole, if any."""
        try:
            for summary in self.store.list()[:5]:
                if summary.problem is None:
                    conversation = self.store.get(summary.id)
                    if conversation.messages and not conversation.problems:
                        return conversation
        except LampchatError as exc:
            log.info("not resuming: %s", exc)
        return None

    def _on_signal(self, signum: int, frame: Any = None) -> None:
        """SIGINT/SIGTERM/SIGHUP: stop the reply, save it (interrupted), exit.

        A plain Python handler, not the event loop's: when the terminal is gone, Textual's
        output thread dies and the loop can block on a write, yet this still runs (lock waits
        are interrupted by signals). It asks the loop to quit; with `forced_exit_s` set, a
        watchdog thread saves the session and ends the process if that has not happened by
        then (the terminal cannot be restored anyway).
        """
        first = self.signalled is None
        self.signalled = signum
        generation = self.chat.generation if self.screen_stack else None
        if generation is not None:
            generation.cancel()  # thread-safe
        if first and self.options.forced_exit_s is not None:
            threading.Thread(target=self._watchdog, args=(signum, self.options.forced_exit_s),
                             daemon=True, name="lampchat-exit").start()
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(self.call_later, self.action_quit)

    def _watchdog(self, signum: int, delay: float) -> None:
        if self.exited.wait(delay):
            return
        log.error("no clean exit %.0f s after signal %d (terminal gone?); saving and exiting",
                  delay, signum)
        self.save_session()
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        os._exit(128 + signum)

    # ---------------------------------------------------------------- helpers

    def sampling(self) -> SamplingParams:
        """The sampling settings for the next reply (with the loaded model's store defaults
        where the config leaves the default, e.g. Ollama's stop words)."""
        sampling = replace(self.options.sampling)
        if self.store_entry is not None and self.store_entry.params:
            sampling, _ = with_store_defaults(self.store_entry, self.options.config, sampling,
                                              LoadSettings())
        return sampling

    def default_system_prompt(self) -> str:
        """The system prompt new conversations start with."""
        return self.options.system_prompt

    def prompt_history_items(self) -> list[str]:
        """Earlier prompts, oldest first."""
        store = self.options.prompt_history
        if store is not None:
            try:
                return list(store.items())
            except Exception:
                log.exception("could not read the prompt history")
        return list(self._prompts)

    def remember_prompt(self, text: str) -> None:
        """Record a sent prompt for Up/Down recall (persisted when a store is configured)."""
        self._prompts.append(text)
        store = self.options.prompt_history
        if store is not None:
            try:
                store.add(text)
            except Exception as exc:
                log.exception("could not save the prompt history")
                self.notify(f"could not save the prompt history: {exc}", severity="warning")

    @staticmethod
    def format_time(timestamp: float) -> str:
        """A short local time for lists."""
        if not timestamp:
            return ""
        if time.time() - timestamp < 86_400:
            return time.strftime("%H:%M", time.localtime(timestamp))
        return time.strftime("%Y-%m-%d", time.localtime(timestamp))

    def model_label(self, info: ModelInfo | None) -> str:
        """The status bar's description of the loaded model."""
        if info is None:
            return "no model loaded"
        ctx = f" · ctx {info.context_length:,}" if info.context_length else ""
        return f"{info.name} · {info.backend} · {info.device}{ctx}"

    def gpu_memory(self, info: ModelInfo | None) -> str | None:
        """GPU memory in use, where the device reports it."""
        if info is None or info.device in ("", "cpu"):
            return "n/a (model on CPU)"
        try:
            clear_cache()
            for device in detect().devices:
                if device.gpu and device.total_memory:
                    used = device.total_memory - (device.free_memory or 0)
                    return f"{format_mb(used / 2**20)} / {format_mb(device.total_memory / 2**20)}"
        except Exception:
            log.exception("could not read GPU memory")
        return "n/a"

    # ---------------------------------------------------------------- models

    def load_model(self, spec: ModelSpec, settings: LoadSettings | None = None) -> None:
        """Load `spec` in the background (the chat stays usable; progress in the status bar)."""
        self._cycle = None
        if self.loading:
            self.notify("A model is already loading.", severity="warning")
            return
        self.loading = True
        self.run_worker(
            self._load(spec, settings or self.options.load), group="load", exit_on_error=False
        )

    async def _load(self, spec: ModelSpec, settings: LoadSettings) -> None:
        chat = self.chat
        title = spec.title if spec.model else "default model"
        try:
            if chat.generation is not None:
                chat.generation.cancel()
                await chat.wait_for_reply()
            chat.show_loading(0.0, f"loading {title}…")
            progress = lambda fraction, what: self.post_message(  # noqa: E731
                LoadProgress(fraction, what)
            )
            model, entry = spec.model or None, spec.entry
            if entry is None and (spec.backend == "auto" or is_local(spec.backend)):
                entry = await asyncio.to_thread(resolve_name, model, self.options.config)
                if spec.label and entry.source == "path":  # a model known by its name
                    entry = replace(entry, name=spec.label)
            if entry is not None:
                model = entry.path
                _, settings = with_store_defaults(entry, self.options.config,
                                                  self.options.sampling, settings)
            info = await self.engine.load(model, spec.backend, settings, progress)
            self.store_entry = entry
        except LampchatError as exc:
            self.notify(str(exc), title="Model not loaded", severity="error", timeout=10)
            await chat.add_note(f"Model not loaded: {exc}")
            info = self.engine.info
        except Exception as exc:  # never crash on a bad model
            log.exception("loading %s failed", spec.model)
            self.notify(f"could not load {title}: {exc}", title="Model not loaded",
                        severity="error", timeout=10)
            info = self.engine.info
        else:
            self._remember_model(ModelSpec(info.path, info.backend, info.name, entry), spec)
            self.notify(f"Loaded {info.name} ({info.backend}, {info.device}).")
        finally:
            chat.show_loading(None)
        try:
            self.session.model = info
            self.session.context_limit = info.context_length if info else None
            chat.set_model_label(self.model_label(info))
            self.session.gpu_memory = await asyncio.to_thread(self.gpu_memory, info)
            self.session.sample_rss()
            chat.metrics_panel.refresh_metrics()
        finally:
            self.loading = False

    def _remember_model(self, loaded: ModelSpec, asked: ModelSpec) -> None:
        spec = ModelSpec(loaded.model, asked.backend if asked.backend else "auto", loaded.label,
                         loaded.entry)
        self.recent = [spec, *[r for r in self.recent if r.model != spec.model]][:MAX_RECENT]

    def on_load_progress(self, message: LoadProgress) -> None:
        if self.loading:
            self.chat.show_loading(message.fraction, message.what)

    async def known_models(self) -> list[ModelSpec]:
        """Models for the command palette: recent ones, then what `list_models` finds."""
        if self._models_cache is None:
            found: list[ModelSpec] = []
            if self.options.list_models is not None:
                try:
                    found = await asyncio.to_thread(self.options.list_models)
                except Exception:
                    log.exception("listing models failed")
            else:
                try:
                    found = await asyncio.to_thread(self._catalog_specs)
                except Exception:
                    log.exception("listing models failed")
                    try:
                        found = [ModelSpec(str(default_model_path()), "auto",
                                           "SmolLM2-135M-Instruct")]
                    except LampchatError:
                        found = []
            self._models_cache = found
        seen: set[str] = set()
        out: list[ModelSpec] = []
        for spec in [*self.recent, *self._models_cache]:
            if spec.model not in seen:
                seen.add(spec.model)
                out.append(spec)
        return out

    def _catalog_specs(self) -> list[ModelSpec]:
        # loaded on first use: keeps the TUI's start-up fast
        from app.model_catalog import list_models

        return [
            ModelSpec(e.path, e.backend or "auto", e.name, e)
            for e in list_models(self.options.config, include_remote=False)
            if not e.error
        ]

    def action_cycle_model(self, step: int) -> None:
        """Load the next (or previous) recently used model. Cycling walks one fixed order (the
        recent list as it stood at the first press), so Ctrl+Down retraces Ctrl+Up."""
        if len(self.recent) < 2:
            self.notify("No other recently used model; F2 opens the model picker.")
            return
        current = self.engine.info.path if self.engine.info else None
        if self._cycle is None or current not in [r.model for r in self._cycle]:
            self._cycle = list(self.recent)
        models = [r.model for r in self._cycle]
        index = models.index(current) if current in models else 0
        cycle = self._cycle
        self.load_model(cycle[(index + step) % len(cycle)])
        self._cycle = cycle  # load_model starts a new order for any other load

    def action_pick_model(self) -> None:
        """Open the model picker (F2)."""
        # loaded on first use: keeps the TUI's start-up fast
        from app.screens.picker import ModelPickerScreen

        self.run_worker(self._pick_model(ModelPickerScreen), group="picker", exit_on_error=False)

    async def _pick_model(self, screen_cls: Any) -> None:
        # loaded on first use: keeps the TUI's start-up fast
        from app.model_catalog import list_models, load_settings_for, remote_entries

        config = self.options.config
        current = self.engine.info.path if self.engine.info else None
        screen = screen_cls(partial(list_models, config, include_remote=False), current,
                            more=partial(remote_entries, config),
                            download=self.action_download_model)
        choice = await self.push_screen_wait(screen)
        if choice is None:
            return
        try:
            settings = load_settings_for(choice, config, self.options.load)
        except LampchatError as exc:
            self.notify(str(exc), title="Model not loaded", severity="error")
            return
        self.load_model(ModelSpec(choice.model, choice.backend or "auto", choice.name or "",
                                  choice.entry if not choice.endpoint else None), settings)

    def action_download_model(self) -> None:
        """Open the download dialog (Ctrl+D in the picker): a hub repo, its files, a pull in
        the background with its progress under the chat."""
        # loaded on first use: keeps the TUI's start-up fast
        from app.hub_pull import pull_options
        from app.screens.download import DownloadScreen

        def chosen(spec: str | None) -> None:
            if spec:
                self.run_worker(self._pull(spec), group="pull", exit_on_error=False)

        self.push_screen(DownloadScreen(pull_options), chosen)

    async def _pull(self, spec: str) -> None:
        # loaded on first use: keeps the TUI's start-up fast
        from app.hub_pull import plan_pull, pull

        chat = self.chat

        def progress(done: int, total: int, what: str) -> None:
            self.call_from_thread(self._pull_progress, done / total if total else 1.0, what)

        try:
            plan = await asyncio.to_thread(plan_pull, spec)
            self.notify(f"Downloading {plan.label}…")
            path = await asyncio.to_thread(pull, plan, None, progress)
        except LampchatError as exc:
            self.notify(str(exc), title="Download stopped", severity="error", timeout=10)
            await chat.add_note(f"Download stopped: {exc}")
            return
        except Exception as exc:  # never crash on a download
            log.exception("pulling %s failed", spec)
            self.notify(f"could not download {spec}: {exc}", severity="error", timeout=10)
            return
        finally:
            if not self.loading:
                chat.show_loading(None)
        log.info("pulled %s to %s", plan.label, path)
        self.notify(f"Downloaded {plan.label}: choose it in the model picker (F2).", timeout=8)
        await chat.add_note(f"Downloaded {plan.label} ({path}).")

    def _pull_progress(self, fraction: float, what: str) -> None:
        if not self.loading:  # a model load shows its own progress there
            self.chat.show_loading(fraction, f"downloading {what}")

    def action_settings(self) -> None:
        """Open the settings screen (F3)."""
        # loaded on first use: keeps the TUI's start-up fast
        from app.screens.settings import SettingsScreen

        if self.options.config is None:
            self.notify("Settings need the config module.", severity="warning")
            return
        self.push_screen(SettingsScreen(self.options.config), self._settings_done)

    def _settings_done(self, result: Any) -> None:
        if result is None:
            return
        self.apply_config(result.config, set(result.changed))
        if result.reload_needed:
            def answer(yes: bool | None) -> None:
                if yes:
                    self.reload_model()

            self.push_screen(
                ConfirmScreen("These changes need the model to be reloaded. Reload now?",
                              "Reload", "Later"),
                answer,
            )

    def apply_config(self, config: Any, changed: set[str]) -> None:
        """Apply the changed keys (F3, /set) on top of what is in use: sampling, system
        prompt and theme live; load settings for the next load. Keys that did not change keep
        their current values, command-line flags included."""
        fresh = options_from_config(config, self.options)
        options = self.options
        options.config = config
        sampling = {k.split(".", 1)[1]: getattr(fresh.sampling, k.split(".", 1)[1])
                    for k in changed if k.split(".", 1)[1] in SAMPLING_KEYS
                    and k.startswith("generation.")}
        if sampling:
            options.sampling = replace(options.sampling, **sampling)
        load = {field: getattr(fresh.load, field) for key, field in LOAD_KEYS.items()
                if key in changed}
        if load:
            options.load = replace(options.load, **load)
        if "generation.system_prompt" in changed:
            options.system_prompt = fresh.system_prompt
        if "backend.default" in changed:
            options.backend = fresh.backend
        if "model.default" in changed:
            options.model = fresh.model
        if "ui.theme" in changed and fresh.theme in self.available_themes:
            self.theme = fresh.theme
        if "ui.show_metrics" in changed:
            options.show_metrics = fresh.show_metrics
            self.chat.metrics_panel.display = fresh.show_metrics
        self._models_cache = None

    def reload_model(self) -> None:
        """Load the current model again with the current load settings."""
        info = self.engine.info
        spec = ModelSpec(info.path, self.options.backend, info.name) if info else ModelSpec(
            self.options.model or "", self.options.backend
        )
        self.load_model(spec)

    # ----------------------------------------------------------------- theme

    def _on_theme_changed(self, theme: Any) -> None:
        name = getattr(theme, "name", str(theme))
        if name == self._saved_theme:
            return
        self._saved_theme = name
        if self.options.save_theme is not None:
            try:
                self.options.save_theme(name)
            except Exception as exc:
                log.exception("saving the theme failed")
                self.notify(f"could not save the theme: {exc}", severity="warning")

    # --------------------------------------------------------------- screens

    def action_help(self) -> None:
        """Show the help screen."""
        if isinstance(self.screen, HelpScreen):
            return
        bindings = [*self.BINDINGS, *ChatScreen.BINDINGS]
        self.push_screen(HelpScreen([b for b in bindings if isinstance(b, Binding)],
                                    self.slash_help()))

    def action_toggle_metrics(self) -> None:
        """Show or hide the metrics side panel (F4)."""
        if self.chat.toggle_metrics_panel():
            self.session.sample_rss()
            self.chat.metrics_panel.refresh_metrics()

    def action_metrics_screen(self) -> None:
        """Open the full metrics screen (F5)."""
        if isinstance(self.screen, MetricsScreen):
            self.screen.dismiss(None)
            return
        self.push_screen(MetricsScreen(self.session))

    def notify(self, message: str, *, title: str = "", severity: Any = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        """A toast. Its text is shown as written: messages carry user and error text (paths,
        `pip install 'lampchat[mlx]'`), which Rich markup would eat, so markup is off unless a
        caller asks for it."""
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def reply_finished(self, metrics: ReplyMetrics | None) -> None:
        """Called by the chat screen when a reply ends."""
        if metrics is not None:
            self.session.sample_rss()

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from palette_commands(self)

    # ---------------------------------------------------------------- slash

    def slash_help(self) -> list[tuple[str, str]]:
        """(usage, help) of every slash command, for the help screen."""
        return [(c.usage, c.help) for c in COMMANDS.values()]

    async def run_slash(self, line: str) -> None:
        """Run a slash command typed in the input (app.slash), then do what it asks."""
        await run_slash_line(self, line)

    # ---------------------------------------------------------------- errors

    def _handle_exception(self, error: Exception) -> None:
        """An exception nothing handled: Textual would print a traceback and exit. Here it
        goes to the log file, the session is saved and the app exits with a one-line
        message (app/tui_main.py prints it)."""
        if not self.options.quiet_errors:
            super()._handle_exception(error)
            return
        log.error("unexpected error: %s", error, exc_info=error)
        self.unexpected_error = f"{type(error).__name__}: {error}"
        self._return_code = 1
        self.save_session()
        self._close_messages_no_wait()

    # ------------------------------------------------------------------ quit

    async def action_quit(self) -> None:
        """Stop the reply, close the engine (no thread left running), then exit."""
        if self._quitting:
            return
        self._quitting = True
        self.run_worker(self._quit(), group="quit", exit_on_error=False)

    async def _quit(self) -> None:
        try:
            await asyncio.wait_for(self.shutdown_engine(), QUIT_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.error("the engine did not stop within %.0f s", QUIT_TIMEOUT_S)
        self.exit(128 + self.signalled if self.signalled else 0)

    async def shutdown_engine(self) -> None:
        """Cancel the running reply (it is saved, marked stopped), close the engine thread."""
        if self._engine_closed:
            return
        chat = self.chat
        if chat.generation is not None:
            chat.generation.cancel()
            await chat.wait_for_reply()
        self.save_session()
        await self.engine.close()
        self._engine_closed = True

    def save_session(self) -> None:
        """Keep whatever is in flight (marked interrupted) and write --save-history's file."""
        try:
            self.store.interrupt_all()
            self.store.write_mirror()
        except Exception:
            log.exception("saving the session failed")

    async def on_unmount(self) -> None:
        for signum, handler in self._previous_handlers.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(signum, handler)
        self._previous_handlers.clear()
        if not self._engine_closed:
            try:
                await asyncio.wait_for(self.engine.close(), QUIT_TIMEOUT_S)
            except Exception:
                log.exception("closing the engine failed")
            self._engine_closed = True
