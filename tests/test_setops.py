"""unique, union, intersect, difference, concat and filter on the CPU: DuckDB's DISTINCT /
UNION / INTERSECT / EXCEPT as the oracle for the rows, a plain-Python reference for the order and
for which row is kept; every stored type, nulls, NaN and -0.0, edge cases and bad input."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpuframe

from .common import duck
from .common.data import DTYPE_IDS, DTYPES, random_array, set_key



def _rows(t: pa.Table, names=None) -> list[tuple]:
    names = names or t.column_names
    cols = [t.column(n).to_pylist() for n in names]
    return [tuple(set_key(c[i]) for c in cols) for i in range(t.num_rows)]


def _exact(t: pa.Table) -> tuple:
    """The table's schema and values, NaN equal to NaN, -0.0 told from 0.0."""
    def cell(v):
        if isinstance(v, float) and (math.isnan(v) or v == 0.0):
            return ("nan",) if math.isnan(v) else ("zero", math.copysign(1.0, v))
        return v

    return t.schema, [[cell(v) for v in c.to_pylist()] for c in t.columns]


def _same(got: pa.Table, want: pa.Table) -> bool:
    return _exact(got) == _exact(want)


def _ref_unique(t: pa.Table, subset, keep) -> list[int]:
    keys = _rows(t, subset)
    seen: dict = {}
    for i, k in enumerate(keys):
        if keep == "last" or k not in seen:
            seen[k] = i
    return pa.array(sorted(seen.values()), pa.int64())


def _duck(sql: str, **tables) -> Counter:
    con = duck.connect()
    for name, tab in tables.items():
        con.register(name, tab)
    return Counter(_rows(con.sql(sql).to_arrow_table()))


def _table(n: int, seed: int, card: int, dtypes=(pa.int64(), pa.string(), pa.float64())) -> pa.Table:
    return pa.table({f"c{i}": random_array(t, n, nulls=True, seed=seed + i, cardinality=card)
                     for i, t in enumerate(dtypes)})


# --------------------------------------------------------------------------- unique
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_unique_every_type_matches_duckdb_distinct(dtype):
    t = pa.table({"k": random_array(dtype, 3000, nulls=True, seed=3, cardinality=60),
                  "v": pa.array(np.arange(3000))})
    got = gpuframe.unique(gpuframe.from_arrow(t), "k").to_arrow()
    assert got.column_names == ["k", "v"] and got.schema == t.schema
    want = _ref_unique(t, ["k"], "first")
    assert _same(got, t.take(want))
    assert Counter(_rows(got, ["k"])) == _duck("SELECT DISTINCT k FROM t", t=t.select(["k"]))


@pytest.mark.parametrize("keep", ["first", "last", "any"])
@pytest.mark.parametrize("n", [0, 1, 2, 5000, 70000])
def test_unique_keep_and_sizes(keep, n):
    t = _table(n, seed=n, card=max(1, n // 7))
    g = gpuframe.from_arrow(t)
    got = gpuframe.unique(g, ["c0", "c1"], keep=keep).to_arrow()
    assert _same(got, t.take(_ref_unique(t, ["c0", "c1"], "first" if keep == "any" else keep)))
    assert g.unique(["c0", "c1"], keep=keep).equals(g.drop_duplicates(["c0", "c1"], keep=keep))


def test_unique_float_canon_and_all_columns():
    t = pa.table({"x": pa.array([np.nan, -0.0, 0.0, float("nan"), None, None, 1.0, 1.0]),
                  "y": pa.array(["a", "a", "a", "a", None, None, "", ""])})
    got = gpuframe.unique(gpuframe.from_arrow(t)).to_arrow()
    assert _same(got, t.take([0, 1, 4, 6]))
    assert Counter(_rows(got)) == _duck("SELECT DISTINCT * FROM t", t=t)


def test_unique_edge_cases():
    one = pa.table({"k": pa.array([None] * 50, pa.int64()), "v": np.arange(50)})
    assert gpuframe.unique(gpuframe.from_arrow(one), "k").to_arrow().equals(one.take([0]))
    same = pa.table({"k": [7] * 10})
    assert gpuframe.unique(gpuframe.from_arrow(same), keep="last").to_arrow().equals(same.take([9]))
    distinct = pa.table({"k": np.arange(10000)[::-1].copy()})
    g = gpuframe.from_arrow(distinct)
    assert gpuframe.unique(g) is g                      # nothing to drop: the table itself
    ext = pa.table({"k": pa.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max, -1, np.iinfo(np.int64).min])})
    assert gpuframe.unique(gpuframe.from_arrow(ext)).to_arrow().equals(ext.take([0, 1, 2]))
    sliced = pa.table({"k": ["x", "ß", "x", "", "日本", ""]}).slice(1)
    assert gpuframe.unique(gpuframe.from_arrow(sliced)).to_arrow().equals(sliced.take([0, 1, 2, 3]))


