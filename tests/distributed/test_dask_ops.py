"""gpuframe.dask table operations (unique, union, intersect, difference, groupby_agg, sort, cross
merge) on LocalCluster worker processes: 1 and 2 workers over tcp, 3 over ucx.

Each answer is checked against the local gpuframe function on the concatenated input partitions:
as a multiset of rows where the order is free, row for row for ``sort``. The inputs have null and
string keys, duplicates, and empty partitions (some workers hold nothing of one side).
"""
from __future__ import annotations

import math

import dask
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

pytest.importorskip("distributed")
import dask.dataframe as dd  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

import gpuframe  # noqa: E402
import gpuframe.dask as gdask  # noqa: E402

from .helpers import plain, row_multiset, same_rows  # noqa: E402

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]

# One worker is covered over tcp only (a lone UCX worker exchanges with itself, as a tcp one does),
# and three over ucx only: each cluster costs ~10 s of start-up and first-call compilation on a
# small machine, and the whole test command has a time budget (test_dask.py runs merge and
# shuffle on the other combinations). Fewest workers first: the first cluster to run an
# operation compiles its kernels in each worker process at once (numba's cache is written by
# whichever finishes), so three workers first compiled each of them three times on two cores
# (test_groupby_agg's first case took 173 s that way from a cold cache, 13 s warm).
CONFIGS = [("tcp", 1), ("tcp", 2), ("ucx", 3)]
# Every variant of every operation runs on these; the other clusters run one case of each op.
FULL = {("ucx", 3), ("tcp", 2)}


def _variant(cluster) -> None:
    _client, backend, n = cluster
    if (backend, n) not in FULL:
        pytest.skip(f"the variants run on {sorted(FULL)}; one case of each op runs here")


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


def _frame(n: int, seed: int, *, card: int = 12) -> pd.DataFrame:
    """Duplicated int keys with nulls, string keys with nulls, values with nulls and ties."""
    rng = np.random.default_rng(seed)
    k = pd.array(rng.integers(0, card, n), dtype="Int64")
    k[rng.random(n) < 0.1] = pd.NA
    s = pd.Series([f"s{v}" for v in rng.integers(0, 5, n)], dtype=object)
    s[rng.random(n) < 0.1] = None
    v = pd.array(rng.integers(-50, 50, n), dtype="Int64")
    v[rng.random(n) < 0.1] = pd.NA
    return pd.DataFrame({"k": k, "s": s, "v": v, "x": rng.integers(0, 3, n).astype("float64")})


def _pieces(df: pd.DataFrame, sizes: list[int]) -> list[pd.DataFrame]:
    bounds = np.cumsum([0] + sizes)
    assert bounds[-1] == len(df)
    return [df.iloc[a:b].reset_index(drop=True) for a, b in zip(bounds[:-1], bounds[1:])]


def _ddf(pieces: list[pd.DataFrame]) -> dd.DataFrame:
    """A collection of exactly these partitions (empty ones included)."""
    return dd.from_delayed([dask.delayed(p) for p in pieces], meta=pieces[0].iloc[:0], verify_meta=False)


@pytest.fixture(scope="module")
def data():
    left = _frame(300, 1)
    right = _frame(200, 2, card=8)
    lp = _pieces(left, [0, 120, 0, 100, 80])         # empty partitions first and in the middle
    rp = _pieces(right, [90, 0, 110])
    return left, right, lp, rp


def _local(df: pd.DataFrame) -> gpuframe.Table:
    return gpuframe.from_pandas(df.reset_index(drop=True))


