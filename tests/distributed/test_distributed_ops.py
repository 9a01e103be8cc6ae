"""gpuframe.distributed's table operations (unique, union, intersect, difference, groupby_agg,
sort, merge(how="cross")) on 1, 2 and 3 ranks in threads of one process, over TCP and UCX: each
checked against the local function on the ranks' inputs concatenated in rank order."""
from __future__ import annotations

import math
import time

import numpy as np
import pyarrow as pa
import pytest

import gpuframe
import gpuframe.distributed as gd
from gpuframe.comm import PeerClosedError, local_mesh

from .helpers import BACKENDS, concat, mesh_fixture, plain, run_ranks

pytestmark = pytest.mark.distributed

SIZES = (1, 2, 3)


mesh = mesh_fixture([(b, n) for b in BACKENDS for n in SIZES])


# ------------------------------------------------------------------------------ data and comparisons
def frame(n: int, seed: int, *, card: int = 12) -> pa.Table:
    """``n`` rows with repeated keys: ``k`` int64, ``f`` float64 (NaN, -0.0 and 0.0), ``s``
    string, ``d`` dictionary<int32, string> (all with nulls), and values ``v`` int64, ``w``
    float64 (with nulls)."""
    rng = np.random.default_rng(seed)

    def nulls(values: list) -> list:
        return [None if rng.random() < 0.1 else x for x in values]

    f = rng.integers(0, card, n).astype(np.float64)
    f[rng.random(n) < 0.1] = np.nan
    f[f == 1.0] = -0.0
    return pa.table({
        "k": pa.array(nulls(rng.integers(0, card, n).tolist()), pa.int64()),
        "f": pa.array(nulls(f.tolist()), pa.float64()),
        "s": pa.array(nulls([f"s{v}" for v in rng.integers(0, 5, n)]), pa.string()),
        "d": pa.array(nulls([f"d{v}" for v in rng.integers(0, 4, n)]), pa.string()).dictionary_encode(),
        "v": pa.array(nulls(rng.integers(-1000, 1000, n).tolist()), pa.int64()),
        "w": pa.array(nulls((rng.random(n) * 100).round(3).tolist()), pa.float64()),
    })


def inputs(size: int, seed: int, rows: int = 300, *, empty_first: bool = False) -> list[pa.Table]:
    """One table per rank of uneven sizes (rank 0's empty with ``empty_first``)."""
    out = [frame(rows + 97 * r, seed * 10 + r) for r in range(size)]
    if empty_first:
        out[0] = out[0].slice(0, 0)
    return out


def whole(tables: list[pa.Table]) -> gpuframe.Table:
    """The ranks' inputs concatenated in rank order (the local functions' input)."""
    return gpuframe.concat([gpuframe.from_arrow(t) for t in tables])


def _canon(v):
    """A value as a comparable, hashable key: None last, NaN before it, -0.0 == 0.0."""
    if v is None:
        return (2, 0)
    if isinstance(v, float) and math.isnan(v):
        return (1, 0)
    return (0, v)


def rows(table: pa.Table | gpuframe.Table) -> list[tuple]:
    if isinstance(table, gpuframe.Table):
        table = table.to_arrow()
    cols = [plain(table.column(i)).to_pylist() for i in range(table.num_columns)]
    return [tuple(_canon(v) for v in r) for r in zip(*cols)] if cols else []


def assert_same_rows(got: pa.Table, expect: gpuframe.Table) -> None:
    """Equal as multisets of rows, and the same column names and types."""
    exp = expect.to_arrow()
    assert got.column_names == exp.column_names
    assert [f.type for f in got.schema] == [f.type for f in exp.schema]
    assert got.num_rows == exp.num_rows
    assert sorted(rows(got)) == sorted(rows(exp))


def results(fn, size: int) -> list[pa.Table]:
    return [t.to_arrow() for t in run_ranks(fn, size)]