def test_unique_bad_input():
    g = gpuframe.from_arrow(pa.table({"k": [1, 2], "b": ["x", "y"]}))
    with pytest.raises(KeyError, match=r"subset: the table has no column 'z'; its columns are \['k', 'b'\]"):
        gpuframe.unique(g, "z")
    with pytest.raises(ValueError, match=r"keep must be one of \['first', 'last', 'any'\], got 'none'"):
        gpuframe.unique(g, keep="none")
    with pytest.raises(TypeError, match="subset must be a column name or a list of column names, got 3"):
        gpuframe.unique(g, 3)
    with pytest.raises(ValueError, match="subset must name at least one column"):
        gpuframe.unique(g, [])
    with pytest.raises(TypeError, match="table must be a gpuframe.Table, got Table"):
        gpuframe.unique(pa.table({"k": [1]}))


# --------------------------------------------------------------------------- union / intersect / difference
def _two(seed: int, n: int = 4000, card: int = 300):
    a = _table(n, seed, card, (pa.int32(), pa.string(), pa.float64()))
    b = _table(n // 2, seed, card, (pa.int64(), pa.dictionary(pa.int16(), pa.string()), pa.float32()))
    return a, b


def test_union_matches_duckdb_and_promotes_types():
    a, b = _two(1)
    ga, gb = gpuframe.from_arrow(a), gpuframe.from_arrow(b.select(["c2", "c0", "c1"]))   # matched by name
    got = gpuframe.union(ga, gb).to_arrow()
    assert got.schema == pa.schema([("c0", pa.int64()), ("c1", pa.string()), ("c2", pa.float64())])
    b_cast = b.cast(got.schema)
    assert Counter(_rows(got)) == _duck("SELECT * FROM a UNION SELECT * FROM b", a=a.cast(got.schema), b=b_cast)
    assert len(set(_rows(got))) == got.num_rows
    # the left table's distinct rows first, in order
    first_left = _ref_unique(a, None, "first").to_pylist()
    rows_a = _rows(a)
    assert _rows(got)[:len(first_left)] == [rows_a[i] for i in first_left]
    every = gpuframe.union(ga, gb, distinct=False).to_arrow()
    assert every.num_rows == a.num_rows + b.num_rows
    assert Counter(_rows(every)) == Counter(_rows(a.cast(got.schema)) + _rows(b_cast))


@pytest.mark.parametrize("op, sql", [("intersect", "INTERSECT"), ("difference", "EXCEPT")])
def test_intersect_difference_match_duckdb(op, sql):
    a, b = _two(2, card=40)
    ga, gb = gpuframe.from_arrow(a), gpuframe.from_arrow(b)
    got = getattr(gpuframe, op)(ga, gb).to_arrow()
    schema = pa.schema([("c0", pa.int64()), ("c1", pa.string()), ("c2", pa.float64())])
    assert got.schema == pa.schema([("c0", pa.int32()), ("c1", pa.string()), ("c2", pa.float64())])
    assert Counter(_rows(got)) == _duck(f"SELECT * FROM a {sql} SELECT * FROM b", a=a.cast(schema), b=b.cast(schema))
    assert len(set(_rows(got))) == got.num_rows
    # left order
    pos = {r: i for i, r in reversed(list(enumerate(_rows(a))))}
    order = [pos[r] for r in _rows(got)]
    assert order == sorted(order)


def test_set_ops_nulls_nan_and_empty_sides():
    a = pa.table({"x": pa.array([np.nan, -0.0, None, 2.0, 2.0]), "s": ["a", "b", None, "c", "c"]})
    b = pa.table({"x": pa.array([float("nan"), 0.0, None]), "s": ["a", "b", None]})
    ga, gb = gpuframe.from_arrow(a), gpuframe.from_arrow(b)
    assert _same(gpuframe.intersect(ga, gb).to_arrow(), a.take([0, 1, 2]))
    assert _same(gpuframe.difference(ga, gb).to_arrow(), a.take([3]))
    empty = gpuframe.from_arrow(b.slice(0, 0))
    assert gpuframe.intersect(ga, empty).num_rows == 0
    assert _same(gpuframe.difference(ga, empty).to_arrow(), a.take([0, 1, 2, 3]))
    assert gpuframe.union(empty, empty).num_rows == 0
    assert gpuframe.intersect(empty, ga).num_rows == 0


def test_set_ops_bad_input():
    g = gpuframe.from_arrow(pa.table({"k": [1, 2], "s": ["a", "b"]}))
    with pytest.raises(ValueError, match=r"union: right must have the columns of left \(\['k', 's'\]\); it lacks "
                                         r"\['s'\] and has \['t'\] besides"):
        gpuframe.union(g, gpuframe.from_arrow(pa.table({"k": [1], "t": ["x"]})))
    with pytest.raises(TypeError, match=r"intersect: column 's' is string in left and int64 in right"):
        gpuframe.intersect(g, gpuframe.from_arrow(pa.table({"k": [1], "s": [3]})))
    with pytest.raises(TypeError, match=r"difference: column 'k' is int64 in left and uint64 in right; no integer"):
        gpuframe.difference(g, gpuframe.from_arrow(pa.table({"k": pa.array([1], pa.uint64()), "s": ["a"]})))
    with pytest.raises(TypeError, match="distinct must be a bool, got 1"):
        gpuframe.union(g, g, distinct=1)
    with pytest.raises(TypeError, match="right must be a gpuframe.Table"):
        gpuframe.union(g, None)


@pytest.mark.parametrize("op", ["unique", "union", "intersect", "difference"])
def test_set_ops_many_groups_one_pass_path(monkeypatch, op):
    """Many distinct rows (the CPU's one-pass paths: the chain heads of the join's partitioned
    tables, the left rows' tables marked by the right rows) against DuckDB and, row for row and
    in order, against the general path (``unique`` then a semi or anti join)."""
    import gpuframe.ops.setops as S
    from gpuframe.backends.cpu import groups as G

    monkeypatch.setattr(G, "_LOCAL_GROUPS", 64)       # past the chunk tables' limit at this size
    a = _table(30_000, 7, 12_000, (pa.int64(), pa.string(), pa.float64()))
    b = _table(20_000, 8, 12_000, (pa.int32(), pa.dictionary(pa.int16(), pa.string()), pa.float32()))
    ga, gb = gpuframe.from_arrow(a), gpuframe.from_arrow(b)
    f = getattr(gpuframe, op)
    from gpuframe.backends import registry

    calls = []
    for name in ("first_rows", "distinct_rows"):
        real = getattr(G, name)
        monkeypatch.setitem(registry._IMPLS["cpu"], name,
                            lambda *args, _real=real, _name=name: calls.append(_name) or _real(*args))
    got = (f(ga) if op == "unique" else f(ga, gb)).to_arrow()
    assert calls, "the one-pass path was not taken"
    with monkeypatch.context() as m:
        m.setattr(S, "capability", lambda *args, **kw: None)
        general = (f(ga) if op == "unique" else f(ga, gb)).to_arrow()
    assert _same(got, general)
    schema = got.schema
    sql = {"unique": "SELECT DISTINCT * FROM a", "union": "SELECT * FROM a UNION SELECT * FROM b",
           "intersect": "SELECT * FROM a INTERSECT SELECT * FROM b",
           "difference": "SELECT * FROM a EXCEPT SELECT * FROM b"}[op]
    assert Counter(_rows(got)) == _duck(sql, a=a.cast(schema), b=b.cast(schema))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_one_pass_paths_every_type(monkeypatch, dtype):
    """Every stored type first (the sample, the key preparation and the tables of each), with
    nulls: the one-pass paths give the general path's rows, in order."""
    import gpuframe.ops.setops as S
    from gpuframe.backends import registry
    from gpuframe.backends.cpu import groups as G

    monkeypatch.setattr(G, "_LOCAL_GROUPS", 64)
    monkeypatch.setattr(G, "_FEW_GROUPS_SHARE", 0.0)

    def side(seed: int, n: int) -> pa.Table:
        return pa.table({"k": random_array(dtype, n, nulls=True, seed=seed, cardinality=3000),
                         "v": random_array(pa.int64(), n, nulls=True, seed=seed + 1, cardinality=3)})

    a, b = side(1, 6000), side(2, 5000)
    ga, gb = gpuframe.from_arrow(a), gpuframe.from_arrow(b)
    calls = []
    for name in ("first_rows", "distinct_rows"):
        real = getattr(G, name)
        monkeypatch.setitem(registry._IMPLS["cpu"], name,
                            lambda *args, _real=real: (lambda r: calls.append(r is not None) or r)(_real(*args)))
    for op in ("unique", "intersect", "difference"):
        f = getattr(gpuframe, op)
        calls.clear()
        got = (f(ga) if op == "unique" else f(ga, gb)).to_arrow()
        assert calls and all(calls), op        # taken, and not declined
        with monkeypatch.context() as m:
            m.setattr(S, "capability", lambda *args, **kw: None)
            general = (f(ga) if op == "unique" else f(ga, gb)).to_arrow()
        assert _same(got, general), op


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.none(), st.integers(-3, 3)),
                          st.one_of(st.none(), st.sampled_from(["", "a", "ß", "aa"])),
                          st.one_of(st.none(), st.sampled_from([0.0, -0.0, 1.5, float("nan")]))), max_size=60),
       st.lists(st.tuples(st.one_of(st.none(), st.integers(-3, 3)),
                          st.one_of(st.none(), st.sampled_from(["", "a", "ß"])),
                          st.one_of(st.none(), st.sampled_from([0.0, 1.5, float("nan")]))), max_size=40))
