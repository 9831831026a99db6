"""The models the picker offers: the default model and every model under `model.dirs`.

Headless (no Textual). Models are recognised by content (`engine.formats.detect`), never by
file name; folders are scanned recursively, a folder that is itself a model (an HF-style
folder) is listed as one entry. A damaged model is listed with its error rather than
skipped, and nothing here raises for a bad file. Header metadata is cached in
`<cache dir>/model-catalog.json`, keyed by path, size and modification time, so opening the
picker again costs one stat per model.

Remote models come from the `[remote.NAME]` endpoints (`app.remote_catalog`): each is an
entry with `format` "remote", backend "remote" and `endpoint` set; an endpoint that cannot be
reached is one entry whose `error` says why. Asking servers takes up to a few seconds, so the
picker lists local models first (`include_remote=False`) and adds `remote_entries` after.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, replace
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import platformdirs

from app.atomic_file import atomic_write_text
from app.model_metadata import ModelMeta, read_metadata
from app.model_stores import STORE_LABELS, STORES, discover
from engine.chat_template import BUILTINS
from engine.errors import LampchatError, UnknownFormatError
from engine.formats.detect import detect_format
from engine.models import default_model_path, friendly_name, is_generic, quant_tag
from engine.registry import readers
from engine.types import LoadSettings
from widgets.model_entry import ModelChoice, ModelEntry

if TYPE_CHECKING:
    from app.config import Config

log = logging.getLogger(__name__)

CACHE_FILE = "model-catalog.json"
CACHE_VERSION = 4
MAX_FILES_SCANNED = 50_000
"""Stop scanning a folder tree after this many files (e.g. `model.dirs = ["~"]`)."""
MODEL_SUFFIXES = frozenset({".gguf", ".safetensors", ".onnx", ".pt", ".pth", ".ckpt", ".npz"})
"""Files with these names that are not recognised are listed as damaged, not skipped."""


def list_models(
    config: Config | None = None, *, cache_path: Path | None = None, include_remote: bool = True,
    env: Mapping[str, str] | None = None,
) -> list[ModelEntry]:
    """The default model first, then every model found in the other tools' stores
    (`model.discover`) and under `model.dirs`, sorted by name, then (with `include_remote`)
    the models of the remote endpoints.

    `config` None means the defaults (the bundled model and the stores). `cache_path`
    overrides where metadata is cached (default: `<model.cache_dir>/model-catalog.json`);
    `env` where the stores are looked for (default: the environment).
    """
    preferred = config.backend() if config is not None else "auto"
    dirs = config.model_dirs() if config is not None else []
    if cache_path is None:
        cache_path = _default_cache_path(config)
    cache = MetadataCache(cache_path)
    found: list[ModelEntry] = []
    seen: set[str] = set()
    stores = config.model_stores() if config is not None else list(STORES)
    for model in discover(stores, env):  # a store's name for a file wins over model.dirs'
        entry = describe(model.path, cache, preferred)
        if entry is not None and _first(entry, seen):
            found.append(replace(entry, name=model.name, source=model.source,
                                 params=dict(model.params), system=model.system))
    for path in find_models(dirs):
        entry = describe(path, cache, preferred, explicit=False)
        if entry is not None and _first(entry, seen):
            found.append(replace(entry, source="dirs"))
    found = disambiguate(found)
    default = _default_entry(config, found, cache, preferred)
    cache.save()
    default_real = os.path.realpath(default.path) if default and default.path else None
    others = [e for e in found if os.path.realpath(e.path) != default_real]
    others.sort(key=lambda e: (e.name.casefold(), e.path))
    chosen = (config.get("model.chat_template") or "").strip() if config is not None else ""
    if chosen:  # the configured template replaces every model's own
        label = f"chosen ({chosen})" if chosen in BUILTINS else f"file {chosen}"
        default = replace(default, chat_template=label) if default else None
        others = [replace(e, chat_template=label) for e in others]
    remote = remote_entries(config) if include_remote else []
    if default is not None and default.format == "remote":
        remote = [e for e in remote if (e.path, e.endpoint) != (default.path, default.endpoint)]
    return ([default] if default else []) + others + remote


def _first(entry: ModelEntry, seen: set[str]) -> bool:
    """Whether `entry`'s file was not listed yet (and note it)."""
    real = os.path.realpath(entry.path)
    if real in seen:
        return False
    seen.add(real)
    return True


