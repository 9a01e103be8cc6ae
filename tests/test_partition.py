"""partition_ids / hash_partition on the CPU backend: exact oracles and invariants."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gpuframe
from gpuframe.kernels.hashing import partition_of
from gpuframe.ops.hashing import hash_rows
from gpuframe.ops.partition import hash_partition, partition_ids

from .common import hashref as ref
from .common.data import DTYPES, random_table

ALL = {f"c{i}": t for i, t in enumerate(DTYPES)}


def stable_oracle(tbl: pa.Table, pids: np.ndarray, n: int) -> tuple[pa.Table, np.ndarray]:
    """The CPU result exactly: rows sorted by partition id, input order kept inside a partition."""
    order = np.argsort(pids, kind="stable")
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(pids, minlength=n), out=offsets[1:])
    return tbl.take(pa.array(order)), offsets


def assert_tables_equal(got: gpuframe.Table, expect: pa.Table) -> None:
    g = got.to_arrow()
    assert g.schema == expect.schema
    for name in expect.column_names:
        a, b = g.column(name), expect.column(name)
        if pa.types.is_dictionary(b.type):
            a, b = a.cast(b.type.value_type), b.cast(b.type.value_type)
        la, lb = a.to_pylist(), b.to_pylist()
        assert len(la) == len(lb) and all(x == y or (x != x and y != y) for x, y in zip(la, lb)), name
    for col in got.columns:
        col.to_arrow().validate(full=True)


def check_partition(tbl: pa.Table, on, n: int, seed: int = 0) -> tuple[gpuframe.Table, np.ndarray]:
    t = gpuframe.from_arrow(tbl)
    out, offsets = hash_partition(t, on, n, seed=seed)
    expect_pids = np.array(ref.partition_ids(tbl, on, n, seed), dtype=np.int64)
    pids = partition_ids(t, on, n, seed=seed)
    assert pids.dtype == np.int32 and pids.tolist() == expect_pids.tolist()
    assert isinstance(offsets, np.ndarray) and offsets.dtype == np.int64 and offsets.shape == (n + 1,)
    exp_tbl, exp_offsets = stable_oracle(tbl, expect_pids, n)
    assert offsets.tolist() == exp_offsets.tolist()
    assert_tables_equal(out, exp_tbl)
    # invariants, checked on the output itself
    out_pids = partition_ids(out, on, n, seed=seed)
    assert (np.repeat(np.arange(n), np.diff(offsets)) == out_pids).all()  # every row in its own partition
    assert ref.sortable(out.to_arrow()) == ref.sortable(tbl)               # rows preserved as a multiset
    return out, offsets


def test_every_dtype_as_key(dtype, with_nulls):
    tbl = random_table(400, {"k": dtype, "payload": pa.int64(), "s": pa.string()}, nulls=with_nulls, seed=5, cardinality=60)
    out, offsets = check_partition(tbl, "k", 7)
    if with_nulls:  # all null keys land in one partition
        k = out.to_arrow().column("k")
        parts = np.repeat(np.arange(7), np.diff(offsets))
        assert len(set(parts[k.is_null().to_numpy(zero_copy_only=False)].tolist())) == 1


def test_every_dtype_moves_as_payload():
    tbl = random_table(600, ALL, nulls=True, seed=8, cardinality=90)
    out, _ = check_partition(tbl, ["c3"], 5)  # int64 key, all 17 types carried with nulls
    t = gpuframe.from_arrow(tbl)
    out, _ = hash_partition(t, "c3", 5)
    assert out["c16"].dictionary is t["c16"].dictionary  # dictionary shared, indices moved
    assert all(c.offset == 0 and c.null_count > 0 for c in out.columns)
    tbl2 = random_table(600, ALL, nulls=False, seed=9)
    check_partition(tbl2, ["c11", "c0"], 64)


@pytest.mark.parametrize("n", [1, 2, 3, 64, 255, 256, 257, 1000, 70000])
def test_partition_counts(n):
    tbl = random_table(3000, {"k": pa.int64(), "v": pa.float64(), "b": pa.bool_()}, nulls=True, seed=n)
    check_partition(tbl, "k", n)


def test_each_key_in_exactly_one_partition_and_pid_is_partition_of_hash():
    tbl = random_table(2000, {"k": pa.string(), "j": pa.int16()}, nulls=True, seed=3, cardinality=50)
    t = gpuframe.from_arrow(tbl)
    h = hash_rows(t, ["k", "j"], seed=11)
    pids = partition_ids(t, ["k", "j"], 13, seed=11)
    assert pids.tolist() == [partition_of(x, 13) for x in h]
    out, offsets = hash_partition(t, ["k", "j"], 13, seed=11)
    a = out.to_arrow()
    keys = list(zip(a.column("k").to_pylist(), a.column("j").to_pylist()))
    where = {}
    for p in range(13):
        for key in keys[offsets[p]:offsets[p + 1]]:
            assert where.setdefault(key, p) == p


def test_high_bits_choose_the_partition():
    # partition_of uses h >> 32: hashes that differ only in the low 32 bits share a partition
    for h in [0, 2**32 - 1, 2**63, 2**64 - 1, 0x123456789ABCDEF0]:
        for n in [1, 2, 7, 64, 2**31 - 1]:
            p = int(partition_of(np.uint64(h), n))
            assert p == ((h >> 32) * n) >> 32 and 0 <= p < n
            assert p == int(partition_of(np.uint64(h ^ 0xFFFFFFFF), n))


def test_skewed_keys():
    k = np.where(np.random.default_rng(0).random(5000) < 0.95, 7, np.arange(5000))
    tbl = pa.table({"k": pa.array(k, pa.int64()), "v": pa.array(np.arange(5000))})
    out, offsets = check_partition(tbl, "k", 16)
    assert np.diff(offsets).max() >= 4750
    one = pa.table({"k": pa.array([3] * 100, pa.int32()), "s": pa.array(["v"] * 100)})
    _, offsets = check_partition(one, "k", 8)
    assert sorted(np.diff(offsets).tolist())[-1] == 100


def test_edge_values():
    i64 = np.iinfo(np.int64)
    tbl = pa.table({
        "i": pa.array([i64.min, i64.max, 0, -1, None, i64.min, i64.max], pa.int64()),
        "f": pa.array([float("nan"), -0.0, 0.0, float("-nan"), None, float("inf"), 1.0]),
        "s": pa.array(["", "", "a", None, "", "bb", "a"]),
    })
    for on in ("i", "f", "s", ["i", "f", "s"]):
        out, offsets = check_partition(tbl, on, 4)
    # NaN and -0.0 go with NaN and +0.0
    pids = partition_ids(gpuframe.from_arrow(tbl), "f", 1000)
    assert pids[0] == pids[3] and pids[1] == pids[2]


def test_equal_keys_across_types_go_to_the_same_partition():
    vals = list(range(-50, 50))
    words = [f"w{v}" if v % 9 else "" for v in vals]
    t = gpuframe.from_arrow(pa.table({
        "i32": pa.array(vals, pa.int32()), "i64": pa.array(vals, pa.int64()),
        "s": pa.array(words, pa.string()), "ls": pa.array(words, pa.large_string()),
        "d": pa.array(words).dictionary_encode(),
    }))
    assert partition_ids(t, "i32", 17).tolist() == partition_ids(t, "i64", 17).tolist()
    ps = partition_ids(t, "s", 17).tolist()
    assert ps == partition_ids(t, "ls", 17).tolist() == partition_ids(t, "d", 17).tolist()
    assert partition_ids(t, ["i32", "s"], 17).tolist() == partition_ids(t, ["i64", "d"], 17).tolist()


def test_zero_rows():
    tbl = random_table(0, ALL)
    t = gpuframe.from_arrow(tbl)
    out, offsets = hash_partition(t, ["c0", "c11"], 4)
    assert out.num_rows == 0 and out.to_arrow().schema == tbl.schema
    assert offsets.tolist() == [0, 0, 0, 0, 0]
    assert partition_ids(t, "c0", 4).shape == (0,)
    assert [p.num_rows for p in t.partition_by_hash("c0", 3)] == [0, 0, 0]


def test_sliced_input():
    tbl = random_table(500, ALL, nulls=True, seed=12, cardinality=40)
    t = gpuframe.from_arrow(tbl).slice(37, 300)
    out, offsets = hash_partition(t, ["c3", "c11"], 6)
    sl = tbl.slice(37, 300)
    exp, exp_offsets = stable_oracle(sl, np.array(ref.partition_ids(sl, ["c3", "c11"], 6)), 6)
    assert offsets.tolist() == exp_offsets.tolist()
    assert_tables_equal(out, exp)


def test_multi_chunk_stable_path():
    # large enough for one chunk per thread: order inside partitions must still be the input order
    n = 300_000
    tbl = random_table(n, {"k": pa.int64(), "v": pa.int64(), "w": pa.int32(), "s": pa.string()}, nulls=True, seed=2)
    tbl = tbl.append_column("row", pa.array(np.arange(n)))
    t = gpuframe.from_arrow(tbl)
    out, offsets = hash_partition(t, "k", 64)
    pids = partition_ids(t, "k", 64)
    order = np.argsort(pids, kind="stable")
    assert np.array_equal(out["row"].values(), order)
    a = out.to_arrow()
    for name in ("k", "v", "w", "s"):
        assert a.column(name).equals(tbl.column(name).take(pa.array(order))), name
    assert offsets.tolist() == [0] + np.cumsum(np.bincount(pids, minlength=64)).tolist()


def test_partition_by_hash_slices():
    tbl = random_table(1000, {"k": pa.int64(), "s": pa.string()}, nulls=True, seed=1)
    t = gpuframe.from_arrow(tbl)
    parts = t.partition_by_hash("k", 5)
    out, offsets = hash_partition(t, "k", 5)
    assert [p.num_rows for p in parts] == np.diff(offsets).tolist()
    for i, p in enumerate(parts):
        assert set(partition_ids(p, "k", 5).tolist()) <= {i}


def test_seed_changes_partitions_and_is_deterministic():
    tbl = random_table(2000, {"k": pa.int64()}, seed=1)
    t = gpuframe.from_arrow(tbl)
    a = partition_ids(t, "k", 8, seed=1)
    assert np.array_equal(a, partition_ids(t, "k", 8, seed=1))
    assert not np.array_equal(a, partition_ids(t, "k", 8, seed=2))
    check_partition(tbl, "k", 8, seed=2**64 - 1)


def test_validation_errors():
    t = gpuframe.from_arrow(pa.table({"a": [1, 2], "b": ["x", "y"]}))
    with pytest.raises(KeyError, match=r"'c'.*\['a', 'b'\]"):
        hash_partition(t, "c", 2)
    with pytest.raises(KeyError, match="'c'"):
        gpuframe.hash_partition(t, ["a", "c"], 2)
    for bad in (0, -3):
        with pytest.raises(ValueError, match=rf"num_partitions.*got {bad}"):
            hash_partition(t, "a", bad)
    for bad in (2.0, "4", None, True):
        with pytest.raises(TypeError, match=rf"num_partitions.*got {bad!r}"):
            hash_partition(t, "a", bad)
    with pytest.raises(ValueError, match="num_partitions"):
        partition_ids(t, "a", 2**31)
    with pytest.raises(TypeError, match="on must"):
        hash_partition(t, 5, 2)
    with pytest.raises(TypeError, match="seed"):
        hash_partition(t, "a", 2, seed=1.5)
    assert hash_partition(t, "a", np.int64(2))[1].shape == (3,)


_col = st.one_of(
    st.tuples(st.just(pa.int64()), st.lists(st.one_of(st.none(), st.integers(-2**63, 2**63 - 1)), max_size=80)),
    st.tuples(st.just(pa.string()), st.lists(st.one_of(st.none(), st.text(max_size=12)), max_size=80)),
    st.tuples(st.just(pa.float32()), st.lists(st.one_of(st.none(), st.floats(width=32)), max_size=80)),
    st.tuples(st.just(pa.bool_()), st.lists(st.one_of(st.none(), st.booleans()), max_size=80)),
    st.tuples(st.just(pa.uint8()), st.lists(st.one_of(st.none(), st.integers(0, 255)), max_size=80)),
)


@settings(max_examples=50, deadline=None)
@given(cols=st.lists(_col, min_size=1, max_size=3), n=st.integers(1, 40), seed=st.integers(0, 2**64 - 1), data=st.data())
def test_hypothesis_random_tables(cols, n, seed, data):
    rows = min(len(v) for _, v in cols)
    tbl = pa.table({f"c{i}": pa.array(v[:rows], t) for i, (t, v) in enumerate(cols)})
    on = data.draw(st.lists(st.sampled_from(tbl.column_names), min_size=1, max_size=len(cols), unique=True))
    check_partition(tbl, on, n, seed)


def test_outputs_survive_pool_reuse():
    tbl = random_table(800_000, {"k": pa.int64(), "v": pa.int64()}, seed=4)
    t = gpuframe.from_arrow(tbl)
    out1, _ = hash_partition(t, "k", 8)
    keep = out1["v"].values().copy()
    out2, _ = hash_partition(t, "k", 8, seed=1)  # must not reuse out1's live memory
    assert np.array_equal(out1["v"].values(), keep)
    assert not np.array_equal(out2["v"].values(), keep)


@pytest.mark.parametrize("n", [1, 7, 64, 1024, 1025])
def test_streaming_scatter_every_width(n):
    # >= 65536 rows: one chunk per thread, and the write-combining scatter (up to 1024 partitions)
    # for 1-, 2-, 4- and 8-byte columns, alone and in pairs, from a sliced input
    rows = 150_000
    dtypes = {"k": pa.int64(), "i8": pa.int8(), "i16": pa.int16(), "u16": pa.uint16(), "i32": pa.int32(),
              "f32": pa.float32(), "d": pa.date32(), "u8": pa.uint8(), "f64": pa.float64(),
              "dict": pa.dictionary(pa.int32(), pa.string())}
    tbl = random_table(rows + 11, dtypes, nulls=False, seed=n).slice(11)
    t = gpuframe.from_arrow(tbl)
    out, offsets = hash_partition(t, "k", n)
    pids = np.array(partition_ids(t, "k", n))
    exp, exp_offsets = stable_oracle(tbl, pids, n)
    assert offsets.tolist() == exp_offsets.tolist()
    a = out.to_arrow()
    for name in dtypes:
        assert a.column(name).equals(exp.column(name)), name


# ------------------------------------------------------------------------------ the skewed merge's split
@pytest.mark.parametrize("keys", [["k"], ["k", "s"]], ids=["fixed_key_fused", "two_keys_hashed"])
@pytest.mark.parametrize("nheavy", [2, 40], ids=["scan", "binary_search"])
def test_hash_partition_heavy_sends_heavy_hashes_to_their_own_partitions(keys, nheavy):
    """The CPU capability behind gpuframe._skew.route: a row whose hash is a heavy one goes to
    partition ``nparts - 1 + code``, every other row to its hash partition, stably; null keys
    too (the null hash made heavy); a scan for few heavy hashes, a binary search for many."""
    from gpuframe.backends.cpu.partition import hash_partition_heavy
    from gpuframe.ops.hashing import key_columns

    rng = np.random.default_rng(nheavy)
    n = 70_000   # above the parallel threshold: several chunks
    k = rng.integers(0, 500, n)
    k[rng.random(n) < 0.3] = 7
    kv = pa.array(np.where(rng.random(n) < 0.05, None, k).tolist(), pa.int64())
    t = gpuframe.from_arrow(pa.table({"k": kv, "s": pa.array([f"s{i % 3}" for i in range(n)]),
                                      "row": np.arange(n)}))
    h = np.asarray(hash_rows(t, keys, 0))
    distinct = np.unique(h)
    heavy_rows = np.flatnonzero(kv.is_null().to_numpy(zero_copy_only=False))[:1].tolist() + [int(np.argmax(k == 7))]
    chosen = np.unique(np.concatenate([h[heavy_rows], rng.choice(distinct, nheavy - 2, replace=False)]))
    codes = np.where(np.arange(len(chosen)) % 2 == 0, 1, 2).astype(np.int8)
    order = np.argsort(chosen)
    heavy, codes = chosen[order].astype(np.uint64), codes[order]
    nparts = 3
    parted, offsets = hash_partition_heavy(t, key_columns(t, keys, t.device), nparts, np.uint64(0), heavy, codes)
    assert len(offsets) == nparts + 3 and offsets[-1] == n
    rows = parted["row"].to_arrow().to_numpy()
    assert sorted(rows.tolist()) == list(range(n))
    code_of = dict(zip(heavy.tolist(), codes.tolist()))
    for p in range(nparts + 2):
        mine = rows[offsets[p]:offsets[p + 1]]
        assert (np.diff(mine) > 0).all()   # stable: input order within a partition
        hp = h[mine]
        if p < nparts:
            assert not np.isin(hp, heavy).any()
            assert (partition_of(hp, nparts) == p).all()
        else:
            assert all(code_of[x] == p - nparts + 1 for x in hp.tolist())
    # key 7's hash (30% of the rows; a third of them with the string key too) is heavy
    assert offsets[nparts + 2] - offsets[nparts] > 0.09 * n
    assert offsets[nparts + 1] > offsets[nparts] and offsets[nparts + 2] > offsets[nparts + 1]
