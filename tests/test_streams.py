"""One stream per operation (gpuframe.core.streams), checked without a GPU.

* ``stream=`` validation: what counts as a stream, and a ``TypeError`` naming the parameter
  otherwise; CPU data rejects a stream with a ``ValueError`` naming it.
* The real-GPU code path (CuPy's current stream, numba's launch configuration, the arguments
  handed to numba, the export's event) against a fake CuPy module: the launcher, the stream
  context and the export helpers are plain Python, so their choices can be observed here. What
  this cannot show (that CUDA honours them) is for the GPU lane.
"""
from __future__ import annotations

import ctypes
import sys
import types
from collections import namedtuple

import numpy as np
import pyarrow as pa
import pytest

import gpuframe
from gpuframe.core import streams
from gpuframe.core.device import Device, cudasim_enabled
from gpuframe.ops.hashing import hash_rows
from gpuframe.ops.partition import partition_ids

CUDA0 = Device("cuda", 0)


class PtrStream:  # CuPy's streams: .ptr (and device_id)
    def __init__(self, ptr, device_id=-1):
        self.ptr = ptr
        self.device_id = device_id


class ProtocolStream:  # the CUDA stream protocol (cuda.core, CuPy, numba)
    def __init__(self, ptr):
        self._ptr = ptr

    def __cuda_stream__(self):
        return (0, self._ptr)


class TorchLikeStream:
    cuda_stream = 0x77


class OldNumbaStream:  # numba before the stream protocol: a ctypes handle
    handle = ctypes.c_void_p(0x99)


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("stream, ptr", [
    (0, 0), (7, 7), (np.int64(12), 12), (PtrStream(0xBEEF), 0xBEEF), (ProtocolStream(0x1234), 0x1234),
    (TorchLikeStream(), 0x77), (OldNumbaStream(), 0x99), (2**64 - 1, 2**64 - 1),
])
def test_stream_handles(stream, ptr):
    assert streams.stream_handle(stream) == ptr


@pytest.mark.parametrize("bad", ["s", 1.5, True, np.bool_(False), object(), [1], PtrStream("x"),
                                 ProtocolStream(None)])
def test_a_non_stream_is_a_type_error_naming_the_parameter(bad):
    with pytest.raises(TypeError, match="^stream must be"):
        streams.stream_handle(bad)
    with pytest.raises(TypeError, match="^other must be"):
        streams.stream_handle(bad, "other")


@pytest.mark.parametrize("bad", [-1, 2**64])
def test_a_handle_out_of_range_is_a_value_error(bad):
    with pytest.raises(ValueError, match="stream must be a cudaStream_t handle"):
        streams.stream_handle(bad)


def test_a_stream_of_another_gpu_is_refused():
    with pytest.raises(ValueError, match="stream belongs to cuda:1, but the data is on cuda:0"):
        streams.resolve(PtrStream(5, device_id=1), CUDA0)


def _cpu_tables():
    left = gpuframe.from_arrow(pa.table({"k": [1, 2, 3], "a": ["x", "y", "z"]}))
    right = gpuframe.from_arrow(pa.table({"k": [2, 3, 4], "b": [1.0, 2.0, 3.0]}))
    return left, right


CPU_CALLS = {
    "merge": lambda l, r, s: gpuframe.merge(l, r, on="k", stream=s),
    "join_indices": lambda l, r, s: gpuframe.join_indices(l, r, on="k", stream=s),
    "join_size": lambda l, r, s: gpuframe.join_size(l, r, on="k", stream=s),
    "hash_partition": lambda l, r, s: gpuframe.hash_partition(l, "k", 2, stream=s),
    "partition_ids": lambda l, r, s: partition_ids(l, "k", 2, stream=s),
    "hash_rows": lambda l, r, s: hash_rows(l, "k", stream=s),
    "take": lambda l, r, s: gpuframe.take(l, [0, 2], stream=s),
    "Table.take": lambda l, r, s: l.take([1], stream=s),
    "Table.merge": lambda l, r, s: l.merge(r, on="k", stream=s),
    "Table.partition_by_hash": lambda l, r, s: l.partition_by_hash("k", 2, stream=s),
}


@pytest.mark.parametrize("op", sorted(CPU_CALLS))
def test_the_cpu_backend_rejects_a_stream(op):
    left, right = _cpu_tables()
    CPU_CALLS[op](left, right, None)  # the default: fine
    with pytest.raises(ValueError, match="stream was given, but the data is on cpu"):
        CPU_CALLS[op](left, right, 3)
    with pytest.raises(TypeError, match="^stream must be"):
        CPU_CALLS[op](left, right, "default")


def test_other_argument_errors_come_first():
    left, right = _cpu_tables()
    with pytest.raises(ValueError, match="how must be"):
        gpuframe.merge(left, right, on="k", how="sideways", stream="x")


# --------------------------------------------------------------------------- the GPU path, faked
class _Ev:
    def __init__(self, log, ptr=None):
        self.log = log
        self.ptr = 0xE0 + len(log)

    def record(self, stream=None):
        self.log.append(("event.record", stream.ptr))


