"""MLX backend (mlx-lm on mlx[cpu]) on the real converted SmolLM2."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from engine.backends.mlx import MLXBackend
from engine.errors import BackendUnavailableError, LampchatError, ModelLoadError
from engine.types import ChatMessage, LoadSettings, SamplingParams, StreamStats
from engine.worker import EngineWorker
from tests.support.cli import GREEDY_PROMPT, run_lampchat

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

GREEDY = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=32)


@pytest.fixture(scope="module")
def mlx_backend(smollm2_hf_dir: Path):
    backend = MLXBackend()
    backend.load(str(smollm2_hf_dir), LoadSettings(n_ctx=512, device="cpu"))
    yield backend
    backend.unload()


def test_greedy_agrees_with_native(mlx_backend: MLXBackend, smollm2_greedy_reference) -> None:
    prompt_ids, expected = smollm2_greedy_reference
    assert mlx_backend.tokenize_prompt([ChatMessage("user", GREEDY_PROMPT)]) == prompt_ids
    assert list(mlx_backend.generate_ids(prompt_ids, GREEDY)) == expected
    assert mlx_backend.finish_reason == "length"
    # again from the cached prefix: the cache reuse must not change the result
    assert list(mlx_backend.generate_ids(prompt_ids, GREEDY)) == expected


def test_multi_turn_cache_matches_a_cold_start(mlx_backend: MLXBackend) -> None:
    turn1 = [ChatMessage("user", "Name a colour.")]
    short = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=12)
    reply = "".join(p.text for p in mlx_backend.stream(turn1, short, StreamStats()))
    turn2 = [*turn1, ChatMessage("assistant", reply), ChatMessage("user", "And another one?")]
    # the whole first turn is reused from the KV cache
    kept = mlx_backend._reuse_cache(mlx_backend.tokenize_prompt(turn2))
    assert kept >= len(mlx_backend.tokenize_prompt(turn1))
    warm = "".join(p.text for p in mlx_backend.stream(turn2, short, StreamStats()))
    mlx_backend.reset_cache()  # cold: forget the cached conversation
    cold = "".join(p.text for p in mlx_backend.stream(turn2, short, StreamStats()))
    assert warm == cold and warm


def test_stream_text_and_stop_strings(mlx_backend: MLXBackend) -> None:
    messages = [ChatMessage("user", "What is the capital of France?")]
    stats = StreamStats()
    pieces = list(mlx_backend.stream(messages, SamplingParams(temperature=0, max_tokens=24),
                                     stats))
    text = "".join(p.text for p in pieces)
    assert "Paris" in text and stats.finish_reason == "stop" and stats.prompt_tokens > 10
    stats = StreamStats()
    cut = "".join(p.text for p in mlx_backend.stream(
        messages, SamplingParams(temperature=0, max_tokens=24, stop=("Paris",)), stats))
    assert cut == text[: text.index("Paris")] and stats.finish_reason == "stop"
    stats = StreamStats()
    short = list(mlx_backend.stream(messages, SamplingParams(temperature=0, max_tokens=3), stats))
    assert sum(p.n_tokens for p in short) == 3 and stats.finish_reason == "length"


def test_seed_repeats_a_sampled_reply(mlx_backend: MLXBackend) -> None:
    messages = [ChatMessage("user", "Tell me about cats.")]
    params = SamplingParams(temperature=1.0, top_k=40, top_p=0.95, min_p=0.05,
                            repeat_penalty=1.1, seed=11, max_tokens=20)
    runs = ["".join(p.text for p in mlx_backend.stream(messages, params, StreamStats()))
            for _ in range(2)]
    assert runs[0] == runs[1] and runs[0]


async def test_worker_metrics_and_cancel(smollm2_hf_dir: Path) -> None:
    worker = EngineWorker()
    try:
        info = await worker.load(str(smollm2_hf_dir), "mlx", LoadSettings(n_ctx=512))
        assert (info.backend, info.format, info.device) == ("mlx", "safetensors", "cpu")
        assert info.n_params and info.n_params > 130e6
        gen = worker.generate([ChatMessage("user", "Say hello.")],
                              SamplingParams(temperature=0, max_tokens=16))
        async for _ in gen:
            pass
        m = gen.metrics
        assert m is not None and m.backend == "mlx" and gen.text
        assert m.prompt_tokens > 5 and m.completion_tokens > 1
        assert m.prompt_tps > 0 and m.decode_tps > 0 and m.peak_rss_mb > 100
        story = worker.generate([ChatMessage("user", "Tell me a very long story.")],
                                SamplingParams(temperature=0.7, seed=3, max_tokens=400))
        seen = 0
        async for _ in story:
            seen += 1
            if seen == 3:
                story.cancel()
        assert story.metrics is not None and story.metrics.finish_reason == "cancelled"
        assert story.metrics.completion_tokens < 10
        after = worker.generate([ChatMessage("user", "Say hello.")],
                                SamplingParams(temperature=0, max_tokens=16))
        async for _ in after:
            pass
        assert after.text == gen.text  # still works after a cancel
    finally:
        await worker.close()


def test_mlx_quantized_folder(tmp_path_factory: pytest.TempPathFactory,
                              smollm2_hf_dir: Path) -> None:
    from mlx_lm import convert

    from engine.formats.detect import detect_format

    out = tmp_path_factory.mktemp("mlx-q") / "SmolLM2-q8"
    convert(str(smollm2_hf_dir), str(out), quantize=True, q_bits=8, q_group_size=64)
    assert detect_format(out).format == "mlx"
    backend = MLXBackend()
    try:
        info = backend.load(str(out), LoadSettings(n_ctx=512, device="cpu"))
        assert info.format == "mlx" and info.quantization.startswith("MLX 8-bit")
        assert 130e6 < (info.n_params or 0) < 140e6  # unpacked, as for the float32 folder
        text = "".join(p.text for p in backend.stream(
            [ChatMessage("user", "What is the capital of France?")],
            SamplingParams(temperature=0, max_tokens=16), StreamStats()))
        assert "Paris" in text
    finally:
        backend.unload()
    listing = run_lampchat("models", "--dir", str(out.parent))
    assert listing.returncode == 0 and "mlx" in listing.stdout and "8-bit" in listing.stdout


def test_missing_mlx_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                     smollm2_hf_dir: Path) -> None:
    monkeypatch.setitem(sys.modules, "mlx_lm", None)  # import mlx_lm raises ImportError
    with pytest.raises(BackendUnavailableError, match=r"pip install 'lampchat\[mlx\]'"):
        MLXBackend().load(str(smollm2_hf_dir), LoadSettings())


def test_bad_inputs_get_clear_errors(tmp_path: Path, smollm2_hf_dir: Path,
                                     default_gguf: Path) -> None:
    with pytest.raises(ModelLoadError, match="is gguf"):
        MLXBackend().load(str(default_gguf), LoadSettings())
    # a folder whose weights do not fit its config
    folder = tmp_path / "wrong"
    folder.mkdir()
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).symlink_to(smollm2_hf_dir / name)
    config = (smollm2_hf_dir / "config.json").read_text().replace(
        '"num_hidden_layers": 30', '"num_hidden_layers": 31')
    (folder / "config.json").write_text(config)
    with pytest.raises(ModelLoadError, match="mlx-lm cannot load"):
        MLXBackend().load(str(folder), LoadSettings())
    with pytest.raises(LampchatError, match="cannot run on device"):
        MLXBackend().load(str(smollm2_hf_dir), LoadSettings(device="opencl"))
    result = run_lampchat("ask", "-m", str(folder), "--backend", "mlx", "--max-tokens", "4", "hi")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "mlx-lm cannot load" in result.stderr


def test_ask_cli_picks_mlx_from_the_config(tmp_path: Path, smollm2_hf_dir: Path) -> None:
    import json

    config = tmp_path / "config.toml"
    config.write_text('[backend]\ndefault = "mlx"\n')
    result = run_lampchat("ask", "--json", "--config", str(config), "-m", str(smollm2_hf_dir),
                          "--temperature", "0", "--max-tokens", "16",
                          "What is the capital of France?")
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["backend"] == "mlx" and "Paris" in reply["text"]
    assert reply["decode_tps"] > 0 and reply["prompt_tps"] > 0
