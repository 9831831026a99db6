"""Automatic backend/device choice and fallback, with forced failures, on the real default model.

The fallback target is always the real llama.cpp backend. "A machine with a CUDA GPU" is
simulated by handing `plan_load` a detection report that lists one; the check against the real
llama.cpp build (`require_device`) and the real load still run.
"""

from __future__ import annotations

import copy
import sys

import pytest

from app.cli import main as lampchat_main
from engine import devices, registry, selection
from engine.backends.base import Backend
from engine.backends.llama_cpp import LlamaCppBackend
from engine.errors import BackendError, DeviceUnavailableError, UnknownFormatError
from engine.selection import Candidate, load_with_fallback, plan_load
from engine.types import ChatMessage, LoadSettings, SamplingParams
from engine.worker import EngineWorker
from tests.support.cli import run_lampchat

GREEDY = SamplingParams(temperature=0, max_tokens=8, seed=1)
HELLO = [ChatMessage("user", "Say hello.")]


class ExplodingBackend(LlamaCppBackend):
    """Raises during load, whatever the device (a broken backend)."""

    name = "exploding"

    def load(self, model, settings, progress=None):
        raise RuntimeError("simulated crash while loading")


class GpuOomBackend(LlamaCppBackend):
    """llama.cpp that runs out of memory on "cuda" and loads normally on the CPU."""

    name = "gpu-oom"
    check_device = Backend.__dict__["check_device"]  # devices from the report, not llama.cpp's

    def load(self, model, settings, progress=None):
        if settings.device.startswith("cuda"):
            raise BackendError("CUDA error: out of memory")
        return super().load(model, settings, progress)


@pytest.fixture
def test_backends(monkeypatch):
    monkeypatch.setitem(registry.BACKENDS, "exploding", f"{__name__}:ExplodingBackend")
    monkeypatch.setitem(registry.BACKENDS, "gpu-oom", f"{__name__}:GpuOomBackend")


def _with_fake_cuda(*backends: str) -> devices.DeviceReport:
    """The real report plus one CUDA GPU usable by `backends` (as on a machine with one)."""
    return _with_fake_gpu("cuda", *backends)


def _with_fake_gpu(kind: str, *backends: str) -> devices.DeviceReport:
    """The real report plus one `kind` GPU usable by `backends` (as on a machine with one)."""
    report = copy.deepcopy(registry.detect())
    report.devices.insert(1, devices.Device(
        id=f"{kind}:0", kind=kind, index=0, name="Simulated GPU", gpu=True,
        total_memory=8 << 30, free_memory=8 << 30, backends=list(backends), sources=["test"],
    ))
    for name in backends:
        support = report.support(name)
        if support is None:
            support = devices.BackendSupport(name, installed=True, kinds=["cpu"])
            report.backends.append(support)
            report.devices[0].backends.append(name)
        support.kinds = [*support.kinds, kind]
    return report


def _use_report(monkeypatch, report):
    """Make every detection (automatic choice, device checks) see `report`."""
    monkeypatch.setattr(selection, "detect", lambda *args, **kwargs: report)
    monkeypatch.setattr(registry, "detect", lambda *args, **kwargs: report)


async def _reply(worker: EngineWorker) -> str:
    generation = worker.generate(HELLO, GREEDY)
    async for _ in generation:
        pass
    assert generation.error is None
    return generation.text


# --- plans on this machine (real detection) ------------------------------------------------


def test_auto_plan_for_gguf_here_is_the_cpu_in_format_order(default_gguf):
    assert plan_load(str(default_gguf)) == [Candidate("llama.cpp", "cpu"),
                                            Candidate("native", "cpu")]


def test_fallback_list_is_followed(default_gguf):
    path = str(default_gguf)
    assert plan_load(path, fallback=[]) == [Candidate("llama.cpp", "cpu")]
    assert plan_load(path, "llama.cpp") == [Candidate("llama.cpp", "cpu")]
    assert plan_load(path, "native", fallback=["llama.cpp", "onnx"]) == [
        Candidate("native", "cpu"), Candidate("llama.cpp", "cpu")]  # onnx cannot read GGUF


