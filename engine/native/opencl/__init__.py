"""OpenCL compute for the native engine (the optional extra `lampchat[opencl]`, via pyopencl).

`ops_for_device` gives the ops object a native model is built with: numpy for the CPU,
`OpenCLOps` for "opencl" / "opencl:N". Kernels cover the matrix products, RMSNorm/LayerNorm,
softmax inside attention, RoPE, SwiGLU/GELU and the KV cache; math is float32, and weights
may be stored as float16 (`options["opencl_weights"]` or $LAMPCHAT_OPENCL_WEIGHTS: "float16",
"float32", or "auto": float16 on devices with cl_khr_fp16, else float32). Half weights are
read with the core `vload_half`, so they work on any device; "auto" uses them only where the
device says it is built for half precision.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from engine.devices import KIND_LABELS, parse_device
from engine.errors import ConfigError, DeviceUnavailableError
from engine.native.ops import NUMPY_OPS, NumpyOps

log = logging.getLogger(__name__)

WEIGHT_DTYPES = ("auto", "float32", "float16")
WEIGHTS_ENV = "LAMPCHAT_OPENCL_WEIGHTS"
"""Environment variable choosing the weight type when `options` does not."""


def ops_for_device(device: str, options: dict[str, Any] | None = None) -> NumpyOps:
    """The ops object for `device` ("auto"/"cpu": numpy; "opencl[:N]": OpenCL). Plain
    "opencl" takes the first device (GPUs first) whose compiler builds the kernels.

    Raises DeviceUnavailableError for a device the native engine cannot use or open.
    """
    kind, _ = parse_device(device)
    if kind in ("auto", "cpu"):
        return NUMPY_OPS
    if kind != "opencl":
        label = KIND_LABELS.get(kind, kind)
        raise DeviceUnavailableError(
            f"the native engine has no {device.strip()!r} device: it runs on the CPU or OpenCL "
            f"(--device cpu / opencl); for {label} use another backend (see `lampchat devices`)"
        )
    # pyopencl (optional) only when an OpenCL device is asked for
    from engine.native.opencl.context import candidates, open_device

    # pyopencl (optional) only when an OpenCL device is asked for
    from engine.native.opencl.ops import OpenCLOps

    chosen = (options or {}).get("opencl_weights") or os.environ.get(WEIGHTS_ENV) or "auto"
    dtype = str(chosen).strip().lower()
    if dtype not in WEIGHT_DTYPES:
        raise ConfigError(
            f"opencl_weights ({WEIGHTS_ENV}) must be one of {', '.join(WEIGHT_DTYPES)}, "
            f"not {dtype!r}"
        )
    failures: list[DeviceUnavailableError] = []
    for index in candidates(device):
        try:
            dev = open_device(f"opencl:{index}")
            half = dtype == "float16" or (dtype == "auto" and dev.fp16)
            ops = OpenCLOps(dev, half_weights=half)
        except DeviceUnavailableError as exc:  # e.g. a driver whose compiler fails here
            log.warning("OpenCL device opencl:%d is not usable: %s", index, exc)
            failures.append(exc)
            continue
        if failures:
            log.warning("using %s: %s", dev.label, "; ".join(map(str, failures)))
        return ops
    if len(failures) == 1:
        raise failures[0]
    raise DeviceUnavailableError(
        f"no OpenCL device builds Lampchat's kernels ({len(failures)} tried): {failures[0]}")