# ------------------------------------------------------------------------------ unique
@pytest.mark.parametrize("subset,keep", [(None, "any"), (["k", "s"], "first"), (["f", "d"], "last")])
def test_unique_matches_local(mesh, subset, keep):
    size = len(mesh)
    src = inputs(size, 1)
    # few distinct rows over all the columns too: duplicates of whole rows across ranks
    if subset is None:
        src = [t.select(["k", "s", "d"]) for t in src]
    res = results(lambda r: gd.unique(gpuframe.from_arrow(src[r]), subset, comm=mesh[r], keep=keep), size)
    expect = gpuframe.unique(whole(src), subset, keep=keep)
    # keep="first"/"last" pick whole rows: the other columns say which row stayed
    assert_same_rows(concat(res), expect)
    # a distinct value lives on one rank only
    names = subset or src[0].column_names
    seen = [set(rows(t.select(names))) for t in res]
    assert sum(map(len, seen)) == len(set().union(*seen))


# ------------------------------------------------------------------------------ union, intersect, difference
def set_sides(size: int, seed: int) -> tuple[list[pa.Table], list[pa.Table]]:
    """Left ``x`` int32 and ``y`` string; right ``x`` float64 (integral values, so rows meet
    across the types only if the int side is hashed as float64) and ``y`` a string dictionary;
    rank 0's left side empty when there are several."""
    rng = np.random.default_rng(seed)
    left, right = [], []
    for r in range(size):
        n = 0 if r == 0 and size > 1 else 150 + 40 * r
        left.append(pa.table({"x": pa.array(rng.integers(0, 20, n), pa.int32()),
                              "y": pa.array([f"y{v}" if v else None for v in rng.integers(0, 4, n)], pa.string())}))
        m = 120 + 30 * r
        xs = rng.integers(0, 30, m).astype(np.float64)
        xs[rng.random(m) < 0.05] = np.nan
        right.append(pa.table({"x": pa.array(xs), "y": pa.array(
            [f"y{v}" if v else None for v in rng.integers(0, 4, m)], pa.string()).dictionary_encode()}))
    return left, right


@pytest.mark.parametrize("distinct", [True, False], ids=["distinct", "all"])
def test_union_matches_local(mesh, distinct):
    size = len(mesh)
    left, right = set_sides(size, 2)
    res = results(lambda r: gd.union(gpuframe.from_arrow(left[r]), gpuframe.from_arrow(right[r]), comm=mesh[r],
                                     distinct=distinct), size)
    expect = gpuframe.union(whole(left), whole(right), distinct=distinct)
    assert_same_rows(concat(res), expect)
    if distinct:
        assert expect.num_rows < sum(t.num_rows for t in left + right)   # duplicates were dropped


@pytest.mark.parametrize("op", ["intersect", "difference"])
def test_intersect_difference_match_local(mesh, op):
    size = len(mesh)
    left, right = set_sides(size, 3)
    stats: list[dict] = [{} for _ in range(size)]
    res = results(lambda r: getattr(gd, op)(gpuframe.from_arrow(left[r]), gpuframe.from_arrow(right[r]),
                                            comm=mesh[r], stats=stats[r]), size)
    expect = getattr(gpuframe, op)(whole(left), whole(right))
    assert 0 < expect.num_rows
    assert_same_rows(concat(res), expect)
    assert all(s["exchange_s"] >= 0 and s["local_s"] >= 0 and "bytes_sent" in s for s in stats)


