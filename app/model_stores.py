"""The models already on the machine, in the stores of the tools people use: Ollama, the
Hugging Face hub cache, LM Studio, GPT4All and llama.cpp's download cache. No Textual.

Each store is read by its own layout, with a bounded depth and file count, never following a
link out of it more than once; a store that is absent or unreadable is simply empty. Every
model found carries the name users type for it in that tool (`smollm2:135m` in Ollama,
`org/repo` or `org/repo:Q4_K_M` in the hub cache) and, for Ollama, the parameters it stores.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.config_schema import MODEL_STORES
from engine.files import parse_json
from engine.models import friendly_name, quant_tag

log = logging.getLogger(__name__)

STORES = MODEL_STORES
"""The stores searched (the `model.discover` config key lists which; default all)."""

STORE_LABELS = {"ollama": "Ollama", "huggingface": "Hugging Face cache",
                "lmstudio": "LM Studio", "gpt4all": "GPT4All", "llama.cpp": "llama.cpp cache",
                "dirs": "model.dirs", "bundled": "bundled"}
"""How each source is named in the picker and `lampchat models`."""

MAX_ENTRIES = 5_000
"""At most this many manifests or files are looked at per store."""
MAX_SIDE_FILE = 1 << 20
"""Ollama manifests, params and system layers are small; larger ones are not read."""
OLLAMA_MODEL = "application/vnd.ollama.image.model"
OLLAMA_PARAMS = "application/vnd.ollama.image.params"
OLLAMA_SYSTEM = "application/vnd.ollama.image.system"
OLLAMA_LIBRARY = ("registry.ollama.ai", "library")


@dataclass(frozen=True)
class StoreModel:
    """One model found in a store."""

    path: Path
    """The file (or HF-style folder) to load."""
    name: str
    """The name users type for it in that store's tool."""
    source: str
    """One of `STORES`."""
    params: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    """Generation defaults the store keeps for it (Ollama's params layer)."""
    system: str | None = None
    """The system prompt the store keeps for it (Ollama's system layer)."""


def discover(stores: Iterable[str] = STORES, env: Mapping[str, str] | None = None,
             home: Path | None = None) -> list[StoreModel]:
    """Every model in the enabled `stores`, in that order (`env`, `home`: for tests)."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or Path.home()) if home is None else home
    found: list[StoreModel] = []
    for store in stores:
        reader = _READERS.get(store)
        if reader is None:
            continue
        try:
            found.extend(reader(env, home))
        except Exception:  # one unreadable store never breaks the listing
            log.warning("reading the %s store failed", store, exc_info=True)
    return found


# -- Ollama -------------------------------------------------------------------------------------


def ollama_roots(env: Mapping[str, str], home: Path) -> list[Path]:
    """`OLLAMA_MODELS`, else the user's and the Linux service's stores."""
    if env.get("OLLAMA_MODELS"):
        return [Path(env["OLLAMA_MODELS"]).expanduser()]
    return [home / ".ollama" / "models", Path("/usr/share/ollama/.ollama/models")]


def _ollama(env: Mapping[str, str], home: Path) -> list[StoreModel]:
    found: list[StoreModel] = []
    for root in _unique_dirs(ollama_roots(env, home)):
        manifests = root / "manifests"
        # manifests/<registry>/<namespace>/<name>/<tag>: exactly four levels
        for manifest in _files_at_depth(manifests, 4):
            model = _ollama_model(root, manifest, manifest.relative_to(manifests).parts)
            if model is not None:
                found.append(model)
    return found


def _ollama_model(root: Path, manifest: Path, parts: tuple[str, ...]) -> StoreModel | None:
    data = _read_json(manifest)
    layers = data.get("layers") if isinstance(data, dict) else None
    if not isinstance(layers, list):
        log.info("ollama: %s is not a manifest", manifest)
        return None
    by_type: dict[str, Path] = {}
    for layer in layers:
        if isinstance(layer, dict) and isinstance(layer.get("digest"), str):
            digest = layer["digest"].replace(":", "-")
            if "/" not in digest and digest.startswith("sha256-"):
                by_type.setdefault(str(layer.get("mediaType")), root / "blobs" / digest)
    blob = by_type.get(OLLAMA_MODEL)
    if blob is None or not blob.is_file():
        log.info("ollama: %s names no model blob that exists", manifest)
        return None
    registry, namespace, name, tag = parts
    if (registry, namespace) == OLLAMA_LIBRARY:
        label = f"{name}:{tag}"
    elif registry == OLLAMA_LIBRARY[0]:
        label = f"{namespace}/{name}:{tag}"
    else:
        label = f"{registry}/{namespace}/{name}:{tag}"
    params = _read_json(by_type[OLLAMA_PARAMS]) if OLLAMA_PARAMS in by_type else {}
    system = _read_text(by_type[OLLAMA_SYSTEM]) if OLLAMA_SYSTEM in by_type else None
    return StoreModel(blob, label, "ollama", params if isinstance(params, dict) else {},
                      system)


# -- the Hugging Face hub cache -------------------------------------------------------------------


def hf_cache_dir(env: Mapping[str, str], home: Path) -> Path:
    """`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`."""
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    cache = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") \
        else home / ".cache"
    return cache / "huggingface" / "hub"


def _huggingface(env: Mapping[str, str], home: Path) -> list[StoreModel]:
    cache = hf_cache_dir(env, home)
    if not cache.is_dir():
        return []
    # huggingface_hub (0.3 s) only when a hub cache exists
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(cache)
    found: list[StoreModel] = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id.casefold()):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        revision = next((r for r in repo.revisions if "main" in r.refs),
                        max(repo.revisions, key=lambda r: r.last_modified))
        ggufs = sorted(Path(f.file_path) for f in revision.files if _is_chat_gguf(f.file_name))
        found.extend(_named(ggufs, repo.repo_id, "huggingface"))
        snapshot = Path(revision.snapshot_path)
        names = {f.file_name for f in revision.files}
        if "config.json" in names and any(n.endswith(".safetensors") for n in names):
            found.append(StoreModel(snapshot, repo.repo_id, "huggingface"))
    return found


# -- LM Studio, GPT4All, llama.cpp ---------------------------------------------------------------


def _lmstudio(env: Mapping[str, str], home: Path) -> list[StoreModel]:
    found: list[StoreModel] = []
    roots = [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]
    for root in _unique_dirs(roots):
        by_repo: dict[tuple[str, str], list[Path]] = defaultdict(list)
        for file in _files_at_depth(root, 3):  # <publisher>/<repo>/<file>.gguf
            if _is_chat_gguf(file.name):
                publisher, repo, _ = file.relative_to(root).parts
                by_repo[(publisher, repo)].append(file)
        for (publisher, repo), files in sorted(by_repo.items()):
            found.extend(_named(sorted(files), f"{publisher}/{repo}", "lmstudio"))
    return found


def _gpt4all(env: Mapping[str, str], home: Path) -> list[StoreModel]:
    data = Path(env["XDG_DATA_HOME"]).expanduser() if env.get("XDG_DATA_HOME") \
        else home / ".local" / "share"
    return _flat(data / "nomic.ai" / "GPT4All", "gpt4all")


def _llama_cpp(env: Mapping[str, str], home: Path) -> list[StoreModel]:
    if env.get("LLAMA_CACHE"):
        return _flat(Path(env["LLAMA_CACHE"]).expanduser(), "llama.cpp")
    cache = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") \
        else home / ".cache"
    return _flat(cache / "llama.cpp", "llama.cpp")


def _flat(folder: Path, source: str) -> list[StoreModel]:
    """The GGUF files directly in `folder`, by their friendly names."""
    files = sorted(f for f in _files_at_depth(folder, 1) if _is_chat_gguf(f.name))
    return [StoreModel(f, friendly_name(f), source) for f in files]


# -- helpers ------------------------------------------------------------------------------------


def _named(files: list[Path], base: str, source: str) -> list[StoreModel]:
    """`base` for a repo's one GGUF; `base:QUANT` (else `base/file`) for each of several."""
    if len(files) == 1:
        return [StoreModel(files[0], base, source)]
    out = []
    for file in files:
        tag = quant_tag(file.stem)
        out.append(StoreModel(file, f"{base}:{tag}" if tag else f"{base}/{file.name}", source))
    return out