def test_set_ops_property(lrows, rrows):
    def table(rows):
        cols = list(zip(*rows)) if rows else [[], [], []]
        return pa.table({"i": pa.array(cols[0], pa.int64()), "s": pa.array(cols[1], pa.string()),
                         "f": pa.array(cols[2], pa.float64())})

    a, b = table(lrows), table(rrows)
    ga, gb = gpuframe.from_arrow(a), gpuframe.from_arrow(b)
    ra, rb = _rows(a), _rows(b)
    ua = [ra[i] for i in _ref_unique(a, None, "first").to_pylist()]
    assert _rows(gpuframe.unique(ga).to_arrow()) == ua
    assert _rows(gpuframe.intersect(ga, gb).to_arrow()) == [r for r in ua if r in set(rb)]
    assert _rows(gpuframe.difference(ga, gb).to_arrow()) == [r for r in ua if r not in set(rb)]
    ub = [r for r in dict.fromkeys(ra + rb)]
    assert _rows(gpuframe.union(ga, gb).to_arrow()) == ub


# --------------------------------------------------------------------------- concat / filter
def test_concat_matches_pyarrow_and_checks():
    a, b = _two(3, n=100)
    got = gpuframe.concat([gpuframe.from_arrow(a), gpuframe.from_arrow(b), gpuframe.from_arrow(a.slice(3, 5))])
    schema = pa.schema([("c0", pa.int64()), ("c1", pa.string()), ("c2", pa.float64())])
    want = pa.concat_tables([a.cast(schema), b.cast(schema), a.slice(3, 5).cast(schema)])
    assert got.to_arrow().equals(want)
    d = pa.table({"k": pa.array(["x", "y", "x"]).dictionary_encode()})
    e = pa.table({"k": pa.array(["z", "x"]).dictionary_encode()})
    both = gpuframe.concat([gpuframe.from_arrow(d), gpuframe.from_arrow(e)]).to_arrow()
    assert both.column("k").to_pylist() == ["x", "y", "x", "z", "x"]
    with pytest.raises(ValueError, match="tables must hold at least one table"):
        gpuframe.concat([])
    with pytest.raises(TypeError, match=r"tables\[1\] must be a gpuframe.Table, got int"):
        gpuframe.concat([gpuframe.from_arrow(a), 3])


