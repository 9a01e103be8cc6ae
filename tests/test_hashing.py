"""hash_rows: the hash contract (gpuframe.ops.hashing) on the CPU backend, against a Python reference."""
from __future__ import annotations

import math
import struct

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpuframe
from gpuframe.kernels import hashing as HK
from gpuframe.ops.hashing import hash_rows

from .common import hashref as ref
from .common.data import DTYPES, random_array, random_table

I64 = np.iinfo(np.int64)


def gf(tbl: pa.Table) -> gpuframe.Table:
    return gpuframe.from_arrow(tbl)


def test_every_dtype_matches_reference(dtype, with_nulls):
    arr = random_array(dtype, 300, nulls=with_nulls, seed=3, cardinality=40)
    tbl = pa.table({"k": arr})
    got = hash_rows(gf(tbl), "k")
    assert isinstance(got, np.ndarray) and got.dtype == np.uint64 and len(got) == 300
    assert got.tolist() == ref.row_hashes(tbl, "k")
    if with_nulls:
        nulls = np.asarray(arr.is_null().to_pylist())
        assert nulls.any()
        assert set(got[nulls].tolist()) == {ref.null_hash(0)}


@pytest.mark.parametrize("seed", [1, 2**63 + 5, 2**64 - 1])
def test_seed_matches_reference_and_changes_hashes(seed):
    tbl = random_table(200, {"a": pa.int64(), "s": pa.string(), "f": pa.float64()}, nulls=True, seed=1)
    got = hash_rows(gf(tbl), ["a", "s", "f"], seed=seed)
    assert got.tolist() == ref.row_hashes(tbl, ["a", "s", "f"], seed)
    assert (got != hash_rows(gf(tbl), ["a", "s", "f"])).all()


def test_several_columns_combine_in_order():
    tbl = random_table(300, {"a": pa.int32(), "b": pa.string(), "c": pa.bool_(), "d": pa.dictionary(pa.int32(), pa.string())},
                       nulls=True, seed=7, cardinality=20)
    t = gf(tbl)
    got = hash_rows(t, ["a", "b", "c", "d"])
    assert got.tolist() == ref.row_hashes(tbl, ["a", "b", "c", "d"])
    # one column: exactly that column's hash (no extra mixing)
    assert hash_rows(t, ["b"]).tolist() == ref.value_hashes(tbl.column("b"))
    assert not np.array_equal(hash_rows(t, ["a", "b"]), hash_rows(t, ["b", "a"]))


def test_integer_widths_and_signedness_hash_the_same():
    vals = [0, 1, -1, 127, -128, 42]
    signed = [pa.int8(), pa.int16(), pa.int32(), pa.int64()]
    hs = {str(t): hash_rows(gf(pa.table({"k": pa.array(vals, t)})), "k").tolist() for t in signed}
    assert len({tuple(v) for v in hs.values()}) == 1
    pos = [0, 1, 127, 42, 200]
    types = [pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()]
    hp = {tuple(hash_rows(gf(pa.table({"k": pa.array(pos, t)})), "k").tolist()) for t in types}
    assert len(hp) == 1
    # uint64 is hashed by its bits: 2**64 - 1 is int64 -1
    u = hash_rows(gf(pa.table({"k": pa.array([2**64 - 1], pa.uint64())})), "k")
    s = hash_rows(gf(pa.table({"k": pa.array([-1], pa.int64())})), "k")
    assert u.tolist() == s.tolist()


