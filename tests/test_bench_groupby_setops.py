"""The groupby and set-operation benchmarks run at the smoke size, every peer's answer checked,
and write results files of the common structure (one record per case, outputs kept alive)."""
from __future__ import annotations

import json

import pytest

from gpuframe.benchmarks import common
from gpuframe.benchmarks import groupby as bench_groupby
from gpuframe.benchmarks import setops as bench_setops

pytest.importorskip("polars")
pytest.importorskip("duckdb")

ENGINES = {"gpuframe", "duckdb", "polars"}
VARIANTS = {("polars", "eager"), ("polars", "lazy streaming")}


def _check_doc(doc: dict, benchmark: str, cases: tuple) -> None:
    assert set(doc) >= {"machine", "created", "command", "records"}
    assert [r["case"] for r in doc["records"]] == list(cases)
    for rec in doc["records"]:
        assert rec["benchmark"] == benchmark and rec["checked"] is True
        assert rec["outputs_kept"] is True and rec["keep_alive"]["kept_per_engine"] == 2
        assert rec["target_speedup"] is None  # no target at the smoke size
        assert {r["engine"] for r in rec["results"]} == ENGINES
        assert VARIANTS <= {(r["engine"], r["variant"]) for r in rec["results"]}
        for r in rec["results"]:
            assert len(r["times_s"]) == 1 and r["median_s"] > 0 and r["ratio_vs_gpuframe"] > 0
        assert rec["results"][0]["engine"] == "gpuframe" and rec["results"][0]["ratio_vs_gpuframe"] == 1.0
        assert rec["speedup_vs_best_peer"] > 0 and rec["best_peer"].split("/")[0] in ENGINES - {"gpuframe"}
        rss = rec["gpuframe_peak_rss"]
        assert rss["peak_rss"] >= rss["rss_before"] > 0
        assert rec["params"]["duckdb_sql"].startswith("SELECT")
        assert "commit" in rec["code"]


def test_groupby_smoke(tmp_path):
    out = tmp_path / "groupby.json"
    # two questions (the bench-smoke CI lane runs them all)
    bench_groupby.main(["--rows", "smoke", "--runs", "1", "--cases", "q8", "--out", str(out)])
    doc = json.loads(out.read_text())
    _check_doc(doc, "groupby", ("q8",))
    q8 = doc["records"][-1]
    assert q8["params"]["by"] == ["id1", "id2", "id3", "id4", "id5", "id6"]
    assert q8["params"]["rows"] == common.SIZES["smoke"] // 10
    assert 0 < q8["params"]["groups"] <= q8["params"]["rows"]


def test_setops_smoke(tmp_path):
    out = tmp_path / "setops.json"
    cases = ("int/unique", "int/unique_subset", "int/intersect")
    bench_setops.main(["--rows", "smoke", "--runs", "1", "--cases", ",".join(cases), "--out", str(out)])
    doc = json.loads(out.read_text())
    _check_doc(doc, "setops", cases)
    by_case = {r["case"]: r["params"] for r in doc["records"]}
    assert by_case["int/unique"]["rows_a"] == common.SIZES["smoke"] // 10
    # duplicates present, about half shared: every op's answer is smaller than its input
    assert 0 < by_case["int/unique_subset"]["output_rows"] < by_case["int/unique"]["output_rows"] < 2000
    assert 0 < by_case["int/intersect"]["output_rows"] < by_case["int/unique"]["output_rows"]


def test_unknown_case_is_an_error():
    with pytest.raises(ValueError, match="q9"):
        bench_groupby.main(["--rows", "smoke", "--cases", "q9"])
    with pytest.raises(ValueError, match="int/nope"):
        bench_setops.main(["--rows", "smoke", "--cases", "int/nope"])


def test_registered():
    from gpuframe import cli

    assert {"groupby", "setops"} <= set(common.BENCHMARKS)
    assert cli.BENCH_MODULES["groupby"] == "groupby" and cli.BENCH_MODULES["setops"] == "setops"