def disambiguate(entries: list[ModelEntry]) -> list[ModelEntry]:
    """Entries whose names clash get `:QUANT` appended, else their source in brackets, else
    a number, so that every name resolves to one model."""
    groups: dict[str, list[int]] = {}
    for i, entry in enumerate(entries):
        groups.setdefault(entry.name.casefold(), []).append(i)
    out = list(entries)
    for indexes in groups.values():
        if len(indexes) < 2:
            continue
        taken: set[str] = {e.name.casefold() for e in entries}
        for n, i in enumerate(indexes, start=1):
            entry = entries[i]
            for name in (f"{entry.name}:{entry.quantization}" if entry.quantization else "",
                         f"{entry.name} ({STORE_LABELS.get(entry.source, entry.source)})",
                         f"{entry.name} #{n}"):
                if name and name.casefold() not in taken:
                    taken.add(name.casefold())
                    out[i] = replace(entry, name=name)
                    break
    return out


def remote_entries(config: Config | None) -> list[ModelEntry]:
    """The models served by the `[remote.NAME]` endpoints (asked in parallel, briefly).

    An endpoint that cannot be reached or lists nothing gives one entry with `error` set.
    """
    if config is None or not config.endpoint_names():
        return []
    try:
        # httpx (0.1 s) only when endpoints are configured
        from app.remote_catalog import list_remote_models
    except ImportError:  # the remote backend is not part of this install
        return []
    problems: list[str] = []
    try:
        found = list_remote_models(config, problems)
    except Exception as exc:  # never let a server break the listing
        log.warning("listing remote models failed", exc_info=True)
        problems.append(f"remote models: {exc}")
        found = []
    entries = [
        ModelEntry(name=r.label, path=r.model, format="remote", backends=("remote",),
                   context_length=r.context_length, endpoint=r.endpoint, source="remote")
        for r in found
    ]
    served = {r.endpoint for r in found}
    for name in config.endpoint_names():
        if name in served:
            continue
        why = next((p for p in problems if repr(name) in p), f"{name}: the server lists no models")
        entries.append(ModelEntry(f"{name} (remote)", "", "remote", ("remote",), endpoint=name,
                                  error=why, source="remote"))
    return entries


def load_settings_for(choice: ModelChoice, config: Config | None,
                      base: LoadSettings) -> LoadSettings:
    """The settings to load `choice` with: `base`, plus its endpoint's options when remote."""
    if not choice.endpoint or config is None:
        return base
    # httpx (0.1 s) only when endpoints are configured
    from app.remote_catalog import endpoint_options, with_remote_options

    values = config.remote_endpoints().get(choice.endpoint)
    if values is None:
        return base
    return with_remote_options(base, endpoint_options(choice.endpoint, values))


def _default_cache_path(config: Config | None) -> Path:
    if config is not None:
        return config.cache_dir() / CACHE_FILE

    return Path(platformdirs.user_cache_dir("lampchat", appauthor=False)) / CACHE_FILE


def _default_entry(config: Config | None, found: list[ModelEntry], cache: MetadataCache,
                   preferred: str) -> ModelEntry | None:
    """The configured default model (or the bundled one), marked `is_default`."""
    wanted = config.model() if config is not None else None
    if not wanted:
        try:
            path = default_model_path()
        except LampchatError as exc:
            return ModelEntry("default model", "", "unknown", error=str(exc), is_default=True)
        entry = describe(path, cache, preferred)
        return _as_default(replace(entry, source="bundled") if entry else None)
    candidate = Path(wanted).expanduser()
    if candidate.exists():
        return _as_default(describe(candidate.resolve(), cache, preferred))
    try:  # a name `lampchat models` shows
        return _as_default(find_entry(wanted, found))
    except ModelNotFoundError:
        pass
    except LampchatError as exc:  # ambiguous
        return ModelEntry(wanted, wanted, "unknown", error=str(exc), is_default=True)
    if config is not None and config.backend() == "remote":  # a model id on the server
        return ModelEntry(wanted, wanted, "remote", ("remote",), endpoint=config.default_endpoint(),
                          is_default=True)
    return ModelEntry(wanted, wanted, "unknown", error=f"model not found: {wanted}",
                      is_default=True)


def _as_default(entry: ModelEntry | None) -> ModelEntry | None:
    return replace(entry, is_default=True) if entry is not None else None


