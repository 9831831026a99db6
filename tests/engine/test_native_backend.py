"""The native backend on the real SmolLM2-135M-Instruct, converted to a float32 HF folder.

The reference is mlx-lm (an independent implementation, CPU) loading the same converted folder.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from safetensors import safe_open

from engine.backends.native import NativeBackend
from engine.errors import DeviceUnavailableError, LampchatError
from engine.sampling import Sampler
from engine.selection import Candidate, plan_load
from engine.types import ChatMessage, LoadSettings, SamplingParams, StreamStats
from engine.worker import EngineWorker
from tests.support.cli import run_lampchat

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=48)
FRANCE = [ChatMessage("user", "What is the capital of France?")]
ESSAY = [ChatMessage("user", "Write a long essay about the history of lighthouses.")]


@pytest.fixture(scope="module")
def native(smollm2_hf_dir) -> NativeBackend:
    backend = NativeBackend()
    backend.load(str(smollm2_hf_dir), LoadSettings(n_ctx=2048))
    yield backend
    backend.unload()


@pytest.fixture(scope="module")
def reference(smollm2_hf_dir):
    """mlx-lm's LLaMA loading the converted folder (float32, CPU)."""
    mlx_utils = pytest.importorskip("mlx_lm.utils")
    model, _ = mlx_utils.load_model(smollm2_hf_dir)
    return model


def _mlx_greedy(model, prompt: list[int], n: int) -> list[int]:
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    steps = generate_step(mx.array(prompt), model, max_tokens=n,
                          sampler=lambda logprobs: mx.argmax(logprobs, axis=-1))
    return [int(token) for token, _ in steps]


def _reply(backend: NativeBackend, messages, sampling=GREEDY) -> tuple[str, StreamStats, int]:
    stats = StreamStats()
    backend.reset_cancel()
    pieces = list(backend.stream(messages, sampling, stats))
    return "".join(p.text for p in pieces), stats, sum(p.n_tokens for p in pieces)


def test_model_info_describes_the_converted_folder(native, smollm2_hf_dir, reference):
    info = native.info
    assert info is not None
    assert (info.backend, info.device, info.format) == ("native", "cpu", "safetensors")
    assert info.quantization == "F32"
    with safe_open(str(smollm2_hf_dir / "model.safetensors"), "numpy") as st:
        n_weights = sum(int(np.prod(st.get_slice(k).get_shape())) for k in st.keys())  # noqa: SIM118
    assert info.n_params == n_weights
    assert info.context_length == 2048
    assert info.chat_template_source == "tokenizer_config.json"
    assert info.file_size > (smollm2_hf_dir / "model.safetensors").stat().st_size - 1


def test_logits_match_mlx_lm_within_1e_3(native, reference):
    import mlx.core as mx

    tokens = np.array(native.tokenize_prompt(FRANCE), dtype=np.int64)
    net = native._generator.model
    ours = net.forward(tokens, net.new_cache(len(tokens)), 0, all_logits=True)
    theirs = np.array(reference(mx.array(tokens[None].astype(np.int32)))[0].astype(mx.float32))
    rel = np.abs(ours - theirs).max() / np.abs(theirs).max()
    assert rel < 1e-3, rel
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()


def test_first_32_greedy_tokens_match_mlx_lm(native, reference):
    prompt = native.tokenize_prompt(ESSAY)
    expected = _mlx_greedy(reference, prompt, 32)
    generator = native._generator
    greedy = Sampler(SamplingParams(temperature=0.0, repeat_penalty=1.0))
    assert list(generator.generate(prompt, greedy, 32)) == expected


def test_a_chat_question_gets_a_coherent_answer(native):
    text, stats, n_tokens = _reply(native, FRANCE)
    assert "Paris" in text
    assert stats.finish_reason == "stop"  # it ended on <|im_end|>, not on max_tokens
    assert 0 < n_tokens < GREEDY.max_tokens
    assert stats.prompt_tokens == len(native.tokenize_prompt(FRANCE))


@pytest.fixture(scope="module")
def essay_reply(native) -> str:
    """The greedy reply to ESSAY (48 tokens), shared by the tests that compare with it."""
    text, stats, _ = _reply(native, ESSAY)
    assert stats.finish_reason == "length"
    return text


