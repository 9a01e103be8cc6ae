"""gpuframe.dask on LocalCluster worker processes: 1, 2 and 3 workers, over ucx and over tcp.

Each cluster is started once per module (the comm backend matches the cluster's protocol: UCX
communicators share the ucx-protocol workers' UCX context; TCP ones use Dask's TCP comm). Data is
small; the answers are checked against pandas.merge without regard to row order.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import dask
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("distributed")
import dask.dataframe as dd  # noqa: E402
from distributed import Client, LocalCluster, wait  # noqa: E402

import gpuframe.dask as gdask  # noqa: E402
from gpuframe.comm import CommError, PeerClosedError  # noqa: E402
from gpuframe.dask import core as gcore  # noqa: E402
from gpuframe.dask._worker_comms import get_session  # noqa: E402
from gpuframe.ops.partition import partition_ids  # noqa: E402

from .helpers import require, same_rows  # noqa: E402
from .oracle import key_frame, merge_oracle, to_arrow  # noqa: E402

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]

# Two and three workers over ucx; one and two over tcp (three tcp peers exchange as two do, and
# test_distributed.py runs the communicators themselves at three tcp ranks; a lone worker
# exchanges with no peer, over either protocol, and test_distributed.py opens a one-rank ucx
# communicator): each cluster costs its start and its workers' first calls, a ucx one about
# twice a tcp one's CPU (13 tests on 2 workers, warm: 58 s of CPU against 27 s), and the test
# command has a time budget
CONFIGS = [("ucx", 2), ("ucx", 3), ("tcp", 1), ("tcp", 2)]


def _cluster(protocol: str, n: int) -> LocalCluster:
    if protocol == "ucx":
        pytest.importorskip("ucxx", reason="the ucx lane needs ucxx (pip install 'gpuframe[ucx]')")
        pytest.importorskip("distributed_ucxx")
    return LocalCluster(protocol=protocol, n_workers=n, threads_per_worker=1, processes=True,
                        dashboard_address=":0", worker_dashboard_address=None)


@pytest.fixture(scope="module", params=CONFIGS, ids=[f"{b}-{n}workers" for b, n in CONFIGS])
def cluster(request):
    backend, n = request.param
    with _cluster(backend, n) as c, Client(c) as client:
        yield client, backend, n


@pytest.fixture(scope="module")
def frames():
    left = key_frame(600, 11, "a")
    right = key_frame(400, 12, "b", card=60)
    return left, right


def _ddf(df: pd.DataFrame, n: int) -> dd.DataFrame:
    return dd.from_pandas(df, npartitions=n, sort=False)


def check_meta(out: dd.DataFrame, res: pd.DataFrame) -> None:
    # every partition was made to match the meta: the concatenation kept the meta dtypes
    assert list(res.columns) == list(out.columns)
    assert dict(res.dtypes) == dict(out.dtypes)


# ------------------------------------------------------------------------------ merge
@pytest.mark.parametrize("how", ["inner", "left", "right", "outer"])
def test_merge_matches_pandas(cluster, frames, how):
    client, backend, n = cluster
    left, right = frames
    nulls_equal = how == "outer"  # null keys both ways: unmatched (SQL) and matched
    stats = {}
    out = gdask.merge(_ddf(left, 3), _ddf(right, 2), on="k", how=how, nulls_equal=nulls_equal,
                      backend=backend, client=client, stats=stats)
    assert out.npartitions == n
    res = out.compute()
    check_meta(out, res)
    expect = merge_oracle(left, right, "k", how, nulls_equal)
    assert len(res) == len(expect)
    assert same_rows(to_arrow(res), to_arrow(expect))
    gdask.wait_stats(stats)
    assert len(stats["workers"]) == n and stats["exchange_s"] >= 0 and stats["merge_s"] >= 0
    if n > 1:
        assert stats["bytes_sent"] > 0


@pytest.mark.parametrize("how", ["inner", "right"])
def test_merge_with_a_hot_key_spreads_it(cluster, how):
    """A key with 60% of the left rows: its rows stay on the workers that hold them (the right
    side's one row of it goes to every worker), so with several workers no worker's output is
    above 1.5x its fair share; the answer is pandas'."""
    client, backend, n = cluster
    rng = np.random.default_rng(5)
    rows = 9_000
    k = rng.integers(0, 3_000, rows)
    k[rng.random(rows) < 0.6] = 77
    left = pd.DataFrame({"k": k, "a": rng.integers(0, 9, rows)})
    right = pd.DataFrame({"k": np.arange(0, 3_500), "b": np.arange(0, 3_500) * 3})
    stats = {}
    # lazily placed inputs may sit unevenly on the workers: the staying rows are then dealt
    # evenly (gpuframe._skew.Plan.spread)
    L, R = _ddf(left, 3), _ddf(right, 2)
    out = gdask.merge(L, R, on="k", how=how, backend=backend, client=client, stats=stats).persist()
    parts = [p.compute() for p in out.partitions]
    gdask.wait_stats(stats)
    res = pd.concat(parts, ignore_index=True)
    check_meta(out, res)
    expect = left.merge(right, on="k", how=how)
    assert same_rows(to_arrow(res), to_arrow(expect))
    if n > 1:
        assert all(w["heavy_keys"] == 1 for w in stats["workers"]), stats["workers"]
        assert max(len(p) for p in parts) <= 1.5 * len(expect) / n, [len(p) for p in parts]
    else:
        assert all("heavy_keys" not in w for w in stats["workers"])


def test_merge_left_on_right_on_and_npartitions(cluster, frames):
    client, backend, n = cluster
    left, right = frames
    out = _ddf(left, 2).gpuframe.merge(_ddf(right, 3), left_on="k", right_on="b", how="inner", npartitions=4,
                                       backend=backend, client=client)
    assert out.npartitions == 4
    res = out.compute()
    check_meta(out, res)
    expect = left.merge(right.astype({"b": "Int64"}), left_on="k", right_on="b", how="inner")
    assert same_rows(to_arrow(res), to_arrow(expect))


# ------------------------------------------------------------------------------ shuffle
@pytest.mark.parametrize("npartitions", [None, 4])
def test_shuffle_invariants(cluster, frames, npartitions):
    client, backend, n = cluster
    left, _ = frames
    ddf = _ddf(left, 3)
    out = gdask.shuffle(ddf, "k", npartitions, backend=backend, client=client)
    nparts = npartitions or n
    assert out.npartitions == nparts
    parts = dask.compute(*out.to_delayed())
    assert len(parts) == nparts
    # same dtypes as the input, nothing lost or duplicated
    res = pd.concat(parts, ignore_index=True)
    check_meta(out, res)
    assert dict(res.dtypes) == dict(ddf.dtypes)
    assert same_rows(to_arrow(res), to_arrow(left))
    # every key in exactly one partition: the one its hash names
    owner: dict = {}
    for i, part in enumerate(parts):
        for key in part["k"].astype(object).where(part["k"].notna(), None):
            assert owner.setdefault(key, i) == i
        if len(part):
            import gpuframe

            assert set(np.asarray(partition_ids(gpuframe.from_pandas(part), "k", nparts)).tolist()) == {i}


def _spill_folders(client) -> dict:
    import os

    def listing(dask_worker):
        root = os.path.join(dask_worker.local_directory, "gpuframe-spill")
        return sorted(os.listdir(root)) if os.path.isdir(root) else []

    return client.run(listing)


def test_shuffle_under_a_small_memory_budget_spills_and_loses_nothing(cluster):
    """A budget far below the data: many rounds, received rows spilled to disk and read back by
    the output tasks; every partition holds the rows of the shuffle without a budget."""
    client, backend, n = cluster
    rng = np.random.default_rng(5)
    rows = 20_000
    df = pd.DataFrame({"k": rng.integers(0, 5000, rows), "a": rng.random(rows),
                       "s": pd.array([None if i % 13 == 0 else f"v{i % 977}" for i in range(rows)], dtype=object)})
    df.loc[rng.random(rows) < 0.3, "k"] = 7          # a heavy key: one bucket gets 30% of the rows
    ddf = _ddf(df, 4)
    nparts = 2 * n + 1
    stats: dict = {}
    out = gdask.shuffle(ddf, "k", nparts, backend=backend, client=client, memory_budget="512KiB", stats=stats)
    parts = dask.compute(*out.to_delayed())
    gdask.wait_stats(stats)
    assert stats["budget"] == 512 * 1024
    assert stats["rounds"] > 3 and stats["spilled_bytes"] > 0, {k: v for k, v in stats.items() if k != "workers"}
    # no round received more than a round's share (64 KiB a round from each rank), give or take a row
    assert max(w["round_received_max"] for w in stats["workers"]) <= 64 * 1024 * 1.05
    plain_out = gdask.shuffle(ddf, "k", nparts, backend=backend, client=client, memory_budget=0)
    expect = dask.compute(*plain_out.to_delayed())
    assert [len(p) for p in parts] == [len(p) for p in expect]
    for got, exp in zip(parts, expect):
        assert same_rows(to_arrow(got), to_arrow(exp))
    assert dict(pd.concat(parts).dtypes) == dict(ddf.dtypes)
    assert not any(_spill_folders(client).values()), "spill files outlived the output tasks that read them"


def test_accessor_is_registered_through_dask_api(cluster, frames):
    client, backend, _n = cluster
    left, right = frames
    ddf = _ddf(left, 2)
    assert type(ddf.gpuframe).__name__ == "GpuframeAccessor"
    res = ddf.gpuframe.shuffle("k", backend=backend, client=client).compute()
    assert len(res) == len(left)


# ------------------------------------------------------------------------------ sessions
def test_session_is_cached_per_worker_set(cluster):
    client, backend, n = cluster
    a = get_session(client, backend)
    b = get_session(client, backend)
    assert a is b and a.size == n and a.workers == sorted(client.nthreads())


def test_workers_are_asked_of_the_scheduler(cluster, frames, monkeypatch):
    # client.scheduler_info() now and then answers with the client's periodic zero-worker
    # refresh; an operation that believed it lost every worker (a CI failure)
    client, backend, n = cluster
    left, _ = frames
    monkeypatch.setattr(client, "scheduler_info", lambda *a, **k: {"workers": {}})
    out = gdask.shuffle(_ddf(left, 3), "k", backend=backend, client=client)
    assert len(out.compute()) == len(left)


# ------------------------------------------------------------------------------ validation
@pytest.fixture(scope="module")
def tcp_client():
    with _cluster("tcp", 2) as c, Client(c) as client:
        yield client


def test_validation_happens_before_any_work(tcp_client, frames, monkeypatch):
    client = tcp_client
    left, right = frames
    L, R = _ddf(left, 2), _ddf(right, 2)
    Rs = _ddf(right.astype({"k": "string"}), 2)

    def reached_cluster(*args, **kwargs):
        raise AssertionError("an invalid request reached the cluster")

    monkeypatch.setattr(gcore, "_run", reached_cluster)
    monkeypatch.setattr(client, "persist", reached_cluster)
    before = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
    with pytest.raises(KeyError, match="no column 'nope'"):
        gdask.merge(L, R, on="nope", client=client)
    with pytest.raises(KeyError, match="no column 'x'"):
        gdask.merge(L, R, left_on="x", right_on="k", client=client)
    with pytest.raises(TypeError, match=r"cannot join left key 'k' \(int64\) with right key 'k' \(large_string\)"):
        gdask.merge(L, Rs, on="k", client=client)
    with pytest.raises(ValueError, match="how must be one of"):
        gdask.merge(L, R, on="k", how="bogus", client=client)
    with pytest.raises(ValueError, match="how='cross' takes no keys"):
        gdask.merge(L, R, on="k", how="cross", client=client)
    with pytest.raises(KeyError, match="no column named 'nope'"):
        gdask.shuffle(L, "nope", client=client)
    with pytest.raises(ValueError, match="npartitions must be a positive int or None, got 0"):
        gdask.shuffle(L, "k", 0, client=client)
    with pytest.raises(TypeError, match="ddf must be a dask.dataframe.DataFrame, got DataFrame"):
        gdask.shuffle(left, "k", client=client)
    with pytest.raises(ValueError, match="backend must be one of"):
        gdask.shuffle(L, "k", backend="mpi", client=client)
    after = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
    assert after == before


def test_tcp_workers_with_ucx_communicators(tcp_client, frames):
    require("ucx")
    left, right = frames
    res = gdask.merge(_ddf(left, 2), _ddf(right, 2), on="k", backend="ucx", client=tcp_client).compute()
    assert same_rows(to_arrow(res), to_arrow(merge_oracle(left, right, "k", "inner", False)))


# ------------------------------------------------------------------------------ failures
def _runs_a_barrier(worker) -> bool:
    return any(isinstance(k, tuple) and str(k[0]).startswith("gpuframe-barrier")
               and ts.state in ("executing", "long-running") for k, ts in worker.state.tasks.items())


def _stall_parts(stall: bool = True) -> None:
    """(On a worker) its part of the next gpuframe operations waits 60 s before it starts, unless
    the operation's barrier runs on this worker (``stall=False``: back to normal)."""
    from distributed import get_worker

    from gpuframe.dask import _lazy

    real = getattr(_lazy._op_task, "real", _lazy._op_task)
    if not stall:
        _lazy._op_task = real
        return

    def stalled(*args, **kwargs):
        if not _runs_a_barrier(get_worker()):
            time.sleep(60)
        return real(*args, **kwargs)

    stalled.real = real
    _lazy._op_task = stalled


def _kill_mid_merge(client, L, R, backend: str) -> tuple[dict, float, str]:
    """Run a merge whose victim worker's part stalls; kill the victim once the other worker is
    inside the exchange. Returns the outcome (``res`` or ``exc``, ``end``), the kill time and
    the victim's address."""
    # The part of the merge on the worker without its barrier stalls before it joins the exchange:
    # the other worker enters it and waits. Then the stalled one (the victim) dies. (A victim
    # running the barrier would take it along, and Dask would simply run it again elsewhere.)
    client.run(_stall_parts)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["res"] = gdask.merge(L, R, on="k", backend=backend, client=client, timeout=120).compute()
        except BaseException as exc:  # noqa: BLE001
            outcome["exc"] = exc
        outcome["end"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    survivor = None
    while time.monotonic() < deadline and survivor is None:
        for w, keys in client.processing().items():
            names = [str(k) for k in keys]
            if any(n.startswith("gpuframe-merge") for n in names) and any("gpuframe-barrier" in n for n in names):
                survivor = w
        time.sleep(0.1)
    if survivor is None:
        pytest.fail("no worker started its part of the merge")
    (victim,) = [w for w in client.nthreads() if w != survivor]
    pid = client.run(os.getpid, workers=[victim])[victim]
    time.sleep(1.0)  # well inside the exchange now
    client.run(_stall_parts, False)   # the victim's part sleeps already; nothing stalls after it
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    thread.join(120)
    assert not thread.is_alive(), "the merge hung after a worker died"
    return outcome, killed, victim


@pytest.mark.parametrize("backend", ["ucx", "tcp"])
def test_worker_killed_mid_merge(backend, frames):
    require(backend)
    left, right = frames
    expect = merge_oracle(left, right, "k", "inner", False)
    with _cluster(backend, 2) as c, Client(c) as client:
        survivor, _victim = sorted(client.nthreads())
        # the inputs on the survivor: its stage tasks run there, whatever the victim does (loosely:
        # Dask may recompute them elsewhere once the survivor is gone, below)
        L, R = (client.persist(_ddf(df, 4), workers=[survivor], allow_other_workers=True) for df in (left, right))
        wait([L, R])
        gdask.merge(L, R, on="k", backend=backend, client=client).compute()  # warm: session, kernels

        # A worker lost while the merge runs: the scheduler plugin restarts it, Dask recomputes
        # what was lost and the merge runs again on the workers there are; the answer is whole.
        outcome, killed, victim = _kill_mid_merge(client, L, R, backend)
        assert "exc" not in outcome, repr(outcome.get("exc"))
        assert same_rows(to_arrow(outcome["res"]), to_arrow(expect))
        restarts = [msg for _t, msg in client.get_events("gpuframe-restart")]
        assert [m["worker"] for m in restarts] == [victim], restarts

        # With no restarts allowed (GPUFRAME_DASK_RESTARTS=0), the clear error comes within
        # seconds, and the client keeps working.
        client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler.plugins["gpuframe-restart"], "limit", 0))
        client.wait_for_workers(2, timeout=60)
        outcome, killed, victim = _kill_mid_merge(client, L, R, backend)
        exc = outcome.get("exc")
        assert isinstance(exc, (PeerClosedError, gdask.WorkerLostError)), repr(exc)
        assert victim in str(exc), str(exc)
        assert isinstance(exc, CommError)
        assert outcome["end"] - killed < 30, f"the error took {outcome['end'] - killed:.1f} s (timeout is 120 s)"
        client.wait_for_workers(2, timeout=60)
        out = gdask.merge(L, R, on="k", backend=backend, client=client).persist()
        wait(out)
        assert same_rows(to_arrow(out.compute()), to_arrow(expect))

        # A worker lost *after* the operation ran takes its output partition with it: Dask
        # recomputes what that needs (the lost inputs, the stages, the operation on the workers
        # there are now) and the collection is whole again.
        holder = sorted(client.nthreads())[1]
        os.kill(client.run(os.getpid, workers=[holder])[holder], signal.SIGKILL)
        t0 = time.monotonic()
        assert same_rows(to_arrow(out.compute()), to_arrow(expect))
        assert time.monotonic() - t0 < 60


