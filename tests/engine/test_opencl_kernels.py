"""Each OpenCL kernel against the numpy ops it replaces, on PoCL's real OpenCL device.

Small random shapes chosen to hit the awkward cases: sizes that are not multiples of the
tiles or of 4, strided column views (`qkv[:, a:b]`), chunked prefill at a non-zero start,
grouped-query attention. Plus the errors a user sees when OpenCL is missing or misnamed.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from engine.errors import ConfigError, DeviceUnavailableError
from engine.native import ops as np_ops
from engine.native.kv_cache import KVCache
from engine.native.opencl import WEIGHTS_ENV, ops_for_device
from engine.native.opencl import context as opencl_context
from engine.native.opencl import ops as opencl_ops
from engine.native.opencl.context import build_failure, list_devices, open_device
from engine.native.opencl.ops import ClTensor, OpenCLOps

TOL = 2e-5  # float32 results that only differ in summation order


@pytest.fixture(scope="module")
def cl_ops() -> OpenCLOps:
    ops = ops_for_device("opencl", {"opencl_weights": "float32"})
    assert isinstance(ops, OpenCLOps)
    return ops


@pytest.fixture(scope="module")
def half_ops() -> OpenCLOps:
    ops = ops_for_device("opencl", {"opencl_weights": "float16"})
    assert isinstance(ops, OpenCLOps) and ops.half_weights
    return ops


def rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def close(a: np.ndarray, b: np.ndarray, tol: float = TOL) -> None:
    assert a.shape == b.shape
    scale = max(1.0, float(np.abs(b).max()))
    err = float(np.abs(a - b).max()) / scale
    assert err < tol, f"max error {err:.2e} (relative to {scale:.2f})"


def test_the_device_is_pocl_and_named_in_model_info(cl_ops: OpenCLOps):
    dev = cl_ops.dev
    assert dev.platform == "Portable Computing Language" and not dev.is_gpu
    assert cl_ops.device == f"{dev.id} ({dev.name})" and dev.id.startswith("opencl:")
    assert cl_ops.batched == "block"  # CPU device: register-blocked products


@pytest.mark.parametrize("rows", [1, 3, 4, 5, 17, 40])
@pytest.mark.parametrize("kernel", ["block", "tiled"])
def test_linear_with_and_without_bias_on_strided_views(cl_ops, rows, kernel, monkeypatch):
    monkeypatch.setattr(cl_ops, "batched", kernel)
    rng = np.random.default_rng(rows)
    n, k = 37, 70  # neither a multiple of 4 nor of the tile
    w, b = rand(rng, n, k), rand(rng, n)
    wide = rand(rng, rows, k + 9)
    x_host = wide[:, 5 : 5 + k]  # a column view with a row stride of k + 9
    x = cl_ops.upload(wide)[:, 5 : 5 + k]
    assert (x.stride, x.off, x.shape) == (k + 9, 5, (rows, k))
    close(cl_ops.fetch(cl_ops.linear(x, cl_ops.prepare(w))), np_ops.linear(x_host, w))
    close(cl_ops.fetch(cl_ops.linear(x, cl_ops.prepare(w), cl_ops.prepare(b))),
          np_ops.linear(x_host, w, b))


@pytest.mark.parametrize("rows", [1, 9])
def test_half_weights_equal_numpy_on_the_rounded_weights(half_ops, rows):
    rng = np.random.default_rng(7)
    w, x = rand(rng, 64, 96), rand(rng, rows, 96)
    rounded = w.astype(np.float16).astype(np.float32)
    prepared = half_ops.prepare(w)
    assert prepared.half and prepared.nbytes == w.size * 2
    got = half_ops.fetch(half_ops.linear(half_ops.upload(x), prepared))
    close(got, np_ops.linear(x, rounded))  # vload_half is exact: only the sum order differs
    assert np.abs(got - np_ops.linear(x, w)).max() > 1e-5  # and the rounding is really there
    norm = half_ops.prepare(rand(rng, 96))
    assert not norm.half  # vectors stay float32


def test_norms_activations_and_add(cl_ops):
    rng = np.random.default_rng(1)
    x, w, b = rand(rng, 6, 100), rand(rng, 100), rand(rng, 100)
    dx = cl_ops.upload(x)
    close(cl_ops.fetch(cl_ops.rms_norm(dx, cl_ops.prepare(w), 1e-5)), np_ops.rms_norm(x, w, 1e-5))
    close(cl_ops.fetch(cl_ops.layer_norm(dx, cl_ops.prepare(w), cl_ops.prepare(b), 1e-5)),
          np_ops.layer_norm(x, w, b, 1e-5))
    close(cl_ops.fetch(cl_ops.gelu(dx)), np_ops.gelu_tanh(x))
    close(cl_ops.fetch(cl_ops.swiglu(dx)), np_ops.swiglu(x))
    y = rand(rng, 6, 100)
    close(cl_ops.fetch(dx + cl_ops.upload(y)), x + y)
    close(cl_ops.fetch(dx[2:5, 10:30]), x[2:5, 10:30])


@pytest.mark.parametrize("which", ["cl_ops", "half_ops"])
def test_rope_on_a_view_at_an_offset_position(request, which):
    cl_ops = request.getfixturevalue(which)  # half weights must leave the tables float32
    rng = np.random.default_rng(2)
    t, heads, hd = 5, 3, 8
    cos, sin = np_ops.rope_tables(hd, 64, 10000.0)
    qkv = rand(rng, t, (heads + 2) * hd)
    view_host = qkv[:, : heads * hd].reshape(t, heads, hd)
    view = cl_ops.upload(qkv)[:, : heads * hd].reshape(t, heads, hd)
    got = cl_ops.fetch(cl_ops.apply_rope(view, cos[11 : 11 + t], sin[11 : 11 + t]))
    close(got, np_ops.apply_rope(view_host, cos[11 : 11 + t], sin[11 : 11 + t]))


@pytest.mark.parametrize("chunks", [[7], [4, 1, 1, 3], [1, 1, 1]])
def test_causal_grouped_query_attention_over_the_kv_cache(cl_ops, chunks):
    """Chunked prefill then single steps: scores, causal mask and softmax on the device."""
    rng = np.random.default_rng(len(chunks))
    n_heads, n_kv, hd, layers = 6, 2, 16, 2
    host, dev = KVCache(layers, n_kv, 32, hd), KVCache(layers, n_kv, 32, hd)
    start = 0
    for t in chunks:
        for layer in range(layers):
            q, k, v = rand(rng, t, n_heads, hd), rand(rng, t, n_kv, hd), rand(rng, t, n_kv, hd)
            np_ops.NumpyOps().store_kv(host, layer, start, k, v)
            cl_ops.store_kv(dev, layer, start, cl_ops.upload(k), cl_ops.upload(v))
            want = np_ops.attention(q, host, layer, start, 0.25)
            got = cl_ops.fetch(cl_ops.attention(cl_ops.upload(q), dev, layer, start, 0.25))
            close(got, want)
        start += t
    assert dev.keys.max() == 0  # the device holds the cache, not the host arrays


def test_tensor_views_refuse_what_they_cannot_do_without_a_copy(cl_ops):
    x = cl_ops.upload(np.zeros((4, 6), np.float32))
    assert isinstance(x[-1:], ClTensor) and x[-1:].shape == (1, 6)
    with pytest.raises(IndexError):
        x[::2]
    with pytest.raises(ValueError, match="rows must stay"):
        x.reshape(2, 12)
    with pytest.raises(ValueError, match="cannot add"):
        x + cl_ops.upload(np.zeros((4, 5), np.float32))


# -- choosing and opening devices ---------------------------------------------------------------


def test_cpu_and_auto_use_numpy():
    assert ops_for_device("cpu") is np_ops.NUMPY_OPS
    assert ops_for_device("auto") is np_ops.NUMPY_OPS


def test_weight_type_auto_follows_cl_khr_fp16(monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    dev = open_device("opencl")
    ops = ops_for_device("opencl")
    assert ops.half_weights == dev.fp16 == ("cl_khr_fp16" in dev.device.extensions.split())
    monkeypatch.setenv(WEIGHTS_ENV, "float16")
    assert ops_for_device("opencl").half_weights
    monkeypatch.setenv(WEIGHTS_ENV, "bf16")
    with pytest.raises(ConfigError, match="must be one of auto, float32, float16, not 'bf16'"):
        ops_for_device("opencl")


def test_numbered_devices_and_clear_errors():
    n = len(list_devices())
    assert n >= 1
    assert ops_for_device("opencl:0", {"opencl_weights": "float32"}).dev.id == "opencl:0"
    with pytest.raises(DeviceUnavailableError, match=f"no OpenCL device 'opencl:{n}': there are"):
        ops_for_device(f"opencl:{n}")
    with pytest.raises(DeviceUnavailableError, match="native engine has no 'cuda' device"):
        ops_for_device("cuda")
    with pytest.raises(DeviceUnavailableError, match="runs on the CPU or OpenCL"):
        ops_for_device("metal:0")


# pyopencl's message for PoCL 3.0 (LLVM 14) on a CPU its LLVM does not know (AMD Zen 5)
POCL_UNKNOWN_CPU = """clBuildProgram failed: BUILD_PROGRAM_FAILURE - clBuildProgram failed: \
BUILD_PROGRAM_FAILURE - clBuildProgram failed: BUILD_PROGRAM_FAILURE

