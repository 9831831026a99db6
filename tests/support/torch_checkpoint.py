"""Write PyTorch checkpoints (`torch.save`'s zip and legacy layouts) without torch.

The pickles name torch's globals (`torch._utils._rebuild_tensor_v2`, `torch.FloatStorage`, ...)
by GLOBAL opcodes, exactly as torch.save writes them, so tests can build real checkpoints (and
crafted malicious ones) on machines where torch is not installed.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float16): "HalfStorage",
                 np.dtype(np.float64): "DoubleStorage", np.dtype(np.int64): "LongStorage"}


class Global:
    """A reference `module.name` that pickles as a GLOBAL opcode (never imported here)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: Any) -> Any:  # pickle's save_reduce wants a callable
        raise RuntimeError("a pickled reference, not a function")


class Reduce:
    """An object that pickles as `func(*args)` (REDUCE), optionally followed by BUILD(state)."""

    def __init__(self, func: Global, args: tuple[Any, ...], state: Any = None) -> None:
        self.func, self.args, self.state = func, args, state

    def __reduce__(self) -> tuple[Any, ...]:
        if self.state is None:
            return (self.func, self.args)
        return (self.func, self.args, self.state)


class Storage:
    """A storage a checkpoint's pickle refers to by persistent id."""

    def __init__(self, key: str, data: np.ndarray, numel: int | None = None,
                 type_name: str | None = None) -> None:
        self.key = key
        self.data = np.ascontiguousarray(data).reshape(-1)
        self.numel = self.data.size if numel is None else numel
        self.type_name = type_name or STORAGE_NAMES[self.data.dtype]


class _Pickler(pickle._Pickler):  # type: ignore[name-defined,misc]
    def __init__(self, file: io.BytesIO, legacy: bool) -> None:
        super().__init__(file, protocol=2)
        self.legacy = legacy

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        if isinstance(obj, Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            return
        super().save(obj, save_persistent_id)

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, Storage):
            pid = ("storage", Global("torch", obj.type_name), obj.key, "cpu", obj.numel)
            return (*pid, None) if self.legacy else pid
        return None


def dumps(obj: Any, legacy: bool = False) -> bytes:
    """Pickle `obj` (protocol 2) with Global/Reduce/Storage written as torch.save does."""
    buf = io.BytesIO()
    _Pickler(buf, legacy).dump(obj)
    return buf.getvalue()


def tensor(storage: Storage, shape: tuple[int, ...], offset: int = 0) -> Reduce:
    """`torch._utils._rebuild_tensor_v2(storage, offset, shape, stride, False, OrderedDict())`."""
    stride = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))
    return Reduce(Global("torch._utils", "_rebuild_tensor_v2"),
                  (storage, offset, tuple(shape), stride, False, OrderedDict()))


def state_dict(arrays: dict[str, np.ndarray]) -> tuple[Any, list[Storage]]:
    """A state_dict object over one storage per array, and the storages."""
    storages, state = [], OrderedDict()
    for i, (name, arr) in enumerate(arrays.items()):
        storage = Storage(str(i), arr)
        storages.append(storage)
        state[name] = tensor(storage, arr.shape)
    return state, storages


def save_zip(path: Path, obj: Any, storages: list[Storage], prefix: str = "archive") -> Path:
    """torch.save's zip layout: `{prefix}/data.pkl`, `data/<key>` storages (stored), version."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{prefix}/data.pkl", dumps(obj))
        zf.writestr(f"{prefix}/byteorder", "little")
        for storage in storages:
            zf.writestr(f"{prefix}/data/{storage.key}", storage.data.tobytes())
        zf.writestr(f"{prefix}/version", "3\n")
    return path


def save_legacy(path: Path, obj: Any, storages: list[Storage]) -> Path:
    """torch.save's legacy layout: magic, protocol, sys info, object, keys, raw storages."""
    sys_info = {"protocol_version": LEGACY_PROTOCOL, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}
    with path.open("wb") as fh:
        for part in (LEGACY_MAGIC, LEGACY_PROTOCOL, sys_info):
            fh.write(pickle.dumps(part, protocol=2))
        fh.write(dumps(obj, legacy=True))
        fh.write(pickle.dumps([s.key for s in storages], protocol=2))
        for storage in storages:
            fh.write(struct.pack("<q", storage.data.size))  # what is stored, not the claim
            fh.write(storage.data.tobytes())
    return path


def save_state_dict(path: Path, arrays: dict[str, np.ndarray], layout: str = "zip") -> Path:
    """Write `arrays` as a PyTorch state_dict checkpoint in the `zip` or `legacy` layout."""
    obj, storages = state_dict(arrays)
    return (save_zip if layout == "zip" else save_legacy)(path, obj, storages)