def test_temporal_and_bool_hash_as_integers():
    t = gf(pa.table({
        "d": pa.array([0, 19000, -5], pa.int32()).cast(pa.date32()),
        "i32": pa.array([0, 19000, -5], pa.int32()),
        "ts": pa.array([0, 1_700_000_000_000_000, -7], pa.int64()).cast(pa.timestamp("us")),
        "tsn": pa.array([0, 1_700_000_000_000_000, -7], pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
        "i64": pa.array([0, 1_700_000_000_000_000, -7], pa.int64()),
        "b": pa.array([False, True, True]),
        "bi": pa.array([0, 1, 1], pa.int8()),
    }))
    assert hash_rows(t, "d").tolist() == hash_rows(t, "i32").tolist()
    assert hash_rows(t, "ts").tolist() == hash_rows(t, "i64").tolist() == hash_rows(t, "tsn").tolist()
    assert hash_rows(t, "b").tolist() == hash_rows(t, "bi").tolist()


def test_int64_extremes():
    vals = [I64.min, I64.max, I64.min + 1, 0, -1]
    tbl = pa.table({"k": pa.array(vals, pa.int64())})
    got = hash_rows(gf(tbl), "k").tolist()
    assert got == [ref.hash_u64(v & ref.MASK, 0) for v in vals]
    assert len(set(got)) == len(vals)


def test_float_canonical_nan_and_zero():
    nan_payloads = [struct.unpack("<d", struct.pack("<Q", b))[0]
                    for b in (0x7FF8000000000000, 0xFFF8000000000000, 0x7FF0000000000001, 0x7FFFFFFFFFFFFFFF)]
    vals = nan_payloads + [0.0, -0.0, math.inf, -math.inf, 1.5]
    t64 = gf(pa.table({"k": pa.array(vals, pa.float64())}))
    h = hash_rows(t64, "k").tolist()
    assert len(set(h[:4])) == 1 and h[0] == ref.hash_u64(ref.CANONICAL_NAN, 0)
    assert h[4] == h[5] == ref.hash_u64(0, 0)
    assert len(set(h[4:])) == 4
    f32_nans = np.array([0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FFFFFFF], dtype=np.uint32).view(np.float32)
    f32 = np.concatenate([f32_nans, np.array([0.0, -0.0, np.inf, -np.inf, 1.5], np.float32)])
    t32 = gf(pa.table({"k": pa.array(f32, pa.float32())}))
    assert hash_rows(t32, "k").tolist() == h


def test_float32_widens_exactly_like_numpy():
    rng = np.random.default_rng(5)
    bits = np.concatenate([
        rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32),
        np.arange(0, 3000, dtype=np.uint32),                   # subnormals and +0
        np.arange(0x80000000, 0x80000000 + 3000, dtype=np.uint32),  # negative subnormals, -0
        np.array([0x7F7FFFFF, 0x00800000, 0x7F800000, 0xFF800000], dtype=np.uint32),
    ])
    f = bits.view(np.float32)
    with np.errstate(invalid="ignore"):  # widening signalling NaNs
        f64 = f.astype(np.float64)
    expect = f64.view(np.uint64).copy()
    expect[np.isnan(f)] = 0x7FF8000000000000
    expect[f == 0] = 0
    got = np.array([HK.f32_bits_to_f64_bits(np.uint64(b)) for b in bits[:500]], dtype=np.uint64)
    assert np.array_equal(got, expect[:500])
    # the compiled kernel over all of them, through hash_rows of float32 vs float64
    t = gf(pa.table({"a": pa.array(f, pa.float32()), "b": pa.array(f64, pa.float64())}))
    assert np.array_equal(hash_rows(t, "a"), hash_rows(t, "b"))


def test_floats_are_not_canonical_with_ints():
    # documented: int vs float is not canonical; callers promote first
    t = gf(pa.table({"i": pa.array([1, 2], pa.int64()), "f": pa.array([1.0, 2.0])}))
    assert (hash_rows(t, "i") != hash_rows(t, "f")).all()


def test_string_types_hash_the_same():
    words = ["", "a", "abcdefg", "abcdefgh", "abcdefghi", "x" * 16, "y" * 17, "日本語テキスト", "ß", None, ""]
    tbl = pa.table({
        "s": pa.array(words, pa.string()),
        "ls": pa.array(words, pa.large_string()),
        "d": pa.array(words, pa.string()).dictionary_encode(),
        "d8": pa.array(words, pa.string()).dictionary_encode().cast(pa.dictionary(pa.int8(), pa.large_string())),
    })
    t = gf(tbl)
    hs = hash_rows(t, "s").tolist()
    assert hs == ref.value_hashes(tbl.column("s"))
    assert hash_rows(t, "ls").tolist() == hs
    assert hash_rows(t, "d").tolist() == hs
    assert hash_rows(t, "d8").tolist() == hs
    assert hs[0] == hs[-1]  # empty strings
    assert hs[0] != hs[9]   # empty is not null
    assert len(set(hs[:9])) == 9


