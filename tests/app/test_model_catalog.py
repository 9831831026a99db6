"""The picker's model catalog: scanning `model.dirs` by content, metadata, damage, the cache."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import threading
from pathlib import Path

import pytest

from app import model_catalog, model_metadata
from app.config import load_config
from app.model_catalog import list_models, load_settings_for
from engine.formats.gguf_reader import GGUFModel
from engine.types import LoadSettings
from tests.support.hf_folders import make_hf_folder
from widgets.model_entry import ModelChoice

SMOL_PARAMS = 134_515_008


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def config_for(tmp_path: Path, *dirs: Path, extra: str = ""):
    listed = ", ".join(json.dumps(str(d)) for d in dirs)
    return load_config(write_config(tmp_path, f"[model]\ndirs = [{listed}]\n{extra}"), env={})


@pytest.fixture(scope="module")
def model_tree(tmp_path_factory: pytest.TempPathFactory, default_gguf: Path) -> dict[str, Path]:
    """A folder tree holding real models, damaged ones and things that are not models."""
    root = tmp_path_factory.mktemp("catalog") / "models"
    (root / "nested" / "deeper").mkdir(parents=True)
    paths = {"root": root}
    paths["top"] = root / "smol-top.gguf"
    os.link(default_gguf, paths["top"])
    paths["deep"] = root / "nested" / "deeper" / "weights.bin"  # GGUF content, odd name
    os.link(default_gguf, paths["deep"])
    paths["hf"] = root / "tiny-hf"
    paths["hf_params"] = make_hf_folder(paths["hf"])  # type: ignore[assignment]
    data = default_gguf.read_bytes()
    paths["truncated"] = root / "truncated.gguf"
    paths["truncated"].write_bytes(data[: len(data) // 2])
    paths["garbage"] = root / "garbage.gguf"
    paths["garbage"].write_bytes(b"this is not a model at all\n" * 10)
    paths["bad_hf"] = root / "broken-hf"
    paths["bad_hf"].mkdir()
    (paths["bad_hf"] / "config.json").write_text("{not json")
    (paths["bad_hf"] / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    (root / "README.md").write_text("# my models\n")
    (root / "notes.txt").write_text("nothing to see\n")
    (root / ".hidden").mkdir()
    os.link(default_gguf, root / ".hidden" / "secret.gguf")
    (root / "nested" / "loop").symlink_to(root, target_is_directory=True)
    return paths


def by_name(entries):
    return {e.name: e for e in entries}


def test_default_only_without_config(tmp_path: Path, default_gguf: Path) -> None:
    entries = list_models(None, cache_path=tmp_path / "cache.json")
    assert len(entries) == 1
    entry = entries[0]
    assert entry.is_default and entry.error is None
    assert Path(entry.path) == default_gguf
    assert entry.format == "gguf"
    assert entry.backends[0] == "llama.cpp" and "native" in entry.backends
    assert entry.quantization == "Q4_1"
    assert entry.n_params == SMOL_PARAMS
    assert entry.context_length == 8192
    assert entry.file_size == default_gguf.stat().st_size


def test_gguf_header_parser_agrees_with_the_gguf_package(default_gguf: Path) -> None:
    """The fast header reader must match gguf.GGUFReader (through engine.formats)."""
    meta = model_metadata.gguf_metadata(default_gguf)
    reference = GGUFModel(default_gguf)
    assert meta.error is None
    assert meta.n_params == reference.n_params
    assert meta.quantization == reference.quantization
    assert meta.context_length == reference.context_length


def test_scan_finds_models_by_content_and_marks_damage(tmp_path: Path, model_tree) -> None:
    config = config_for(tmp_path, model_tree["root"])
    entries = list_models(config, cache_path=tmp_path / "cache.json")
    names = by_name(entries)
    assert entries[0].is_default and entries[0].name == "SmolLM2-135M-Instruct"
    assert set(names) == {
        "SmolLM2-135M-Instruct", "smol-top", "weights", "tiny-hf", "truncated",
        "garbage", "broken-hf",
    }
    # sorted by name after the default
    assert [e.name for e in entries[1:]] == sorted(
        (e.name for e in entries[1:]), key=str.casefold)

    deep = names["weights"]  # a GGUF called weights.bin is found by its content
    assert deep.format == "gguf" and deep.error is None and deep.n_params == SMOL_PARAMS
    assert Path(deep.path) == model_tree["deep"]

    hf = names["tiny-hf"]  # an HF folder is one entry; its files are not listed again
    assert hf.format == "safetensors" and hf.error is None
    assert Path(hf.path) == model_tree["hf"]
    assert hf.n_params == model_tree["hf_params"]
    assert hf.context_length == 2048
    assert hf.quantization == "F16"
    assert hf.backends[0] == "native"
    assert hf.file_size == sum(f.stat().st_size for f in model_tree["hf"].iterdir())

    truncated = names["truncated"]
    assert truncated.error is not None and "truncated" in truncated.error
    assert not truncated.usable
    assert names["garbage"].error is not None and "unknown model format" in names["garbage"].error
    assert names["broken-hf"].error is not None and "config.json" in names["broken-hf"].error
    assert all(".hidden" not in e.path for e in entries)


def test_folder_holding_one_gguf_lists_the_file(tmp_path: Path, default_gguf: Path) -> None:
    root = tmp_path / "models"
    (root / "smol").mkdir(parents=True)
    os.link(default_gguf, root / "smol" / "model-q4.gguf")
    entries = list_models(config_for(tmp_path, root), cache_path=tmp_path / "c.json")
    assert [Path(e.path) for e in entries[1:]] == [root / "smol" / "model-q4.gguf"]


def test_hf_cache_layout_is_listed_once_with_its_repo_name(tmp_path: Path) -> None:
    """Hugging Face's cache: snapshots/<rev>/ links into blobs/; list the snapshot only."""
    repo = tmp_path / "hub" / "models--acme--tiny-chat"
    staging = tmp_path / "staging"
    make_hf_folder(staging)
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    for i, file in enumerate(sorted(staging.iterdir())):
        blob = repo / "blobs" / f"blob{i}"
        shutil.copyfile(file, blob)
        (snapshot / file.name).symlink_to(blob)
    entries = list_models(config_for(tmp_path, tmp_path / "hub"), cache_path=tmp_path / "c.json")
    found = entries[1:]
    assert [(e.name, e.format) for e in found] == [("acme/tiny-chat", "safetensors")]