def _fake_cupy(monkeypatch):
    """A CuPy with per-device current streams and a log of what the code asks of it."""
    log: list = []
    state = {"device": 0, "current": {0: 0, 1: 0}}

    class FakeDevice:
        def __init__(self, i):
            self.i = i

        def __enter__(self):
            self.prev, state["device"] = state["device"], self.i

        def __exit__(self, *a):
            state["device"] = self.prev

    class FakeStream:
        def __init__(self, ptr, device_id=-1):
            self.ptr, self.device_id = ptr, device_id

        def __enter__(self):
            dev = state["device"] if self.device_id == -1 else self.device_id
            assert dev == state["device"], "CuPy refuses a stream of another device"
            self.prev = state["current"][dev]
            state["current"][dev] = self.ptr
            log.append(("enter", self.ptr))
            return self

        def __exit__(self, *a):
            state["current"][state["device"]] = self.prev
            log.append(("exit", self.ptr))

        def record(self):
            log.append(("stream.record", self.ptr))
            return _Ev(log)

        def wait_event(self, ev):
            log.append(("wait", self.ptr, ev.ptr))

    cuda = types.SimpleNamespace(
        Device=FakeDevice, ExternalStream=FakeStream,
        get_current_stream=lambda: FakeStream(state["current"][state["device"]], state["device"]),
        Event=lambda block=False, disable_timing=False: _Ev(log))
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=cuda))
    return log, state


@pytest.fixture
def gpu_path(monkeypatch):
    if cudasim_enabled():
        pytest.skip("fakes the real-GPU path; the simulator lane has its own tests")
    log, state = _fake_cupy(monkeypatch)
    launches: list = []
    converted: list = []

    class Kernel:
        py_func = staticmethod(lambda: None)

        def __getitem__(self, config):
            launches.append(("config", config))
            return lambda *args: launches.append(("args", args))

    monkeypatch.setattr(streams, "numba_stream", lambda op: ("numba-stream", op.device.id, op.ptr))
    monkeypatch.setattr(streams, "_to_numba_array", lambda a: converted.append(a) or ("numba-array", a))
    import gpuframe.kernels.compat as compat
    monkeypatch.setattr(compat, "numba_cuda_compat", lambda: None)
    return types.SimpleNamespace(log=log, state=state, launches=launches, converted=converted, kernel=Kernel())


class CAI:
    """A CuPy-like device array: only the CUDA array interface."""

    ndim = 1

    def __init__(self, name):
        self.name = name
        self.__cuda_array_interface__ = {"shape": (4,), "typestr": "<i8", "data": (0x1000, False),
                                         "version": 3, "stream": 1}


Rec = namedtuple("Rec", "a n b")


def test_launches_go_on_the_operation_stream(gpu_path):
    g = gpu_path
    a, b = CAI("a"), CAI("b")
    host = np.zeros(2)
    with streams.record_launches() as rec:
        with streams.operation(PtrStream(0x5A), CUDA0) as op:
            assert op == streams.OpStream(0x5A, CUDA0)
            assert g.state["current"][0] == 0x5A  # CuPy's allocations, scans and copies go there
            streams.launch_kernel(g.kernel, 3, 64, (a, np.int64(2), Rec(b, 5, host), host))
            with streams.operation(None, CUDA0):  # a nested operation inherits the stream
                streams.launch_kernel(g.kernel, 1, 64, (a,))
        assert g.state["current"][0] == 0
    assert [l[1] for l in g.launches if l[0] == "config"] == [(3, 64, ("numba-stream", 0, 0x5A)),
                                                              (1, 64, ("numba-stream", 0, 0x5A))]
    args = g.launches[1][1]
    assert args[0] == ("numba-array", a) and args[1] == 2 and args[3] is host
    assert type(args[2]) is Rec and args[2].a == ("numba-array", b) and args[2].n == 5 and args[2].b is host
    assert g.converted == [a, b, a]
    assert [(r.stream, r.device) for r in rec] == [(0x5A, CUDA0)] * 2
    assert ("enter", 0x5A) in g.log


def test_the_default_is_cupys_current_stream(gpu_path):
    g = gpu_path
    g.state["current"][0] = 0x33
    with streams.operation(None, CUDA0) as op:
        assert op.ptr == 0x33
        streams.launch_kernel(g.kernel, 1, 64, (CAI("a"),))
    assert g.launches[0] == ("config", (1, 64, ("numba-stream", 0, 0x33)))
    assert not any(e[0] == "enter" for e in g.log)  # already current: nothing to switch
    # outside any operation: CuPy's current stream too
    streams.launch_kernel(g.kernel, 1, 64, (CAI("b"),))
    assert g.launches[2] == ("config", (1, 64, ("numba-stream", 0, 0x33)))


def test_arrays_reach_numba_without_a_per_argument_sync(monkeypatch):
    numba_cuda = pytest.importorskip("numba.cuda")
    if cudasim_enabled():
        pytest.skip("the simulator has no as_cuda_array")
    calls = []
    monkeypatch.setattr(numba_cuda, "as_cuda_array", lambda obj, sync=True: calls.append(sync) or obj)
    a = CAI("a")
    assert streams.kernel_args((a, Rec(a, 1, a), 3)) == (a, Rec(a, 1, a), 3)
    assert calls == [False, False, False]


def test_buffers_remember_their_stream_and_exports_follow_it(gpu_path):
    from gpuframe.core.buffer import Buffer
    from gpuframe.interop import arrow_export

    g = gpu_path
    with streams.operation(0x5A, CUDA0):
        inside = Buffer(CAI("x"), CUDA0)
    outside = Buffer(CAI("y"), CUDA0)
    assert (inside.stream, outside.stream) == (0x5A, 0)
    assert Buffer(np.zeros(1)).stream is None
    col = gpuframe.core.column.Column(pa.int64(), 4, inside)
    assert arrow_export.sync_stream([col], CUDA0) == 0x5A
    ev, handle = arrow_export._record_sync_event(CUDA0, 0x5A)
    assert ("event.record", 0x5A) in g.log and handle.value == ev.ptr
    # buffers of two streams: CuPy's current stream waits on the other before the event
    g.log.clear()
    other = gpuframe.core.column.Column(pa.int64(), 4, outside)
    assert arrow_export.sync_stream([col, other], CUDA0) == 0
    assert g.log == [("stream.record", 0x5A), ("wait", 0, g.log[1][2])]
