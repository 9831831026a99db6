"""Screens of the Lampchat TUI, and the contracts between them and the app shell (app/tui.py).

Owners: D1 owns the app shell (app/tui.py), chat.py, help.py, metrics.py; D2 owns picker.py,
settings.py and their widgets (widgets/model_table.py, widgets/settings_form.py, ...).

Contracts (both sides follow these; change them only together):

Model picker (D2) -- ``app/screens/picker.py``::

    class ModelPickerScreen(ModalScreen[ModelChoice | None]):
        def __init__(self, entries: list[ModelEntry], current: str | None = None) -> None

  ``ModelEntry`` and ``ModelChoice`` are dataclasses in ``widgets/model_table.py``. A
  ``ModelChoice`` carries at least ``model: str`` (path or name, what ``EngineWorker.load``
  takes) and ``backend: str`` ("auto" or a backend name). The screen filters as you type and
  dismisses with the chosen entry (Enter) or ``None`` (Esc). It never loads anything itself.

  D2 also provides ``list_models(config) -> list[ModelEntry]`` (in ``app/model_list.py``): the
  default model, every model found under the configured ``model.dirs``, and later remote
  models. It may be slow (it reads file headers): the shell calls it on a thread worker.

Settings (D2) -- ``app/screens/settings.py``::

    class SettingsScreen(Screen[SettingsResult | None]):
        def __init__(self, config: Config) -> None

  ``SettingsResult`` (dataclass, same module) has ``changed: set[str]`` (dotted keys such as
  ``"generation.temperature"``), ``reload_needed: bool`` (backend, device, context length,
  threads, gpu layers changed) and ``config: Config`` (the edited config, already saved when
  the user chose Save). ``None`` means cancelled.

What the shell (D1) does with them:

- F2 pushes the picker, then loads the chosen model in the background (``EngineWorker.load`` on a
  Textual worker, with a progress bar); the UI stays responsive and the conversation continues.
  A failed load is a notification; the previous model stays loaded.
- F3 pushes the settings screen, then applies live settings (sampling, system prompt, theme)
  and, when ``reload_needed``, offers to reload the model.
- Ctrl+Up / Ctrl+Down cycle the recently used models; the command palette (Ctrl+P) has an
  entry for every model from ``list_models`` and for every action.
"""
