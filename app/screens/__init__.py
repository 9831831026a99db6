"""Screens of the Lampchat TUI, and the contracts between them and the app shell (app/tui.py).

Owners: D1 owns the app shell (app/tui.py), chat.py, help.py, metrics.py; D2 owns picker.py,
settings.py and their widgets (widgets/model_table.py, widgets/config_form.py, ...).

Contracts (both sides follow these; change them only together):

Model picker (D2) -- ``app/screens/picker.py`` (full contract in its module docstring)::

    class ModelPickerScreen(ModalScreen[ModelChoice | None]):
        def __init__(self, entries: list[ModelEntry] | Callable[[], list[ModelEntry]],
                     current: str | None = None, *, query: str = "",
                     more: Callable[[], list[ModelEntry]] | None = None) -> None

  ``ModelEntry`` and ``ModelChoice`` are dataclasses in ``widgets/model_entry.py``, re-exported
  by ``widgets/model_table.py``. A ``ModelChoice`` carries ``model: str`` (path or name, what
  ``EngineWorker.load`` takes), ``backend: str`` (a backend name; Tab in the picker switches
  it), ``name`` and ``endpoint`` (the ``[remote.NAME]`` of a remote model, else None). The
  screen filters as you type and dismisses with the choice (Enter) or ``None`` (Esc). It
  never loads anything itself. Callables in ``entries``/``more`` run on a thread worker
  while the picker is already open.

  D2 also provides, in ``app/model_catalog.py``: ``list_models(config, *, include_remote=True)
  -> list[ModelEntry]`` (the default model, every model found under ``model.dirs``, then the
  remote endpoints' models; ``config`` may be None), ``remote_entries(config)`` (the remote
  part alone: servers can take seconds, so open the picker with
  ``ModelPickerScreen(partial(list_models, config, include_remote=False), current,
  more=partial(remote_entries, config))``) and ``load_settings_for(choice, config, settings)``
  (adds a remote endpoint's options to the load settings; returns ``settings`` otherwise).

Settings (D2) -- ``app/screens/settings.py``::

    class SettingsScreen(Screen[SettingsResult | None]):
        def __init__(self, config: Config) -> None

  ``SettingsResult`` (dataclass, same module) has ``changed: dict[str, Any]`` (dotted key ->
  new value, e.g. ``"generation.temperature"``; ``set(result.changed)`` gives the keys),
  ``needs_reload: bool`` (alias ``reload_needed``: backend, device, fallback, context
  length, threads, gpu layers or remote endpoints changed), ``saved: bool`` (False when the
  file could not be written; the changes still apply to the session) and ``config: Config``
  (the same object, with the changes set on it). ``None`` means cancelled.

What the shell (D1) does with them:

- F2 pushes the picker, then loads the chosen model in the background (``EngineWorker.load`` on a
  Textual worker, with a progress bar); the UI stays responsive and the conversation continues.
  A failed load is a notification; the previous model stays loaded.
- F3 pushes the settings screen, then applies live settings (sampling, system prompt, theme)
  and, when ``reload_needed``, offers to reload the model.
- Ctrl+Up / Ctrl+Down cycle the recently used models; the command palette (Ctrl+P) has an
  entry for every model from ``list_models`` and for every action.
"""