def test_preferred_backend_comes_first(tmp_path: Path, model_tree) -> None:
    config = config_for(tmp_path, model_tree["root"], extra='[backend]\ndefault = "native"\n')
    names = by_name(list_models(config, cache_path=tmp_path / "c.json"))
    assert names["smol-top"].backends == ("native", "llama.cpp")
    assert names["tiny-hf"].backends[0] == "native"


def test_configured_default_by_path_and_by_name(tmp_path: Path, model_tree) -> None:
    root = model_tree["root"]
    by_path = config_for(tmp_path, root, extra=f'default = "{model_tree["top"]}"\n')
    entries = list_models(by_path, cache_path=tmp_path / "c.json")
    assert entries[0].is_default and entries[0].name == "smol-top"
    assert sum(e.name == "smol-top" for e in entries) == 1  # not listed twice
    assert all(not e.is_default for e in entries[1:])
    # the bundled model is listed only as the default
    assert "SmolLM2-135M-Instruct" not in by_name(entries)

    by_name_config = config_for(tmp_path, root, extra='default = "tiny-hf"\n')
    entries = list_models(by_name_config, cache_path=tmp_path / "c.json")
    assert entries[0].is_default and entries[0].name == "tiny-hf"

    missing = config_for(tmp_path, root, extra='default = "no-such-model"\n')
    entries = list_models(missing, cache_path=tmp_path / "c.json")
    assert entries[0].is_default and entries[0].error == "model not found: no-such-model"


def test_missing_and_file_dirs_are_skipped(tmp_path: Path, default_gguf: Path) -> None:
    not_a_dir = tmp_path / "file.txt"
    not_a_dir.write_text("x")
    config = config_for(tmp_path, tmp_path / "does-not-exist", not_a_dir)
    entries = list_models(config, cache_path=tmp_path / "c.json")
    assert [Path(e.path) for e in entries] == [default_gguf]


