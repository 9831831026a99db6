"""The config schema: every key's type, default, range and help, and value checking.

`app.config` reads, layers and saves config files with this schema; the settings screen
builds its form from it. Nothing here touches files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import tomlkit

from engine.registry import BACKENDS


@dataclass(frozen=True)
class Field:
    """One config key: `section.key`, its Python type, default, allowed values and help text.

    `type` is one of str, int, float, bool, list (a list of strings). For a list, `choices`
    applies to each item. `min`/`max` are inclusive unless `min_exclusive`/`max_exclusive`.
    A `secret` value is never shown by `lampchat config show` and never logged.
    """

    section: str
    key: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    secret: bool = False
    min_exclusive: bool = False
    max_exclusive: bool = False

    @property
    def dotted(self) -> str:
        """`section.key`."""
        return f"{self.section}.{self.key}"

    def allowed(self) -> str:
        """What this key accepts, in words (used in every error message)."""
        kind = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
                list: "a list of strings"}[self.type]
        parts = [kind]
        if self.choices:
            one_of = ", ".join(self.choices)
            parts = [f"a list of: {one_of}"] if self.type is list else [f"one of: {one_of}"]
        bounds = []
        if self.min is not None:
            bounds.append(f"{'>' if self.min_exclusive else '>='} {_num(self.min)}")
        if self.max is not None:
            bounds.append(f"{'<' if self.max_exclusive else '<='} {_num(self.max)}")
        if bounds:
            parts.append(" and ".join(bounds))
        return ", ".join(parts)

    def check(self, value: Any) -> Any:
        """`value` as stored (int widened to float, tuple to list), or ValueError saying why."""
        value = _check_type(self, value)
        if self.choices is not None:
            items = value if self.type is list else [value]
            for item in items:
                if item not in self.choices:
                    raise ValueError(f"{item!r} is not allowed")
        if self.type is float and not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number")
        if self.type in (int, float):
            low_bad = self.min is not None and (
                value < self.min or (self.min_exclusive and value == self.min)
            )
            high_bad = self.max is not None and (
                value > self.max or (self.max_exclusive and value == self.max)
            )
            if low_bad or high_bad:
                raise ValueError(f"{_num(value)} is out of range")
        return value

    def coerce(self, value: Any) -> Any:
        """Like `check`, but a string is first read as this key's type ("0.3", "on", "a,b")."""
        if isinstance(value, str) and self.type is not str:
            value = _parse_text(self, value)
        return self.check(value)


def _num(value: float) -> str:
    if isinstance(value, int):  # any size: never through float
        text = str(value)
        return text if len(text) <= 20 else f"{text[:8]}…({len(text)} digits)"
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else str(value)


def _check_type(field: Field, value: Any) -> Any:
    if isinstance(value, tomlkit.items.Item):
        value = value.unwrap()
    kind = field.type
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # a 400-digit integer
                raise ValueError(f"{_num(value)} is too large") from None
            if not math.isfinite(number):
                raise ValueError(f"{value} is not a finite number")
            return number
    elif kind is str:
        if isinstance(value, str):
            return value
    elif kind is list and isinstance(value, (list, tuple)) and all(
        isinstance(item, str) for item in value
    ):
        return list(value)
    raise ValueError(f"{value!r} has the wrong type")


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _parse_text(field: Field, text: str) -> Any:
    stripped = text.strip()
    kind = field.type
    try:
        if kind is bool:
            if stripped.lower() in _TRUE:
                return True
            if stripped.lower() in _FALSE:
                return False
            raise ValueError
        if kind is int:
            if field.dotted == "generation.seed" and stripped.lower() in ("", "random"):
                return -1
            return int(stripped)
        if kind is float:
            return float(stripped)
        if kind is list:
            if stripped.startswith("["):
                return tomlkit.parse(f"v = {stripped}")["v"].unwrap()
            return [item.strip() for item in stripped.split(",") if item.strip()]
    except Exception:
        pass
    raise ValueError(f"{text!r} is not {field.allowed().split(',')[0]}")


BACKEND_CHOICES = ("auto", *BACKENDS)
DEVICE_CHOICES = ("auto", "cpu", "cuda", "metal", "opencl")


MODEL_STORES = ("ollama", "huggingface", "lmstudio", "gpt4all", "llama.cpp")
"""The model stores `model.discover` can name (`app.model_stores` reads them)."""


def _fields(*fields: Field) -> dict[str, Field]:
    return {f.key: f for f in fields}


