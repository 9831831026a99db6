"""Remote endpoints for the app: load options from the command line and the `[remote]` config,
and the remote models for the model picker, each labelled with its endpoint.

The API key travels as an `engine.remote_api.ApiKey`, whose repr and str are masked, so
it never reaches logs, history or `config show` through these options. There is no
`--api-key` flag on purpose: keys on command lines end up in shell history and `ps`.
"""

from __future__ import annotations

import argparse
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from app.config import load_config
from engine.errors import BackendError, ConfigError, LampchatError
from engine.registry import canonical_name
from engine.remote_api import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    ApiKey,
    Endpoint,
    display_name,
    probe,
)
from engine.types import LoadSettings

log = logging.getLogger(__name__)

LIST_TIMEOUT_S = 5.0
"""The longest the model picker waits for one endpoint's model list."""


@dataclass(frozen=True)
class RemoteModelEntry:
    """A model served by a named endpoint, for the picker."""

    model: str
    """The server-side model id (what `EngineWorker.load` takes with backend "remote")."""
    endpoint: str
    """The `[remote.NAME]` endpoint serving it."""
    label: str
    """What the picker shows, e.g. "llama3:8b (gpu-box)"."""
    context_length: int | None = None
    backend: str = "remote"
    options: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The `LoadSettings.options` that reach this endpoint (see `load_settings_for`)."""

    def load_settings_for(self, base: LoadSettings | None = None) -> LoadSettings:
        """`base` (or the defaults) with this endpoint's options: pass it to `engine.load`."""
        return with_remote_options(base or LoadSettings(), self.options)


def endpoint_options(name: str, values: dict[str, Any]) -> dict[str, Any]:
    """`LoadSettings.options` for the endpoint `name` with `values` from
    `Config.remote_endpoints()` ({base_url, api_key_env, api_key, timeout, retries})."""
    key = values.get("api_key") or ""
    if not key and values.get("api_key_env"):
        key = os.environ.get(values["api_key_env"], "")
    return {
        "base_url": values.get("base_url") or "",
        "api_key": ApiKey(key),
        "timeout": float(values.get("timeout") or DEFAULT_TIMEOUT_S),
        "retries": int(values.get("retries", DEFAULT_RETRIES)),
        "endpoint_name": name,
    }


def with_remote_options(base: LoadSettings, options: dict[str, Any]) -> LoadSettings:
    """A copy of `base` whose options carry the remote endpoint `options`."""
    return replace(base, options={**base.options, **options})


def _load_config(args: argparse.Namespace) -> Any:
    """The app config; never writes a file."""
    return load_config(getattr(args, "config", None), create=False)


def _is_remote(backend: str | None) -> bool:
    if not backend:
        return False
    try:
        return canonical_name(backend) == "remote"
    except BackendError:
        return False


def _config_backend(config: Any) -> str | None:
    try:
        return str(config.backend())
    except (AttributeError, LampchatError):
        return None


def remote_options_from_args(args: argparse.Namespace, config: Any = None) -> dict[str, Any]:
    """The remote endpoint options from --base-url, --api-key-env, --endpoint and the config.

    Empty when the remote backend is not in use (neither --backend nor, without it, the
    config's `backend.default` says "remote", and no remote flag is given). `--endpoint NAME`
    takes the `[remote.NAME]` table; the remote backend alone takes the config's default
    endpoint (`remote.default`, else the first); `config` is read from --config if not given;
    `--base-url` alone never sends a configured key (only the one --api-key-env names).
    Raises ConfigError with a one-line message.
    """
    base_url = getattr(args, "base_url", None)
    key_env = getattr(args, "api_key_env", None)
    name = getattr(args, "endpoint", None)
    backend = getattr(args, "backend", None)
    if not backend and config is not None:
        backend = _config_backend(config)
    flags = [f for f, v in (("--base-url", base_url), ("--endpoint", name),
                            ("--api-key-env", key_env)) if v]
    if not flags and not _is_remote(backend):
        return {}
    if flags and getattr(args, "backend", None) and not _is_remote(args.backend):
        verb = "selects" if len(flags) == 1 else "select"
        raise ConfigError(f"{' and '.join(flags)} {verb} the remote backend; drop --backend "
                          f"{args.backend} or use --backend remote")
    options: dict[str, Any] = {}
    if name or not base_url:
        config = config if config is not None else _load_config(args)
        endpoints = config.remote_endpoints() if config is not None else {}
        if name and name not in endpoints:
            defined = ", ".join(endpoints) or "none"
            where = f" in {config.path}" if config is not None else ""
            raise ConfigError(f"no remote endpoint named {name!r}{where} (defined: {defined}); "
                              f"add a [remote.{name}] table with a base_url")
        if not name and config is not None:
            name = config.default_endpoint()
        if name and name in endpoints:
            options = endpoint_options(name, endpoints[name])
    if base_url:
        options = {"timeout": DEFAULT_TIMEOUT_S, "retries": DEFAULT_RETRIES,
                   "api_key": ApiKey(), **options, "base_url": base_url}
        options.setdefault("endpoint_name", "")
    if key_env:
        value = os.environ.get(key_env, "")
        if not value.strip():
            raise ConfigError(f"--api-key-env {key_env}: the environment variable {key_env} "
                              f"is not set")
        options["api_key"] = ApiKey(value)
    return options


def list_remote_models(config: Any, problems: list[str] | None = None) -> list[RemoteModelEntry]:
    """The models of every `[remote.NAME]` endpoint in `config`, labelled with the endpoint.

    Endpoints are asked in parallel with a short timeout and no retries; an endpoint that
    cannot be reached adds one line to `problems` (and the log) and lists nothing.
    """
    try:
        endpoints = config.remote_endpoints() if config is not None else {}
    except LampchatError as exc:
        _note(problems, f"remote endpoints: {exc}")
        return []
    if not endpoints:
        return []

    def one(name: str) -> list[RemoteModelEntry]:
        options = endpoint_options(name, endpoints[name])
        try:
            endpoint = Endpoint.from_options(options)
            short = replace(endpoint, timeout=min(endpoint.timeout, LIST_TIMEOUT_S), retries=0)
            used, models = probe(short)
        except LampchatError as exc:
            _note(problems, f"remote endpoint {name!r}: {exc}")
            return []
        options["base_url"] = used.base_url
        return [RemoteModelEntry(m.id, name, f"{display_name(m.id)} ({name})", m.context_length,
                                 options=options) for m in models]

    with ThreadPoolExecutor(max_workers=min(8, len(endpoints)),
                            thread_name_prefix="lampchat-remote-list") as pool:
        results = list(pool.map(one, endpoints))
    return [entry for entries in results for entry in entries]


def _note(problems: list[str] | None, message: str) -> None:
    log.warning("%s", message)
    if problems is not None:
        problems.append(message)
