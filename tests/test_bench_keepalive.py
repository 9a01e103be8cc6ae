"""Benchmarks measure as programs use the library: every output stays alive until a case's timing
ends (common.OutputKeeper, common.time_runs), the first timed call counts, the records say so;
and the join benchmark's cases (the new shapes included) run and agree at a tiny size."""
from __future__ import annotations

import gc
import time
import weakref

import pytest

from gpuframe.benchmarks import join as bench_join
from gpuframe.benchmarks import partition as bench_partition
from gpuframe.benchmarks import report
from gpuframe.benchmarks.common import (BenchConfig, OutputKeeper, ResultMismatch, arg_parser, config_from_args,
                                        output_bytes, time_runs)


class Out:
    """A fake output: ``nbytes`` for the keeper's estimate, weak-referenceable to see it freed."""

    def __init__(self, nbytes: int = 1000) -> None:
        self.nbytes = nbytes


class Producer:
    """``fn`` for time_runs: each call checks that every earlier output is still alive."""

    def __init__(self, nbytes: int = 1000, sleep_on: int = -1) -> None:
        self.refs: list[weakref.ref] = []
        self.nbytes = nbytes
        self.sleep_on = sleep_on
        self.alive_at_call: list[int] = []

    def alive(self) -> int:
        return sum(r() is not None for r in self.refs)

    def __call__(self) -> Out:
        # no collection needed: an Out has no reference cycle, so it is freed as soon as it is dropped
        self.alive_at_call.append(self.alive())
        if len(self.refs) == self.sleep_on:
            time.sleep(0.05)
        out = Out(self.nbytes)
        self.refs.append(weakref.ref(out))
        return out


def test_time_runs_keeps_every_output_until_the_end():
    fn = Producer()
    times, last = time_runs(fn, runs=4, warmup=2)
    assert len(times) == 4 and len(fn.refs) == 6
    # at each call every earlier output (the warm-up ones too) was still referenced
    assert fn.alive_at_call == [0, 1, 2, 3, 4, 5]
    gc.collect()
    # after the timing only the returned (last) result lives
    assert fn.alive() == 1 and fn.refs[-1]() is last


def test_time_runs_counts_the_first_call_after_warmup():
    fn = Producer(sleep_on=1)  # the call after the one warm-up call is slow
    times, _ = time_runs(fn, runs=3, warmup=1)
    assert len(times) == 3 and times[0] >= 0.05 and max(times[1:]) < 0.05


def test_time_runs_with_a_callers_keeper():
    keep = OutputKeeper(per_engine=3, budget_bytes=10**9)
    fa, fb = Producer(), Producer()
    time_runs(fa, 1, 0, keep=keep, engine="a")
    time_runs(fb, 1, 0, keep=keep, engine="b")
    for _ in range(2):  # rounds, interleaved
        time_runs(fa, 1, 0, keep=keep, engine="a", collect=False)
        time_runs(fb, 1, 0, keep=keep, engine="b", collect=False)
    gc.collect()
    assert fa.alive() == 3 and fb.alive() == 3 and keep.held == 6
    assert keep.info() == {"outputs_kept": True, "keep_alive": {
        "outputs_per_engine": 3, "kept_per_engine": 3, "output_bytes_per_round": 2000, "budget_bytes": 10**9,
        "budget_fraction_of_available": keep.fraction, "dropped_early": 0}}
    keep.release()
    assert fa.alive() == 0 and fb.alive() == 0


def test_keeper_bounds_memory_and_says_so():
    # one round of both engines = 2000 bytes, one more in flight: 5000 bytes hold 2 per engine
    keep = OutputKeeper(per_engine=4, budget_bytes=5000)
    fa, fb = Producer(1000), Producer(1000)
    for _ in range(4):
        keep.keep("a", fa())
        keep.keep("b", fb())
    gc.collect()
    assert keep.limit == 2 and fa.alive() == 2 and fb.alive() == 2
    assert fa.refs[-1]() is not None and fa.refs[-2]() is not None  # the newest are the kept ones
    info = keep.info()
    assert info["outputs_kept"] is False and info["keep_alive"]["kept_per_engine"] == 2
    assert info["keep_alive"]["dropped_early"] == 4
    assert "the last 2 of 4 per engine" in info["keep_alive"]["note"]
    # not even one round fits: outputs dropped at once, and the note says NOT kept
    keep = OutputKeeper(per_engine=2, budget_bytes=1500)
    fa = Producer(1000)
    keep.keep("a", fa())
    keep.keep("b", Out(1000))
    gc.collect()
    assert keep.limit == 0 and fa.alive() == 0 and keep.held == 0
    assert "NOT kept alive" in keep.info()["keep_alive"]["note"]
    with pytest.raises(ValueError, match="per_engine"):
        OutputKeeper(0)


