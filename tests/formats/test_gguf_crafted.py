"""Crafted GGUF metadata that made llama.cpp abort the whole process (SIGABRT, gdb output on
the screen) or allocate without bound is refused first, in one line naming the key."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.support.cli import run_lampchat
from tests.support.tiny_gguf import write_llama_gguf


@pytest.mark.parametrize(("options", "said"), [
    ({"block_count": 2**31 - 1}, "llama.block_count = 2147483647 is not a plausible count"),
    ({"block_count": 3}, "llama.block_count = 3 but the file holds tensors for 1 blocks"),
    ({"rms_eps": math.nan}, "llama.attention.layer_norm_rms_epsilon is nan"),
    ({"renames": {5: "<|im_end|>"}}, "lists the token '<|im_end|>' twice"),
])
@pytest.mark.parametrize("backend", ["llama.cpp", "native"])
def test_crafted_metadata_is_one_line_and_no_abort(tmp_path: Path, options: dict, said: str,
                                                   backend: str) -> None:
    path = write_llama_gguf(tmp_path / "crafted.gguf", **options)
    result = run_lampchat("ask", "-m", str(path), "--backend", backend, "--max-tokens", "2",
                          "hi", timeout=120)
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])  # no SIGABRT
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "gdb" not in result.stderr
    listed = run_lampchat("models", "--dir", str(tmp_path), "--json")
    assert listed.returncode == 0  # the listing still works


def _safetensors(path: Path, header: bytes, data: bytes = b"") -> Path:
    import struct

    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


@pytest.mark.parametrize(("header", "said"), [
    (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),  # nesting deeper than Python's stack
    (b'{"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}}',
     "holds 0 bytes, its shape needs"),  # a product that wrapped to 0 in int64
    (b'{"w": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 16]}}', "malformed"),
])
def test_crafted_safetensors_headers_are_one_line_errors(tmp_path: Path, header: bytes,
                                                         said: str) -> None:
    from engine.errors import ModelLoadError
    from engine.formats.safetensors_io import read_header

    path = _safetensors(tmp_path / "model.safetensors", header, b"\0" * 64)
    with pytest.raises(ModelLoadError, match=said):
        read_header(path)


def test_a_safetensors_header_past_the_cap_is_refused_unread(tmp_path: Path) -> None:
    import struct

    from engine.errors import ModelLoadError
    from engine.formats.safetensors_io import MAX_HEADER, read_header

    path = tmp_path / "big.safetensors"
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", MAX_HEADER + 1))
        fh.truncate(8 + MAX_HEADER + 1)
    with pytest.raises(ModelLoadError, match="damaged or truncated"):
        read_header(path)
