"""Memory figures for bench: this process's peak RSS, and its GPU memory where it can be read."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import platform
import sys

import psutil

log = logging.getLogger(__name__)


def rss_mb() -> float:
    """This process's resident set size now, in MiB."""
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """This process's peak resident set size since it started, in MiB (the kernel's count)."""
    try:
        import resource  # guarded: not on every platform
    except ImportError:  # Windows: the peak working set
        info = psutil.Process().memory_info()
        return float(getattr(info, "peak_wset", info.rss)) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return peak * scale / 2**20


def nvml_process_memory_mb(pid: int | None = None) -> float | None:
    """GPU memory used by process `pid` (default: this one) on NVIDIA GPUs, via NVML.

    None when NVML (the `nvidia-ml-py` package and an NVIDIA driver) is not there, or when the
    process holds no GPU memory.
    """
    pid = os.getpid() if pid is None else pid
    try:
        import pynvml  # optional
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # no driver or no GPU
        log.debug("NVML unavailable: %s", exc)
        return None
    try:
        used = 0
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == pid and proc.usedGpuMemory:
                    used += int(proc.usedGpuMemory)
        return used / 2**20 if used else None
    except Exception as exc:
        log.debug("NVML query failed: %s", exc)
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def nvml_used_mb() -> float | None:
    """GPU memory in use on all NVIDIA devices together, in MiB, through the driver's NVML
    library (ctypes; no Python package needed); None without an NVIDIA driver."""

    if platform.system() == "Darwin":
        return None
    names = ["nvml.dll"] if platform.system() == "Windows" else ["libnvidia-ml.so.1",
                                                                "libnvidia-ml.so"]
    lib = None
    for name in names:
        with contextlib.suppress(OSError):
            lib = ctypes.CDLL(name)
            break
    if lib is None:
        return None

    class Memory(ctypes.Structure):
        _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong),
                    ("used", ctypes.c_ulonglong)]

    if lib.nvmlInit_v2() != 0:
        return None
    try:
        count = ctypes.c_uint(0)
        if lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
            return None
        used = 0
        for i in range(count.value):
            handle = ctypes.c_void_p()
            mem = Memory()
            if (lib.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)) == 0
                    and lib.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(mem)) == 0):
                used += int(mem.used)
        return used / 2**20
    finally:
        lib.nvmlShutdown()


class GpuMemoryProbe:
    """The GPU memory a bench case uses, as NVML sees it.

    Per process when `nvidia-ml-py` is installed; otherwise the peak rise of the devices'
    memory in use since the probe was made (before the model loaded; approximate when other
    processes use the GPU at the same time). Call `sample()` after each step.
    """

    def __init__(self) -> None:
        self.start = nvml_used_mb()
        self.peak = self.start

    def sample(self) -> None:
        """Note the devices' memory in use now."""
        if self.start is None:
            return
        used = nvml_used_mb()
        if used is not None and self.peak is not None:
            self.peak = max(self.peak, used)

    def result(self) -> tuple[float | None, str | None]:
        """(MiB, how it was measured), or (None, None) where NVML cannot say."""
        own = nvml_process_memory_mb()
        if own:
            return own, "nvml per process"
        if self.start is None or self.peak is None:
            return None, None
        return max(0.0, self.peak - self.start), "nvml device memory rise since before load"
