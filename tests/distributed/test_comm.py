"""gpuframe.comm: wire format, point-to-point, all-to-all, table exchange, errors, over ucx and tcp.

Ranks live in one process (``local_mesh``, one thread per rank) except in the test that kills a
peer process.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
import pyarrow as pa
import pytest

import gpuframe
from gpuframe.comm import (BootstrapError, CommClosedError, CommError, CommTimeoutError, PeerClosedError,
                           create_communicator, exchange_tables, local_mesh, pack_table, pack_tables,
                           resolve_backend, unpack_table, unpack_tables)
from gpuframe.comm.exchange import start_exchange
from gpuframe.comm.frames import FrameSpec

from ..common.data import DTYPES, random_table
from .helpers import BACKENDS, concat, plain, require, run_ranks

pytestmark = pytest.mark.distributed

ALL_TYPES = {f"c{i}": t for i, t in enumerate(DTYPES)}


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request):
    return require(request.param)


@pytest.fixture(scope="module")
def mesh3(backend):
    comms = local_mesh(3, backend, timeout=30)
    yield comms
    for c in comms:
        c.close()


def assert_same_columns(got: gpuframe.Table, expect: pa.Table) -> None:
    g = got.to_arrow()
    assert g.column_names == expect.column_names
    for name in expect.column_names:
        a, b = plain(g.column(name)), plain(expect.column(name))
        assert a.type == b.type, name
        assert a.equals(b), (name, a, b)
    for col in got.columns:
        col.to_arrow().validate(full=True)


# ------------------------------------------------------------------------------ wire format
@pytest.mark.parametrize("offset,length", [(0, 70), (5, 19), (13, 0), (3, 61)])
def test_pack_unpack_every_type_zero_copy(offset, length):
    tbl = random_table(70, ALL_TYPES, nulls=True, seed=3, cardinality=9)
    src = gpuframe.from_arrow(tbl).slice(offset, length)
    header, frames = pack_table(src)
    # frames are views of the table's own buffers: no copy on the way out
    buffers = [b.array for c in src.columns for cc in (c, c.dictionary) if cc is not None
               for b in (cc.data, cc.validity, cc.offsets) if b is not None]
    assert all(any(np.shares_memory(f, b) for b in buffers) for f in frames if f.nbytes)
    received = [np.array(f, copy=True) for f in frames]       # what a transport delivers
    out = unpack_table(header, received)
    assert_same_columns(out, tbl.slice(offset, length))
    # fixed-width values are the received frames themselves (zero-copy unpack)
    fixed = [n for n, t in ALL_TYPES.items() if pa.types.is_integer(t) or pa.types.is_floating(t)]
    frame_ids = {id(f) for f in received}
    assert all(id(out[n].data.array) in frame_ids for n in fixed)


def test_pack_tables_rejects_mixed_schemas():
    a = gpuframe.from_arrow(pa.table({"k": pa.array([1, 2], pa.int64())}))
    b = gpuframe.from_arrow(pa.table({"k": pa.array([1, 2], pa.int32())}))
    with pytest.raises(ValueError, match="'k': int64 vs int32"):
        pack_tables([a, b])
    header, frames = pack_tables([], schema=a.schema)
    assert unpack_tables(header, frames) == []


def test_unpack_rejects_foreign_header():
    with pytest.raises(CommError, match="not a gpuframe table message"):
        unpack_table({"x": 1}, [])


# ------------------------------------------------------------------------------ bootstrap
def test_a_peer_that_dials_before_connect_is_adopted(backend):
    a, b = create_communicator(backend, timeout=10), create_communicator(backend, timeout=10)
    addresses = [a.start(), b.start()]

    def rank(r):
        if r == 0:
            time.sleep(0.5)  # rank 1 dials rank 0's listener before rank 0 calls connect()
            a.connect(0, addresses)
            a.send(1, {"hi": 0}, [np.arange(3)])
            return None
        b.connect(1, addresses)
        return b.recv(0)

    header, frames = run_ranks(rank, 2)[1]
    assert header == {"hi": 0} and frames[0].tolist() == [0, 1, 2]
    a.close()
    b.close()


def test_connect_validates_addresses(backend):
    c = create_communicator(backend, timeout=5, connect_timeout=2)
    address = c.start()
    with pytest.raises(ValueError, match=r"rank must be an int in \[0, 2\), got 2"):
        c.connect(2, [address, "x"])
    with pytest.raises(ValueError, match="must be this communicator's address"):
        c.connect(0, ["tcp://elsewhere:1", address])
    # a rank that never shows up: a BootstrapError naming it, within connect_timeout
    t0 = time.monotonic()
    with pytest.raises(BootstrapError, match="ranks \\[1\\] did not connect within 2 s"):
        c.connect(0, [address, "ucx://127.0.0.1:9" if backend == "ucx" else "tcp://127.0.0.1:9"])
    assert time.monotonic() - t0 < 10
    c.close()


# ------------------------------------------------------------------------------ point to point
def test_send_recv_header_and_frames(mesh3):
    payload = [np.arange(10, dtype=np.int64), np.zeros(0, np.float32), b"abc", np.array([1.5, -2.0])]

    def rank(r):
        c = mesh3[r]
        if r == 0:
            c.send(2, {"n": 1, "s": "x", "b": b"\x00\x01"}, payload, tag=7)
            c.send(2, {"n": 2}, [np.array([5], np.uint8)], tag=7)
            return c.recv(1)
        if r == 1:
            c.send(0, ["from", 1], [])
            return None
        first = c.recv(0, tag=7)
        second = c.recv(0, tag=7)
        return first, second

    res = run_ranks(rank, 3)
    assert res[0] == (["from", 1], [])
    (h1, f1), (h2, f2) = res[2]
    assert h1 == {"n": 1, "s": "x", "b": b"\x00\x01"} and h2 == {"n": 2}
    assert [f.dtype for f in f1] == [np.int64, np.float32, np.uint8, np.float64]
    assert f1[0].tolist() == list(range(10)) and f1[1].size == 0 and bytes(f1[2]) == b"abc"
    assert f1[3].tolist() == [1.5, -2.0] and f2[0].tolist() == [5]


def test_send_validates_arguments(mesh3):
    c = mesh3[0]
    with pytest.raises(ValueError, match="peer must be another rank"):
        c.send(0, {}, [])
    with pytest.raises(ValueError, match=r"peer must be a rank in \[0, 3\), got 5"):
        c.send(5, {}, [])
    with pytest.raises(ValueError, match="tag must be an int"):
        c.send(1, {}, [], tag=-1)
    with pytest.raises(ValueError, match="must be 1-D"):
        c.send(1, {}, [np.zeros((2, 2))])
    with pytest.raises(ValueError, match="must be contiguous"):
        c.send(1, {}, [np.arange(10)[::2]])
    with pytest.raises(TypeError, match="msgpack"):
        c.send(1, {"x": object()}, [])
    with pytest.raises(ValueError, match="one .header, frames. per rank"):
        c.all_to_all([({}, [])])


# ------------------------------------------------------------------------------ all-to-all
def test_all_to_all_default_and_allocator(mesh3):
    def rank(r):
        msgs = [({"src": r, "dst": p}, [np.full(p + 1, r, np.int32), np.arange(r, dtype=np.float64)])
                for p in range(3)]
        got = mesh3[r].all_to_all(msgs)
        arena = {}

        def allocator(incoming):
            # every rank's sizes are known before any data moves: one buffer for all first frames
            sizes = [specs[0].count for _h, specs in incoming]
            arena["buf"] = buf = np.empty(sum(sizes), np.int32)
            starts = np.cumsum([0] + sizes)
            return [[buf[starts[p]:starts[p + 1]], np.empty(specs[1].count, np.float64)]
                    for p, (_h, specs) in enumerate(incoming)]

        got2 = mesh3[r].all_to_all(msgs, allocator=allocator)
        return got, got2, arena["buf"]

    for r, (got, got2, buf) in enumerate(run_ranks(rank, 3)):
        for p in range(3):
            assert got[p][0] == {"src": p, "dst": r}
            assert got[p][1][0].tolist() == [p] * (r + 1) and got[p][1][1].tolist() == list(range(p))
        assert buf.tolist() == [0] * (r + 1) + [1] * (r + 1) + [2] * (r + 1)
        assert got2[1][1][0].base is buf or got2[1][1][0].base is buf.base


def test_all_to_all_bad_allocator_is_reported(backend):
    mesh3 = local_mesh(3, backend, timeout=30)

    def rank(r):
        msgs = [({}, [np.zeros(4)]) for _ in range(3)]
        if r == 0:
            with pytest.raises(CommError, match="has 8 bytes, the frame has 32"):
                mesh3[r].all_to_all(msgs, allocator=lambda inc: [[np.zeros(1)] for _ in inc], timeout=5)
            return "raised"
        try:
            mesh3[r].all_to_all(msgs, timeout=30)
        except CommError:
            return "peer error"
        return "ok"

    # rank 0 fails locally and closes; the others learn it at once instead of waiting for its data
    t0 = time.monotonic()
    res = run_ranks(rank, 3, timeout=60)
    assert res[0] == "raised" and res[1] == res[2] == "peer error"
    assert time.monotonic() - t0 < 10, "the peers waited for their timeout instead of seeing rank 0 close"
    for c in mesh3:
        c.close()


# ------------------------------------------------------------------------------ table exchange
@pytest.mark.parametrize("size", [1, 2, 3])
def test_exchange_tables_every_type(backend, size):
    comms = local_mesh(size, backend, timeout=30)
    try:
        sources = [random_table(60 + 11 * r, ALL_TYPES, nulls=True, seed=r, cardinality=12) for r in range(size)]

        def cuts(n):
            return [0] + [n * (p + 1) // (size + 1) + p for p in range(size - 1)] + [n]

        def rank(r):
            t = gpuframe.from_arrow(sources[r])
            c = cuts(t.num_rows)
            # two pieces per destination, starting mid-byte; an empty one for rank 0
            out = [[t.slice(c[p], (c[p + 1] - c[p]) // 2), t.slice(c[p] + (c[p + 1] - c[p]) // 2,
                    c[p + 1] - c[p] - (c[p + 1] - c[p]) // 2)] + ([t.slice(0, 0)] if p == 0 else [])
                   for p in range(size)]
            stats = {}
            pending = start_exchange(comms[r], out, stats=stats)
            return pending.result(), stats, pending.rows_from

        res = run_ranks(rank, size)
        for r, (got, stats, rows_from) in enumerate(res):
            pieces = [s.slice(cuts(s.num_rows)[r], cuts(s.num_rows)[r + 1] - cuts(s.num_rows)[r]) for s in sources]
            assert_same_columns(got, concat(pieces))
            # the rows that came from each rank, in rank order (a distributed sort's runs)
            assert rows_from == [p.num_rows for p in pieces]
            if size == 1:
                assert stats["bytes_sent"] == stats["bytes_received"] == 0
            else:
                assert stats["bytes_sent"] > 0 and stats["bytes_received"] > 0
    finally:
        for c in comms:
            c.close()


def test_exchange_tables_values_land_in_one_buffer(mesh3):
    def rank(r):
        t = gpuframe.from_arrow(pa.table({"v": pa.array(np.arange(10) + 100 * r, pa.int64())}))
        return exchange_tables(mesh3[r], [[t.slice(3 * p, 3)] for p in range(3)])

    for r, got in enumerate(run_ranks(rank, 3)):
        assert got["v"].to_pylist() == [100 * p + 3 * r + i for p in range(3) for i in range(3)]
        # one buffer of exactly the 9 received values: the transport wrote each rank's rows in place
        assert got["v"].offset == 0 and got["v"].data.size == 9


def test_exchange_tables_different_dictionaries(mesh3):
    def rank(r):
        words = [f"w{r}_{i}" for i in range(3)] + ["shared"]
        arr = pa.array([words[i % 4] for i in range(8)]).dictionary_encode().cast(pa.dictionary(pa.int8(), pa.string()))
        t = gpuframe.from_arrow(pa.table({"d": arr, "i": pa.array(range(8), pa.int16())}))
        return exchange_tables(mesh3[r], [[t] for _ in range(3)]), t.to_arrow()

    res = run_ranks(rank, 3)
    srcs = [src for _got, src in res]
    for got, _src in res:
        assert plain(got.to_arrow()["d"]).to_pylist() == [w for s in srcs for w in plain(s["d"]).to_pylist()]
        got["d"].to_arrow().validate(full=True)


def test_exchange_tables_schema_mismatch_names_the_peer(backend):
    mesh3 = local_mesh(3, backend, timeout=30)

    def rank(r):
        typ = pa.int32() if r == 1 else pa.int64()
        t = gpuframe.from_arrow(pa.table({"k": pa.array([1, 2], typ)}))
        try:
            exchange_tables(mesh3[r], [[t] for _ in range(3)], timeout=10)
        except CommError as exc:
            return str(exc)
        return None

    msgs = run_ranks(rank, 3)
    assert "rank 1 sent tables with another schema" in msgs[0] and "'k': int64 vs int32" in msgs[0]
    assert "rank 1 sent tables with another schema" in msgs[2] and "another schema" in msgs[1]
    # every rank saw the mismatch before any data moved: the communicators stay usable
    same = [gpuframe.from_arrow(pa.table({"k": pa.array([r], pa.int64())})) for r in range(3)]
    got = run_ranks(lambda r: exchange_tables(mesh3[r], [[same[r]] for _ in range(3)], timeout=10), 3)
    for r in range(3):
        assert got[r].to_arrow().column("k").to_pylist() == [0, 1, 2]
    for c in mesh3:
        c.close()


# ------------------------------------------------------------------------------ errors
def test_closed_peer_and_timeout_are_bounded(backend):
    comms = local_mesh(3, backend, timeout=3)

    def rank(r):
        c = comms[r]
        t0 = time.monotonic()
        if r == 2:
            return None  # never joins the exchange
        try:
            c.all_to_all([({}, [np.zeros(3)]) for _ in range(3)])
        except CommError as exc:
            return exc, time.monotonic() - t0
        return None

    res = run_ranks(rank, 3, timeout=60)
    for r in (0, 1):
        exc, took = res[r]
        assert isinstance(exc, CommTimeoutError) and exc.peer == 2, exc
        assert "did not answer within 3 s" in str(exc) and took < 15
    # after an error the communicator is closed, with a clear message
    with pytest.raises(CommClosedError, match="build a new one"):
        comms[0].all_to_all([({}, []) for _ in range(3)])
    for c in comms:
        c.close()


def test_peer_closing_wakes_a_waiting_rank(backend):
    comms = local_mesh(2, backend, timeout=60)

    def rank(r):
        if r == 1:
            time.sleep(0.5)
            comms[1].close()
            return None
        t0 = time.monotonic()
        try:
            comms[0].recv(1)
        except CommError as exc:
            return exc, time.monotonic() - t0
        return None

    exc, took = run_ranks(rank, 2, timeout=60)[0]
    assert isinstance(exc, PeerClosedError) and exc.peer == 1, exc
    assert took < 10, f"took {took:.1f} s; the timeout is 60 s"
    comms[0].close()


def _killed_peer_child(backend, q_addr, q_all, rank, q_out):
    from gpuframe.comm import CommError, create_communicator

    c = create_communicator(backend, timeout=60)
    q_addr.put((rank, c.start()))
    c.connect(rank, q_all.get())
    if rank == 1:
        time.sleep(1.0)
        os._exit(3)  # dies without closing anything, in the middle of rank 0's exchange
    t0 = time.monotonic()
    try:
        c.all_to_all([({}, [np.zeros(1000)]) for _ in range(2)])
        q_out.put(("no error", 0.0, None))
    except CommError as exc:
        q_out.put((type(exc).__name__, time.monotonic() - t0, exc.peer))


@pytest.mark.timeout(120)
def test_killed_peer_process_raises_within_bounded_time(backend):
    ctx = mp.get_context("spawn")
    q_addr, q_out = ctx.Queue(), ctx.Queue()
    q_all = [ctx.Queue(), ctx.Queue()]
    procs = [ctx.Process(target=_killed_peer_child, args=(backend, q_addr, q_all[r], r, q_out)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        got = dict(q_addr.get(timeout=60) for _ in range(2))
        for q in q_all:
            q.put([got[0], got[1]])
        name, took, peer = q_out.get(timeout=60)
        assert name == "PeerClosedError" and peer == 1
        assert took < 10, f"the failure took {took:.1f} s to surface (comm timeout is 60 s)"
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()


# ------------------------------------------------------------------------------ backend choice
def test_backend_choice(monkeypatch):
    import gpuframe.comm as gcomm

    monkeypatch.setenv("GPUFRAME_COMM", "tcp")
    assert resolve_backend() == "tcp"
    assert resolve_backend("tcp") == "tcp"
    monkeypatch.setenv("GPUFRAME_COMM", "mpi")
    with pytest.raises(ValueError, match="GPUFRAME_COMM must be one of \\['ucx', 'tcp'\\], got 'mpi'"):
        resolve_backend()
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("nccl")
    monkeypatch.delenv("GPUFRAME_COMM")
    # automatic: ucx when ucxx imports, else tcp
    monkeypatch.setattr(gcomm, "ucx_available", lambda: True)
    assert resolve_backend() == "ucx"
    monkeypatch.setenv("GPUFRAME_COMM", "TCP")
    assert resolve_backend() == "tcp"  # the environment overrides the automatic choice
    assert resolve_backend("ucx") == "ucx"  # and the parameter overrides the environment
    monkeypatch.delenv("GPUFRAME_COMM")
    monkeypatch.setattr(gcomm, "ucx_available", lambda: False)
    assert resolve_backend() == "tcp"
    with pytest.raises(ImportError, match="pip install 'gpuframe\\[ucx\\]'.*backend='tcp'"):
        resolve_backend("ucx")


def test_frame_spec_wire_roundtrip():
    spec = FrameSpec(24, "<i8", "cpu")
    assert FrameSpec.from_wire(spec.to_wire()) == spec and spec.count == 3


@pytest.mark.parametrize("bad", ["own_dictionary", "string_offsets"])
def test_exchange_refuses_a_rank_whose_column_is_malformed(backend, bad):
    # Rank 1 sends a column whose pieces are well-formed frames with bad contents: dictionary
    # indices past its own dictionary (which, shifted, would read rank 2's entries: silently wrong
    # data), or string offsets past its text. Every receiver refuses it, naming the column.
    from gpuframe.comm.wire import MalformedMessageError
    from gpuframe.core.buffer import Buffer
    from gpuframe.core.column import Column

    mesh3 = local_mesh(3, backend, timeout=30)

    def rank(r):
        if bad == "own_dictionary":
            words = [f"w{r}_{i}" for i in range(3)]
            arr = pa.array([words[i % 3] for i in range(6)]).dictionary_encode()
            good = gpuframe.from_arrow(pa.table({"d": arr}))
            if r == 1:
                col = good["d"]
                idx = col.data.array.copy()
                idx[2] = 4  # in range of the 9 concatenated entries, not of rank 1's 3
                col = Column(col.dtype, col.length, Buffer(idx, col.device), None, None, col.dictionary, 0, 0)
                good = gpuframe.Table([("d", col)], col.length)
        else:
            good = gpuframe.from_arrow(pa.table({"d": pa.array(["ab", "cd", "ef"])}))
            if r == 1:
                col = good["d"]
                offs = col.offsets.array.copy()
                offs[1] = 50  # offsets past the 6 bytes of text, then decreasing
                col = Column(col.dtype, col.length, col.data, None, Buffer(offs, col.device), None, 0, 0)
                good = gpuframe.Table([("d", col)], col.length)
        try:
            exchange_tables(mesh3[r], [[good] for _ in range(3)], timeout=20)
        except MalformedMessageError as exc:
            return str(exc)
        return None

    msgs = run_ranks(rank, 3)
    for r in (0, 2):
        assert msgs[r] is not None and "'d'" in msgs[r], msgs
    if bad == "own_dictionary":
        assert all("peer rank 1" in m and "got 4" in m for m in msgs), msgs
    for c in mesh3:
        c.close()
