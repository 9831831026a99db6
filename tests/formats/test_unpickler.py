"""The restricted unpickler: crafted checkpoints are refused, naming what they asked for, and
nothing they carry ever runs (each payload would create a sentinel file); damaged checkpoints
get one-line errors."""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from engine.errors import LampchatError, ModelLoadError, UnsafeCheckpointError
from engine.formats.detect import detect_format
from engine.formats.loader import load_model
from engine.formats.pytorch import read_checkpoint
from engine.formats.safe_unpickler import restricted_loads
from tests.support import torch_checkpoint as tc
from tests.support.cli import run_lampchat


def _payloads(sentinel: Path) -> dict[str, tuple[object, str]]:
    """Name -> (object whose unpickling would create `sentinel`, what the error must name)."""
    s = str(sentinel)
    os_system = tc.Reduce(tc.Global("os", "system"), (f"touch {s}",))
    return {
        "os.system": (os_system, "os.system"),
        "posix.system": (tc.Reduce(tc.Global("posix", "system"), (f"touch {s}",)),
                         "posix.system"),
        "eval": (tc.Reduce(tc.Global("builtins", "eval"), (f"open({s!r}, 'w')",)),
                 "builtins.eval"),
        "builtins.exec": (tc.Reduce(tc.Global("builtins", "exec"),
                                    (f"open({s!r}, 'w').close()",)), "builtins.exec"),
        "py2 __builtin__.eval": (tc.Reduce(tc.Global("__builtin__", "eval"),
                                           (f"open({s!r}, 'w')",)), "__builtin__.eval"),
        "subprocess": (tc.Reduce(tc.Global("subprocess", "Popen"), (["touch", s],)),
                       "subprocess.Popen"),
        "subprocess.check_call": (tc.Reduce(tc.Global("subprocess", "check_call"),
                                            (["touch", s],)), "subprocess.check_call"),
        # a nested __reduce__: an allowed OrderedDict whose value is a tensor rebuilt from a
        # storage argument that is itself a call to os.system
        "nested __reduce__": (OrderedDict(weight=tc.Reduce(
            tc.Global("torch._utils", "_rebuild_tensor_v2"),
            (os_system, 0, (2,), (1,), False, OrderedDict()))), "os.system"),
        "nested in a list": (OrderedDict(w=[1, {"x": os_system}]), "os.system"),
        "copyreg._reconstructor": (tc.Reduce(tc.Global("copyreg", "_reconstructor"),
                                             (tc.Global("os", "system"), object, None)),
                                   "copyreg._reconstructor"),
        "torch.load itself": (tc.Reduce(tc.Global("torch", "load"), (s,)), "torch.load"),
    }


PAYLOAD_NAMES = list(_payloads(Path("x")))


def test_the_payloads_are_live_under_the_standard_unpickler(tmp_path: Path):
    """Control: the crafted os.system pickle really runs code with pickle.loads."""
    sentinel = tmp_path / "pwned"
    obj, _ = _payloads(sentinel)["os.system"]
    pickle.loads(tc.dumps(obj))
    assert sentinel.exists()


@pytest.mark.parametrize("name", PAYLOAD_NAMES)
def test_crafted_pickles_are_refused_without_running_anything(tmp_path: Path, name: str):
    sentinel = tmp_path / "pwned"
    obj, refused = _payloads(sentinel)[name]
    with pytest.raises(UnsafeCheckpointError) as err:
        restricted_loads(tc.dumps(obj))
    message = str(err.value)
    assert refused in message and "refused" in message and "\n" not in message
    assert not sentinel.exists()


@pytest.mark.parametrize("layout", ["zip", "legacy"])
@pytest.mark.parametrize("name", ["os.system", "eval", "subprocess", "nested __reduce__"])
def test_malicious_checkpoints_are_refused_by_every_loading_path(
    tmp_path: Path, name: str, layout: str
):
    sentinel = tmp_path / "pwned"
    obj, refused = _payloads(sentinel)[name]
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    path = tmp_path / "model.pt"
    (tc.save_zip if layout == "zip" else tc.save_legacy)(path, obj, [])
    assert detect_format(path).format == "pytorch"  # detection reads no pickle
    for load in (read_checkpoint, load_model, lambda _: load_model(tmp_path)):
        with pytest.raises(UnsafeCheckpointError, match=refused.replace(".", r"\.")):
            load(path)
    assert not sentinel.exists()


