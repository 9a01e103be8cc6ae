"""gpuframe.distributed: shuffle and merge of one Table per rank, ranks in threads of one process."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import gpuframe
import gpuframe.distributed as gd
from gpuframe.comm import local_mesh
from gpuframe.ops.partition import partition_ids

from ..common.data import DTYPES, random_table
from .helpers import BACKENDS, concat, mesh_fixture, run_ranks, same_rows
from .oracle import key_frame, merge_oracle, to_arrow

pytestmark = pytest.mark.distributed


mesh = mesh_fixture([(b, n) for b in BACKENDS for n in (1, 2, 3)])


def split(df: pd.DataFrame, size: int) -> list[pa.Table]:
    """Uneven row ranges of ``df`` as one Arrow table per rank (rank 0 may get none)."""
    cuts = [0] + [len(df) * (r + 1) // (size + 1) for r in range(size - 1)] + [len(df)]
    return [to_arrow(df.iloc[cuts[r]:cuts[r + 1]]) for r in range(size)]


# ------------------------------------------------------------------------------ shuffle
def test_shuffle_invariants_every_type(mesh):
    size = len(mesh)
    cols = {f"c{i}": t for i, t in enumerate(DTYPES)}
    inputs = [random_table(120 + 40 * r, cols, nulls=True, seed=r, cardinality=15) for r in range(size)]
    key = ["c3", "c11"]  # int64 + string, both with nulls and duplicates

    def rank(r):
        stats = {}
        out = gd.shuffle(gpuframe.from_arrow(inputs[r]), key, mesh[r], stats=stats)
        return out, stats

    res = run_ranks(rank, size)
    for r, (out, stats) in enumerate(res):
        # every row is on the rank its key hashes to
        if out.num_rows:
            assert set(np.asarray(partition_ids(out, key, size)).tolist()) == {r}
        assert set(stats) >= {"partition_s", "exchange_s", "bytes_sent", "bytes_received"}
    # no row lost or duplicated
    assert same_rows(concat([o.to_arrow() for o, _ in res]), concat(inputs))
    # a key lives on exactly one rank
    seen = [set(map(tuple, zip(*(o.to_arrow()[k].to_pylist() for k in key)))) for o, _ in res]
    for a in range(size):
        for b in range(a + 1, size):
            assert not seen[a] & seen[b]


def test_shuffle_skewed_and_empty_ranks(mesh):
    size = len(mesh)
    # rank 0 holds nothing; everything else is one key: every row ends on one rank
    tables = [pa.table({"k": pa.array([], pa.int32()), "v": pa.array([], pa.float64())})] + [
        pa.table({"k": pa.array([5] * 50, pa.int32()), "v": pa.array(np.arange(50.0))}) for _ in range(size - 1)]
    res = run_ranks(lambda r: gd.shuffle(gpuframe.from_arrow(tables[r]), "k", mesh[r]), size)
    sizes = sorted(t.num_rows for t in res)
    assert sizes == [0] * (size - 1) + [50 * (size - 1)]


def test_shuffle_pieces_more_buckets_than_ranks(mesh):
    size = len(mesh)
    buckets = 5
    src = [pa.table({"k": pa.array(np.arange(200) * (r + 1) % 37, pa.int64()), "r": pa.array([r] * 200)})
           for r in range(size)]

    def rank(r):
        t = gpuframe.from_arrow(src[r])
        return gd.shuffle_pieces([t.slice(0, 77), t.slice(77)], "k", mesh[r], schema=t.schema, buckets=buckets)

    res = run_ranks(rank, size)
    assert sum(len(parts) for parts in res) == buckets
    b = 0
    for r, parts in enumerate(res):
        lo, hi = gd.owned_buckets(r, size, buckets)
        assert len(parts) == hi - lo
        for part in parts:
            if part.num_rows:
                assert set(np.asarray(partition_ids(part, "k", buckets)).tolist()) == {b}
            b += 1
    assert same_rows(concat([p.to_arrow() for parts in res for p in parts]), concat(src))


@pytest.mark.parametrize("buckets", [None, 5])
def test_shuffle_in_rounds_under_a_memory_budget(mesh, buckets):
    """Under a budget the exchange runs in rounds of at most budget / 8 bytes a rank (64 KiB at
    the least), a heavy key making more rounds, not bigger ones; the result has the rows of the
    one-shot shuffle, and with one round, in the same order."""
    size = len(mesh)
    cols = {f"c{i}": t for i, t in enumerate(DTYPES)}
    inputs = [random_table(3000 + 500 * r, cols, nulls=True, seed=r, cardinality=40) for r in range(size)]
    if size > 1:
        inputs[0] = inputs[0].slice(0, 0)                   # a rank with nothing to send
    heavy = pa.table({n: pa.concat_arrays([c.combine_chunks()] * 40) for n, c in zip(inputs[-1].column_names,
                                                                                      inputs[-1].slice(0, 1).columns)})
    inputs[-1] = pa.concat_tables([inputs[-1], heavy])      # one key's rows: a bucket gets many more
    key = ["c3", "c11"]

    def rank(r, budget):
        stats = {}
        t = gpuframe.from_arrow(inputs[r])
        out = gd.shuffle_pieces([t.slice(0, 1000), t.slice(1000)], key, mesh[r], schema=t.schema, buckets=buckets,
                                memory_budget=budget, stats=stats)
        return [o.to_arrow() for o in out], stats

    one_shot = run_ranks(lambda r: rank(r, 0), size)
    rounds = run_ranks(lambda r: rank(r, "512KiB"), size)
    assert len({s["rounds"] for _o, s in rounds}) == 1 and rounds[0][1]["rounds"] > 2
    for (expect, _s), (got, stats) in zip(one_shot, rounds):
        assert "rounds" not in _s
        assert stats["round_received_max"] <= 64 * 1024 * 1.05 + 200
        assert [g.num_rows for g in got] == [e.num_rows for e in expect]
        for g, e in zip(got, expect):
            assert same_rows(g, e)
    # a budget that holds everything: one round, the one-shot order
    whole = run_ranks(lambda r: rank(r, "1GiB"), size)
    for (expect, _s), (got, stats) in zip(one_shot, whole):
        assert stats["rounds"] == 1
        assert all(g.equals(e) for g, e in zip(got, expect))
    with pytest.raises(ValueError, match="memory_budget must be"):
        gd.shuffle(gpuframe.from_arrow(inputs[0]), key, mesh[0], memory_budget="lots")


# ------------------------------------------------------------------------------ merge
@pytest.mark.parametrize("how", ["inner", "left", "right", "outer"])
@pytest.mark.parametrize("nulls_equal", [False, True], ids=["nulls_differ", "nulls_equal"])
def test_merge_matches_pandas(mesh, how, nulls_equal):
    size = len(mesh)
    left = key_frame(300, 1, "a")
    right = key_frame(200, 2, "b", card=50)
    lt, rt = split(left, size), split(right, size)

    def rank(r):
        stats = {}
        out = gd.merge(gpuframe.from_arrow(lt[r]), gpuframe.from_arrow(rt[r]), on="k", how=how,
                       nulls_equal=nulls_equal, comm=mesh[r], stats=stats)
        assert stats["merge_s"] >= 0 and stats["exchange_s"] >= 0
        return out.to_arrow()

    got = concat(run_ranks(rank, size))
    expect = to_arrow(merge_oracle(left, right, "k", how, nulls_equal))
    assert got.column_names == expect.column_names
    assert got.num_rows == expect.num_rows
    assert same_rows(got, expect)


@pytest.mark.parametrize("how", ["semi", "anti"])
def test_semi_anti_match_pandas(mesh, how):
    size = len(mesh)
    left, right = key_frame(250, 3, "a"), key_frame(90, 4, "b", card=60)
    lt, rt = split(left, size), split(right, size)
    got = concat(run_ranks(lambda r: gd.merge(gpuframe.from_arrow(lt[r]), gpuframe.from_arrow(rt[r]), on="k",
                                              how=how, comm=mesh[r]).to_arrow(), size))
    assert same_rows(got, to_arrow(merge_oracle(left, right, "k", how, False)))


@pytest.mark.parametrize("ltype,rtype", [("int32", "int64"), ("int64", "float64"), ("float32", "int16"),
                                         ("string", "large_string")])
def test_merge_key_types_meet_across_ranks(mesh, ltype, rtype):
    size = len(mesh)
    rng = np.random.default_rng(9)
    lk, rk = rng.integers(0, 30, 240), rng.integers(0, 30, 160)

    def col(values, typ):
        if typ in ("string", "large_string"):
            return pa.array([f"key{v}" for v in values], getattr(pa, typ)())
        return pa.array(values.astype(typ))

    left = pa.table({"lk": col(lk, ltype), "a": pa.array(np.arange(240))})
    right = pa.table({"rk": col(rk, rtype), "b": pa.array(np.arange(160))})
    cl = [left.slice(r * 240 // size, 240 // size + (240 % size if r == size - 1 else 0)) for r in range(size)]
    cr = [right.slice(r * 160 // size, 160 // size + (160 % size if r == size - 1 else 0)) for r in range(size)]
    got = concat(run_ranks(lambda r: gd.merge(gpuframe.from_arrow(cl[r]), gpuframe.from_arrow(cr[r]), left_on="lk",
                                              right_on="rk", comm=mesh[r]).to_arrow(), size))
    expect = left.to_pandas().merge(right.to_pandas(), left_on="lk", right_on="rk")
    assert got.num_rows == len(expect) > 0
    assert sorted(zip(got["a"].to_pylist(), got["b"].to_pylist())) == sorted(zip(expect["a"], expect["b"]))


def test_merge_rejects_bad_keys_before_exchanging():
    comms = local_mesh(2, "tcp", timeout=5)
    try:
        left = gpuframe.from_arrow(pa.table({"k": pa.array([1, 2]), "a": pa.array([1.0, 2.0])}))
        right = gpuframe.from_arrow(pa.table({"k": pa.array(["x", "y"]), "b": pa.array([1, 2])}))
        # raised on rank 0 alone, without waiting for rank 1: nothing was sent
        with pytest.raises(TypeError, match="cannot join left key 'k' \\(int64\\) with right key 'k' \\(string\\)"):
            gd.merge(left, right, on="k", comm=comms[0])
        with pytest.raises(KeyError, match="no column 'z'"):
            gd.merge(left, left, on="z", comm=comms[0])
        with pytest.raises(TypeError, match="comm must be a connected gpuframe.comm.Communicator"):
            gd.merge(left, left, on="k", comm="tcp://x")
        assert not comms[0].closed and not comms[1].closed
    finally:
        for c in comms:
            c.close()
