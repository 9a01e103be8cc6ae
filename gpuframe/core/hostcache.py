"""A caching host allocator for large buffers: joins' scratch and outputs, received frames.

Fresh memory is expensive on many hosts: every page faults and is zeroed on first touch (about
1 s per GiB on the 2-core VM the benchmarks ran on). :class:`HostCache` keeps the buffers that
callers give back (when the last array made from one dies) and hands them out again, like the
memory pools of GPU libraries.
"""
from __future__ import annotations

import collections
import threading
from typing import Any, Optional

import numpy as np

__all__ = ["HostCache", "host_cache", "clear_scratch", "host_empty"]


class _Block:
    """One raw host allocation lent out by :class:`HostCache`: arrays made from it keep it
    alive (it is their ``base``), and when the last of them dies the memory goes back to the
    cache instead of to the operating system."""

    __slots__ = ("raw", "cache", "__array_interface__")

    def __init__(self, raw: np.ndarray, cache: "HostCache") -> None:
        self.raw = raw
        self.cache = cache
        self.__array_interface__ = {"data": (raw.ctypes.data, False), "shape": (raw.nbytes,),
                                    "typestr": "|u1", "version": 3}

    def __del__(self) -> None:
        try:
            self.cache._returned.append(self.raw)
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


class HostCache:
    """A caching host allocator for the join's large buffers (scratch and outputs).

    Fresh memory is expensive on many hosts: every page faults and is zeroed on first touch
    (about 1 s per GiB on the 2-core VM the benchmarks ran on, more than the join's own work
    on its output). Like the memory pools of GPU libraries, the cache keeps the buffers that
    joins (and their results, once the caller drops them) give back, and hands them out again
    best-fit; at most ``limit`` bytes are kept idle (a quarter of the host's memory by
    default), the rest is freed. Buffers under :data:`_MIN_CACHED` bytes use plain numpy.
    :func:`clear_scratch` frees every idle buffer.
    """

    def __init__(self) -> None:
        self._free: list[np.ndarray] = []
        self._returned: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self.limit: Optional[int] = None

    def _limit(self) -> int:
        if self.limit is None:
            try:
                import psutil

                total = int(psutil.virtual_memory().total)
            except Exception:
                total = 8 << 30
            self.limit = total // 4
        return self.limit

    def _drain(self) -> None:
        # called with the lock held; returned blocks over the limit are dropped (freed)
        limit = self._limit()
        held = sum(b.nbytes for b in self._free)
        while self._returned:
            raw = self._returned.popleft()
            if held + raw.nbytes <= limit:
                self._free.append(raw)
                held += raw.nbytes

    def empty(self, shape: Any, dtype: Any) -> np.ndarray:
        """An uninitialised array (like ``np.empty``), from cached memory when possible."""
        dtype = np.dtype(dtype)
        shape = (int(shape),) if np.isscalar(shape) else tuple(int(x) for x in shape)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes < _MIN_CACHED:
            return np.empty(shape, dtype)
        raw = None
        with self._lock:
            self._drain()
            best = -1
            for k, b in enumerate(self._free):
                if b.nbytes >= nbytes and (best < 0 or b.nbytes < self._free[best].nbytes):
                    best = k
            if best >= 0:
                raw = self._free.pop(best)
        if raw is None:
            raw = host_empty(nbytes, np.uint8)
        return np.asarray(_Block(raw, self))[:nbytes].view(dtype).reshape(shape)

    def idle_bytes(self) -> int:
        with self._lock:
            self._drain()
            return sum(b.nbytes for b in self._free)

    def clear(self) -> None:
        with self._lock:
            self._drain()
            self._free.clear()


_MIN_CACHED = 1 << 20
_CACHE = HostCache()


def host_cache() -> HostCache:
    """The process-wide :class:`HostCache` of the CPU join."""
    return _CACHE


def clear_scratch() -> None:
    """Free the idle host buffers the join keeps for reuse (see :class:`HostCache`)."""
    _CACHE.clear()


def host_empty(n: int, dtype: Any) -> np.ndarray:
    """``np.empty`` without numpy's transparent-huge-page request: on hosts that compact memory
    for huge pages on demand, that request can stall the first touch for seconds."""
    try:
        from numpy._core.multiarray import _get_madvise_hugepage, _set_madvise_hugepage
    except ImportError:  # pragma: no cover - older numpy
        return np.empty(n, dtype=dtype)
    old = _get_madvise_hugepage()
    _set_madvise_hugepage(False)
    try:
        return np.empty(n, dtype=dtype)
    finally:
        _set_madvise_hugepage(old)