def test_forced_opencl_goes_to_the_native_engine(default_gguf):
    assert plan_load(str(default_gguf), device="opencl") == [Candidate("native", "opencl")]
    assert plan_load(str(default_gguf), device="opencl:0") == [Candidate("native", "opencl:0")]


def test_forced_unavailable_device_is_a_clear_error(default_gguf):
    with pytest.raises(DeviceUnavailableError) as err:
        plan_load(str(default_gguf), device="cuda")
    message = str(err.value)
    assert message.startswith("device 'cuda' is not available: ")
    assert "llama.cpp is a CPU-only build (reinstall with CMAKE_ARGS=-DGGML_CUDA=on)" in message
    assert "\n" not in message
    with pytest.raises(DeviceUnavailableError, match="no OpenCL device number 5"):
        plan_load(str(default_gguf), device="opencl:5")


def test_auto_plan_puts_a_gpu_first(default_gguf, monkeypatch):
    _use_report(monkeypatch, _with_fake_cuda("llama.cpp"))
    assert plan_load(str(default_gguf)) == [
        Candidate("llama.cpp", "cuda"), Candidate("llama.cpp", "cpu"), Candidate("native", "cpu")]
    assert plan_load(str(default_gguf), device="cuda:0") == [Candidate("llama.cpp", "cuda:0")]


# --- loading through the worker, with forced failures -----------------------------------------


async def test_gpu_unavailable_in_the_build_falls_back_to_cpu(default_gguf, monkeypatch):
    # detection claims a GPU; the real llama.cpp build has no CUDA, so the load falls back
    _use_report(monkeypatch, _with_fake_cuda("llama.cpp"))
    worker = EngineWorker()
    try:
        info = await worker.load(str(default_gguf), "auto", LoadSettings(n_ctx=512))
        assert (info.backend, info.device) == ("llama.cpp", "cpu")
        assert worker.fallback_note == (
            "llama.cpp on cuda: CUDA is not available in this llama.cpp build "
            "(CPU-only; reinstall with CMAKE_ARGS=-DGGML_CUDA=on) -> llama.cpp on cpu")
        assert worker.backend.settings.device == "cpu"
        assert (await _reply(worker)).strip()
    finally:
        await worker.close()


async def test_metal_missing_from_the_build_falls_back_to_cpu(default_gguf, monkeypatch):
    # as on a Mac whose llama-cpp-python was built without Metal: the real build says no
    _use_report(monkeypatch, _with_fake_gpu("metal", "llama.cpp"))
    assert plan_load(str(default_gguf))[0] == Candidate("llama.cpp", "metal")
    worker = EngineWorker()
    try:
        info = await worker.load(str(default_gguf), "auto", LoadSettings(n_ctx=512))
        assert (info.backend, info.device) == ("llama.cpp", "cpu")
        assert worker.fallback_note == (
            "llama.cpp on metal: Metal is not available in this llama.cpp build "
            "(CPU-only; reinstall with CMAKE_ARGS=-DGGML_METAL=on) -> llama.cpp on cpu")
    finally:
        await worker.close()


def test_forced_metal_off_apple_silicon_says_so(default_gguf):
    if sys.platform == "darwin":
        pytest.skip("this machine may have Metal")  # the message is for every other machine
    with pytest.raises(DeviceUnavailableError) as err:
        plan_load(str(default_gguf), device="metal")
    assert "llama.cpp is a CPU-only build (Metal needs macOS on Apple silicon)" in str(err.value)


async def test_out_of_memory_on_the_gpu_falls_back_to_cpu(default_gguf, monkeypatch,
                                                         test_backends):
    _use_report(monkeypatch, _with_fake_cuda("gpu-oom"))
    worker = EngineWorker()
    try:
        info = await worker.load(str(default_gguf), "gpu-oom", LoadSettings(n_ctx=512))
        assert worker.backend.name == "gpu-oom" and info.device == "cpu"
        assert worker.fallback_note == (
            "gpu-oom on cuda: CUDA error: out of memory -> gpu-oom on cpu")
        assert (await _reply(worker)).strip()
    finally:
        await worker.close()