def test_metadata_cache_is_used_and_invalidated(tmp_path: Path, default_gguf: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "models"
    root.mkdir()
    model = root / "copy.gguf"
    os.link(default_gguf, model)
    cache_file = tmp_path / "cache" / "catalog.json"
    calls: list[Path] = []
    real = model_catalog.read_metadata

    def counting(path: Path, fmt: str):
        calls.append(path)
        return real(path, fmt)

    monkeypatch.setattr(model_catalog, "read_metadata", counting)
    config = config_for(tmp_path, root)
    first = list_models(config, cache_path=cache_file)
    assert len(calls) == 2 and cache_file.is_file()
    calls.clear()
    second = list_models(config, cache_path=cache_file)
    assert calls == [] and second == first

    data = default_gguf.read_bytes()  # the file changes: its metadata is read again
    model.unlink()
    model.write_bytes(data[:4096])
    third = by_name(list_models(config, cache_path=cache_file))
    assert calls == [model]
    assert third["copy"].error is not None

    cache_file.write_text("{ this is not json")  # a corrupt cache is ignored, then rewritten
    calls.clear()
    assert by_name(list_models(config, cache_path=cache_file))["copy"].error is not None
    assert len(calls) == 2
    assert json.loads(cache_file.read_text())["version"] == model_catalog.CACHE_VERSION


def test_default_cache_lives_in_the_configured_cache_dir(tmp_path: Path) -> None:
    cache_dir = tmp_path / "my-cache"
    config = load_config(write_config(tmp_path, f'[model]\ncache_dir = "{cache_dir}"\n'), env={})
    list_models(config)
    assert (cache_dir / model_catalog.CACHE_FILE).is_file()


def test_damaged_gguf_headers_never_raise(tmp_path: Path, default_gguf: Path) -> None:
    data = default_gguf.read_bytes()
    cases = {
        "magic-only": b"GGUF",
        "header-cut": data[:200],
        "vocab-cut": data[:300_000],
        "huge-count": data[:8] + (2**62).to_bytes(8, "little") + data[16:4096],
        "old-version": b"GGUF" + (1).to_bytes(4, "little") + data[8:4096],
    }
    for name, blob in cases.items():
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(blob)
        meta = model_metadata.read_metadata(path, "gguf")
        assert meta.error, name
        assert meta.file_size == len(blob)


class _ModelsHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path != "/v1/models":
            self.send_error(404)
            return
        body = json.dumps({"object": "list", "data": [
            {"id": "llama3:8b", "object": "model", "owned_by": "me", "context_length": 8192},
            {"id": "/srv/models/qwen-0.5b.gguf", "object": "model"},
        ]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def models_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ModelsHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_remote_endpoints_are_listed_with_their_names(tmp_path: Path, models_server: str) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_url = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
    closed.close()  # nothing listens there any more
    config = load_config(write_config(tmp_path, (
        f'[remote.box]\nbase_url = "{models_server}"\napi_key = "sk-secret"\n'
        f'[remote.dead]\nbase_url = "{dead_url}"\nretries = 0\n'
    )), env={})
    entries = list_models(config, cache_path=tmp_path / "c.json")
    remote = [e for e in entries if e.format == "remote"]
    assert [(e.name, e.path, e.endpoint, e.context_length, e.error) for e in remote[:2]] == [
        ("llama3:8b (box)", "llama3:8b", "box", 8192, None),
        ("qwen-0.5b.gguf (box)", "/srv/models/qwen-0.5b.gguf", "box", None, None),
    ]
    assert remote[0].backends == ("remote",)
    dead = remote[2]
    assert dead.endpoint == "dead" and dead.error and "dead" in dead.error
    assert len(remote) == 3
    assert "sk-secret" not in repr(entries)
    assert list_models(config, cache_path=tmp_path / "c.json", include_remote=False) == [
        e for e in entries if e.format != "remote"]

    choice = ModelChoice.from_entry(remote[0])
    assert (choice.model, choice.backend, choice.endpoint) == ("llama3:8b", "remote", "box")
    base = LoadSettings(n_ctx=1024, options={"keep": 1})
    settings = load_settings_for(choice, config, base)
    assert settings.n_ctx == 1024 and settings.options["keep"] == 1
    assert settings.options["base_url"] == models_server
    assert settings.options["endpoint_name"] == "box"
    assert str(settings.options["api_key"]) != "sk-secret"  # masked
    local = ModelChoice.from_entry(entries[0])
    assert load_settings_for(local, config, base) is base


def test_remote_default_model_is_not_reported_missing(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, (
        '[model]\ndefault = "llama3:8b"\n[backend]\ndefault = "remote"\n'
        '[remote.box]\nbase_url = "http://127.0.0.1:9/v1"\n'
    )), env={})
    entries = list_models(config, cache_path=tmp_path / "c.json", include_remote=False)
    assert entries[0].is_default and entries[0].error is None
    assert (entries[0].path, entries[0].format, entries[0].endpoint) == ("llama3:8b", "remote",
                                                                         "box")


def test_each_entry_says_which_chat_template_it_runs_with(tmp_path: Path) -> None:
    """The model's own (GGUF, tokenizer_config.json), else the built-in its family and
    special tokens pick (as the backends pick it), else the configured one for every model."""
    from tests.support.tiny_gguf import write_gemma_gguf

    root = tmp_path / "models"
    root.mkdir()
    write_gemma_gguf(root / "gemma-own-turns.gguf", arch="gemma3", layers=1,
                     renames={0: "<end_of_turn>", 1: "<start_of_turn>", 2: "<eos>"})
    write_gemma_gguf(root / "gemma-chatml-vocab.gguf", arch="gemma3", layers=1)
    make_hf_folder(root / "hf-with-template")
    (root / "hf-with-template" / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": "{{ messages[0].content }}"}))
    entries = by_name(list_models(config_for(tmp_path, root), cache_path=tmp_path / "c.json"))
    assert entries["gemma-own-turns"].chat_template == "built-in (gemma)"
    assert entries["gemma-chatml-vocab"].chat_template == "built-in (chatml)"
    assert entries["hf-with-template"].chat_template == "tokenizer_config.json"
    assert entries["hf-with-template"].backends[0] == "native"
    default = list_models(config_for(tmp_path, root), cache_path=tmp_path / "c.json")[0]
    assert default.chat_template == "gguf"  # the bundled SmolLM2 ships its own
    chosen = config_for(tmp_path, root, extra='chat_template = "llama3"\n')
    assert {e.chat_template for e in list_models(chosen, cache_path=tmp_path / "c.json")
            if e.format != "remote"} == {"chosen (llama3)"}
