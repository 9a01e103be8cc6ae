"""groupby-aggregate on the CPU against DuckDB: every op over the stored types, null and NaN
keys, null values (skipped, as SQL does), the group order, dropna, edge cases and bad input."""
from __future__ import annotations

import math

import duckdb
import numpy as np
import pyarrow as pa
import pytest

import gpuframe
from gpuframe.ops.groupby import OPS

from .common.data import random_array, set_key

SQL = {
    "sum": "SUM({v})", "count": "COUNT({v})", "size": "COUNT(*)", "mean": "AVG({v})", "min": "MIN({v})",
    "max": "MAX({v})", "var": "VAR_SAMP({v})", "std": "STDDEV_SAMP({v})", "median": "MEDIAN({v})",
    "first": "ARG_MIN({v}, rn) FILTER (WHERE {v} IS NOT NULL)",
    "last": "ARG_MAX({v}, rn) FILTER (WHERE {v} IS NOT NULL)", "nunique": "COUNT(DISTINCT {v})",
}
NUMERIC = {"sum", "mean", "var", "std", "median"}



def _duck(t: pa.Table, by: list[str], aggs: dict, where: str = "") -> dict:
    con = duckdb.connect()
    con.register("t0", t)
    con.execute("CREATE TEMP VIEW t AS SELECT *, row_number() OVER () AS rn FROM t0")
    sel = []
    for name, (col, op) in aggs.items():
        v = f'"{col}"'
        if op in NUMERIC and pa.types.is_boolean(t.column(col).type):
            v = f'"{col}"::INTEGER'
        sel.append(SQL[op].format(v=v) + f' AS "{name}"')
    keys = ", ".join(f'"{k}"' for k in by)
    rows = con.sql(f"SELECT {keys}, {', '.join(sel)} FROM t {where} GROUP BY {keys}").fetchall()
    return {tuple(set_key(v) for v in r[:len(by)]): r[len(by):] for r in rows}


def _close(a, b, op) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        a, b = float(a), float(b)
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def _check(t: pa.Table, by, aggs, **kw):
    got = gpuframe.groupby_agg(gpuframe.from_arrow(t), by, aggs, **kw).to_arrow()
    want = _duck(t, list(by), aggs, "WHERE " + " AND ".join(f'"{k}" IS NOT NULL' for k in by)
                 if kw.get("dropna") else "")
    assert got.column_names == list(by) + list(aggs)
    rows = list(zip(*[c.to_pylist() for c in got.columns]))
    keys = [tuple(set_key(v) for v in r[:len(by)]) for r in rows]
    assert sorted(map(repr, keys)) == sorted(map(repr, want))
    for r, k in zip(rows, keys):
        for (name, (col, op)), a, b in zip(aggs.items(), r[len(by):], want[k]):
            if hasattr(b, "isoformat") or op in ("first", "last", "min", "max") and isinstance(a, str):
                assert a == b, (k, name, a, b)
            else:
                assert _close(a, b, op), (k, name, a, b)
    return got


VALUE_TYPES = [pa.int8(), pa.int32(), pa.int64(), pa.uint32(), pa.float32(), pa.float64(), pa.bool_()]


@pytest.mark.parametrize("vt", VALUE_TYPES, ids=str)
def test_numeric_ops_match_duckdb(vt):
    n = 5000
    t = pa.table({"k": random_array(pa.int64(), n, nulls=True, seed=1, cardinality=40),
                  "v": random_array(vt, n, nulls=True, seed=2, cardinality=1000)})
    aggs = {op: ("v", op) for op in OPS}
    got = _check(t, ["k"], aggs)
    types = dict(zip(got.column_names, got.schema.types))
    assert types["sum"] == (pa.float64() if pa.types.is_floating(vt) else pa.int64())
    for op in ("mean", "var", "std", "median"):
        assert types[op] == pa.float64()
    for op in ("count", "size", "nunique"):
        assert types[op] == pa.int64()
    for op in ("min", "max", "first", "last"):
        assert types[op] == vt


@pytest.mark.parametrize("vt", [pa.string(), pa.large_string(), pa.dictionary(pa.int32(), pa.string()),
                                pa.date32(), pa.timestamp("us")], ids=str)
