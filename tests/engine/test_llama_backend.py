"""The llama.cpp backend through the EngineWorker, on the real default model."""

from __future__ import annotations

import asyncio
import gc

import pytest

from engine.metrics import rss_bytes
from engine.types import ChatMessage, LoadSettings, SamplingParams, StreamStats
from engine.worker import EngineWorker

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

GREEDY = SamplingParams(temperature=0.0, seed=7, max_tokens=48, repeat_penalty=1.0)
QUESTION = [ChatMessage("user", "Write a long essay about the history of lighthouses.")]


async def _collect(worker: EngineWorker, messages=QUESTION, sampling=GREEDY):
    generation = worker.generate(messages, sampling)
    pieces = [piece async for piece in generation]
    return generation, pieces


@pytest.fixture
async def worker(default_gguf):
    w = EngineWorker()
    await w.load(str(default_gguf), "llama.cpp", LoadSettings(n_ctx=2048))
    yield w
    await w.close()


async def test_model_info_describes_the_default_model(worker, default_gguf):
    info = worker.info
    assert info is not None
    assert info.backend == "llama.cpp"
    assert info.format == "gguf"
    assert info.quantization == "Q4_1"
    assert info.device == "cpu"
    assert info.chat_template_source == "gguf"
    assert info.context_length == 2048
    assert info.file_size == default_gguf.stat().st_size
    assert 100e6 < info.n_params < 200e6


async def test_greedy_is_deterministic_across_runs(worker):
    first, _ = await _collect(worker)
    second, _ = await _collect(worker)
    assert first.text.strip()
    assert first.text == second.text
    assert first.metrics.completion_tokens == second.metrics.completion_tokens


async def test_metrics_are_consistent_with_the_stream(worker):
    generation, pieces = await _collect(worker)
    m = generation.metrics
    assert m is not None and m.error is None
    assert m.completion_tokens == sum(p.n_tokens for p in pieces)
    assert m.completion_tokens == GREEDY.max_tokens  # a long essay outruns 48 tokens
    assert m.finish_reason == "length"
    assert m.prompt_tokens > 10
    assert m.ttft_ms > 0 and m.total_ms >= m.ttft_ms
    assert m.decode_tps == pytest.approx(m.completion_tokens / (m.decode_ms / 1000), rel=1e-9)
    assert m.prompt_tps == pytest.approx(m.prompt_tokens / (m.ttft_ms / 1000), rel=1e-9)
    assert m.peak_rss_mb > 50
    assert m.backend == "llama.cpp" and m.device == "cpu"
    # the engine's count is llama.cpp's real token count, not a count of chunks
    backend = worker.backend
    assert len(backend._llm.tokenize(generation.text.encode(), add_bos=False)) == pytest.approx(
        m.completion_tokens, abs=3
    )


