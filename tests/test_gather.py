"""take / gather_column on the CPU backend, against pyarrow's take as the oracle."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpuframe
from gpuframe.ops.gather import gather_column, take

from .common.data import DTYPES, random_array, random_table

ALL = {f"c{i}": t for i, t in enumerate(DTYPES)}


def oracle(tbl: pa.Table, idx) -> pa.Table:
    idx = np.asarray(idx, dtype=np.int64)
    return tbl.take(pa.array(idx, mask=idx == -1))


def check_equal(got: gpuframe.Table, expect: pa.Table) -> None:
    arrow = got.to_arrow()
    assert arrow.schema == expect.schema
    for name in expect.column_names:
        g, e = arrow.column(name), expect.column(name)
        if pa.types.is_dictionary(e.type):
            g, e = g.cast(e.type.value_type), e.cast(e.type.value_type)
        assert g.to_pylist() == e.to_pylist() or _nan_equal(g.to_pylist(), e.to_pylist()), name
        assert g.null_count == e.null_count, name
    for col in got.columns:
        col.to_arrow().validate(full=True)


def _nan_equal(a, b):
    return len(a) == len(b) and all((x == y) or (x != x and y != y) for x, y in zip(a, b))


def test_every_dtype(dtype, with_nulls):
    tbl = pa.table({"k": random_array(dtype, 500, nulls=with_nulls, seed=2, cardinality=50)})
    rng = np.random.default_rng(0)
    idx = rng.integers(-1, 500, 1200)
    out = take(gpuframe.from_arrow(tbl), idx)
    check_equal(out, oracle(tbl, idx))
    col = out["k"]
    assert col.offset == 0 and len(col) == 1200
    assert col.null_count == int(np.sum(idx == -1)) + (int(tbl.column("k").is_null().to_numpy(zero_copy_only=False)[idx[idx >= 0]].sum()) if with_nulls else 0)


def test_all_dtypes_in_one_table_and_table_method():
    tbl = random_table(400, ALL, nulls=True, seed=4, cardinality=60)
    idx = np.random.default_rng(1).permutation(400)
    t = gpuframe.from_arrow(tbl)
    check_equal(t.take(idx), oracle(tbl, idx))
    check_equal(gpuframe.take(t, idx[:10].tolist()), oracle(tbl, idx[:10]))


def test_minus_one_gives_null_rows_without_input_nulls():
    tbl = pa.table({"a": pa.array([1, 2, 3], pa.int64()), "s": ["x", "yy", "zzz"], "b": [True, False, True]})
    out = take(gpuframe.from_arrow(tbl), [2, -1, 0, -1])
    assert out.to_arrow().to_pydict() == {"a": [3, None, 1, None], "s": ["zzz", None, "x", None], "b": [True, None, True, None]}
    assert all(c.null_count == 2 for c in out.columns)
    out = take(gpuframe.from_arrow(tbl), [2, 0])
    assert all(c.validity is None for c in out.columns)  # no nulls, no bitmap


def test_sliced_inputs():
    tbl = random_table(300, ALL, nulls=True, seed=9, cardinality=25)
    t = gpuframe.from_arrow(tbl)
    for off, ln in [(1, 200), (13, 100), (299, 1)]:
        idx = np.random.default_rng(off).integers(-1, ln, 333)
        check_equal(t.slice(off, ln).take(idx), oracle(tbl.slice(off, ln), idx))
    # a sliced pyarrow input (offset inside the arrow buffers), bool bit offsets included
    sl = tbl.slice(5, 77)
    idx = np.arange(76, -1, -1)
    check_equal(gpuframe.from_arrow(sl).take(idx), oracle(sl, idx))


@pytest.mark.parametrize("bad", [3, -2, 2**40, np.iinfo(np.int64).min])
def test_out_of_bounds_raises(bad):
    t = gpuframe.from_arrow(pa.table({"a": [1, 2, 3]}))
    with pytest.raises(IndexError, match=rf"index {bad} .*3 rows"):
        take(t, [0, -1, bad, 1])


def test_out_of_bounds_gather_column():
    col = gpuframe.from_arrow(pa.table({"s": ["a", "b"]}))["s"]
    with pytest.raises(IndexError, match="index 2 .*position 1.*2 rows"):
        gather_column(col, [0, 2])


def test_gather_column_and_check_bounds_false():
    tbl = random_table(100, {"d": pa.dictionary(pa.int32(), pa.string()), "s": pa.large_string()}, nulls=True, seed=3)
    t = gpuframe.from_arrow(tbl)
    idx = np.array([5, -1, 99, 0, 5], dtype=np.int64)
    for name in ("d", "s"):
        for cb in (True, False):
            out = gather_column(t[name], idx, check_bounds=cb)
            assert out.to_arrow().to_pylist() == oracle(tbl, idx).column(name).to_pylist()
    assert gather_column(t["d"], idx).dictionary is t["d"].dictionary  # dictionary shared


def test_empty_indices_and_empty_table():
    tbl = random_table(50, ALL, nulls=True, seed=1)
    t = gpuframe.from_arrow(tbl)
    out = take(t, np.empty(0, np.int64))
    assert out.num_rows == 0 and out.to_arrow().schema == tbl.schema
    assert take(t, []).num_rows == 0
    empty = gpuframe.from_arrow(random_table(0, ALL))
    out = take(empty, [-1, -1])
    assert out.num_rows == 2 and all(c.null_count == 2 for c in out.columns)
    with pytest.raises(IndexError, match="index 0 .*0 rows"):
        take(empty, [0])


def test_index_types():
    t = gpuframe.from_arrow(pa.table({"a": [10, 20, 30]}))
    assert take(t, np.array([2, 0], np.int32))["a"].to_pylist() == [30, 10]
    assert take(t, np.array([1], np.uint64))["a"].to_pylist() == [20]
    assert take(t, np.array([2, 1, 0])[::-1])["a"].to_pylist() == [10, 20, 30]  # non-contiguous
    with pytest.raises(IndexError, match="does not fit int64"):
        take(t, np.array([2**64 - 1], np.uint64))
    with pytest.raises(TypeError, match="integer"):
        take(t, np.array([0.0, 1.0]))
    with pytest.raises(TypeError, match="integer"):
        take(t, ["a"])
    with pytest.raises(ValueError, match="one-dimensional"):
        take(t, np.zeros((2, 2), np.int64))


def test_strings_edge_cases():
    words = ["", "日本語", "x" * 1000, None, "", "a"]
    tbl = pa.table({"s": pa.array(words, pa.string()), "l": pa.array(words, pa.large_string())})
    idx = [2, 2, 0, 3, -1, 1, 4, 5, 2]
    out = take(gpuframe.from_arrow(tbl), idx)
    check_equal(out, oracle(tbl, idx))
    assert out["l"].offsets.dtype == np.int64 and out["s"].offsets.dtype == np.int32


def test_large_gather_parallel_path():
    n = 300_000
    tbl = random_table(n, {"a": pa.int64(), "f": pa.float32(), "s": pa.string(), "b": pa.bool_()}, nulls=True, seed=5)
    idx = np.random.default_rng(2).integers(-1, n, n)
    check_equal(take(gpuframe.from_arrow(tbl), idx), oracle(tbl, idx))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_hypothesis(data):
    n = data.draw(st.integers(0, 40))
    vals = data.draw(st.lists(st.one_of(st.none(), st.text(max_size=6)), min_size=n, max_size=n))
    ints = data.draw(st.lists(st.one_of(st.none(), st.integers(-2**63, 2**63 - 1)), min_size=n, max_size=n))
    bools = data.draw(st.lists(st.one_of(st.none(), st.booleans()), min_size=n, max_size=n))
    tbl = pa.table({"s": pa.array(vals, pa.string()), "i": pa.array(ints, pa.int64()), "b": pa.array(bools, pa.bool_())})
    off = data.draw(st.integers(0, n))
    tbl = tbl.slice(off)
    m = tbl.num_rows
    idx = data.draw(st.lists(st.integers(-1, m - 1), max_size=50))
    check_equal(take(gpuframe.from_arrow(tbl), idx), oracle(tbl, idx))


def test_copy_short_copies_every_length_exactly():
    # the byte copy of every CPU string gather, join and partition: four overlapping words for
    # 8 to 32 bytes, words then an overlapping last one up to 64, memmove beyond; never a byte
    # outside the destination's range
    from numba import njit

    from gpuframe.kernels.cpu_intrinsics import address, copy_short

    @njit
    def copy(dst, d, src, s, n):
        copy_short(address(dst) + d, address(src) + s, n)

    rng = np.random.default_rng(9)
    src = rng.integers(0, 256, 200, dtype=np.uint8)
    for n in list(range(0, 70)) + [95, 96, 97, 130]:
        for s0, d0 in ((0, 0), (3, 5), (7, 1)):
            dst = np.full(n + 16, 0xAB, np.uint8)
            copy(dst, d0, src, s0, n)
            assert dst[d0:d0 + n].tolist() == src[s0:s0 + n].tolist(), (n, s0, d0)
            assert (dst[:d0] == 0xAB).all() and (dst[d0 + n:] == 0xAB).all(), (n, s0, d0)


def test_bounds_check_by_chunks_reports_the_first_bad_position_and_every_missing_row(monkeypatch):
    # the CPU's check runs by chunks on the threads (a threaded kernel): the first bad position
    # over every chunk, the -1 entries of all of them; four chunks whatever the threads
    from gpuframe.backends.cpu import _target

    monkeypatch.setattr(_target.numba, "get_num_threads", lambda: 4)
    n = 100_000
    idx = np.arange(n, dtype=np.int64) % 1000
    idx[[3, 40_000, 99_999]] = -1
    assert _target.CPU_TARGET.check_indices(idx, 1000) == (-1, 3)
    idx[[90_000, 60_000, 30_001]] = [1000, -5, 2**40]
    assert _target.CPU_TARGET.check_indices(idx, 1000) == (30_001, 3)
    t = gpuframe.from_arrow(pa.table({"a": np.arange(1000)}))
    with pytest.raises(IndexError, match=r"index 1099511627776 .*position 30001"):
        take(t, idx)
