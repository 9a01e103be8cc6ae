"""``gpuframe demo``: data generation, features, cleanup, no silent fallback, and a tiny full run."""
from __future__ import annotations

import io
import os
import sys
import types

import numpy as np
import pyarrow.parquet as pq
import pytest

from gpuframe import demo


def test_generate_writes_consistent_parquet(tmp_path):
    data = demo.generate(str(tmp_path), 4000, partitions=3, seed=1)
    files = sorted(os.listdir(data.events))
    assert files == ["events-000.parquet", "events-001.parquet", "events-002.parquet"]
    events = pq.read_table(data.events)
    users = pq.read_table(data.users)
    items = pq.read_table(data.items)
    assert events.num_rows == data.rows == 4000
    assert users.num_rows == data.n_users == 200 and items.num_rows == data.n_items == 100
    assert events.column_names == ["event_id", "user_id", "item_id", "ts", "dwell_s", "clicked"]
    assert str(events.schema.field("ts").type) == "timestamp[ms]"
    assert users.column_names == ["user_id", "age", "country"]
    assert items.column_names == ["item_id", "category", "price"]
    # keys are unique in the dimension tables and every event refers to an existing user and item
    assert len(set(users.column("user_id").to_pylist())) == users.num_rows
    assert len(set(items.column("item_id").to_pylist())) == items.num_rows
    assert set(events.column("user_id").to_pylist()) <= set(users.column("user_id").to_pylist())
    assert set(events.column("item_id").to_pylist()) <= set(items.column("item_id").to_pylist())
    assert sorted(events.column("event_id").to_pylist()) == list(range(4000))
    rate = np.mean(events.column("clicked").to_numpy(zero_copy_only=False))
    assert 0.15 < rate < 0.85
    assert set(users.column("country").to_pylist()) <= set(demo.COUNTRIES)
    assert data.nbytes > 0


def test_generate_validates_input(tmp_path):
    with pytest.raises(ValueError, match="rows must be an int >= 100, got 5"):
        demo.generate(str(tmp_path), 5)
    with pytest.raises(ValueError, match="partitions must be a positive int, got 0"):
        demo.generate(str(tmp_path), 1000, partitions=0)


def test_codes_and_features(tmp_path):
    data = demo.generate(str(tmp_path), 2000, partitions=1)
    users, items = demo.dimension_codes(pq.read_table(data.users), pq.read_table(data.items))
    assert "country" not in users.column_names and "category" not in items.column_names
    raw = pq.read_table(data.users).column("country").to_pylist()
    codes = users.column("country_code").to_pylist()
    assert [demo.COUNTRIES[c] for c in codes] == raw
    with pytest.raises(ValueError, match="'XX' is not in the vocabulary"):
        demo.encode_codes(["US", "XX"], demo.COUNTRIES)

    rng = np.random.default_rng(0)
    n = 1000
    cols = {"dwell_s": rng.lognormal(2, 1, n).astype(np.float32), "age": rng.integers(16, 80, n).astype(np.int16),
            "price": rng.gamma(2, 10, n) + 0.01, "ts": rng.integers(0, 7 * 86_400_000, n).astype(np.int64),
            "country_code": rng.integers(0, 20, n), "category_code": rng.integers(0, 30, n),
            "clicked": rng.integers(0, 2, n).astype(np.uint8)}
    feats = demo.build_features(cols)
    for name in demo.NUMERIC_FEATURES:
        assert feats[name].dtype == np.float32
        assert abs(float(feats[name].mean())) < 1e-4 and abs(float(feats[name].std()) - 1) < 1e-3
    assert feats["country_code"].dtype == np.int64 and np.array_equal(feats["country_code"], cols["country_code"])
    assert feats["clicked"].dtype == np.float32 and set(np.unique(feats["clicked"])) <= {0.0, 1.0}