def _arrow(res: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(res.reset_index(drop=True), preserve_index=False)


def _rows(tbl: pa.Table) -> list[tuple]:
    cols = [plain(tbl.column(i)).to_pylist() for i in range(tbl.num_columns)]
    return list(zip(*cols)) if cols else []


def _close(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (a != a and b != b) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def _check(out: dd.DataFrame, expect: gpuframe.Table, *, ordered: bool = False) -> pd.DataFrame:
    res = out.compute()
    assert list(res.columns) == list(out.columns) == expect.column_names
    assert dict(res.dtypes) == dict(out.dtypes)       # every partition made to match the meta
    got, want = _arrow(res), expect.to_arrow()
    assert got.num_rows == want.num_rows
    a, b = (_rows(got), _rows(want)) if ordered else (row_multiset(got), row_multiset(want))
    bad = [(r, q) for r, q in zip(a, b) if not all(_close(x, y) for x, y in zip(r, q))]
    assert not bad, f"{len(bad)} rows differ, e.g. {bad[:3]}"
    return res


# ------------------------------------------------------------------------------ set operations
@pytest.mark.parametrize("distinct", [True, False])
def test_union(cluster, data, distinct):
    client, backend, n = cluster
    if not distinct:
        _variant(cluster)
    left, right, lp, rp = data
    stats: dict = {}
    out = gdask.union(_ddf(lp), _ddf(rp), distinct=distinct, client=client, backend=backend, stats=stats)
    assert out.npartitions == n
    _check(out, gpuframe.union(_local(left), _local(right), distinct=distinct))
    assert len(gdask.wait_stats(stats)["workers"]) == n


def test_union_promotes_types_and_nullability(cluster):
    client, backend, n = cluster
    _variant(cluster)
    left = pd.DataFrame({"k": np.arange(6, dtype="int32") % 4, "f": np.arange(6, dtype="float32")})
    right = pd.DataFrame({"f": np.array([1.0, 7.5, 2.0]), "k": pd.array([1, None, 9], dtype="Int64")})
    out = gdask.union(_ddf(_pieces(left, [2, 0, 4])), _ddf([right]), client=client, backend=backend)
    res = _check(out, gpuframe.union(_local(left), _local(right)))
    assert str(res.dtypes["k"]) == "Int64" and str(res.dtypes["f"]) == "float64"


@pytest.mark.parametrize("op", ["intersect", "difference"])
def test_intersect_difference(cluster, data, op):
    client, backend, n = cluster
    left, right, lp, rp = data
    cols = ["k", "s"]       # few distinct rows: both answers are non-trivial
    L = _ddf([p[cols] for p in lp])
    out = getattr(L.gpuframe, op)(_ddf([p[cols] for p in rp]), client=client, backend=backend)
    expect = getattr(gpuframe, op)(_local(left[cols]), _local(right[cols]))
    assert 0 < expect.num_rows
    _check(out, expect)


@pytest.mark.parametrize("subset", [None, ["s"], ["k", "s"]])
def test_unique(cluster, data, subset):
    client, backend, n = cluster
    if subset != ["s"]:
        _variant(cluster)
    left, _, lp, _ = data
    out = gdask.unique(_ddf(lp), subset, client=client, backend=backend)
    res = out.compute()
    expect = gpuframe.unique(_local(left), subset)
    if subset is None:
        _check(out, expect)
    else:   # keep="any": which row of a group is kept is free; the subset's values are not
        assert dict(res.dtypes) == dict(out.dtypes)
        assert same_rows(_arrow(res[subset]), expect.select(subset).to_arrow())


def test_set_ops_with_an_empty_side(cluster, data):
    client, backend, n = cluster
    _variant(cluster)
    left, right, lp, rp = data
    cols = ["k", "s"]
    L = _ddf([p[cols] for p in lp])
    E = _ddf([rp[0][cols].iloc[:0], rp[1][cols]])       # no rows at all
    empty = _local(left[cols]).slice(0, 0)
    _check(gdask.intersect(L, E, client=client, backend=backend), gpuframe.intersect(_local(left[cols]), empty))
    _check(gdask.difference(L, E, client=client, backend=backend), gpuframe.difference(_local(left[cols]), empty))
    _check(gdask.union(E, E, client=client, backend=backend), gpuframe.union(empty, empty))


# ------------------------------------------------------------------------------ groupby
AGGS = {"n": ("v", "count"), "rows": ("v", "size"), "total": ("v", "sum"), "lo": ("v", "min"),
        "hi": ("s", "max"), "avg": ("v", "mean"), "sd": ("x", "std"), "first": ("v", "first"),
        "last": ("s", "last"), "med": ("v", "median"), "distinct": ("s", "nunique")}


@pytest.mark.parametrize("by", ["k", "s", ["k", "s"]])
def test_groupby_agg(cluster, data, by):
    client, backend, n = cluster
    if by != ["k", "s"]:
        _variant(cluster)
    left, _, lp, _ = data
    stats: dict = {}
    out = gdask.groupby_agg(_ddf(lp), by, AGGS, client=client, backend=backend, stats=stats)
    _check(out, gpuframe.groupby_agg(_local(left), by, AGGS))
    assert gdask.wait_stats(stats)["local_s"] >= 0


def test_groupby_accessor_dropna(cluster, data):
    client, backend, n = cluster
    _variant(cluster)
    left, _, lp, _ = data
    out = _ddf(lp).gpuframe.groupby("k", dropna=True, client=client, backend=backend).agg(
        total=("x", "sum"), first=("s", "first"))
    _check(out, gpuframe.groupby_agg(_local(left), "k", {"total": ("x", "sum"), "first": ("s", "first")},
                                     dropna=True))


# ------------------------------------------------------------------------------ sort
@pytest.mark.parametrize("by,descending,nulls_last", [
    ("k", False, True),                       # many ties: stable in partition order
    (["s", "v"], [True, False], False),
    ("x", True, True),
])
def test_sort_row_for_row(cluster, data, by, descending, nulls_last):
    client, backend, n = cluster
    if by != "k":
        _variant(cluster)
    left, _, lp, _ = data
    out = _ddf(lp).gpuframe.sort(by, descending=descending, nulls_last=nulls_last, client=client,
                                 backend=backend)
    assert out.npartitions == n
    parts = dask.compute(*out.to_delayed())
    assert len(parts) == n
    expect = gpuframe.sort(_local(left), by, descending=descending, nulls_last=nulls_last)
    _check(out, expect, ordered=True)


@pytest.mark.parametrize("placed", ["in_order", "reversed"])
def test_sort_and_first_last_wherever_the_partitions_lie(cluster, data, placed):
    """Partitions pinned to the workers in rank order (rank order is partition order: no hidden
    order columns are made) and in reverse (the hidden (partition, row) columns break ties):
    the same answers as the local functions on the concatenated partitions, row for row."""
    client, backend, n = cluster
    if n < 2:
        pytest.skip("one worker holds every partition in order")
    left, _, lp, _ = data
    workers = sorted(client.scheduler_info()["workers"])           # rank order
    owner = [min(i * n // len(lp), n - 1) for i in range(len(lp))]
    if placed == "reversed":
        owner = [n - 1 - r for r in owner]
    futures = [client.submit(lambda p: p, p, workers=[workers[r]], allow_other_workers=False, pure=False)
               for p, r in zip(lp, owner)]
    ddf = dd.from_delayed(futures, meta=lp[0].iloc[:0], verify_meta=False)
    stats: dict = {}
    _check(gdask.sort(ddf, "k", client=client, backend=backend, stats=stats),
           gpuframe.sort(_local(left), "k"), ordered=True)
    used = {w["order_columns"] for w in gdask.wait_stats(stats)["workers"]}
    assert used == {placed == "reversed"}
    aggs = {"first": ("v", "first"), "last": ("s", "last")}
    _check(gdask.groupby_agg(ddf, "k", aggs, client=client, backend=backend),
           gpuframe.groupby_agg(_local(left), "k", aggs))


def test_one_partition_on_many_workers(cluster, data):
    """Every worker but one holds nothing: the others still take part (empty tables)."""
    client, backend, n = cluster
    left, _, _, _ = data
    one = _ddf([left])
    _check(gdask.sort(one, ["k", "x"], descending=[False, True], client=client, backend=backend),
           gpuframe.sort(_local(left), ["k", "x"], descending=[False, True]), ordered=True)
    if (backend, n) in FULL:
        aggs = {"first": ("v", "first"), "last": ("s", "last"), "n": ("x", "size")}
        _check(gdask.groupby_agg(one, "s", aggs, client=client, backend=backend),
               gpuframe.groupby_agg(_local(left), "s", aggs))


# ------------------------------------------------------------------------------ cross
@pytest.mark.parametrize("npartitions", [None, 4])
def test_cross_merge(cluster, data, npartitions):
    client, backend, n = cluster
    if npartitions is None:
        _variant(cluster)
    left, right, lp, rp = data
    L = _ddf([p[["k", "s"]].iloc[:7] for p in lp])
    R = _ddf([p[["k", "v"]].iloc[:5] for p in rp])
    out = gdask.merge(L, R, how="cross", npartitions=npartitions, client=client, backend=backend)
    assert out.npartitions == (npartitions or n)
    lt = pd.concat([p[["k", "s"]].iloc[:7] for p in lp], ignore_index=True)
    rt = pd.concat([p[["k", "v"]].iloc[:5] for p in rp], ignore_index=True)
    _check(out, gpuframe.merge(_local(lt), _local(rt), how="cross"))


# ------------------------------------------------------------------------------ partitions
def _blocks(pieces: list[pd.DataFrame], buckets: int, offset: int, count: int) -> list[pd.DataFrame]:
    """The input partitions of each output partition: partition ``offset + i`` of ``count`` goes
    to ``(offset + i) * buckets // count``."""
    out = [[] for _ in range(buckets)]
    for i, p in enumerate(pieces):
        out[(offset + i) * buckets // count].append(p)
    return [pd.concat(ps, ignore_index=True) if ps else pieces[0].iloc[:0] for ps in out]


@pytest.mark.parametrize("op", ["sort", "union_all", "cross"])
def test_partitions_depend_on_the_inputs_alone(cluster, data, op):
    """Each output partition of the order-keeping operations is fixed by the inputs, not by which
    worker holds what (Dask may compute one partition in one run and the next in another): a
    sort's exact even cuts; union(distinct=False)'s contiguous blocks of input partitions (left's
    first); the cross merge's blocks of the larger side, each crossed with all of the other."""
    client, backend, n = cluster
    left, right, lp, rp = data
    if op == "sort":
        out = gdask.sort(_ddf(lp), "x", client=client, backend=backend)
        whole = gpuframe.sort(_local(left), "x").to_pandas()
        expect = [whole.iloc[b * 300 // n:(b + 1) * 300 // n] for b in range(n)]
    elif op == "union_all":
        rcols = [p[["v", "k"]].rename(columns={"v": "x"}) for p in rp]
        out = gdask.union(_ddf([p[["k", "x"]] for p in lp]), _ddf(rcols), distinct=False, client=client,
                          backend=backend)
        lb = _blocks([p[["k", "x"]] for p in lp], n, 0, len(lp) + len(rp))
        rb = _blocks(rcols, n, len(lp), len(lp) + len(rp))
        expect = [gpuframe.union(_local(a), _local(b), distinct=False).to_pandas() for a, b in zip(lb, rb)]
    else:
        small = [p[["v"]].iloc[:3] for p in rp]          # 6 rows against 300: the left side is cut
        out = gdask.merge(_ddf([p[["k", "s"]] for p in lp]), _ddf(small), how="cross", client=client,
                          backend=backend)
        blocks = _blocks([p[["k", "s"]] for p in lp], n, 0, len(lp))
        expect = [gpuframe.merge(_local(b), _local(pd.concat(small, ignore_index=True)), how="cross").to_pandas()
                  for b in blocks]
    parts = dask.compute(*out.to_delayed())
    assert len(parts) == len(expect) == n
    for got, want in zip(parts, expect):
        a, b = _arrow(got), pa.Table.from_pandas(want.reset_index(drop=True), preserve_index=False)
        assert a.num_rows == b.num_rows
        bad = [(r, q) for r, q in zip(_rows(a), _rows(b)) if not all(_close(x, y) for x, y in zip(r, q))]
        assert not bad, f"{len(bad)} rows differ, e.g. {bad[:3]}"


# ------------------------------------------------------------------------------ validation
class _Untouchable:
    """A client that fails any use: the arguments are checked before the client is touched."""

    def __getattr__(self, name):
        raise AssertionError(f"an invalid request reached the cluster (client.{name})")


def test_validation_happens_before_any_work(data):
    client = _Untouchable()
    left, right, lp, rp = data
    L, R = _ddf(lp), _ddf(rp)

    with pytest.raises(TypeError, match="ddf must be a dask.dataframe.DataFrame, got DataFrame"):
        gdask.unique(left, client=client)
    with pytest.raises(KeyError, match="nope"):
        gdask.unique(L, ["nope"], client=client)
    with pytest.raises(ValueError, match="union"):
        gdask.union(L, R[["k", "s"]], client=client)
    with pytest.raises(TypeError, match="distinct must be a bool, got 'yes'"):
        gdask.union(L, R, distinct="yes", client=client)
    with pytest.raises(TypeError, match="right must be a dask.dataframe.DataFrame"):
        gdask.intersect(L, right, client=client)
    with pytest.raises(TypeError, match="'k'"):
        gdask.difference(L, R.astype({"k": "string"}), client=client)
    with pytest.raises(KeyError, match="nope"):
        gdask.groupby_agg(L, "nope", {"t": ("v", "sum")}, client=client)
    with pytest.raises(ValueError, match="bogus"):
        gdask.groupby_agg(L, "k", {"t": ("v", "bogus")}, client=client)
    with pytest.raises(TypeError, match="aggs must be a non-empty mapping"):
        gdask.groupby_agg(L, "k", {}, client=client)
    with pytest.raises(TypeError, match="sum"):
        L.gpuframe.groupby("k", client=client).agg(t=("s", "sum"))
    with pytest.raises(KeyError, match="nope"):
        gdask.sort(L, "nope", client=client)
    with pytest.raises(ValueError, match="descending"):
        gdask.sort(L, ["k", "s"], descending=[True], client=client)
    with pytest.raises(ValueError, match="takes no keys"):
        gdask.merge(L, R, on="k", how="cross", client=client)
    with pytest.raises(ValueError, match="how must be one of"):
        gdask.merge(L, R, on="k", how="bogus", client=client)
    with pytest.raises(ValueError, match="backend must be one of"):
        gdask.sort(L, "k", backend="mpi", client=client)
