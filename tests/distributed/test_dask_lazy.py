"""gpuframe.dask collections are lazy: nothing runs until compute/persist; an operation is one node
of the Dask graph (composed with Dask's own operations and with other gpuframe ones, computed
once); a column selection after it is pushed below it; the inputs and outputs it keeps on the
workers are dropped once Dask is done with them.

(Every operation's answers on 1-3 workers over UCX and TCP: test_dask.py and test_dask_ops.py,
which compute these same lazy collections.)
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("distributed")
import dask.dataframe as dd  # noqa: E402
from distributed import Client, LocalCluster, wait  # noqa: E402

import gpuframe.dask as gdask  # noqa: E402
from gpuframe.dask import _lazy  # noqa: E402

from .helpers import same_rows  # noqa: E402
from .oracle import to_arrow  # noqa: E402

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def client():
    with LocalCluster(protocol="tcp", n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      worker_dashboard_address=None) as c, Client(c) as client:
        yield client


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(3)
    left = pd.DataFrame({"k": rng.integers(0, 50, 700), "a": rng.random(700), "b": rng.integers(0, 4, 700),
                         "s": [f"x{i % 9}" for i in range(700)]})
    right = pd.DataFrame({"k": np.arange(60), "c": rng.random(60), "b": rng.integers(0, 4, 60)})
    return left, right


def _ddf(df: pd.DataFrame, n: int) -> dd.DataFrame:
    return dd.from_pandas(df, npartitions=n, sort=False)


def _runs(client: Client, op_id: str) -> int:
    """How many times the operation ``op_id`` ran (its barrier logs one statistics event a run)."""
    return sum(1 for _t, msg in client.get_events(_lazy.STATS_TOPIC) if msg["op_id"] == op_id)


def _op_ids(collection) -> list[str]:
    return [e.operand("params")["op_id"] for e in collection.expr.walk() if isinstance(e, _lazy.GpuframeOp)]


def _ops_in(collection) -> list:
    return [e for e in collection.expr.optimize().walk() if isinstance(e, _lazy.GpuframeOp)]


def _store_sizes(client: Client) -> dict:
    return client.run(lambda: (len(_lazy._STAGED), len(_lazy._OUTPUTS)))


def _wait_stores_empty(client: Client) -> None:
    deadline = time.monotonic() + 10
    while any(any(v) for v in _store_sizes(client).values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(any(v) for v in _store_sizes(client).values()), _store_sizes(client)


def test_nothing_runs_before_compute(client, frames):
    left, right = frames
    L, R = _ddf(left, 3), _ddf(right, 2)
    events = len(client.get_events(_lazy.STATS_TOPIC))
    tasks = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
    built = [gdask.merge(L, R, on="k"), gdask.shuffle(L, "k"), gdask.sort(L, "a"), gdask.unique(L, ["b"]),
             gdask.union(L[["k", "b"]], R[["k", "b"]]), L.gpuframe.groupby("b").agg(t=("a", "sum")),
             gdask.merge(L[["k"]], R[["c"]], how="cross")]
    assert all(isinstance(c, dd.DataFrame) for c in built)
    assert client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == tasks
    assert len(client.get_events(_lazy.STATS_TOPIC)) == events
    # ... and each of them runs once when computed
    for c in built:
        c.compute()
    for c in built:
        (op_id,) = _op_ids(c)
        assert _runs(client, op_id) == 1


def test_composes_with_dask_and_runs_once(client, frames):
    left, right = frames
    joined = gdask.merge(_ddf(left, 3), _ddf(right, 2), on="k")
    totals = joined.groupby("b_x").a.sum()            # Dask's own groupby on gpuframe's merge
    got = totals.compute().sort_index()
    want = left.merge(right, on="k").groupby("b_x").a.sum().sort_index()
    pd.testing.assert_series_equal(got, want, check_names=False)
    (op_id,) = _op_ids(joined)
    assert _runs(client, op_id) == 1


def test_gpuframe_ops_chain_in_one_graph(client, frames):
    left, right = frames
    joined = gdask.merge(_ddf(left, 3), _ddf(right, 2), on="k")
    agg = gdask.groupby_agg(joined, "b_x", {"n": ("a", "size"), "top": ("c", "max")})
    ordered = gdask.sort(agg, "top", descending=True)
    got = ordered.compute().reset_index(drop=True)
    want = left.merge(right, on="k").groupby("b_x").agg(n=("a", "size"), top=("c", "max")).reset_index()
    assert list(got["top"]) == sorted(want["top"], reverse=True)          # sorted (ties in any order)
    assert sorted(map(tuple, got[["b_x", "n", "top"]].values.tolist())) == \
        sorted(map(tuple, want[["b_x", "n", "top"]].values.tolist()))
    assert all(_runs(client, i) == 1 for i in _op_ids(ordered)) and len(_op_ids(ordered)) == 3


def test_persist_runs_once(client, frames):
    left, right = frames
    lazy = gdask.merge(_ddf(left, 3), _ddf(right, 2), on="k")
    (op_id,) = _op_ids(lazy)
    out = lazy.persist()
    wait(out)
    a, b = out.compute(), out.compute()
    assert len(a) == len(b) == len(left.merge(right, on="k"))
    assert _runs(client, op_id) == 1
    _wait_stores_empty(client)


@pytest.mark.parametrize("columns,expect_left,expect_right", [
    (["a", "c"], {"k", "a"}, {"k", "c"}),                 # keys stay, the rest goes
    (["b_x"], {"k", "b"}, {"k", "b"}),                    # a suffixed name keeps both sides' column
    (["c"], {"k"}, {"k", "c"}),
])
def test_column_selection_is_pushed_below_the_merge(client, frames, columns, expect_left, expect_right):
    left, right = frames
    out = gdask.merge(_ddf(left, 3), _ddf(right, 2), on="k")[columns]
    (op,) = _ops_in(out)
    lcols, rcols = (set(f.columns) for f in op._frames)
    assert (lcols, rcols) == (expect_left, expect_right)
    got = out.compute()
    assert list(got.columns) == columns
    assert same_rows(to_arrow(got), to_arrow(left.merge(right, on="k")[columns]))


def test_column_selection_below_other_ops(client, frames):
    left, right = frames
    L = _ddf(left, 3)
    sort = gdask.sort(L, "a")[["s"]]
    (op,) = _ops_in(sort)
    assert set(op._frames[0].columns) == {"a", "s"}
    assert list(sort.compute()["s"]) == list(left.sort_values("a", kind="stable")["s"])
    uniq = gdask.unique(L, ["b"])[["b"]]
    assert set(_ops_in(uniq)[0]._frames[0].columns) == {"b"}
    assert sorted(uniq.compute()["b"]) == sorted(left["b"].unique())
    # every column makes a distinct row: nothing may go below a distinct union
    union = gdask.union(L[["k", "b"]], L[["k", "b"]])[["k"]]
    assert set(_ops_in(union)[0]._frames[0].columns) == {"k", "b"}
    assert len(union.compute()) == len(left[["k", "b"]].drop_duplicates())
    grouped = L.gpuframe.groupby("b").agg(t=("a", "sum"))
    assert set(_ops_in(grouped)[0]._frames[0].columns) == {"a", "b"}     # only what it aggregates
    # a selection of some aggregates: the others are not computed, their columns not moved
    several = L.gpuframe.groupby("b").agg(t=("a", "sum"), n=("s", "nunique"), m=("k", "max"))[["b", "m"]]
    (op,) = _ops_in(several)
    assert set(op._frames[0].columns) == {"b", "k"} and list(op.operand("params")["args"]["aggs"]) == ["m"]
    got = several.compute().sort_values("b").reset_index(drop=True)
    want = left.groupby("b").agg(m=("k", "max")).reset_index()
    assert got["m"].tolist() == want["m"].tolist() and got["b"].tolist() == want["b"].tolist()


def test_only_the_wanted_partitions_are_kept_and_nothing_stays(client, frames):
    left, right = frames
    out = gdask.merge(_ddf(left, 3), _ddf(right, 2), on="k", npartitions=4)
    parts = [out.partitions[i].compute() for i in range(4)]
    whole = pd.concat(parts, ignore_index=True)
    assert same_rows(to_arrow(whole), to_arrow(left.merge(right, on="k")))
    _wait_stores_empty(client)        # the 3 partitions nobody asked for each time were never kept


def test_more_workers_than_output_partitions(client, frames):
    """Both workers' pieces of a one-partition result end in that partition (one is fetched)."""
    left, right = frames
    L, R = _ddf(left[["k", "a"]].iloc[:40], 2), _ddf(right[["c"]].iloc[:7], 2)
    out = gdask.merge(L, R, how="cross", npartitions=1)
    got = out.compute()
    assert len(got) == 40 * 7
    assert same_rows(to_arrow(got), to_arrow(left[["k", "a"]].iloc[:40].merge(right[["c"]].iloc[:7], how="cross")))
    _wait_stores_empty(client)