@pytest.mark.parametrize("small_blocks", [False, True])
def test_concat_of_large_fixed_columns_copies_in_parallel_blocks(monkeypatch, small_blocks):
    """Fixed-width columns without nulls past PARALLEL_CONCAT_BYTES are copied block by block on
    every thread (slices, every width, a promoted type); a column with nulls takes pyarrow's way."""
    from gpuframe.backends.cpu import select as S

    if small_blocks:    # blocks that split every part at odd places, and the parallel path for all
        monkeypatch.setattr(S, "COPY_BLOCK_BYTES", 4093)
        monkeypatch.setattr(S, "PARALLEL_CONCAT_BYTES", 0)
    rng = np.random.default_rng(4)
    n = 300_000

    def part(seed_shift: int, rows: int) -> pa.Table:
        return pa.table({"i8": pa.array(rng.integers(-100, 100, rows).astype(np.int8)),
                         "i16": pa.array(rng.integers(-9, 9, rows).astype(np.int16)),
                         "f32": pa.array(rng.random(rows, dtype=np.float32)),
                         "i64": pa.array(np.arange(rows, dtype=np.int64) + seed_shift),
                         "ts": pa.array(np.arange(rows, dtype=np.int64), pa.timestamp("ms")),
                         "n": pa.array(np.where(rng.random(rows) < 0.1, None, rng.random(rows)), pa.float64())})
    a, b, c = part(0, n), part(10**9, n + 7), part(5, 1001)
    c = c.set_column(3, "i64", c.column("i64").cast(pa.int32()))          # promoted to int64
    tables = [gpuframe.from_arrow(a.slice(11, n - 20)), gpuframe.from_arrow(b), gpuframe.from_arrow(c)]
    got = gpuframe.concat(tables).to_arrow()
    want = pa.concat_tables([a.slice(11, n - 20), b, c.cast(a.schema)])
    assert got.equals(want)
    assert S.concat_arrays([np.arange(5), np.arange(3)], np.int64).tolist() == [0, 1, 2, 3, 4, 0, 1, 2]