Build on <pyopencl.Device 'pthread-AMD EPYC' on 'Portable Computing Language' at 0x55ab>:

error: unknown target CPU 'generic'
Device pthread-AMD EPYC failed to build the program

(options: -DLS=16 -DTS=16 -I /x/pyopencl/cl)"""


def test_a_failed_build_names_the_compilers_error():
    line = build_failure(POCL_UNKNOWN_CPU)
    assert line.startswith("error: unknown target CPU 'generic'; ")
    assert "apt install pocl-opencl-icd" in line and "\n" not in line
    assert build_failure("clBuildProgram failed: INVALID_VALUE\n\nmore") == \
        "clBuildProgram failed: INVALID_VALUE"


def test_plain_opencl_takes_the_next_device_when_one_does_not_build(cl_ops, monkeypatch):
    """A device whose compiler fails (as the pip PoCL's does on CPUs newer than its LLVM) is
    passed over by "opencl"; asked for by number, it is the error. The real working device is
    listed twice, and its first listing made to fail."""
    real = list_devices()[int(cl_ops.dev.id.split(":")[1])]
    monkeypatch.setattr(opencl_context, "list_devices", lambda: [real, real])
    real_build = opencl_ops.build_program
    failing = {"opencl:0"}

    def build(dev, half_weights):
        if dev.id in failing:
            raise DeviceUnavailableError(f"the OpenCL kernels do not build on {dev.label}: "
                                         "error: unknown target CPU 'generic'")
        return real_build(dev, half_weights)

    monkeypatch.setattr(opencl_ops, "build_program", build)
    assert ops_for_device("opencl", {"opencl_weights": "float32"}).dev.id == "opencl:1"
    with pytest.raises(DeviceUnavailableError, match="^the OpenCL kernels do not build on "
                                                     "opencl:0 .*unknown target CPU"):
        ops_for_device("opencl:0")
    failing.add("opencl:1")
    with pytest.raises(DeviceUnavailableError, match="^no OpenCL device builds Lampchat's "
                                                     "kernels \\(2 tried\\): .* opencl:0 "):
        ops_for_device("opencl")


def test_a_buffer_the_device_cannot_hold_is_one_clear_line(cl_ops):
    too_big = int(cl_ops.dev.device.max_mem_alloc_size) * 2  # refused by the real driver
    with pytest.raises(DeviceUnavailableError) as err:
        cl_ops._buffer(cl_ops.cl.mem_flags.READ_WRITE, too_big, None, "the KV cache")
    message = str(err.value)
    assert message.startswith(f"{cl_ops.device} cannot hold the KV cache (")
    assert "--device cpu" in message and "\n" not in message


def test_missing_pyopencl_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyopencl", None)  # what an install without it sees
    with pytest.raises(DeviceUnavailableError) as err:
        ops_for_device("opencl")
    assert "pip install 'lampchat[opencl]'" in str(err.value)
    assert "\n" not in str(err.value)


# -- whole (small, random) models -----------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama-bias-untied", "gpt2"])
def test_small_models_match_numpy_in_prefill_and_decode(cl_ops, arch):
    """Both architectures, LLaMA with q/k/v/o and MLP biases and an untied head."""
    from engine.native import build_model
    from tests.support.tiny_models import gpt2_config, gpt2_weights, llama_config, llama_weights

    if arch == "gpt2":
        config = gpt2_config()
        weights = gpt2_weights(config)
    else:
        config = llama_config(attention_bias=True, mlp_bias=True, tie_word_embeddings=False)
        weights = llama_weights(config)
    ref = build_model(config, dict(weights))
    dev = build_model(config, dict(weights), ops=cl_ops)
    tokens = np.array([5, 17, 99, 3, 250, 42, 7, 8, 9], dtype=np.int64)
    want_cache, got_cache = ref.new_cache(32), dev.new_cache(32)
    close(dev.forward(tokens[:6], got_cache, 0, all_logits=True),
          ref.forward(tokens[:6], want_cache, 0, all_logits=True))
    for pos in range(6, len(tokens)):
        close(dev.forward(tokens[pos : pos + 1], got_cache, pos),
              ref.forward(tokens[pos : pos + 1], want_cache, pos))