async def test_backend_raising_during_load_falls_back_to_llama_cpp(default_gguf, test_backends):
    worker = EngineWorker()
    try:
        info = await worker.load(str(default_gguf), "exploding", LoadSettings(n_ctx=512),
                                 fallback=["llama.cpp"])
        assert info.backend == "llama.cpp" and worker.backend.name == "llama.cpp"
        assert worker.fallback_note == (
            "exploding on cpu: RuntimeError: simulated crash while loading -> llama.cpp on cpu")
        assert (await _reply(worker)).strip()
        # a clean load afterwards has no note
        await worker.load(str(default_gguf), "llama.cpp", LoadSettings(n_ctx=512))
        assert worker.fallback_note is None
    finally:
        await worker.close()


async def test_when_every_choice_fails_the_previous_model_is_kept(default_gguf, test_backends):
    worker = EngineWorker()
    try:
        await worker.load(str(default_gguf), "llama.cpp", LoadSettings(n_ctx=512))
        with pytest.raises(RuntimeError, match="simulated crash"):
            await worker.load(str(default_gguf), "exploding", LoadSettings(n_ctx=512))
        assert worker.info is not None and worker.info.backend == "llama.cpp"
        assert (await _reply(worker)).strip()
        with pytest.raises(DeviceUnavailableError):
            await worker.load(str(default_gguf), "auto", LoadSettings(device="metal"))
        assert worker.info is not None and worker.info.backend == "llama.cpp"
    finally:
        await worker.close()


def test_every_failure_is_named_when_all_fail():
    def attempt(candidate):
        raise BackendError(f"{candidate.device} broke")

    plan = [Candidate("a", "cuda"), Candidate("a", "cpu")]
    with pytest.raises(BackendError) as err:
        load_with_fallback(plan, attempt)
    assert str(err.value) == "cuda broke (with a on cuda; also failed: a on cpu: cpu broke)"


def test_format_errors_do_not_fall_back():
    tried = []

    def attempt(candidate):
        tried.append(candidate)
        raise UnknownFormatError("unknown model format")

    with pytest.raises(UnknownFormatError):
        load_with_fallback([Candidate("a", "cpu"), Candidate("b", "cpu")], attempt)
    assert tried == [Candidate("a", "cpu")]


# --- the CLI ------------------------------------------------------------------------------------


def test_ask_prints_the_fallback_note_on_stderr(default_gguf, monkeypatch, test_backends,
                                               capsys):
    # main() runs the thread-exit hooks on this thread as it returns; here that would tear down
    # the MLX streams that other tests in this process made on it (mlx-lm references)
    monkeypatch.setattr("app.cli.run_thread_exit_hooks", lambda: None)
    # gpu-oom reads GGUF (it is a llama.cpp subclass) and is listed first: preferred
    monkeypatch.setattr(registry, "BACKENDS", {"gpu-oom": registry.BACKENDS.pop("gpu-oom"),
                                               **registry.BACKENDS})
    _use_report(monkeypatch, _with_fake_cuda("gpu-oom"))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    status = lampchat_main(["ask", "--temperature", "0", "-n", "6", "Say hi."])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert out.strip()
    assert err == ("lampchat: fell back: gpu-oom on cuda: CUDA error: out of memory "
                   "-> gpu-oom on cpu\n")


def test_ask_with_an_unavailable_device_exits_with_one_line():
    result = run_lampchat("ask", "--device", "cuda", "hi")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("lampchat: error: device 'cuda' is not available")
    assert "CPU-only build" in lines[0]


def test_ask_with_an_unknown_device_is_a_usage_error():
    result = run_lampchat("ask", "--device", "tpu", "hi")
    assert result.returncode == 2
    assert "unknown device 'tpu'" in result.stderr


def test_ask_on_the_cpu_device():
    result = run_lampchat("ask", "--json", "--device", "cpu", "--temperature", "0", "-n", "4", "hi")
    assert result.returncode == 0, result.stderr
    assert '"device": "cpu"' in result.stdout and result.stderr == ""