def test_ordered_ops_of_other_types(vt):
    n = 3000
    t = pa.table({"k": random_array(pa.string(), n, nulls=True, seed=3, cardinality=30),
                  "v": random_array(vt, n, nulls=True, seed=4, cardinality=200)})
    aggs = {op: ("v", op) for op in ("count", "size", "min", "max", "first", "last", "nunique")}
    _check(t, ["k"], aggs)


def test_nan_and_signed_zero_keys_and_values():
    t = pa.table({"k": pa.array([np.nan, -0.0, 0.0, float("nan"), None, None, 1.0, 1.0]),
                  "v": pa.array([1.0, np.nan, 3.0, 4.0, None, 6.0, -1.0, np.nan])})
    got = _check(t, ["k"], {"s": ("v", "sum"), "mn": ("v", "min"), "mx": ("v", "max"), "md": ("v", "median"),
                            "n": ("v", "count"), "u": ("v", "nunique")})
    assert got.num_rows == 4       # NaN, 0.0, null, 1.0


def test_two_keys_group_order_and_dropna():
    n = 4000
    t = pa.table({"a": random_array(pa.int16(), n, nulls=True, seed=5, cardinality=7),
                  "b": random_array(pa.string(), n, nulls=True, seed=6, cardinality=5),
                  "v": random_array(pa.float64(), n, nulls=True, seed=7)})
    aggs = {"s": ("v", "sum"), "n": ("v", "size"), "sd": ("v", "std")}
    got = _check(t, ["a", "b"], aggs)
    # groups in the order of their first rows
    keys = list(zip(t.column("a").to_pylist(), t.column("b").to_pylist()))
    order = list(dict.fromkeys(keys))
    assert list(zip(got.column("a").to_pylist(), got.column("b").to_pylist())) == order
    dropped = _check(t, ["a", "b"], aggs, dropna=True)
    assert None not in dropped.column("a").to_pylist() and None not in dropped.column("b").to_pylist()
    g = gpuframe.from_arrow(t)
    assert g.groupby(["a", "b"]).agg(aggs).equals(gpuframe.groupby_agg(g, ["a", "b"], aggs))
    assert g.groupby(["a", "b"]).agg(**aggs).equals(gpuframe.groupby_agg(g, ["a", "b"], aggs))


def test_all_null_values_and_single_values():
    t = pa.table({"k": [1, 1, 2, 3, 3], "v": pa.array([None, None, 5, 7, None], pa.int64())})
    got = gpuframe.groupby_agg(gpuframe.from_arrow(t), "k", {o: ("v", o) for o in OPS}).to_arrow().to_pylist()
    g1, g2, g3 = got
    assert g1 == {"k": 1, "sum": None, "count": 0, "size": 2, "mean": None, "min": None, "max": None, "var": None,
                  "std": None, "median": None, "first": None, "last": None, "nunique": 0}
    assert g2["var"] is None and g2["std"] is None and g2["sum"] == 5 and g2["median"] == 5.0
    assert g3["first"] == 7 and g3["last"] == 7 and g3["count"] == 1 and g3["size"] == 2


def test_edge_cases():
    empty = pa.table({"k": pa.array([], pa.int64()), "v": pa.array([], pa.float64())})
    got = gpuframe.groupby_agg(gpuframe.from_arrow(empty), "k", {"s": ("v", "sum"), "n": ("v", "count")}).to_arrow()
    assert got.num_rows == 0 and got.schema.types == [pa.int64(), pa.float64(), pa.int64()]
    one = pa.table({"k": ["x"], "v": [2.5]})
    assert gpuframe.groupby_agg(gpuframe.from_arrow(one), "k", {"m": ("v", "mean")}).to_arrow().to_pylist() == [{"k": "x", "m": 2.5}]
    same = pa.table({"k": pa.array([None] * 100, pa.string()), "v": np.arange(100)})
    assert gpuframe.groupby_agg(gpuframe.from_arrow(same), "k", {"s": ("v", "sum")}).to_arrow().to_pylist() == [
        {"k": None, "s": 4950}]
    distinct = pa.table({"k": np.arange(50000)[::-1].copy(), "v": np.ones(50000)})
    _check(distinct, ["k"], {"s": ("v", "sum"), "md": ("v", "median")})
    skew = pa.table({"k": np.where(np.arange(60000) % 10 == 0, np.arange(60000), 7), "v": np.arange(60000)})
    _check(skew, ["k"], {"s": ("v", "sum"), "v": ("v", "var"), "l": ("v", "last")})


