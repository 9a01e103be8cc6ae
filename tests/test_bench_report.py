"""The benchmark report (Markdown table + PNG chart), the results-file helpers and benchmarks/all.py."""
from __future__ import annotations

import json
import sys
import types

import pytest

from gpuframe.benchmarks import all as bench_all
from gpuframe.benchmarks import report
from gpuframe.benchmarks.common import (BenchConfig, format_rows, format_seconds, load_results, make_record,
                                        parse_peers, parse_rows, summarize, time_runs, write_results)


def _res(engine: str, median: float, variant: str = "") -> dict:
    return summarize(engine, [median * 0.9, median, median * 1.2], 1_000_000, variant)


def fixture_records() -> list[dict]:
    return [
        # gpuframe 0.1 s; best peer polars/lazy 0.25 s -> 2.5x, target 2 -> met
        make_record("join", "int64 keys 1M x 100k inner", {"rows": 1_000_000},
                    [_res("gpuframe", 0.1), _res("pandas", 0.8), _res("polars", 0.3, "eager"),
                     _res("polars", 0.25, "lazy"), _res("duckdb", 0.4)], checked=True, target_ratio=2.0),
        # gpuframe slower than duckdb: 0.5x, target 1.5 -> not met
        make_record("join", "string keys | pipes", {"rows": 1_000_000},
                    [_res("gpuframe", 0.2), _res("duckdb", 0.1), _res("pandas", 0.9)], checked=True,
                    target_ratio=1.5),
        # no target; 1000x against pandas (forces a log axis in this panel)
        make_record("dlpack", "1M rows x 4 columns", {"rows": 1_000_000},
                    [_res("gpuframe", 2e-5, "to_torch"), _res("pandas", 0.02, "to_numpy")], checked=True),
        # only gpuframe timed: no best peer, no speed-up, not in the chart
        make_record("partition", "int64 key 16 parts", {"rows": 1000}, [_res("gpuframe", 0.01)], checked=False),
    ]


@pytest.fixture
def results_file(tmp_path):
    path = tmp_path / "results.json"
    write_results(fixture_records(), str(path), command="gpuframe bench all --rows 1M",
                  skipped=[{"benchmark": "shuffle", "reason": "module gpuframe.benchmarks.shuffle is not present"}],
                  errors=[{"benchmark": "dask_merge", "error": "ResultMismatch: 3 rows differ", "traceback": ""}],
                  notes=["peer 'cudf' is not installed: skipped"], seconds={"join": 12.5, "dlpack": 0.75})
    return path


def test_summary_rows_recompute_speedups():
    rows = report.summary_rows(fixture_records())
    assert [r.benchmark for r in rows] == ["join", "join", "dlpack", "partition"]
    r0, r1, r2, r3 = rows
    assert r0.best_peer == "polars/lazy" and r0.speedup == pytest.approx(2.5) and r0.met is True
    assert r1.best_peer == "duckdb" and r1.speedup == pytest.approx(0.5) and r1.met is False
    assert r2.speedup == pytest.approx(1000) and r2.target is None and r2.met is None
    assert r3.best_peer is None and r3.speedup is None and r3.met is None and not r3.checked


def test_markdown_table(results_file):
    md = report.markdown_table(load_results(str(results_file))["records"])
    lines = md.splitlines()
    assert lines[0] == ("| benchmark | case | gpuframe median | best peer | peer median | speed-up | target | met? |")
    assert len(lines) == 2 + 4
    assert "| join | int64 keys 1M x 100k inner | 100 ms | polars/lazy | 250 ms | 2.50× | 2.00× | yes |" in lines
    # a pipe in a case name must not break the table
    assert "string keys \\| pipes" in lines[3] and "0.50×" in lines[3] and "**no**" in lines[3]
    assert "| dlpack | 1M rows x 4 columns | 20 µs | pandas/to_numpy | 20 ms | 1000× | — | — |" in lines
    assert "(unchecked)" in lines[5] and lines[5].count("—") >= 4


def test_markdown_document_sections(results_file, tmp_path):
    md_path, png_path = report.render(str(results_file), str(tmp_path / "out"))
    text = open(md_path).read()
    assert text.startswith("# gpuframe benchmark report")
    assert "command: `gpuframe bench all --rows 1M`" in text
    assert "wall time per benchmark: join 12.50 s, dlpack 750 ms (total 13.25 s)" in text
    assert "![speed-up of gpuframe against each peer](speedup.png)" in text
    assert "## Skipped benchmarks" in text and "**shuffle**: module gpuframe.benchmarks.shuffle is not present" in text
    assert "## Failed benchmarks" in text and "ResultMismatch: 3 rows differ" in text
    assert "## Notes" in text and "cudf" in text
    # per-engine details with the time relative to gpuframe
    assert "### join: int64 keys 1M x 100k inner" in text
    assert "| pandas | 800 ms | 720 ms | 960 ms | 3 | 1.25M | 8.00× |" in text


