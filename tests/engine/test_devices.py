"""Device detection on this machine with real probes: the CPU, llama.cpp's build, PoCL's OpenCL."""

from __future__ import annotations

import json
import re
from pathlib import Path

import psutil
import pytest

from engine import devices, registry
from engine.errors import DeviceUnavailableError
from engine.ggml_build import llama_cpp_build
from tests.support.cli import run_lampchat


@pytest.fixture(scope="module")
def report() -> devices.DeviceReport:
    devices.clear_cache()
    return registry.detect()


def test_cpu_is_detected_with_cores_simd_and_memory(report):
    cpu = report.devices[0]
    assert cpu.id == "cpu" and cpu.kind == "cpu" and not cpu.gpu
    assert cpu.total_memory == psutil.virtual_memory().total
    assert 0 < cpu.free_memory <= cpu.total_memory
    assert cpu.details["logical_cores"] >= cpu.details["usable_cores"] >= 1
    flags = Path("/proc/cpuinfo").read_text().split()
    if "avx2" in flags:  # x86-64 machines: what the kernel reports shows up
        assert "avx2" in cpu.details["simd"]
    assert {"llama.cpp", "native"} <= set(cpu.backends)


def test_llama_cpp_build_is_read_from_the_ggml_registry(report):
    build = llama_cpp_build()
    assert build is not None and build.version
    assert "CPU" in build.registries
    cpu_devs = [d for d in build.devices if d["type"] == "cpu"]
    assert cpu_devs and cpu_devs[0]["total"] > 0  # ggml_backend_dev_memory answered
    import llama_cpp

    # the ctypes registry agrees with llama-cpp-python's own binding
    assert bool(llama_cpp.llama_supports_gpu_offload()) == (len(build.kinds) > 1)
    support = report.support("llama.cpp")
    assert support.installed and support.kinds == build.kinds
    if build.kinds == ["cpu"]:
        assert support.build == "CPU-only build"
        assert "CMAKE_ARGS=-DGGML_CUDA=on" in support.hint


def test_pocl_opencl_device_is_listed_with_memory_and_compute_units(report):
    cl = [d for d in report.devices if d.kind == "opencl"]
    pocl = [d for d in cl if d.details.get("platform") == "Portable Computing Language"]
    assert pocl, [d.details for d in cl]
    dev = pocl[0]
    assert dev.id == f"opencl:{dev.index}"
    assert dev.total_memory > 0 and dev.compute_units >= 1
    assert not dev.gpu  # PoCL's pthread device is a CPU: automatic choice never prefers it
    assert "native" in dev.backends
    assert "opencl" in report.support("native").kinds


def test_optional_backends_report_their_builds(report):
    mlx = report.support("mlx")
    onnx = report.support("onnx")
    assert mlx.installed and "cpu" in mlx.kinds
    assert onnx.installed and onnx.build.startswith("providers:") and "CPU" in onnx.build


def test_a_broken_probe_is_reported_not_raised(monkeypatch):
    def broken() -> None:
        raise OSError("driver exploded")

    devices.clear_cache()
    monkeypatch.setattr(devices, "opencl_devices", broken)
    monkeypatch.setattr(devices, "nvml_devices", broken)
    try:
        report = registry.detect()
        assert any("driver exploded" in p for p in report.problems)
        assert report.devices[0].kind == "cpu"
        assert not [d for d in report.devices if d.kind == "opencl"]
    finally:
        monkeypatch.undo()
        devices.clear_cache()


def test_detection_is_cached():
    assert registry.detect() is registry.detect()


@pytest.mark.parametrize(("spec", "parsed"), [
    ("auto", ("auto", None)), ("", ("auto", None)), ("CPU", ("cpu", None)),
    ("cuda:1", ("cuda", 1)), ("opencl", ("opencl", None)), ("gpu", ("gpu", None)),
])
def test_parse_device(spec, parsed):
    assert devices.parse_device(spec) == parsed


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "cuda:-1"])
def test_parse_device_rejects_unknown_names(spec):
    with pytest.raises(DeviceUnavailableError):
        devices.parse_device(spec)


def test_require_device_stops_cuda_on_a_cpu_only_llama_cpp_build():
    build = llama_cpp_build()
    if "cuda" in build.kinds:
        pytest.skip("this llama.cpp build has CUDA")
    with pytest.raises(DeviceUnavailableError, match=r"CUDA is not available in this llama\.cpp "
                       r"build \(CPU-only; reinstall with CMAKE_ARGS=-DGGML_CUDA=on\)"):
        registry.require_device("llama.cpp", "cuda")
    registry.require_device("llama.cpp", "cpu")
    registry.require_device("native", "opencl")
    with pytest.raises(DeviceUnavailableError, match="no OpenCL device 'opencl:7'"):
        registry.require_device("native", "opencl:7")


def test_lampchat_devices_table():
    result = run_lampchat("devices", env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Devices" in out and "Backends" in out
    assert re.search(r"│ cpu\s+│", out)
    assert re.search(r"│ opencl:\d\s+│", out) and "Portable Computing Language" in out
    assert re.search(r"GiB free of [\d.]+ GiB", out)
    assert re.search(r"│ llama\.cpp\s+│ [\d.]+\s+│ CPU-only build", out)
    assert "CMAKE_ARGS=-DGGML_CUDA=on" in out
    assert "mlx[cuda12]" in out  # markup-looking text is shown as typed


def test_lampchat_devices_json():
    result = run_lampchat("devices", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    ids = [d["id"] for d in data["devices"]]
    assert ids[0] == "cpu" and any(i.startswith("opencl:") for i in ids)
    names = {b["backend"]: b for b in data["backends"]}
    assert set(names) == {"llama.cpp", "native", "mlx", "onnx"}
    assert names["llama.cpp"]["installed"] and "cpu" in names["llama.cpp"]["kinds"]
