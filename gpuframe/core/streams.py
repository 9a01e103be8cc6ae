"""One CUDA stream per operation: where an operation's kernels, allocations, scans and copies go.

An operation (``merge``, ``join_indices``, ``join_size``, ``hash_partition``, ``partition_ids``,
``hash_rows``, ``take``, ``gather_column``) runs inside :func:`operation`: its stream is the
caller's ``stream=`` argument or, by default, CuPy's current stream of the data's GPU (the legacy
default stream unless the caller made another one current). Inside, that stream is

* CuPy's current stream (entered with ``cupy.cuda.ExternalStream``), so every CuPy allocation,
  scan (``cumsum``) and host<->device copy of :mod:`gpuframe.core.memory` is queued on it, and
* the stream of every kernel launch (:func:`launch_kernel`, through a ``numba.cuda``
  ``external_stream`` cached per pointer): ``kernel[blocks, threads, stream](...)``.

Arrays reach the kernels as numba device arrays made with ``as_cuda_array(a, sync=False)``
(:func:`kernel_args`): everything is on one stream, so numba's per-argument synchronisation of the
array's stream (``CUDA_ARRAY_INTERFACE_SYNC``) or DLPack stream handshake is skipped.

Every CUDA :class:`~gpuframe.core.buffer.Buffer` records the stream it was written on
(``Buffer.stream``): exports (the Arrow C device array's ``sync_event``, DLPack's stream
handshake) are ordered after the producing operation's last kernel through
:func:`ready_stream`.

Nested operations (``merge`` calls ``take``) inherit the outer operation's stream. Ordering
*between* operations on different streams is the caller's, as in CuPy: pass the same stream to a
chain of operations, or synchronise. Under the CUDA simulator there are no streams: a stream is
validated and recorded (the tests observe it) and the simulator runs every launch synchronously.
"""
from __future__ import annotations

import contextlib
import threading
import warnings
from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from .device import SIMULATOR_LAUNCH_LOCK, Device, cudasim_enabled

__all__ = ["OpStream", "LaunchRecord", "stream_handle", "resolve", "operation", "current", "default_ptr",
           "launch_kernel", "kernel_args", "record_launches", "buffer_stream", "ready_stream"]

STREAM_TYPES = ("a cupy.cuda.Stream or ExternalStream, a numba.cuda stream, a torch.cuda.Stream, any object "
                "with __cuda_stream__ or an int .ptr, or an int cudaStream_t handle")


@dataclass(frozen=True)
class OpStream:
    """The stream of one operation: the ``cudaStream_t`` handle ``ptr`` on GPU ``device``."""

    ptr: int
    device: Device


@dataclass(frozen=True)
class LaunchRecord:
    """One kernel launch seen by :func:`record_launches`: the kernel's name and its stream."""

    kernel: str
    stream: int
    device: Device
    blocks: Any
    threads: Any


_CURRENT: ContextVar[Optional[OpStream]] = ContextVar("gpuframe_operation_stream", default=None)


# --------------------------------------------------------------------------- validation
def _is_simulator_stream(obj: Any) -> bool:
    mod = type(obj).__module__ or ""
    return mod.startswith(("numba.cuda.simulator", "numba_cuda.numba.cuda.simulator"))