def test_chart_is_a_readable_png(results_file, tmp_path):
    import matplotlib.image as mpimg

    _, png = report.render(str(results_file), str(tmp_path))
    assert png == str(tmp_path / report.CHART_NAME)
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(png)
    h, w = img.shape[:2]
    assert w >= 1000 and h >= 380  # 11 inches wide at 110 dpi; three panels stacked


def test_chart_data_aligns_peers_per_case():
    cases, series = report.chart_data(fixture_records())
    assert [c[:2] for c in cases] == [("join", "int64 keys 1M x 100k inner"), ("join", "string keys | pipes"),
                                      ("dlpack", "1M rows x 4 columns")]
    assert [c[2] for c in cases] == [2.0, 1.5, None]
    assert set(series) == {"pandas", "polars/eager", "polars/lazy", "duckdb", "pandas/to_numpy"}
    assert all(len(v) == len(cases) for v in series.values())
    assert series["polars/lazy"] == [pytest.approx(2.5), None, None]
    assert series["duckdb"] == [pytest.approx(4.0), pytest.approx(0.5), None]


def test_no_chart_without_comparable_cases(tmp_path):
    path = tmp_path / "r.json"
    write_results([fixture_records()[3]], str(path), command="x")
    md_path, png = report.render(str(path), str(tmp_path))
    assert png is None and not (tmp_path / report.CHART_NAME).exists()
    assert "speedup.png" not in open(md_path).read()


def test_log_scale_decision():
    assert not report.use_log_scale([0.8, 1.0, 3.0])
    assert report.use_log_scale([0.5, 11.0])
    assert report.use_log_scale([100.0, 150.0])
    assert not report.use_log_scale([])


