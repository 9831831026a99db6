"""Removing a model from the Hugging Face cache, through `huggingface_hub`'s cache scan. No
Textual."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.errors import LampchatError
from widgets.model_entry import ModelEntry

STORE_TOOLS = {"ollama": "ollama rm NAME", "lmstudio": "LM Studio's My Models",
               "gpt4all": "GPT4All's model list", "llama.cpp": "deleting the file"}
"""How each other store removes its models."""


@dataclass(frozen=True)
class Removal:
    """What removing a model frees, and the call that does it."""

    size: int
    run: Callable[[], None]


def removal_for(entry: ModelEntry) -> Removal:
    """How to remove `entry` from the hub cache; LampchatError for a model kept elsewhere."""
    if entry.source != "huggingface":
        how = STORE_TOOLS.get(entry.source)
        where = f"remove it with {how}" if how else "delete it yourself"
        raise LampchatError(f"{entry.name} is not in the Hugging Face cache ({entry.path}); "
                            f"{where}")
    # huggingface_hub (0.3 s) only when removing
    from huggingface_hub import scan_cache_dir

    target = Path(entry.path)
    snapshot = target if target.is_dir() else target.parent
    cache = snapshot.parent.parent.parent
    info = scan_cache_dir(cache)
    for repo in info.repos:
        for revision in repo.revisions:
            if Path(revision.snapshot_path) != snapshot:
                continue
            files = [f for f in revision.files if target.is_dir() or
                     _parts_of(Path(f.file_path), target)]
            if target.is_dir() or len(files) == len(revision.files):
                strategy = info.delete_revisions(revision.commit_hash)
                return Removal(strategy.expected_freed_size, strategy.execute)
            others = {Path(f.blob_path) for r in repo.revisions for f in r.files
                      if f not in files}
            blobs = {Path(f.blob_path) for f in files} - others
            size = sum(b.stat().st_size for b in blobs if b.exists())

            return Removal(size, lambda links=files, data=blobs: _remove(links, data))
    raise LampchatError(f"{entry.name} is not in the Hugging Face cache's listing ({cache})")


def _remove(links: list, blobs: set[Path]) -> None:
    for link in links:
        os.unlink(link.file_path)
    for blob in blobs:
        blob.unlink(missing_ok=True)


def _parts_of(path: Path, first: Path) -> bool:
    """Whether `path` is `first` or another part of the same split GGUF."""
    if path == first:
        return True
    stem = first.name.split("-00001-of-")
    return len(stem) == 2 and path.parent == first.parent and \
        path.name.startswith(stem[0] + "-") and path.name.endswith("-of-" + stem[1])