def _is_chat_gguf(name: str) -> bool:
    """A GGUF file that is a model's first (or only) part, not a vision projector."""
    lower = name.lower()
    if not lower.endswith(".gguf") or lower.startswith(("mmproj", ".")):
        return False
    parts = lower.removesuffix(".gguf").rsplit("-of-", 1)
    return len(parts) == 1 or not parts[0][-5:].isdigit() or parts[0].endswith("00001")


def _files_at_depth(root: Path, depth: int) -> list[Path]:
    """Regular files exactly `depth` levels below `root` (at most MAX_ENTRIES looked at),
    hidden names skipped, each real folder visited once."""
    if not root.is_dir():
        return []
    out: list[Path] = []
    seen: set[tuple[int, int]] = set()
    budget = [MAX_ENTRIES]

    def walk(folder: Path, left: int) -> None:
        try:
            st = folder.stat()
            if (st.st_dev, st.st_ino) in seen:
                return
            seen.add((st.st_dev, st.st_ino))
            children = sorted(folder.iterdir())
        except OSError:
            return
        for child in children:
            if budget[0] <= 0 or child.name.startswith("."):
                continue
            budget[0] -= 1
            try:
                if left == 1 and child.is_file():
                    out.append(child)
                elif left > 1 and child.is_dir():
                    walk(child, left - 1)
            except OSError:
                continue

    walk(root, depth)
    return out


def _unique_dirs(paths: list[Path]) -> list[Path]:
    out, seen = [], set()
    for path in paths:
        try:
            real = path.resolve()
        except OSError:
            continue
        if real not in seen and path.is_dir():
            seen.add(real)
            out.append(path)
    return out


def _read_json(path: Path) -> Any:
    text = _read_text(path)
    try:
        return parse_json(text) if text is not None else None
    except ValueError:
        log.info("%s is not JSON", path)
        return None


def _read_text(path: Path) -> str | None:
    try:
        if not path.is_file() or path.stat().st_size > MAX_SIDE_FILE:
            return None
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


_READERS: dict[str, Callable[[Mapping[str, str], Path], list[StoreModel]]] = {
    "ollama": _ollama, "huggingface": _huggingface, "lmstudio": _lmstudio,
    "gpt4all": _gpt4all, "llama.cpp": _llama_cpp,
}
