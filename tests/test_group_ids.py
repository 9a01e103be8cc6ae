"""The CPU's group ids (unique, set operations and groupby all start from them) against a
plain-Python reference: every row's group numbered in the order of the groups' first rows, and
each group's first row, exactly. Each path is taken on purpose: strings kept in the slots (up to
15 bytes) or hashed and compared byte for byte (longer), fixed-width keys with and without nulls,
dictionaries (repeated and null entries, null indices), several columns grouped with the group
ids of the columns before them (or, past the per-chunk group limit, their ids combined into one
word, regrouped when the product of the group counts would not fit, and grouped by the join's
tables), and the join's tables for one column past that limit. ``first_rows`` (the groups' first rows
alone, the tables' chain heads past the limit) is checked beside every case, and
``distinct_rows`` (intersect's and difference's rows) against the same reference."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from gpuframe.backends.cpu import groups as G
from gpuframe.core.column import Column
from gpuframe.ops.keys import pair_for

from .common.data import set_key



def _reference(arrays: list[pa.Array]) -> tuple[np.ndarray, np.ndarray]:
    cols = [a.to_pylist() for a in arrays]
    n = len(arrays[0])
    ids: dict = {}
    gid = np.empty(n, np.int64)
    first: list[int] = []
    for i in range(n):
        k = tuple(set_key(c[i]) for c in cols)
        if k not in ids:
            ids[k] = len(first)
            first.append(i)
        gid[i] = ids[k]
    return gid, np.array(first, np.int64)


def _check(*arrays: pa.Array) -> int:
    cols = [Column.from_arrow(a) for a in arrays]
    pairs = [pair_for(f"c{i}", c.dtype) for i, c in enumerate(cols)]
    gid, first = G.group_ids(cols, pairs)
    want_gid, want_first = _reference(list(arrays))
    assert gid.dtype in (np.int32, np.int64)
    np.testing.assert_array_equal(np.asarray(gid, np.int64), want_gid)
    np.testing.assert_array_equal(np.asarray(first, np.int64), want_first)
    # unique's rows without the group ids (the partitioned tables' chain heads past the limit)
    np.testing.assert_array_equal(G.first_rows(cols, pairs), want_first)
    return len(want_first)


def _strings(rng: np.random.Generator, n: int, pool: int, null_share: float = 0.1) -> list:
    # lengths around the slot's limits (7, 8, 9, 15, 16 bytes), NUL bytes ("a" and "a\0" differ),
    # non-ASCII, strings equal up to byte 15 and different after it
    values = ["", "a", "a\0", "\0", "abcdefg", "abcdefgh", "abcdefghi", "x" * 15, "x" * 16, "x" * 15 + "y",
              "ééé", "日本語のテキスト", "y" * 40, "y" * 39 + "z", "z" * 100]
    values += ["".join(chr(97 + int(c)) for c in rng.integers(0, 3, int(rng.integers(0, 24)))) for _ in range(pool)]
    out = [values[i] for i in rng.integers(0, len(values), n)]
    for i in np.flatnonzero(rng.random(n) < null_share):
        out[i] = None
    return out


@pytest.mark.parametrize("n", [1, 2, 300, 70_000])
@pytest.mark.parametrize("dtype", [pa.string(), pa.large_string()], ids=str)
def test_string_keys(n, dtype):
    rng = np.random.default_rng(n)
    _check(pa.array(_strings(rng, n, 40), dtype))
    _check(pa.array(_strings(rng, n, 40, null_share=0.0), dtype))


def test_string_slice_and_every_row_distinct():
    rng = np.random.default_rng(5)
    arr = pa.array(_strings(rng, 5000, 200), pa.string())
    _check(arr.slice(1234, 2500))
    distinct = pa.array([f"row-{i:06d}-{'q' * (i % 30)}" for i in range(40_000)])
    assert _check(distinct) == 40_000


@pytest.mark.parametrize("dtype", [pa.int8(), pa.int64(), pa.uint64(), pa.float32(), pa.float64(), pa.bool_(),
                                   pa.date32(), pa.timestamp("us")], ids=str)
@pytest.mark.parametrize("nulls", [False, True])
def test_fixed_width_keys(dtype, nulls):
    rng = np.random.default_rng(7)
    n = 70_000
    if pa.types.is_floating(dtype):
        vals = [float(x) for x in rng.integers(-5, 5, n)]
        for i in rng.integers(0, n, 300):
            vals[i] = float("nan")
        for i in rng.integers(0, n, 300):
            vals[i] = -0.0
    elif pa.types.is_boolean(dtype):
        vals = [bool(x) for x in rng.integers(0, 2, n)]
    elif pa.types.is_unsigned_integer(dtype):
        vals = [int(x) for x in rng.integers(0, 50, n)] + [2**64 - 1]
    else:
        vals = [int(x) for x in rng.integers(-60, 60, n)]
    if nulls:
        for i in rng.integers(0, n, 500):
            vals[i] = None
    if dtype == pa.date32():
        arr = pa.array(vals, pa.int32()).view(dtype)
    elif dtype == pa.timestamp("us"):
        arr = pa.array(vals, pa.int64()).view(dtype)
    else:
        arr = pa.array(vals, dtype)
    _check(arr)


def test_dictionary_keys_with_repeated_and_null_entries():
    dictionary = pa.array(["b", "a", None, "b", "long string over fifteen bytes", "a"])
    idx = pa.array([0, 1, 2, 3, None, 5, 4, 1, 3, 0, None, 2] * 500, pa.int32())
    arr = pa.DictionaryArray.from_arrays(idx, dictionary)
    _check(arr)
    # no null entries: null indices are one group of their own
    arr2 = pa.DictionaryArray.from_arrays(pa.array([1, None, 0, 1, None], pa.int8()), pa.array(["x", "x"]))
    assert _check(arr2) == 2


def test_several_columns():
    rng = np.random.default_rng(11)
    n = 70_000
    a = pa.array(_strings(rng, n, 20))
    b = pa.array([None if x == 0 else int(x) for x in rng.integers(0, 30, n)], pa.int32())
    c = pa.array(rng.integers(0, 3, n).astype(np.float64))
    one = pa.array(["same"] * n)
    d = pa.DictionaryArray.from_arrays(pa.array([None if x == 0 else int(x) for x in rng.integers(0, 4, n)], pa.int32()),
                                       pa.array(["p", None, "q", "p"]))
    _check(a, b)
    _check(a, b, c, one)
    _check(b, d)
    _check(d, a)
    _check(one, one)                                          # every column one group
    _check(one, b)
    _check(pa.array(np.arange(n)), a)                         # the first column all distinct


@pytest.mark.parametrize("dense", [0, 4], ids=["hashed", "direct"])
def test_combined_ids_regrouped_when_the_product_would_not_fit(monkeypatch, dense):
    monkeypatch.setattr(G, "_LOCAL_GROUPS", 20)        # chaining stops at the second column
    monkeypatch.setattr(G, "_COMBINE_LIMIT", 2000)
    monkeypatch.setattr(G, "_DENSE_MAX_FACTOR", dense)  # the final words by direct address or not
    rng = np.random.default_rng(3)
    n = 30_000
    cols = [pa.array(rng.integers(0, 12, n)) for _ in range(5)]
    _check(*cols)


def test_past_the_per_chunk_group_limit(monkeypatch):
    monkeypatch.setattr(G, "_LOCAL_GROUPS", 50)
    rng = np.random.default_rng(9)
    n = 70_000
    s = pa.array(_strings(rng, n, 400))
    ints = pa.array([None if x == 0 else int(x) for x in rng.integers(0, 3000, n)])
    _check(s)
    _check(ints)
    _check(s, ints)
    _check(pa.array(rng.integers(0, 5000, n)), pa.array(rng.integers(0, 5000, n)))


def test_first_rows_after_a_sample(monkeypatch):
    """``first_rows`` guesses from the first rows whether a column has many groups (then every
    column goes straight to the partitioned tables' chain heads) or few: both guesses, right
    and wrong (rows sorted so that the sample misleads), give the reference's rows."""
    monkeypatch.setattr(G, "_SAMPLE_ROWS", 2048)
    rng = np.random.default_rng(17)
    n = 70_000
    many = pa.array([f"k{x}-{'z' * (x % 20)}" for x in rng.integers(0, 60_000, n)])
    few = pa.array(_strings(rng, n, 10))
    ints = pa.array([None if x == 0 else int(x) for x in rng.integers(0, 40, n)])
    # the first 8192 rows all distinct, the rest a few values: a sample that says "many"
    misleading = pa.array([f"u{i}" for i in range(8192)] + [f"r{x}" for x in rng.integers(0, 5, n - 8192)])
    for cols in ([many], [many.slice(777, 50_000)], [many, ints], [few, ints], [ints, many], [misleading, ints],
                 [pa.DictionaryArray.from_arrays(pa.array(rng.integers(0, 3, n), pa.int32()), pa.array(["a", "b", "a"])),
                  many]):
        _check(*cols)


def test_empty():
    gid, first = G.group_ids([Column.from_arrow(pa.array([], pa.string()))], [pair_for("s", pa.string())])
    assert len(gid) == 0 and len(first) == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_median_by_selection_matches_a_sort(seed):
    """The quickselect median against numpy's sort: groups of 1 to ~400 values (past the
    selection's insertion-sort cut-off), many ties, NaN above every number, nulls skipped."""
    rng = np.random.default_rng(seed)
    n = 60_000
    gid = np.sort(rng.integers(0, 300, n)).astype(np.int32)
    rng.shuffle(gid)
    ngroups = int(gid.max()) + 1
    vals = rng.integers(-20, 20, n).astype(np.float64) if seed != 1 else rng.normal(size=n)
    vals[rng.random(n) < 0.02] = np.nan
    valid = rng.random(n) > 0.05
    col = Column.from_arrow(pa.array(vals, mask=~valid))
    got = G.group_reduce(gid, ngroups, col, "median").to_arrow().to_pylist()
    for g in range(ngroups):
        v = np.sort(vals[(gid == g) & valid])     # numpy sorts NaN last
        if len(v) == 0:
            assert got[g] is None
            continue
        k = len(v)
        want = v[k // 2] if k % 2 else (v[k // 2 - 1] + v[k // 2]) / 2.0
        assert (math.isnan(want) and math.isnan(got[g])) or got[g] == want, (g, got[g], want)


# --------------------------------------------------------------------------- distinct_rows
def _check_distinct(left: list, right: list, expect_path: bool = True) -> None:
    """``distinct_rows`` of the left arrays against the right ones, both hows, against the
    reference: the first row of every left group whose row is (semi) / is not (anti) a right
    row, rows compared as the promoted join keys compare them (null == null, NaN == NaN)."""
    import gpuframe
    from gpuframe.ops.join import _keys

    lt = gpuframe.from_arrow(pa.table({f"c{i}": a for i, a in enumerate(left)}))
    rt = gpuframe.from_arrow(pa.table({f"c{i}": a for i, a in enumerate(right)}))
    names = lt.column_names
    pairs, lkeys, rkeys = _keys(lt, rt, names, names, lt.device)
    _, first = _reference(list(left))
    promoted = [a.cast(p.out_type) if not pa.types.is_dictionary(a.type) else a.cast(pa.string())
                for a, p in zip(left, pairs)]
    rprom = [a.cast(p.out_type) if not pa.types.is_dictionary(a.type) else a.cast(pa.string())
             for a, p in zip(right, pairs)]
    lrows = list(zip(*[[set_key(v) for v in a.to_pylist()] for a in promoted]))
    rset = set(zip(*[[set_key(v) for v in a.to_pylist()] for a in rprom]))
    for how in ("semi", "anti"):
        got = G.distinct_rows(lkeys, rkeys, pairs, how)
        if got is None:
            assert not expect_path, "distinct_rows declined"
            continue
        want = [int(i) for i in first if (lrows[i] in rset) == (how == "semi")]
        np.testing.assert_array_equal(got, np.array(want, np.int64), err_msg=how)


def test_distinct_rows_against_the_reference(monkeypatch):
    monkeypatch.setattr(G, "_FEW_GROUPS_SHARE", 0.0)     # the tables of every left row, always
    rng = np.random.default_rng(21)
    n, m = 70_000, 30_000                                  # partitioned tables (thousands of rows a side)
    li = pa.array([None if x == 0 else int(x) for x in rng.integers(0, 9000, n)], pa.int32())
    ri = pa.array([None if x == 0 else int(x) for x in rng.integers(4000, 13000, m)], pa.int64())
    ls = pa.array(_strings(rng, n, 60))
    rs = pa.DictionaryArray.from_arrays(pa.array(rng.integers(0, 40, m), pa.int32()),
                                        pa.array(_strings(rng, 40, 60, null_share=0.2)))
    fv = rng.integers(-3, 3, n).astype(np.float64)
    fv[rng.random(n) < 0.05] = np.nan
    fv[rng.random(n) < 0.05] = -0.0
    lf = pa.array(fv, mask=rng.random(n) < 0.03)
    rfv = rng.integers(-3, 3, m).astype(np.float32)
    rfv[rng.random(m) < 0.05] = np.nan
    rf = pa.array(rfv, mask=rng.random(m) < 0.03)
    _check_distinct([li], [ri])                            # int32 with int64
    _check_distinct([li, ls], [ri, rs.cast(pa.string())])
    _check_distinct([ls, li], [rs, ri])                    # strings with a dictionary
    _check_distinct([lf, li], [rf, ri])                    # float64 with float32: NaN, -0.0
    # one key holding half the left rows (a chain of 35,000 rows, probed by every right row)
    heavy = pa.array(np.where(rng.random(n) < 0.5, 7, rng.integers(0, 50_000, n)))
    _check_distinct([heavy], [pa.array(rng.integers(0, 20, m))])
    _check_distinct([heavy[:1]], [pa.array([7, 7])])       # one row, no partitions
    _check_distinct([heavy], [pa.array([], pa.int64())])   # nothing to match


def test_distinct_rows_declines_few_groups():
    """A first column with few groups: ``None`` (the caller's ``unique`` and a join on the few
    rows); a bad ``how`` is refused."""
    import gpuframe
    from gpuframe.ops.join import _keys

    t = gpuframe.from_arrow(pa.table({"k": np.random.default_rng(4).integers(0, 5, 20_000)}))
    pairs, lk, rk = _keys(t, t, ["k"], ["k"], t.device)
    assert G.distinct_rows(lk, rk, pairs, "semi") is None
    with pytest.raises(ValueError, match="how must be 'semi' or 'anti', got 'inner'"):
        G.distinct_rows(lk, rk, pairs, "inner")


@pytest.mark.parametrize("threads", [2, 3])
def test_chunks_renumbered_or_left_as_they_are(threads):
    """Chunks whose groups keep their numbers (values repeating in one order: every chunk sees
    them as the first does) are left as they are, the others' rows renumbered in pieces: the
    group ids equal the reference either way (strings and a fixed-width key with nulls)."""
    import numba

    if numba.config.NUMBA_NUM_THREADS < threads:
        pytest.skip(f"numba has {numba.config.NUMBA_NUM_THREADS} threads")
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        n = 100_000
        periodic = [f"v{i % 37}" for i in range(n)]
        rng = np.random.default_rng(4)
        shuffled = [f"v{int(i)}" for i in rng.integers(0, 37, n)]
        late = [f"v{i % 5}" if i < n // 2 else f"w{int(i) % 11}" for i in range(n)]   # new groups later
        for values in (periodic, shuffled, late):
            assert _check(pa.array(values, pa.string())) == len(set(values))
        ints = pa.array(np.arange(n) % 91 * 1000, pa.int64(), mask=rng.random(n) < 0.1)
        _check(ints, pa.array(shuffled, pa.string()))
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("kinds", [("int64",), ("string",), ("int64", "string"), ("float64", "int32", "bool")])
def test_chunk_types_predict_what_local_groups_passes(kinds):
    # _prepared_ids has the chunk function compile in a child (on a cold cache) with these
    # types before the keys exist: they must be the types the keys turn out to have, or the
    # child compiles a signature nobody calls
    import numba

    n = 50
    data = {"int64": pa.array(np.arange(n) % 7), "string": pa.array([f"s{i % 5}" for i in range(n)]),
            "float64": pa.array(np.arange(n) * 0.5), "int32": pa.array(np.arange(n, dtype=np.int32) % 3),
            "bool": pa.array(np.arange(n) % 2 == 0)}
    cols = [Column.from_arrow(data[k]) for k in kinds]
    pairs = [pair_for(f"c{i}", c.dtype) for i, c in enumerate(cols)]
    sk = G._group_side(cols, pairs)
    got = tuple(numba.typeof(v) for v in (sk.keys, sk.kmode, sk.verify, sk.words, sk.starts, sk.ends, sk.chars))
    assert got == G._chunk_types(n)[:7]
    # the rest: what local_groups makes (first rows, four int64 bounds, the chunk-local ids)
    ids = np.empty(n, G._id_dtype(n))
    assert G._chunk_types(n)[7:] == (numba.typeof(np.empty(n, np.int64)),) + (numba.types.int64,) * 4 + (
        numba.typeof(ids),)
