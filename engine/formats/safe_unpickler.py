"""A restricted unpickler for PyTorch checkpoints: it never imports or runs anything.

Only the few globals a state_dict needs are resolved, each to a harmless stand-in defined here
(tensor rebuild functions, storage types, OrderedDict); every other global is refused with
UnsafeCheckpointError naming it. There is no fallback to the normal `find_class`, and the BUILD
opcode (which can call `__setstate__`) is limited to the stand-ins. Tensors come out as lazy
references into storages; `pytorch.py` maps the storage bytes to numpy arrays.
"""

from __future__ import annotations

import io
import math
import pickle
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from engine.errors import ModelLoadError, UnsafeCheckpointError


@dataclass(frozen=True)
class StorageType:
    """A torch storage class (torch.FloatStorage, ...) reduced to its element type."""

    name: str
    dtype: np.dtype[Any]
    bf16: bool = False


STORAGE_TYPES: dict[str, StorageType] = {
    name: StorageType(name, np.dtype(dt), name == "BFloat16Storage")
    for name, dt in {
        "FloatStorage": np.float32,
        "DoubleStorage": np.float64,
        "HalfStorage": np.float16,
        "BFloat16Storage": np.uint16,
        "LongStorage": np.int64,
        "IntStorage": np.int32,
        "ShortStorage": np.int16,
        "CharStorage": np.int8,
        "ByteStorage": np.uint8,
        "BoolStorage": np.bool_,
    }.items()
}


@dataclass
class StorageRef:
    """A storage named by a checkpoint's persistent id; `data` is filled in by the loader."""

    key: str
    stype: StorageType
    numel: int
    data: np.ndarray | None = None


MAX_LONG_BYTES = 64
"""The longest binary integer a checkpoint's pickle may hold."""


@dataclass
class TensorRef:
    """A tensor as a view (offset, size, stride, in elements) of a storage."""

    storage: StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def check_bounds(self) -> None:
        """Raise ModelLoadError if the view reaches outside its storage."""
        if self.offset < 0 or any(s < 0 for s in self.size) or any(s < 0 for s in self.stride):
            raise ModelLoadError(f"tensor in storage {self.storage.key!r} has a negative extent")
        if 0 in self.size:
            return
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if last >= self.storage.numel:
            raise ModelLoadError(
                f"tensor reaches element {last} of storage {self.storage.key!r}, which holds "
                f"{self.storage.numel}"
            )
        if math.prod(self.size) > max(self.storage.numel, 1):  # stride 0 repeating elements
            raise ModelLoadError(
                f"tensor in storage {self.storage.key!r} has {math.prod(self.size):,} elements, "
                f"more than the {self.storage.numel:,} its storage holds (refused)")

    def to_numpy(self) -> np.ndarray:
        """A numpy view of the storage (bfloat16 widened to float32)."""
        data = self.storage.data
        if data is None:
            raise ModelLoadError(f"storage {self.storage.key!r} has no data in the checkpoint")
        self.check_bounds()
        item = data.dtype.itemsize
        arr = np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=self.size, strides=[s * item for s in self.stride],
            writeable=False,
        )
        if self.storage.stype.bf16:
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        return arr


