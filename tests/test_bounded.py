"""The bounded exchange's pieces that run without peers: the bucket store (kept rounds, spilled
rounds, reading back in round order, cleaning up), the chunking of the input and the budget
settings. The exchange itself, in rounds between ranks and under Dask: tests/distributed/
test_bounded_exchange.py."""
from __future__ import annotations

import collections
import os

import numpy as np
import pyarrow as pa
import pytest

import gpuframe
from gpuframe.core.device import CPU
from gpuframe import _bounded
from gpuframe._bounded import BucketStore, budget_bytes, budget_setting, chunks


def piece(n: int, seed: int) -> gpuframe.Table:
    """``n`` rows of every layout the store writes: int64 with nulls, string with empty and
    non-ASCII values, a dictionary whose entries differ from piece to piece, bool, timestamp."""
    rng = np.random.default_rng(seed)
    return gpuframe.from_arrow(pa.table({
        "k": pa.array([None if rng.random() < 0.2 else int(v) for v in rng.integers(-5, 5, n)], pa.int64()),
        "s": pa.array([["", "é", "xyz", None][int(v)] for v in rng.integers(0, 4, n)], pa.string()),
        "d": pa.array([f"cat{seed}-{int(v)}" for v in rng.integers(0, 3, n)], pa.string()).dictionary_encode(),
        "b": pa.array(rng.random(n) < 0.5),
        "t": pa.array(rng.integers(0, 10**12, n), pa.timestamp("us")),
    }))


def values(table: gpuframe.Table) -> list[tuple]:
    t = table.to_arrow()
    cols = [c.combine_chunks() for c in t.columns]
    cols = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in cols]
    return list(zip(*[c.to_pylist() for c in cols]))


@pytest.mark.parametrize("memory", [None, 0, 2000], ids=["all_kept", "all_spilled", "some_spilled"])
def test_store_gives_back_every_row_in_round_order(tmp_path, memory):
    rounds = [{0: piece(30, 1), 1: piece(0, 2)}, {0: piece(17, 3), 1: piece(25, 4)},
              {0: piece(40, 5), 1: piece(9, 6)}, {0: piece(1, 7), 1: piece(33, 8)}]
    schema = rounds[0][0].schema
    store = BucketStore([0, 1], schema, CPU, memory=memory, directory=str(tmp_path / "spill"))
    for r in rounds:
        store.add_round(r, sum(t.nbytes for t in r.values()))
    store.finish()
    if memory == 0:
        assert store.spilled_rounds == 4 and store.spilled_bytes > 0 and store.kept_bytes == 0
    elif memory is None:
        assert store.spilled_rounds == 0
    else:
        assert 0 < store.spilled_rounds < 4
    spilled = os.listdir(tmp_path / "spill") if memory is not None and memory < 10**6 else []
    for b in (0, 1):
        assert store.rows(b) == sum(r[b].num_rows for r in rounds)
        got = store.take(b)
        assert got.schema.names == schema.names
        assert values(got) == [row for r in rounds for row in values(r[b])]
    if spilled:
        assert not os.listdir(tmp_path / "spill"), "the spill folder outlived the store's last bucket"
    with pytest.raises(KeyError, match="bucket 0"):
        store.take(0)


def test_store_of_empty_buckets_and_cleanup_when_dropped(tmp_path):
    t = piece(50, 1)
    store = BucketStore([3, 4], t.schema, CPU, memory=0, directory=str(tmp_path))
    store.add_round({3: t, 4: t.slice(0, 0)}, t.nbytes)
    store.finish()
    (folder,) = os.listdir(tmp_path)
    assert os.listdir(tmp_path / folder) == ["bucket-3.arrows"]
    empty = store.take(4)
    assert empty.num_rows == 0 and empty.schema.names == t.schema.names
    del store            # bucket 3 never taken (an output Dask no longer wanted): the folder goes too
    assert not os.listdir(tmp_path)


def test_store_without_folder_keeps_everything():
    t = piece(20, 2)
    store = BucketStore([0], t.schema, CPU, memory=0, directory=None)
    store.add_round({0: t}, t.nbytes)
    store.add_round({0: t}, t.nbytes)
    assert store.spilled_rounds == 0 and store.rows(0) == 40
    assert values(store.take(0)) == values(t) * 2


