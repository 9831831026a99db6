"""Crafted PyTorch checkpoints that cost minutes or gigabytes: each is refused (or read) in
bounded time and memory, with one line."""

from __future__ import annotations

import time
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from engine.errors import ModelLoadError
from engine.formats.pytorch import read_checkpoint
from tests.support import torch_checkpoint as tc


def _zip(path: Path, obj, storages, compress_storages: bool = False) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", tc.dumps(obj))
        zf.writestr("archive/byteorder", "little")
        for s in storages:
            kind = zipfile.ZIP_DEFLATED if compress_storages else zipfile.ZIP_STORED
            zf.writestr(f"archive/data/{s.key}", s.data.tobytes(), compress_type=kind)
    return path


def test_shared_dicts_are_walked_once(tmp_path: Path) -> None:
    """48 levels of a dict referencing the one below twice: 2^48 paths, a 1 kB pickle."""
    storage = tc.Storage("0", np.ones(4, np.float32))
    level: dict = {"w": tc.tensor(storage, (4,))}
    for _ in range(48):
        level = {"a": level, "b": level}
    start = time.monotonic()
    tensors = read_checkpoint(_zip(tmp_path / "dag.pt", level, [storage]))
    assert time.monotonic() - start < 5 and "a." * 48 + "w" in "".join(tensors)


def test_a_stride_zero_tensor_larger_than_its_storage_is_refused(tmp_path: Path) -> None:
    storage = tc.Storage("0", np.ones(1, np.float32))
    huge = tc.Reduce(tc.Global("torch._utils", "_rebuild_tensor_v2"),
                     (storage, 0, (20_000, 20_000), (0, 0), False, OrderedDict()))
    with pytest.raises(ModelLoadError, match="more than the 1 its storage holds"):
        read_checkpoint(_zip(tmp_path / "stride0.pt", {"w": huge}, [storage]))


def test_a_deflated_storage_that_would_inflate_wildly_is_refused(tmp_path: Path) -> None:
    storage = tc.Storage("0", np.zeros(5_000_000, np.float32))  # 20 MB of zeros
    path = _zip(tmp_path / "bomb.pt", {"w": tc.tensor(storage, (5_000_000,))}, [storage],
                compress_storages=True)
    assert path.stat().st_size < 200_000
    with pytest.raises(ModelLoadError, match="would inflate"):
        read_checkpoint(path)


def test_a_huge_integer_in_the_pickle_is_refused(tmp_path: Path) -> None:
    storage = tc.Storage("0", np.ones(4, np.float32))
    obj = {"w": tc.tensor(storage, (4,)), "big": 1 << (8 * 100_000)}
    with pytest.raises(ModelLoadError, match="byte integer"):
        read_checkpoint(_zip(tmp_path / "long.pt", obj, [storage]))