def test_output_bytes_estimates():
    import numpy as np
    import pyarrow as pa
    import polars as pl

    t = pa.table({"a": np.arange(1000, dtype=np.int64)})
    assert output_bytes(t) == 8000
    assert output_bytes((t, np.zeros(10, np.int64))) == 8080
    assert output_bytes({1: pl.from_arrow(t), 2: t}) >= 16000
    assert output_bytes(t.to_pandas()) >= 8000
    assert output_bytes(None) == 0


def test_keep_fraction_option():
    args = arg_parser("x").parse_args(["--rows", "10", "--keep-fraction", "0.25"])
    assert config_from_args(args).keep_fraction == 0.25
    with pytest.raises(ValueError, match="keep-fraction"):
        config_from_args(arg_parser("x").parse_args(["--keep-fraction", "0"]))


def test_partition_keeps_outputs_alive():
    fns = [Producer(), Producer()]
    engines = [bench_partition._Engine(f"e{i}", "", fn, lambda r: None, "none") for i, fn in enumerate(fns)]
    info = bench_partition._time_interleaved(BenchConfig(rows=10, runs=3, warmup=1), "fake", engines)
    # every call saw all earlier outputs of its engine alive; released at the end
    assert all(fn.alive_at_call == [0, 1, 2, 3] for fn in fns)
    gc.collect()
    assert all(fn.alive() == 0 for fn in fns)
    assert info["outputs_kept"] is True and info["keep_alive"]["outputs_per_engine"] == 4
    assert all(len(e.times) == 3 for e in engines)


# ------------------------------------------------------------------------------ the join cases
NEW_CASES = ["int_key_string_payload", "tiny_build", "string_key_10k", "string_key_10k_payload", "left_half_miss",
             "small_1m"]


def test_join_cases_and_selection():
    names = [c.name for c in bench_join.CASES]
    assert set(NEW_CASES) <= set(names) and len(set(names)) == len(names)
    assert bench_join.case_by_name("left_half_miss").how == "left"
    cfg = BenchConfig(rows=1000, cases=["small_1m", "peak_memory"])
    assert bench_join.selected(cfg) == ["small_1m", "peak_memory"]
    with pytest.raises(ValueError, match="unknown join case"):
        bench_join.selected(BenchConfig(cases=["nope"]))
    # targets: 2x (3x inner) at the full size, 1.5x at the moderate size or from 1M probe rows
    inner, tiny = bench_join.case_by_name("inner_int64_unique"), bench_join.case_by_name("tiny_build")
    assert inner.target(100_000_000, 100_000_000) == 3.0 and tiny.target(100_000_000, 10_000_000) == 2.0
    assert tiny.target(10_000_000, 1_000_000) == 1.5 and bench_join.case_by_name("small_1m").target(
        1_000_000, 1_000_000) == 1.5
    assert tiny.target(20_000, 2_000) is None


def test_new_case_shapes():
    import pyarrow.compute as pc

    probe, build = bench_join.int_key_string_payload_case(100_000)
    assert probe.num_rows == 10_000 and build.num_rows == 10
    assert [str(t) for t in probe.schema.types] == ["int64", "string", "string", "string"]
    probe, build = bench_join.tiny_build_case(100_000)
    assert probe.num_columns == 4 and build.num_rows == 10
    probe, build = bench_join.string_key_10k_case(1_000_000)
    assert probe.num_rows == 100_000 and build.num_rows == 10_000 and str(probe.schema.field("k").type) == "string"
    probe, build = bench_join.left_half_miss_case(100_000)
    hits = pc.sum(pc.is_in(probe.column("k"), value_set=build.column("k"))).as_py()
    assert probe.num_rows == 10_000 and hits == 5_000
    probe, build = bench_join.small_1m_case(50_000_000)
    assert probe.num_rows == 1_000_000 and build.num_rows == 100_000


