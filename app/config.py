"""Lampchat's config: a TOML file layered under environment variables and command-line flags.

Precedence, highest first: values set in the running app (`/set`, the settings screen;
source "session"), command-line flags ("cli"), `LAMPCHAT_<SECTION>__<KEY>` environment
variables ("env"), the config file ("file"), the schema defaults ("default").

A bad key (unknown, wrong type, out of range) never stops the app: it is reported in
`Config.warnings` and the key keeps its lower-layer value. A file that cannot be parsed is
never rewritten. Saving goes through tomlkit, keeping comments, order and untouched keys,
and is atomic. No Textual imports here.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import platformdirs
import tomlkit

from app.atomic_file import atomic_write_text
from app.config_file import (
    TABLE_HEADER,
    lookup,
    render_template,
    set_in_document,
    template_text,
    uncomment_placeholders,
    write_template,
)
from app.config_schema import (
    ENDPOINT_SCHEMA,
    SCHEMA,
    Field,
    all_fields,
    endpoint_field,
    valid_endpoint_name,
)
from engine.errors import ConfigError
from engine.files import read_regular_file
from engine.kv_store import KVStateStore
from engine.types import LoadSettings, SamplingParams

__all__ = [
    "ENDPOINT_SCHEMA",
    "SCHEMA",
    "SOURCES",
    "Config",
    "Field",
    "config_path",
    "display_value",
    "field_for",
    "load_config",
    "mask_url",
    "render_template",
    "save_config",
    "validate_file",
]

log = logging.getLogger(__name__)

APP_NAME = "lampchat"
ENV_PREFIX = "LAMPCHAT_"
SOURCES = ("default", "file", "env", "cli", "session")
"""Where a value can come from, lowest precedence first."""


def config_path(cli_path: str | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The config file: `--config PATH`, else $LAMPCHAT_CONFIG, else the platform's config dir
    (`~/.config/lampchat/config.toml` on Linux)."""
    env = os.environ if env is None else env
    chosen = cli_path or env.get("LAMPCHAT_CONFIG")
    if chosen:
        return Path(chosen).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "config.toml"


def field_for(dotted: str) -> Field:
    """The Field of `section.key` or `remote.NAME.key`; ConfigError naming the known keys."""
    parts = dotted.strip().split(".")
    if len(parts) == 3 and parts[0] == "remote":
        name, key = parts[1], parts[2]
        if not valid_endpoint_name(name):
            raise ConfigError(f"{name!r} is not a valid remote endpoint name (letters, digits, "
                              f"- and _; not 'default')")
        if key not in ENDPOINT_SCHEMA:
            raise ConfigError(f"unknown key {dotted!r} (remote endpoint keys: "
                              f"{', '.join(ENDPOINT_SCHEMA)})")
        return endpoint_field(name, key)
    if len(parts) != 2 or parts[0] not in SCHEMA:
        raise ConfigError(f"unknown config key {dotted!r} (sections: {', '.join(SCHEMA)}; "
                          f"write it as section.key)")
    section, key = parts
    if key not in SCHEMA[section]:
        raise ConfigError(f"unknown key {dotted!r} (keys in [{section}]: "
                          f"{', '.join(SCHEMA[section])})")
    return SCHEMA[section][key]