def test_strings_differing_in_tail_bytes_and_length():
    words = ["k" * n for n in range(0, 25)] + ["a\x00", "a", "\x00", "\x00\x00"]
    tbl = pa.table({"s": pa.array(words)})
    got = hash_rows(gf(tbl), "s").tolist()
    assert got == ref.value_hashes(tbl.column("s"))
    assert len(set(got)) == len(words)


def test_sliced_inputs():
    tbl = random_table(257, {n: t for n, t in zip("abcdefghijklmnopq", DTYPES)}, nulls=True, seed=11, cardinality=30)
    t = gf(tbl)
    for off, ln in [(3, 100), (13, 200), (250, 7)]:
        st_ = t.slice(off, ln)
        for name in st_.column_names:
            assert hash_rows(st_, name).tolist() == ref.value_hashes(tbl.column(name).slice(off, ln)), name
        assert hash_rows(st_, st_.column_names).tolist() == ref.row_hashes(tbl.slice(off, ln), st_.column_names)


def test_zero_rows():
    t = gf(random_table(0, {"a": pa.int64(), "s": pa.string()}))
    got = hash_rows(t, ["a", "s"])
    assert isinstance(got, np.ndarray) and got.dtype == np.uint64 and got.shape == (0,)


def test_all_null_keys():
    tbl = pa.table({"a": pa.array([None] * 5, pa.int32()), "s": pa.array([None] * 5, pa.string())})
    got = hash_rows(gf(tbl), ["a", "s"]).tolist()
    assert got == ref.row_hashes(tbl, ["a", "s"]) and len(set(got)) == 1


def test_validation_errors():
    t = gf(pa.table({"a": [1, 2], "b": ["x", "y"]}))
    with pytest.raises(KeyError, match=r"'zz'.*\['a', 'b'\]"):
        hash_rows(t, ["a", "zz"])
    with pytest.raises(TypeError, match="got 3"):
        hash_rows(t, 3)
    with pytest.raises(ValueError, match=r"got \[\]"):
        hash_rows(t, [])
    with pytest.raises(TypeError, match="seed.*got 'x'"):
        hash_rows(t, "a", seed="x")
    with pytest.raises(ValueError, match="seed.*got -1"):
        hash_rows(t, "a", seed=-1)
    with pytest.raises(ValueError, match="seed"):
        hash_rows(t, "a", seed=2**64)


_keys = st.one_of(
    st.lists(st.one_of(st.none(), st.integers(-2**63, 2**63 - 1)), min_size=0, max_size=60).map(lambda v: pa.array(v, pa.int64())),
    st.lists(st.one_of(st.none(), st.integers(-2**31, 2**31 - 1)), min_size=0, max_size=60).map(lambda v: pa.array(v, pa.int32())),
    st.lists(st.one_of(st.none(), st.floats(allow_nan=True)), min_size=0, max_size=60).map(lambda v: pa.array(v, pa.float64())),
    st.lists(st.one_of(st.none(), st.text(max_size=20)), min_size=0, max_size=60).map(lambda v: pa.array(v, pa.string())),
    st.lists(st.one_of(st.none(), st.booleans()), min_size=0, max_size=60).map(lambda v: pa.array(v, pa.bool_())),
)


@settings(max_examples=60, deadline=None)
@given(a=_keys, b=_keys, seed=st.integers(0, 2**64 - 1), data=st.data())
def test_hypothesis_random_tables(a, b, seed, data):
    n = min(len(a), len(b))
    tbl = pa.table({"a": a.slice(0, n), "b": b.slice(0, n)})
    off = data.draw(st.integers(0, n))
    tbl = tbl.slice(off)
    t = gf(tbl)
    assert hash_rows(t, ["a", "b"], seed=seed).tolist() == ref.row_hashes(tbl, ["a", "b"], seed)


def test_dictionary_null_entries_hash_as_null():
    dictionary = pa.array(["a", None, "b"])
    arr = pa.DictionaryArray.from_arrays(pa.array([0, 1, 2, None, 1], pa.int32()), dictionary)
    tbl = pa.table({"d": arr})
    got = hash_rows(gf(tbl), "d").tolist()
    assert got == ref.value_hashes(tbl.column("d"))
    assert got[1] == got[3] == got[4] == ref.null_hash(0)