# ------------------------------------------------------------------------------ broadcast merge
def _has_barrier(collection) -> bool:
    graph = collection.__dask_graph__()
    return any("gpuframe-barrier" in str(k) for k in graph)


@pytest.mark.parametrize("how, small", [("inner", 1), ("inner", 0), ("left", 1), ("semi", 1), ("anti", 1),
                                        ("right", 0)])
def test_a_single_partition_side_is_broadcast_not_shuffled(tcp_client, frames, how, small):
    """The side in one partition goes whole to the other side's partitions: no exchange, the
    other side's partitions kept in order, the rows and dtypes of the shuffled merge."""
    client = tcp_client
    left, right = frames
    L = _ddf(left, 1 if small == 0 else 3)
    R = _ddf(right, 1 if small == 1 else 3)
    stats = {}
    out = gdask.merge(L, R, on="k", how=how, client=client, stats=stats)
    assert stats == {"broadcast": ("left", "right")[small], "workers": []}
    assert out.npartitions == 3 and not _has_barrier(out)
    shuffled = gdask.merge(L, R, on="k", how=how, client=client, broadcast=False)
    assert _has_barrier(shuffled)
    assert dict(out.dtypes) == dict(shuffled.dtypes) and list(out.columns) == list(shuffled.columns)
    res = out.compute()
    check_meta(out, res)
    expect = merge_oracle(left, right, "k", how, False)
    assert len(res) == len(expect)
    assert same_rows(to_arrow(res), to_arrow(expect))
    if how in ("semi", "anti"):      # the left rows, filtered, in the left's partition order
        assert list(res["a"]) == list(expect["a"])