def test_filter_masks():
    t = pa.table({"k": np.arange(10), "s": [str(i) for i in range(10)]})
    g = gpuframe.from_arrow(t)
    m = np.arange(10) % 3 == 0
    assert g.filter(m).to_arrow().equals(t.filter(pa.array(m)))
    col = gpuframe.Column.from_arrow(pa.array([True, None, False, True, True, None, False, False, True, True]))
    assert gpuframe.filter(g, col).to_arrow().equals(t.take([0, 3, 4, 8, 9]))
    assert g.filter(pa.chunked_array([pa.array(m[:4]), pa.array(m[4:])])).to_arrow().equals(t.filter(pa.array(m)))
    assert g.filter(np.ones(10, bool)) is g
    assert g.filter(np.zeros(10, bool)).num_rows == 0
    torch = pytest.importorskip("torch")
    assert g.filter(torch.from_numpy(m)).to_arrow().equals(t.filter(pa.array(m)))
    with pytest.raises(ValueError, match=r"mask must have one value per row of the table \(10\), got 3"):
        g.filter(np.ones(3, bool))
    with pytest.raises(TypeError, match="mask must hold bools, got an array of int64"):
        g.filter(np.arange(10))
    with pytest.raises(TypeError, match="mask must hold bools, got a pyarrow array of int64"):
        g.filter(pa.array(np.arange(10)))
    with pytest.raises(TypeError, match="mask must be a bool gpuframe Column"):
        g.filter("yes")