def test_integer_sum_overflow_raises():
    big = np.iinfo(np.int64).max // 2 + 1
    t = gpuframe.from_arrow(pa.table({"k": [1, 1, 2], "v": [big, big, 1]}))
    with pytest.raises(OverflowError, match="sum of column 'v' overflows int64"):
        gpuframe.groupby_agg(t, "k", {"s": ("v", "sum")})
    u = gpuframe.from_arrow(pa.table({"k": [1], "v": pa.array([2**63], pa.uint64())}))
    with pytest.raises(OverflowError, match="sum of column 'v' overflows int64"):
        gpuframe.groupby_agg(u, "k", {"s": ("v", "sum")})


def test_bad_input():
    g = gpuframe.from_arrow(pa.table({"k": [1, 2], "s": ["a", "b"], "v": [1.0, 2.0]}))
    with pytest.raises(KeyError, match=r"by: the table has no column 'z'"):
        g.groupby("z")
    with pytest.raises(KeyError, match=r"aggs\['o'\]: the table has no column 'w'"):
        g.groupby("k").agg(o=("w", "sum"))
    with pytest.raises(ValueError, match=r"aggs\['o'\]: unknown op 'total'; the ops are \['sum'"):
        g.groupby("k").agg(o=("v", "total"))
    with pytest.raises(TypeError, match=r"aggs\['o'\]: sum needs a numeric \(integer, float or bool\) column, "
                                        r"column 's' is string"):
        g.groupby("k").agg(o=("s", "sum"))
    with pytest.raises(ValueError, match=r"aggs: output name 'k' is a key column's name"):
        g.groupby("k").agg(k=("v", "sum"))
    with pytest.raises(TypeError, match=r"aggs must be a non-empty mapping"):
        g.groupby("k").agg()
    with pytest.raises(TypeError, match=r"aggs\['o'\] must be a \(column, op\) pair of str, got 'v'"):
        g.groupby("k").agg(o="v")
    with pytest.raises(TypeError, match="dropna must be a bool, got 'yes'"):
        g.groupby("k", dropna="yes")


def test_sort_orders_groups_by_their_keys():
    t = pa.table({"a": pa.array([3, None, 1, 3, 2, None, 1], pa.int64()), "b": ["x", "y", "z", "w", "x", "a", "z"],
                  "v": [1.0, 2, 3, 4, 5, 6, 7]})
    got = gpuframe.groupby_agg(gpuframe.from_arrow(t), "a", {"s": ("v", "sum")}, sort=True).to_arrow()
    assert got.column("a").to_pylist() == [1, 2, 3, None]
    assert got.column("s").to_pylist() == [10.0, 5.0, 5.0, 8.0]
    two = gpuframe.from_arrow(t).groupby(["a", "b"], sort=True).agg(n=("v", "size")).to_arrow()
    assert list(zip(two.column("a").to_pylist(), two.column("b").to_pylist())) == [
        (1, "z"), (2, "x"), (3, "w"), (3, "x"), (None, "a"), (None, "y")]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.none(), st.integers(-2, 2)),
                          st.one_of(st.none(), st.sampled_from(["", "a", "ß"])),
                          st.one_of(st.none(), st.integers(-10**6, 10**6)),
                          st.one_of(st.none(), st.floats(-1e6, 1e6), st.just(float("nan")))), max_size=80))
def test_groupby_property(rows):
    cols = list(zip(*rows)) if rows else [[], [], [], []]
    t = pa.table({"a": pa.array(cols[0], pa.int64()), "b": pa.array(cols[1], pa.string()),
                  "i": pa.array(cols[2], pa.int64()), "f": pa.array(cols[3], pa.float64())})
    aggs = {"si": ("i", "sum"), "ni": ("i", "count"), "sz": ("f", "size"), "mi": ("i", "min"), "xf": ("f", "max"),
            "mf": ("f", "mean"), "vi": ("i", "var"), "md": ("i", "median"), "fi": ("f", "first"),
            "lb": ("b", "last"), "ub": ("b", "nunique")}
    if t.num_rows:
        _check(t, ["a", "b"], aggs)
    else:
        assert gpuframe.groupby_agg(gpuframe.from_arrow(t), ["a", "b"], aggs).num_rows == 0
