"""Hostile files, streams and disks through the real `lampchat` command (issue 23).

Each run is a child process with bounded address space, CPU time and (where a full disk is the
point) file size, under a wall-clock timeout that fails the test (tests/support/hostile.py).
A refusal is one line on stderr with no traceback and no native abort, and no file is changed
that was not meant to be. The bombs are built here, small.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from tests.support import torch_checkpoint as tc
from tests.support.hostile import assert_refused, run_hostile
from tests.support.tiny_gguf import write_llama_gguf

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


# -- directory walks ----------------------------------------------------------------------------


def test_a_folder_of_symlink_loops_is_walked_once(tmp_path: Path, tiny_gguf: Path) -> None:
    """`a -> .` and `b -> .` made `lampchat models` walk 2^depth paths; each real folder is
    visited once, and the model in it is listed once."""
    folder = tmp_path / "models"
    (folder / "deep").mkdir(parents=True)
    os.symlink(".", folder / "a")
    os.symlink(".", folder / "b")
    os.symlink("..", folder / "deep" / "up")
    os.symlink(tiny_gguf, folder / "deep" / "tiny.gguf")
    outcome = run_hostile("models", "--dir", str(folder), "--json",
                          env={"HOME": str(tmp_path)})
    assert outcome.returncode == 0, outcome.stderr
    found = [entry for entry in json.loads(outcome.stdout) if entry["name"] == "tiny"]
    assert len(found) == 1


# -- deeply nested files ------------------------------------------------------------------------


def _deep_history(path: Path) -> Path:
    path.write_text('format = "lampchat-conversation"\nversion = 1\nid = "x"\n'
                    "junk = " + "[" * 50_000 + "]" * 50_000 + "\n")
    return path


def _deep_config_json(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    (folder / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    return folder


def _checkpoint_folder(folder: Path, obj: object, storages: list[tc.Storage]) -> Path:
    """A GPT-2 folder whose pytorch_model.bin holds `obj` (read before anything else)."""
    from tests.support.tiny_models import gpt2_config

    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(gpt2_config()))
    tc.save_zip(folder / "pytorch_model.bin", obj, storages)
    return folder


def _deep_pickle(folder: Path) -> Path:
    """{"x": [[[...]]]} 200,000 lists deep, as pickle opcodes (Python's pickler would recurse
    to write it): EMPTY_LIST n times, then APPEND n-1 times."""
    import pickle
    import zipfile

    from tests.support.tiny_models import gpt2_config

    n = 200_000
    data = (pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + pickle.SHORT_BINUNICODE + b"\x01x"
            + pickle.EMPTY_LIST * n + pickle.APPEND * (n - 1) + pickle.SETITEM + pickle.STOP)
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(gpt2_config()))
    with zipfile.ZipFile(folder / "pytorch_model.bin", "w") as zf:
        zf.writestr("archive/data.pkl", data)
        zf.writestr("archive/byteorder", "little")
    return folder


@pytest.mark.parametrize("build, said", [
    (lambda tmp: _deep_config_json(tmp / "deep-model"), "config.json"),
    (lambda tmp: _deep_pickle(tmp / "deep-pickle"), "pytorch_model.bin"),
], ids=["config-json", "pickle"])
def test_model_files_nested_far_too_deep_are_one_line(tmp_path: Path, build,
                                                      said: str) -> None:
    path = build(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    outcome = run_hostile("ask", "-m", str(path), "-n", "2", "hi",
                          env={"HOME": str(tmp_path)})
    line = assert_refused(outcome, said)
    assert "recursion" not in line.lower()  # says what is wrong with the file, not Python's
    assert all(p.read_bytes() == data for p, data in before.items())


def test_a_history_nested_far_too_deep_is_read_as_damaged(tmp_path: Path) -> None:
    """50,000-deep arrays in a history file: a damaged file like any other (one warning naming
    it; the file is never written), not "maximum recursion depth exceeded"."""
    path = _deep_history(tmp_path / "deep.toml")
    before = path.read_bytes()
    outcome = run_hostile("ask", "--load-history", str(path), "-n", "2", "hi",
                          env={"HOME": str(tmp_path)})
    assert outcome.returncode == 0 and "Traceback" not in outcome.stderr, outcome.stderr
    assert len(outcome.lines) == 1 and "deep.toml" in outcome.lines[0], outcome.stderr
    assert "nested far too deeply" in outcome.lines[0]
    assert path.read_bytes() == before


# -- crafted checkpoints, end to end ------------------------------------------------------------


def test_a_stride_zero_checkpoint_is_refused_within_its_memory(tmp_path: Path) -> None:
    """A 657-byte stride-0 tensor took 1.6 GB: refused before any of it is made, inside a
    child that may map no more than 1 GB."""
    storage = tc.Storage("0", np.ones(1, np.float32))
    huge = tc.Reduce(tc.Global("torch._utils", "_rebuild_tensor_v2"),
                     (storage, 0, (20_000, 20_000), (0, 0), False, OrderedDict()))
    folder = _checkpoint_folder(tmp_path / "stride0", {"w": huge}, [storage])
    outcome = run_hostile("ask", "-m", str(folder), "-n", "2", "hi", memory_mb=1024,
                          env={"HOME": str(tmp_path)})
    assert_refused(outcome, "more than the 1 its storage holds")


# -- standard streams and full disks ------------------------------------------------------------


def test_no_stdin_and_no_prompt_is_one_line(tmp_path: Path) -> None:
    outcome = run_hostile("ask", close_fds=(0,), env={"HOME": str(tmp_path)})
    assert_refused(outcome, "prompt")


def test_no_stdout_is_one_line(tmp_path: Path) -> None:
    outcome = run_hostile("models", close_fds=(1,), env={"HOME": str(tmp_path)})
    assert_refused(outcome, "standard output")


def test_a_full_stdout_is_one_line(tmp_path: Path) -> None:
    outcome = run_hostile("models", stdout_path="/dev/full", env={"HOME": str(tmp_path)})
    assert_refused(outcome, "standard output", "No space left")


def test_convert_onto_a_full_disk_leaves_nothing_behind(tmp_path: Path,
                                                         tiny_gguf: Path) -> None:
    """`convert` onto a full disk gave a traceback: one line, and neither the output folder
    nor its temporary folder is left."""
    out = tmp_path / "out"
    outcome = run_hostile("convert", str(tiny_gguf), "-o", str(out), file_size=64 << 10,
                          env={"HOME": str(tmp_path)})
    assert_refused(outcome, "cannot write", str(out))
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []


def test_a_history_on_a_full_disk_keeps_what_it_had(tmp_path: Path) -> None:
    """A reply that cannot be appended (the disk is full) is reported in one line, and the
    file still holds the conversation as it was, readable and continuable."""
    from app.history import Message, load_conversation_file, new_conversation
    from app.history_store import ConversationWriter

    path = tmp_path / "chat.toml"
    conv = new_conversation("")
    writer = ConversationWriter()
    writer.append(conv, Message("user", "first " * 100))
    writer.write_all(conv, path)
    before = path.read_bytes()
    outcome = run_hostile("ask", "--load-history", str(path), "--save-history", str(path),
                          "-n", "4", "x" * 2000, file_size=len(before) + 100,
                          env={"HOME": str(tmp_path)})
    assert outcome.returncode != 0 and "Traceback" not in outcome.stderr
    assert any("disk" in line for line in outcome.lines), outcome.stderr
    assert path.read_bytes() == before
    assert [m.content for m in load_conversation_file(path).messages] == ["first " * 100]


# -- config files that took minutes -------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "\n".join(f"unknown_{n} = {n}" for n in range(20_000)) + "\n",
    "[generation]\ntemperature = [" + " " * 3_000 + "\n",
], ids=["20000-unknown-keys", "open-bracket-and-spaces"])
def test_a_hostile_config_is_read_in_bounded_time_and_kept(tmp_path: Path, text: str) -> None:
    """20,000 unknown keys took 4 min 47 s (each key's line was found by scanning the file);
    a line of "[" and spaces, 14-28 s (regex backtracking)."""
    config = tmp_path / "config.toml"
    config.write_text(text)
    outcome = run_hostile("config", "set", "generation.max_tokens", "7", "--config", str(config),
                          wall_s=10, env={"HOME": str(tmp_path)})
    # at most five warnings and a line counting the rest (a line per key was 20,000 lines)
    assert "Traceback" not in outcome.stderr and len(outcome.lines) <= 6, outcome.stderr
    if outcome.returncode != 0:  # refused: the file it could not parse is left as it was
        assert config.read_text() == text


# -- side files and archives --------------------------------------------------------------------


def test_a_damaged_partial_file_leaves_its_conversation_readable(tmp_path: Path) -> None:
    """A damaged `.partial` side file made the healthy conversation beside it unloadable: it is
    ignored (with a log line), and the conversation loads and goes on."""
    from app.history import Message, load_conversation_file, new_conversation
    from app.history_store import ConversationWriter

    path = tmp_path / "chat.toml"
    conv = new_conversation("")
    writer = ConversationWriter()
    writer.append(conv, Message("user", "first"))
    writer.write_all(conv, path)
    (tmp_path / "chat.toml.partial").write_bytes(b"pid = [[[\x00\xff garbage" * 100)
    outcome = run_hostile("ask", "--load-history", str(path), "-n", "2", "second",
                          env={"HOME": str(tmp_path)})
    assert outcome.returncode == 0 and "Traceback" not in outcome.stderr, outcome.stderr
    assert load_conversation_file(path).messages[0].content == "first"


def test_an_encrypted_checkpoint_entry_is_one_line(tmp_path: Path) -> None:
    """A zip entry marked encrypted gave Python's "password required" as an unexpected error."""
    storage = tc.Storage("0", np.ones(4, np.float32))
    folder = _checkpoint_folder(tmp_path / "locked", {"w": tc.tensor(storage, (4,))}, [storage])
    archive = folder / "pytorch_model.bin"
    data = bytearray(archive.read_bytes())
    local = data.index(b"PK\x03\x04")  # the first entry (data.pkl): flag bit 0 = encrypted
    data[local + 6] |= 1
    central = data.index(b"PK\x01\x02")
    data[central + 8] |= 1
    archive.write_bytes(bytes(data))
    outcome = run_hostile("ask", "-m", str(folder), "-n", "2", "hi", env={"HOME": str(tmp_path)})
    assert_refused(outcome, "pytorch_model.bin", "encrypted")


@pytest.mark.parametrize("key, value, said", [
    ("n_head", 0, "n_head = 0 is not a plausible size or count"),
    ("n_embd", 64.5, "n_embd = 64.5 is not a whole number"),
    ("n_layer", "2", "n_layer = '2' is not a whole number"),
])
def test_a_config_size_of_zero_or_the_wrong_type_is_one_line(tmp_path: Path, key: str,
                                                             value: object, said: str) -> None:
    """A head count of 0 was a division by zero ("unexpected error: division by zero")."""
    from tokenizers import Tokenizer, models

    from tests.support.tiny_models import gpt2_config, gpt2_weights, write_folder

    folder = write_folder(tmp_path / "gpt2", gpt2_config(**{key: value}),
                          gpt2_weights(gpt2_config()))
    Tokenizer(models.WordLevel({"hi": 0, "[UNK]": 1}, unk_token="[UNK]")).save(
        str(folder / "tokenizer.json"))
    outcome = run_hostile("ask", "-m", str(folder), "--backend", "native", "-n", "2", "hi",
                          env={"HOME": str(tmp_path)})
    assert_refused(outcome, said)


def test_metadata_arrays_nested_5000_deep_are_one_line(tmp_path: Path) -> None:
    """A GGUF whose metadata array holds an array holding an array... 5,000 deep overflowed
    Python's stack while the file was read ("maximum recursion depth exceeded")."""
    import struct

    value = struct.pack("<IQ", 4, 0)  # the innermost: an empty array of uint32
    for _ in range(5_000):
        value = struct.pack("<IQ", 9, 1) + value  # an array of one array
    key = b"general.deep"
    path = tmp_path / "deep.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
                     + struct.pack("<I", 9) + value + bytes(64))
    outcome = run_hostile("ask", "-m", str(path), "-n", "2", "hi", env={"HOME": str(tmp_path)})
    assert_refused(outcome, "deep.gguf", "nested over 8 deep")
