"""One stream per operation, under numba's CUDA simulator.

The simulator runs every launch synchronously and has no external streams, but the launcher
still records the stream of each launch (``streams.record_launches``): every kernel of an
operation must go to the stream the caller gave (or CuPy's current one, 0 here), nested
operations included, and the result's buffers remember it for the exports.
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np
import pyarrow as pa
import pytest

import gpuframe
from gpuframe.core import streams
from gpuframe.core.device import cudasim_enabled
from gpuframe.interop import arrow_export
from gpuframe.ops.hashing import hash_rows
from gpuframe.ops.partition import partition_ids

pytestmark = [pytest.mark.cudasim,
              pytest.mark.skipif(not cudasim_enabled(), reason="needs NUMBA_ENABLE_CUDASIM=1")]


class CupyLike:
    def __init__(self, ptr):
        self.ptr = ptr
        self.device_id = 0


def _tables(cuda_device):
    rng = np.random.default_rng(3)
    n = 300
    left = pa.table({"k": pa.array(rng.integers(0, 200, n), mask=rng.random(n) < 0.1),
                     "s": pa.array([f"s{i % 17}" for i in range(n)]),
                     "b": pa.array(rng.random(n) < 0.5)})
    right = pa.table({"k": pa.array(rng.integers(0, 200, n)), "v": pa.array(rng.random(n))})
    return gpuframe.from_arrow(left).to(cuda_device), gpuframe.from_arrow(right).to(cuda_device)


OPS = {
    "merge outer": lambda l, r, s: gpuframe.merge(l, r, on="k", how="outer", stream=s),
    "merge semi": lambda l, r, s: gpuframe.merge(l, r, on="k", how="semi", stream=s),
    "merge on a string": lambda l, r, s: gpuframe.merge(l, l.select(["s"]).slice(0, 17), on="s", stream=s),
    "join_indices": lambda l, r, s: gpuframe.join_indices(l, r, on="k", how="left", stream=s),
    "join_size": lambda l, r, s: gpuframe.join_size(l, r, on="k", stream=s),
    "hash_partition": lambda l, r, s: gpuframe.hash_partition(l, ["k", "s"], 5, stream=s),
    "partition_ids": lambda l, r, s: partition_ids(l, "k", 4, stream=s),
    "hash_rows": lambda l, r, s: hash_rows(l, "s", stream=s),
    "take": lambda l, r, s: gpuframe.take(l, np.array([5, -1, 0, 299]), stream=s),
    "Table.partition_by_hash": lambda l, r, s: l.partition_by_hash("k", 3, stream=s),
}


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_launch_goes_to_the_operations_stream(cuda_device, op):
    left, right = _tables(cuda_device)
    with streams.record_launches() as log:
        OPS[op](left, right, CupyLike(0xBEEF))
    assert log, "the operation launched no kernel"
    assert {(r.stream, r.device) for r in log} == {(0xBEEF, cuda_device)}, sorted({r.kernel for r in log})


def test_the_default_stream_and_other_stream_types(cuda_device):
    from numba import cuda

    left, right = _tables(cuda_device)
    for stream, ptr in ((None, 0), (0x42, 0x42), (cuda.stream(), 0), (np.uint64(9), 9)):
        with streams.record_launches() as log:
            gpuframe.take(left, [1, 2], stream=stream)
        assert {r.stream for r in log} == {ptr}


def test_a_bad_stream_raises_before_any_launch(cuda_device):
    left, right = _tables(cuda_device)
    with streams.record_launches() as log:
        with pytest.raises(TypeError, match="^stream must be"):
            gpuframe.merge(left, right, on="k", stream="fast")
        with pytest.raises(TypeError, match="^stream must be"):
            gpuframe.hash_partition(left, "k", 2, stream=1.0)
        with pytest.raises(ValueError, match="stream belongs to cuda:3"):
            gpuframe.take(left, [0], stream=type("S", (), {"ptr": 5, "device_id": 3})())
    assert log == []


def test_results_remember_the_stream_for_the_exports(cuda_device):
    left, right = _tables(cuda_device)
    out = gpuframe.merge(left, right, on="k", how="left", stream=0x51)
    assert {b.stream for c in out.columns for b in c.buffers()} == {0x51}
    assert arrow_export.sync_stream(out.columns, cuda_device) == 0x51
    # columns of several streams: CuPy's current stream (0 here), ordered after the others
    mixed = out.columns + [right["v"]]
    assert arrow_export.sync_stream(mixed, cuda_device) == 0
    # the export still works (no event under the simulator) and the copy back is right
    out.__arrow_c_device_array__()
    assert out.num_rows == gpuframe.merge(left.to("cpu"), right.to("cpu"), on="k", how="left").num_rows


def test_the_launcher_hands_arrays_over_without_a_sync(monkeypatch):
    from numba import cuda

    calls = []
    monkeypatch.setattr(cuda, "as_cuda_array", lambda obj, sync=True: calls.append(sync) or ("conv", obj),
                        raising=False)

    class CAI:
        __cuda_array_interface__ = {"shape": (1,), "typestr": "<i8", "data": (1, False), "version": 3,
                                    "stream": 1}

    Rec = namedtuple("Rec", "x y")
    sim = cuda.device_array(3)
    a = CAI()
    out = streams.kernel_args((a, sim, Rec(a, sim), np.zeros(1), 4))
    assert out[0] == ("conv", a) and out[1] is sim and out[2] == Rec(("conv", a), sim) and out[4] == 4
    assert calls == [False, False]  # never sync=True: no per-argument stream synchronisation
