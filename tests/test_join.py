"""Hash join on the CPU backend: every ``how``, key shapes, nulls, duplicates, skew, empties,
against a plain-Python reference (tests/common/join.py) and DuckDB."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

import gpuframe
from gpuframe.ops.join import HOWS

from .common.data import random_table
from .common.join import norm_value, pairs_of, ref_pairs, rows_multiset

ROW_HOWS = ["inner", "left", "right", "outer"]


def expected_merge(left: pa.Table, right: pa.Table, lon, ron, how, pairs: Counter) -> tuple[list, Counter]:
    """Column sources and the multiset of rows ``merge`` must return, from reference pairs."""
    coalesced = {lname for lname, rname in zip(lon, ron) if lname == rname}
    srcs = [("K" if n in coalesced else "L", n) for n in left.column_names]
    if how not in ("semi", "anti"):
        srcs += [("R", n) for n in right.column_names if n not in coalesced]
    lcols = {n: left.column(n).to_pylist() for n in left.column_names}
    rcols = {n: right.column(n).to_pylist() for n in right.column_names}
    rows: Counter = Counter()
    for (i, j), cnt in pairs.items():
        row = []
        for kind, name in srcs:
            if kind == "L":
                v = None if i is None else lcols[name][i]
            elif kind == "R":
                v = None if j is None else rcols[name][j]
            else:
                v = lcols[name][i] if i is not None else rcols[name][j]
            row.append(norm_value(v))
        rows[tuple(row)] += cnt
    return srcs, rows


def check_join(left: pa.Table, right: pa.Table, how: str, on=None, left_on=None, right_on=None,
               nulls_equal: bool = False) -> gpuframe.Table:
    lon = [on] if isinstance(on, str) else (on or ([left_on] if isinstance(left_on, str) else left_on))
    ron = [on] if isinstance(on, str) else (on or ([right_on] if isinstance(right_on, str) else right_on))
    L, R = gpuframe.from_arrow(left), gpuframe.from_arrow(right)
    kw = dict(on=on, left_on=left_on, right_on=right_on, how=how, nulls_equal=nulls_equal)
    ref = ref_pairs(left, right, lon, ron, how, nulls_equal)
    li, ri = gpuframe.join_indices(L, R, **kw)
    assert li.dtype == np.int64
    if how in ("semi", "anti"):
        assert ri is None
        assert list(li) == sorted(li), "semi/anti keep left order"
    else:
        assert ri.dtype == np.int64 and len(ri) == len(li)
    assert pairs_of(li, ri) == ref
    assert gpuframe.join_size(L, R, **kw) == sum(ref.values())
    out = gpuframe.merge(L, R, **kw)
    srcs, rows = expected_merge(left, right, lon, ron, how, ref)
    got = out.to_arrow()
    assert got.num_rows == sum(ref.values())
    assert len(got.column_names) == len(srcs)
    assert rows_multiset(got, got.column_names) == rows
    return out


def kv(keys, vals=None, name="k", vname="v", type=None):
    vals = list(range(len(keys))) if vals is None else vals
    return pa.table({name: pa.array(keys, type=type), vname: pa.array(vals, type=pa.int64())})


# --------------------------------------------------------------------------- every how
@pytest.mark.parametrize("how", HOWS)
def test_single_int_key(how):
    left = kv([1, 2, 3, 4, None, 4, 7], vname="a")
    right = kv([3, 4, 4, 5, None, 9], vname="b")
    check_join(left, right, how, on="k")


@pytest.mark.parametrize("how", HOWS)
def test_build_side_swaps(how):
    # left smaller than right, and the other way: the build side is chosen by size
    small = kv([1, 2, 2, 3], vname="a")
    big = kv([2, 2, 3, 3, 3, 8, 9, 10, None], vname="b")
    check_join(small, big, how, on="k")
    check_join(big.rename_columns(["k", "a"]), small.rename_columns(["k", "b"]), how, on="k")


@pytest.mark.parametrize("how", HOWS)
def test_multi_key(how):
    left = pa.table({"a": [1, 1, 2, 2, None, 3], "b": ["x", "y", "x", "x", "x", None], "v": [1, 2, 3, 4, 5, 6]})
    right = pa.table({"a": [1, 2, 2, 3, None], "b": ["x", "x", "x", None, "x"], "w": [10., 20., 30., 40., 50.]})
    check_join(left, right, how, on=["a", "b"])
    check_join(left, right, how, on=["a", "b"], nulls_equal=True)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("nulls_equal", [False, True])
def test_null_keys(how, nulls_equal):
    left = kv([None, 1, None, 2], vname="a")
    right = kv([None, None, 2, 3], vname="b")
    check_join(left, right, how, on="k", nulls_equal=nulls_equal)


@pytest.mark.parametrize("how", HOWS)
def test_all_null_keys(how):
    left = kv(pa.nulls(4, pa.int64()), vname="a")
    right = kv(pa.nulls(3, pa.int64()), vname="b")
    check_join(left, right, how, on="k")
    check_join(left, right, how, on="k", nulls_equal=True)


@pytest.mark.parametrize("how", HOWS)
def test_many_to_many_and_skew(how):
    rng = np.random.default_rng(1)
    lk = np.where(rng.random(3000) < 0.5, 7, rng.integers(0, 300, 3000))   # one key on half the rows
    rk = np.repeat(np.arange(0, 400, 2), 4)                                  # every key 4 times
    left = kv(lk.tolist(), vname="a")
    right = kv(rk.tolist(), vname="b")
    check_join(left, right, how, on="k")


@pytest.mark.parametrize("how", HOWS)
def test_empty_sides(how):
    empty = kv(pa.array([], pa.int64()), vname="a")
    full = kv([1, 2, 2], vname="b")
    check_join(empty, full, how, on="k")
    check_join(full.rename_columns(["k", "a"]), empty.rename_columns(["k", "b"]), how, on="k")
    check_join(empty, empty.rename_columns(["k", "b"]), how, on="k")


@pytest.mark.parametrize("how", HOWS)
def test_int64_extremes(how):
    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    left = kv([lo, hi, 0, -1, hi], vname="a")
    right = kv([hi, lo, -1, 5], vname="b")
    check_join(left, right, how, on="k")


@pytest.mark.parametrize("how", HOWS)
def test_nan_and_negative_zero(how):
    left = kv([np.nan, -0.0, 1.5, None, np.nan], type=pa.float64(), vname="a")
    right = kv([0.0, np.nan, 1.5, -0.0], type=pa.float64(), vname="b")
    check_join(left, right, how, on="k")
    lf = kv([np.nan, -0.0, 2.0], type=pa.float32(), vname="a")
    check_join(lf, right, how, on="k")


@pytest.mark.parametrize("how", HOWS)
def test_string_keys(how):
    left = kv(["a", "", "ß", "日本", None, "a", "key" * 5], vname="a", type=pa.string())
    right = kv(["", "a", "日本", "key" * 5, None, "zz"], vname="b", type=pa.large_string())
    check_join(left, right, how, on="k")
    d = pa.array(["a", "x", None, "ß", "a"]).dictionary_encode()
    check_join(pa.table({"k": d, "a": [1, 2, 3, 4, 5]}), right, how, on="k")


@pytest.mark.parametrize("how", HOWS)
def test_left_on_right_on(how):
    left = pa.table({"id": [1, 2, 3, 3], "v": [1, 2, 3, 4]})
    right = pa.table({"key": [3, 1, 1, 9], "v": [10, 20, 30, 40]})
    out = check_join(left, right, how, left_on="id", right_on="key")
    if how not in ("semi", "anti"):
        assert out.column_names == ["id", "v_x", "key", "v_y"]


def test_payload_types_and_nulls():
    left = random_table(200, {"k": pa.int32(), "i8": pa.int8(), "u16": pa.uint16(), "f32": pa.float32(),
                              "b": pa.bool_(), "s": pa.string(), "d": pa.date32(),
                              "ts": pa.timestamp("ns", tz="UTC"), "dic": pa.dictionary(pa.int32(), pa.string())},
                        nulls=True, seed=3, cardinality=60)
    right = random_table(150, {"k": pa.int64(), "ls": pa.large_string(), "f64": pa.float64(),
                               "b": pa.bool_(), "u64": pa.uint64()}, nulls=True, seed=9, cardinality=60)
    for how in HOWS:
        check_join(left, right, how, on="k")


def test_duckdb_agrees_with_reference():
    duckdb = pytest.importorskip("duckdb")
    left = random_table(500, {"k": pa.int64(), "a": pa.int64()}, nulls=True, seed=5, cardinality=80)
    right = random_table(400, {"k": pa.int64(), "b": pa.int64()}, nulls=True, seed=6, cardinality=80)
    L, R = gpuframe.from_arrow(left), gpuframe.from_arrow(right)
    con = duckdb.connect()
    con.register("l", left)
    con.register("r", right)
    sql = {"inner": "INNER", "left": "LEFT", "right": "RIGHT", "outer": "FULL OUTER"}
    for how, kw in sql.items():
        want = con.sql(f"select l.k as lk, l.a, r.k as rk, r.b from l {kw} join r on l.k = r.k").to_arrow_table()
        got = gpuframe.merge(L, R, left_on="k", right_on="k", how=how).to_arrow()
        assert rows_multiset(got, ["a", "b"]) == rows_multiset(want, ["a", "b"])
    for how, sql_kw in (("semi", "SEMI"), ("anti", "ANTI")):
        want = con.sql(f"select l.a from l {sql_kw} join r on l.k = r.k").to_arrow_table()
        got = gpuframe.merge(L, R, on="k", how=how).to_arrow()
        assert rows_multiset(got, ["a"]) == rows_multiset(want, ["a"])


def test_pandas_column_names():
    pd = pytest.importorskip("pandas")
    left = pa.table({"k": [1, 2], "a": [1, 2], "c": [5, 6]})
    right = pa.table({"k": [1, 3], "a": [3, 4], "d": [7, 8]})
    L, R = gpuframe.from_arrow(left), gpuframe.from_arrow(right)
    for how in ROW_HOWS:
        want = pd.merge(left.to_pandas(), right.to_pandas(), on="k", how=how)
        assert gpuframe.merge(L, R, on="k", how=how).column_names == list(want.columns)
    want = pd.merge(left.to_pandas(), right.to_pandas(), on="k", suffixes=("_l", "_r"))
    assert gpuframe.merge(L, R, on="k", suffixes=("_l", "_r")).column_names == list(want.columns)
    assert L.merge(R, on="k").column_names == list(pd.merge(left.to_pandas(), right.to_pandas(), on="k").columns)


def test_default_on_uses_common_columns():
    left = pa.table({"k": [1, 2], "a": [1, 2]})
    right = pa.table({"k": [2, 3], "b": [3, 4]})
    out = gpuframe.merge(gpuframe.from_arrow(left), gpuframe.from_arrow(right))
    assert out.to_arrow().to_pydict() == {"k": [2], "a": [2], "b": [3]}


def test_partitioned_path_large():
    # more build rows than one partition holds: the radix-partitioned path with many partitions
    rng = np.random.default_rng(7)
    nb, npr = 20_000, 60_000
    bkeys = rng.permutation(nb).astype(np.int64) * 7919 - 10**12
    pkeys = np.concatenate([bkeys[rng.integers(0, nb, npr - 1000)], rng.integers(-50, 50, 1000)])
    left = pa.table({"k": pkeys, "a": np.arange(npr)})
    right = pa.table({"k": bkeys, "b": np.arange(nb) * 3})
    L, R = gpuframe.from_arrow(left), gpuframe.from_arrow(right)
    for how in ("inner", "left", "right", "outer"):
        li, ri = gpuframe.join_indices(L, R, on="k", how=how)
        assert pairs_of(li, ri) == ref_pairs(left, right, ["k"], ["k"], how)
    out = gpuframe.merge(L, R, on="k").to_arrow()
    pos = {int(k): i for i, k in enumerate(bkeys)}
    got_b = out.column("b").to_numpy()
    got_k = out.column("k").to_numpy()
    assert np.array_equal(got_b, np.array([pos[int(k)] * 3 for k in got_k]))


def test_semi_anti_keep_left_order():
    left = kv([5, 1, 5, 2, None, 3], vname="a")
    right = kv([5, 3, 3], vname="b")
    L, R = gpuframe.from_arrow(left), gpuframe.from_arrow(right)
    assert gpuframe.merge(L, R, on="k", how="semi").to_arrow().column("a").to_pylist() == [0, 2, 5]
    assert gpuframe.merge(L, R, on="k", how="anti").to_arrow().column("a").to_pylist() == [1, 3, 4]


def test_memory_error_before_allocating(monkeypatch):
    from gpuframe.backends import impl_join

    left = kv([1] * 300, vname="a")
    right = kv([1] * 300, vname="b")
    L, R = gpuframe.from_arrow(left), gpuframe.from_arrow(right)
    monkeypatch.setattr(impl_join, "host_available_bytes", lambda: 1000)
    with pytest.raises(MemoryError, match=r"90,000 rows and needs about [\d,]+ bytes"):
        gpuframe.merge(L, R, on="k")
    with pytest.raises(MemoryError, match="90,000 rows"):
        gpuframe.join_indices(L, R, on="k")
    assert gpuframe.join_size(L, R, on="k") == 90_000   # counting allocates nothing big


def test_sliced_inputs():
    left = kv(list(range(20)), vname="a").slice(5, 10)
    right = kv(list(range(0, 40, 2)), vname="b").slice(3)
    for how in HOWS:
        check_join(left, right, how, on="k")