# -- scanning ---------------------------------------------------------------------------------


def find_models(dirs: list[Path]) -> Iterator[Path]:
    """Candidate models under `dirs`: model folders and files that look like models.

    Hidden files and folders are skipped; folder symlinks are followed once (loops are cut).
    Files inside a model folder, or that are the blobs a model folder links to (as in the
    Hugging Face cache), are not listed again.
    """
    folders: list[Path] = []
    files: list[Path] = []
    seen_dirs: set[tuple[int, int]] = set()
    budget = [MAX_FILES_SCANNED]
    for root in dirs:
        if not root.is_dir():
            log.info("model dir %s does not exist or is not a folder; skipped", root)
            continue
        _walk(root, folders, files, seen_dirs, budget)
    claimed: set[str] = set()
    for folder in folders:
        for sub, _dirs, names in os.walk(folder, followlinks=True):
            claimed.update(os.path.realpath(os.path.join(sub, n)) for n in names)
    seen: set[str] = set()
    for path, is_file in [*((f, False) for f in folders), *((f, True) for f in files)]:
        real = os.path.realpath(path)
        if real in seen or (is_file and real in claimed):
            continue
        seen.add(real)
        yield path


def _walk(folder: Path, folders: list[Path], files: list[Path],
          seen_dirs: set[tuple[int, int]], budget: list[int]) -> None:
    try:
        st = folder.stat()
    except OSError:
        return
    if (st.st_dev, st.st_ino) in seen_dirs:
        return
    seen_dirs.add((st.st_dev, st.st_ino))
    if _is_model_folder(folder):
        folders.append(folder)
        return
    try:
        children = sorted(folder.iterdir())
    except OSError as exc:
        log.info("cannot list %s: %s", folder, exc)
        return
    for child in children:
        if child.name.startswith(".") or budget[0] <= 0:
            continue
        budget[0] -= 1
        try:
            is_dir = child.is_dir()
        except OSError:
            continue
        if is_dir:
            _walk(child, folders, files, seen_dirs, budget)
        elif child.is_file():
            files.append(child)


def _is_model_folder(folder: Path) -> bool:
    """Whether the folder itself is a model (not merely a folder holding one GGUF file)."""
    try:
        info = detect_format(folder)
    except UnknownFormatError:
        return False
    except LampchatError:
        # A damaged model folder (say, a missing shard) is still a model: list it.
        return (folder / "config.json").is_file()
    except Exception:
        log.warning("detecting the format of %s failed", folder, exc_info=True)
        return False
    return info.path == folder


# -- describing ---------------------------------------------------------------------------------


def describe(path: Path, cache: MetadataCache | None = None, preferred: str = "auto", *,
             explicit: bool = True) -> ModelEntry | None:
    """A picker entry for the model at `path`; a damaged model gets `error`.

    A file found by scanning (`explicit` False) whose content is no known format and whose
    name does not look like a model (README.md, tokenizer.json, ...) gives None.
    """
    name = display_name(path)
    try:
        info = detect_format(path)
    except UnknownFormatError as exc:
        if not explicit and path.suffix.lower() not in MODEL_SUFFIXES:
            return None
        return ModelEntry(name, str(path), "unknown", file_size=_size(path), error=str(exc))
    except LampchatError as exc:
        return ModelEntry(name, str(path), "damaged", file_size=_size(path), error=str(exc))
    except Exception as exc:  # never let one file break the listing
        log.warning("detecting the format of %s failed", path, exc_info=True)
        return ModelEntry(name, str(path), "unknown", error=f"cannot read {path}: {exc}")
    path = info.path  # a folder holding one GGUF file is that file
    meta = cache.get(path, info.format) if cache is not None else read_metadata(path, info.format)
    backends = _backends(info.format, meta.architecture, preferred)
    error = meta.error
    if not backends and error is None:
        error = f"no backend of this install runs {meta.architecture!r} {info.format} models"
    name = display_name(path)
    if is_generic(name) and meta.model_name:  # "model.gguf": its metadata names it
        name = meta.model_name
    return ModelEntry(
        name=name,
        path=str(path),
        format=info.format,
        backends=backends,
        file_size=meta.file_size,
        quantization=meta.quantization,
        n_params=meta.n_params,
        context_length=meta.context_length,
        error=error,
        chat_template=meta.chat_template,
    )


