"""``gpuframe.sort`` / ``sort_indices`` on the CPU backend.

The oracle is DuckDB's ``ORDER BY ... NULLS LAST/FIRST`` over the same Arrow table with a row
number as the last key (so its order is the stable one); dictionary columns are decoded to their
strings for it. Edge cases: 0 and 1 rows, all-null and all-equal keys, INT64 min/max, NaN, -0.0
and infinities, empty, non-ASCII and NUL-carrying strings, strings that share long prefixes,
dictionaries with null, duplicate and unsorted entries, sliced tables, and every bad argument.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gpuframe
from gpuframe.core.buffer import Buffer
from gpuframe.core.column import Column
from gpuframe.core.device import CPU
from gpuframe.core.table import Table

from .common import duck
from .common.data import DTYPE_IDS, DTYPES, random_array

duckdb = pytest.importorskip("duckdb")

RN = "__rn"


def _oracle_table(table: pa.Table) -> pa.Table:
    cols = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_dictionary(col.type):
            col = pc.cast(col, col.type.value_type)
        cols[name] = col
    cols[RN] = pa.array(np.arange(table.num_rows, dtype=np.int64))
    return pa.table(cols)


def duckdb_order(table: pa.Table, by, descending=False, nulls_last=True) -> list[int]:
    """The stable sort permutation by DuckDB."""
    by = [by] if isinstance(by, str) else list(by)
    desc = [descending] * len(by) if isinstance(descending, bool) else list(descending)
    t = _oracle_table(table)
    nulls = "NULLS LAST" if nulls_last else "NULLS FIRST"
    order = ", ".join(f'"{k}" {"DESC" if d else "ASC"} {nulls}' for k, d in zip(by, desc))
    con = duck.connect()
    con.register("t", t)
    rows = con.execute(f'SELECT "{RN}" FROM t ORDER BY {order}, "{RN}"').fetchall()
    con.close()
    return [r[0] for r in rows]


def perm_of(table: pa.Table, by, **kw) -> list[int]:
    perm = gpuframe.sort_indices(gpuframe.from_arrow(table), by, **kw)
    assert isinstance(perm, np.ndarray) and perm.dtype == np.int64 and perm.shape == (table.num_rows,)
    return perm.tolist()


def check(table: pa.Table, by, descending=False, nulls_last=True) -> None:
    got = perm_of(table, by, descending=descending, nulls_last=nulls_last)
    assert got == duckdb_order(table, by, descending, nulls_last)


# --------------------------------------------------------------------------- every key type
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("nulls", [False, True], ids=["nonull", "nulls"])
def test_one_key_matches_duckdb(dtype, nulls):
    n = 600
    table = pa.table({"k": random_array(dtype, n, nulls=nulls, seed=3, cardinality=150),
                      "v": pa.array(np.arange(n))})
    for desc in (False, True):
        for nulls_last in (True, False):
            check(table, "k", desc, nulls_last)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sort_table_is_take_of_the_permutation(dtype):
    n = 300
    table = pa.table({"k": random_array(dtype, n, nulls=True, seed=5, cardinality=40),
                      "s": random_array(pa.string(), n, nulls=True, seed=6),
                      "b": random_array(pa.bool_(), n, nulls=True, seed=7)})
    out = gpuframe.sort(gpuframe.from_arrow(table), "k", descending=True)
    expected = table.take(pa.array(duckdb_order(table, "k", True)))
    assert out.to_arrow().equals(expected)
    via_method = gpuframe.from_arrow(table).sort("k", descending=True)
    assert via_method.to_arrow().equals(expected)


MULTI = [
    {"a": pa.string(), "b": pa.int32()},
    {"a": pa.float64(), "b": pa.dictionary(pa.int32(), pa.string())},
    {"a": pa.bool_(), "b": pa.timestamp("us"), "c": pa.large_string()},
    {"a": pa.int64(), "b": pa.int64(), "c": pa.uint8()},
    {"a": pa.dictionary(pa.int8(), pa.string()), "b": pa.float32(), "c": pa.date32()},
]


@pytest.mark.parametrize("types", MULTI, ids=lambda t: "-".join(str(v) for v in t.values()))
@pytest.mark.parametrize("nulls", [False, True], ids=["nonull", "nulls"])
def test_multi_key_matches_duckdb(types, nulls):
    n = 700
    table = pa.table({name: random_array(t, n, nulls=nulls, seed=11 + i, cardinality=6 + 5 * i)
                      for i, (name, t) in enumerate(types.items())})
    by = list(types)
    for desc in ([False] * len(by), [True] * len(by), [i % 2 == 0 for i in range(len(by))]):
        for nulls_last in (True, False):
            check(table, by, desc, nulls_last)
    check(table, list(reversed(by)))


def test_large_parallel_int64_and_strings():
    # above the CPU backend's parallel threshold: several chunks per pass
    n = 300_000
    rng = np.random.default_rng(0)
    a = rng.integers(-(1 << 62), 1 << 62, n)
    b = rng.integers(0, 50, n).astype(np.int32)
    table = pa.table({"a": a, "b": b})
    assert perm_of(table, "a") == np.argsort(a, kind="stable").tolist()
    lex = np.lexsort((np.arange(n), -a, b))   # b ascending, a descending, then row order
    assert perm_of(table, ["b", "a"], descending=[False, True]) == lex.tolist()
    words = np.array([f"w{x:x}" for x in rng.integers(0, 1 << 40, n)], dtype=object)
    strings = pa.table({"s": pa.array(words, pa.string())})
    expected = sorted(range(n), key=lambda i: (words[i].encode(), i))
    assert perm_of(strings, "s") == expected


def _large_sort_calls(monkeypatch, carry: bool = False) -> list:
    """Each large sort's outcome (ran, or declined); with ``carry``, (a payload was offered to
    carry, ran)."""
    from gpuframe.backends.cpu import sort as cpu_sort

    calls: list = []
    real = cpu_sort.CpuSorter.large_sort

    def spy(self, *args, **kwargs):
        perm = real(self, *args, **kwargs)
        ran = perm is not None
        calls.append((kwargs.get("carry", args[5] if len(args) > 5 else None) is not None, ran) if carry else ran)
        return perm

    monkeypatch.setattr(cpu_sort.CpuSorter, "large_sort", spy)
    return calls


@pytest.mark.parametrize("shape", ["full", "narrow", "dups", "skewed", "runs", "powers", "ties"])
def test_bucket_sort_of_large_keys(monkeypatch, shape):
    # past LARGE_MIN_ROWS one key sorts by its top digit into buckets, then each bucket in the
    # cache, most significant digit first; keys piled into one bucket (skewed) decline to the
    # passes over memory. runs: ranges that part only in their last bits (the digits narrow
    # with the range); powers: one bit set below a common top, so that ranges split lopsided at
    # every digit and long runs tie; ties: runs of equal words longer than an insertion sort's
    rng = np.random.default_rng(5)
    n = 400_000
    a = {"full": rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, n, dtype=np.int64),
         "narrow": rng.integers(-300_000, 300_000, n) * 7 + 11,
         "dups": rng.integers(0, 40, n) << 50,
         "skewed": np.where(rng.random(n) < 0.8, 7, rng.integers(0, 1 << 40, n)),
         "runs": (rng.integers(0, 5000, n) << 44) + rng.integers(0, 64, n) - (1 << 62),
         "powers": (rng.integers(0, 64, n) << 56) + (1 << rng.integers(0, 56, n)),
         "ties": rng.choice(rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, n // 20,
                                         dtype=np.int64), n)}[shape]
    calls = _large_sort_calls(monkeypatch)
    table = pa.table({"a": pa.array(a, pa.int64()), "v": pa.array(np.arange(n) % 1000)})
    order = np.argsort(a, kind="stable")
    assert perm_of(table, "a") == order.tolist()
    ranks = np.empty(n, np.int64)
    ranks[order] = np.concatenate(([0], np.cumsum(a[order][1:] != a[order][:-1])))
    assert perm_of(table, "a", descending=True) == np.lexsort((np.arange(n), -ranks)).tolist()
    assert calls == ([False, False] if shape == "skewed" else [True, True])


@pytest.mark.parametrize("dtype", [pa.int8(), pa.uint16(), pa.int32(), pa.uint32(), pa.int64(), pa.uint64(),
                                   pa.date32(), pa.timestamp("ns", tz="Europe/Paris")], ids=str)
@pytest.mark.parametrize("n", [2, 1000, 300_000])
def test_sorted_table_with_the_key_decoded_from_its_words(dtype, n):
    # one integer key without nulls comes out of the sort already sorted (no gather): the table
    # must equal the stable sort's, in both directions, whatever the payloads
    rng = np.random.default_rng(n)
    info = np.iinfo(dtype.to_pandas_dtype()) if pa.types.is_integer(dtype) else np.iinfo(
        np.int32 if pa.types.is_date32(dtype) else np.int64)
    raw = rng.integers(info.min, info.max, n, dtype=np.int64 if info.min < 0 or info.bits < 64 else np.uint64,
                       endpoint=True)
    raw[: min(n, 3)] = [info.min, info.max, info.min][: min(n, 3)]
    key = pa.array(raw.astype(info.dtype)).cast(dtype) if pa.types.is_integer(dtype) else \
        pa.array(raw.astype(info.dtype)).view(dtype) if False else pa.array(raw.astype(info.dtype)).cast(dtype)
    table = pa.table({"p": pa.array(np.arange(n)), "k": key, "s": pa.array([str(i % 97) for i in range(n)])})
    for desc in (False, True):
        got = gpuframe.sort(gpuframe.from_arrow(table), "k", descending=desc).to_arrow()
        assert got.equals(table.sort_by([("k", "descending" if desc else "ascending")])), desc
        only = gpuframe.sort(gpuframe.from_arrow(table.select(["k"])), ["k"], descending=desc).to_arrow()
        assert only.equals(got.select(["k"]))


def test_sort_keyed_declines_nulls_floats_and_many_keys():
    from gpuframe.backends.cpu.sort import sort_keyed

    col = gpuframe.from_arrow(pa.table({"k": pa.array([3, None, 1], pa.int64())}))["k"]
    perm, key, carried = sort_keyed([col], [False], True)
    assert perm.tolist() == [2, 0, 1] and key is None and carried is None
    f = gpuframe.from_arrow(pa.table({"k": pa.array([3.0, -0.0, 0.0])}))["k"]
    assert sort_keyed([f], [False], True)[1] is None
    two = gpuframe.from_arrow(pa.table({"a": [2, 1], "b": [1, 2]}))
    assert sort_keyed([two["a"], two["b"]], [False, False], True)[1] is None
    k = gpuframe.from_arrow(pa.table({"k": pa.array([5, -2, 5, 0], pa.int16())}))["k"]
    perm, key, carried = sort_keyed([k], [True], True)
    assert perm.tolist() == [0, 2, 3, 1] and key.to_arrow().to_pylist() == [5, 5, 0, -2] and carried is None


@pytest.mark.parametrize("ptype, carried", [
    (pa.int32(), True), (pa.uint32(), True), (pa.float32(), True), (pa.date32(), True), (pa.int64(), True),
    (pa.float64(), True), (pa.timestamp("us", tz="UTC"), True), (pa.int16(), False), (pa.bool_(), False),
    (pa.string(), False), ("int32 with nulls", False)], ids=str)
@pytest.mark.parametrize("shape", ["full", "ties"])
def test_one_payload_column_is_carried_through_the_large_sort(monkeypatch, ptype, carried, shape):
    # a table of one integer key and one other column of 4 or 8 bytes a value without nulls:
    # the large sort moves the payload with its rows instead of gathering it by the permutation.
    # The table must equal the stable sort's either way (ties keep the input order), both
    # directions, the payload's NaN bits and the column order kept
    rng = np.random.default_rng(17)
    n = 300_000
    info = np.iinfo(np.int64)
    a = rng.integers(info.min, info.max, n, dtype=np.int64)
    if shape == "ties":
        a = rng.choice(a[: n // 50], n)
    nulls = ptype == "int32 with nulls"
    ptype = pa.int32() if nulls else ptype
    raw = rng.integers(0, 2**31 - 1, n)
    if pa.types.is_floating(ptype):
        pay = pa.array(rng.standard_normal(n).astype(ptype.to_pandas_dtype()))
        vals = pay.to_numpy(zero_copy_only=False).copy()
        vals[::7] = np.nan
        vals[1::11] = -0.0
        pay = pa.array(vals)
    elif pa.types.is_string(ptype):
        pay = pa.array([str(v) for v in raw % 1000])
    elif pa.types.is_boolean(ptype):
        pay = pa.array(raw % 2 == 0)
    else:
        pay = pa.array(raw % 30_000 if ptype.bit_width == 16 else raw.astype(np.int32) if ptype.bit_width == 32
                       else raw).cast(ptype)
    if nulls:
        pay = pa.array(raw.astype(np.int32), mask=raw % 5 == 0)
    table = pa.table({"p": pay, "a": a})
    calls = _large_sort_calls(monkeypatch, carry=True)
    for desc in (False, True):
        got = gpuframe.sort(gpuframe.from_arrow(table), "a", descending=desc).to_arrow()
        expect = table.sort_by([("a", "descending" if desc else "ascending")])
        assert got.column_names == ["p", "a"]
        assert got.column("a").equals(expect.column("a")), desc
        # NaN payloads compare unequal as values: compare their bits
        gp, ep = got.column("p").combine_chunks(), expect.column("p").combine_chunks()
        if pa.types.is_floating(ptype):
            w = np.dtype(f"u{ptype.bit_width // 8}")
            assert np.array_equal(gp.to_numpy().view(w), ep.to_numpy().view(w)), desc
        else:
            assert gp.equals(ep), desc
    assert calls == [(carried, True)] * 2
    # sliced: the payload's offset is honoured
    part = table.slice(1000, 200_000)
    got = gpuframe.sort(gpuframe.from_arrow(part), "a").to_arrow()
    assert got.column("a").equals(part.sort_by("a").column("a"))
    if not pa.types.is_floating(ptype):
        assert got.column("p").combine_chunks().equals(part.sort_by("a").column("p").combine_chunks())


# --------------------------------------------------------------------------- edge cases
@pytest.mark.parametrize("dtype", [pa.int64(), pa.string(), pa.float64(), pa.bool_(),
                                   pa.dictionary(pa.int32(), pa.string())], ids=str)
def test_zero_and_one_row(dtype):
    for n in (0, 1):
        table = pa.table({"k": random_array(dtype, n, seed=1), "v": pa.array(np.arange(n))})
        assert perm_of(table, "k") == list(range(n))
        out = gpuframe.sort(gpuframe.from_arrow(table), ["k", "v"], descending=True)
        assert out.num_rows == n and out.to_arrow().equals(table)


@pytest.mark.parametrize("dtype", [pa.int64(), pa.int16(), pa.string(), pa.float32(), pa.bool_(),
                                   pa.dictionary(pa.int32(), pa.string())], ids=str)
def test_all_null_and_all_equal_keys_keep_the_input_order(dtype):
    n = 257
    nulls = pa.nulls(n, dtype)
    equal = random_array(dtype, n, seed=2, cardinality=1)
    for arr in (nulls, equal):
        table = pa.table({"k": arr})
        for desc in (False, True):
            for nulls_last in (True, False):
                assert perm_of(table, "k", descending=desc, nulls_last=nulls_last) == list(range(n))


def test_int64_extremes():
    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    vals = [hi, 0, lo, -1, None, 1, lo, hi, lo + 1, hi - 1]
    table = pa.table({"k": pa.array(vals, pa.int64())})
    for desc in (False, True):
        for nulls_last in (True, False):
            check(table, "k", desc, nulls_last)
    assert perm_of(table, "k") == [2, 6, 8, 3, 1, 5, 9, 0, 7, 4]
    u = pa.table({"k": pa.array([np.iinfo(np.uint64).max, 0, 1 << 63, (1 << 63) - 1], pa.uint64())})
    assert perm_of(u, "k") == [1, 3, 2, 0]


@pytest.mark.parametrize("ftype", [pa.float64(), pa.float32()], ids=str)
def test_nan_negative_zero_and_infinities(ftype):
    nan = float("nan")
    vals = [0.0, -0.0, nan, float("inf"), -float("inf"), None, 1.5, -0.0, -nan, -2.5, 0.0]
    table = pa.table({"k": pa.array(vals, ftype)})
    # NaN (either sign) after +inf; -0.0 ties with 0.0 (input order kept); nulls last
    assert perm_of(table, "k") == [4, 9, 0, 1, 7, 10, 6, 3, 2, 8, 5]
    # descending: NaN first among the values; nulls still last
    assert perm_of(table, "k", descending=True) == [2, 8, 3, 6, 0, 1, 7, 10, 9, 4, 5]
    assert perm_of(table, "k", nulls_last=False)[0] == 5
    for desc in (False, True):
        for nulls_last in (True, False):
            check(table, "k", desc, nulls_last)


def test_other_nan_payloads_tie_with_nan():
    bits = np.array([0x7FF8000000000000, 0xFFF0000000000001, 0x7FF0000000000001, 0x3FF0000000000000,
                     0x7FF0000000000000], dtype=np.uint64)
    table = pa.table({"k": pa.array(bits.view(np.float64))})
    assert perm_of(table, "k") == [3, 4, 0, 1, 2]


@pytest.mark.parametrize("stype", [pa.string(), pa.large_string()], ids=str)
def test_strings_bytes_order(stype):
    vals = ["", "a", "a\x00", "a\x00b", "ab", "ß", "日本", "z", "", None, "abcdefgh", "abcdefghi",
            "abcdefgh\x00", "abcdefgh" * 4, "abcdefgh" * 4 + "a", "abcdefgh" * 3 + "z", "Ä", "é", "e"]
    table = pa.table({"k": pa.array(vals, stype)})
    valid = [i for i, v in enumerate(vals) if v is not None]
    expected = sorted(valid, key=lambda i: (vals[i].encode(), i)) + [9]
    assert perm_of(table, "k") == expected
    for desc in (False, True):
        for nulls_last in (True, False):
            check(table, "k", desc, nulls_last)


def test_strings_with_long_shared_prefixes_and_duplicates():
    rng = np.random.default_rng(4)
    prefix = "customer#0000000000-"  # longer than two 8-byte words
    vals = [prefix + str(x) * int(rng.integers(1, 4)) for x in rng.integers(0, 30, 1500)]
    vals[::7] = [prefix] * len(vals[::7])
    table = pa.table({"k": pa.array(vals), "j": pa.array(rng.integers(0, 3, 1500))})
    check(table, "k")
    check(table, ["j", "k"], [True, False])


def test_dictionary_with_null_duplicate_and_unsorted_entries():
    dictionary = pa.array(["pear", None, "apple", "pear", "", "Zed"])
    indices = pa.array([0, 1, 2, 3, 4, 5, None, 3, 0, 2, 1, 5], pa.int32())
    arr = pa.DictionaryArray.from_arrays(indices, dictionary)
    table = pa.table({"k": arr, "v": pa.array(np.arange(12))})
    # a null entry is a null key; the two "pear" entries tie
    assert perm_of(table, "k") == [4, 5, 11, 2, 9, 0, 3, 7, 8, 1, 6, 10]
    for desc in (False, True):
        for nulls_last in (True, False):
            check(table, "k", desc, nulls_last)
    empty = pa.DictionaryArray.from_arrays(pa.array([None, None, None], pa.int16()), pa.array([], pa.string()))
    assert perm_of(pa.table({"k": empty}), "k") == [0, 1, 2]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sliced_tables(dtype):
    n = 400
    table = pa.table({"k": random_array(dtype, n, nulls=True, seed=8, cardinality=30),
                      "j": random_array(pa.int8(), n, nulls=True, seed=9, cardinality=3)})
    for off, length in ((3, 250), (64, 100), (131, 269)):
        part = table.slice(off, length)
        t = gpuframe.from_arrow(table).slice(off, length)
        assert t["k"].offset != 0
        expected = duckdb_order(part, ["j", "k"], [False, True])
        assert gpuframe.sort_indices(t, ["j", "k"], descending=[False, True]).tolist() == expected
        assert gpuframe.sort(t, ["j", "k"], descending=[False, True]).to_arrow().equals(
            part.take(pa.array(expected)))


# --------------------------------------------------------------------------- properties
_TYPES = [pa.int8(), pa.int32(), pa.int64(), pa.uint16(), pa.uint64(), pa.float32(), pa.float64(), pa.bool_(),
          pa.string(), pa.large_string(), pa.date32(), pa.timestamp("ms"), pa.dictionary(pa.int16(), pa.string())]


@st.composite
def tables(draw):
    n = draw(st.integers(0, 200))
    nkeys = draw(st.integers(1, 3))
    cols = {}
    for j in range(nkeys):
        t = draw(st.sampled_from(_TYPES))
        card = draw(st.integers(1, max(1, n)))
        cols[f"k{j}"] = random_array(t, n, nulls=draw(st.booleans()), seed=draw(st.integers(0, 10_000)),
                                     cardinality=card)
    desc = draw(st.lists(st.booleans(), min_size=nkeys, max_size=nkeys))
    return pa.table(cols), list(cols), desc, draw(st.booleans())


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_property_matches_duckdb(case):
    table, by, desc, nulls_last = case
    check(table, by, desc, nulls_last)


@st.composite
def float_tables(draw):
    special = st.sampled_from([0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-300, -1e300])
    vals = draw(st.lists(st.one_of(st.none(), st.floats(allow_nan=True, width=64), special), max_size=120))
    ints = draw(st.lists(st.integers(-(1 << 63), (1 << 63) - 1), min_size=len(vals), max_size=len(vals)))
    return pa.table({"f": pa.array(vals, pa.float64()), "i": pa.array(ints, pa.int64())})


@settings(max_examples=60, deadline=None)
@given(float_tables(), st.booleans(), st.booleans(), st.booleans())
def test_property_floats_and_int64_extremes(table, desc_f, desc_i, nulls_last):
    check(table, ["f", "i"], [desc_f, desc_i], nulls_last)
    check(table, ["i", "f"], [desc_i, desc_f], nulls_last)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=20), st.sampled_from(["", "a", "a\x00", "ab" * 9])),
                max_size=150), st.booleans(), st.booleans())
def test_property_strings_sorted_and_stable(vals, desc, nulls_last):
    table = pa.table({"s": pa.array(vals, pa.string())})
    got = perm_of(table, "s", descending=desc, nulls_last=nulls_last)
    assert sorted(got) == list(range(len(vals)))
    valid = [i for i, v in enumerate(vals) if v is not None]
    nulls = [i for i, v in enumerate(vals) if v is None]
    if desc:
        # stable descending: by key descending, ties in input order
        ordered = sorted(valid, key=lambda i: (_neg(vals[i].encode()), i))
    else:
        ordered = sorted(valid, key=lambda i: (vals[i].encode(), i))
    assert got == (ordered + nulls if nulls_last else nulls + ordered)


class _neg:
    """Reverses the order of bytes objects (for a stable descending sort key)."""

    def __init__(self, b: bytes) -> None:
        self.b = b

    def __lt__(self, other: "_neg") -> bool:
        return self.b > other.b

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _neg) and self.b == other.b


# --------------------------------------------------------------------------- bad arguments
@pytest.fixture
def small():
    return gpuframe.from_arrow(pa.table({"a": [3, 1, 2], "b": ["x", "y", "z"]}))


def test_unknown_column_names_it_and_lists_the_columns(small):
    with pytest.raises(KeyError, match=r"'nope'.*\['a', 'b'\]"):
        gpuframe.sort(small, "nope")
    with pytest.raises(KeyError, match=r"'c'.*\['a', 'b'\]"):
        gpuframe.sort_indices(small, ["a", "c"])


@pytest.mark.parametrize("by, exc, match", [
    ([], ValueError, r"by must name at least one column, got an empty list"),
    ((), ValueError, r"by must name at least one column, got an empty tuple"),
    (3, TypeError, r"by must be a column name .* got int 3"),
    (None, TypeError, r"by must be a column name .* got NoneType None"),
    (["a", 1], TypeError, r"by must be a column name .* got 1 in \['a', 1\]"),
])
def test_bad_by(small, by, exc, match):
    with pytest.raises(exc, match=match):
        gpuframe.sort(small, by)


@pytest.mark.parametrize("descending, exc, match", [
    ([True], ValueError, r"descending must have one bool per key column \(2\), got 1"),
    ([True, False, True], ValueError, r"descending must have one bool per key column \(2\), got 3"),
    ("yes", TypeError, r"descending must be a bool .* got str 'yes'"),
    (1, TypeError, r"descending must be a bool .* got int 1"),
    ([True, 0], TypeError, r"descending must be a bool or a list of bools, got 0 in \[True, 0\]"),
])
def test_bad_descending(small, descending, exc, match):
    with pytest.raises(exc, match=match):
        gpuframe.sort_indices(small, ["a", "b"], descending=descending)


@pytest.mark.parametrize("value", [1, None, "last"])
def test_bad_nulls_last(small, value):
    with pytest.raises(TypeError, match=rf"nulls_last must be a bool, got {type(value).__name__} {value!r}"):
        gpuframe.sort(small, "a", nulls_last=value)


def test_bad_table():
    with pytest.raises(TypeError, match="table must be a gpuframe Table, got Table"):
        gpuframe.sort(pa.table({"a": [1]}), "a")


def test_unsortable_type_names_the_column_and_type(small):
    nested = Column(pa.list_(pa.int64()), 3, Buffer(np.zeros(3, np.int64), CPU))
    table = Table([("a", small["a"]), ("l", nested)])
    with pytest.raises(TypeError, match=r"cannot sort by column 'l' of type list<item: int64>"):
        gpuframe.sort(table, ["a", "l"])
    # an unsortable column that is not a key is only carried along... by take, which needs a
    # stored type too; sorting by the other column alone still checks only the keys
    assert gpuframe.sort_indices(table, "a").tolist() == [1, 2, 0]


def test_numpy_bools_are_accepted(small):
    assert gpuframe.sort_indices(small, "a", descending=np.bool_(True), nulls_last=np.bool_(False)).tolist() == \
        [0, 2, 1]


# --------------------------------------------------------------------------- per-row functions
def test_per_row_word_functions_agree_on_cpu_and_in_python():
    """The per-row functions of gpuframe.kernels.sort (what the CUDA simulator runs as plain
    Python) give the CPU copies' words, and the words order values as the sort promises."""
    from numba import njit

    from gpuframe.kernels import sort as SK
    from gpuframe.kernels.per_row import cpu

    order_word = cpu(SK.order_word)
    sort_word = cpu(SK.sort_word)
    prefix = cpu(SK.string_prefix)
    length_class = cpu(SK.length_class)

    @njit
    def words_cpu(raw, kind, width, desc):
        out = np.empty(raw.shape[0], np.uint64)
        for i in range(raw.shape[0]):
            out[i] = sort_word(raw[i], kind, width, True, desc, False, True)
        return out

    floats = np.array([-np.inf, -2.5, -0.0, 0.0, 1e-300, 3.0, np.inf, np.nan, -np.nan], np.float64)
    raw = floats.view(np.uint64)
    for desc in (False, True):
        got = words_cpu(raw, SK.KIND_F64, 64, desc)
        assert got.tolist() == [int(SK.sort_word(r, SK.KIND_F64, 64, True, desc, False, True)) for r in raw]
        w = got.tolist()
        if not desc:
            assert w[0] < w[1] < w[2] == w[3] < w[4] < w[5] < w[6] < w[7] == w[8]
        else:
            assert w[7] == w[8] < w[6] < w[5] < w[4] < w[3] == w[2] < w[1] < w[0]
    f32 = floats.astype(np.float32).view(np.uint32).astype(np.uint64)
    w32 = words_cpu(f32, SK.KIND_F32, 32, False).tolist()
    assert w32[0] < w32[1] < w32[2] == w32[3] <= w32[4] < w32[5] < w32[6] < w32[7] == w32[8] < 2**32
    ints = np.array([-128, -1, 0, 1, 127], np.int8).view(np.uint8).astype(np.uint64)
    wi = words_cpu(ints, SK.KIND_SIGNED, 8, False).tolist()
    assert wi == sorted(wi) and len(set(wi)) == 5 and max(wi) < 256
    assert int(order_word(np.uint64(5), SK.KIND_UNSIGNED, 16)) == 5
    # the null flag: 1 for a null when nulls go last, for a value when they go first
    for valid in (True, False):
        for nulls_last in (True, False):
            assert int(SK.sort_word(0, SK.KIND_UNSIGNED, 8, valid, False, True, nulls_last)) == \
                int(valid != nulls_last)
    chars = np.frombuffer("abcdefghiß".encode(), np.uint8).copy()
    offsets = np.array([0, 3, 3, 11], np.int32)
    for depth in (0, 8):
        for i in range(3):
            assert int(prefix(offsets, chars, depth, i)) == int(SK.string_prefix(offsets, chars, depth, i))
            assert int(length_class(offsets, depth, i)) == int(SK.length_class(offsets, depth, i))
    assert int(SK.string_prefix(offsets, chars, 0, 0)) == int.from_bytes(b"abc" + bytes(5), "big")
    assert [int(SK.length_class(offsets, 0, i)) for i in range(3)] == [3, 0, 8]
    assert int(SK.length_class(np.array([0, 11], np.int32), 0, 0)) == SK.LONGER