def test_stop_strings_end_the_reply_before_the_stop_text(native, essay_reply):
    reference_text = essay_reply
    words = reference_text.split()
    stop = words[len(words) // 2]
    text, stats, _ = _reply(native, ESSAY, replace(GREEDY, stop=(stop,)))
    assert stop not in text
    assert reference_text.startswith(text)
    assert stats.finish_reason == "stop"


def test_seeded_sampling_repeats_and_max_tokens_reports_length(native):
    sampling = SamplingParams(temperature=0.9, seed=1234, max_tokens=20)
    first, stats, n_tokens = _reply(native, ESSAY, sampling)
    second, _, _ = _reply(native, ESSAY, sampling)
    assert first == second and first.strip()
    assert stats.finish_reason == "length" and n_tokens == 20
    other, _, _ = _reply(native, ESSAY, replace(sampling, seed=99))
    assert other != first


def test_a_follow_up_reuses_the_cached_prefix_with_the_same_result(native):
    answer, _, _ = _reply(native, FRANCE)
    follow_up = [*FRANCE, ChatMessage("assistant", answer), ChatMessage("user", "And of Italy?")]
    prompt = native.tokenize_prompt(follow_up)
    reused = native._generator.cache.common_prefix(prompt)
    assert reused > len(native.tokenize_prompt(FRANCE)) - 1
    warm, _, _ = _reply(native, follow_up)
    native._generator.cache.truncate(0)
    cold, _, _ = _reply(native, follow_up)
    assert warm == cold
    assert "Rome" in warm


def test_cancel_from_another_thread_stops_within_one_token(native, essay_reply):
    reference_text = essay_reply
    produced = [0]
    at_cancel: list[int] = []

    def cancel_after_five() -> None:
        while produced[0] < 5:
            time.sleep(0.001)
        at_cancel.append(produced[0])
        native.cancel()

    watcher = threading.Thread(target=cancel_after_five)
    stats = StreamStats()
    native.reset_cancel()
    watcher.start()
    for piece in native.stream(ESSAY, replace(GREEDY, max_tokens=400), stats):
        produced[0] += piece.n_tokens
    watcher.join()
    assert produced[0] - at_cancel[0] <= 1
    assert stats.finish_reason == "cancelled"
    again, stats, _ = _reply(native, ESSAY)  # the KV cache is still consistent
    assert again == reference_text and stats.finish_reason == "length"


def test_errors_are_one_line_messages(native, smollm2_hf_dir, tmp_path):
    with pytest.raises(DeviceUnavailableError, match="CPU or OpenCL"):
        NativeBackend().load(str(smollm2_hf_dir), LoadSettings(device="cuda"))
    too_long = [ChatMessage("user", "lighthouse " * 3000)]
    with pytest.raises(LampchatError, match="more than the context of 2048"):
        list(native.stream(too_long, GREEDY, StreamStats()))


@pytest.fixture(scope="module")
def llama_cpp_metrics(default_gguf):
    import asyncio

    async def run():
        worker = EngineWorker()
        try:
            await worker.load(str(default_gguf), "llama.cpp", LoadSettings(n_ctx=1024))
            generation = worker.generate(ESSAY, replace(GREEDY, max_tokens=24))
            async for _ in generation:
                pass
            return generation.metrics
        finally:
            await worker.close()

    return asyncio.run(run())


async def test_through_the_worker_metrics_have_the_same_fields_as_llama_cpp(
    smollm2_hf_dir, llama_cpp_metrics
):
    worker = EngineWorker()
    try:
        info = await worker.load(str(smollm2_hf_dir), "native", LoadSettings(n_ctx=1024))
        assert info.backend == "native"
        generation = worker.generate(ESSAY, replace(GREEDY, max_tokens=24))
        pieces = [piece async for piece in generation]
        # cancel through the worker: the reply stops within a token and says so
        cancelled = worker.generate(ESSAY, replace(GREEDY, max_tokens=400))
        received = 0
        async for piece in cancelled:
            received += piece.n_tokens
            if received >= 3:
                cancelled.cancel()
    finally:
        await worker.close()
    assert cancelled.metrics.finish_reason == "cancelled", cancelled.error
    assert 3 <= cancelled.metrics.completion_tokens <= 5
    ours, theirs = generation.metrics.to_dict(), llama_cpp_metrics.to_dict()
    assert set(ours) == set(theirs)
    populated = {k for k, v in theirs.items() if v not in (None, 0, 0.0, "", False)}
    assert populated == {k for k, v in ours.items() if v not in (None, 0, 0.0, "", False)}
    assert ours["backend"] == "native" and ours["device"] == "cpu"
    assert ours["finish_reason"] == theirs["finish_reason"] == "length"
    assert ours["completion_tokens"] == sum(p.n_tokens for p in pieces) == 24
    assert ours["prompt_tokens"] == theirs["prompt_tokens"]  # same template, same tokenizer
    assert generation.text.strip()


def test_lampchat_ask_with_the_native_backend_on_the_gguf(default_gguf):
    result = run_lampchat("ask", "--backend", "native", "--model", str(default_gguf), "--json",
                          "--temperature", "0", "--max-tokens", "24",
                          "What is the capital of France?")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["backend"] == "native"
    assert "Paris" in data["text"]
    assert data["completion_tokens"] > 0 and data["decode_tps"] > 0


def test_lampchat_ask_native_on_the_converted_folder(smollm2_hf_dir):
    """`lampchat ask --backend native` on the converted float32 SmolLM2; a safetensors folder
    picks the native backend by itself."""
    assert plan_load(str(smollm2_hf_dir))[0] == Candidate("native", "cpu")
    result = run_lampchat("ask", "--backend", "native", "--model", str(smollm2_hf_dir),
                          "--json", "--temperature", "0", "--max-tokens", "48", "--threads", "2",
                          "What is the capital of France?")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    data = json.loads(result.stdout)
    assert (data["backend"], data["device"]) == ("native", "cpu")
    assert "Paris" in data["text"] and data["finish_reason"] == "stop"
    assert data["prompt_tokens"] > 0 and data["decode_tps"] > 0


def test_threads_setting_caps_numpys_blas_threads():
    from threadpoolctl import threadpool_info, threadpool_limits

    from engine.backends.native import limit_blas_threads

    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    assert blas, "numpy's BLAS is visible to threadpoolctl"
    with threadpool_limits(limits=None):  # restores the previous count afterwards
        limit_blas_threads(1)
        assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == {1}


async def test_unloading_through_the_worker_gives_the_memory_back(smollm2_hf_dir):
    """Load and unload on the engine thread, as the app does; the weights' memory comes back."""
    import gc

    import psutil

    proc = psutil.Process()
    gc.collect()
    before = proc.memory_info().rss
    worker = EngineWorker()
    try:
        info = await worker.load(str(smollm2_hf_dir), "native", LoadSettings(n_ctx=256))
        loaded = proc.memory_info().rss
        weights = info.n_params * 4
        assert loaded - before > 0.8 * weights  # the float32 weights really are in memory
        await worker.unload()
        assert proc.memory_info().rss - before < 0.2 * weights
    finally:
        await worker.close()
