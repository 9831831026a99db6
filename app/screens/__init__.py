"""The TUI's screens: chat (the main screen), model picker (F2), settings (F3), metrics (F5),
help (F1), bench charts and small dialogs. Each screen's module documents what it takes and
what it dismisses with; `app/tui.py` pushes them and acts on their results."""