# --------------------------------------------------------------------------- merging sorted runs
def _runs_table(parts: list, by, desc, nulls_last) -> tuple[pa.Table, list[int]]:
    """Every part sorted by ``by`` (stable, by DuckDB), then concatenated; the runs' starts."""
    runs, starts = [], [0]
    for part in parts:
        runs.append(part.take(pa.array(duckdb_order(part, by, descending=desc, nulls_last=nulls_last), pa.int64())))
        starts.append(starts[-1] + part.num_rows)
    return pa.concat_tables(runs), starts


@pytest.mark.parametrize("types, by", [
    ({"k": pa.int64()}, ["k"]),
    ({"k": pa.int32(), "v": pa.int64()}, ["k"]),
    ({"k": pa.float64()}, ["k"]),
    ({"s": pa.string(), "k": pa.int16()}, ["s", "k"]),
    ({"a": pa.int64(), "b": pa.uint64()}, ["a", "b"]),          # 128 bits: compared key by key
    ({"d": pa.dictionary(pa.int32(), pa.string()), "t": pa.timestamp("us")}, ["d", "t"]),
    ({"b": pa.bool_(), "k": pa.date32()}, ["b", "k"]),
], ids=["int64", "int32+payload", "float64", "string+int16", "two-int64", "dict+timestamp", "bool+date"])
@pytest.mark.parametrize("nruns", [1, 2, 3, 5])
@pytest.mark.parametrize("nulls", [False, True], ids=["nonull", "nulls"])
def test_merge_of_sorted_runs_is_the_stable_sort(types, by, nruns, nulls):
    """``merge_indices`` of runs sorted apart (empty runs among them) equals the stable sort
    of their concatenation, both directions, nulls first and last, with many duplicates."""
    from gpuframe.backends.cpu.sort import merge_indices
    from gpuframe.ops.sort import _merge_runs

    rng = np.random.default_rng(nruns)
    sizes = [int(x) for x in rng.integers(0, 700, nruns)]
    if nruns > 2:
        sizes[1] = 0
    for desc, nulls_last in ((False, True), (True, False)):
        parts = [pa.table({name: random_array(t, m, nulls=nulls, seed=int(rng.integers(1 << 30)), cardinality=40)
                           for name, t in types.items()}) for m in sizes]
        table, starts = _runs_table(parts, by, desc, nulls_last)
        t = gpuframe.from_arrow(table)
        expect = perm_of(table, by, descending=desc, nulls_last=nulls_last)
        cols = [t[name] for name in by]
        assert merge_indices(cols, [desc] * len(by), nulls_last, starts).tolist() == expect
        merged = _merge_runs(t, by, starts, descending=desc, nulls_last=nulls_last)
        assert merged.to_arrow().equals(table.take(pa.array(expect, pa.int64())))


