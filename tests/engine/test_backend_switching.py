"""One EngineWorker switching llama.cpp -> native -> MLX -> ONNX -> llama.cpp, and the memory
coming back after each unload.

Baseline: the resident set size after one full warm-up cycle through all four backends and an
unload, measured after `gc.collect()` and `malloc_trim` (see `rss_after_gc`). The first use of
each library maps its code and keeps some process-lifetime state (thread pools, kernel caches,
the tokenizer and Jinja caches); that is paid once, so the baseline is taken after it. Every
later unload must bring RSS back within 10% of that baseline: a model's weights and KV cache
(hundreds of MB here) must not stay.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import pytest

from engine.memory import trim_heap
from engine.metrics import rss_bytes
from engine.types import ChatMessage, LoadSettings, SamplingParams
from engine.worker import EngineWorker

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

log = logging.getLogger(__name__)

QUESTION = [ChatMessage("user", "What is the capital of France?")]
REPLY = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=12)


def rss_after_gc() -> int:
    """RSS in bytes after a full garbage collection and glibc's malloc_trim.

    The trim hands heap pages that the process has already freed back to the system; without
    it glibc keeps them in the engine thread's arena (the native backend's fused weights, a few
    MB per matrix, come from there), which is the allocator's caching, not memory in use. A
    model still referenced somewhere cannot be trimmed and still fails the check.
    """
    gc.collect()
    trim_heap()
    return rss_bytes()


async def _ask(worker: EngineWorker) -> str:
    gen = worker.generate(QUESTION, REPLY)
    async for _ in gen:
        pass
    assert gen.error is None, gen.error
    assert gen.metrics is not None and gen.metrics.completion_tokens > 0 and gen.text
    return gen.text


async def test_switch_through_every_local_backend(default_gguf: Path, smollm2_hf_dir: Path,
                                                  smollm2_onnx_dir: Path) -> None:
    cycle = [("llama.cpp", default_gguf), ("native", smollm2_hf_dir), ("mlx", smollm2_hf_dir),
             ("onnx", smollm2_onnx_dir), ("llama.cpp", default_gguf)]
    settings = LoadSettings(n_ctx=512, device="cpu")
    worker = EngineWorker()
    try:
        # Warm-up: switch straight from one backend to the next (load replaces the model).
        replies = {}
        for name, path in cycle:
            info = await worker.load(str(path), name, settings)
            assert info.backend == name
            replies[name] = await _ask(worker)
        # the same float32 weights, greedy: the same reply
        assert replies["native"] == replies["mlx"] == replies["onnx"]
        assert "Paris" in replies["native"]
        await worker.unload()
        baseline = rss_after_gc()
        # Measured: each backend loaded, used and unloaded; RSS checked after each unload.
        report = [f"baseline {baseline / 2**20:.0f} MB"]
        for name, path in cycle:
            await worker.load(str(path), name, settings)
            assert await _ask(worker) == replies[name]
            loaded = rss_after_gc()
            await worker.unload()
            after = rss_after_gc()
            report.append(f"{name}: in use {loaded / 2**20:.0f} MB, "
                          f"unloaded {after / 2**20:.0f} MB")
            assert after <= 1.10 * baseline, "; ".join(report)
        log.info("RSS: %s", "; ".join(report))
        print("RSS:", "; ".join(report))
    finally:
        await worker.close()
