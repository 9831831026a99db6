"""`lampchat pull`: a model from the Hugging Face hub into the hub cache that other tools share,
resumable, checked, with progress. No Textual.

`plan_pull` asks the hub (through `huggingface_hub`) which files a spec means: `org/repo`
(its one GGUF, else its Q4_K_M, else the choice is listed), `org/repo:QUANT`,
`org/repo/FILE.gguf`, or a safetensors repo's folder files. `pull` downloads each file into
`blobs/<etag>.lampchat-partial` (a later pull resumes it with a Range request), checks its
sha256 against the hub's, moves it into place, and lets `hf_hub_download` link it into the
snapshot as it links its own downloads. The token (`HF_TOKEN`) is never printed or logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.model_catalog import DEFAULT_QUANT
from app.model_stores import hf_cache_dir
from engine.errors import LampchatError
from engine.models import quant_tag
from widgets.model_entry import format_size

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
"""(bytes done, bytes in all, what) while downloading."""

FOLDER_FILES = re.compile(
    r"^(config\.json|generation_config\.json|tokenizer\.json|tokenizer_config\.json|"
    r"special_tokens_map\.json|tokenizer\.model|chat_template\.jinja|vocab\.json|merges\.txt|"
    r"model(-\d+-of-\d+)?\.safetensors|model\.safetensors\.index\.json)$")
"""The files an HF-style folder needs (not .bin/.pt/.onnx duplicates of the weights)."""
SPEC = re.compile(r"^(?P<repo>[\w.\-]+/[\w.\-]+)(?::(?P<quant>[\w\-]+)|/(?P<file>.+))?$")
HUB_TIMEOUT = 30.0
"""Seconds to wait for any answer of the hub (a listing, a header, the next bytes)."""
DISK_MARGIN = 64 * 2**20
"""Free space kept beyond the download itself."""
CHUNK = 1 << 20
PROGRESS_EVERY = 0.1
"""Seconds between progress reports (each may redraw a terminal line or a widget)."""


@dataclass(frozen=True)
class RepoFile:
    """One file of a repo, as the hub lists it."""

    name: str
    size: int
    sha256: str | None


@dataclass(frozen=True)
class PullPlan:
    """What a pull fetches."""

    repo_id: str
    revision: str
    files: tuple[RepoFile, ...]
    label: str
    """The name the model then has (`org/repo` or `org/repo:QUANT`)."""

    @property
    def size(self) -> int:
        """Bytes in all."""
        return sum(f.size for f in self.files)


class PullError(LampchatError):
    """A pull that cannot go on; one line saying why."""


def hub_api(endpoint: str | None = None) -> Any:
    """A `huggingface_hub.HfApi` (HF_ENDPOINT and HF_TOKEN from the environment)."""
    # huggingface_hub (0.3 s) only when pulling
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None)


def plan_pull(spec: str, api: Any = None) -> PullPlan:
    """The files `spec` means (see the module docstring); PullError when it means none or
    several (the choice is listed with sizes and quantizations)."""
    found = SPEC.match(spec.strip())
    if found is None:
        raise PullError(f"{spec!r} is not a hub model: give org/repo, org/repo:QUANT or "
                        "org/repo/FILE.gguf")
    repo_id, quant, file = found["repo"], found["quant"], found["file"]
    revision, siblings = _listing(api or hub_api(), repo_id)
    ggufs = _gguf_models(siblings)
    if file:
        parts = ggufs.get(file) or ([siblings[file]] if file in siblings else None)
        if parts is None:
            raise PullError(f"{repo_id} has no file {file}")
        return PullPlan(repo_id, revision, tuple(parts), f"{repo_id}/{file}")
    if not ggufs:
        folder = tuple(f for name, f in sorted(siblings.items()) if FOLDER_FILES.match(name))
        if not any(f.name.endswith(".safetensors") for f in folder):
            raise PullError(f"{repo_id} has neither GGUF files nor safetensors weights")
        if quant:
            raise PullError(f"{repo_id} has no GGUF files to pick {quant} from")
        return PullPlan(repo_id, revision, folder, repo_id)
    by_quant = {(quant_tag(Path(n).stem) or n).upper(): n for n in ggufs}
    if quant:
        name = by_quant.get(quant.upper())
        if name is None:
            raise PullError(f"{repo_id} has no {quant} file; it has: {choices(ggufs)}")
    elif len(ggufs) == 1:
        name = next(iter(ggufs))
    elif DEFAULT_QUANT in by_quant:
        name = by_quant[DEFAULT_QUANT]
    else:
        raise PullError(f"{repo_id} holds several GGUF files; pick one with "
                        f"{repo_id}:QUANT: {choices(ggufs)}")
    label = repo_id if len(ggufs) == 1 else f"{repo_id}:{quant_tag(Path(name).stem) or name}"
    return PullPlan(repo_id, revision, tuple(ggufs[name]), label)


def pull_options(spec: str, api: Any = None,
                 cache_dir: Path | None = None) -> list[tuple[str, str]]:
    """What can be pulled from the repo `spec` names: (spec to pull, "Q4_K_M · 4.4 GB") for
    each GGUF model by size, " · downloaded" when the cache has it, or the safetensors
    folder (the download dialog's list)."""
    repo = _repo_of(spec)
    _revision, files = _listing(api or hub_api(), repo)
    ggufs = _gguf_models(files)
    options = []
    for name, parts in sorted(ggufs.items(), key=lambda kv: sum(p.size for p in kv[1])):
        tag = quant_tag(Path(name).stem)
        spec_for = f"{repo}:{tag}" if tag else f"{repo}/{name}"
        have = " · downloaded" if _cached(repo, name, cache_dir) else ""
        size = format_size(sum(p.size for p in parts))
        options.append((spec_for, f"{tag or name} · {size}{have}"))
    if not options:
        folder = [f for n, f in files.items() if FOLDER_FILES.match(n)]
        if any(f.name.endswith(".safetensors") for f in folder):
            size = format_size(sum(f.size for f in folder))
            options.append((repo, f"safetensors folder · {size}"))
    if not options:
        raise PullError(f"{repo} has neither GGUF files nor safetensors weights")
    return options


def _cached(repo: str, name: str, cache_dir: Path | None) -> bool:
    """Whether the hub cache already holds `repo`'s file `name`."""
    # huggingface_hub (0.3 s) only when pulling
    from huggingface_hub import try_to_load_from_cache

    cache = cache_dir or hf_cache_dir(os.environ, Path.home())
    return isinstance(try_to_load_from_cache(repo, name, cache_dir=cache), str)


def repo_choices(spec: str, api: Any = None) -> str:
    """The GGUF models of the repo `spec` names, by quantization and size (`pull --list`)."""
    repo = _repo_of(spec)
    _revision, files = _listing(api or hub_api(), repo)
    return choices(_gguf_models(files)) or f"{repo} has no GGUF files"


def _repo_of(spec: str) -> str:
    """The `org/repo` a spec names (its quant or file part ignored)."""
    found = SPEC.match(spec.strip())
    if found is None:
        raise PullError(f"{spec!r} is not a hub model: give org/repo")
    return found["repo"]


def _listing(api: Any, repo_id: str) -> tuple[str, dict[str, RepoFile]]:
    """The repo's commit and its files (size, LFS sha256), as the hub lists them."""
    info = _model_info(api, repo_id)
    files = {s.rfilename: RepoFile(s.rfilename, int(s.size or 0),
                                   getattr(s.lfs, "sha256", None) if s.lfs else None)
             for s in info.siblings or ()}
    return str(info.sha or "main"), files


def choices(ggufs: dict[str, list[RepoFile]]) -> str:
    """"Q4_K_M (4.4 GB), Q8_0 (7.7 GB)": a repo's GGUF models, by quantization and size."""
    items = []
    for name, parts in sorted(ggufs.items(), key=lambda kv: sum(p.size for p in kv[1])):
        tag = quant_tag(Path(name).stem) or name
        items.append(f"{tag} ({format_size(sum(p.size for p in parts))})")
    return ", ".join(items)


def pull(plan: PullPlan, cache_dir: Path | None = None, progress: Progress | None = None,
         api: Any = None, cancelled: Callable[[], bool] | None = None) -> Path:
    """Download `plan` into the hub cache (`cache_dir`: where discovery looks, by
    HF_HUB_CACHE's rules); returns the path to load (the GGUF file, or the snapshot folder).
    A cancelled or failed download keeps its partial file for the next pull to resume."""
    # huggingface_hub (0.3 s) only when pulling
    from huggingface_hub import (
        get_hf_file_metadata,
        get_token,
        hf_hub_download,
        hf_hub_url,
    )

    api = api or hub_api()
    token = api.token or get_token()  # HF_TOKEN, or the one `hf auth login` stored
    cache = Path(cache_dir).expanduser() if cache_dir else hf_cache_dir(os.environ, Path.home())
    repo_dir = cache / ("models--" + plan.repo_id.replace("/", "--"))
    done, total = 0, plan.size
    paths: list[Path] = []
    for file in plan.files:
        url = hf_hub_url(plan.repo_id, file.name, revision=plan.revision, endpoint=api.endpoint)
        meta = _hub_call(lambda u=url: get_hf_file_metadata(u, token=api.token,
                                                            timeout=HUB_TIMEOUT), plan.repo_id)
        etag = str(meta.etag or file.sha256 or "").strip('"')
        if not etag or "/" in etag:
            raise PullError(f"the hub gave no usable ETag for {file.name}")
        blob = repo_dir / "blobs" / etag
        if not blob.exists():
            blob.parent.mkdir(parents=True, exist_ok=True)
            part = blob.with_name(etag + ".lampchat-partial")
            size = int(meta.size or file.size)
            _check_space(blob.parent, size - (part.stat().st_size if part.exists() else 0))
            _download(meta.location, part, size, token, done, total, progress, file.name,
                      cancelled)
            _verify(part, file)
            os.replace(part, blob)
        done += file.size
        path = _hub_call(lambda f=file: hf_hub_download(  # links it, and records refs/main
            plan.repo_id, f.name, cache_dir=cache, endpoint=api.endpoint, token=api.token),
            plan.repo_id)
        paths.append(Path(path))
    if progress is not None:
        progress(total, total, "done")
    first = paths[0]
    if first.name.endswith(".gguf"):
        return first
    return first.parent


def _download(url: str, part: Path, size: int, token: str | None, done: int, total: int,
              progress: Progress | None, name: str,
              cancelled: Callable[[], bool] | None) -> None:
    """Fetch `url` into `part`, resuming from what it holds."""
    # httpx (0.1 s) only when pulling
    import httpx

    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    headers = {"Accept-Encoding": "identity"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if have:
        headers["Range"] = f"bytes={have}-"
    started, at_start = time.monotonic(), have
    try:
        with httpx.stream("GET", url, headers=headers, timeout=HUB_TIMEOUT,
                          follow_redirects=True) as response:
            if response.status_code == 200 and have:  # the server ignored the Range
                have = 0
            elif response.status_code not in (200, 206):
                raise PullError(f"the hub answered {response.status_code} for {name}")
            with part.open("r+b" if have else "wb") as out:
                out.seek(have)
                out.truncate()
                shown = 0.0
                for chunk in response.iter_bytes():  # as it arrives: kept if the line drops
                    out.write(chunk)
                    have += len(chunk)
                    now = time.monotonic()
                    if progress is not None and (now - shown >= PROGRESS_EVERY or have == size):
                        shown = now
                        rate = (have - at_start) / max(time.monotonic() - started, 1e-3)
                        eta = (size - have) / rate if rate > 0 else 0
                        progress(done + have, total,
                                 f"{name} {format_size(int(rate))}/s, ETA {_clock(eta)}")
                    if cancelled is not None and cancelled():
                        raise PullError(f"pull cancelled; {format_size(have)} of {name} kept for "
                                        "the next pull")
    except httpx.HTTPError as exc:
        raise PullError(f"download of {name} stopped at {format_size(have)} of {format_size(size)} "
                        f"({type(exc).__name__}); pull again to resume") from None
    if have < size:
        raise PullError(f"download of {name} stopped at {format_size(have)} of "
                        f"{format_size(size)}; pull again to resume")


def _verify(part: Path, file: RepoFile) -> None:
    """Discard `part` (and raise) when its sha256 is not the hub's."""
    if not file.sha256:
        return
    digest = hashlib.sha256()
    with part.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    if digest.hexdigest() != file.sha256:
        part.unlink()
        raise PullError(f"{file.name} does not match the hub's checksum (sha256); the "
                        "download was discarded, pull again")


def _check_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed + DISK_MARGIN:
        raise PullError(f"not enough free disk space in {folder}: the download needs "
                        f"{format_size(needed)}, {format_size(free)} is free")


def _model_info(api: Any, repo_id: str) -> Any:
    return _hub_call(lambda: api.model_info(repo_id, files_metadata=True, timeout=HUB_TIMEOUT),
                     repo_id)


def _hub_call(call: Callable[[], Any], repo_id: str) -> Any:
    """`call()`, its hub errors as one line (never with the token)."""
    # huggingface_hub (0.3 s) only when pulling
    from huggingface_hub import errors

    try:
        return call()
    except errors.GatedRepoError:
        raise PullError(f"{repo_id} is gated: accept its terms on the hub and set HF_TOKEN to "
                        "a token that may read it") from None
    except errors.RepositoryNotFoundError:
        raise PullError(f"{repo_id} was not found on the hub (or it is private: set "
                        "HF_TOKEN)") from None
    except errors.EntryNotFoundError:
        raise PullError(f"a file of {repo_id} is missing on the hub") from None
    except errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "no answer"
        raise PullError(f"the hub answered {status} for {repo_id}") from None
    except OSError as exc:  # httpx's connection errors are OSErrors too
        raise PullError(f"cannot reach the hub for {repo_id}: {type(exc).__name__}") from None
    except Exception as exc:  # httpx.HTTPError and the like: one line, no token
        log.info("hub call for %s failed: %s", repo_id, type(exc).__name__)
        raise PullError(f"cannot reach the hub for {repo_id}: {type(exc).__name__}") from None


def _gguf_models(siblings: dict[str, RepoFile]) -> dict[str, list[RepoFile]]:
    """The repo's GGUF models: first file name -> its parts (split files together)."""
    models: dict[str, list[RepoFile]] = {}
    for name in sorted(siblings):
        lower = name.lower()
        if not lower.endswith(".gguf") or Path(lower).name.startswith("mmproj"):
            continue
        split = re.match(r"^(.*)-(\d{5})-of-(\d{5})\.gguf$", name, re.IGNORECASE)
        if split is None:
            models[name] = [siblings[name]]
        elif split[2] == "00001":
            parts = [f"{split[1]}-{i:05d}-of-{split[3]}.gguf" for i in range(1, int(split[3]) + 1)]
            if all(p in siblings for p in parts):
                models[name] = [siblings[p] for p in parts]
    return models


def _clock(seconds: float) -> str:
    seconds = int(max(0, min(seconds, 359_999)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