@pytest.mark.parametrize("op", ["union", "intersect", "difference", "unique", "groupby_agg"])
def test_bucketed_results_depend_on_the_rows_alone(mesh, op):
    """gpuframe.dask's form (``_buckets``): one table per bucket the rank owns, and what a bucket
    holds depends on the rows, not on which rank had them (Dask may compute one partition in
    one run and the next in another, on other workers): the same rows spread two ways (as made,
    and all on the last rank) give the same buckets, together the local result. The sides' key
    types differ (int32 and float64, string and dictionary): rows are bucketed as they were
    hashed."""
    size, nb = len(mesh), 5
    left, right = set_sides(size, 4)

    def on_last(tables: list[pa.Table]) -> list[pa.Table]:
        both = pa.concat_tables(tables).unify_dictionaries().combine_chunks()
        return [both.slice(0, 0)] * (size - 1) + [both]

    def run(lsrc: list[pa.Table], rsrc: list[pa.Table]) -> tuple[dict, list]:
        def fn(r: int) -> list:
            lt, rt = gpuframe.from_arrow(lsrc[r]), gpuframe.from_arrow(rsrc[r])
            if op == "unique":
                return gd.unique(lt, comm=mesh[r], _buckets=nb)
            if op == "groupby_agg":
                return gd.groupby_agg(lt, "y", {"n": ("x", "size"), "t": ("x", "sum")}, comm=mesh[r], _buckets=nb)
            return getattr(gd, op)(lt, rt, comm=mesh[r], _buckets=nb)

        got = run_ranks(fn, size)
        buckets = {}
        for r, pieces in enumerate(got):
            lo, hi = gd.owned_buckets(r, size, nb)
            assert len(pieces) == hi - lo
            buckets.update((b, sorted(rows(t))) for b, t in zip(range(lo, hi), pieces))
        return buckets, [t.to_arrow() for pieces in got for t in pieces]

    spread, parts = run(left, right)
    assert spread == run(on_last(left), on_last(right))[0]
    if op == "unique":
        expect = gpuframe.unique(whole(left))
    elif op == "groupby_agg":
        expect = gpuframe.groupby_agg(whole(left), "y", {"n": ("x", "size"), "t": ("x", "sum")})
    else:
        expect = getattr(gpuframe, op)(whole(left), whole(right))
    assert_same_rows(concat(parts), expect)
    assert sum(1 for b in spread.values() if b) > 1          # the rows did spread over buckets


# ------------------------------------------------------------------------------ groupby_agg
def assert_same_groups(got: pa.Table, expect: gpuframe.Table, keys: list[str], rel_tol: float = 1e-9) -> None:
    """One row per group on one rank only; per group, equal values (floats to ``rel_tol``)."""
    exp = expect.to_arrow()
    assert got.schema.remove_metadata() == exp.schema.remove_metadata()
    assert got.num_rows == exp.num_rows
    nk = len(keys)
    by_key = {r[:nk]: r[nk:] for r in rows(exp)}
    gotten = {r[:nk]: r[nk:] for r in rows(got)}
    assert len(gotten) == got.num_rows and gotten.keys() == by_key.keys()
    for key, values in gotten.items():
        for name, (ga, gv), (ea, ev) in zip(exp.column_names[nk:], values, by_key[key]):
            assert ga == ea, (key, name, gv, ev)
            if isinstance(gv, float) and isinstance(ev, float):
                assert math.isclose(gv, ev, rel_tol=rel_tol, abs_tol=1e-12), (key, name, gv, ev)
            else:
                assert gv == ev, (key, name, gv, ev)


DECOMPOSABLE = {"sum_v": ("v", "sum"), "sum_w": ("w", "sum"), "n_v": ("v", "count"), "rows": ("w", "size"),
                "mean_v": ("v", "mean"), "mean_w": ("w", "mean"), "var_w": ("w", "var"), "std_v": ("v", "std"),
                "min_s": ("s", "min"), "max_f": ("f", "max"), "min_d": ("d", "min"), "first_w": ("w", "first"),
                "last_s": ("s", "last"), "first_d": ("d", "first"), "var_v": ("v", "var")}


@pytest.mark.parametrize("by,dropna", [(["k"], False), (["f", "s"], True)], ids=["k", "f_s_dropna"])
def test_groupby_partials_match_local(mesh, by, dropna):
    size = len(mesh)
    src = inputs(size, 4, empty_first=True)
    stats: list[dict] = [{} for _ in range(size)]
    res = results(lambda r: gd.groupby_agg(gpuframe.from_arrow(src[r]), by, DECOMPOSABLE, comm=mesh[r],
                                           dropna=dropna, stats=stats[r]), size)
    expect = gpuframe.groupby_agg(whole(src), by, DECOMPOSABLE, dropna=dropna)
    assert_same_groups(concat(res), expect, by)
    assert all(s["local_s"] >= 0 and s["exchange_s"] >= 0 for s in stats)
    if size > 1:
        # the partials travel, not the rows: at most one row per (rank, group) goes out
        sent = sum(s["bytes_sent"] for s in stats)
        assert sent < sum(t.nbytes for t in src)