def test_convert_refuses_a_malicious_checkpoint_with_one_line(tmp_path: Path):
    sentinel = tmp_path / "pwned"
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gpt2"}')
    obj, _ = _payloads(sentinel)["builtins.exec"]
    tc.save_zip(folder / "pytorch_model.bin", obj, [])
    out = tmp_path / "out"
    result = run_lampchat("convert", str(folder), "-o", str(out))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "builtins.exec" in errors[0]  # after the progress line
    assert not sentinel.exists() and not out.exists()


def test_build_on_a_non_allowed_object_and_odd_persistent_ids_are_refused(tmp_path: Path):
    # BUILD (which would call __setstate__) on something other than a tensor or OrderedDict
    build = pickle.PROTO + b"\x02" + pickle.EMPTY_LIST + pickle.EMPTY_DICT + pickle.BUILD + b"."
    with pytest.raises(UnsafeCheckpointError, match="sets the state of a list"):
        restricted_loads(build)
    odd = pickle.PROTO + b"\x02" + pickle.BINUNICODE + (4).to_bytes(4, "little") + b"evil" \
        + pickle.BINPERSID + b"."
    with pytest.raises(UnsafeCheckpointError, match="unexpected persistent id"):
        restricted_loads(odd)


def _checkpoint(tmp_path: Path, layout: str = "zip") -> Path:
    arrays = {"a.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
              "b.bias": np.ones(5, np.float32)}
    return tc.save_state_dict(tmp_path / f"ok-{layout}.pt", arrays, layout)


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_a_well_formed_checkpoint_loads(tmp_path: Path, layout: str):
    refs = read_checkpoint(_checkpoint(tmp_path, layout))
    np.testing.assert_array_equal(refs["a.weight"].to_numpy(),
                                  np.arange(12, dtype=np.float32).reshape(3, 4))
    np.testing.assert_array_equal(refs["b.bias"].to_numpy(), np.ones(5, np.float32))


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_truncated_checkpoints_get_clear_errors(tmp_path: Path, layout: str):
    data = _checkpoint(tmp_path, layout).read_bytes()
    for cut in sorted({10, 40, 100, len(data) // 2, len(data) - 30, len(data) - 1}):
        path = tmp_path / f"cut{cut}.pt"
        path.write_bytes(data[:cut])
        with pytest.raises(LampchatError) as err:
            read_checkpoint(detect_format(path).path)
        message = str(err.value)
        assert "\n" not in message
        assert any(w in message for w in ("truncated", "damaged", "unknown model format")), (
            cut, message)


def test_a_zip_storage_whose_size_does_not_match_is_refused(tmp_path: Path):
    storage = tc.Storage("0", np.zeros(6, np.float32), numel=12)  # claims 12, holds 6
    obj = OrderedDict(w=tc.tensor(storage, (3, 4)))
    path = tc.save_zip(tmp_path / "short.pt", obj, [storage])
    with pytest.raises(ModelLoadError, match=r"holds 24 bytes but its type and size need 48"):
        read_checkpoint(path)


def test_a_legacy_storage_whose_size_does_not_match_is_refused(tmp_path: Path):
    storage = tc.Storage("0", np.zeros(6, np.float32), numel=12)
    obj = OrderedDict(w=tc.tensor(storage, (3, 4)))
    path = tc.save_legacy(tmp_path / "short.pt", obj, [storage])
    with pytest.raises(ModelLoadError, match="holds 6 elements but the checkpoint claims 12"):
        read_checkpoint(path)


def test_a_tensor_reaching_outside_its_storage_is_refused(tmp_path: Path):
    storage = tc.Storage("0", np.zeros(6, np.float32))
    obj = OrderedDict(w=tc.tensor(storage, (3, 4)))  # needs 12 elements of 6
    path = tc.save_zip(tmp_path / "oob.pt", obj, [storage])
    with pytest.raises(ModelLoadError, match="reaches element 11 of storage '0', which holds 6"):
        read_checkpoint(path)


def test_a_storage_named_with_a_non_storage_type_is_refused(tmp_path: Path):
    storage = tc.Storage("0", np.zeros(4, np.float32), type_name="Tensor")
    obj = OrderedDict(w=tc.tensor(storage, (4,)))
    with pytest.raises(UnsafeCheckpointError, match="unknown type"):
        read_checkpoint(tc.save_zip(tmp_path / "t.pt", obj, [storage]))


def test_a_plain_pickle_is_not_taken_for_a_checkpoint(tmp_path: Path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "model.bin"
    path.write_bytes(tc.dumps(_payloads(sentinel)["os.system"][0]))
    with pytest.raises(LampchatError, match="pickle but not a PyTorch checkpoint"):
        load_model(path)
    assert not sentinel.exists()