class Config:
    """The effective config. Read with `get`, change with `set`, persist with `save_config`."""

    def __init__(self, path: Path, env: Mapping[str, str] | None = None) -> None:
        self.path = Path(path)
        self.warnings: list[str] = []
        """Every problem found while loading (file, then environment), one line each."""
        self.file_problems: list[str] = []
        """The subset of `warnings` about the config file itself."""
        self.parse_failed = False
        """True when the file exists but could not be read or parsed; it will not be saved over."""
        self._env = dict(os.environ if env is None else env)
        self._layers: dict[str, dict[str, Any]] = {name: {} for name in SOURCES[1:]}

    def warning_lines(self, limit: int = 5) -> list[str]:
        """The warnings to print: at most `limit`, then one line counting the rest (a file
        of 20,000 bad keys is not 20,000 lines of output)."""
        lines = [f"lampchat: warning: {w}" for w in self.warnings[:limit]]
        if len(self.warnings) > limit:
            lines.append(f"lampchat: warning: ... and {len(self.warnings) - limit} more "
                         f"(`lampchat config validate` lists every problem of {self.path})")
        return lines

    # -- reading -----------------------------------------------------------------------------

    def get(self, dotted: str) -> Any:
        """The effective value of `section.key` (or `remote.NAME.key`)."""
        field = field_for(dotted)
        if field.section.startswith("remote.") and field.section[7:] not in self.endpoint_names():
            raise ConfigError(f"no remote endpoint named {field.section[7:]!r}")
        for layer in reversed(SOURCES[1:]):
            if field.dotted in self._layers[layer]:
                return _copy(self._layers[layer][field.dotted])
        return _copy(field.default)

    def source(self, dotted: str) -> str:
        """Where the effective value comes from: "default", "file", "env", "cli" or "session"."""
        field = field_for(dotted)
        for layer in reversed(SOURCES[1:]):
            if field.dotted in self._layers[layer]:
                return layer
        return "default"

    def set(self, dotted: str, value: Any) -> None:
        """Set a value for this session (saved by `save_config`). Strings are read as the key's
        type ("0.3", "on", "a,b"). Raises ConfigError with a one-line message."""
        field = field_for(dotted)
        try:
            checked = field.coerce(value)
        except ValueError as exc:
            raise ConfigError(f"{field.dotted}: {exc}; allowed: {field.allowed()}") from None
        self._layers["session"][field.dotted] = checked

    def unsaved(self) -> dict[str, Any]:
        """The values set in this session that differ from the file."""
        file = self._layers["file"]
        return {k: _copy(v) for k, v in self._layers["session"].items()
                if k not in file or file[k] != v}

    def endpoint_names(self) -> list[str]:
        """Names of the `[remote.NAME]` endpoints defined in any layer, in order of appearance."""
        names: dict[str, None] = {}
        for layer in SOURCES[1:]:
            for dotted in self._layers[layer]:
                parts = dotted.split(".")
                if len(parts) == 3:
                    names[parts[1]] = None
        return list(names)

    def items(self) -> Iterator[tuple[Field, Any, str]]:
        """(field, value, source) for every key, endpoints last."""
        for field in all_fields():
            yield field, self.get(field.dotted), self.source(field.dotted)
        for name in self.endpoint_names():
            for key in ENDPOINT_SCHEMA:
                field = endpoint_field(name, key)
                yield field, self.get(field.dotted), self.source(field.dotted)

    # -- views used by the engine and the app -------------------------------------------------

    def sampling(self) -> SamplingParams:
        """The sampling settings from [generation] (seed -1 becomes None: random)."""
        seed = self.get("generation.seed")
        return SamplingParams(
            temperature=self.get("generation.temperature"),
            top_k=self.get("generation.top_k"),
            top_p=self.get("generation.top_p"),
            min_p=self.get("generation.min_p"),
            repeat_penalty=self.get("generation.repeat_penalty"),
            seed=None if seed < 0 else seed,
            max_tokens=self.get("generation.max_tokens"),
        )

    def load_settings(self) -> LoadSettings:
        """How to load models: context length, threads (0: auto), GPU layers (-1: auto), device."""
        threads = self.get("backend.threads")
        gpu_layers = self.get("backend.gpu_layers")
        return LoadSettings(
            n_ctx=self.get("generation.context_length"),
            n_threads=threads or None,
            n_gpu_layers=None if gpu_layers < 0 else gpu_layers,
            device=self.get("backend.device"),
            chat_template=self.get("model.chat_template"),
        )

    def model(self) -> str | None:
        """The model to load at start (None: the bundled default)."""
        return self.get("model.default") or None

    def backend(self) -> str:
        """The backend name from [backend] default ("auto" or a name)."""
        return self.get("backend.default")

    def system_prompt(self) -> str | None:
        """The system prompt, or None when empty."""
        return self.get("generation.system_prompt") or None

    def model_dirs(self) -> list[Path]:
        """`model.dirs` as paths, ~ expanded."""
        return [Path(d).expanduser() for d in self.get("model.dirs")]

    def kv_store(self) -> KVStateStore | None:
        """Where replies' KV states are kept (`session.kv_cache_mb`; None when 0)."""
        cap = int(self.get("session.kv_cache_mb"))
        return KVStateStore(self.cache_dir() / "kv", cap << 20) if cap > 0 else None

    def model_stores(self) -> list[str]:
        """`model.discover`: the other tools' model stores to search."""
        return list(self.get("model.discover"))

    def cache_dir(self) -> Path:
        """`model.cache_dir`, or the platform cache dir."""
        return _path_or(self.get("model.cache_dir"),
                        Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)))

    def history_dir(self) -> Path:
        """`session.history_dir`, or `<platform data dir>/history`."""
        return _path_or(self.get("session.history_dir"),
                        Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "history")

    def prompt_history_path(self) -> Path:
        """`session.history_file`, or `<platform state dir>/prompt_history`."""
        default = Path(platformdirs.user_state_dir(APP_NAME, appauthor=False)) / "prompt_history"
        return _path_or(self.get("session.history_file"), default)

    def remote_endpoints(self) -> dict[str, dict[str, Any]]:
        """name -> {base_url, api_key_env, api_key, timeout, retries}. `api_key` is the
        configured key, else the value of the variable named by `api_key_env`, else ""."""
        out: dict[str, dict[str, Any]] = {}
        for name in self.endpoint_names():
            values = {key: self.get(f"remote.{name}.{key}") for key in ENDPOINT_SCHEMA}
            if not values["api_key"] and values["api_key_env"]:
                values["api_key"] = self._env.get(values["api_key_env"], "")
            out[name] = values
        return out

    def default_endpoint(self) -> str | None:
        """`remote.default`, else the first endpoint defined, else None."""
        names = self.endpoint_names()
        chosen = self.get("remote.default")
        if chosen:
            return chosen
        return names[0] if names else None

    def __repr__(self) -> str:  # never shows values: some are secret
        return f"Config(path={str(self.path)!r}, warnings={len(self.warnings)})"