def test_groupby_moments_combine_exactly(mesh):
    """var/std of values with a large common offset: naive sums of squares lose every digit
    (x**2 ~ 1e18, an ulp of 128 against a variance of 1/12), Chan's combination of (count, mean,
    M2) keeps all but what rounding the partial means to float64 costs (ulp(1e9) ~ 1e-7 against a
    spread of ~0.3: ~1e-7 relative); single-value and all-null groups."""
    size = len(mesh)
    rng = np.random.default_rng(5)
    src = []
    for r in range(size):
        n = 200 + 50 * r
        w = 1e9 + rng.random(n)
        src.append(pa.table({"g": pa.array(rng.integers(0, 6, n), pa.int64()),
                             "w": pa.array([None if g == 5 else x for g, x in zip(rng.integers(0, 6, n), w)])}))
    # a group with one row in all, on the last rank
    src[-1] = pa.concat_tables([src[-1], pa.table({"g": pa.array([9], pa.int64()), "w": pa.array([3.0])})])
    aggs = {"var": ("w", "var"), "std": ("w", "std"), "mean": ("w", "mean"), "n": ("w", "count")}
    res = results(lambda r: gd.groupby_agg(gpuframe.from_arrow(src[r]), "g", aggs, comm=mesh[r]), size)
    expect = gpuframe.groupby_agg(whole(src), "g", aggs)
    got = concat(res)
    assert_same_groups(got, expect, ["g"], rel_tol=1e-6)
    one = [row for row in got.to_pylist() if row["g"] == 9]
    assert one == [{"g": 9, "var": None, "std": None, "mean": 3.0, "n": 1}]


def test_groupby_integer_sums_and_means_across_ranks(mesh):
    """The mean of large integers sums them in float64 (no overflow, as the local mean); an
    integer sum that overflows only once the ranks' partials are added raises OverflowError
    naming the column, on the rank that adds them."""
    size = len(mesh)
    big = 2 ** 62
    src = [pa.table({"k": pa.array([1, 2]), "v": pa.array([big, r])}) for r in range(size)]
    res = results(lambda r: gd.groupby_agg(gpuframe.from_arrow(src[r]), "k", {"m": ("v", "mean")}, comm=mesh[r]),
                  size)
    assert_same_groups(concat(res), gpuframe.groupby_agg(whole(src), "k", {"m": ("v", "mean")}), ["k"])
    if size < 2:
        return
    errors: list = [None] * size

    def rank(r):
        try:
            return gd.groupby_agg(gpuframe.from_arrow(src[r]), "k", {"s": ("v", "sum")}, comm=mesh[r])
        except OverflowError as exc:
            errors[r] = exc

    run_ranks(rank, size)
    failed = [e for e in errors if e is not None]
    assert len(failed) == 1 and "column(s) ['v'] overflows int64" in str(failed[0])
    with pytest.raises(OverflowError):
        gpuframe.groupby_agg(whole(src), "k", {"s": ("v", "sum")})


@pytest.mark.parametrize("by", [["k"], ["f", "d"]], ids=["k", "f_d"])
def test_groupby_median_nunique_exact(mesh, by):
    """median and nunique from the shuffled rows, the other ops from partials, lined up by key
    (float keys with NaN and -0.0, dictionary keys with other dictionaries on every rank); and
    median alone, with dropna."""
    size = len(mesh)
    src = inputs(size, 6)
    aggs = {"med_w": ("w", "median"), "med_v": ("v", "median"), "nu_f": ("f", "nunique"), "nu_d": ("d", "nunique"),
            "sum_v": ("v", "sum"), "last_w": ("w", "last"), "n": ("v", "size"), "var_w": ("w", "var")}
    res = results(lambda r: gd.groupby_agg(gpuframe.from_arrow(src[r]), by, aggs, comm=mesh[r], tag=40), size)
    assert_same_groups(concat(res), gpuframe.groupby_agg(whole(src), by, aggs), by)
    alone = {"med": ("v", "median")}
    res = results(lambda r: gd.groupby_agg(gpuframe.from_arrow(src[r]), by, alone, comm=mesh[r], dropna=True), size)
    assert_same_groups(concat(res), gpuframe.groupby_agg(whole(src), by, alone, dropna=True), by)


