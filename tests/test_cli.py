"""The ``gpuframe`` command: help, info, one-line errors, --debug, bench and report."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types

import pytest

from gpuframe import cli
from gpuframe.benchmarks import all as bench_all
from gpuframe.benchmarks.common import make_record, summarize


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("gpuframe: ")]


# ------------------------------------------------------------------------------ help
def test_console_script_help():
    exe = shutil.which("gpuframe") or os.path.join(os.path.dirname(sys.executable), "gpuframe")
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("usage: gpuframe")
    assert "CUDA-accelerated Arrow tables" in out
    for cmd in ("info", "bench", "demo"):
        assert f"\n    {cmd} " in out
    assert "examples:" in out and "gpuframe bench all --rows smoke --runs 1 --out results.json" in out


@pytest.mark.parametrize("argv, expect", [
    (["bench", "--help"], ["<benchmark>", "join", "partition", "shuffle", "dlpack", "all", "report", "sizes:"]),
    (["bench", "join", "--help"], ["--rows N", "--device {cpu,cuda}", "--peers LIST", "--workers N", "--runs N",
                                   "--out FILE", "--debug"]),
    (["bench", "report", "--help"], ["RESULTS.json", "--out-dir DIR"]),
    (["demo", "--help"], ["--rows N", "--workers N", "--device {cpu,cuda}", "--protocol {ucxx,tcp}"]),
    (["info", "--help"], ["--json"]),
])
def test_subcommand_help(capsys, argv, expect):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 0
    out = capsys.readouterr().out
    for text in expect:
        assert text in out, text


def test_version(capsys):
    import gpuframe

    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == f"gpuframe {gpuframe.__version__}"


# ------------------------------------------------------------------------------ usage errors: one line, exit 2
@pytest.mark.parametrize("argv, message", [
    ([], "gpuframe: error: choose a command: info, bench, demo or compile (see 'gpuframe --help')"),
    (["bench"], "gpuframe: error: choose a benchmark or 'report' (see 'gpuframe bench --help')"),
    (["frobnicate"], "gpuframe: error: argument <command>: invalid choice: 'frobnicate'"),
    (["bench", "join", "--rows", "banana"], "gpuframe: error: argument --rows: rows must be an int, a size like"),
    (["bench", "join", "--rows", "0"], "gpuframe: error: argument --rows: rows must be at least 1, got '0'"),
    (["bench", "join", "--runs", "0"], "gpuframe: error: argument --runs: --runs must be >= 1, got 0"),
    (["bench", "join", "--peers", "pandas,spark"], "gpuframe: error: argument --peers: peers must be"),
    (["bench", "join", "--device", "tpu"], "gpuframe: error: argument --device: invalid choice: 'tpu'"),
    (["bench", "report"], "gpuframe: error: the following arguments are required: RESULTS.json"),
    (["demo", "--protocol", "mpi"], "gpuframe: error: argument --protocol: invalid choice: 'mpi'"),
    (["demo", "--rows", "10"], "gpuframe: error: argument --rows: the demo needs at least 1000 rows, got '10'"),
])
def test_usage_errors_are_one_line(capsys, argv, message):
    rc, out, err = run_cli(capsys, *argv)
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(message), lines[0]
    assert "Traceback" not in err


# ------------------------------------------------------------------------------ failures: one line, exit 1; --debug
def test_failure_is_one_line_without_traceback(capsys, tmp_path):
    missing = tmp_path / "missing.json"
    rc, out, err = run_cli(capsys, "bench", "report", str(missing))
    assert rc == 1
    assert err.strip() == f"gpuframe: error: results file {str(missing)!r} does not exist"


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_prints_the_traceback(capsys, tmp_path, where):
    missing = str(tmp_path / "missing.json")
    argv = ["--debug", "bench", "report", missing] if where == "before" else ["bench", "report", missing, "--debug"]
    rc, out, err = run_cli(capsys, *argv)
    assert rc == 1
    assert "Traceback (most recent call last)" in err
    assert "load_results" in err  # the frame where it failed
    assert err.strip().splitlines()[-1] == f"gpuframe: error: results file {missing!r} does not exist"


def test_bare_key_error_is_named(capsys, monkeypatch):
    def crash(cfg):
        return [{}["engine"]]

    _fake_bench(monkeypatch, "join", crash)
    rc, out, err = run_cli(capsys, "bench", "join", "--rows", "10", "--runs", "1")
    assert rc == 1
    assert error_lines(err) == ["gpuframe: error: KeyError: 'engine' (run with --debug for the traceback)"]


def test_unexpected_exception_names_its_type(capsys, monkeypatch, tmp_path):
    def crash(cfg):
        raise ZeroDivisionError("division by zero\nmore detail")

    _fake_bench(monkeypatch, "join", crash)
    rc, out, err = run_cli(capsys, "bench", "join", "--rows", "10", "--runs", "1")
    assert rc == 1
    assert error_lines(err) == ["gpuframe: error: ZeroDivisionError: division by zero … "
                                "(run with --debug for the traceback)"]
    assert "Traceback" not in err


def test_keyboard_interrupt(capsys, monkeypatch):
    def interrupted(cfg):
        raise KeyboardInterrupt

    _fake_bench(monkeypatch, "join", interrupted)
    rc, out, err = run_cli(capsys, "bench", "join", "--rows", "10", "--runs", "1")
    assert rc == 130 and error_lines(err) == ["gpuframe: interrupted"]


def test_cuda_without_gpu_is_a_clear_error(capsys, monkeypatch):
    import gpuframe.core.device as device

    monkeypatch.setattr(device, "cuda_available", lambda: False)
    rc, out, err = run_cli(capsys, "bench", "join", "--device", "cuda", "--rows", "10")
    assert rc == 1
    assert error_lines(err) == [f"gpuframe: error: --device cuda: no CUDA GPU was found; {device.CUDA_INSTALL_HINT}"]


# ------------------------------------------------------------------------------ info
def test_info(capsys):
    import gpuframe

    rc, out, err = run_cli(capsys, "info")
    assert rc == 0, err
    assert gpuframe.__version__ in out
    assert "cpu" in out.lower()


def test_info_json(capsys):
    rc, out, err = run_cli(capsys, "info", "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert isinstance(data, dict) and data


# ------------------------------------------------------------------------------ bench with a stand-in module
def _fake_bench(monkeypatch, name: str, run) -> None:
    mod = types.ModuleType(f"gpuframe.benchmarks.{name}")
    mod.run = run
    monkeypatch.setitem(sys.modules, mod.__name__, mod)


def _fake_join(cfg):
    cfg.say("int64 keys: pandas")
    assert cfg.runs == 1 and cfg.warmup == 1 and cfg.device == "cpu" and cfg.workers == 3
    assert cfg.peers == ["pandas", "duckdb"]
    res = [summarize("gpuframe", [0.01], cfg.rows), summarize("pandas", [0.04], cfg.rows),
           summarize("duckdb", [0.02], cfg.rows)]
    return [make_record("join", f"int64 keys {cfg.rows} rows", {"rows": cfg.rows}, res, checked=True,
                        target_ratio=1.5)]


def test_bench_out_and_report(capsys, monkeypatch, tmp_path):
    _fake_bench(monkeypatch, "join", _fake_join)
    out_json = tmp_path / "res" / "join.json"
    rc, out, err = run_cli(capsys, "bench", "join", "--rows", "2k", "--runs", "1", "--workers", "3",
                           "--peers", "pandas,duckdb", "--out", str(out_json))
    assert rc == 0, err
    # live status on stderr (plain lines when not a terminal), the table on stdout
    assert "bench join (2k rows): int64 keys: pandas" in err
    assert f"results written to {out_json}" in err
    assert "| join | int64 keys 2000 rows | 10 ms | duckdb | 20 ms | 2.00× | 1.50× | yes |" in out
    doc = json.loads(out_json.read_text())
    assert doc["command"] == (f"gpuframe bench join --rows 2k --runs 1 --workers 3 --peers pandas,duckdb "
                              f"--out {out_json}")
    assert [r["case"] for r in doc["records"]] == ["int64 keys 2000 rows"]
    assert doc["skipped"] == [] and doc["errors"] == []
    assert list(doc["seconds"]) == ["join"] and doc["seconds"]["join"] >= 0

    rep = tmp_path / "rep"
    rc, out, err = run_cli(capsys, "bench", "report", str(out_json), "--out-dir", str(rep))
    assert rc == 0, err
    assert (rep / "report.md").exists() and (rep / "speedup.png").stat().st_size > 10_000
    assert "2.00×" in out and f"wrote {rep / 'report.md'} and {rep / 'speedup.png'}" in err


def test_bench_missing_module(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "gpuframe.benchmarks.shuffle", None)  # import fails like a missing file
    rc, out, err = run_cli(capsys, "bench", "shuffle", "--rows", "10")
    assert rc == 1
    assert error_lines(err)[0].startswith("gpuframe: error: benchmark 'shuffle' is not available")


def test_bench_all_skips_missing_and_reports_failures(capsys, monkeypatch, tmp_path):
    def ok(cfg):
        return _fake_join(cfg)

    def bad(cfg):
        raise AssertionError("3 rows differ")

    _fake_bench(monkeypatch, "_fake_a", ok)
    _fake_bench(monkeypatch, "_fake_c", bad)
    monkeypatch.setattr(bench_all, "BENCHMARKS", ["_fake_a", "_fake_b", "_fake_c"])
    out_json = tmp_path / "all.json"
    rc, out, err = run_cli(capsys, "bench", "all", "--rows", "10", "--runs", "1", "--workers", "3",
                           "--peers", "pandas,duckdb", "--out", str(out_json))
    assert rc == 1
    assert "done    _fake_a: 1 case(s)" in err
    assert "skipped _fake_b: module gpuframe.benchmarks._fake_b is not present" in err
    assert "FAILED  _fake_c" in err
    assert error_lines(err) == [f"gpuframe: error: 1 of 3 benchmarks failed (the other results are in {out_json}): "
                                "_fake_c: AssertionError: 3 rows differ"]
    doc = json.loads(out_json.read_text())
    assert len(doc["records"]) == 1
    assert doc["skipped"][0]["benchmark"] == "_fake_b"
    assert doc["errors"][0]["benchmark"] == "_fake_c"


def test_uninstalled_peer_is_noted(capsys, monkeypatch, tmp_path):
    from gpuframe.benchmarks import common

    real = common.peer_available
    monkeypatch.setattr(common, "peer_available", lambda p: False if p == "cudf" else real(p))
    _fake_bench(monkeypatch, "join", _fake_join)
    out_json = tmp_path / "r.json"
    rc, out, err = run_cli(capsys, "bench", "join", "--rows", "10", "--runs", "1", "--workers", "3",
                           "--peers", "pandas,cudf,duckdb", "--out", str(out_json))
    assert rc == 0, err
    assert "note: peer 'cudf' is not installed: skipped" in err
    assert json.loads(out_json.read_text())["notes"] == ["peer 'cudf' is not installed: skipped"]


# ------------------------------------------------------------------------------ a real (tiny) benchmark
def test_bench_dlpack_tiny(capsys, tmp_path):
    pytest.importorskip("torch")
    out_json = tmp_path / "dlpack.json"
    rc, out, err = run_cli(capsys, "bench", "dlpack", "--rows", "3000", "--runs", "1", "--warmup", "0",
                           "--peers", "pandas,pyarrow", "--out", str(out_json))
    assert rc == 0, err
    doc = json.loads(out_json.read_text())
    assert [r["params"]["rows"] for r in doc["records"]] == [100, 300, 3000]
    for rec in doc["records"]:
        assert rec["checked"] is True
        engines = {r["engine"]: r for r in rec["results"]}
        assert set(engines) == {"gpuframe", "pandas", "pyarrow"}
        assert engines["gpuframe"]["zero_copy"] is True
        assert engines["pandas"]["zero_copy"] is False
    rc, out, err = run_cli(capsys, "bench", "report", str(out_json))
    assert rc == 0, err
    assert (tmp_path / "report.md").exists() and (tmp_path / "speedup.png").exists()
