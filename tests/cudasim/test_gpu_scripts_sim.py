"""The GPU machine's scripts (``ci/gpu_check.sh``) run here on the simulator, on tiny data: the
figures (NumPy in place of CuPy: the same gpuframe calls, references and answer checks) and a
few kernel-check cases. Only a GPU gives the numbers; this keeps the code paths working."""
from __future__ import annotations

import json

import pytest

from gpuframe.benchmarks import gpu_figures, gpu_kernel_check
from gpuframe.core.device import cudasim_enabled

pytestmark = pytest.mark.skipif(not cudasim_enabled(), reason="needs NUMBA_ENABLE_CUDASIM=1")


def test_figures_on_the_simulator(tmp_path, capsys):
    rc = gpu_figures.main(["--out", str(tmp_path), "--scale", "1e-9", "--simulator", "--runs", "1", "--warmup", "0",
                           "--only", "copy,join_unique,hash_partition,to_torch,outer_nullable"])
    doc = json.loads((tmp_path / "summary.json").read_text())
    status = {f["figure"]: (f["status"], f["error"]) for f in doc["figures"]}
    assert rc == 0, status
    assert status["to_torch"][0] == "unmeasured"
    assert {k: v[0] for k, v in status.items() if k != "to_torch"} == dict.fromkeys(
        ["copy", "join_unique", "hash_partition", "outer_nullable"], "ok")
    ops = [op for f in doc["figures"] for op in f["ops"]]
    assert all(op["checked"] for op in ops if op["label"].startswith(("join", "hash", "outer")))
    assert all(op["host"]["bytes"] <= gpu_figures.O1_BYTES for op in ops if op["host"] is not None)
    text = (tmp_path / "summary.txt").read_text()
    assert "CUDA SIMULATOR" in text and text in capsys.readouterr().out


def test_groupby_and_sort_figures_on_the_simulator(tmp_path, capsys):
    # the sort's 8 radix passes (full-range keys) are most of this test's time on the simulator
    rc = gpu_figures.main(["--out", str(tmp_path), "--scale", "1e-9", "--simulator", "--runs", "1", "--warmup", "0",
                           "--only", "copy,groupby_sum,sort"])
    doc = json.loads((tmp_path / "summary.json").read_text())
    status = {f["figure"]: (f["status"], f["error"]) for f in doc["figures"]}
    assert rc == 0 and {k: v[0] for k, v in status.items()} == dict.fromkeys(["copy", "groupby_sum", "sort"], "ok"), \
        status
    figs = {f["figure"]: f for f in doc["figures"]}
    sizes = gpu_figures.figure_sizes(1e-9)
    (gb,) = figs["groupby_sum"]["ops"]
    assert gb["checked"] and gb["tuples"] == sizes["groupby_rows"] and 1 <= gb["output_rows"] <= sizes["groupby_groups"]
    assert gb["bytes_moved"] == 16 * sizes["groupby_rows"] and gb["pct_copy"] is not None and gb["vs_ref"] is not None
    idx, full = figs["sort"]["ops"]
    assert idx["label"].startswith("sort_indices") and full["label"].startswith("sort ")
    assert idx["checked"] and full["checked"] and idx["same_as_ref"] is True and idx["ties"] > 0
    assert idx["bytes_moved"] == 16 * sizes["sort_rows"] and full["bytes_moved"] == 32 * sizes["sort_rows"]
    ops = [gb, idx, full]
    assert all(op["host"]["bytes"] <= gpu_figures.O1_BYTES for op in ops)
    host_rows = [t for f in doc["figures"] for t in f["targets"] if t.get("kind") == "host_o1"]
    assert len(host_rows) == 3 and {t["verdict"] for t in host_rows} == {"pass"}
    text = (tmp_path / "summary.txt").read_text()
    assert "groupby-sum" in text and "sort_indices" in text and text in capsys.readouterr().out


def test_kernel_check_cases_on_the_simulator(tmp_path):
    out = tmp_path / "kc.json"
    rc = gpu_kernel_check.main(["--out", str(out), "--cases",
                                "hashing/i64,gather/take_slice,merged_key/string/outer,group/union,select/cross"])
    doc = json.loads(out.read_text())
    assert rc == 0, doc
    assert [r["status"] for r in doc["records"]] == ["ok"] * 5
