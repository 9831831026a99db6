"""Memory figures for bench: this process's peak RSS, and its GPU memory where it can be read."""

from __future__ import annotations

import contextlib
import logging
import os
import sys

import psutil

log = logging.getLogger(__name__)


def rss_mb() -> float:
    """This process's resident set size now, in MiB."""
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """This process's peak resident set size since it started, in MiB (the kernel's count)."""
    try:
        import resource
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
        import pynvml
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