def test_merge_of_large_runs_splits_each_pair_over_tasks(monkeypatch):
    """Runs past a merge task's rows: each pair's merge cut into tasks at binary-searched
    places (long stretches of one run, then ties across runs), equal to the stable sort."""
    from gpuframe.backends.cpu import sort as cpu_sort

    monkeypatch.setattr(cpu_sort, "_MERGE_TASK_ROWS", 64)
    rng = np.random.default_rng(7)
    keys = [np.sort(rng.integers(0, 50, 3000)), np.sort(rng.integers(40, 90, 2000)),
            np.arange(2500) // 100, np.full(10, 45)]
    vals = np.concatenate(keys).astype(np.int64)
    t = gpuframe.from_arrow(pa.table({"k": vals}))
    starts = np.cumsum([0] + [len(k) for k in keys]).tolist()
    perm = cpu_sort.merge_indices([t["k"]], [False], True, starts)
    assert perm.tolist() == np.argsort(vals, kind="stable").tolist()


def test_merge_runs_rejects_bad_starts():
    from gpuframe.backends.cpu.sort import merge_indices

    t = gpuframe.from_arrow(pa.table({"k": pa.array([1, 2, 3], pa.int64())}))
    for starts in ([], [0, 2], [1, 3], [0, 2, 1, 3]):
        with pytest.raises(ValueError, match="starts must run from 0 to the row count"):
            merge_indices([t["k"]], [False], True, starts)


@pytest.mark.parametrize("nulls", [False, True], ids=["nonull", "nulls"])
def test_merge_of_keys_too_wide_for_one_word(nulls):
    """Keys whose ranges need more than 64 bits together (INT64 min/max in both, a uint64 and a
    float64 beside) are compared key by key, not packed; equal to the stable sort."""
    from gpuframe.backends.cpu import sort as cpu_sort

    rng = np.random.default_rng(3)
    edge = np.array([np.iinfo(np.int64).min, np.iinfo(np.int64).max, 0, -1, 1], np.int64)
    parts = []
    for m in (400, 0, 333, 250):
        a = edge[rng.integers(0, 5, m)]
        b = rng.integers(0, 2**64, m, dtype=np.uint64) // np.uint64(2**58)  # few distinct, full-width range
        b[rng.random(m) < 0.2] = np.iinfo(np.uint64).max
        f = rng.choice(np.array([np.nan, -0.0, 0.0, np.inf, -np.inf, 1.5]), m)
        mask = (rng.random(m) < 0.15) if nulls else None
        parts.append(pa.table({"a": pa.array(a, mask=mask), "b": pa.array(b), "f": pa.array(f, mask=mask)}))
    seen_unpacked = []
    real_packed = cpu_sort._packed

    def spy(s, plan, n):
        got = real_packed(s, plan, n)
        seen_unpacked.append(got is None)
        return got

    for desc, nulls_last in ((False, True), (True, False), ([True, False, False], True)):
        table, starts = _runs_table(parts, ["a", "b", "f"], desc, nulls_last)
        t = gpuframe.from_arrow(table)
        expect = perm_of(table, ["a", "b", "f"], descending=desc, nulls_last=nulls_last)
        d = desc if isinstance(desc, list) else [desc] * 3
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(cpu_sort, "_packed", spy)
            got = cpu_sort.merge_indices([t["a"], t["b"], t["f"]], d, nulls_last, starts)
        assert got.tolist() == expect
    assert all(seen_unpacked) and seen_unpacked


# --------------------------------------------------------------------------- categories
def _category_strings(n: int, k: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    # empty, non-ASCII, NUL-carrying, and long strings that share 20-byte prefixes (past the
    # chunk tables' 15 bytes kept in a slot: hashed, then compared byte by byte)
    words = ["", "a", "a\x00", "ß", "日本語", "zz"] + [f"shared-prefix-{'x' * 6}-{i:05d}" for i in range(k)]
    vals = [words[i] for i in rng.integers(0, len(words), n)]
    for i in rng.choice(n, n // 10, replace=False):
        vals[i] = None
    return vals


@pytest.mark.parametrize("desc, nulls_last", [(False, True), (True, False)])
def test_category_strings_ranked_by_their_distinct_values(desc, nulls_last):
    """A string key of few distinct values past 64k rows is ranked through its distinct strings
    (grouped by their bytes): the same stable order as DuckDB's, as a single key and as the
    first of two."""
    from gpuframe.backends.cpu.sort import CPU_SORTER

    n = 70_000
    table = pa.table({"c": pa.array(_category_strings(n, 300, 1), pa.string()),
                      "v": pa.array(np.random.default_rng(2).integers(0, 50, n))})
    col = gpuframe.from_arrow(table)["c"]
    _ranks, bound = CPU_SORTER.string_ranks(col)
    # the distinct strings' ranks, not the rows' (a null row's bytes are empty: "" is a word too)
    assert bound == len({v for v in table["c"].to_pylist() if v is not None})
    for by in ("c", ["c", "v"]):
        assert perm_of(table, by, descending=desc, nulls_last=nulls_last) == \
            duckdb_order(table, by, descending=desc, nulls_last=nulls_last)


def test_category_path_falls_back_when_a_chunk_has_too_many_strings(monkeypatch):
    """Few distinct strings in the sample but more than a chunk table holds further on: every
    row is ranked the general way, with the same answer."""
    from gpuframe.backends.cpu import groups
    from gpuframe.backends.cpu.sort import CPU_SORTER

    monkeypatch.setattr(groups, "_LOCAL_GROUPS", 64)
    n = 70_000
    vals = [f"w{i % 50}" for i in range(1 << 16)] + [f"many-{i}" for i in range(n - (1 << 16))]
    table = pa.table({"c": pa.array(vals, pa.string())})
    assert groups.string_groups(gpuframe.from_arrow(table)["c"]) is None
    _ranks, bound = CPU_SORTER.string_ranks(gpuframe.from_arrow(table)["c"])
    assert bound == n          # the general path's positional ranks
    assert perm_of(table, "c") == duckdb_order(table, "c")


def test_string_ranks_with_groups_across_the_threads_chunks():
    """Many distinct strings (no category path) whose first eight bytes tie in groups of tens
    of thousands of rows, so that groups straddle the threads' chunks of sorted rows and are
    refined over several rounds; equal strings too. Row order breaks ties (stable)."""
    rng = np.random.default_rng(11)
    n = 200_000
    ids = rng.integers(0, 150_000, n)
    words = [f"group-{i // 40_000}-{'y' * (i % 3)}{i:07d}" for i in ids.tolist()]
    table = pa.table({"s": pa.array(words, pa.string())})
    expected = sorted(range(n), key=lambda i: (words[i].encode(), i))
    assert perm_of(table, "s") == expected
    assert perm_of(table, "s", descending=True) == sorted(range(n), key=lambda i: (_neg_bytes(words[i]), i))


def _neg_bytes(s: str) -> tuple:
    """A key that orders byte strings descending (a longer string after its prefix reversed)."""
    return tuple(255 - b for b in s.encode()) + (256,)


def test_sort_gathers_every_payload_type_by_the_large_sorts_narrow_permutation(monkeypatch):
    # past LARGE_MIN_ROWS one integer key's permutation comes back uint32, written over the
    # large sort's scratch row numbers, and the payload columns are gathered by it unchecked:
    # every layout, with nulls, must come out as a stable sort's
    import gpuframe.ops.sort as ops_sort

    seen = []
    real = ops_sort.take_permutation

    def spy(table, perm):
        seen.append(perm.dtype)
        return real(table, perm)

    monkeypatch.setattr(ops_sort, "take_permutation", spy)
    n = 200_003
    rng = np.random.default_rng(11)
    nulls = rng.random(n) < 0.1
    table = pa.table({
        "k": pa.array(rng.integers(-1 << 40, 1 << 40, n)),
        "i": pa.array(rng.integers(-100, 100, n).astype(np.int32), mask=nulls),
        "b": pa.array(rng.random(n) < 0.5, mask=np.roll(nulls, 1)),
        "s": pa.array([f"v{x}" for x in rng.integers(0, 5000, n)], mask=np.roll(nulls, 2)),
        "d": pa.array([f"c{x}" for x in rng.integers(0, 7, n)]).dictionary_encode(),
        "f": pa.array(rng.random(n)),
    })
    for desc in (False, True):
        got = gpuframe.sort(gpuframe.from_arrow(table), "k", descending=desc).to_arrow()
        assert got.equals(table.sort_by([("k", "descending" if desc else "ascending")])), desc
    assert seen == [np.dtype(np.uint32)] * 2
