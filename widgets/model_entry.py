"""What the model picker lists and returns: plain dataclasses and formatting, no Textual.

`app.model_catalog` builds `ModelEntry` values headlessly; `widgets.model_table` shows them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any


@dataclass(frozen=True)
class ModelEntry:
    """One model the picker can offer.

    `path` is what to load (a file or folder; for a remote model, the model name the server
    knows). `backends` lists the backends that can run it, preferred first. `error` is set
    (one line) when the model is damaged or unreadable; such an entry is shown but cannot be
    chosen. `endpoint` names the `[remote.NAME]` endpoint for remote models, else None.
    """

    name: str
    path: str
    format: str
    backends: tuple[str, ...] = ()
    file_size: int | None = None
    quantization: str | None = None
    n_params: int | None = None
    context_length: int | None = None
    endpoint: str | None = None
    error: str | None = None
    is_default: bool = False
    chat_template: str | None = None
    """Which chat template the model is run with, and where it comes from."""
    source: str = ""
    """Where it was found: "bundled", "dirs" (`model.dirs`), a store ("ollama",
    "huggingface", "lmstudio", "gpt4all", "llama.cpp") or "remote"."""
    params: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    """Generation defaults its store keeps for it (Ollama's params: stop, temperature, ...)."""
    system: str | None = field(default=None, compare=False, hash=False)
    """The system prompt its store keeps for it (Ollama's system layer)."""

    @property
    def backend(self) -> str:
        """The preferred backend ("auto" when none is known)."""
        return self.backends[0] if self.backends else "auto"

    @property
    def usable(self) -> bool:
        """Whether the entry can be chosen (not damaged)."""
        return self.error is None

    def search_text(self) -> str:
        """Lower-case text that filtering matches against: the name and what the columns show,
        and the file's own name, but not the folders above it (a checkout at ~/lampchat must
        not make "chat" match every model in it)."""
        parts = [self.name, self.format, *self.backends, self.quantization or "",
                 format_params(self.n_params), PurePath(self.path).name, self.endpoint or "",
                 self.source,
                 "default" if self.is_default else "", "damaged" if self.error else ""]
        return " ".join(parts).lower()


@dataclass(frozen=True)
class ModelChoice:
    """What the picker dismisses with: pass `model` and `backend` to `EngineWorker.load`."""

    model: str
    backend: str = "auto"
    name: str = ""
    endpoint: str | None = None
    entry: ModelEntry | None = field(default=None, compare=False)

    @classmethod
    def from_entry(cls, entry: ModelEntry, backend: str | None = None) -> ModelChoice:
        """The choice of `entry`, run by `backend` (default: its preferred backend)."""
        return cls(entry.path, backend or entry.backend, entry.name, entry.endpoint, entry)


def matches(entry: ModelEntry, query: str) -> bool:
    """Whether every word of `query` occurs in the entry's text (case-insensitive)."""
    text = entry.search_text()
    return all(word in text for word in query.lower().split())


def format_size(n_bytes: int | None) -> str:
    """A file size such as "98.4 MB" (decimal units, like `ls -h --si`)."""
    if n_bytes is None:
        return "—"
    size = float(n_bytes)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"  # pragma: no cover - loop always returns


def format_params(n: int | None) -> str:
    """A parameter count such as "135M" or "7.2B"."""
    if not n:
        return "—"
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            value = n / scale
            return f"{value:.1f}{suffix}" if value < 10 else f"{value:.0f}{suffix}"
    return str(n)


def format_context(n: int | None) -> str:
    """A context length such as "8K" (powers of two) or "—" when unknown."""
    if not n:
        return "—"
    if n % 1024 == 0:
        return f"{n // 1024}K"
    return f"{n:,}"


def short_path(path: str) -> str:
    """`path` with the home folder written as "~"."""
    try:
        home = str(Path.home())
    except RuntimeError:
        return path
    if home not in ("", "/") and (path == home or path.startswith(home + "/")):
        return "~" + path[len(home):]
    return path