def test_chunks_and_take_cover_every_row_once():
    t = gpuframe.from_arrow(pa.table({"k": np.arange(1000, dtype=np.int64), "s": [str(i) for i in range(1000)]}))
    parts = list(chunks([t, t.slice(0, 0), t.slice(10, 5)], 3000))
    assert all(p.nbytes <= 3000 + 64 for p in parts) and len(parts) > 3
    assert sum(p.num_rows for p in parts) == 1005
    copies = [_bounded._Copy(p.nbytes, 1) for p in parts]
    queue = collections.deque((p, p.nbytes, c) for p, c in zip(parts, copies))
    seen, freed = [], []
    while queue:
        taken, nb, done = _bounded._take(queue, 700)
        assert taken and nb <= 700 + 64     # at least a row; a cap, give or take a row
        seen += [v for p in taken for v in p.to_arrow().column("k").to_pylist()]
        freed += done
    assert seen == list(range(1000)) + list(range(10, 15))
    assert freed == copies                  # each copy freed once, when its last rows went


def test_row_bytes_leave_out_dictionaries():
    # a slice reports its whole dictionary in nbytes: sizing rounds by it would send a row a round
    big = pa.array([f"entry-{i:06d}" for i in range(50_000)]).dictionary_encode()
    t = gpuframe.from_arrow(pa.table({"d": big, "v": np.arange(50_000)}))
    few = t.slice(0, 10)
    assert few.nbytes > 500_000
    assert _bounded.data_bytes(few) == 10 * 4 + 10 * 8
    assert sum(p.num_rows for p in chunks([t], 64 << 10)) == 50_000
    assert len(list(chunks([t], 64 << 10))) <= 10


def test_a_failed_read_leaves_the_bucket_for_a_retry(tmp_path, monkeypatch):
    t = piece(30, 1)
    store = BucketStore([0, 1], t.schema, CPU, memory=0, directory=str(tmp_path))
    store.add_round({0: t, 1: t}, 2 * t.nbytes)
    store.finish()

    def broken(*_a, **_k):
        raise MemoryError("no room to read it back")

    monkeypatch.setattr(_bounded.pa, "memory_map", broken)
    with pytest.raises(MemoryError):
        store.read(0)
    monkeypatch.undo()
    assert values(store.read(0)) == values(t)       # still there
    store.drop(0)
    assert values(store.take(1)) == values(t)
    assert not os.listdir(tmp_path)


def test_a_failure_mid_rounds_closes_the_communicator_and_the_store(tmp_path):
    class Comm:
        rank, size, closed = 0, 1, False

        def close(self):
            self.closed = True

    def sources():
        yield piece(10, 1)
        raise OSError("No space left on device")

    t = piece(10, 1)
    store = BucketStore([0], t.schema, CPU, memory=0, directory=str(tmp_path))
    store.add_round({0: t}, t.nbytes)           # a spilled round already on disk
    comm = Comm()
    with pytest.raises(OSError, match="No space left"):
        _bounded.shuffle_rounds(sources(), ["k"], comm, schema=t.schema, buckets=1, seed=0, budget=1 << 20,
                                store=store)
    assert comm.closed
    assert not os.listdir(tmp_path), "the spill folder outlived the failed shuffle"


def test_budget_settings():
    assert budget_bytes(budget_setting("1MiB"), 10**9, 0.25) == 2**20
    assert budget_bytes(budget_setting(0.5), 1000, 0.25) == 500
    assert budget_bytes(budget_setting(0), 1000, 0.25) == 0
    with gpuframe.config.options(exchange_memory_budget="3MB"):
        assert budget_bytes(budget_setting(None), 1000, 0.25) == 3 * 10**6
    assert budget_bytes(None, 1000, 0.25) == 250 and budget_bytes(None, 1000, None) == 0
    with pytest.raises(ValueError, match="memory_budget must be a byte count.*got '12 apples'"):
        budget_setting("12 apples")
    with pytest.raises(TypeError, match="memory_budget.*got True"):
        budget_setting(True)