def display_value(field: Field, value: Any) -> str:
    """`value` as TOML text safe to show anywhere (`config show`, `/set`, settings screens):
    a secret is `"<hidden>"` (or `""` when unset), and a URL's password and query values
    (which may hold API keys) are masked as `****`."""
    if field.secret:
        return '"<hidden>"' if value else '""'
    if field.key.endswith("url") and isinstance(value, str):
        value = mask_url(value)
    return tomlkit.item(value).as_string()


def mask_url(url: str) -> str:
    """`url` with its password and query values replaced by `****` (user and host kept)."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # a bad port raises ValueError
    except ValueError:
        return "****" if "@" in url or "?" in url else url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, has_password, _password = userinfo.partition(":")
        netloc = f"{user}:****@{hostport}" if has_password else f"{userinfo}@{hostport}"
    query = "&".join(
        f"{name}=****" if has_value else name
        for name, has_value, _v in (item.partition("=") for item in parts.query.split("&") if item)
    )
    fragment = "****" if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def _path_or(text: str, default: Path) -> Path:
    return Path(text).expanduser() if text else default


# -- loading ----------------------------------------------------------------------------------


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    cli: Mapping[str, Any] | None = None,
    *,
    create: bool = True,
) -> Config:
    """Load the effective config. `path` is `--config` (None: $LAMPCHAT_CONFIG or the platform
    default), `env` the environment (default os.environ), `cli` dotted key -> flag value
    (None values are ignored). With `create`, a missing file is created from the template.

    Problems in the file or environment become `Config.warnings`; a bad flag value raises
    ConfigError (the user typed it just now)."""
    env = os.environ if env is None else env
    config = Config(config_path(str(path) if path else None, env), env)
    if not config.path.exists() and create:
        try:
            write_template(config.path)
            log.info("wrote the default config to %s", config.path)
        except OSError as exc:
            config.warnings.append(f"{config.path}: could not write the default config ({exc})")
    _read_file(config)
    _read_env(config, env)
    for dotted, value in (cli or {}).items():
        if value is None:
            continue
        field = field_for(dotted)
        try:
            config._layers["cli"][field.dotted] = field.coerce(value)
        except ValueError as exc:
            raise ConfigError(f"{field.dotted}: {exc}; allowed: {field.allowed()}") from None
    for warning in config.warnings:
        log.warning("config: %s", warning)
    return config


MAX_CONFIG_FILE = 1 << 20
"""The largest config file read (the commented template is about 10 kB)."""


def _read_file(config: Config) -> None:
    path = config.path
    if not path.exists():
        return
    try:
        text = read_regular_file(path, MAX_CONFIG_FILE).decode("utf-8")
        doc = tomlkit.parse(text)
    except (OSError, UnicodeDecodeError) as exc:
        config.parse_failed = True
        config.file_problems.append(f"{path}: could not read the file ({exc}); using defaults")
    except tomlkit.exceptions.ParseError as exc:
        config.parse_failed = True
        config.file_problems.append(
            f"{path}:{exc.line}: not valid TOML ({exc}); using defaults for every key, "
            f"and the file will not be saved over"
        )
    else:
        _check_document(config, doc.unwrap(), text)
    config.warnings.extend(config.file_problems)


def _check_document(config: Config, data: dict[str, Any], text: str) -> None:
    where = _LineFinder(config.path, text)
    problems = config.file_problems
    layer = config._layers["file"]
    for section, table in data.items():
        if section not in SCHEMA:
            problems.append(f"{where(section)}: unknown section [{section}] "
                            f"(sections: {', '.join(SCHEMA)}); ignored")
            continue
        if not isinstance(table, dict):
            problems.append(f"{where(section)}: {section!r} must be a [{section}] table; ignored")
            continue
        for key, value in table.items():
            if section == "remote" and isinstance(value, dict):
                _check_endpoint(config, key, value, where)
                continue
            dotted = f"{section}.{key}"
            if key not in SCHEMA[section]:
                known = ", ".join(SCHEMA[section])
                extra = " or [remote.NAME] tables" if section == "remote" else ""
                problems.append(f"{where(section, key)}: unknown key {dotted!r} "
                                f"(keys in [{section}]: {known}{extra}); ignored")
                continue
            _check_value(SCHEMA[section][key], value, where(section, key), problems, layer)


def _check_endpoint(config: Config, name: str, table: dict[str, Any], where: _LineFinder) -> None:
    problems = config.file_problems
    section = f"remote.{name}"
    if not valid_endpoint_name(name):
        problems.append(f"{where(section)}: {name!r} is not a valid endpoint name; ignored")
        return
    for key, value in table.items():
        if key not in ENDPOINT_SCHEMA:
            problems.append(f"{where(section, key)}: unknown key '{section}.{key}' (endpoint "
                            f"keys: {', '.join(ENDPOINT_SCHEMA)}); ignored")
            continue
        _check_value(endpoint_field(name, key), value, where(section, key), problems,
                     config._layers["file"])
    if not table.get("base_url"):
        problems.append(f"{where(section)}: [remote.{name}] has no base_url")
    # mark the endpoint as defined even when all its keys are defaults
    config._layers["file"].setdefault(f"{section}.base_url", "")


def _check_value(field: Field, value: Any, where: str, problems: list[str],
                 layer: dict[str, Any]) -> None:
    try:
        layer[field.dotted] = field.check(value)
    except ValueError as exc:
        shown = "****" if field.secret else _short(value)
        reason = str(exc) if not field.secret else "invalid value"
        problems.append(f"{where}: {field.dotted} = {shown}: {reason}; allowed: "
                        f"{field.allowed()} (using {_default_text(field)})")


def _default_text(field: Field) -> str:
    return f"the default {tomlkit.item(field.default).as_string()}"


def _short(value: Any) -> str:
    try:
        text = tomlkit.item(value).as_string()
    except Exception:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _read_env(config: Config, env: Mapping[str, str]) -> None:
    layer = config._layers["env"]
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        parts = name[len(ENV_PREFIX):].lower().split("__")
        try:
            field = field_for(".".join(parts))
        except ConfigError as exc:
            config.warnings.append(f"environment variable {name}: {exc}; ignored")
            continue
        try:
            layer[field.dotted] = field.coerce(raw)
        except ValueError as exc:
            shown = "****" if field.secret else repr(raw)
            reason = str(exc) if not field.secret else "invalid value"
            config.warnings.append(f"environment variable {name}={shown}: {reason}; allowed: "
                                   f"{field.allowed()}; ignored")


_KEY_LINE = re.compile(r"""^\s*(?:"([^"]*)"|'([^']*)'"""
                       r"|([A-Za-z0-9_-]+(?:\s*\.\s*[A-Za-z0-9_-]+)*))\s*=")