def _as_handle(value: Any, param: str, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{param} must be {STREAM_TYPES}; its {what} is {value!r}")
    v = int(value)
    if not 0 <= v < 2**64:
        raise ValueError(f"{param} must be a cudaStream_t handle in [0, 2**64), got {v}")
    return v


def stream_handle(stream: Any, param: str = "stream") -> int:
    """The ``cudaStream_t`` handle (an int) of ``stream``; ``TypeError`` naming ``param`` for
    anything that is not a stream. ``0`` is the legacy default stream."""
    if isinstance(stream, (bool, np.bool_)):
        raise TypeError(f"{param} must be {STREAM_TYPES}, got {stream!r}")
    if isinstance(stream, (int, np.integer)):
        return _as_handle(stream, param, "value")
    if _is_simulator_stream(stream):
        return 0  # the simulator's streams are all the one synchronous stream
    proto = getattr(stream, "__cuda_stream__", None)
    if callable(proto):  # the CUDA stream protocol (cuda.core, CuPy, numba): (version, handle)
        got = proto()
        if not (isinstance(got, tuple) and len(got) == 2):
            raise TypeError(f"{param}.__cuda_stream__() must return (version, handle), got {got!r}")
        return _as_handle(got[1], param, "__cuda_stream__ handle")
    for attr in ("ptr", "cuda_stream"):  # CuPy streams; torch.cuda.Stream
        value = getattr(stream, attr, None)
        if value is not None:
            return _as_handle(value, param, f".{attr}")
    handle = getattr(stream, "handle", None)  # an older numba Stream (a ctypes handle)
    if handle is not None:
        value = getattr(handle, "value", handle)
        return 0 if value is None else _as_handle(int(value), param, ".handle")
    raise TypeError(f"{param} must be {STREAM_TYPES}, got {type(stream).__name__}")


def default_ptr(device: Device) -> int:
    """CuPy's current stream on ``device`` (0, the legacy default stream, unless the caller made
    another one current); 0 under the simulator."""
    if cudasim_enabled():
        return 0
    import cupy as cp

    with cp.cuda.Device(device.id):
        return int(cp.cuda.get_current_stream().ptr)


def resolve(stream: Any, device: Device, param: str = "stream") -> Optional[OpStream]:
    """The stream an operation on ``device`` runs on (``None`` on the CPU).

    ``stream=None``: the enclosing operation's stream, else CuPy's current stream. A stream for
    CPU data raises ``ValueError`` naming ``param`` (the CPU backend has no streams)."""
    if not device.is_cuda:
        if stream is not None:
            stream_handle(stream, param)  # a wrong type is a TypeError first
            raise ValueError(f"{param} was given, but the data is on {device}: the CPU backend has no "
                             f"streams; pass {param}=None (or move the data to a GPU first)")
        return None
    if stream is None:
        outer = _CURRENT.get()
        if outer is not None and outer.device == device:
            return outer
        return OpStream(default_ptr(device), device)
    ptr = stream_handle(stream, param)
    dev_id = getattr(stream, "device_id", None)
    if isinstance(dev_id, int) and not isinstance(dev_id, bool) and dev_id >= 0 and dev_id != device.id:
        raise ValueError(f"{param} belongs to cuda:{dev_id}, but the data is on {device}")
    return OpStream(ptr, device)


def current(device: Optional[Device] = None) -> Optional[OpStream]:
    """The stream of the operation running in this thread (on ``device``, when given), if any."""
    op = _CURRENT.get()
    if op is not None and device is not None and op.device != device:
        return None
    return op


@contextlib.contextmanager
def _cupy_current(op: OpStream) -> Iterator[None]:
    """Make ``op``'s stream CuPy's current stream on its device (nothing under the simulator)."""
    if cudasim_enabled():
        yield
        return
    import cupy as cp

    with cp.cuda.Device(op.device.id):
        if int(cp.cuda.get_current_stream().ptr) == op.ptr:
            yield
        else:
            with cp.cuda.ExternalStream(op.ptr, op.device.id):
                yield


@contextlib.contextmanager
def operation(stream: Any, device: Device, *, param: str = "stream") -> Iterator[Optional[OpStream]]:
    """Run the block as one operation on ``device``: its stream (see :func:`resolve`) is the
    stream of every launch inside and CuPy's current stream. Yields the :class:`OpStream`
    (``None`` for CPU data)."""
    op = resolve(stream, device, param)
    if op is None:
        yield None
        return
    token = _CURRENT.set(op)
    try:
        with _cupy_current(op):
            yield op
    finally:
        _CURRENT.reset(token)


# --------------------------------------------------------------------------- launches
_NUMBA_STREAMS: "OrderedDict[tuple[int, int], Any]" = OrderedDict()
_NUMBA_STREAMS_MAX = 64
_NUMBA_LOCK = threading.Lock()


def numba_stream(op: OpStream) -> Any:
    """numba's stream object for ``op`` (cached per device and pointer; 0 under the simulator)."""
    if cudasim_enabled():
        return 0
    key = (op.device.id, op.ptr)
    with _NUMBA_LOCK:
        s = _NUMBA_STREAMS.get(key)
        if s is not None:
            _NUMBA_STREAMS.move_to_end(key)
            return s
    from numba import cuda

    with cuda.gpus[op.device.id]:
        s = cuda.default_stream() if op.ptr == 0 else cuda.external_stream(op.ptr)
    with _NUMBA_LOCK:
        _NUMBA_STREAMS[key] = s
        while len(_NUMBA_STREAMS) > _NUMBA_STREAMS_MAX:
            _NUMBA_STREAMS.popitem(last=False)
    return s


def _to_numba_array(obj: Any) -> Any:
    """A numba device array over a CUDA-array-interface object, without synchronising its stream."""
    from numba import cuda

    return cuda.as_cuda_array(obj, sync=False)


def _kernel_arg(arg: Any) -> Any:
    if isinstance(arg, tuple):
        items = [_kernel_arg(a) for a in arg]
        if all(x is y for x, y in zip(items, arg)):
            return arg
        return type(arg)(*items) if hasattr(type(arg), "_fields") else tuple(items)
    if isinstance(arg, np.ndarray) or getattr(arg, "__cuda_ndarray__", False):
        return arg  # host arrays; numba's own device arrays (real or simulated)
    if getattr(arg, "__cuda_array_interface__", None) is not None:
        return _to_numba_array(arg)
    return arg


def kernel_args(args: Iterable[Any]) -> tuple[Any, ...]:
    """``args`` with every CuPy (CUDA-array-interface) array, also inside the kernels' argument
    records (named tuples), turned into a numba device array by ``as_cuda_array(a, sync=False)``:
    numba then neither synchronises each array's stream nor runs a DLPack handshake per array."""
    return tuple(_kernel_arg(a) for a in args)


_RECORDERS: list[list[LaunchRecord]] = []
_RECORDERS_LOCK = threading.Lock()


@contextlib.contextmanager
def record_launches() -> Iterator[list[LaunchRecord]]:
    """Collect a :class:`LaunchRecord` for every kernel launch (every thread) while the block
    runs: ``with streams.record_launches() as log: ...`` then ``{r.stream for r in log}``."""
    log: list[LaunchRecord] = []
    with _RECORDERS_LOCK:
        _RECORDERS.append(log)
    try:
        yield log
    finally:
        with _RECORDERS_LOCK:
            _RECORDERS.remove(log)


def _kernel_name(kernel: Any) -> str:
    fn = getattr(kernel, "py_func", None) or getattr(kernel, "fn", None) or kernel
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', type(fn).__name__)}"


@contextlib.contextmanager
def _quiet_uint64_overflow() -> Iterator[None]:
    # Under the simulator the kernels run as Python on numpy scalars, which warn on the uint64
    # wrap-around that the hash arithmetic relies on (a GPU wraps silently). The simulator's
    # threads do not inherit numpy's errstate, so the warning filter is the one place to say so.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="overflow encountered", category=RuntimeWarning)
        yield


def _device_of(args: Iterable[Any]) -> Device:
    from .memory import array_device

    for a in args:
        if isinstance(a, tuple):
            try:
                return _device_of(a)
            except LookupError:
                continue
        if getattr(a, "ndim", 0) >= 1 and not isinstance(a, np.ndarray):
            return array_device(a)
    raise LookupError("no device array among the kernel's arguments")


def launch_kernel(kernel: Any, blocks: Any, threads: Any, args: Iterable[Any],
                  device: Optional[Device] = None) -> None:
    """Launch ``kernel[blocks, threads, stream](*args)`` on the operation's stream: the one of
    the enclosing :func:`operation`, else CuPy's current stream of ``device`` (by default the
    device of the first device array in ``args``). The one place gpuframe launches a kernel."""
    from gpuframe.kernels.compat import numba_cuda_compat

    numba_cuda_compat()
    args = tuple(args)
    op = _CURRENT.get()
    if op is None or (device is not None and op.device != device):
        if device is None:
            try:
                device = _device_of(args)
            except LookupError:
                device = Device("cuda", 0)
        op = OpStream(default_ptr(device), device)
    if _RECORDERS:
        rec = LaunchRecord(_kernel_name(kernel), op.ptr, op.device, blocks, threads)
        with _RECORDERS_LOCK:
            for log in _RECORDERS:
                log.append(rec)
    if cudasim_enabled():
        with SIMULATOR_LAUNCH_LOCK, _quiet_uint64_overflow():
            kernel[blocks, threads, 0](*args)
    else:
        kernel[blocks, threads, numba_stream(op)](*kernel_args(args))


# --------------------------------------------------------------------------- exports
def buffer_stream(device: Device) -> Optional[int]:
    """The stream a new buffer on ``device`` is written on: the running operation's, else CuPy's
    current one (``None`` for host buffers)."""
    if not device.is_cuda:
        return None
    op = _CURRENT.get()
    if op is not None and op.device == device:
        return op.ptr
    return default_ptr(device)


def ready_stream(ptrs: Iterable[Optional[int]], device: Device) -> int:
    """A stream on ``device`` ordered after all work queued so far on the streams ``ptrs`` (the
    streams some buffers were written on): that stream when they agree, else CuPy's current
    stream, made to wait on each of the others (one event each). No waits under the simulator."""
    found = sorted({int(p) for p in ptrs if p is not None})
    if len(found) == 1:
        return found[0]
    target = default_ptr(device)
    if cudasim_enabled():
        return target
    import cupy as cp

    with cp.cuda.Device(device.id):
        dst = cp.cuda.ExternalStream(target, device.id)
        for p in found:
            if p != target:
                dst.wait_event(cp.cuda.ExternalStream(p, device.id).record())
    return target


def on_stream(ptr: int, device: Device) -> Any:
    """A context manager that makes stream ``ptr`` CuPy's current stream on ``device`` (and the
    stream of kernel launches inside)."""
    return operation(ptr, device)