def test_broadcast_true_gathers_the_side_and_false_shuffles(tcp_client, frames):
    client = tcp_client
    left, right = frames
    L, R = _ddf(left, 3), _ddf(right, 2)
    assert _has_barrier(gdask.merge(L, R, on="k", client=client))          # no single-partition side
    out = gdask.merge(L, R, on="k", how="inner", client=client, broadcast=True)
    assert out.npartitions == 3 and not _has_barrier(out)                    # R, fewer partitions, gathered
    assert same_rows(to_arrow(out.compute()), to_arrow(merge_oracle(left, right, "k", "inner", False)))
    # both sides single partitions: one task, whatever how
    both = gdask.merge(_ddf(left, 1), _ddf(right, 1), on="k", how="outer", client=client)
    assert both.npartitions == 1 and not _has_barrier(both)
    assert same_rows(to_arrow(both.compute()), to_arrow(merge_oracle(left, right, "k", "outer", False)))
    # npartitions asks for a shuffle's buckets
    assert _has_barrier(gdask.merge(L, _ddf(right, 1), on="k", client=client, npartitions=2))
    with pytest.raises(ValueError, match="broadcast=True needs how in .* got how='outer'"):
        gdask.merge(L, R, on="k", how="outer", client=client, broadcast=True)
    with pytest.raises(ValueError, match="npartitions=2 names the buckets of a shuffle"):
        gdask.merge(L, R, on="k", client=client, broadcast=True, npartitions=2)
    with pytest.raises(TypeError, match="broadcast must be True, False or None, got 'yes'"):
        gdask.merge(L, R, on="k", client=client, broadcast="yes")