"""A `key = ...` line: the key, quoted or bare (dotted keys included)."""


class _LineFinder:
    """`path:line` of a section header or key. The text is indexed in one pass (looking each
    key up by scanning the file made a file of 20,000 keys take minutes)."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.index: dict[tuple[str, str | None], int] = {}
        """(section, key) -> line; (section, None): its header, or a top-level `section =`."""
        current: str | None = None
        for number, line in enumerate(text.splitlines(), 1):
            header = TABLE_HEADER.match(line)
            if header:
                current = header.group(1).replace(" ", "").replace('"', "")
                self.index.setdefault((current, None), number)
                continue
            found = _KEY_LINE.match(line)
            if found is None:
                continue
            key = next(group for group in found.groups() if group is not None)
            if current is not None:
                self.index.setdefault((current, key), number)
                continue
            self.index.setdefault((key, None), number)
            if "." in key:  # a top-level dotted key: section.key = ...
                section, _, rest = key.partition(".")
                self.index.setdefault((section.strip(), rest.strip()), number)

    def __call__(self, section: str, key: str | None = None) -> str:
        line = self.index.get((section, key))
        return f"{self.path}:{line}" if line else str(self.path)


def validate_file(path: str | Path) -> list[str]:
    """Problems in the config file at `path`, one line each naming the file, the key (with its
    line where possible) and what is allowed. An empty list means the file is fine."""
    path = Path(path).expanduser()
    if not path.exists():
        return [f"{path}: no such file"]
    config = load_config(path, env={}, create=False)
    return list(config.file_problems)


# -- saving -----------------------------------------------------------------------------------


def save_config(config: Config, path: Path | None = None) -> None:
    """Write the values set in this session into the config file, keeping its comments, order
    and untouched keys (a missing file starts from the template). Atomic. Raises ConfigError,
    without touching the file, when the file on disk cannot be parsed."""
    target = Path(path) if path is not None else config.path
    pending = dict(config._layers["session"])
    if target.exists():
        try:
            text = read_regular_file(target, MAX_CONFIG_FILE).decode("utf-8")
            tomlkit.parse(text)
        except (OSError, UnicodeDecodeError, tomlkit.exceptions.ParseError) as exc:
            raise ConfigError(f"{target}: not saved, the file could not be parsed ({_one_line(exc)}"
                              f"); fix it or move it away first") from None
    else:
        text = template_text()
    text = uncomment_placeholders(text, pending)
    doc = tomlkit.parse(text)
    for dotted, value in pending.items():
        set_in_document(doc, dotted, value)
    output = tomlkit.dumps(doc)
    reread = tomlkit.parse(output).unwrap()
    for dotted, value in pending.items():  # never write a file we would read back differently
        if lookup(reread, dotted) != value:
            raise ConfigError(f"{target}: not saved, {dotted} would not read back as written")
    try:
        atomic_write_text(target, output)
    except OSError as exc:
        raise ConfigError(f"{target}: could not save the config ({exc})") from None
    if target == config.path:
        config._layers["file"].update(pending)
        config.parse_failed = False
    log.info("saved config to %s (%d keys changed)", target, len(pending))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