def test_load_results_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_results(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_results(str(bad))
    bad.write_text(json.dumps({"machine": {}}))
    with pytest.raises(ValueError, match="'records' list"):
        load_results(str(bad))
    bad.write_text(json.dumps({"records": [{"case": "x"}]}))
    with pytest.raises(ValueError, match=r"record 0 .* lacks \['benchmark', 'results'\]"):
        load_results(str(bad))


def test_common_helpers():
    assert parse_rows("10M") == 10_000_000 and parse_rows("2.5k") == 2500 and parse_rows("smoke") == 20_000
    assert parse_rows(7) == 7
    for bad in ("banana", "0", "-3", ""):
        with pytest.raises(ValueError, match="rows"):
            parse_rows(bad)
    assert parse_peers("pandas, Polars,pandas") == ["pandas", "polars"]
    assert parse_peers("none") == [] and parse_peers("cupy") == ["cupy"]
    with pytest.raises(ValueError, match="peers must be .* got 'pandas,spark'"):
        parse_peers("pandas,spark")
    assert format_seconds(0.0001234) == "123 µs" and format_seconds(0.0456) == "45.6 ms"
    assert format_seconds(3.2) == "3.20 s" and format_seconds(None) == "—"
    assert format_rows(20_000) == "20k" and format_rows(10_000_000) == "10M" and format_rows(1234) == "1234"
    calls = []
    times, last = time_runs(lambda: calls.append(1) or len(calls), runs=3, warmup=2)
    assert len(times) == 3 and last == 5 and len(calls) == 5
    with pytest.raises(ValueError, match="runs must be >= 1"):
        time_runs(lambda: None, runs=0)


# ------------------------------------------------------------------------------ benchmarks/all.py
def _fake_module(monkeypatch, name: str, run) -> None:
    mod = types.ModuleType(f"gpuframe.benchmarks.{name}")
    mod.run = run
    monkeypatch.setitem(sys.modules, mod.__name__, mod)


def test_run_all_collects_skips_and_errors(monkeypatch):
    seen = []

    def ok(cfg):
        cfg.say("working")
        return [make_record("fake", f"{cfg.rows} rows", {"rows": cfg.rows}, [_res("gpuframe", 0.1), _res("pandas", 0.3)],
                            checked=True)]

    def boom(cfg):
        raise RuntimeError("kernel exploded\nsecond line")

    _fake_module(monkeypatch, "_fake_ok", ok)
    _fake_module(monkeypatch, "_fake_boom", boom)
    _fake_module(monkeypatch, "_fake_bad", lambda cfg: {"not": "a list"})
    msgs = []
    cfg = BenchConfig(rows=123, runs=1, progress=msgs.append)
    out = bench_all.run_all(cfg, ["_fake_ok", "_fake_missing", "_fake_boom", "_fake_bad"],
                            on_done=lambda n, o: seen.append((n, sorted(o))))
    assert [r["case"] for r in out["records"]] == ["123 rows"]
    assert out["skipped"] == [{"benchmark": "_fake_missing",
                               "reason": "module gpuframe.benchmarks._fake_missing is not present"}]
    assert [e["benchmark"] for e in out["errors"]] == ["_fake_boom", "_fake_bad"]
    assert out["errors"][0]["error"] == "RuntimeError: kernel exploded"
    assert "Traceback" in out["errors"][0]["traceback"]
    assert "must return a list of records" in out["errors"][1]["error"]
    assert "_fake_ok: working" in msgs
    assert [n for n, _ in seen] == ["_fake_ok", "_fake_missing", "_fake_boom", "_fake_bad"]
    assert bench_all.outcome_line("x", {"skipped": "gone", "seconds": 0}) == "skipped x: gone"
    with pytest.raises(RuntimeError, match="_fake_boom"):
        monkeypatch.setattr(bench_all, "BENCHMARKS", ["_fake_ok", "_fake_boom"])
        bench_all.run(cfg)


def test_run_all_require_turns_missing_into_error():
    out = bench_all.run_all(BenchConfig(rows=10, runs=1), ["_fake_missing"], require=True)
    assert out["skipped"] == [] and "not available" in out["errors"][0]["error"]


def test_import_error_inside_a_module_is_a_failure_not_a_skip(monkeypatch, tmp_path):
    # a present module whose own dependency is missing must not be reported as "not present"
    pkg_dir = tmp_path / "pkg"
    pkg_dir.mkdir()
    (pkg_dir / "_fake_dep.py").write_text("import gpuframe_no_such_dependency\n\ndef run(cfg):\n    return []\n")
    import gpuframe.benchmarks as pkg

    monkeypatch.setattr(pkg, "__path__", [*pkg.__path__, str(pkg_dir)])
    out = bench_all.run_all(BenchConfig(rows=10, runs=1), ["_fake_dep"])
    assert out["skipped"] == []
    assert out["errors"][0]["error"].startswith("ModuleNotFoundError: No module named 'gpuframe_no_such_dependency'")


def test_records_that_are_not_timings(tmp_path):
    """A record measuring something else (compile time, memory) against its own target."""
    compile_rec = {"benchmark": "join", "case": "compile_time", "params": {"rows": 1000}, "checked": True,
                   "results": [{"engine": "gpuframe", "variant": "cold", "wall_s": 43.5},
                               {"engine": "gpuframe", "variant": "warm", "wall_s": 3.2}],
                   "target_s": 2.0, "target_met": False}
    memory_rec = {"benchmark": "join", "case": "peak_memory", "params": {}, "checked": True,
                  "results": [{"peak_rss": 389861376, "rows": 20000}], "peak_over_inputs": 1.2,
                  "target_ratio_max": 1.5, "target_met": True}
    rows = report.summary_rows([compile_rec, memory_rec])
    assert rows[0].met is False and rows[0].target_text == "target_s=2" and rows[0].speedup is None
    assert rows[1].met is True and rows[1].target_text == "target_ratio_max=1.5"
    path = tmp_path / "r.json"
    write_results([compile_rec, memory_rec], str(path), command="x")
    md_path, png = report.render(str(path), str(tmp_path))
    text = open(md_path).read()
    assert "| join | compile_time | — | — | — | — | target_s=2 | **no** |" in text
    assert "| join | peak_memory | — | — | — | — | target_ratio_max=1.5 | yes |" in text
    assert "- gpuframe/cold: `wall_s=43.5`" in text and "- result: `peak_rss=389861376`, `rows=20000`" in text
    assert "Also recorded: `peak_over_inputs=1.2`" in text
    assert png is None


def test_record_with_a_named_speedup_target():
    rec = make_record("dask_merge", "int64x2", {}, [_res("gpuframe", 0.45), _res("dask", 0.64, "p2p")], checked=True,
                      speedup_vs_p2p=1.42, target_vs_p2p=3, target_vs_p2p_met=False)
    row = report.summary_rows([rec])[0]
    assert row.speedup == pytest.approx(0.64 / 0.45) and row.met is False and row.target_text == "target_vs_p2p=3"