SCHEMA: dict[str, dict[str, Field]] = {
    "model": _fields(
        Field("model", "default", str, "",
              "Model to load at start: a file or folder path, or a name `lampchat models` "
              "shows (smollm2:135m, org/repo, org/repo:Q4_K_M, a unique prefix). "
              "Empty: the bundled SmolLM2-135M-Instruct."),
        Field("model", "dirs", list, [],
              "Folders scanned for models (the model picker lists them)."),
        Field("model", "discover", list, list(MODEL_STORES),
              "Model stores of other tools searched for models already on this machine: "
              "ollama (~/.ollama/models), huggingface (the hub cache), lmstudio, gpt4all, "
              "llama.cpp (its download cache). [] searches none.", choices=MODEL_STORES),
        Field("model", "cache_dir", str, "",
              "Where converted and downloaded models are cached. Empty: the platform cache dir."),
        Field("model", "chat_template", str, "",
              "Chat template to use instead of the model's own: a built-in name (chatml, "
              "llama3, gemma, phi3, mistral-v3, llama2, plain) or the path of a Jinja file. "
              "Empty: the model's own, else the built-in one for its family."),
    ),
    "generation": _fields(
        Field("generation", "max_tokens", int, 512, "Most tokens in one reply.", min=1,
              max=1_000_000),
        Field("generation", "temperature", float, 0.7, "Sampling temperature; 0 is greedy.",
              min=0.0, max=10.0),
        Field("generation", "top_p", float, 0.95, "Nucleus sampling: keep the smallest set of "
              "tokens whose probability adds up to top_p; 1 disables it.", min=0.0, max=1.0,
              min_exclusive=True),
        Field("generation", "top_k", int, 40, "Keep only the k most likely tokens; 0 disables it.",
              min=0, max=1_000_000),
        Field("generation", "min_p", float, 0.05, "Drop tokens less likely than min_p times the "
              "most likely one; 0 disables it.", min=0.0, max=1.0, max_exclusive=True),
        Field("generation", "repeat_penalty", float, 1.1, "Penalty for repeated tokens; 1 "
              "disables it.", min=0.0, max=10.0, min_exclusive=True),
        Field("generation", "seed", int, -1, "Random seed for reproducible replies; -1 picks a "
              "new random seed for every reply.", min=-1, max=2**32 - 1),
        Field("generation", "system_prompt", str, "", "System prompt sent before the conversation; "
              "empty: none."),
        Field("generation", "context_length", int, 4096, "Context window in tokens; 0 uses the "
              "model's own length.", min=0, max=10_000_000),
    ),
    "backend": _fields(
        Field("backend", "default", str, "auto", "Backend to run models with; auto picks one "
              "by the model's format.", choices=BACKEND_CHOICES),
        Field("backend", "device", str, "auto", "Device to run on; auto uses a GPU when the "
              "backend has one.", choices=DEVICE_CHOICES),
        Field("backend", "fallback", list, [], "Backends to try, in order, when the chosen one "
              "cannot load the model.", choices=BACKEND_CHOICES[1:]),
        Field("backend", "threads", int, 0, "CPU threads; 0 picks a number for this machine.",
              min=0, max=1024),
        Field("backend", "gpu_layers", int, -1, "Layers to offload to the GPU; -1: all of them "
              "when a GPU is present, 0: none.", min=-1, max=100_000),
    ),
    "session": _fields(
        Field("session", "auto_save", bool, True, "Save every conversation as it happens, one "
              "file per conversation in `history_dir`."),
        Field("session", "resume", bool, True, "Start where you left off: `lampchat` reopens "
              "the most recently updated saved conversation instead of a new one (not with "
              "`--save-history`, whose file starts a new one)."),
        Field("session", "history_dir", str, "", "Where conversations are saved. Empty: "
              "the platform data dir (e.g. ~/.local/share/lampchat/history)."),
        Field("session", "history_file", str, "", "Prompt recall file (Up/Down in the input). "
              "Empty: the platform state dir (e.g. ~/.local/state/lampchat/prompt_history)."),
        Field("session", "max_history", int, 1000, "Most prompts kept in `history_file`; 0 "
              "keeps none.", min=0, max=1_000_000),
        Field("session", "kv_cache_mb", int, 2048, "Disk space for saved KV states (in "
              "`model.cache_dir`/kv): resuming a conversation then evaluates only what is new. "
              "The least recently used go first; 0 keeps none.", min=0, max=1_000_000),
    ),
    "ui": _fields(
        Field("ui", "theme", str, "textual-dark", "Textual theme name (e.g. textual-dark, "
              "textual-light, nord, gruvbox)."),
        Field("ui", "color", str, "auto", "Colour output: auto (when the terminal supports it), "
              "always or never.", choices=("auto", "always", "never")),
        Field("ui", "stream", bool, True, "Show replies token by token as they are generated."),
        Field("ui", "show_metrics", bool, True, "Show the metrics panel (tokens/s, TTFT, memory)."),
    ),
    "remote": _fields(
        Field("remote", "default", str, "", "Name of the `[remote.NAME]` endpoint used by the "
              "remote backend; empty: the first one defined."),
    ),
}
"""section -> key -> Field. Remote endpoints are `[remote.NAME]` tables (ENDPOINT_SCHEMA)."""

ENDPOINT_SCHEMA: dict[str, Field] = _fields(
    Field("remote.*", "base_url", str, "", "Base URL of an OpenAI-compatible server, e.g. "
          "http://127.0.0.1:8080/v1."),
    Field("remote.*", "api_key_env", str, "", "Environment variable holding the API key "
          "(preferred over `api_key`)."),
    Field("remote.*", "api_key", str, "", "API key. Kept secret: never shown or logged.",
          secret=True),
    Field("remote.*", "timeout", float, 60.0, "Seconds to wait for the server.", min=0.0,
          max=3600.0, min_exclusive=True),
    Field("remote.*", "retries", int, 2, "Retries after a connection error.", min=0, max=10),
)
"""The keys of each `[remote.NAME]` endpoint table."""


def endpoint_field(name: str, key: str) -> Field:
    """The Field for `remote.NAME.KEY` (KeyError for an unknown key)."""
    base = ENDPOINT_SCHEMA[key]
    return Field(f"remote.{name}", key, base.type, base.default, base.help, base.choices,
                 base.min, base.max, base.secret, base.min_exclusive, base.max_exclusive)


def valid_endpoint_name(name: str) -> bool:
    """Endpoint names are bare TOML keys that do not clash with `remote.default`."""
    return bool(name) and name != "default" and all(c.isalnum() or c in "-_" for c in name)


def all_fields() -> list[Field]:
    """Every fixed key, in schema order (endpoints excluded)."""
    return [f for keys in SCHEMA.values() for f in keys.values()]
