"""One stream per operation on a real CUDA GPU (CuPy and numba-cuda): what the simulator cannot
show. Every launch of an operation goes to the caller's stream (or CuPy's current one), a
non-blocking stream gives the right answer (CuPy's allocations and scans and numba's kernels no
longer race), arrays reach numba without a per-argument stream synchronisation, and the Arrow
export's event follows the producing stream.

Every test is marked ``gpu`` and skips without a GPU (see tests/conftest.py).
"""
from __future__ import annotations

import ctypes

import numpy as np
import pyarrow as pa
import pytest

import gpuframe as gf
from gpuframe.core import streams
from gpuframe.core.device import Device
from gpuframe.interop import arrow_c_abi as cd

pytestmark = pytest.mark.gpu

CUDA0 = Device("cuda", 0)


@pytest.fixture
def cp():
    return pytest.importorskip("cupy")


def _tables(n=20_000):
    rng = np.random.default_rng(1)
    left = pa.table({"k": pa.array(rng.integers(0, n, n), mask=rng.random(n) < 0.05),
                     "s": pa.array([f"s{i % 97}" for i in range(n)]), "a": pa.array(rng.random(n))})
    right = pa.table({"k": pa.array(rng.integers(0, n, n)), "b": pa.array(rng.integers(0, 9, n))})
    return gf.from_arrow(left), gf.from_arrow(right)


def _sorted(t: gf.Table) -> pa.Table:
    return t.to_arrow().sort_by([(n, "ascending") for n in t.column_names])


def test_a_non_blocking_stream_gives_the_cpu_answer(cp):
    lc, rc = _tables()
    lg, rg = lc.to("cuda"), rc.to("cuda")
    cp.cuda.Device(0).synchronize()  # the inputs are ready before the other stream starts
    s = cp.cuda.Stream(non_blocking=True)
    with streams.record_launches() as log:
        out = gf.merge(lg, rg, on="k", how="outer", stream=s)
        parts, offsets = gf.hash_partition(lg, ["k", "s"], 7, stream=s)
    assert log and {r.stream for r in log} == {s.ptr}
    assert {b.stream for c in out.columns for b in c.buffers()} == {s.ptr}
    s.synchronize()
    assert _sorted(out).equals(_sorted(gf.merge(lc, rc, on="k", how="outer")))
    cpu_parts, cpu_offsets = gf.hash_partition(lc, ["k", "s"], 7)
    assert np.array_equal(offsets, cpu_offsets) and parts.to_arrow().equals(cpu_parts.to_arrow())


def test_the_default_is_cupys_current_stream(cp):
    lc, rc = _tables(2000)
    lg, rg = lc.to("cuda"), rc.to("cuda")
    cp.cuda.Device(0).synchronize()
    s = cp.cuda.Stream(non_blocking=True)
    with s, streams.record_launches() as log:
        li, ri = gf.join_indices(lg, rg, on="k", how="left")
        n = gf.join_size(lg, rg, on="k", how="left")
    assert {r.stream for r in log} == {s.ptr}
    assert int(li.shape[0]) == n == gf.join_size(lc, rc, on="k", how="left")


def test_the_launcher_uses_a_numba_stream_of_that_pointer(cp):
    s = cp.cuda.Stream(non_blocking=True)
    ns = streams.numba_stream(streams.OpStream(s.ptr, CUDA0))
    assert int(ns) == s.ptr
    assert streams.numba_stream(streams.OpStream(s.ptr, CUDA0)) is ns  # cached


def test_no_per_argument_stream_synchronisation(cp, monkeypatch):
    from numba.cuda.cudadrv import driver

    lg, rg = (t.to("cuda") for t in _tables(2000))
    gf.join_indices(lg, rg, on="k")  # compile first
    syncs = []
    real = driver.Stream.synchronize
    monkeypatch.setattr(driver.Stream, "synchronize", lambda self: syncs.append(int(self)) or real(self))
    s = cp.cuda.Stream(non_blocking=True)
    cp.cuda.Device(0).synchronize()
    with streams.record_launches() as log:
        gf.join_indices(lg, rg, on="k", stream=s)
    assert log and syncs == []  # numba synchronised no array's stream (CuPy's .get() syncs ours)


def test_the_export_event_is_recorded_on_the_producing_stream(cp, monkeypatch):
    from gpuframe.interop import arrow_export

    lg, rg = (t.to("cuda") for t in _tables(2000))
    cp.cuda.Device(0).synchronize()
    s = cp.cuda.Stream(non_blocking=True)
    out = gf.merge(lg, rg, on="k", stream=s)
    recorded = []
    real = arrow_export._record_sync_event

    def spy(device, stream_ptr):
        recorded.append(stream_ptr)
        return real(device, stream_ptr)

    monkeypatch.setattr(arrow_export, "_record_sync_event", spy)
    _, a_cap = out.__arrow_c_device_array__()
    assert recorded == [s.ptr]
    d = cd.ArrowDeviceArray.from_address(cd.capsule_pointer(a_cap, cd.DEVICE_ARRAY_CAPSULE))
    event = ctypes.c_void_p.from_address(d.sync_event).value
    cp.cuda.runtime.eventSynchronize(event)
    assert cp.cuda.runtime.eventQuery(event) == 0
    s.synchronize()