@pytest.fixture(scope="module")
def tiny_records():
    cfg = BenchConfig(rows=2000, runs=2, warmup=1, peers=["duckdb", "polars", "pyarrow", "pandas"])
    out = []
    for name in NEW_CASES:
        case = bench_join.case_by_name(name)
        probe, build = case.make(cfg.rows)
        out.append(bench_join.run_case(cfg, case, probe, build))
    return out


def test_new_cases_run_checked_with_outputs_kept(tiny_records):
    for rec in tiny_records:
        engines = {report.engine_label(r) for r in rec["results"]}
        assert engines == {"gpuframe", "duckdb", "polars/eager", "polars/streaming", "pyarrow", "pandas"}, rec["case"]
        assert rec["checked"] and rec["outputs_kept"] is True and rec["best_peer"]
        assert rec["keep_alive"]["outputs_per_engine"] == 3 and rec["keep_alive"]["kept_per_engine"] == 3
        assert all(len(r["times_s"]) == 2 for r in rec["results"])
    left = next(r for r in tiny_records if r["case"] == "left_half_miss")
    assert left["params"]["how"] == "left" and left["params"]["output_rows"] == left["params"]["probe_rows"]
    payload = next(r for r in tiny_records if r["case"] == "int_key_string_payload")
    assert payload["params"]["probe_columns"] == ["k", "name", "city", "comment"]


def test_a_wrong_peer_answer_is_caught(monkeypatch):
    real = bench_join.peer_runners

    def wrong(probe, build, peers, how="inner"):
        runners = real(probe, build, peers, how)
        fn = runners[("pyarrow", "")]
        runners[("pyarrow", "")] = lambda: fn().slice(1)  # one row short
        return runners

    monkeypatch.setattr(bench_join, "peer_runners", wrong)
    case = bench_join.case_by_name("left_half_miss")
    probe, build = case.make(2000)
    with pytest.raises(ResultMismatch, match="left_half_miss: pyarrow answered"):
        bench_join.run_case(BenchConfig(rows=2000, runs=1, peers=["pyarrow"]), case, probe, build)


def test_report_prints_the_new_cases(tiny_records):
    text = report.markdown({"records": tiny_records})  # the chart is tested in test_bench_report.py
    rows = {r.case: r for r in report.summary_rows(tiny_records)}
    for name in NEW_CASES:
        r = rows[name]
        assert r.best_peer and r.speedup and r.speedup > 0
        assert f"| join | {name} |" in text and report.format_speedup(r.speedup) in text
    assert "every output of every engine in 6 of 6 cases that record it" in text
    assert "Outputs kept alive: all 3 per engine (warm-up included) until the last round" in text


def test_report_flags_outputs_not_kept():
    recs = [dict(r) for r in _fake_records()]
    recs[0]["outputs_kept"] = False
    recs[0]["keep_alive"] = {"note": "fewer outputs kept: the last 1 of 6 per engine"}
    md = report.markdown({"records": recs})
    assert "| join | a (outputs not all kept) |" in md
    assert "fewer kept, for lack of memory, in join/a (see Details)" in md
    assert "Outputs **not all kept alive**: fewer outputs kept: the last 1 of 6 per engine." in md


def _fake_records():
    from gpuframe.benchmarks.common import make_record, summarize

    return [make_record("join", c, {}, [summarize("gpuframe", [0.1], 10), summarize("duckdb", [0.2], 10)],
                        checked=True, outputs_kept=True, keep_alive={"outputs_per_engine": 6})
            for c in ("a", "b")]


def test_peak_memory_records_one_case():
    recs = bench_join.peak_memory(BenchConfig(rows=2000), ["tiny_build", "left_half_miss"])
    assert [r["case"] for r in recs] == ["peak_memory/tiny_build", "peak_memory/left_half_miss"]
    for r in recs:
        m = r["results"][0]
        assert m["peak_rss"] > 0 and m["rows"] == 200 and r["params"]["process"] == "shared"
        assert r["target_ratio_max"] is None and r["target_met"] is None  # too small for the target