# ------------------------------------------------------------------------------ sort
def assert_same_sequence(got: pa.Table, expect: gpuframe.Table) -> None:
    exp = expect.to_arrow()
    assert got.column_names == exp.column_names
    assert rows(got) == rows(exp)


@pytest.mark.parametrize("by,descending,nulls_last", [
    (["f", "s"], False, True),
    (["d", "k"], [True, False], False),
    ("s", True, True),
], ids=["f_s", "d_k_desc_nulls_first", "s_desc"])
def test_sort_matches_local_in_rank_order(mesh, by, descending, nulls_last):
    size = len(mesh)
    src = inputs(size, 7, rows=250)
    # a row id: stability is checked too (equal keys keep the rank-then-row order)
    src = [t.append_column("id", pa.array(np.arange(t.num_rows) + 10_000 * r)) for r, t in enumerate(src)]
    res = results(lambda r: gd.sort(gpuframe.from_arrow(src[r]), by, comm=mesh[r], descending=descending,
                                    nulls_last=nulls_last), size)
    expect = gpuframe.sort(whole(src), by, descending=descending, nulls_last=nulls_last)
    assert_same_sequence(concat(res), expect)


def test_sort_spreads_duplicates_and_empty_ranks(mesh):
    """One key value in all: the rows are still cut by their global position into near-equal
    shares, in order; rank 0 holds nothing."""
    size = len(mesh)
    src = [pa.table({"k": pa.array([7] * (0 if r == 0 else 600), pa.int32()),
                     "id": pa.array(np.arange(0 if r == 0 else 600) + 1000 * r)}) for r in range(size)]
    res = results(lambda r: gd.sort(gpuframe.from_arrow(src[r]), "k", comm=mesh[r]), size)
    assert_same_sequence(concat(res), gpuframe.sort(whole(src), "k"))
    total = 600 * (size - 1)
    assert max(t.num_rows for t in res) <= total // size + total // 8 + 1
    # nothing anywhere
    empty = [t.slice(0, 0) for t in src]
    res = results(lambda r: gd.sort(gpuframe.from_arrow(empty[r]), "k", comm=mesh[r]), size)
    assert [t.num_rows for t in res] == [0] * size and res[0].schema == src[0].schema


