"""Shared fixtures. Expensive artifacts are session-scoped and live in pytest tmp dirs."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from engine.models import default_model_path
from tests.support.cli import GREEDY_PROMPT, run_lampchat

REAL_MODEL_FIXTURES = frozenset({"default_gguf", "gguf_copy", "smollm2_hf_dir",
                                 "smollm2_onnx_dir", "smollm2_greedy_reference"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test using the bundled model's fixtures is marked `real_model`."""
    for item in items:
        if REAL_MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real_model)


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep tests away from the real user's config, history, log files and model stores."""
    home = tmp_path_factory.getbasetemp() / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local/share"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local/state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("LAMPCHAT_LOG_FILE", str(home / "lampchat.log"))
    monkeypatch.setenv("HOME", str(home))  # no model store of the real user's is discovered
    for name in ("OLLAMA_MODELS", "HF_HOME", "HF_HUB_CACHE", "LLAMA_CACHE", "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True, scope="session")
def _mlx_streams_cleared_at_exit():
    """MLX streams made on the main thread (mlx-lm references in tests) are torn down before
    interpreter shutdown; left to it, MLX's thread-local destructors can crash the process."""
    yield
    mx = sys.modules.get("mlx.core")
    if mx is not None and hasattr(mx, "clear_streams"):
        mx.clear_streams()


@pytest.fixture(scope="session")
def default_gguf() -> Path:
    """The bundled SmolLM2-135M-Instruct Q4_1 GGUF."""
    return default_model_path()


@pytest.fixture(scope="session")
def gguf_copy(tmp_path_factory: pytest.TempPathFactory, default_gguf: Path) -> Path:
    """A second GGUF file (a copy of the default one), for model switching."""
    path = tmp_path_factory.mktemp("models") / "second-model.gguf"
    shutil.copyfile(default_gguf, path)
    return path


@pytest.fixture(scope="session")
def smollm2_hf_dir(tmp_path_factory: pytest.TempPathFactory, default_gguf: Path) -> Path:
    """The default GGUF converted by the real `lampchat convert` into an HF-style folder
    (config.json, float32 model.safetensors, tokenizer.json, tokenizer_config.json)."""
    base = tmp_path_factory.mktemp("smollm2-hf")
    out = base / "SmolLM2-135M-Instruct"
    result = run_lampchat(
        "convert", str(default_gguf), "-o", str(out),
        env={"LAMPCHAT_LOG_FILE": str(base / "convert.log")},
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def smollm2_onnx_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_hf_dir: Path) -> Path:
    """The converted SmolLM2 exported by the real `lampchat convert --to onnx` (float32)."""
    base = tmp_path_factory.mktemp("smollm2-onnx")
    out = base / "SmolLM2-135M-Instruct-onnx"
    result = run_lampchat(
        "convert", str(smollm2_hf_dir), "--to", "onnx", "-o", str(out),
        env={"LAMPCHAT_LOG_FILE": str(base / "convert.log")},
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def smollm2_greedy_reference(smollm2_hf_dir: Path) -> tuple[list[int], list[int]]:
    """(prompt ids, first 32 greedy ids) of the native engine on the converted SmolLM2,
    for GREEDY_PROMPT rendered with the model's chat template; no repetition penalty."""
    import gc

    from engine.formats.loader import load_model
    from engine.native import build_model
    from engine.native.generator import Generator
    from engine.sampling import Sampler
    from engine.types import ChatMessage, SamplingParams

    loaded = load_model(smollm2_hf_dir)
    prompt = loaded.template.render([ChatMessage("user", GREEDY_PROMPT)])
    ids = list(loaded.tokenizer.encode(prompt, add_special_tokens=False).ids)
    generator = Generator(build_model(loaded.config, loaded.weights), 256)
    greedy = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=32)
    out = list(generator.generate(ids, Sampler(greedy), 32, set(loaded.eos_token_ids)))
    assert len(out) == 32, "the reference reply ended before 32 tokens"
    del generator, loaded
    gc.collect()
    return ids, out