@pytest.mark.parametrize("n", [0, 1, 7, 40_000, 100_001])
def test_flagged_rows_matches_flatnonzero(n):
    """The CPU's row numbers of a mask (filter, valid rows, the set operations' kept rows),
    counted and written per thread, against numpy: sparse, dense, empty and full masks, and
    masks whose chunks end in unflagged rows (no write may land in the next chunk's room)."""
    from gpuframe.backends.cpu.select import flagged_rows

    rng = np.random.default_rng(n)
    masks = [rng.random(n) < p for p in (0.0, 0.01, 0.5, 0.99, 1.0)]
    tail = np.ones(n, np.bool_)
    tail[n // 2 - 100:n // 2] = False      # the end of the first of two chunks unflagged
    tail[-50:] = False
    masks += [tail, tail.view(np.uint8)]
    for m in masks:
        got = flagged_rows(m)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, np.flatnonzero(m))


def test_csv_round_trip(tmp_path):
    t = pa.table({"k": pa.array([1, None, 3, 4]), "s": ["a", "b,c", None, ""], "f": [1.5, None, -0.0, 2.0]})
    p = tmp_path / "t.csv"
    gpuframe.from_arrow(t).to_csv(p)
    back = gpuframe.read_csv(p)
    assert back.to_arrow().column("k").to_pylist() == [1, None, 3, 4]
    assert back.to_arrow().column("s").to_pylist() == ["a", "b,c", None, ""]
    with pytest.raises(FileNotFoundError, match="read_csv: no such file"):
        gpuframe.read_csv(tmp_path / "missing.csv")
    with pytest.raises(TypeError, match=r"read_csv got unknown keyword arguments \['sep'\]"):
        gpuframe.read_csv(p, sep=";")


# --------------------------------------------------------------------------- cross product
def test_cross_merge(monkeypatch):
    a = pa.table({"k": [1, 2, 3], "v": ["a", None, "c"]})
    b = pa.table({"v": [0.5, 1.5], "w": pa.array([True, None])})
    ga, gb = gpuframe.from_arrow(a), gpuframe.from_arrow(b)
    got = gpuframe.merge(ga, gb, how="cross").to_arrow()
    assert got.column_names == ["k", "v_x", "v_y", "w"]
    assert got.column("k").to_pylist() == [1, 1, 2, 2, 3, 3]
    assert got.column("v_x").to_pylist() == ["a", "a", None, None, "c", "c"]
    assert got.column("v_y").to_pylist() == [0.5, 1.5] * 3
    assert got.column("w").to_pylist() == [True, None] * 3
    assert ga.merge(gb, how="cross", suffixes=("_l", "_r")).column_names == ["k", "v_l", "v_r", "w"]
    assert gpuframe.merge(ga, gpuframe.from_arrow(b.slice(0, 0)), how="cross").num_rows == 0
    with pytest.raises(ValueError, match="how='cross' takes no keys; got on='k'"):
        gpuframe.merge(ga, gb, on="k", how="cross")
    with pytest.raises(ValueError, match=r"how must be one of \[.*'cross'\], got 'product'"):
        gpuframe.merge(ga, gb, how="product")
    from gpuframe.core import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: (100, "a test limit"))
    monkeypatch.setattr(memory, "GUARD_MIN_BYTES", 0)
    with pytest.raises(MemoryError, match=r"^merge: the cross product \(3 x 2\) of 6 rows needs about"):
        gpuframe.merge(ga, gb, how="cross")