async def test_stop_strings_end_the_reply_before_the_stop_text(worker):
    reference, _ = await _collect(worker)
    words = reference.text.split()
    stop = words[len(words) // 2]
    sampling = SamplingParams(**{**GREEDY.__dict__, "stop": (stop,)})
    generation, _ = await _collect(worker, sampling=sampling)
    assert stop not in generation.text
    assert reference.text.startswith(generation.text)
    assert generation.metrics.finish_reason == "stop"


async def test_cancel_mid_stream_stops_within_one_token_and_worker_recovers(worker):
    reference, _ = await _collect(worker)
    sampling = SamplingParams(temperature=0.0, seed=7, max_tokens=400, repeat_penalty=1.0)
    generation = worker.generate(QUESTION, sampling)
    received_after_cancel = 0
    count = 0
    async for piece in generation:
        count += 1
        if count == 5:
            generation.cancel()
        elif count > 5:
            received_after_cancel += piece.n_tokens
    assert received_after_cancel <= 1
    assert generation.metrics.finish_reason == "cancelled"
    assert generation.metrics.completion_tokens <= 6 + 1
    again, _ = await _collect(worker)
    assert again.text == reference.text
    assert again.metrics.finish_reason == "length"


async def test_cancel_during_prompt_processing_aborts_the_decode(worker):
    long_prompt = [ChatMessage("user", "lighthouse " * 1500)]
    generation = worker.generate(long_prompt, GREEDY)

    async def consume():
        return [p async for p in generation]

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    generation.cancel()
    pieces = await asyncio.wait_for(task, timeout=30)
    assert generation.metrics.finish_reason == "cancelled"
    assert sum(p.n_tokens for p in pieces) <= 1
    again, _ = await _collect(worker)
    assert again.metrics.finish_reason == "length"


async def test_one_generation_at_a_time(worker):
    first = worker.generate(QUESTION, GREEDY)
    second = worker.generate(QUESTION, GREEDY)

    async def consume(gen, log, tag):
        async for _ in gen:
            log.append(tag)

    log: list[str] = []
    await asyncio.gather(consume(first, log, "a"), consume(second, log, "b"))
    # all of one reply comes before all of the other
    assert log == sorted(log) or log == sorted(log, reverse=True)
    assert first.text == second.text


async def test_switching_models_and_unload_releases_memory(default_gguf, gguf_copy):
    gc.collect()
    baseline = rss_bytes()
    worker = EngineWorker()
    try:
        for path in (default_gguf, gguf_copy, default_gguf):
            info = await worker.load(str(path), "auto", LoadSettings(n_ctx=1024))
            assert info.path == str(path)
            generation, _ = await _collect(worker)
            assert generation.text.strip()
        loaded = rss_bytes()
        await worker.unload()
        gc.collect()
        unloaded = rss_bytes()
    finally:
        await worker.close()
    assert loaded - baseline > 60 * 2**20, "a loaded model should show in RSS"
    assert unloaded - baseline < 40 * 2**20, (
        f"RSS after unload is {(unloaded - baseline) / 2**20:.0f} MiB above baseline"
    )


async def test_failed_load_keeps_the_previous_model(worker, tmp_path, default_gguf):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(Exception, match="damaged|truncated"):
        await worker.load(str(bad), "llama.cpp")
    assert worker.info is not None and worker.info.path == str(default_gguf)
    generation, _ = await _collect(worker)
    assert generation.text.strip()


def test_a_repacking_cpu_build_reads_files_whose_weights_it_repacks(default_gguf, tmp_path):
    """With the file mapped, weights that a CPU build repacks stay resident twice (a 7B Q4_0:
    2.06 x the file, benchmarks/README.md); read, once. Weights used in place (the bundled
    Q4_1) and GPU offload keep the file mapped."""
    import llama_cpp  # loads llama.cpp's native library

    from engine.backends.llama_cpp import LlamaCppBackend, use_mmap
    from engine.ggml_build import llama_cpp_build
    from tests.support.synthetic import synthetic_gguf

    repacks = "REPACK = 1" in llama_cpp_build().system_info
    assert use_mmap(0, {"Q4_0", "F32"}) is (not repacks)
    assert use_mmap(0, {"Q4_1", "Q8_0", "F32"}) is True
    assert use_mmap(-1, {"Q4_0"}) is True and use_mmap(10, {"Q4_K"}) is True
    q4_0 = synthetic_gguf().write("tiny", "Q4_0", tmp_path / "q4_0.gguf", progress=False)
    for path, mapped in ((default_gguf, True), (q4_0, not repacks)):
        backend = LlamaCppBackend()
        backend.load(str(path), LoadSettings(n_ctx=256, device="cpu"))
        try:
            mode = backend._llm.model_params.load_mode
            assert (mode == llama_cpp.LLAMA_LOAD_MODE_MMAP) is mapped, path
            stats = StreamStats()
            assert list(backend.stream(QUESTION, GREEDY, stats)) and stats.prompt_tokens > 0
        finally:
            backend.unload()
