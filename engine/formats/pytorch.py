"""PyTorch checkpoints (.pt/.pth/.bin, zip or legacy format) read without running pickle code.

The pickle goes through `safe_unpickler.RestrictedUnpickler`; storages are memory-mapped from the
file (zip entries are stored uncompressed by torch.save) and checked against the sizes the pickle
claims, so a truncated or inconsistent checkpoint gets a clear error rather than garbage.
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ModelLoadError
from engine.formats.hf_folder import shard_files
from engine.formats.magic import TORCH_LEGACY_MAGIC, ZIP_MAGIC, read_magic
from engine.formats.safe_unpickler import (
    RestrictedUnpickler,
    StorageRef,
    TensorRef,
    run_unpickler,
)

Progress = Callable[[float, str], None]

LEGACY_PROTOCOL = 1001
PYTORCH_INDEX = "pytorch_model.bin.index.json"
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module")


MAX_PICKLE = 64 << 20
"""The largest data.pkl unpickled (a 70B model's is a few MB)."""
MAX_DEFLATE_RATIO = 20
"""A deflated storage may inflate at most this much (torch stores them uncompressed)."""
MAX_DEPTH = 64
MAX_DICTS = 1_000_000


def is_pytorch_file(path: Path) -> bool:
    """True when the file starts like a zip or legacy torch.save checkpoint."""
    head = read_magic(path, 16)
    return head[:4] == ZIP_MAGIC or (head[:1] == b"\x80" and head[4:14] == TORCH_LEGACY_MAGIC)


def pytorch_files(folder: Path) -> list[Path]:
    """The PyTorch weight files of an HF-style folder (sharded via index, or single)."""
    if (folder / PYTORCH_INDEX).is_file():
        return shard_files(folder, PYTORCH_INDEX)
    for name in ("pytorch_model.bin", "model.pt", "model.pth", "consolidated.00.pth"):
        if (folder / name).is_file():
            return [folder / name]
    candidates = sorted(
        f for f in folder.iterdir()
        if f.is_file() and f.suffix in (".bin", ".pt", ".pth") and is_pytorch_file(f)
    )
    return candidates


def read_checkpoint(path: Path) -> dict[str, TensorRef]:
    """The tensors of a checkpoint (flattened state dict), storages mapped, bounds checked."""
    head = read_magic(path, 16)
    if head[:4] == ZIP_MAGIC:
        obj = _read_zip(path)
    elif head[:1] == b"\x80" and head[4:14] == TORCH_LEGACY_MAGIC:
        obj = _read_legacy(path)
    else:
        raise ModelLoadError(f"not a PyTorch checkpoint: {path}")
    tensors = flatten_state_dict(obj)
    if not tensors:
        raise ModelLoadError(f"PyTorch checkpoint holds no tensors: {path}")
    for ref in tensors.values():
        ref.check_bounds()
    return tensors


def iter_pytorch(
    path: Path, dtype: Any = None, progress: Progress | None = None,
    progress_range: tuple[float, float] = (0.0, 1.0),
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (name, array) for each tensor; floating-point arrays cast to `dtype` when given."""
    tensors = read_checkpoint(path)
    want = np.dtype(dtype) if dtype is not None else None
    lo, hi = progress_range
    for n, (name, ref) in enumerate(tensors.items(), 1):
        arr = ref.to_numpy()
        if want is not None and arr.dtype.kind == "f" and arr.dtype != want:
            arr = arr.astype(want)
        elif not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr)
        if progress is not None:
            progress(lo + (hi - lo) * n / len(tensors), name)
        yield name, arr


def flatten_state_dict(obj: Any) -> dict[str, TensorRef]:
    """Tensors of a checkpoint object by dotted name (unwrapping {"state_dict": ...} and such)."""
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict) and any(isinstance(v, TensorRef) for v in inner.values()):
                obj = inner
                break
    out: dict[str, TensorRef] = {}

    seen: set[int] = set()
    stack: list[tuple[Any, str, int]] = [(obj, "", 0)]
    while stack:  # each dict once: shared ones made a 1 kB pickle a 2^48-path walk
        value, prefix, depth = stack.pop()
        if isinstance(value, TensorRef):
            out[prefix] = value
        elif isinstance(value, dict) and id(value) not in seen and depth < MAX_DEPTH:
            seen.add(id(value))
            if len(seen) > MAX_DICTS:
                raise ModelLoadError(f"checkpoint nests over {MAX_DICTS:,} dicts (refused)")
            stack.extend((v, f"{prefix}.{k}" if prefix else str(k), depth + 1)
                         for k, v in reversed(list(value.items())))
    return out


def _read_zip(path: Path) -> Any:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ModelLoadError(f"PyTorch zip checkpoint is damaged or truncated: {path}") from exc
    with zf:
        _check_entries(zf, path)
        pkls = [n for n in zf.namelist() if n.endswith("data.pkl")]
        if len(pkls) != 1:
            raise ModelLoadError(f"PyTorch zip checkpoint has {len(pkls)} data.pkl files: {path}")
        prefix = pkls[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in zf.namelist():
            order = zf.read(f"{prefix}byteorder").decode("ascii", "replace").strip()
            if order != "little":
                raise ModelLoadError(f"big-endian PyTorch checkpoints are not supported: {path}")
        pkl_info = zf.getinfo(pkls[0])
        if pkl_info.file_size > MAX_PICKLE:
            raise ModelLoadError(f"PyTorch checkpoint's data.pkl is {pkl_info.file_size:,} bytes "
                                 f"(a real one is a few MB at most; refused): {path}")
        try:
            pickle_bytes = zf.read(pkls[0])
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ModelLoadError(f"PyTorch checkpoint's data.pkl is damaged: {path}") from exc

        unpickler = RestrictedUnpickler(io.BytesIO(pickle_bytes))
        obj = run_unpickler(unpickler)
        size = path.stat().st_size
        for ref in unpickler.storages.values():
            ref.data = _map_zip_storage(zf, path, size, f"{prefix}data/{ref.key}", ref)
    return obj


def _check_entries(zf: zipfile.ZipFile, path: Path) -> None:
    """Refuse entries PyTorch never writes before any is read: encrypted ones (zipfile asks
    for a password) and other compression methods than stored or deflated."""
    for info in zf.infolist():
        if info.flag_bits & 0x1:
            raise ModelLoadError(f"PyTorch checkpoint entry {info.filename!r} is encrypted "
                                 f"(PyTorch never writes that; refused): {path}")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ModelLoadError(f"PyTorch checkpoint entry {info.filename!r} uses compression "
                                 f"method {info.compress_type} (PyTorch stores its entries; "
                                 f"refused): {path}")


def _map_zip_storage(
    zf: zipfile.ZipFile, path: Path, file_size: int, name: str, ref: StorageRef
) -> np.ndarray:
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise ModelLoadError(
            f"PyTorch checkpoint lacks storage {ref.key!r} (truncated or damaged): {path}"
        ) from None
    dt = ref.stype.dtype
    need = ref.numel * dt.itemsize
    if info.file_size != need:
        raise ModelLoadError(
            f"storage {ref.key!r} holds {info.file_size} bytes but its type and size need {need}: "
            f"{path}"
        )
    if need == 0:
        return np.empty(0, dtype=dt)
    if info.compress_type != zipfile.ZIP_STORED:
        if need > MAX_DEFLATE_RATIO * max(info.compress_size, 1):  # torch stores, never deflates
            raise ModelLoadError(
                f"storage {ref.key!r} would inflate {need // max(info.compress_size, 1):,}-fold "
                f"(weights compress less than {MAX_DEFLATE_RATIO}-fold; refused): {path}")
        try:
            return np.frombuffer(zf.read(name), dtype=dt)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ModelLoadError(f"storage {ref.key!r} is damaged: {path}") from exc
    with path.open("rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
    if len(local) < 30 or local[:4] != ZIP_MAGIC:
        raise ModelLoadError(f"storage {ref.key!r} has a damaged zip header: {path}")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    offset = info.header_offset + 30 + name_len + extra_len
    if offset + need > file_size:
        raise ModelLoadError(f"storage {ref.key!r} runs past the end of the file: {path}")
    return np.memmap(path, dtype=dt, mode="r", offset=offset, shape=(ref.numel,))


def _read_legacy(path: Path) -> Any:
    size = path.stat().st_size
    storages: dict[str, StorageRef] = {}
    with path.open("rb") as fh:
        magic = run_unpickler(RestrictedUnpickler(fh))
        if magic != int.from_bytes(TORCH_LEGACY_MAGIC, "little"):
            raise ModelLoadError(f"legacy PyTorch checkpoint has a bad magic number: {path}")
        protocol = run_unpickler(RestrictedUnpickler(fh))
        if protocol != LEGACY_PROTOCOL:
            raise ModelLoadError(f"legacy PyTorch protocol {protocol!r} is not supported: {path}")
        sys_info = run_unpickler(RestrictedUnpickler(fh))
        if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
            raise ModelLoadError(f"big-endian PyTorch checkpoints are not supported: {path}")
        obj = run_unpickler(RestrictedUnpickler(fh, storages))
        keys = run_unpickler(RestrictedUnpickler(fh))
        if not isinstance(keys, list):
            raise ModelLoadError(f"legacy PyTorch checkpoint has no storage list: {path}")
        pos = fh.tell()
        for key in keys:
            ref = storages.get(str(key))
            if ref is None:
                raise ModelLoadError(f"legacy checkpoint lists unknown storage {key!r}: {path}")
            fh.seek(pos)
            head = fh.read(8)
            if len(head) < 8:
                raise ModelLoadError(f"legacy PyTorch checkpoint is truncated: {path}")
            (numel,) = struct.unpack("<q", head)
            if numel != ref.numel:
                raise ModelLoadError(
                    f"storage {ref.key!r} holds {numel} elements but the checkpoint claims "
                    f"{ref.numel}: {path}"
                )
            offset = pos + 8
            need = numel * ref.stype.dtype.itemsize
            if offset + need > size:
                raise ModelLoadError(f"legacy PyTorch checkpoint is truncated: {path}")
            ref.data = (
                np.memmap(path, dtype=ref.stype.dtype, mode="r", offset=offset, shape=(numel,))
                if numel else np.empty(0, dtype=ref.stype.dtype)
            )
            pos = offset + need
    missing = [k for k, ref in storages.items() if ref.data is None]
    if missing:
        raise ModelLoadError(f"legacy checkpoint lacks data for storage {missing[0]!r}: {path}")
    return obj