def test_stats_arrive_when_the_operation_runs(client, frames):
    left, right = frames
    stats: dict = {}
    out = gdask.merge(_ddf(left, 3), _ddf(right, 2), on="k", stats=stats)
    assert stats == {}
    out.compute()
    gdask.wait_stats(stats)
    assert len(stats["workers"]) == 2 and stats["operation_s"] > 0 and stats["merge_s"] >= 0
    with pytest.raises(TypeError, match="stats must be a dict or None, got list"):
        gdask.merge(_ddf(left, 3), _ddf(right, 2), on="k", stats=[])


def test_local_schedulers_get_a_clear_error(client, frames):
    left, right = frames
    out = gdask.merge(_ddf(left, 2), _ddf(right, 2), on="k")
    with pytest.raises(RuntimeError, match="run on a distributed cluster"):
        out.compute(scheduler="sync")


def test_runs_on_different_workers_give_partitions_that_fit_together():
    """A sort's partitions are its exact even cuts, whatever the placement and the number of
    workers: partition 0 computed on 2 workers and partition 1 on 3 fit together (unique's and
    groupby's too: they hash rows to partitions, not to workers). And a
    partition still held from an earlier run while the operation runs again (a future, or a
    release that has not reached the scheduler yet) is recomputed by that run (the scheduler
    plugin releases it): mixing runs of a sort lost 13 of 300 rows once in CI."""
    rng = np.random.default_rng(5)
    df = pd.DataFrame({"a": rng.integers(0, 40, 300).astype("float64"), "i": np.arange(300)})
    want = df.sort_values("a", kind="stable").reset_index(drop=True)
    with LocalCluster(protocol="tcp", n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      worker_dashboard_address=None) as cluster, Client(cluster) as cl:
        out = gdask.sort(_ddf(df, 4), "a", client=cl)
        p0 = out.partitions[0].compute()              # a run on 2 workers
        uniq = gdask.unique(_ddf(df, 4), ["a"], client=cl)
        sums = _ddf(df, 4).gpuframe.groupby("a").agg(t=("i", "sum"))
        firsts = [uniq.partitions[0].compute(), sums.partitions[0].compute()]
        kept = cl.futures_of(out.persist())[1]        # another: its partition 1 stays in memory
        assert len(kept.result()) == 150
        cluster.scale(3)
        cl.wait_for_workers(3, timeout=60)
        got = out.compute().reset_index(drop=True)    # a run on 3 workers, wanting partition 0
        pd.testing.assert_frame_equal(got, want)
        story = cl.run_on_scheduler(lambda dask_scheduler: [list(t[:3]) for t in dask_scheduler.story(kept.key)])
        assert [kept.key, "memory", "released"] in story   # recomputed by the new run
        pd.testing.assert_frame_equal(kept.result().reset_index(drop=True), want.iloc[150:].reset_index(drop=True))
        del kept
        p1 = out.partitions[1].compute()              # a run on 3 workers
        pd.testing.assert_frame_equal(pd.concat([p0, p1], ignore_index=True), want)
        # the hash-placed operations hash to partitions, not workers: the same on 2 and 3
        u = pd.concat([firsts[0], uniq.partitions[1].compute()], ignore_index=True)
        assert sorted(u["a"]) == sorted(df["a"].unique())
        g = pd.concat([firsts[1], sums.partitions[1].compute()]).sort_values("a").reset_index(drop=True)
        expect = df.groupby("a", as_index=False).agg(t=("i", "sum"))
        assert g["a"].tolist() == expect["a"].tolist() and g["t"].tolist() == expect["t"].tolist()
