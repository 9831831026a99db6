"""Format detection by content: every format is recognised whatever its file is called, each one
damaged gets a clear one-line error, and `lampchat models` shows the detected format."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from engine.errors import LampchatError, UnknownFormatError
from engine.formats.detect import detect_format
from tests.support import torch_checkpoint as tc
from tests.support.cli import run_lampchat
from tests.support.tiny_models import llama_config, llama_weights

TINY = llama_config(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=1, vocab_size=32)


def _onnx(path: Path) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, [64], np.ones(64).tolist())],
    )
    onnx.save(helper.make_model(graph), str(path))
    return path


def _hf_folder(folder: Path, config: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config or TINY))
    save_file(llama_weights(TINY), str(folder / "model.safetensors"))
    return folder


def _sharded(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(TINY))
    weights = llama_weights(TINY)
    names = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2 :]}
    index = {"metadata": {}, "weight_map": {}}
    for shard, keys in shards.items():
        save_file({k: weights[k] for k in keys}, str(folder / shard))
        index["weight_map"].update(dict.fromkeys(keys, shard))
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def _mlx_folder(folder: Path) -> Path:
    return _hf_folder(folder, {**TINY, "quantization": {"group_size": 64, "bits": 4}})


def _npz(path: Path) -> Path:
    with path.open("wb") as fh:
        np.savez(fh, **{k: v for k, v in list(llama_weights(TINY).items())[:3]})
    return path


def _torch(layout: str) -> Callable[[Path], Path]:
    def write(path: Path) -> Path:
        return tc.save_state_dict(path, dict(list(llama_weights(TINY).items())[:3]), layout)

    return write


def _safetensors_file(path: Path) -> Path:
    save_file(llama_weights(TINY), str(path))
    return path


def _gguf(default_gguf: Path) -> Callable[[Path], Path]:
    def write(path: Path) -> Path:
        shutil.copyfile(default_gguf, path)
        return path

    return write


# Names deliberately misleading: detection must look at the content.
FILES = {
    "gguf": ("weights.bin", "gguf", ""),
    "safetensors": ("model.pt", "safetensors", ""),
    "pytorch-zip": ("model.safetensors", "pytorch", "zip"),
    "pytorch-legacy": ("model.gguf", "pytorch", "legacy"),
    "onnx": ("model.npz", "onnx", ""),
    "npz": ("weights.onnx", "mlx", "npz"),
}


def _writer(kind: str, default_gguf: Path) -> Callable[[Path], Path]:
    return {"gguf": _gguf(default_gguf), "safetensors": _safetensors_file,
            "pytorch-zip": _torch("zip"), "pytorch-legacy": _torch("legacy"), "onnx": _onnx,
            "npz": _npz}[kind]


@pytest.mark.parametrize("kind", FILES)
def test_files_are_detected_by_content_not_by_name(tmp_path: Path, default_gguf: Path,
                                                   kind: str):
    name, fmt, detail = FILES[kind]
    path = _writer(kind, default_gguf)(tmp_path / name)
    info = detect_format(path)
    assert (info.format, info.detail) == (fmt, detail)


def test_folders_are_detected(tmp_path: Path, default_gguf: Path):
    single = detect_format(_hf_folder(tmp_path / "single"))
    assert (single.format, single.detail) == ("safetensors", "")
    sharded = detect_format(_sharded(tmp_path / "sharded"))
    assert (sharded.format, sharded.detail) == ("safetensors", "2 shards")
    mlx = detect_format(_mlx_folder(tmp_path / "mlx"))
    assert (mlx.format, mlx.detail) == ("mlx", "4-bit")
    npz_dir = tmp_path / "npz"
    npz_dir.mkdir()
    _npz(npz_dir / "weights.npz")
    assert detect_format(npz_dir).format == "mlx"
    pt_dir = tmp_path / "pt"
    pt_dir.mkdir()
    (pt_dir / "config.json").write_text(json.dumps(TINY))
    _torch("zip")(pt_dir / "pytorch_model.bin")
    assert detect_format(pt_dir).format == "pytorch"
    gguf_dir = tmp_path / "gguf"
    gguf_dir.mkdir()
    _gguf(default_gguf)(gguf_dir / "a-model")
    info = detect_format(gguf_dir)
    assert (info.format, info.path) == ("gguf", gguf_dir / "a-model")


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])


def _one_line_error(path: Path, *words: str) -> str:
    with pytest.raises(LampchatError) as err:
        detect_format(path)
        # detection may accept a file whose damage is only visible when reading it
        from engine.formats.loader import load_model

        load_model(path)
    message = str(err.value)
    assert "\n" not in message and message.strip()
    assert any(w in message for w in words), message
    return message


@pytest.mark.parametrize("kind", FILES)
def test_each_damaged_file_gets_a_one_line_error(tmp_path: Path, default_gguf: Path, kind: str):
    name, _, _ = FILES[kind]
    path = _writer(kind, default_gguf)(tmp_path / name)
    _truncate(path, 0.5)
    (tmp_path / "config.json").write_text(json.dumps(TINY))  # for loaders that want one
    _one_line_error(path, "truncated", "damaged", "past the end", "runs past", "unknown")


def test_damaged_folders_get_one_line_errors(tmp_path: Path):
    sharded = _sharded(tmp_path / "sharded")
    (sharded / "model-00002-of-00002.safetensors").unlink()
    _one_line_error(sharded, "model-00002-of-00002.safetensors")

    half = _sharded(tmp_path / "half")
    _truncate(half / "model-00001-of-00002.safetensors", 0.6)
    _one_line_error(half, "truncated", "damaged")

    mlx = _mlx_folder(tmp_path / "mlx")
    (mlx / "config.json").write_text('{"quantization": {"bits": 4, ')
    _one_line_error(mlx, "config.json is damaged")

    index = _sharded(tmp_path / "index")
    (index / "model.safetensors.index.json").write_text("{not json")
    _one_line_error(index, "model.safetensors.index.json", "damaged")


def test_unknown_and_missing_models(tmp_path: Path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(UnknownFormatError, match="unknown model format"):
        detect_format(junk)
    empty = tmp_path / "empty.safetensors"
    empty.touch()
    with pytest.raises(LampchatError, match="empty"):
        detect_format(empty)
    with pytest.raises(LampchatError, match="not found"):
        detect_format(tmp_path / "nope")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "README.md").write_text("hi")
    with pytest.raises(UnknownFormatError, match="no model weights"):
        detect_format(folder)


def test_lampchat_models_shows_each_detected_format(tmp_path: Path, default_gguf: Path):
    models = tmp_path / "models"
    models.mkdir()
    for kind in FILES:  # loose files named without a telling extension
        _writer(kind, default_gguf)(models / f"{kind}.model")
    _hf_folder(models / "hf-single")
    _sharded(models / "hf-sharded")
    _mlx_folder(models / "mlx-4bit")
    _torch("zip")(models / "broken-zip.pt")
    _truncate(models / "broken-zip.pt", 0.5)
    result = run_lampchat("models", "--dir", str(models), "--json")
    assert result.returncode == 0, result.stderr
    by_path = {Path(e["path"]).name: e for e in json.loads(result.stdout)}
    expected = {f"{kind}.model": fmt for kind, (_, fmt, _) in FILES.items()}
    expected.update({"hf-single": "safetensors", "hf-sharded": "safetensors",
                     "mlx-4bit": "mlx"})
    for name, fmt in expected.items():
        assert name in by_path, (name, sorted(by_path))
        assert by_path[name]["format"] == fmt, by_path[name]
        assert not by_path[name]["error"], by_path[name]
    assert by_path["broken-zip.pt"]["error"]
    table = run_lampchat("models", "--dir", str(models))
    assert table.returncode == 0
    assert "FORMAT" in table.stdout and "error:" in table.stdout
    for name, fmt in expected.items():
        row = next(line for line in table.stdout.splitlines() if line.rstrip().endswith(name))
        assert f"  {fmt}  " in row, row
