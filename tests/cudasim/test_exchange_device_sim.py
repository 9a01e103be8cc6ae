"""The exchange of device tables (``gpuframe.comm.exchange_tables``) assembles the received table
on the device: validity and bool bitmaps concatenated at bit offsets, string offsets rebased and
dictionary indices shifted by the kernels of ``gpuframe.kernels.assemble``. Two ranks over TCP
in this process (``local_mesh``, one thread per rank), under numba's simulator.

For every column layout, at two sizes: the received device table equals what the same exchange
of CPU tables gives (the host path), and the bytes copied between host and device (counted by
``gpuframe.core.memory.count_transfers``, both ranks together) are the pieces' descriptors and a
few scalars: the same at both sizes within a few dozen bytes, under 4 KB each way.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import gpuframe
from gpuframe.comm import exchange_tables, local_mesh
from gpuframe.comm.wire import MalformedMessageError
from gpuframe.core import memory
from gpuframe.core.buffer import Buffer
from gpuframe.core.column import Column
from gpuframe.core.device import CPU
from gpuframe.core.table import Table

from ..distributed.helpers import plain, run_ranks

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")

SIZES = (300, 1200)   # rows per rank (the second rank has 3 more)
LIMIT = 4096          # bytes an exchange may move each way, at either size
GROWTH = 48           # bytes it may move more at the larger size


def _column(layout: str, rank: int, n: int) -> pa.Array:
    rng = np.random.default_rng(10 * rank + len(layout))
    mask = rng.random(n) < 0.15
    if layout == "int64":
        return pa.array(rng.integers(-10**12, 10**12, n), pa.int64())
    if layout == "nullable_int":
        return pa.array(rng.integers(-50, 50, n).astype(np.int32), pa.int32(), mask=mask)
    if layout == "bool":
        return pa.array(rng.random(n) < 0.5, pa.bool_(), mask=mask)
    if layout in ("string", "large_string"):
        words = ["", "a", "ß", "日本", "key"]
        typ = pa.string() if layout == "string" else pa.large_string()
        return pa.array([words[i % 5] + str(i % (7 + rank)) for i in range(n)], typ, mask=mask)
    if layout == "dictionary":
        # different dictionaries on the two ranks (one word shared), null indices too
        words = [f"r{rank}_{i}" for i in range(5)] + ["shared"]
        codes = rng.integers(0, len(words), n)
        return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32), mask=mask), pa.array(words))
    if layout == "dictionary_null_entries":
        # a null entry in each rank's (different) dictionary: the rows that point at it stay null
        words = [f"r{rank}_0", None, f"r{rank}_2", "shared"]
        codes = rng.integers(0, len(words), n)
        return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32), mask=mask), pa.array(words))
    if layout == "dictionary_widened":
        # int8 indices, 100 entries per rank: the 200 entries of both need int32 indices
        words = [f"w{rank}_{i}" for i in range(100)]
        codes = rng.integers(0, 100, n).astype(np.int8)
        return pa.DictionaryArray.from_arrays(pa.array(codes, mask=mask), pa.array(words))
    if layout == "dictionary_shared":
        words = ["x", "yy", "", "zzz"]
        return pa.DictionaryArray.from_arrays(pa.array(rng.integers(0, 4, n).astype(np.int16), mask=mask),
                                              pa.array(words))
    if layout == "date32":
        return pa.array(rng.integers(0, 20000, n).astype(np.int32), pa.int32(), mask=mask).cast(pa.date32())
    raise AssertionError(layout)


LAYOUTS = ["int64", "nullable_int", "bool", "string", "large_string", "dictionary", "dictionary_null_entries",
           "dictionary_widened", "dictionary_shared", "date32"]


@pytest.fixture(scope="module")
def mesh():
    comms = local_mesh(2, "tcp", timeout=60)
    yield comms
    for c in comms:
        c.close()


def _outgoing(t: gpuframe.Table) -> list[list[gpuframe.Table]]:
    """Rank 0 gets two pieces starting mid-byte and an empty one; rank 1 gets the rest."""
    cut = t.num_rows // 2 + 1
    return [[t.slice(0, 5), t.slice(5, cut - 5), t.slice(0, 0)], [t.slice(cut, t.num_rows - cut)]]


def _exchange(mesh, tables: list[gpuframe.Table]) -> list[gpuframe.Table]:
    out = [_outgoing(t) for t in tables]
    return run_ranks(lambda r: exchange_tables(mesh[r], out[r]), 2)


def _moved(mesh, tables):
    with memory.count_transfers() as t:
        got = _exchange(mesh, tables)
    return got, t


@pytest.mark.parametrize("layout", LAYOUTS)
def test_device_exchange_equals_the_host_one_and_moves_o1_bytes(mesh, layout, cuda_device):
    moved = []
    for n in SIZES:
        sources = [pa.table({"c": _column(layout, r, n + 3 * r)}) for r in range(2)]
        host = [gpuframe.from_arrow(s) for s in sources]
        dev = [t.to(cuda_device) for t in host]
        expect = _exchange(mesh, host)
        got, t = _moved(mesh, dev)
        moved.append(t)
        for r in range(2):
            assert got[r].device == cuda_device and all(c.device == cuda_device for c in got[r].columns)
            g, e = got[r].to("cpu").to_arrow(), expect[r].to_arrow()
            assert g.schema == e.schema, (layout, n, r, g.schema, e.schema)
            assert g.equals(e), f"{layout}, {n} rows: rank {r} received another table on the device"
            g.validate(full=True)
            # and both are what was sent
            want = pa.concat_arrays([plain(s["c"].slice(0, s.num_rows // 2 + 1) if r == 0
                                           else s["c"].slice(s.num_rows // 2 + 1)) for s in sources])
            assert plain(g["c"]).equals(want), (layout, n, r)
    if layout == "dictionary_widened":
        assert got[0].to_arrow().schema.field("c").type == pa.dictionary(pa.int32(), pa.string())
    small, large = moved
    at = f"{layout}: {small} at {SIZES[0]} rows per rank, {large} at {SIZES[1]}"
    for way in ("h2d_bytes", "d2h_bytes"):
        assert getattr(small, way) <= LIMIT and getattr(large, way) <= LIMIT, at
        assert getattr(large, way) - getattr(small, way) <= GROWTH, at


def test_every_layout_in_one_table(mesh, cuda_device):
    """Several columns at once (each column's scratch is its own), at the small size."""
    n = SIZES[0]
    sources = [pa.table({name: _column(name, r, n + 3 * r) for name in LAYOUTS}) for r in range(2)]
    host = [gpuframe.from_arrow(s) for s in sources]
    expect = _exchange(mesh, host)
    got = _exchange(mesh, [t.to(cuda_device) for t in host])
    for r in range(2):
        assert got[r].to("cpu").to_arrow().equals(expect[r].to_arrow())


def _bad_dictionary_table(device) -> Table:
    """Row 3's index (7) is past its dictionary of 3 entries: shifted, it would read the other
    rank's entries."""
    dictionary = gpuframe.from_arrow(pa.table({"d": pa.array(["a", "b", "c"])}))["d"].to(device)
    idx = np.array([0, 1, 2, 7, 1, 0], np.int32)
    col = Column(pa.dictionary(pa.int32(), pa.string()), len(idx), Buffer(memory.to_device(idx, device), device),
                 None, None, dictionary, 0, 0)
    return Table([("d", col)], len(idx))


@pytest.mark.parametrize("where", ["cpu", "cuda"])
def test_an_index_past_its_own_dictionary_is_refused(mesh, where, cuda_device):
    device = cuda_device if where == "cuda" else CPU
    good = [gpuframe.from_arrow(pa.table({"d": pa.array([f"r{r}_{i}" for i in range(6)]).dictionary_encode()}))
            for r in range(2)]
    tables = [_bad_dictionary_table(device), good[1].to(device)]
    out = [[[t.slice(0, 3)], [t]] for t in tables]

    def rank(r):
        try:
            exchange_tables(mesh[r], out[r])
        except MalformedMessageError as exc:
            return str(exc)
        return None

    msgs = run_ranks(rank, 2)
    # rank 1 receives rank 0's whole table (row 3 is in it); rank 0 only its first 3 rows
    assert msgs[0] is None
    assert msgs[1] is not None and "'d'" in msgs[1] and "[0, 3)" in msgs[1], msgs[1]
