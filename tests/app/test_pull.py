"""`lampchat pull` and `lampchat rm` against a hub on loopback, with the real `huggingface_hub`
client (`HF_ENDPOINT`): choosing a quantization, resuming, gated and missing repos, disk space,
checksums, and the model in the cache (and the picker) at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.hub_pull import PullError, hub_api, plan_pull, pull
from tests.support.cli import run_lampchat
from tests.support.fake_hub import FakeHub, HubRepo

TOKEN = "hf_secretTOKEN1234567890"


@pytest.fixture(scope="module")
def model_bytes(default_gguf: Path) -> bytes:
    return default_gguf.read_bytes()


@pytest.fixture
def hub(model_bytes: bytes):
    with FakeHub() as hub:
        hub.repos["org/smol-GGUF"] = HubRepo({
            "smol.Q4_K_M.gguf": model_bytes, "smol.Q8_0.gguf": model_bytes[:4096] + b"8" * 9000,
            "README.md": b"# smol"})
        hub.repos["org/two-GGUF"] = HubRepo({"two.Q5_K_S.gguf": b"GGUF" + b"5" * 5000,
                                             "two.Q8_0.gguf": b"GGUF" + b"8" * 8000})
        hub.repos["org/gated-GGUF"] = HubRepo({"gated.Q4_K_M.gguf": model_bytes},
                                              gated_token=TOKEN)
        hub.repos["org/bad-GGUF"] = HubRepo({"bad.Q4_K_M.gguf": model_bytes[:50_000]},
                                            corrupt={"bad.Q4_K_M.gguf"})
        hub.repos["org/smol-hf"] = HubRepo({
            "config.json": b"{}", "tokenizer.json": b"{}", "model.safetensors": b"x" * 100,
            "pytorch_model.bin": b"y" * 100, "model.onnx": b"z", "README.md": b"r"})
        yield hub


def _env(hub: FakeHub, home: Path, **extra: str) -> dict[str, str]:
    return {"HF_ENDPOINT": hub.endpoint, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
            "HF_HUB_DISABLE_TELEMETRY": "1", **extra}


def _cache(home: Path) -> Path:
    return home / ".cache" / "huggingface" / "hub"


def test_pull_takes_q4_k_m_shows_progress_and_the_model_answers(hub: FakeHub, tmp_path: Path,
                                                                model_bytes: bytes) -> None:
    env = _env(hub, tmp_path)
    result = run_lampchat("pull", "org/smol-GGUF", env=env)
    assert result.returncode == 0, result.stderr
    assert "pulled org/smol-GGUF:Q4_K_M" in result.stdout
    assert "pulling org/smol-GGUF:Q4_K_M: 100%" in result.stderr  # progress, speed and ETA
    assert "/s, ETA " in result.stderr
    file = next(_cache(tmp_path).glob("models--org--smol-GGUF/snapshots/*/smol.Q4_K_M.gguf"))
    assert file.is_symlink() and file.read_bytes() == model_bytes  # the hub cache's layout
    from huggingface_hub import hf_hub_download  # the hub client itself finds it offline

    assert Path(hf_hub_download("org/smol-GGUF", "smol.Q4_K_M.gguf", cache_dir=_cache(tmp_path),
                                local_files_only=True)) == file
    listed = {e["name"]: e for e in json.loads(run_lampchat("models", "--json", env=env).stdout)}
    assert listed["org/smol-GGUF"]["source"] == "huggingface"
    reply = run_lampchat("ask", "-m", "org/smol-GGUF:Q4_K_M", "--max-tokens", "4", "--json",
                         "Hi", env=env)
    assert json.loads(reply.stdout)["model"] == "org/smol-GGUF", reply.stderr
    again = run_lampchat("pull", "org/smol-GGUF:Q4_K_M", env=env)  # nothing to download
    assert again.returncode == 0 and "smol.Q4_K_M.gguf" in again.stdout
    assert sum(r.method == "GET" and r.path.endswith(".gguf") for r in hub.requests) == 1


def test_no_default_quant_lists_the_choice(hub: FakeHub, tmp_path: Path) -> None:
    result = run_lampchat("pull", "org/two-GGUF", env=_env(hub, tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "lampchat: error: org/two-GGUF holds several GGUF files; pick one with "
        "org/two-GGUF:QUANT: Q5_K_S (5.0 kB), Q8_0 (8.0 kB)"]
    listing = run_lampchat("pull", "org/two-GGUF", "--list", env=_env(hub, tmp_path))
    assert listing.stdout.strip() == "Q5_K_S (5.0 kB), Q8_0 (8.0 kB)"
    chosen = run_lampchat("pull", "org/two-GGUF:q8_0", env=_env(hub, tmp_path))
    assert chosen.returncode == 0, chosen.stderr
    assert "pulled org/two-GGUF:Q8_0" in chosen.stdout
    by_file = run_lampchat("pull", "org/two-GGUF/two.Q5_K_S.gguf", env=_env(hub, tmp_path))
    assert by_file.returncode == 0 and "two.Q5_K_S.gguf" in by_file.stdout


def test_an_interrupted_pull_resumes_where_it_stopped(hub: FakeHub, tmp_path: Path,
                                                      model_bytes: bytes) -> None:
    hub.cut_after, hub.cuts_left = 3_000_000, 1  # the server drops the connection halfway
    first = run_lampchat("pull", "org/smol-GGUF", env=_env(hub, tmp_path))
    assert first.returncode == 1 and "Traceback" not in first.stderr
    assert "stopped at 3.0 MB of 98.4 MB" in first.stderr and "pull again to resume" in first.stderr
    partial = next(_cache(tmp_path).glob("models--org--smol-GGUF/blobs/*.lampchat-partial"))
    kept = partial.stat().st_size
    assert kept == 3_000_000  # every byte that arrived
    hub.requests.clear()
    second = run_lampchat("pull", "org/smol-GGUF", env=_env(hub, tmp_path))
    assert second.returncode == 0, second.stderr
    ranges = [r.range for r in hub.requests if r.method == "GET" and r.path.endswith(".gguf")]
    assert ranges == [f"bytes={kept}-"]
    file = next(_cache(tmp_path).glob("models--org--smol-GGUF/snapshots/*/smol.Q4_K_M.gguf"))
    assert file.read_bytes() == model_bytes and not partial.exists()


def test_missing_and_gated_repos_and_the_token_never_shown(hub: FakeHub, tmp_path: Path) -> None:
    missing = run_lampchat("pull", "org/nothing", env=_env(hub, tmp_path))
    assert missing.stderr.strip() == ("lampchat: error: org/nothing was not found on the hub "
                                      "(or it is private: set HF_TOKEN)")
    gated = run_lampchat("pull", "org/gated-GGUF", env=_env(hub, tmp_path))
    assert gated.returncode == 1
    assert gated.stderr.strip() == ("lampchat: error: org/gated-GGUF is gated: accept its terms "
                                    "on the hub and set HF_TOKEN to a token that may read it")
    wrong = run_lampchat("pull", "org/gated-GGUF", env=_env(hub, tmp_path, HF_TOKEN="hf_wrong"))
    assert wrong.returncode == 1 and "hf_wrong" not in wrong.stderr + wrong.stdout
    right = run_lampchat("pull", "org/gated-GGUF",
                         env=_env(hub, tmp_path, HF_TOKEN=TOKEN, LAMPCHAT_LOG_LEVEL="DEBUG"))
    assert right.returncode == 0, right.stderr
    assert TOKEN not in right.stdout + right.stderr
    log = tmp_path.parent / "home" / "lampchat.log"
    assert not log.exists() or TOKEN not in log.read_text(errors="replace")
    assert any(r.token == TOKEN for r in hub.requests if r.path.endswith(".gguf"))


def test_a_checksum_mismatch_discards_the_download(hub: FakeHub, tmp_path: Path) -> None:
    result = run_lampchat("pull", "org/bad-GGUF", env=_env(hub, tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "lampchat: error: bad.Q4_K_M.gguf does not match the hub's checksum (sha256); the "
        "download was discarded, pull again")
    blobs = _cache(tmp_path) / "models--org--bad-GGUF" / "blobs"
    assert not any(blobs.iterdir())


def test_too_little_disk_space_is_refused_before_downloading(hub: FakeHub, tmp_path: Path,
                                                            monkeypatch) -> None:
    import shutil

    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    api = hub_api(hub.endpoint)
    plan = plan_pull("org/smol-GGUF", api)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=10_000_000))
    with pytest.raises(PullError, match=r"not enough free disk space .* needs 98.4 MB, 10.0 MB"):
        pull(plan, cache_dir=tmp_path / "cache", api=api)
    assert not any(r.method == "GET" and r.path.endswith(".gguf") for r in hub.requests)


def test_a_safetensors_repo_fetches_the_folder_files_only(hub: FakeHub, tmp_path: Path) -> None:
    plan = plan_pull("org/smol-hf", hub_api(hub.endpoint))
    assert [f.name for f in plan.files] == ["config.json", "model.safetensors", "tokenizer.json"]


def test_rm_removes_a_pulled_model_after_asking(hub: FakeHub, tmp_path: Path) -> None:
    env = _env(hub, tmp_path)
    assert run_lampchat("pull", "org/two-GGUF:Q8_0", env=env).returncode == 0
    assert run_lampchat("pull", "org/two-GGUF:Q5_K_S", env=env).returncode == 0
    names = {e["name"] for e in json.loads(run_lampchat("models", "--json", env=env).stdout)}
    assert {"org/two-GGUF:Q8_0", "org/two-GGUF:Q5_K_S"} <= names
    asked = run_lampchat("rm", "org/two-GGUF:Q8_0", env=env)  # stdin is no terminal
    assert asked.returncode == 1 and "Pass --yes" in asked.stderr
    removed = run_lampchat("rm", "org/two-GGUF:Q8_0", "--yes", env=env)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.startswith("removed org/two-GGUF:Q8_0 (8.0 kB freed)")
    names = {e["name"] for e in json.loads(run_lampchat("models", "--json", env=env).stdout)}
    assert "org/two-GGUF" in names and not any("Q8_0" in n for n in names)  # the other stays
    bundled = run_lampchat("rm", "SmolLM2-135M-Instruct", "--yes", env=env)
    assert bundled.returncode == 1 and "is not in the Hugging Face cache" in bundled.stderr
