"""Saved KV state per conversation: a resumed conversation restores it and answers with the
same greedy tokens as a full evaluation; a state of another model or settings, or a damaged
file, is ignored; the store is capped and forgets deleted conversations."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.kv_store import KVState, KVStateStore, model_identity
from engine.types import ChatMessage, LoadSettings, SamplingParams
from engine.worker import EngineWorker

pytestmark = [pytest.mark.slow]

GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=16)
FIRST = [ChatMessage("user", "Tell me a long story about a lighthouse keeper and the sea, "
                             "with storms, ships, gulls and a lamp that never goes out.")]


async def _reply(worker: EngineWorker, messages, conversation=None):
    generation = worker.generate(messages, GREEDY, conversation=conversation)
    async for _piece in generation:
        pass
    return generation


async def _fresh(backend: str, model: Path, store: KVStateStore | None,
                 n_ctx: int = 1024) -> EngineWorker:
    worker = EngineWorker(kv_store=store)
    await worker.load(str(model), backend, LoadSettings(n_ctx=n_ctx, device="cpu"))
    return worker


@pytest.fixture
def model_for(request: pytest.FixtureRequest, default_gguf: Path):
    """The bundled model in the form `backend` reads (MLX: the converted HF folder; ONNX: its
    export)."""
    def model(backend: str) -> Path:
        if backend == "mlx":
            return request.getfixturevalue("smollm2_hf_dir")
        if backend == "onnx":
            return request.getfixturevalue("smollm2_onnx_dir")
        return default_gguf
    return model


@pytest.mark.parametrize("backend", ["llama.cpp", "native", "mlx", "onnx"])
async def test_a_resumed_conversation_restores_its_state_and_answers_the_same(
        tmp_path: Path, model_for, backend: str) -> None:
    model = model_for(backend)
    store = KVStateStore(tmp_path / "kv", 512 << 20)
    first = await _fresh(backend, model, store)
    reply = await _reply(first, FIRST, "conv1")
    await first.close()  # a new process later: nothing of the cache is left in memory
    assert (tmp_path / "kv" / "conv1.kvstate").is_file()
    follow = [*FIRST, ChatMessage("assistant", reply.text), ChatMessage("user", "And then?")]

    resumed = await _fresh(backend, model, KVStateStore(tmp_path / "kv", 512 << 20))
    rendered: list[int] = []
    tokenize = resumed.backend.tokenize_prompt
    resumed.backend.tokenize_prompt = lambda m: rendered.append(len(m)) or tokenize(m)
    restored = await _reply(resumed, follow, "conv1")
    await resumed.close()
    assert rendered == [len(follow)]  # once, for the state's prefix and the reply both
    cold = await _fresh(backend, model, None)
    reference = await _reply(cold, follow)
    await cold.close()
    assert restored.restored_tokens > 40  # the first prompt (and reply) came from the state
    assert restored.text == reference.text
    other_ctx = await _fresh(backend, model, KVStateStore(tmp_path / "kv", 512 << 20),
                             n_ctx=512)
    ignored = await _reply(other_ctx, follow, "conv1")  # other settings: never trusted
    await other_ctx.close()
    assert ignored.restored_tokens == 0 and ignored.text == reference.text


async def test_a_damaged_state_file_is_ignored_and_the_reply_is_right(tmp_path: Path,
                                                                      default_gguf: Path) -> None:
    store = KVStateStore(tmp_path / "kv", 512 << 20)
    worker = await _fresh("llama.cpp", default_gguf, store)
    await _reply(worker, FIRST, "conv2")
    await worker.close()
    path = tmp_path / "kv" / "conv2.kvstate"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    again = await _fresh("llama.cpp", default_gguf, KVStateStore(tmp_path / "kv", 512 << 20))
    reply = await _reply(again, FIRST, "conv2")
    await again.close()
    assert reply.restored_tokens == 0 and reply.text


def test_the_cap_evicts_the_least_recently_used_and_delete_forgets(tmp_path: Path) -> None:
    import os
    import time

    store = KVStateStore(tmp_path, cap_bytes=3000)
    identity = model_identity(str(tmp_path), "native", n_ctx=8)
    base = time.time_ns() - 100 * 10**9
    for i, name in enumerate(("a", "b", "c")):  # each used later than the one before
        store.save(name, identity, KVState((1, 2, 3), bytes([i]) * 1000), background=False)
        os.utime(tmp_path / f"{name}.kvstate", ns=(base + i * 10**9,) * 2)
    assert sorted(p.name for p in tmp_path.glob("*.kvstate")) == ["b.kvstate", "c.kvstate"]
    fresh = KVStateStore(tmp_path, cap_bytes=3000)  # from disk, not memory
    assert fresh.load("c", identity) == KVState((1, 2, 3), bytes([2]) * 1000)
    assert fresh.load("c", {**identity, "n_ctx": 9}) is None
    fresh.delete("c")
    assert fresh.load("c", identity) is None and not (tmp_path / "c.kvstate").exists()
    assert store._file("../escape") is None  # ids never name a path outside the store


def test_one_writer_writes_the_latest_state_and_never_one_of_a_deleted_conversation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """States saved while the writer is busy are coalesced: the latest of each conversation
    is written, the ones it replaced never are; a conversation deleted while its state is
    being written is left with no file."""
    import os
    import threading

    import engine.kv_store as kv_store

    writing, release = threading.Event(), threading.Event()
    written: list[str] = []
    replace = os.replace

    def slow_replace(src: str, dst: str) -> None:
        written.append(Path(dst).name)
        writing.set()
        assert release.wait(10)
        replace(src, dst)

    monkeypatch.setattr(kv_store.os, "replace", slow_replace)
    store = KVStateStore(tmp_path, cap_bytes=1 << 20)
    identity = model_identity(str(tmp_path), "native", n_ctx=8)
    store.save("a", identity, KVState((1,), b"first"))
    assert writing.wait(10)  # the writer holds a's first state
    for n in range(2, 5):
        store.save("a", identity, KVState(tuple(range(n)), b"newer"))
    store.save("b", identity, KVState((1,), b"b"))
    store.delete("b")  # before its turn: never written
    release.set()
    store.flush()
    assert written == ["a.kvstate", "a.kvstate"]
    assert KVStateStore(tmp_path, 1 << 20).load("a", identity) == KVState((0, 1, 2, 3), b"newer")

    writing.clear()
    release.clear()
    store.save("c", identity, KVState((1,), b"c"))
    assert writing.wait(10)
    store.delete("c")  # while its file is being written
    release.set()
    store.flush()
    assert not (tmp_path / "c.kvstate").exists()
    store.save("c", identity, KVState((1, 2), b"c"))  # a reply that ended after the delete
    store.flush()
    assert not (tmp_path / "c.kvstate").exists()


def test_a_state_of_another_model_file_is_never_used(tmp_path: Path) -> None:
    """Keyed by the model file (path, size, mtime) and backend: another file, the same file
    changed, or another backend finds nothing."""
    import os

    model = tmp_path / "model.gguf"
    model.write_bytes(b"x" * 100)
    store = KVStateStore(tmp_path / "kv", 1 << 20)
    identity = model_identity(str(model), "llama.cpp", n_ctx=512)
    store.save("c1", identity, KVState((1, 2), b"ab"), background=False)
    fresh = KVStateStore(tmp_path / "kv", 1 << 20)
    other = tmp_path / "other.gguf"
    other.write_bytes(b"x" * 100)
    assert fresh.load("c1", model_identity(str(other), "llama.cpp", n_ctx=512)) is None
    assert fresh.load("c1", model_identity(str(model), "native", n_ctx=512)) is None
    os.utime(model, ns=(1, 1))  # the file was replaced: its mtime changed
    assert fresh.load("c1", model_identity(str(model), "llama.cpp", n_ctx=512)) is None


WRITER = r"""
import sys
sys.path.insert(0, sys.argv[1])
from engine.kv_store import KVState, KVStateStore
store = KVStateStore(sys.argv[2], 1 << 30)
for i in range(60):
    store.save("shared", {"m": 1}, KVState((i,), bytes([i % 251]) * (4 << 20)),
               background=False)
"""


def test_two_processes_never_read_a_half_written_state(tmp_path: Path) -> None:
    """One process writes 4 MB states over and over while another reads: every read is a
    whole state (written to a temp file, then renamed) or nothing, never a mix."""
    import subprocess
    import sys

    from tests.support.cli import REPO

    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(REPO), str(tmp_path)])
    reader = KVStateStore(tmp_path, 1 << 30)
    seen = 0
    try:
        while writer.poll() is None:
            state = reader.load("shared", {"m": 1})
            if state is not None:
                (i,) = state.tokens
                assert state.payload == bytes([i % 251]) * (4 << 20)
                seen += 1
    finally:
        writer.wait(timeout=120)
    assert writer.returncode == 0 and seen > 0
