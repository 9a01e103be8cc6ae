"""Hash join on the CPU backend: every ``how``, key shapes, nulls, duplicates, skew, empties,
against a plain-Python reference (tests/common/join.py) and DuckDB."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from numba import njit

import gpuframe
from gpuframe.ops.join import HOWS

from .common.data import random_table
from .common.join import norm_value, pairs_of, ref_pairs, rows_multiset

ROW_HOWS = ["inner", "left", "right", "outer"]


@pytest.fixture(params=["inplace", "scattered", "scattered-tiny"])
def cpu_path(request, monkeypatch):
    """Run a test on both CPU probe paths, with small partitions and work items so that small
    tables have many partitions (with colliding slots), many items per partition, items that
    share a partition, and items both longer and shorter than a probe batch; "scattered-tiny"
    partitions even 3-row build sides, with 3-row items."""
    from gpuframe.backends.cpu import join as cpu_join
    from gpuframe.kernels import join_cpu

    tiny = request.param == "scattered-tiny"
    monkeypatch.setattr(cpu_join, "_ROWS_PER_PARTITION", 2 if tiny else 12)
    monkeypatch.setattr(cpu_join, "_ITEM_ROWS", 3 if tiny else 2 * join_cpu._BATCH + 3)
    if request.param != "inplace":
        monkeypatch.setattr(cpu_join, "_INPLACE_BUILD_BYTES", -1)
        monkeypatch.setattr(cpu_join, "_FLAT_BUILD_BYTES", -1)
        monkeypatch.setattr(cpu_join, "_FLAT_CACHE_BYTES", -1)
    seen = set()
    probe_side = cpu_join._probe_side

    def spy(sk, pbits, inplace, *args, **kwargs):
        if pbits > 0:
            seen.add("inplace" if inplace else "scattered")
        return probe_side(sk, pbits, inplace, *args, **kwargs)

    monkeypatch.setattr(cpu_join, "_probe_side", spy)
    yield request.param
    want = "inplace" if request.param == "inplace" else "scattered"
    assert seen <= {want}, f"the {want} path was asked for, ran: {seen}"


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
def test_single_int_key(how, cpu_path):
    left = kv([1, 2, 3, 4, None, 4, 7], vname="a")
    right = kv([3, 4, 4, 5, None, 9], vname="b")
    check_join(left, right, how, on="k")


@pytest.mark.parametrize("how", HOWS)
def test_build_side_swaps(how, cpu_path):
    # left smaller than right, and the other way: the build side is chosen by size
    small = kv([1, 2, 2, 3], vname="a")
    big = kv([2, 2, 3, 3, 3, 8, 9, 10, None], vname="b")
    check_join(small, big, how, on="k")
    check_join(big.rename_columns(["k", "a"]), small.rename_columns(["k", "b"]), how, on="k")


@pytest.mark.parametrize("how", HOWS)
def test_multi_key(how, cpu_path):
    left = pa.table({"a": [1, 1, 2, 2, None, 3], "b": ["x", "y", "x", "x", "x", None], "v": [1, 2, 3, 4, 5, 6]})
    right = pa.table({"a": [1, 2, 2, 3, None], "b": ["x", "x", "x", None, "x"], "w": [10., 20., 30., 40., 50.]})
    check_join(left, right, how, on=["a", "b"])
    check_join(left, right, how, on=["a", "b"], nulls_equal=True)


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("nulls_equal", [False, True])
def test_null_keys(how, nulls_equal, cpu_path):
    left = kv([None, 1, None, 2], vname="a")
    right = kv([None, None, 2, 3], vname="b")
    check_join(left, right, how, on="k", nulls_equal=nulls_equal)


@pytest.mark.parametrize("how", HOWS)
def test_all_null_keys(how, cpu_path):
    left = kv(pa.nulls(4, pa.int64()), vname="a")
    right = kv(pa.nulls(3, pa.int64()), vname="b")
    check_join(left, right, how, on="k")
    check_join(left, right, how, on="k", nulls_equal=True)


@pytest.mark.parametrize("how", HOWS)
def test_many_to_many_and_skew(how, cpu_path):
    rng = np.random.default_rng(1)
    lk = np.where(rng.random(3000) < 0.5, 7, rng.integers(0, 300, 3000))   # one key on half the rows
    rk = np.repeat(np.arange(0, 400, 2), 4)                                  # every key 4 times
    left = kv(lk.tolist(), vname="a")
    right = kv(rk.tolist(), vname="b")
    check_join(left, right, how, on="k")


@pytest.mark.parametrize("how", HOWS)
def test_empty_sides(how, cpu_path):
    empty = kv(pa.array([], pa.int64()), vname="a")
    full = kv([1, 2, 2], vname="b")
    check_join(empty, full, how, on="k")
    check_join(full.rename_columns(["k", "a"]), empty.rename_columns(["k", "b"]), how, on="k")
    check_join(empty, empty.rename_columns(["k", "b"]), how, on="k")


@pytest.mark.parametrize("how", HOWS)
def test_int64_extremes(how, cpu_path):
    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    left = kv([lo, hi, 0, -1, hi], vname="a")
    right = kv([hi, lo, -1, 5], vname="b")
    check_join(left, right, how, on="k")


@pytest.mark.parametrize("how", HOWS)
def test_nan_and_negative_zero(how, cpu_path):
    left = kv([np.nan, -0.0, 1.5, None, np.nan], type=pa.float64(), vname="a")
    right = kv([0.0, np.nan, 1.5, -0.0], type=pa.float64(), vname="b")
    check_join(left, right, how, on="k")
    lf = kv([np.nan, -0.0, 2.0], type=pa.float32(), vname="a")
    check_join(lf, right, how, on="k")


@pytest.mark.parametrize("how", HOWS)
def test_string_keys(how, cpu_path):
    left = kv(["a", "", "ß", "日本", None, "a", "key" * 5], vname="a", type=pa.string())
    right = kv(["", "a", "日本", "key" * 5, None, "zz"], vname="b", type=pa.large_string())
    check_join(left, right, how, on="k")
    d = pa.array(["a", "x", None, "ß", "a"]).dictionary_encode()
    check_join(pa.table({"k": d, "a": [1, 2, 3, 4, 5]}), right, how, on="k")


@pytest.mark.parametrize("how", HOWS)
def test_string_keys_of_every_length_differing_in_one_byte(how, cpu_path):
    # a key of 8 to 32 bytes is hashed and compared as four words at fixed places (the last
    # overlapping its neighbour), longer ones word by word, shorter ones as a tail: keys of
    # every length to 70 bytes, each with neighbours one byte (at every position) away, a
    # prefix and an extension, on both sides with repeats, and a string payload, end to end
    # (keys that differ hash apart here, so the comparison of equal hashes itself is
    # test_one_source's test_spans_equal_and_key_bytes_hash_at_every_length_and_byte)
    rng = np.random.default_rng(11)
    base = bytes(rng.integers(97, 123, 70, dtype=np.uint8))
    keys = set()
    for n in range(71):
        k = base[:n]
        keys.add(k)
        for pos in range(0, n, 3 if n > 40 else 1):
            keys.add(k[:pos] + bytes([k[pos] ^ 0x20]) + k[pos + 1:])
    keys = sorted(keys)
    lk = [keys[i].decode() for i in rng.integers(0, len(keys), 900)]
    rk = [keys[i].decode() for i in rng.integers(0, len(keys), 500)] + [keys[7].decode()] * 3
    left = pa.table({"k": pa.array(lk, pa.string()), "a": pa.array(range(len(lk)), pa.int64())})
    right = pa.table({"k": pa.array(rk, pa.string()), "b": pa.array([s[::-1] for s in rk], pa.string())})
    check_join(left, right, how, on="k")


@pytest.mark.parametrize("how", HOWS)
def test_left_on_right_on(how, cpu_path):
    left = pa.table({"id": [1, 2, 3, 3], "v": [1, 2, 3, 4]})
    right = pa.table({"key": [3, 1, 1, 9], "v": [10, 20, 30, 40]})
    out = check_join(left, right, how, left_on="id", right_on="key")
    if how not in ("semi", "anti"):
        assert out.column_names == ["id", "v_x", "key", "v_y"]


@pytest.mark.parametrize("how", ["left", "right", "outer"])
@pytest.mark.parametrize("dup", [False, True])
def test_missing_side_validity_is_one_byte_a_row(how, dup, cpu_path, monkeypatch):
    # the validity of a side's columns where that side can be missing is an output row of
    # bytes (0 or 1), not of int64 words, on every CPU path (direct: unique build keys; two
    # passes and in place: repeated ones), through compaction and the unmatched build rows
    from gpuframe.backends.cpu import join as cpu_join

    rng = np.random.default_rng(5 + dup)
    nk = 300
    lk = rng.integers(0, 2 * nk, 700)
    rk = rng.permutation(np.arange(nk) * 2 + 1 - (np.arange(nk) % 2))[:nk]
    if dup:
        rk = np.concatenate([rk, rk[:40]])
    left = pa.table({"k": lk, "a": rng.integers(0, 9, len(lk)),
                     "an": pa.array([None if x % 7 == 0 else int(x) for x in lk], pa.int64())})
    right = pa.table({"k": rk, "b": rng.integers(0, 9, len(rk)),
                      "bf": pa.array(rng.random(len(rk)), pa.float64())})
    seen = []
    result = cpu_join._result

    def spy(total, outs, *args, **kwargs):
        seen.extend(o.dtype for o in outs if o is not None)
        return result(total, outs, *args, **kwargs)

    monkeypatch.setattr(cpu_join, "_result", spy)
    check_join(left, right, how, on="k")
    check_join(right, left, how, on="k")
    assert np.dtype(np.uint8) in seen, seen


def test_payload_types_and_nulls(cpu_path):
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


def test_partitioned_path_large(cpu_path):
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
    from gpuframe.core import memory

    left = kv([1] * 300, vname="a")
    right = kv([1] * 300, vname="b")
    L, R = gpuframe.from_arrow(left), gpuframe.from_arrow(right)
    monkeypatch.setattr(memory, "available_bytes", lambda device: (1000, "a test"))
    with pytest.raises(MemoryError, match=r"merge: the merged table of 90,000 rows needs about [\d,]+ bytes"):
        gpuframe.merge(L, R, on="k")
    with pytest.raises(MemoryError, match="join_indices: the gather maps of 90,000 rows"):
        gpuframe.join_indices(L, R, on="k")
    assert gpuframe.join_size(L, R, on="k") == 90_000   # counting allocates nothing big


def test_sliced_inputs(cpu_path):
    left = kv(list(range(20)), vname="a").slice(5, 10)
    right = kv(list(range(0, 40, 2)), vname="b").slice(3)
    for how in HOWS:
        check_join(left, right, how, on="k")


def test_cpu_row_hash_matches_the_shared_per_row_function():
    # the CPU kernel hashes 8 bytes per load; CUDA runs the shared per-row function: the
    # partition and slot of every key must be the same on both
    import warnings

    from gpuframe.kernels import join as KJ
    from gpuframe.kernels import join_cpu as KC

    rng = np.random.default_rng(5)
    strs = ["", "a", "abcdefg", "abcdefgh", "abcdefghi", "ß" * 9, "x" * 23] + \
        ["".join(map(chr, rng.integers(97, 123, int(k)))) for k in rng.integers(0, 30, 40)]
    chars = np.frombuffer("".join(strs).encode(), np.uint8)
    offs = np.concatenate([[0], np.cumsum([len(s.encode()) for s in strs])]).astype(np.int64)
    n = len(strs)
    st = np.stack([offs[:-1], offs[:-1][::-1].copy()])
    en = np.stack([offs[1:], offs[1:][::-1].copy()])
    words = rng.integers(-2**63, 2**63, (2, n), dtype=np.int64).view(np.uint64)
    for w, s_, e_ in ((words, st, en), (words[:0], st[:1], en[:1]), (words, st[:0], en[:0])):
        out = np.empty(n, np.uint64)
        KC.general_row_hash(w, s_, e_, chars, out, np.array([0, n], np.int64))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want = [KJ.row_hash(w, s_, e_, chars, i) for i in range(n)]
        assert out.tolist() == [int(x) for x in want]


@pytest.mark.parametrize("how", ROW_HOWS)
@pytest.mark.parametrize("keys", ["int", "string", "int_string"])
def test_unique_build_keys_one_pass(how, keys, cpu_path, monkeypatch):
    # distinct build keys take the one-pass path: items leave gaps where probe rows miss (and
    # string bytes too) that the compaction closes; outer sides add unmatched build rows
    from gpuframe.backends.cpu import join as cpu_join

    calls = []
    direct, small = cpu_join._cpu_direct, cpu_join._cpu_small
    monkeypatch.setattr(cpu_join, "_cpu_direct", lambda *a, **k: calls.append("direct") or direct(*a, **k))
    monkeypatch.setattr(cpu_join, "_cpu_small", lambda *a, **k: calls.append("small") or small(*a, **k))
    rng = np.random.default_rng(11)
    bk = rng.permutation(60)[:40]
    pk = rng.integers(-5, 70, 150)
    pk = np.where(rng.random(150) < 0.1, -999, pk)

    def col(v, nulls):
        mask = nulls if nulls is not None else None
        if keys == "int":
            return pa.array(v, pa.int64(), mask=mask)
        return pa.array([f"key-{x}" * (1 + abs(int(x)) % 3) for x in v], pa.string(), mask=mask)

    bnull = np.zeros(40, bool)
    bnull[[3, 17]] = True
    pnull = rng.random(150) < 0.05
    right = pa.table({"k": col(bk, bnull), "b": np.arange(40) * 10})
    left = pa.table({"k": col(pk, pnull), "a": np.arange(150), "s": pa.array([f"p{i}" for i in range(150)])})
    on = "k"
    if keys == "int_string":
        right = right.append_column("j", pa.array(bk % 3))
        left = left.append_column("j", pa.array(pk % 3))
        on = ["k", "j"]
    check_join(left, right, how, on=on)
    check_join(right.rename_columns(["k", "a"] + right.column_names[2:]),
               left.rename_columns(["k", "b", "s"] + left.column_names[3:]), how, on=on)
    # in-place probes (build sides that fit in cache) take the small-build path, the others one pass
    assert calls and set(calls) == {"small" if cpu_path == "inplace" else "direct"}, calls


@pytest.mark.parametrize("how", ROW_HOWS)
@pytest.mark.parametrize("build_payloads", [1, 2])
def test_unique_build_keys_fixed_payloads(how, build_payloads, cpu_path):
    # fixed-width columns only: the one-pass path writes whole probe batches a column at a
    # time, misses among them (a left join's fill and null validity) included, and probe rows
    # out of their positions after a miss (an inner join's packed rows)
    rng = np.random.default_rng(23)
    bk = rng.permutation(300)[:200]
    pk = rng.integers(0, 330, 700)
    right = pa.table({"k": bk, **{f"b{c}": rng.integers(0, 1000, 200) for c in range(build_payloads)}})
    pnull = rng.random(700) < 0.03
    left = pa.table({"k": pa.array(pk, pa.int64(), mask=pnull), "a": np.arange(700),
                     "f": rng.random(700)})
    check_join(left, right, how, on="k")
    check_join(right, left, how, on="k")


# --------------------------------------------------------------------------- small build sides
def _addresses(arr) -> list:
    if isinstance(arr, pa.ChunkedArray):
        assert arr.num_chunks == 1
        arr = arr.chunk(0)
    return [b.address if b is not None else None for b in arr.buffers()]


@pytest.mark.parametrize("key", ["int", "string", "float", "date"])
@pytest.mark.parametrize("how", ["inner", "left", "right"])
@pytest.mark.parametrize("misses", [False, True])
def test_small_build_output_is_the_probe_side(key, how, misses):
    # a build side that fits in cache, distinct keys: when every probe row gives one output row
    # (every row matches, or unmatched probe rows are kept) the output is the probe side in its
    # order, and its columns (the merged key too, but for floats) are the probe's, zero-copy
    rng = np.random.default_rng(3)
    bk = np.arange(8) * 3
    pk = rng.choice(bk, 300)
    if misses:
        pk[::5] = 1000 + np.arange(len(pk[::5]))
    conv = {"int": lambda v: pa.array(v, pa.int64()), "float": lambda v: pa.array(v.astype(float)),
            "date": lambda v: pa.array(v.astype(np.int32), pa.int32()).cast(pa.date32()),
            "string": lambda v: pa.array([f"key-{x}" for x in v])}[key]
    probe = pa.table({"k": conv(pk), "a": np.arange(300),
                      "s": pa.array([f"p{i}" if i % 7 else None for i in range(300)]),
                      "n": pa.array(np.arange(300.0), mask=np.arange(300) % 11 == 0)})
    build = pa.table({"k": conv(bk), "b": np.arange(8) * 10, "t": pa.array([f"b{i}" for i in range(8)])})
    # the build side is the smaller one: left in a right join, right otherwise
    left, right = (build, probe) if how == "right" else (probe, build)
    out = check_join(left, right, how, on="k").to_arrow()
    keep = how != "inner" or not misses
    for name in ("a", "s", "n") + (("k",) if key != "float" else ()):
        same = _addresses(out.column(name)) == _addresses(probe.column(name))
        assert same == keep, (name, same)
    if keep:
        assert out.column("a").to_pylist() == list(range(300)), "the probe side's order"


@pytest.mark.parametrize("how", ROW_HOWS)
@pytest.mark.parametrize("key", ["int", "float", "uint64", "date"])
@pytest.mark.parametrize("rows_per_partition,item_rows", [(1, 7), (12, 21)])
def test_flat_table_probe(how, key, rows_per_partition, item_rows, monkeypatch):
    # a build side of distinct word keys is probed in place through its flat table
    # (flat_match, its filter ruling absent keys out) and written by the dense write: probe
    # sequences that wrap around a partition's table, empty partitions (one build row a
    # partition), null keys on both sides, work items shorter and longer than the prefetch
    # distance, hits and misses at random, keys whose words are negative as int64 (uint64),
    # -0.0 against 0.0 and NaN against NaN
    from gpuframe.backends.cpu import join as cpu_join
    from gpuframe.kernels import join_cpu as K

    assert 7 < K._FLAT_AHEAD < 21      # items shorter and longer than the prefetch distance
    calls = []
    real = K.flat_match
    monkeypatch.setattr(K, "flat_match", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(cpu_join, "_ROWS_PER_PARTITION", rows_per_partition)
    monkeypatch.setattr(cpu_join, "_ITEM_ROWS", item_rows)
    rng = np.random.default_rng(31)
    nb, npr = 400, 2000
    universe = rng.permutation(2 * nb)
    bk, pk = universe[:nb], universe[rng.integers(0, 2 * nb, npr)]   # about half the probe rows miss
    conv = {"int": lambda v: pa.array(v * 7919 - 3000, pa.int64()),
            "float": lambda v: pa.array(np.where(v == 0, np.nan, np.where(v == 1, 0.0, v * 0.5))),
            "uint64": lambda v: pa.array(np.uint64(2**64 - 1) - v.astype(np.uint64) * np.uint64(2**40)),
            "date": lambda v: pa.array(v.astype(np.int32), pa.int32()).cast(pa.date32())}[key]
    build_keys = conv(bk)
    probe_keys = conv(pk)
    if key == "float":
        probe_keys = pa.array(np.where(pk == 1, -0.0, probe_keys.to_numpy(zero_copy_only=False)))
    bnull = rng.random(nb) < 0.02
    pnull = rng.random(npr) < 0.05
    build = pa.table({"k": pa.array(build_keys.to_pylist(), build_keys.type, mask=bnull),
                      "b": rng.integers(0, 1000, nb), "c": pa.array(rng.random(nb), mask=rng.random(nb) < 0.1)})
    probe = pa.table({"k": pa.array(probe_keys.to_pylist(), probe_keys.type, mask=pnull), "a": np.arange(npr)})
    check_join(probe, build, how, on="k")
    assert calls, "the flat table's probe did not run"


@pytest.mark.parametrize("skewed", [False, True])
def test_flat_table_past_the_cache_for_skewed_probe_keys(skewed, monkeypatch):
    # past _FLAT_CACHE_BYTES the flat table is used only where a sample of the probe keys
    # repeats itself (a skewed probe side's rows stay in cache); uniform probe keys take the
    # partitioned path. Both give the join's answer.
    from gpuframe.backends.cpu import join as cpu_join
    from gpuframe.kernels import join_cpu as K

    calls = []
    real = K.flat_match
    monkeypatch.setattr(K, "flat_match", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(cpu_join, "_FLAT_CACHE_BYTES", 0)
    monkeypatch.setattr(cpu_join, "_INPLACE_BUILD_BYTES", -1)
    monkeypatch.setattr(cpu_join, "_ROWS_PER_PARTITION", 16)
    monkeypatch.setattr(cpu_join, "_FLAT_SAMPLE", 64)
    rng = np.random.default_rng(5)
    bk = rng.permutation(4000)[:1000]
    codes = (rng.zipf(2.0, 6000) - 1) % 1000 if skewed else rng.integers(0, 1000, 6000)
    pk = np.where(rng.random(6000) < 0.1, -1, bk[codes])          # some probe keys miss
    assert cpu_join._skewed(pk.view(np.uint64)) == skewed
    build = pa.table({"k": bk, "b": np.arange(1000)})
    probe = pa.table({"k": pk, "a": np.arange(6000)})
    for how in ("inner", "left"):
        check_join(probe, build, how, on="k")
    assert bool(calls) == skewed


@pytest.mark.parametrize("how", ["inner", "left", "outer"])
def test_small_build_repeated_keys_and_nulls(how):
    # repeated build keys, null keys on both sides and nulls_equal: the small-build path writes
    # every output row (the output is never the probe side here, but for none of the rows)
    rng = np.random.default_rng(4)
    bk = pa.array(list(rng.integers(0, 6, 12)) + [None, None], pa.int64())
    pk = pa.array([None if i % 13 == 0 else int(x) for i, x in enumerate(rng.integers(0, 9, 400))], pa.int64())
    right = pa.table({"k": bk, "b": np.arange(14), "t": pa.array([f"t{i}" for i in range(14)])})
    left = pa.table({"k": pk, "a": np.arange(400), "s": pa.array([f"s{i}" for i in range(400)])})
    for nulls_equal in (False, True):
        check_join(left, right, how, on="k", nulls_equal=nulls_equal)


def test_item_kernels_compile_one_item_function_per_kernel_signature(monkeypatch):
    # the largest join kernels call one function per work item (join_cpu's _ITEM_KERNELS),
    # compiled for the types of the kernel's records (join_cpu.item_entry): one item function
    # per kernel signature, for integer keys (the word-key variant, join_cpu.for_keys) and for
    # string keys (the item itself); both are checked
    from gpuframe.backends.cpu import join as cpu_join
    from gpuframe.kernels import join_cpu as K

    rng = np.random.default_rng(8)
    pk = rng.integers(0, 3000, 20_000)
    unique = pa.table({"k": np.arange(2000), "b": np.arange(2000)})
    repeated = pa.table({"k": np.arange(4000) % 1500, "b": np.arange(4000)})
    probe = pa.table({"k": pk, "a": np.arange(20_000)})

    def strings(t):
        return t.set_column(0, "k", pa.array([f"key{x}" for x in t.column("k").to_pylist()]))

    for inplace in (True, False):
        if not inplace:
            monkeypatch.setattr(cpu_join, "_INPLACE_BUILD_BYTES", -1)
            monkeypatch.setattr(cpu_join, "_FLAT_BUILD_BYTES", -1)
            monkeypatch.setattr(cpu_join, "_FLAT_CACHE_BYTES", -1)
            monkeypatch.setattr(cpu_join, "_ROWS_PER_PARTITION", 64)
        for build in (unique, repeated):
            for how in ("inner", "left", "outer"):
                check_join(probe, build, how, on="k")
                check_join(strings(probe.slice(0, 3000)), strings(build), how, on="k")
    pairs = [(K.small_match, K._small_match_item), (K.build_tables, K._build_item),
             (K.write_items, K._write_item), (K.probe_direct, K._direct_item), (K.probe_count, K._count_item)]
    for kernel, item in pairs:
        assert K._ITEMS[kernel][0] is item
        # word keys take the item's word-key variant (the general keys' code left out: what
        # makes it compile less), general keys the item itself
        assert K.for_keys(item, True) is item
        words = K.for_keys(item, False)
        assert words.py_func.__qualname__ == item.py_func.__qualname__ + "__words"
        assert len(kernel.signatures) >= 1, kernel.py_func.__name__
        for i in (item, words):
            assert 1 <= len(i.signatures) <= len(kernel.signatures), (i.py_func.__name__, i.signatures)
        # the kernel calls its item through an address (call_entry): none of the item's code
        # is linked into the kernel's module, compiled a second time there (an uncached copy
        # of the kernel: numba does not keep the IR of cached code)
        fresh = njit(nogil=True)(kernel.py_func)
        fresh.compile(kernel.signatures[0])
        ir = fresh.inspect_llvm(kernel.signatures[0])
        assert item.py_func.__name__ not in ir, kernel.py_func.__name__
        assert fresh.py_func.__name__ in ir


def test_an_item_entry_for_other_argument_types_raises():
    # a threaded kernel checks its entry's tag against its records' types before any call: an
    # item function compiled for other types would read its arguments wrongly
    from gpuframe.backends.cpu._target import run_threads
    from gpuframe.kernels import join_cpu as K

    keys = np.array([7, 9, 7], np.uint64)
    rec = K.build_side(keys=keys, valid=np.zeros(0, np.uint8), starts=np.array([0, 3, 3]), nparts=1, pbits=0,
                       kmode=0, verify=False, w=np.zeros((0, 0), np.uint64), st=np.zeros((0, 0), np.int64),
                       en=np.zeros((0, 0), np.int64), ch=np.zeros(0, np.uint8), tables=np.zeros(16, np.int32),
                       toffs=np.array([0, 16]), nxt=np.zeros(3, np.int64), unique=False, orig=np.zeros(0, np.int64),
                       cols=np.zeros(0, np.int64))
    entry = K.item_entry(K.build_tables, False, (rec,))
    assert run_threads(K.build_tables, 1, entry, rec) == [1]      # one row joined a chain (the second 7)
    with pytest.raises(TypeError, match="other argument types"):
        run_threads(K.build_tables, 1, (entry[0], entry[1] ^ 1), rec)


@pytest.mark.parametrize("how", ["inner", "left", "outer", "right"])
def test_one_pass_join_rows_outside_whole_batches(monkeypatch, how):
    # the one-pass (direct) path writes single rows, an item's last rows and the rows of a
    # partition without build rows, through its batch paths as batches of one: distinct build
    # keys, a scattered probe, 16 partitions for 6 build rows (most of them empty), probe
    # lengths that are no multiple of the batch, nulls, a string key and string payloads
    from gpuframe.backends.cpu import join as cpu_join

    monkeypatch.setattr(cpu_join, "_INPLACE_BUILD_BYTES", -1)
    monkeypatch.setattr(cpu_join, "_FLAT_BUILD_BYTES", -1)
    monkeypatch.setattr(cpu_join, "_FLAT_CACHE_BYTES", -1)
    monkeypatch.setattr(cpu_join, "_ROWS_PER_PARTITION", 1)
    monkeypatch.setattr(cpu_join, "_ITEM_ROWS", 13)
    rng = np.random.default_rng(21)
    for n in (1, 7, 9, 203):
        pk = rng.integers(-2, 9, n)
        probe = pa.table({"k": pa.array(pk, mask=pk == -2), "a": np.arange(n),
                          "s": pa.array([f"p{x}é" * (x % 3) for x in range(n)])})
        build = pa.table({"k": pa.array([0, 3, 5, 6, 8, None], pa.int64()), "b": np.arange(6),
                          "t": pa.array(["", "b3", None, "b6", "long build payload 8", "n"])})
        check_join(probe, build, how, on="k")
        strings = lambda t: t.set_column(0, "k", pa.array([None if x is None else f"key{x}"   # noqa: E731
                                                           for x in t.column("k").to_pylist()]))
        check_join(strings(probe), strings(build), how, on="k")