def test_training_loss_falls():
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    n = 20_000
    x = {k: torch.randn(n, generator=gen) for k in demo.NUMERIC_FEATURES}
    x["country_code"] = torch.randint(0, len(demo.COUNTRIES), (n,), generator=gen)
    x["category_code"] = torch.randint(0, len(demo.CATEGORIES), (n,), generator=gen)
    logit = 1.5 * x["log_dwell"] - x["log_price"]
    x[demo.LABEL] = (torch.rand(n, generator=gen) < torch.sigmoid(logit)).float()
    lines = []
    losses = demo.train(x, 30, batch=2048, log=lines.append)
    assert len(losses) == 4 and lines[0].startswith("step    0  loss")
    assert losses[-1] < losses[0] - 0.05


def test_demo_refuses_to_run_without_gpuframe_dask_merge(monkeypatch):
    monkeypatch.setitem(sys.modules, "gpuframe.dask", types.ModuleType("gpuframe.dask"))
    with pytest.raises(RuntimeError, match="gpuframe.dask.merge is not available .* does not fall back"):
        demo.run_demo(rows=2000, console=_console())


def test_demo_cleans_up_on_error(monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "_require_dask_merge", lambda: None)
    seen = []

    def boom(root, rows, partitions=8, seed=7):
        seen.append(root)
        open(os.path.join(root, "partial.parquet"), "w").close()
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "generate", boom)
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(rows=2000, tmp_root=str(tmp_path), console=_console())
    assert len(seen) == 1 and seen[0].startswith(str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_demo_rejects_bad_options():
    with pytest.raises(ValueError, match="rows must be an int >= 1000, got 10"):
        demo.run_demo(rows=10, console=_console())
    with pytest.raises(ValueError, match="workers must be a positive int, got 0"):
        demo.run_demo(rows=2000, workers=0, console=_console())


@pytest.mark.distributed
def test_cluster_falls_back_to_tcp_with_a_note(monkeypatch):
    monkeypatch.setattr(demo, "_ucxx_available", lambda: (False, "ModuleNotFoundError: No module named 'ucxx'"))
    notes = []
    with demo.local_cluster(1, "ucxx", note=notes.append) as (client, used):
        assert used == "tcp"
        assert client.scheduler.address.startswith("tcp://")
        cluster = client.cluster
    assert notes and "falling back to TCP" in notes[0] and "pip install 'gpuframe[ucx]'" in notes[0]
    assert cluster.status.name == "closed"


def _console():
    from rich.console import Console

    return Console(file=io.StringIO(), width=120, highlight=False)


@pytest.mark.distributed
@pytest.mark.timeout(180)
def test_demo_tiny_end_to_end(tmp_path, monkeypatch):
    """The whole demo at 20k events over UCX: joins, zero-copy hand-off, training, pandas check."""
    pytest.importorskip("torch")
    con = _console()
    monkeypatch.setattr(demo, "SLOW_WARM_UP_S", 0.0)     # any warm-up counts as slow: the hint shows
    summary = demo.run_demo(rows=20_000, workers=2, protocol="ucxx", steps=20, tmp_root=str(tmp_path), console=con)
    out = con.file.getvalue()
    assert "gpuframe compile --jobs join-inner,partition" in out
    assert summary["zero_copy"] is True
    assert summary["protocol"] in ("ucxx", "tcp")
    assert summary["losses"][-1] < summary["losses"][0]
    assert "gpuframe's features equal pandas'" in out
    assert "time per stage" in out and "read -> tensors" in out
    for stage in ("generate data", "start cluster", "warm up (imports, JIT, connect)",
                  "read + join + collect to client (one Dask graph)", "features", "hand-off to PyTorch",
                  "train (20 steps)"):
        assert stage in summary["timings"]
    assert "join" in summary["pandas_timings"]
    # the same pipeline with gpuframe in one process, checked against pandas too
    assert "gpuframe's features (one process) equal pandas' too" in out
    assert set(summary["single_process_timings"]) >= {"warm up (imports, JIT)", "read Parquet", "join", "features",
                                                      "hand-off to PyTorch"}
    assert "gpuframe, one process" in out and out.count("read -> join -> features -> tensors:") == 2
    assert summary["data_dir"] is None
    assert os.listdir(tmp_path) == []  # the temporary folder is gone