def display_name(path: Path) -> str:
    """The model's name as everything shows it (see `engine.models.friendly_name`)."""
    return friendly_name(path)


class ModelNotFoundError(LampchatError):
    """No model has the name asked for."""


def find_entry(wanted: str, entries: list[ModelEntry]) -> ModelEntry:
    """The local model `wanted` names: its name, file name or file stem (any case), an Ollama name
    without its tag (`:latest`), `org/repo` for a repo's Q4_K_M among its quants,
    `name:QUANT` for a model whose file has that quantization, or a unique prefix. Raises
    ModelNotFoundError, or LampchatError listing the candidates when several match."""
    local = [e for e in entries if e.format != "remote" and e.path]
    key = wanted.strip().casefold()
    for match in (
        lambda e: key in (e.name.casefold(), PurePath(e.path).name.casefold(),
                          PurePath(e.path).stem.casefold()),
        lambda e: e.source == "ollama" and e.name.casefold() == f"{key}:latest",
        lambda e: e.name.casefold() == f"{key}:{DEFAULT_QUANT.casefold()}",
        lambda e: key == f"{e.name}:{quant_tag(PurePath(e.path).stem) or ''}".casefold(),
        lambda e: e.name.casefold().startswith(key),
    ):
        hits = list({os.path.realpath(e.path): e for e in local if match(e)}.values())
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            names = sorted(e.name for e in hits)
            more = f" and {len(names) - 6} more" if len(names) > 6 else ""
            raise LampchatError(f"model name {wanted!r} is ambiguous: it matches "
                                f"{', '.join(names[:6])}{more}")
    raise ModelNotFoundError(f"model not found: {wanted} (`lampchat models` lists the names)")


DEFAULT_QUANT = "Q4_K_M"
"""The quantization `org/repo` means when a repo holds several (as `lampchat pull` picks)."""


def _backends(fmt: str, family: str | None, preferred: str) -> tuple[str, ...]:
    """The backends that read `fmt` and run `family`, `preferred` first."""
    backends = readers(fmt, family)
    if preferred in backends:
        return (preferred, *[b for b in backends if b != preferred])
    return backends


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None


# -- the metadata cache -------------------------------------------------------------------------


def _signature(path: Path) -> list[int] | None:
    """Size and modification time of a file, or of a folder's newest file; None if unreadable."""
    try:
        if not path.is_dir():
            st = path.stat()
            return [st.st_size, st.st_mtime_ns]
        size, newest, count = 0, path.stat().st_mtime_ns, 0
        for root, _dirs, names in os.walk(path, followlinks=True):
            for n in names:
                st = os.stat(os.path.join(root, n))
                size, newest, count = size + st.st_size, max(newest, st.st_mtime_ns), count + 1
        return [size, newest, count]
    except OSError:
        return None


class MetadataCache:
    """`read_metadata` results kept in a JSON file, valid while a model's signature holds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._old: dict[str, Any] = {}
        self._new: dict[str, Any] = {}
        self._dirty = False
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            models = data.get("models") if isinstance(data, dict) else None
            if isinstance(models, dict) and data.get("version") == CACHE_VERSION:
                self._old = models  # any other shape: ignored, and rebuilt
        except FileNotFoundError:
            pass
        except (OSError, ValueError, RecursionError) as exc:
            log.info("ignoring the model metadata cache %s: %s", path, exc)

    def get(self, path: Path, fmt: str) -> ModelMeta:
        """The metadata of `path`, from the cache when its signature matches."""
        key = f"{fmt}:{path}"
        signature = _signature(path)
        cached = self._old.get(key)
        if signature is not None and isinstance(cached, dict) and cached.get("sig") == signature:
            try:
                meta = ModelMeta(**cached["meta"])
            except (TypeError, KeyError):
                meta = None
            if meta is not None:
                self._new[key] = cached
                return meta
        meta = read_metadata(path, fmt)
        if signature is not None:
            self._new[key] = {"sig": signature, "meta": asdict(meta)}
        self._dirty = True
        return meta

    def save(self) -> None:
        """Write the entries used by this listing (best effort: a failure is only logged)."""
        if not self._dirty and self._new.keys() == self._old.keys():
            return

        try:
            text = json.dumps({"version": CACHE_VERSION, "models": self._new}, indent=0)
            atomic_write_text(self.path, text)
        except OSError as exc:
            log.info("could not write the model metadata cache %s: %s", self.path, exc)
