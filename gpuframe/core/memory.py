"""Device memory primitives shared by every layer, the memory guard and ``release()``.

A *device array* is a 1-D typed array: ``numpy.ndarray`` on the CPU, ``cupy.ndarray`` on a
real GPU, and numba's simulated device array under ``NUMBA_ENABLE_CUDASIM=1``. Everything
above this module handles arrays through these functions only, so the simulator and a real
GPU run the same launchers.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from .device import CPU, Device, cudasim_enabled, gpu_count, require_cuda
from .hostalloc import host_empty


def _cupy():
    import cupy

    return cupy


def is_host_array(arr: Any) -> bool:
    return isinstance(arr, np.ndarray)


def _is_fake_cuda(arr: Any) -> bool:
    return type(arr).__name__ == "FakeCUDAArray"


def array_device(arr: Any) -> Device:
    """The :class:`Device` that holds ``arr``."""
    if isinstance(arr, np.ndarray):
        return CPU
    if _is_fake_cuda(arr):
        return Device("cuda", 0)
    dev = getattr(arr, "device", None)
    if dev is not None and hasattr(dev, "id"):
        return Device("cuda", int(dev.id))
    if hasattr(arr, "__cuda_array_interface__"):
        return Device("cuda", 0)
    raise TypeError(f"expected a numpy, cupy or numba device array, got {type(arr).__name__}")


# --------------------------------------------------------------------------- transfer counter
class TransferCount:
    """Copies between host and device seen while a :func:`count_transfers` block was open:
    calls and bytes each way (``h2d_*``: host to device, ``d2h_*``: device to host)."""

    __slots__ = ("h2d_calls", "h2d_bytes", "d2h_calls", "d2h_bytes")

    def __init__(self) -> None:
        self.h2d_calls = self.h2d_bytes = self.d2h_calls = self.d2h_bytes = 0

    @property
    def bytes(self) -> int:
        return self.h2d_bytes + self.d2h_bytes

    def __repr__(self) -> str:
        return (f"TransferCount(h2d_calls={self.h2d_calls}, h2d_bytes={self.h2d_bytes}, "
                f"d2h_calls={self.d2h_calls}, d2h_bytes={self.d2h_bytes})")


_COUNTERS: list[TransferCount] = []
_COUNTERS_LOCK = threading.Lock()


@contextmanager
def count_transfers() -> Iterator[TransferCount]:
    """Count every host<->device copy gpuframe makes (process-wide, every thread) while the
    block runs: ``with memory.count_transfers() as t: ...`` then ``t.h2d_bytes``, ``t.d2h_calls``...

    Every such copy goes through :func:`to_device` / :func:`to_host` (or :func:`note_transfer`
    where CuPy copies implicitly). Under the CUDA simulator the stand-ins for device primitives
    (:func:`zeros`, :func:`cumsum_exclusive`) copy host memory but are not counted: on a GPU they
    move nothing. Blocks may nest; each sees every copy made while it is open.
    """
    t = TransferCount()
    with _COUNTERS_LOCK:
        _COUNTERS.append(t)
    try:
        yield t
    finally:
        with _COUNTERS_LOCK:
            _COUNTERS.remove(t)


def note_transfer(direction: str, nbytes: int) -> None:
    """Record one copy (``"h2d"`` or ``"d2h"``) of ``nbytes`` with the open counters."""
    if not _COUNTERS:
        return
    with _COUNTERS_LOCK:
        for t in _COUNTERS:
            if direction == "h2d":
                t.h2d_calls += 1
                t.h2d_bytes += int(nbytes)
            else:
                t.d2h_calls += 1
                t.d2h_bytes += int(nbytes)


def _nbytes(arr: Any) -> int:
    n = getattr(arr, "nbytes", None)
    if n is None:
        n = int(np.prod(arr.shape)) * np.dtype(arr.dtype).itemsize
    return int(n)


# host arrays of this size on come from the host allocator (glibc serves smaller ones from its
# heap; from 32 MiB, its largest mmap threshold, every numpy array is a fresh mapping)
POOLED_MIN_BYTES = 32 << 20


def _nbytes_of(n: Any, dtype: np.dtype) -> int:
    return int(np.prod(n, dtype=np.int64)) * dtype.itemsize


def _host_array(n: Any, dtype: np.dtype) -> np.ndarray:
    if _nbytes_of(n, dtype) < POOLED_MIN_BYTES:
        return np.empty(n, dtype=dtype)
    return host_empty(n, dtype)


def empty(n: Any, dtype: Any, device: Device) -> Any:
    """An uninitialised array of ``n`` elements (or of shape ``n``, a tuple) on ``device``.

    On the host, from :data:`POOLED_MIN_BYTES` on, it comes from the host allocator
    (:func:`gpuframe.core.hostalloc.host_empty`; so do :func:`zeros` and :func:`full`): reused
    between operations, and not madvised for huge pages as numpy's own arrays of 4 MiB or more
    are (with ``defrag=madvise`` their first touches stall in memory compaction once memory is
    fragmented: a 10M-row string key's spans took 140-260 ms to fill instead of 13 ms after
    DuckDB had run in the same process). Smaller ones are numpy's: glibc's heap reuses them
    without new page faults, where the pool measured slower (set operations at 1M rows).
    """
    dtype = np.dtype(dtype)
    if not device.is_cuda:
        return _host_array(n, dtype)
    require_cuda(device)
    if cudasim_enabled():
        from numba import cuda

        return cuda.device_array(n, dtype=dtype)
    cp = _cupy()
    with cp.cuda.Device(device.id):
        return cp.empty(n, dtype=dtype)


def zeros(n: int, dtype: Any, device: Device) -> Any:
    dtype = np.dtype(dtype)
    if not device.is_cuda:
        if _nbytes_of(n, dtype) < POOLED_MIN_BYTES:
            return np.zeros(n, dtype=dtype)   # calloc: pages zeroed as they are touched
        return full(n, 0, dtype, device)
    require_cuda(device)
    if cudasim_enabled():
        return _sim_to_device(np.zeros(n, dtype=dtype))   # cp.zeros on a GPU: not a transfer
    cp = _cupy()
    with cp.cuda.Device(device.id):
        return cp.zeros(n, dtype=dtype)


def full(n: int, value: Any, dtype: Any, device: Device) -> Any:
    """A 1-D array of ``n`` elements, each ``value``, on ``device``."""
    dtype = np.dtype(dtype)
    if not device.is_cuda:
        out = _host_array(n, dtype)
        out.fill(value)
        return out
    require_cuda(device)
    if cudasim_enabled():
        return _sim_to_device(np.full(n, value, dtype=dtype))   # cp.full on a GPU: not a transfer
    cp = _cupy()
    with cp.cuda.Device(device.id):
        return cp.full(n, value, dtype=dtype)


def to_device(arr: Any, device: Device) -> Any:
    """Copy ``arr`` to ``device`` (no copy when it already lives there)."""
    src = array_device(arr)
    if src == device:
        return arr
    if not device.is_cuda:
        return to_host(arr)
    require_cuda(device)
    host = to_host(arr)
    note_transfer("h2d", _nbytes(host))
    if cudasim_enabled():
        return _sim_to_device(host)
    cp = _cupy()
    with cp.cuda.Device(device.id):
        return cp.asarray(host)


def _sim_to_device(host: np.ndarray) -> Any:
    from numba import cuda

    return cuda.to_device(np.ascontiguousarray(host))


def to_host(arr: Any) -> np.ndarray:
    """A numpy array with the contents of ``arr`` (no copy for numpy input)."""
    if isinstance(arr, np.ndarray):
        return arr
    out = _raw_to_host(arr)
    note_transfer("d2h", _nbytes(out))
    return out


def _raw_to_host(arr: Any) -> np.ndarray:
    if _is_fake_cuda(arr):
        return arr.copy_to_host()
    if hasattr(arr, "get"):
        return arr.get()
    if hasattr(arr, "copy_to_host"):
        return arr.copy_to_host()
    raise TypeError(f"cannot copy {type(arr).__name__} to host")


def data_ptr(arr: Any) -> int:
    """Address of the first element of ``arr`` on its device."""
    if isinstance(arr, np.ndarray):
        return int(arr.ctypes.data)
    if _is_fake_cuda(arr):
        return int(arr._ary.ctypes.data)
    cai = getattr(arr, "__cuda_array_interface__", None)
    if cai is not None:
        return int(cai["data"][0])
    raise TypeError(f"cannot take the address of {type(arr).__name__}")


def view_as(arr: Any, dtype: Any) -> Any:
    """Reinterpret the bytes of a contiguous 1-D array as ``dtype``."""
    dtype = np.dtype(dtype)
    if _is_fake_cuda(arr):
        return _fake_view(arr, dtype)
    return arr.view(dtype)


def _fake_view(arr: Any, dtype: np.dtype) -> Any:
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    return FakeCUDAArray(arr._ary.view(dtype))


def cumsum_exclusive(counts: Any, out_dtype: Any = np.int64) -> Any:
    """``out[0] = 0, out[i+1] = sum(counts[:i+1])``: ``len(counts) + 1`` elements, same device."""
    dev = array_device(counts)
    if not dev.is_cuda:
        out = np.empty(len(counts) + 1, dtype=out_dtype)
        out[0] = 0
        np.cumsum(counts, out=out[1:])
        return out
    if cudasim_enabled():   # cp.cumsum on a GPU: the simulator's stand-in is not a transfer
        host = _raw_to_host(counts)
        out = np.empty(len(host) + 1, dtype=out_dtype)
        out[0] = 0
        np.cumsum(host, out=out[1:])
        return _sim_to_device(out)
    cp = _cupy()
    with cp.cuda.Device(dev.id):  # allocate next to ``counts``, not on the current device
        out = cp.empty(len(counts) + 1, dtype=out_dtype)
        out[0] = 0
        cp.cumsum(counts, out=out[1:])
    return out


def gpu_devices() -> list[Device]:
    if cudasim_enabled():
        return [Device("cuda", 0)]
    return [Device("cuda", i) for i in range(gpu_count())]


# --------------------------------------------------------------------------- memory guard
# Below this many bytes the guard does not look (reading the limits costs about 40 us; an
# allocation this small that cannot be served fails in numpy or CuPy with their own MemoryError).
GUARD_MIN_BYTES = 1 << 20


def available_bytes(device: Device) -> tuple[int, str]:
    """Bytes an operation may still allocate on ``device``, and what limits them (for messages).

    Host (and the CUDA simulator, whose arrays are host memory): the tightest of the system's
    available memory, the cgroup limit and a Dask worker's memory limit (see
    :mod:`gpuframe.core.memlimits`), plus the host allocator's idle blocks (reusable). CUDA: the
    device's free memory (``cudaMemGetInfo``) plus the free blocks of CuPy's memory pool.
    """
    if not device.is_cuda or cudasim_enabled():
        from . import hostalloc, memlimits

        stats = hostalloc.get_host_allocator().stats()
        hm = memlimits.host_memory(reusable=int(stats.get("idle_bytes") or 0))
        return hm.available, hm.limited_by
    require_cuda(device)
    cp = _cupy()
    with cp.cuda.Device(device.id):
        free, _total = cp.cuda.runtime.memGetInfo()
    pooled = int(cp.get_default_memory_pool().free_bytes())
    return int(free) + pooled, f"{int(free):,} bytes free on the device and {pooled:,} in CuPy's pool"


def ensure_available(op: str, need: int, device: Device, *, rows: Any = None, what: str = "its output") -> None:
    """Raise ``MemoryError`` when ``need`` bytes will not fit on ``device``, before anything is
    allocated: the one memory guard of every operation that allocates output.

    ``op`` names the operation (``"take"``, ``"merge"``...), ``what`` the allocation and ``rows``
    its rows; the message gives the bytes needed and available and what limits them.
    """
    need = int(need)
    if need < GUARD_MIN_BYTES:
        return
    have, limited_by = available_bytes(device)
    if need > have:
        of_rows = f" of {int(rows):,} rows" if rows is not None else ""
        raise MemoryError(
            f"{op}: {what}{of_rows} needs about {need:,} bytes ({need / 2**30:.2f} GiB) on {device}, but only "
            f"{have:,} bytes ({have / 2**30:.2f} GiB) are available (limited by {limited_by})")


def release() -> dict[str, int]:
    """Give memory kept for reuse back: the host allocator's idle blocks and, where CuPy is in
    use, the free blocks of its default memory pools. Returns the bytes freed by each
    (``host`` and, when CuPy was imported, ``cuda`` bytes and ``cuda_pinned_blocks``)."""
    import sys

    from . import hostalloc

    out = {"host": int(hostalloc.get_host_allocator().release() or 0)}
    cp = sys.modules.get("cupy")
    if cp is not None and not cudasim_enabled():
        try:
            pool = cp.get_default_memory_pool()
            before = int(pool.free_bytes())
            pool.free_all_blocks()
            out["cuda"] = before - int(pool.free_bytes())
            pinned = cp.get_default_pinned_memory_pool()
            before = int(pinned.n_free_blocks())
            pinned.free_all_blocks()
            out["cuda_pinned_blocks"] = before
        except Exception:  # noqa: BLE001 - a CuPy without a usable device: nothing to free
            pass
    return out