def test_broadcast_merge_partitions_head_and_filters(tcp_client, frames):
    """Dask's optimiser handles the Blockwise broadcast merge like its own: one partition (the
    small side stays whole), head, a filter after it."""
    import gpuframe

    client = tcp_client
    left, right = frames
    L, R = _ddf(left, 3), _ddf(right, 1)
    joined = gdask.merge(L, R, on="k", how="left", client=client)
    part = joined.partitions[1].compute()
    expect = gpuframe.merge(gpuframe.from_pandas(L.partitions[1].compute()), gpuframe.from_pandas(right), on="k",
                            how="left").to_pandas()
    assert same_rows(to_arrow(part), to_arrow(expect))
    assert len(joined.head(5, npartitions=-1)) == 5
    full = joined.compute()
    kept = joined[joined["a"] > 0].compute()
    assert same_rows(to_arrow(kept), to_arrow(full[full["a"] > 0]))


def test_broadcast_merge_pushes_a_column_selection_into_both_sides(tcp_client, frames):
    client = tcp_client
    left, right = frames
    out = gdask.merge(_ddf(left, 3), _ddf(right, 1), on="k", client=client)[["a"]]
    expr = out.optimize().expr
    reads = [e for e in expr.walk() if type(e).__name__ == "FromPandas"]
    assert sorted(tuple(e.columns) for e in reads) == [("k",), ("k", "a")]
    expect = merge_oracle(left, right, "k", "inner", False)[["a"]]
    assert same_rows(to_arrow(out.compute()), to_arrow(expect))


def test_to_table_gathers_the_partitions_in_order(tcp_client, frames):
    import gpuframe

    client = tcp_client
    left, right = frames
    joined = gdask.merge(_ddf(left, 3), _ddf(right, 1), on="k", how="left", client=client)
    table = gdask.to_table(joined, client=client)
    assert isinstance(table, gpuframe.Table)
    expect = joined.compute()
    assert table.num_rows == len(expect)
    assert table.to_arrow().equals(gpuframe.from_pandas(expect).to_arrow())
    assert gcore._workers_are_local(client)       # a LocalCluster's: straight from the workers
    via_scheduler = gdask.to_table(joined, client=client, direct=False)
    assert via_scheduler.to_arrow().equals(table.to_arrow())
    assert _ddf(left, 2).gpuframe.to_table(client=client).to_arrow().equals(gpuframe.from_pandas(left).to_arrow())
    with pytest.raises(TypeError, match="ddf must be a dask.dataframe.DataFrame, got DataFrame"):
        gdask.to_table(left, client=client)
    with pytest.raises(TypeError, match="direct must be True, False or None, got 'yes'"):
        gdask.to_table(joined, client=client, direct="yes")
