"""groupby-aggregate on the CPU against DuckDB: every op over the stored types, null and NaN
keys, null values (skipped, as SQL does), the group order, dropna, edge cases and bad input."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

import gpuframe
from gpuframe.ops.groupby import OPS

from .common import duck
from .common.data import random_array, set_key

SQL = {
    "sum": "SUM({v})", "count": "COUNT({v})", "size": "COUNT(*)", "mean": "AVG({v})", "min": "MIN({v})",
    "max": "MAX({v})", "var": "VAR_SAMP({v})", "std": "STDDEV_SAMP({v})", "median": "MEDIAN({v})",
    "first": "ARG_MIN({v}, rn) FILTER (WHERE {v} IS NOT NULL)",
    "last": "ARG_MAX({v}, rn) FILTER (WHERE {v} IS NOT NULL)", "nunique": "COUNT(DISTINCT {v})",
}
NUMERIC = {"sum", "mean", "var", "std", "median"}



def _duck(t: pa.Table, by: list[str], aggs: dict, where: str = "") -> dict:
    con = duck.connect()
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


def _columns_close(x, y) -> bool:
    """:func:`_close` for every row of two columns at once (numpy: millions of rows)."""
    x, y = pa.chunked_array(x).combine_chunks(), pa.chunked_array(y).combine_chunks()
    nx, ny = (np.asarray(c.is_null()) for c in (x, y))
    if len(x) != len(y) or not np.array_equal(nx, ny):
        return False
    a, b = (np.asarray(c.fill_null(0).to_numpy(zero_copy_only=False), np.float64) for c in (x, y))
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if not np.array_equal(nan_a, nan_b):
        return False
    with np.errstate(invalid="ignore"):   # inf - inf
        near = np.abs(a - b) <= np.maximum(1e-9 * np.maximum(np.abs(a), np.abs(b)), 1e-9)
    return bool(np.all((near & np.isfinite(a) & np.isfinite(b)) | (a == b) | nan_a))


def test_columns_close_tells_nulls_nans_and_values_apart():
    f = float("nan")
    assert _columns_close(pa.array([1.0, None, f, float("inf"), 0.0]), pa.array([1.0 + 1e-12, None, f, float("inf"), 1e-10]))
    for other in ([1.0, 0.0, f, float("inf"), 0.0], [1.0, None, 0.0, float("inf"), 0.0], [1.001, None, f, float("inf"), 0.0],
                  [1.0, None, f, float("-inf"), 0.0], [1.0, None, f]):
        assert not _columns_close(pa.array([1.0, None, f, float("inf"), 0.0]), pa.array(other)), other


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


# --------------------------------------------------------------------------- the CPU's fast paths
from gpuframe.backends import registry  # noqa: E402
from gpuframe.backends.cpu import groups as G  # noqa: E402
from gpuframe.ops import groupby as GB  # noqa: E402
from gpuframe.ops.keys import pair_for  # noqa: E402


def _general_path(monkeypatch_context):
    """Within the context, groupby takes group ids and one kernel per aggregation (neither the
    dense integer keys nor the one pass over the rows)."""
    monkeypatch_context.setattr(GB, "capability", lambda *args, **kw: None)


def _dense(t: pa.Table, by: list[str]):
    g = gpuframe.from_arrow(t)
    return G.dense_groups([g[k] for k in by], [pair_for(k, g[k].dtype) for k in by])


DENSE_KEYS = {
    "int8": pa.array(np.arange(-60, 60, dtype=np.int8)),
    "int16": pa.array(np.arange(-500, 1500, 7, dtype=np.int16)),
    "int32": pa.array(np.arange(-3, 9, dtype=np.int32)),
    "int64": pa.array(np.arange(10**12, 10**12 + 300, dtype=np.int64)),
    "uint8": pa.array(np.arange(0, 250, 3, dtype=np.uint8)),
    "uint64-past-int64": pa.array((np.arange(40, dtype=np.uint64) + np.uint64(2**63 + 5))),
    "ids": pa.array(np.arange(1, 101, dtype=np.int64)),
    "date32": pa.array(np.arange(18000, 18400, 9, dtype=np.int32)).cast(pa.date32()),
    "timestamp": pa.array(np.arange(0, 70, dtype=np.int64) + 1_700_000_000_000_000).cast(pa.timestamp("us")),
}


@pytest.mark.parametrize("nulls", [False, True], ids=["no-nulls", "nulls"])
@pytest.mark.parametrize("kind", list(DENSE_KEYS))
def test_dense_integer_keys_match_duckdb_and_the_general_path(monkeypatch, kind, nulls):
    """Integer keys spanning few values take the dense path (every op, every value type there,
    nulls in keys and values); DuckDB agrees, and so does the general path, group order included
    (first rows), with and without ``sort``."""
    n = 3000
    rng = np.random.default_rng(len(kind) + nulls)
    values = DENSE_KEYS[kind]
    key = values.take(pa.array(rng.integers(0, len(values), n)))
    if nulls:
        key = pa.array(key.to_pylist(), key.type, mask=rng.random(n) < 0.1)
    t = pa.table({"k": key, "i": random_array(pa.int32(), n, nulls=True, seed=8, cardinality=500),
                  "f": random_array(pa.float64(), n, nulls=nulls, seed=9, cardinality=900),
                  "s": random_array(pa.string(), n, nulls=True, seed=10, cardinality=50)})
    assert _dense(t, ["k"]) is not None
    aggs = {f"{op}_i": ("i", op) for op in OPS}
    aggs.update({f"{op}_f": ("f", op) for op in ("sum", "mean", "std", "count", "min", "median")})
    aggs.update({"min_s": ("s", "min"), "last_s": ("s", "last"), "n_s": ("s", "count")})
    got = _check(t, ["k"], aggs)
    for sort in (False, True):
        dense = gpuframe.groupby_agg(gpuframe.from_arrow(t), "k", aggs, sort=sort).to_arrow()
        with monkeypatch.context() as m:
            _general_path(m)
            general = gpuframe.groupby_agg(gpuframe.from_arrow(t), "k", aggs, sort=sort).to_arrow()
        assert dense.column_names == general.column_names
        for name in dense.column_names:
            a, b = dense.column(name).to_pylist(), general.column(name).to_pylist()
            assert all(_close(x, y, None) for x, y in zip(a, b)) and len(a) == len(b), name
    assert got.column("k").to_pylist() == list(dict.fromkeys(key.to_pylist()))


def test_dense_two_keys_and_key_order(monkeypatch):
    """Two integer keys with nulls: slots in the keys' order (nulls last) for ``sort=True``,
    first rows otherwise; ``dropna``; the general path agrees."""
    n = 4000
    rng = np.random.default_rng(3)
    a = pa.array(rng.integers(-5, 5, n), pa.int64(), mask=rng.random(n) < 0.05)
    b = pa.array(rng.integers(100, 140, n).astype(np.int16), pa.int16(), mask=rng.random(n) < 0.05)
    t = pa.table({"a": a, "b": b, "v": random_array(pa.float64(), n, nulls=True, seed=11),
                  "w": random_array(pa.int64(), n, seed=12, cardinality=10**6)})
    assert _dense(t, ["a", "b"]) is not None
    aggs = {"s": ("v", "sum"), "m": ("w", "mean"), "n": ("v", "size"), "sw": ("w", "sum"), "u": ("w", "nunique"),
            "md": ("v", "median"), "x": ("w", "max"), "c": ("v", "count")}
    _check(t, ["a", "b"], aggs)
    _check(t, ["a", "b"], aggs, dropna=True)
    srt = gpuframe.groupby_agg(gpuframe.from_arrow(t), ["a", "b"], aggs, sort=True).to_arrow()
    keys = list(zip(srt.column("a").to_pylist(), srt.column("b").to_pylist()))
    assert keys == sorted(keys, key=lambda k: tuple((x is None, x if x is not None else 0) for x in k))
    first = gpuframe.groupby_agg(gpuframe.from_arrow(t), ["a", "b"], aggs).to_arrow()
    assert list(zip(first.column("a").to_pylist(), first.column("b").to_pylist())) == list(
        dict.fromkeys(zip(a.to_pylist(), b.to_pylist())))
    with monkeypatch.context() as m:
        _general_path(m)
        assert gpuframe.groupby_agg(gpuframe.from_arrow(t), ["a", "b"], aggs, sort=True).to_arrow().equals(srt)


def test_dense_declines_other_keys():
    n = 1000
    wide = pa.table({"k": pa.array(np.arange(n, dtype=np.int64) * 10**9)})
    assert _dense(wide, ["k"]) is None                        # a range far wider than the rows
    assert _dense(pa.table({"k": random_array(pa.float64(), n, cardinality=5)}), ["k"]) is None
    assert _dense(pa.table({"k": random_array(pa.string(), n, cardinality=5)}), ["k"]) is None
    assert _dense(pa.table({"k": random_array(pa.bool_(), n)}), ["k"]) is None
    straddle = pa.table({"k": pa.array([2**63 - 1, 2**63], pa.uint64())})   # as int64 words: -2**63 .. 2**63-1
    assert _dense(straddle, ["k"]) is None
    assert gpuframe.groupby_agg(gpuframe.from_arrow(straddle), "k", {"n": ("k", "size")}).num_rows == 2
    # two keys whose ranges multiply past the limit
    ab = pa.table({"a": pa.array(np.arange(n) % 1000), "b": pa.array(np.arange(n) * 7 % 997)})
    assert _dense(ab, ["a", "b"]) is None


@pytest.mark.parametrize("groups", [7, 300_000], ids=["few-groups", "many-groups"])
def test_one_pass_sums_match_one_kernel_each(monkeypatch, groups):
    """``group_reduce_many``: more columns than one pass takes (several passes), a column with
    several ops (sum, mean, var, count), nulls, ints and floats (with many groups a kernel
    each) — equal to the kernels run one by one."""
    n = 600_000
    rng = np.random.default_rng(5)
    cols = {"k": pa.array(rng.integers(0, groups, n) * 3 + 11)}
    for i in range(6):
        cols[f"i{i}"] = random_array(pa.int64(), n, nulls=i % 2 == 1, seed=20 + i, cardinality=10**5)
        cols[f"f{i}"] = random_array(pa.float32() if i == 3 else pa.float64(), n, nulls=i % 2 == 0, seed=40 + i)
    t = pa.table(cols)
    aggs = {}
    for i in range(6):
        aggs.update({f"s_i{i}": (f"i{i}", "sum"), f"m_f{i}": (f"f{i}", "mean"), f"c_f{i}": (f"f{i}", "count")})
    aggs.update({"m_i0": ("i0", "mean"), "v_i0": ("i0", "var"), "sd_i0": ("i0", "std"), "z": ("i0", "size"),
                 "c_i1": ("i1", "count"), "s_f1": ("f1", "sum"), "x": ("f2", "max")})
    fast = gpuframe.groupby_agg(gpuframe.from_arrow(t), "k", aggs).to_arrow()
    with monkeypatch.context() as m:
        _general_path(m)
        slow = gpuframe.groupby_agg(gpuframe.from_arrow(t), "k", aggs).to_arrow()
    assert fast.column_names == slow.column_names
    assert fast.schema.types == slow.schema.types
    for name in fast.column_names:
        if name.startswith(("s_i", "c_", "z", "k")):
            assert fast.column(name).equals(slow.column(name)), name    # integers exactly
        else:
            assert _columns_close(fast.column(name), slow.column(name)), name


def test_one_pass_integer_sums_that_may_overflow_are_checked():
    """An int sum joins the one pass only when its values' range rules out an overflow; big
    values take the checked kernel: an overflow raises, a sum that fits is exact."""
    big = 2**62
    ok = pa.table({"k": [1, 1, 2, 2], "v": pa.array([big, -big, big, 5], pa.int64()), "w": [1.0, 2.0, 3.0, 4.0]})
    got = gpuframe.groupby_agg(gpuframe.from_arrow(ok), "k", {"s": ("v", "sum"), "m": ("w", "mean")})
    assert got.to_arrow().to_pylist() == [{"k": 1, "s": 0, "m": 1.5}, {"k": 2, "s": big + 5, "m": 3.5}]
    bad = pa.table({"k": [1, 1, 2], "v": pa.array([big, big, 1], pa.int64()), "w": [1.0, 2.0, 3.0]})
    with pytest.raises(OverflowError, match="sum of column 'v' overflows int64"):
        gpuframe.groupby_agg(gpuframe.from_arrow(bad), "k", {"s": ("v", "sum"), "m": ("w", "mean")})


def test_dense_keys_of_a_slice_and_all_null_keys():
    """A sliced table (offsets into the key's values and validity) and a key whose every value is
    null take the dense path with the right groups."""
    n = 5000
    rng = np.random.default_rng(9)
    key = pa.array(rng.integers(0, 30, n), pa.int32(), mask=rng.random(n) < 0.2)
    t = pa.table({"k": key, "v": random_array(pa.int64(), n, nulls=True, seed=13, cardinality=100)})
    part = t.slice(1237, 2000)
    assert _dense(part, ["k"]) is not None
    got = gpuframe.groupby_agg(gpuframe.from_arrow(t).slice(1237, 2000), "k",
                               {"s": ("v", "sum"), "n": ("v", "size"), "m": ("v", "mean")}).to_arrow()
    want = _duck(part, ["k"], {"s": ("v", "sum"), "n": ("v", "size"), "m": ("v", "mean")})
    assert got.column("k").to_pylist() == list(dict.fromkeys(part.column("k").to_pylist()))
    for k, s, c, m in zip(*[got.column(x).to_pylist() for x in ("k", "s", "n", "m")]):
        ws, wc, wm = want[(set_key(k),)]
        assert (s, c) == (ws, wc) and _close(m, wm, "mean")
    nulls = pa.table({"k": pa.array([None] * 300, pa.int64()), "v": np.arange(300)})
    assert _dense(nulls, ["k"]) is not None
    assert gpuframe.groupby_agg(gpuframe.from_arrow(nulls), "k", {"s": ("v", "sum"), "n": ("v", "size")},
                                sort=True).to_arrow().to_pylist() == [{"k": None, "s": 44850, "n": 300}]


def test_min_max_of_many_groups_keep_values_beside_rows():
    """Past 16k groups min/max keep each group's best value beside its row: DuckDB agrees
    (integers, floats with NaN, nulls; string min/max unchanged)."""
    n = 200_000
    rng = np.random.default_rng(21)
    f = rng.random(n)
    f[rng.random(n) < 0.01] = np.nan
    t = pa.table({"k": pa.array(rng.integers(0, 40_000, n) * 7919),
                  "i": random_array(pa.int64(), n, nulls=True, seed=22, cardinality=10**6),
                  "u": random_array(pa.uint64(), n, nulls=False, seed=23),
                  "f": pa.array(f, mask=rng.random(n) < 0.05)})
    assert _dense(t, ["k"]) is None
    got = _check(t, ["k"], {"mx_i": ("i", "max"), "mn_i": ("i", "min"), "mx_f": ("f", "max"), "mn_f": ("f", "min"),
                            "mx_u": ("u", "max")})
    assert got.num_rows > 16_384


@pytest.mark.parametrize("key", ["int", "string", "two"])
def test_chunked_kernels_merge_their_chunks(monkeypatch, key):
    # the threaded kernels (group_sums, first_last, key_range) work by chunks of rows that the
    # caller merges: five chunks whatever the threads (group_sums: of 16k rows at least),
    # against DuckDB
    from gpuframe.kernels import group_cpu as K

    monkeypatch.setattr(K, "nchunks_for", lambda n: max(1, min(5, n // 1000 + 1)))
    n = 70_001
    t = pa.table({"k": random_array(pa.int64(), n, nulls=True, seed=11, cardinality=60),
                  "s": random_array(pa.string(), n, nulls=True, seed=12, cardinality=50),
                  "i": random_array(pa.int64(), n, nulls=True, seed=13, cardinality=10_000),
                  "f": random_array(pa.float64(), n, nulls=True, seed=14, cardinality=10_000)})
    by = {"int": ["k"], "string": ["s"], "two": ["k", "s"]}[key]
    aggs = {"si": ("i", "sum"), "sf": ("f", "sum"), "mf": ("f", "mean"), "ci": ("i", "count"), "n": ("i", "size"),
            "fi": ("i", "first"), "lf": ("f", "last"), "xi": ("i", "max")}
    _check(t, by, aggs)
