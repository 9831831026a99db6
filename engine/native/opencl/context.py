"""Opening an OpenCL device for the native engine and building its kernels."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from engine.devices import parse_device
from engine.errors import DeviceUnavailableError
from engine.native.opencl.kernels import SOURCE

log = logging.getLogger(__name__)

TILE = 16
"""Edge of the output tiles of the batched matrix product (prompt processing)."""


@dataclass
class ClDevice:
    """An opened OpenCL device: context, in-order queue, and what it supports."""

    cl: Any
    """The pyopencl module."""
    device: Any
    context: Any
    queue: Any
    id: str
    """"opencl:N", numbered as `lampchat devices` shows them."""
    name: str
    platform: str
    is_gpu: bool
    fp16: bool
    """cl_khr_fp16: half arithmetic. Half *storage* works everywhere (vload_half)."""
    group_size: int
    """Work-group size of the reducing kernels."""

    @property
    def label(self) -> str:
        """E.g. "opencl:0 (pthread-AMD EPYC, Portable Computing Language)"."""
        return f"{self.id} ({self.name}, {self.platform})"


def _import_pyopencl() -> Any:
    try:
        import pyopencl  # optional
    except ImportError as exc:
        raise DeviceUnavailableError(
            f"OpenCL needs pyopencl ({exc}): pip install 'lampchat[opencl]'"
        ) from exc
    return pyopencl


def list_devices() -> list[tuple[Any, Any]]:
    """Every (platform, device) pair, in `lampchat devices` order (opencl:0, opencl:1, ...)."""
    cl = _import_pyopencl()
    try:
        platforms = cl.get_platforms()
    except Exception as exc:  # no ICD loader or no platform
        raise DeviceUnavailableError(f"no OpenCL platform is installed ({exc})") from exc
    out = []
    for plat in platforms:
        try:
            out.extend((plat, dev) for dev in plat.get_devices())
        except Exception:
            log.warning("OpenCL platform %s lists no devices", plat.name, exc_info=True)
    return out


def candidates(spec: str = "opencl") -> list[int]:
    """The device numbers `spec` may open, best first: "opencl:N" is that one; "opencl" is
    every device, GPUs first; "gpu" every GPU."""
    return _rank(spec, list_devices())


def _rank(spec: str, pairs: list[tuple[Any, Any]]) -> list[int]:
    kind, index = parse_device(spec)
    if kind not in ("opencl", "gpu"):
        raise DeviceUnavailableError(f"{spec!r} is not an OpenCL device")
    cl = _import_pyopencl()
    if not pairs:
        raise DeviceUnavailableError(
            "no OpenCL device found (install a GPU driver's OpenCL ICD, or PoCL: "
            "pip install pocl-binary-distribution)"
        )
    if index is not None:
        if index >= len(pairs):
            raise DeviceUnavailableError(
                f"no OpenCL device {spec!r}: there are {len(pairs)} (opencl:0.."
                f"opencl:{len(pairs) - 1}; see `lampchat devices`)"
            )
        return [index]
    gpus = [i for i, (_, d) in enumerate(pairs) if d.type & cl.device_type.GPU]
    if kind == "gpu" and not gpus:
        raise DeviceUnavailableError("no OpenCL GPU found")
    others = [] if kind == "gpu" else [i for i in range(len(pairs)) if i not in gpus]
    return gpus + others


def open_device(spec: str = "opencl") -> ClDevice:
    """Open `spec` ("opencl": the first GPU, else the first device; "opencl:N": that one)."""
    cl = _import_pyopencl()
    pairs = list_devices()
    chosen = _rank(spec, pairs)[0]
    plat, dev = pairs[chosen]
    try:
        context = cl.Context([dev])
        queue = cl.CommandQueue(context)
    except Exception as exc:
        raise DeviceUnavailableError(f"cannot open OpenCL device {dev.name}: {exc}") from exc
    is_gpu = bool(dev.type & cl.device_type.GPU)
    group = 64 if is_gpu else 16
    group = max(1, min(group, int(dev.max_work_group_size)))
    group = 1 << (group.bit_length() - 1)  # a power of two for the tree reductions
    return ClDevice(
        cl=cl, device=dev, context=context, queue=queue, id=f"opencl:{chosen}",
        name=str(dev.name).strip(), platform=str(plat.name).strip(), is_gpu=is_gpu,
        fp16="cl_khr_fp16" in str(dev.extensions).split(), group_size=group,
    )


def build_program(dev: ClDevice, half_weights: bool) -> Any:
    """Compile the kernels for `dev` (pyopencl caches the binary on disk)."""
    tile = TILE if int(dev.device.max_work_group_size) >= TILE * TILE else 4
    options = [f"-DLS={dev.group_size}", f"-DTS={tile}"]
    if half_weights:
        options.append("-DWHALF")
    try:
        return dev.cl.Program(dev.context, SOURCE).build(options=options), tile
    except Exception as exc:
        raise DeviceUnavailableError(
            f"the OpenCL kernels do not build on {dev.label}: {build_failure(str(exc))}"
        ) from exc


UNKNOWN_CPU_HINT = (
    "this OpenCL's compiler (PoCL's LLVM) is older than the CPU: install your system's PoCL, "
    "e.g. apt install pocl-opencl-icd"
)


def build_failure(log_text: str) -> str:
    """One line for a failed kernel build: the compiler's first error, else the first line
    (pyopencl's message puts the build log after a generic first line)."""
    lines = [line.strip() for line in log_text.strip().splitlines() if line.strip()]
    error = next((line for line in lines if line.startswith("error:")), None)
    if error is None:
        return lines[0] if lines else "unknown error"
    if "unknown target CPU" in error:
        return f"{error}; {UNKNOWN_CPU_HINT}"
    return error