class _Marker:
    """A harmless stand-in for a class a checkpoint may name (torch.Tensor, Parameter)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


def _tensor_args(storage: Any, offset: Any, size: Any, stride: Any) -> TensorRef:
    if not isinstance(storage, StorageRef):
        raise UnsafeCheckpointError("a tensor in the checkpoint is not backed by a storage")
    try:
        ref = TensorRef(storage, int(offset), tuple(int(s) for s in size),
                        tuple(int(s) for s in stride))
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"malformed tensor metadata in checkpoint ({exc})") from exc
    if len(ref.size) != len(ref.stride):
        raise ModelLoadError("malformed tensor metadata in checkpoint (size/stride mismatch)")
    return ref


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> TensorRef:
    return _tensor_args(storage, offset, size, stride)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> TensorRef:
    return _tensor_args(storage, offset, size, stride)


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    return data


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    if func not in SAFE_CALLABLES or not isinstance(new_type, _Marker):
        raise UnsafeCheckpointError("checkpoint rebuilds a tensor through a non-allowed function")
    return func(*args)


def _codecs_encode(text: Any, encoding: str = "utf-8") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise UnsafeCheckpointError("checkpoint calls _codecs.encode with unexpected arguments")
    return text.encode(encoding)


def _ordered_dict(*args: Any) -> OrderedDict[Any, Any]:
    if args and not isinstance(args[0], (list, tuple, dict)):
        raise UnsafeCheckpointError("checkpoint builds an OrderedDict from an unexpected value")
    return OrderedDict(*args)


def _size(*args: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in (args[0] if args else ()))


SAFE_CALLABLES: set[Callable[..., Any]] = {
    _rebuild_tensor_v2, _rebuild_tensor, _rebuild_parameter, _rebuild_from_type_v2,
    _codecs_encode, _ordered_dict, _size,
}

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): _Marker("torch.Tensor"),
    ("torch.nn.parameter", "Parameter"): _Marker("torch.nn.Parameter"),
    ("torch", "Size"): _size,
    ("_codecs", "encode"): _codecs_encode,
    **{("torch", name): st for name, st in STORAGE_TYPES.items()},
}
"""(module, name) -> the stand-in it resolves to. Nothing else is ever resolved."""


class RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined,misc]
    """The pure-Python unpickler with a strict allowlist; `persistent_load` yields StorageRefs.

    `storages` collects every storage the pickle names, by key.
    """

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def __init__(self, file: IO[bytes], storages: dict[str, StorageRef] | None = None) -> None:
        super().__init__(file, encoding="utf-8")
        self.storages: dict[str, StorageRef] = {} if storages is None else storages

    def find_class(self, module: str, name: str) -> Any:
        """Resolve only allowlisted globals; refuse everything else, naming it."""
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise UnsafeCheckpointError(
                f"checkpoint refers to {module}.{name}, which is not allowed in a weights file "
                f"(refused; nothing was run)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        """Map ('storage', type, key, location, numel[, view]) to a StorageRef."""
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise UnsafeCheckpointError(f"checkpoint has an unexpected persistent id {pid!r:.60}")
        _, stype, key, _location, numel = pid[:5]
        if not isinstance(stype, StorageType):
            raise UnsafeCheckpointError("checkpoint names a storage of an unknown type")
        if len(pid) > 5 and pid[5] is not None:
            raise ModelLoadError("legacy storage views are not supported in this checkpoint")
        try:
            key, numel = str(key), int(numel)
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"malformed storage id in checkpoint ({exc})") from exc
        if numel < 0:
            raise ModelLoadError(f"storage {key!r} has a negative size")
        ref = self.storages.get(key)
        if ref is None:
            ref = self.storages[key] = StorageRef(key, stype, numel)
        elif ref.numel != numel or ref.stype != stype:
            raise ModelLoadError(f"storage {key!r} is named twice with different sizes or types")
        return ref

    def load_build(self) -> None:
        """BUILD only on stand-in results; the state is dropped (no __setstate__ is called)."""
        stack = self.stack
        stack.pop()  # state
        inst = stack[-1]
        if not isinstance(inst, (TensorRef, OrderedDict)):
            raise UnsafeCheckpointError(
                f"checkpoint sets the state of a {type(inst).__name__} object (refused)"
            )

    dispatch[pickle.BUILD[0]] = load_build

    def load_long4(self) -> None:
        """LONG4 with a bound: a weights file's integers fit in 8 bytes, not 4 MB."""
        (n,) = struct.unpack("<i", self.read(4))
        if not 0 <= n <= MAX_LONG_BYTES:
            raise ModelLoadError(f"checkpoint pickle holds a {n:,}-byte integer (refused)")
        self.append(int.from_bytes(self.read(n), "little", signed=True))

    dispatch[pickle.LONG4[0]] = load_long4


def restricted_loads(data: bytes) -> tuple[Any, dict[str, StorageRef]]:
    """Unpickle `data` with the allowlist; returns the object and the storages it names."""
    unpickler = RestrictedUnpickler(io.BytesIO(data))
    return run_unpickler(unpickler), unpickler.storages


def run_unpickler(unpickler: RestrictedUnpickler) -> Any:
    """`unpickler.load()`, with pickle's own errors turned into ModelLoadError."""
    try:
        return unpickler.load()
    except (UnsafeCheckpointError, ModelLoadError):
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, RecursionError, struct.error) as exc:
        raise ModelLoadError(f"checkpoint pickle is damaged or truncated ({exc})") from exc

