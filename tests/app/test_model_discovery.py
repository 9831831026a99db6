"""The models users already have: found in Ollama's store, the Hugging Face cache, LM Studio,
GPT4All and llama.cpp's cache with no configuration, by the names those tools use, and run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from app.config import load_config
from app.model_catalog import find_entry, list_models
from app.model_names import resolve_name, with_store_defaults
from app.model_stores import discover
from engine.errors import LampchatError
from engine.types import LoadSettings, SamplingParams
from tests.support.cli import run_lampchat
from tests.support.fake_hub import FakeHub
from tests.support.model_stores import OLLAMA_SYSTEM, make_ollama_store, make_stores

EXPECTED = {
    "smollm2:135m": "ollama",
    "org/smol-GGUF": "huggingface",
    "lmstudio-community/SmolLM2-135M-Instruct-GGUF": "lmstudio",
    "smollm2-chat": "gpt4all",
    "HuggingFaceTB_SmolLM2-GGUF_smollm2": "llama.cpp",
}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, default_gguf: Path) -> Path:
    home = tmp_path_factory.mktemp("store-home")
    with FakeHub() as hub:
        make_stores(home, default_gguf, hub)
    return home


def _env(home: Path) -> dict[str, str]:
    return {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_CONFIG_HOME": str(home / ".config")}


def test_every_store_is_listed_with_zero_config(home: Path) -> None:
    result = run_lampchat("models", "--json", env=_env(home))
    assert result.returncode == 0, result.stderr
    entries = {e["name"]: e for e in json.loads(result.stdout)}
    for name, source in EXPECTED.items():
        assert entries[name]["source"] == source, name
        assert entries[name]["format"] == "gguf" and entries[name]["error"] is None
        assert entries[name]["backends"][0] == "llama.cpp"
    assert entries["SmolLM2-135M-Instruct"]["source"] == "bundled"
    assert not any("mmproj" in name for name in entries)  # a vision projector is no model
    table = run_lampchat("models", env=_env(home)).stdout
    assert "Ollama" in table and "Hugging Face cache" in table and "LM Studio" in table


def test_an_ollama_name_answers_with_the_params_ollama_stored(home: Path) -> None:
    result = run_lampchat("ask", "-m", "smollm2:135m", "--max-tokens", "6", "--json", "Hi",
                          env=_env(home))
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["model"] == "smollm2:135m" and reply["backend"] == "llama.cpp"
    assert reply["text"].strip()
    entry = find_entry("smollm2:135m", list_models(env=_env(home)))
    sampling, settings = with_store_defaults(entry, None, SamplingParams(), LoadSettings())
    assert sampling.temperature == 0.2 and sampling.top_k == 7
    assert "</answer>" in sampling.stop and settings.n_ctx == 2048
    assert settings.label == "smollm2:135m" and entry.system == OLLAMA_SYSTEM
    config = _config(home, "[generation]\ntemperature = 0.9\n")  # the user's config wins
    sampling, _ = with_store_defaults(entry, config, config.sampling(), LoadSettings())
    assert sampling.temperature == 0.9 and sampling.top_k == 7


def _config(home: Path, text: str):
    path = home / "config.toml"
    path.write_text(text)
    return load_config(path, env={})


@pytest.mark.parametrize(("wanted", "expected"), [
    ("smollm2:135m", "smollm2:135m"),
    ("SMOLLM2:135M", "smollm2:135m"),  # any case
    ("org/smol-GGUF", "org/smol-GGUF"),
    ("org/smol-GGUF:Q4_1", "org/smol-GGUF"),  # org/repo:QUANT
    ("lmstudio-community/", "lmstudio-community/SmolLM2-135M-Instruct-GGUF"),  # a unique prefix
    ("smollm2-chat.gguf", "smollm2-chat"),  # the file's name
    ("SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct"),
])
def test_names_resolve(home: Path, wanted: str, expected: str) -> None:
    assert resolve_name(wanted, None, env=_env(home)).name == expected


def test_ambiguous_and_unknown_names_are_one_line_errors(home: Path) -> None:
    with pytest.raises(LampchatError, match=r"'smollm2' is ambiguous: it matches .*smollm2-chat"):
        resolve_name("smollm2", None, env=_env(home))
    result = run_lampchat("ask", "-m", "no-such-model", "hi", env=_env(home))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "lampchat: error: model not found: no-such-model (`lampchat models` lists the names)"]
    # model.default and the environment take the same names
    named = run_lampchat("ask", "--max-tokens", "3", "--json", "hi",
                         env={**_env(home), "LAMPCHAT_MODEL__DEFAULT": "org/smol-GGUF"})
    assert json.loads(named.stdout)["model"] == "org/smol-GGUF", named.stderr


def test_model_discover_turns_stores_off(home: Path) -> None:
    only = _config(home, '[model]\ndiscover = ["ollama"]\n')
    names = {e.name for e in list_models(only, env=_env(home))}
    assert "smollm2:135m" in names and "org/smol-GGUF" not in names
    none = _config(home, "[model]\ndiscover = []\n")
    assert [e.source for e in list_models(none, env=_env(home))] == ["bundled"]


def test_ollama_models_env_and_other_namespaces(tmp_path: Path, default_gguf: Path) -> None:
    store = make_ollama_store(tmp_path / "elsewhere", default_gguf, "tiny", "latest")
    manifests = store / "manifests" / "registry.ollama.ai"
    (manifests / "someone" / "tool").mkdir(parents=True)
    (manifests / "someone" / "tool" / "v1").write_text(
        (manifests / "library" / "tiny" / "latest").read_text())
    (manifests / "library" / "broken").mkdir()
    (manifests / "library" / "broken" / "x").write_text("{not json")
    found = discover(["ollama"], {"OLLAMA_MODELS": str(store)}, tmp_path / "nohome")
    assert sorted(m.name for m in found) == ["someone/tool:v1", "tiny:latest"]
    entries = list_models(None, env={"OLLAMA_MODELS": str(store), "HOME": str(tmp_path)})
    assert find_entry("tiny", entries).name == "tiny:latest"  # no tag: latest


def test_a_symlink_loop_in_a_store_ends(tmp_path: Path, default_gguf: Path) -> None:
    repo = tmp_path / ".lmstudio" / "models" / "pub" / "repo"
    repo.mkdir(parents=True)
    os.link(default_gguf, repo / "model-Q4_1.gguf")
    (repo.parent / "loop").symlink_to(repo.parent)
    (tmp_path / ".lmstudio" / "models" / "again").symlink_to(tmp_path / ".lmstudio" / "models")
    found = discover(["lmstudio"], {}, tmp_path)
    assert [m.name for m in found] == ["pub/repo"]


def test_a_generic_file_name_is_named_from_its_metadata(tmp_path: Path,
                                                        default_gguf: Path) -> None:
    """`model.gguf` says nothing: its GGUF basename, size label and finetune name it (in the
    list, and once loaded)."""
    folder = tmp_path / "models" / "some-download"
    folder.mkdir(parents=True)
    os.link(default_gguf, folder / "model.gguf")
    config = _config(tmp_path, f'[model]\ndirs = ["{tmp_path / "models"}"]\ndiscover = []\n')
    names = {e.name for e in list_models(config, env={})}
    assert "smollm2 135M 8k-lc100k-mix1-ep2" in names  # the bundled file's metadata
    result = run_lampchat("ask", "-m", str(folder / "model.gguf"), "--max-tokens", "2",
                          "--json", "hi")
    assert json.loads(result.stdout)["model"] == "smollm2 135M 8k-lc100k-mix1-ep2"