@pytest.mark.parametrize("buckets", [1, 2, 5])
def test_split_ordered_cuts_equal_partitions_whatever_the_spread(mesh, buckets):
    """The same 700 ordered rows spread over the ranks in three ways (all on one rank, uneven,
    every rank but the last empty): partition b is always rows [b*n//buckets, (b+1)*n//buckets),
    on the rank that owns b, and ranks that own none get none."""
    size = len(mesh)
    n = 700
    ids = np.arange(n)
    spreads = [[n] + [0] * (size - 1), [(r + 1) * n * 2 // (size * (size + 1)) for r in range(size)],
               [0] * (size - 1) + [n]]
    spreads[1][-1] += n - sum(spreads[1])
    for spread in spreads:
        bounds = np.cumsum([0] + spread)
        src = [pa.table({"id": pa.array(ids[bounds[r]:bounds[r + 1]]),
                         "s": pa.array([f"r{i}" for i in ids[bounds[r]:bounds[r + 1]]], pa.string())})
               for r in range(size)]
        stats = [{} for _ in range(size)]
        got = run_ranks(lambda r: gd.split_ordered(gpuframe.from_arrow(src[r]), comm=mesh[r], buckets=buckets,
                                                   stats=stats[r]), size)
        for r in range(size):
            lo, hi = gd.owned_buckets(r, size, buckets)
            assert len(got[r]) == hi - lo
            for b, part in zip(range(lo, hi), got[r]):
                assert part.to_arrow().column("id").to_pylist() == list(range(b * n // buckets, (b + 1) * n // buckets))
    # nothing anywhere: every owned partition empty, with the schema
    got = run_ranks(lambda r: gd.split_ordered(gpuframe.from_arrow(src[r].slice(0, 0)), comm=mesh[r],
                                               buckets=buckets), size)
    assert all(p.num_rows == 0 and p.column_names == ["id", "s"] for parts in got for p in parts)


def test_split_ordered_checks_its_arguments(mesh):
    t = gpuframe.from_arrow(pa.table({"a": [1, 2]}))
    for bad in (0, -1, 1.5, True, None):
        with pytest.raises(ValueError, match=r"buckets must be an int >= 1, got"):
            gd.split_ordered(t, comm=mesh[0], buckets=bad)


# ------------------------------------------------------------------------------ merge(how="cross")
@pytest.mark.parametrize("smaller", ["right", "left"])
def test_cross_matches_local(mesh, smaller):
    size = len(mesh)
    rng = np.random.default_rng(8)
    big = [pa.table({"a": pa.array(rng.integers(0, 100, 20 + 7 * r)), "x": pa.array([f"l{r}"] * (20 + 7 * r))})
           for r in range(size)]
    small = [pa.table({"b": pa.array(rng.random(3 + r)), "x": pa.array(["r"] * (3 + r))}) for r in range(size)]
    left, right = (big, small) if smaller == "right" else (small, big)
    stats: list[dict] = [{} for _ in range(size)]
    res = results(lambda r: gd.merge(gpuframe.from_arrow(left[r]), gpuframe.from_arrow(right[r]), how="cross",
                                     suffixes=("_l", "_r"), comm=mesh[r], stats=stats[r]), size)
    expect = gpuframe.merge(whole(left), whole(right), how="cross", suffixes=("_l", "_r"))
    got = concat(res)
    assert_same_rows(got, expect)
    if smaller == "right":   # the right side was gathered: the left-major order holds across ranks
        assert rows(got) == rows(expect)
    if size > 1:
        # only the smaller side moved
        small_bytes = sum(t.nbytes for t in small)
        assert max(s["bytes_sent"] for s in stats) <= small_bytes * size


# ------------------------------------------------------------------------------ errors
def test_bad_arguments_raise_before_exchanging():
    comms = local_mesh(2, "tcp", timeout=5)
    try:
        c = comms[0]
        t = gpuframe.from_arrow(frame(20, 0))
        other = gpuframe.from_arrow(pa.table({"k": pa.array([1]), "z": pa.array([1.0])}))
        # each raised on rank 0 alone, without waiting for rank 1: nothing was sent
        with pytest.raises(KeyError, match="subset: the table has no column 'nope'"):
            gd.unique(t, ["nope"], comm=c)
        with pytest.raises(ValueError, match="keep must be one of"):
            gd.unique(t, comm=c, keep="middle")
        with pytest.raises(ValueError, match="union: right must have the columns of left"):
            gd.union(t, other, comm=c)
        with pytest.raises(TypeError, match="distinct must be a bool, got 'yes'"):
            gd.union(t, t, comm=c, distinct="yes")
        with pytest.raises(ValueError, match="intersect: right must have the columns of left"):
            gd.intersect(t, other, comm=c)
        with pytest.raises(TypeError, match="left must be a gpuframe Table, got DataFrame"):
            gd.difference(t.to_pandas(), t, comm=c)
        with pytest.raises(ValueError, match=r"aggs\['x'\]: unknown op 'mode'"):
            gd.groupby_agg(t, "k", {"x": ("v", "mode")}, comm=c)
        with pytest.raises(TypeError, match=r"aggs\['x'\]: sum needs a numeric"):
            gd.groupby_agg(t, "k", {"x": ("s", "sum")}, comm=c)
        with pytest.raises(TypeError, match="dropna must be a bool"):
            gd.groupby_agg(t, "k", {"x": ("v", "sum")}, comm=c, dropna=1)
        with pytest.raises(ValueError, match="descending must have one bool per key column"):
            gd.sort(t, ["k", "s"], comm=c, descending=[True])
        with pytest.raises(KeyError, match="by: no column named 'nope'"):
            gd.sort(t, "nope", comm=c)
        with pytest.raises(ValueError, match="how='cross' takes no keys"):
            gd.merge(t, other, on="k", how="cross", comm=c)
        with pytest.raises(ValueError, match="merge_pieces does not take how='cross'"):
            gd.merge_pieces([t], [other], c, left_schema=t.schema, right_schema=other.schema, how="cross")
        with pytest.raises(TypeError, match="comm must be a connected gpuframe.comm.Communicator, got str"):
            gd.sort(t, "k", comm="tcp://x")
        assert not comms[0].closed and not comms[1].closed
    finally:
        for c in comms:
            c.close()


def test_local_failure_fails_the_peers_at_once():
    """An int64 sum that overflows on rank 1 alone: rank 1 raises OverflowError and closes its
    communicator, rank 0 (waiting in the exchange) gets PeerClosedError well before its timeout."""
    comms = local_mesh(2, "tcp", timeout=30)
    big = np.iinfo(np.int64).max
    src = [pa.table({"k": pa.array([1, 2]), "v": pa.array([1, 2])}),
           pa.table({"k": pa.array([1, 1]), "v": pa.array([big, big])})]
    errors: list = [None, None]

    def rank(r):
        try:
            gd.groupby_agg(gpuframe.from_arrow(src[r]), "k", {"s": ("v", "sum")}, comm=comms[r])
        except Exception as exc:  # noqa: BLE001 - checked below
            errors[r] = exc

    t0 = time.perf_counter()
    try:
        run_ranks(rank, 2, timeout=60)
    finally:
        for c in comms:
            c.close()
    assert isinstance(errors[1], OverflowError)
    assert isinstance(errors[0], PeerClosedError)
    assert time.perf_counter() - t0 < 20


# ------------------------------------------------------------------------------ device tables (simulator)
SIM_SCRIPT = """
from tests.common import sim_blocks
sim_blocks.install()   # pooled simulator threads (tests/common/sim_blocks.py)
import numpy as np, pyarrow as pa, gpuframe
import gpuframe.distributed as gd
from gpuframe.comm import local_mesh
comms = local_mesh(1, "tcp", timeout=60)
src = pa.table({"k": pa.array([3, 1, None, 2, 1, 3, 0] * 3), "s": pa.array(list("abcdefg") * 3),
                "v": pa.array(np.arange(21.0))})
t = gpuframe.from_arrow(src, device="cuda")
out = gd.sort(t, ["k", "s"], comm=comms[0], descending=[True, False])
assert out.device.is_cuda and all(c.device.is_cuda for c in out.columns)
assert out.to_arrow().equals(gpuframe.sort(gpuframe.from_arrow(src), ["k", "s"], descending=[True, False]).to_arrow())
aggs = {"m": ("v", "mean"), "sd": ("v", "std"), "n": ("v", "count"), "f": ("s", "first")}
g = gd.groupby_agg(t, "k", aggs, comm=comms[0])
assert g.device.is_cuda and all(c.device.is_cuda for c in g.columns)
e = gpuframe.groupby_agg(gpuframe.from_arrow(src), "k", aggs)
norm = lambda x: x.to_arrow().to_pandas().sort_values("k").reset_index(drop=True)
assert norm(g).equals(norm(e)), (norm(g), norm(e))
for c in comms:
    c.close()
print("device ops ok")
"""


def test_device_tables_on_the_simulator():
    """CUDA tables through sort (the tie-breaker columns made on the device, the splitters'
    places found there) and groupby_agg (partials combined on the device's tables), one rank on
    numba's CUDA simulator (which cannot run kernels from several rank threads at once)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(root))
    proc = subprocess.run([sys.executable, "-c", SIM_SCRIPT], cwd=root, env=env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "device ops ok" in proc.stdout
