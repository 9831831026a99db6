"""`lampchat bench` end to end on the real default model through real llama.cpp.

Small sizes (pp32, tg8, one repetition) keep it quick; the figures are not judged here
(speed targets are checked by the scripts under benchmarks/), only that every field is
measured, written and shown, that compare mode works and that a failing case does not stop
the run.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from engine.bench.child import RESULT_FIELDS
from engine.bench.config import BenchConfig, CaseSpec
from engine.bench.report import SCHEMA, check_report, compare_table, load_report
from engine.bench.runner import plan_cases, run_case
from engine.bench.stats import Stat
from tests.support.cli import run_lampchat

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

SMALL = ("-r", "1", "-p", "32", "-n", "8", "--ctx", "512")
STAT_FIELDS = {"mean", "stddev", "n", "values"}


@pytest.fixture(scope="session")
def bench_run(tmp_path_factory: pytest.TempPathFactory, default_gguf: Path) -> dict[str, Any]:
    """One real `lampchat bench` run: a truncated GGUF first (fails), then the default model;
    llama.cpp, and mlx (which cannot read GGUF: skipped)."""
    base = tmp_path_factory.mktemp("bench")
    broken = base / "broken.gguf"
    broken.write_bytes(default_gguf.read_bytes()[: 1 << 20])  # valid header, data cut off
    out_json, out_md = base / "run.json", base / "run.md"
    result = run_lampchat(
        "bench", "-b", "llama.cpp,mlx", "-m", str(broken), "-m", str(default_gguf), *SMALL,
        "--json", str(out_json), "--markdown", str(out_md), timeout=300,
    )
    return {"proc": result, "json": out_json, "md": out_md, "dir": base, "broken": broken}


def _ok(report: dict[str, Any]) -> dict[str, Any]:
    (ok,) = [r for r in report["results"] if r["status"] == "ok"]
    return ok


def test_bench_writes_json_with_every_field(bench_run: dict[str, Any], default_gguf: Path):
    proc = bench_run["proc"]
    assert proc.returncode == 0, proc.stderr
    report = json.loads(bench_run["json"].read_text())
    assert check_report(report) is None
    assert report["schema"] == SCHEMA
    assert report["settings"]["repetitions"] == 1 and report["settings"]["pp"] == [32]
    assert {"cpu", "cores_logical", "versions"} <= set(report["host"])
    assert [(Path(r["model_path"]).name, r["backend"], r["status"]) for r in report["results"]] \
        == [("broken.gguf", "llama.cpp", "failed"), ("broken.gguf", "mlx", "skipped"),
            (default_gguf.name, "llama.cpp", "ok"), (default_gguf.name, "mlx", "skipped")]
    for r in report["results"]:
        assert set(RESULT_FIELDS) <= set(r), set(RESULT_FIELDS) - set(r)

    ok = _ok(report)
    assert ok["backend"] == "llama.cpp" and ok["device"] == "cpu"
    assert Path(ok["model_path"]).name == default_gguf.name
    assert ok["error"] is None
    assert ok["load_s"] > 0
    for block in ("metrics", "raw"):
        assert set(ok[block]) == {"pp32", "tg8", "ttft_ms"}
        for name, stat in ok[block].items():
            assert set(stat) >= STAT_FIELDS
            assert stat["n"] == 1 and len(stat["values"]) == 1, (block, name)
            assert stat["mean"] > 0 and stat["stddev"] == 0
    # the ppN prompt is made to the exact token count with the model's own tokenizer
    assert 30 <= ok["tokens"]["pp32"] <= 32
    assert ok["tokens"]["tg8"] == 8
    assert set(ok["overhead"]) == {"pp32", "tg8", "ttft_extra_ms", "ttft_ratio"}
    assert ok["overhead"]["tg8"] == pytest.approx(
        ok["metrics"]["tg8"]["mean"] / ok["raw"]["tg8"]["mean"], rel=1e-2)
    size_mb = default_gguf.stat().st_size / 2**20
    assert ok["model_size_mb"] == pytest.approx(size_mb, rel=1e-3)
    assert ok["peak_rss_mb"] > size_mb * 0.5  # the weights are mapped and touched
    assert ok["peak_rss_ratio"] == pytest.approx(ok["peak_rss_mb"] / size_mb, rel=1e-2)
    assert ok["gpu_memory_mb"] is None  # CPU: no GPU memory to report
    assert ok["info"]["backend"] == "llama.cpp" and ok["info"]["context_length"] == 512
    assert "create_chat_completion" in ok["raw_calls"]["chat"]


def test_failing_case_is_reported_and_run_continues(bench_run: dict[str, Any]):
    proc = bench_run["proc"]
    report = json.loads(bench_run["json"].read_text())
    first, skipped, second, _ = report["results"]
    assert Path(first["model_path"]).name == "broken.gguf"
    assert skipped["error"] == "mlx does not read gguf models (readers: llama.cpp, native)"
    assert first["status"] == "failed"
    assert first["error"] and "\n" not in first["error"]
    assert first["metrics"] is None and first["duration_s"] is not None
    assert second["status"] == "ok"  # measured after the failure
    # the terminal table and the Markdown both show the failure and the measured row
    assert "broken.gguf" in proc.stdout and "failed" in proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    md = bench_run["md"].read_text()
    assert "| broken.gguf | llama.cpp | cpu |" in md and "failed:" in md
    assert "skipped: mlx does not read gguf models" in md
    assert "Lampchat overhead" in md and "pp32 t/s" in md


def test_compare_two_files(bench_run: dict[str, Any]):
    old_path = bench_run["json"]
    old = load_report(old_path)
    new = copy.deepcopy(old)
    ok = _ok(new)
    ok["metrics"]["tg8"] = Stat.of([ok["metrics"]["tg8"]["mean"] / 2]).to_dict()
    new_path = bench_run["dir"] / "slower.json"
    new_path.write_text(json.dumps(new))

    table = compare_table(old, new)
    rows = {(row[3]): row for row in table.rows if row[1] == "llama.cpp" and row[3] != "—"}
    assert rows["tg8 t/s"][6] == "0.500" and rows["tg8 t/s"][7] == "worse"
    assert rows["pp32 t/s"][6] == "1.000" and rows["pp32 t/s"][7] == "≈ (noise)"

    md_path = bench_run["dir"] / "compare.md"
    proc = run_lampchat("bench", "--compare", str(old_path), str(new_path),
                        "--markdown", str(md_path))
    assert proc.returncode == 0, proc.stderr
    assert "0.500" in proc.stdout and "worse" in proc.stdout
    assert "| tg8 t/s |" in md_path.read_text()


def test_compare_during_a_run(bench_run: dict[str, Any], default_gguf: Path):
    """`--compare OLD.json` with a run: the new figures next to the old ones, with ratios."""
    out = bench_run["dir"] / "again.json"
    proc = run_lampchat("bench", "-b", "llama.cpp", "-m", str(default_gguf), *SMALL, "--no-raw",
                        "--compare", str(bench_run["json"]), "--json", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "compare (new ÷ old)" in proc.stdout
    assert "only in old" in proc.stdout  # broken.gguf was only in the old run
    new = load_report(out)
    assert _ok(new)["raw"] is None and _ok(new)["overhead"] is None  # --no-raw
    table = compare_table(load_report(bench_run["json"]), new)
    figures = {row[3] for row in table.rows if row[0] == default_gguf.name}
    assert {"pp32 t/s", "tg8 t/s", "TTFT ms", "load s", "peak RSS MB"} <= figures


@pytest.mark.parametrize("content", ["not json", '{"schema": "other", "version": 1}',
                                     '{"schema": "lampchat-bench", "version": 1, '
                                     '"results": [{"backend": "x"}]}'])
def test_compare_rejects_bad_files(tmp_path: Path, content: str):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    proc = run_lampchat("bench", "--compare", str(bad), str(bad))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert str(bad) in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert bad.read_text() == content  # never rewritten


def test_bad_options_give_one_line_errors(tmp_path: Path):
    for args in (["-r", "0"], ["-p", "abc"], ["-b", "nope"], ["-n", "8", "-p", "900", "--ctx",
                                                                  "512"],
                 ["--json", str(tmp_path / "missing-dir" / "x.json")]):
        proc = run_lampchat("bench", *args)
        assert proc.returncode != 0, args
        assert "Traceback" not in proc.stderr, args
        assert proc.stderr.strip(), args


def test_a_crashing_or_hanging_child_is_a_failed_case(tmp_path: Path, default_gguf: Path):
    """The runner itself: a case whose process runs past the timeout is killed and reported."""
    config = BenchConfig(models=[str(default_gguf)], backends=["llama.cpp"], devices=["cpu"],
                         repetitions=1, pp=(32,), tg=8, n_ctx=512)
    (spec,) = plan_cases(config)
    assert isinstance(spec, CaseSpec) and spec.backend == "llama.cpp"
    result = run_case(spec, timeout_s=0.5)
    assert result["status"] == "failed" and result["error"] == "timed out after 0.5 s"
    assert set(RESULT_FIELDS) <= set(result)


def test_plan_covers_every_backend_for_the_format(default_gguf: Path, tmp_path: Path):
    cases = plan_cases(BenchConfig(devices=["cpu"]))
    assert [(c.backend, c.device) for c in cases] == [("llama.cpp", "cpu"), ("native", "cpu")]
    text = tmp_path / "notes.gguf"
    text.write_text("just text")
    shutil.copyfile(default_gguf, tmp_path / "copy.gguf")
    cases = plan_cases(BenchConfig(models=[str(text), str(tmp_path / "copy.gguf")],
                                   devices=["cpu"]))
    assert cases[0].error and cases[0].backend == "auto"  # unreadable: a failed case up front
    assert [c.backend for c in cases[1:]] == ["llama.cpp", "native"]


def test_bench_remote_server(tmp_path: Path, default_gguf: Path):
    """The remote backend against llama-cpp-python's real server on loopback, with its raw
    baseline (plain httpx streaming); an unreachable server is a failed row, not a crash."""
    from tests.support.remote_servers import LlamaServer, free_port

    server = LlamaServer(default_gguf, tmp_path / "server.log", n_ctx=512)
    try:
        server.wait_ready()
        out = tmp_path / "remote.json"
        proc = run_lampchat("bench", "--base-url", server.base_url, "-r", "1", "-p", "32",
                            "-n", "4", "--ctx", "512", "--json", str(out), timeout=300)
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr
    (r,) = load_report(out)["results"]
    assert r["backend"] == "remote" and r["status"] == "ok", r["error"]
    assert r["device_used"].startswith("remote:127.0.0.1")
    assert set(r["metrics"]) == set(r["raw"]) == {"pp32", "tg4", "ttft_ms"}
    assert r["model_size_mb"] is None and r["peak_rss_ratio"] is None
    assert "httpx" in r["raw_calls"]["chat"]
    dead = f"http://127.0.0.1:{free_port()}/v1"
    proc = run_lampchat("bench", "--base-url", dead, "-r", "1", "-p", "32", "-n", "4",
                        "--ctx", "512", "--json", str(out), timeout=300)
    assert proc.returncode == 1  # nothing could be measured
    (r,) = load_report(out)["results"]
    assert r["status"] == "failed" and "127.0.0.1" in r["error"]
    assert "Traceback" not in proc.stderr


def test_all_models_from_the_catalog(tmp_path: Path, default_gguf: Path):
    """--all-models: the default model and every model under model.dirs (a damaged one is a
    failed row)."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "damaged.gguf").write_bytes(b"GGUF" + b"\0" * 12)
    config = tmp_path / "config.toml"
    config.write_text(f'[model]\ndirs = ["{models.as_posix()}"]\n')
    out = tmp_path / "all.json"
    proc = run_lampchat("bench", "--config", str(config), "--all-models", "-b", "llama.cpp",
                        "-d", "cpu", "--no-raw", "-r", "1", "-p", "32", "-n", "4", "--ctx", "512",
                        "--json", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [(Path(r["model_path"]).name, r["status"]) for r in load_report(out)["results"]]
    assert rows == [(default_gguf.name, "ok"), ("damaged.gguf", "failed")]


def test_check_targets_script(bench_run: dict[str, Any], tmp_path: Path):
    """benchmarks/check_targets.py reads a bench JSON and judges each measured case; the
    failed and skipped rows count as FAIL; a CPU case is judged on memory only (the speed
    targets are for a GPU), a GPU case on all three."""
    import json
    import subprocess
    import sys

    from tests.support.cli import REPO

    def check(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "benchmarks/check_targets.py", *args],
                              capture_output=True, text=True, cwd=REPO, timeout=60)

    proc = check(str(bench_run["json"]), "--ttft-ms", "1e9", "--decode-tps", "0",
                 "--memory-ratio", "1e9")
    assert proc.returncode == 1  # broken.gguf failed, mlx skipped
    lines = proc.stdout.splitlines()
    assert lines[-1].startswith("RESULT: FAIL (") and "memory only" in lines[-1]
    ok_lines = [line for line in lines if "SmolLM2" in line and "· llama.cpp ·" in line]
    assert [line.split()[0] for line in ok_lines] == ["N/A", "N/A", "PASS"]
    assert "not judged on the CPU" in ok_lines[1] and "tok/s" in ok_lines[1]
    assert any(line.startswith("FAIL") and "broken.gguf" in line for line in lines)
    strict = check(str(bench_run["json"]), "--memory-ratio", "0.01")
    assert any(line.startswith("FAIL") and "memory < 0.01 x size" in line
               for line in strict.stdout.splitlines())
    # the same figures as if measured on a GPU: speed is judged too
    report = json.loads(Path(bench_run["json"]).read_text())
    gpu = [dict(r, device_used="cuda:0", device="cuda", gpu_memory_mb=100.0)
           for r in report["results"] if r["status"] == "ok" and r["backend"] == "llama.cpp"]
    gpu_file = tmp_path / "gpu.json"
    gpu_file.write_text(json.dumps({**report, "results": gpu[:1]}))
    fast = check(str(gpu_file), "--ttft-ms", "1e9", "--decode-tps", "0", "--memory-ratio", "1e9")
    assert fast.returncode == 0 and fast.stdout.splitlines()[-1] == "RESULT: PASS"
    slow = check(str(gpu_file), "--decode-tps", "1e9", "--memory-ratio", "1e9")
    assert slow.returncode == 1
    assert any(line.startswith("FAIL") and "tok/s" in line for line in slow.stdout.splitlines())


def test_no_overhead_rows_for_cases_without_a_baseline_asked_for() -> None:
    """`bench --no-raw` printed an overhead table of "no raw baseline" rows; a baseline that
    was tried and failed still gets its row."""
    from engine.bench.report import overhead_table

    ok = {"status": "ok", "model": "m", "backend": "llama.cpp", "device": "cpu",
          "metrics": {"pp32": {"mean": 1.0}}}
    assert overhead_table({"results": [ok]}).rows == []
    failed = overhead_table({"results": [{**ok, "raw_error": "raw call failed"}]})
    assert len(failed.rows) == 1 and "raw call failed" in failed.rows[0][-1]
