"""The host allocator: one process-wide pool of large host buffers, with a limit on idle memory.

Why a pool: fresh memory is expensive on many hosts. Every page faults and is zeroed on first
touch (1.3-3.8 GB/s on the 2-core VM the benchmarks ran on, against 22 GB/s into memory that is
already mapped), and for a scatter, a gather or a join that writes each output byte once that is
a large part of the time. Like the memory pools of GPU libraries (RMM, CuPy), the allocator keeps
the buffers that operations give back, when the last array made from them dies, and hands them
out again.

Why a limit: memory kept idle is memory nobody else can use, and in a Dask worker it is
"unmanaged memory" that Dask can neither see nor spill. So idle memory is bounded:

* at most :func:`pool_limit` bytes (setting ``host_pool_limit``, environment variable
  ``GPUFRAME_HOST_POOL_LIMIT``; default the smaller of 1 GiB and 1/16 of the memory this process
  may use); the least recently returned buffers go first;
* a buffer idle for ``host_pool_idle_s`` seconds (default 5) goes back to the operating system,
  by a background thread that runs only while the allocator holds memory;
* inside a Dask worker with a memory limit, idle memory never takes the process above the
  worker's spill threshold (``memory_limit * distributed.worker.memory.spill``): as the worker's
  data grows toward it, the release thread (every 0.5 s) gives idle memory back;
* :func:`gpuframe.core.memory.release` (or :meth:`HostAllocator.release`) frees it all now.

Buffers of at least :data:`MIN_BYTES` are anonymous memory maps (``mmap``): freeing one unmaps it,
so the memory really goes back to the system (glibc keeps freed heap memory below its
dynamic mmap threshold of up to 32 MiB), they start on a page boundary (the streaming scatter
needs 64 bytes) and, from :data:`HUGE_MIN` bytes on, the allocator asks for transparent huge
pages with ``madvise(MADV_HUGEPAGE)`` on that mapping only when ``host_huge_pages`` is on (off by
default: on a fragmented machine with ``defrag=madvise`` the first touches stall in synchronous
compaction, see :mod:`gpuframe.config`). No process-global flag is toggled. Smaller requests are plain ``np.empty``.
Sizes are rounded up (to 64 KiB below 2 MiB, to 2 MiB above) so that buffers of similar sizes
share blocks; a request takes the smallest idle block that holds it and is at most twice its
size.

The allocator is swappable, like RMM's current resource: :func:`set_host_allocator` installs
any object with ``empty(shape, dtype)``, ``release()`` and ``stats()`` (a
:class:`HostAllocator` with other settings, or :class:`SystemHostAllocator`, plain numpy).
Every host buffer of partition, gather, join and the exchange comes from
:func:`host_empty`, which asks the current one. It is thread-safe: one lock guards the idle
blocks; a buffer whose last array dies (in any thread, even inside a garbage collection) is
queued without taking that lock and filed by the next caller or the release thread.
"""
from __future__ import annotations

import collections
import mmap
import os
import threading
import time
from typing import Any, Optional, Protocol

import numpy as np

from .. import config
from . import memlimits

__all__ = ["HostAllocator", "SystemHostAllocator", "get_host_allocator", "host_empty", "pool_limit",
           "set_host_allocator", "settings_changed", "using_host_allocator"]

MIN_BYTES = 256 << 10      # smaller requests: np.empty
SMALL_GRAIN = 64 << 10     # size rounding below GRAIN
GRAIN = 2 << 20            # size rounding from 2 MiB on (the huge page size)
HUGE_MIN = 4 << 20         # madvise(MADV_HUGEPAGE) from this size on (numpy's threshold)
DEFAULT_LIMIT_CAP = 1 << 30
WORKER_CHECK_S = 0.5       # how often the release thread re-reads a Dask worker's headroom
_MAX_FIT = 2               # a request may take an idle block up to this many times its size

_HAVE_MMAP = hasattr(mmap, "MAP_ANONYMOUS") and hasattr(mmap, "MAP_PRIVATE")
_MADV_HUGEPAGE = getattr(mmap, "MADV_HUGEPAGE", None)


def _round_size(nbytes: int) -> int:
    grain = GRAIN if nbytes >= GRAIN else SMALL_GRAIN
    return -(-nbytes // grain) * grain


def _shape_of(shape: Any) -> tuple[int, ...]:
    if np.isscalar(shape):
        return (int(shape),)
    return tuple(int(x) for x in shape)


_TOTAL_CACHE: list = []


def _memory_total() -> int:
    """Memory this process may use: physical, or the cgroup limit when lower (read once)."""
    if not _TOTAL_CACHE:
        total, _ = memlimits.system_memory()
        cg = memlimits.cgroup_memory()
        if cg is not None:
            total = min(total, cg.limit)
        _TOTAL_CACHE.append(total)
    return _TOTAL_CACHE[0]


def pool_limit(setting: Any = "config") -> int:
    """The idle-memory limit in bytes for ``setting`` (default: the ``host_pool_limit`` setting):
    ``None`` -> min(1 GiB, 1/16 of the memory), a fraction -> that share of the memory."""
    value = config.get("host_pool_limit") if setting == "config" else config.parse_memory_size(
        setting, "limit")
    if value is None:
        return min(DEFAULT_LIMIT_CAP, _memory_total() // 16)
    if isinstance(value, float):
        return int(value * _memory_total())
    return int(value)


class _Raw:
    """One block of host memory: an anonymous mapping (unmapped when this object dies) or, where
    ``mmap`` cannot make one, a numpy array."""

    __slots__ = ("array", "size", "addr")

    def __init__(self, size: int, huge: bool) -> None:
        if _HAVE_MMAP:
            m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            if huge and size >= HUGE_MIN and _MADV_HUGEPAGE is not None:
                try:
                    m.madvise(_MADV_HUGEPAGE)
                except OSError:  # a kernel without THP: plain pages
                    pass
            self.array = np.frombuffer(m, dtype=np.uint8)   # owns the only reference to ``m``
        else:  # pragma: no cover - platforms without anonymous private maps
            self.array = np.empty(size + 64, dtype=np.uint8)
        self.size = size
        addr = self.array.ctypes.data
        self.addr = addr + (-addr) % 64


class _Lease:
    """The base object of an array handed out by :class:`HostAllocator`: the array and every
    view of it keep it alive, and when the last one dies the block goes back to the allocator."""

    __slots__ = ("raw", "alloc", "__array_interface__", "__weakref__")

    def __init__(self, raw: _Raw, alloc: "HostAllocator", shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.raw = raw
        self.alloc = alloc
        self.__array_interface__ = {"shape": shape, "typestr": dtype.str, "data": (raw.addr, False),
                                    "version": 3}

    def __del__(self) -> None:
        try:
            self.alloc._give_back(self.raw)
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


class HostAllocator:
    """A caching host allocator with a bounded idle pool (see the module notes).

    Parameters
    ----------
    limit : int, float, str or None, optional
        Idle bytes kept at most (as ``host_pool_limit`` accepts them); default: follow the
        ``host_pool_limit`` setting.
    idle_s : float, optional
        Seconds an idle block is kept; default: follow ``host_pool_idle_s``.
    huge_pages : bool, optional
        ``madvise(MADV_HUGEPAGE)`` on blocks of :data:`HUGE_MIN` bytes or more; default: follow
        ``host_huge_pages``.
    """

    def __init__(self, limit: Any = None, idle_s: Optional[float] = None,
                 huge_pages: Optional[bool] = None) -> None:
        self._limit_setting = None if limit is None else config.parse_memory_size(limit, "limit")
        self._limit_given = limit is not None
        self._idle_s = None if idle_s is None else config._parse_seconds(idle_s, "idle_s")
        self._huge = huge_pages
        self._lock = threading.Lock()
        self._idle: list[tuple[float, _Raw]] = []   # (when it became idle, block), oldest first
        self._idle_bytes = 0
        # Blocks whose last array died. ``_Lease.__del__`` may run in any thread, inside a garbage
        # collection, even while this thread holds the lock: it only appends here (atomic) and
        # files them when the lock is free; otherwise the lock's holder or the release thread does.
        self._returned: collections.deque = collections.deque()
        self._leased = 0          # bytes of blocks handed out (returned ones still queued included)
        self._leased_blocks = 0
        self._peak_leased = 0
        self._fresh_bytes = 0     # bytes mapped anew
        self._reused_bytes = 0    # bytes served from idle blocks
        self._released_bytes = 0  # idle bytes given back to the system
        self._thread: Optional[threading.Thread] = None
        self._wake = threading.Lock()       # released to wake the release thread early
        self._wake.acquire()
        self._stop = False
        self._closed_pid = os.getpid()

    # ------------------------------------------------------------------ settings
    @property
    def limit(self) -> int:
        """Idle bytes kept at most, before a Dask worker's headroom is taken into account."""
        if self._limit_given:
            v = self._limit_setting
            if isinstance(v, float):
                return int(v * _memory_total())
            return int(v)
        return pool_limit()

    @property
    def idle_s(self) -> float:
        return float(config.get("host_pool_idle_s")) if self._idle_s is None else self._idle_s

    @property
    def huge_pages(self) -> bool:
        return bool(config.get("host_huge_pages")) if self._huge is None else bool(self._huge)

    def _effective_limit(self) -> int:
        limit = self.limit
        wm = memlimits.dask_worker_memory() if memlimits._workers else None
        if wm is not None:
            worker_limit, spill, _hard = wm
            # keep the process under the worker's spill threshold, counting idle blocks as freeable
            others = memlimits.process_rss() - self._idle_bytes
            limit = min(limit, max(0, int(worker_limit * spill) - others))
        return limit

    # ------------------------------------------------------------------ allocation
    def empty(self, shape: Any, dtype: Any) -> np.ndarray:
        """An uninitialised C-contiguous array (like ``np.empty``), from an idle block when one fits."""
        dtype = np.dtype(dtype)
        shape = _shape_of(shape)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes < MIN_BYTES:
            return np.empty(shape, dtype)
        size = _round_size(nbytes)
        raw = None
        with self._lock:
            self._file_returned(time.monotonic())
            best = -1
            for k, (_t, r) in enumerate(self._idle):
                if size <= r.size <= _MAX_FIT * size and (best < 0 or r.size < self._idle[best][1].size):
                    best = k
            if best >= 0:
                raw = self._idle.pop(best)[1]
                self._idle_bytes -= raw.size
                self._reused_bytes += raw.size
            self._leased += raw.size if raw is not None else size
            self._leased_blocks += 1
            self._peak_leased = max(self._peak_leased, self._leased)
        if raw is None:
            try:
                raw = _Raw(size, self.huge_pages)
            except BaseException:
                with self._lock:
                    self._leased -= size
                    self._leased_blocks -= 1
                raise
            with self._lock:
                self._fresh_bytes += size
        memlimits.note_current_worker()
        self._ensure_thread()
        return np.asarray(_Lease(raw, self, shape, dtype))

    def _give_back(self, raw: _Raw) -> None:
        """A block's last array died (any thread, possibly inside a garbage collection)."""
        self._returned.append((time.monotonic(), raw))
        if self._lock.acquire(blocking=False):
            try:
                self._file_returned(time.monotonic())
            finally:
                self._lock.release()
        self._poke()

    def _file_returned(self, now: float) -> None:
        """(lock held) Move returned blocks to the idle list, then enforce the limits."""
        moved = False
        while self._returned:
            t, raw = self._returned.popleft()
            self._leased -= raw.size
            self._leased_blocks -= 1
            self._idle.append((t, raw))
            self._idle_bytes += raw.size
            moved = True
        if moved or self._idle:
            self._trim(now)

    def _trim(self, now: float, keep: Optional[int] = None) -> int:
        """(lock held) Free idle blocks older than the idle time, then the oldest ones until at
        most ``keep`` (default: the effective limit) bytes stay idle. Returns the bytes freed."""
        idle_s = self.idle_s
        limit = self._effective_limit() if keep is None else keep
        self._idle.sort(key=lambda e: e[0])
        freed = 0
        while self._idle and (self._idle_bytes > limit or now - self._idle[0][0] >= idle_s):
            _t, raw = self._idle.pop(0)
            self._idle_bytes -= raw.size
            freed += raw.size
        self._released_bytes += freed
        return freed   # the blocks are unmapped as the popped tuples die

    # ------------------------------------------------------------------ release
    def release(self) -> int:
        """Give every idle block back to the system now; returns the bytes freed."""
        with self._lock:
            self._file_returned(time.monotonic())
            return self._trim(time.monotonic(), keep=0)

    def trim(self) -> int:
        """Apply the limits now (after a setting changed); returns the bytes freed."""
        with self._lock:
            self._file_returned(time.monotonic())
            return self._trim(time.monotonic())

    def stats(self) -> dict[str, Any]:
        """What the allocator holds: ``idle_bytes``/``idle_blocks`` (kept for reuse),
        ``in_use_bytes``/``in_use_blocks`` (handed out and alive), ``limit_bytes`` (the idle
        limit; ``effective_limit_bytes`` with a Dask worker's headroom), ``idle_release_s``,
        ``huge_pages``, ``peak_in_use_bytes``, and the totals ``fresh_bytes`` (mapped anew),
        ``reused_bytes`` (served from idle blocks) and ``released_bytes`` (given back)."""
        with self._lock:
            self._file_returned(time.monotonic())
            return {
                "kind": type(self).__name__,
                "idle_bytes": self._idle_bytes,
                "idle_blocks": len(self._idle),
                "in_use_bytes": self._leased,
                "in_use_blocks": self._leased_blocks,
                "limit_bytes": self.limit,
                "effective_limit_bytes": self._effective_limit(),
                "idle_release_s": self.idle_s,
                "huge_pages": self.huge_pages,
                "min_pooled_bytes": MIN_BYTES,
                "peak_in_use_bytes": self._peak_leased,
                "fresh_bytes": self._fresh_bytes,
                "reused_bytes": self._reused_bytes,
                "released_bytes": self._released_bytes,
            }

    @property
    def idle_bytes(self) -> int:
        with self._lock:
            self._file_returned(time.monotonic())
            return self._idle_bytes

    # ------------------------------------------------------------------ release thread
    def _poke(self) -> None:
        try:
            self._wake.release()
        except RuntimeError:  # already woken
            pass

    def _ensure_thread(self) -> None:
        t = self._thread
        if t is not None and t.is_alive():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="gpuframe-host-release", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        """Frees idle blocks when their time is up (and, in a Dask worker, when its headroom
        shrinks); exits when the allocator holds nothing."""
        while not self._stop:
            with self._lock:
                now = time.monotonic()
                self._file_returned(now)
                if not self._idle and not self._returned and self._leased_blocks == 0:
                    self._thread = None
                    return
                if self._idle:
                    wait = max(0.0, self._idle[0][0] + self.idle_s - now) + 0.01
                    if memlimits._workers:
                        wait = min(wait, WORKER_CHECK_S)
                else:
                    wait = -1.0  # only blocks in use: the return of one wakes us
            self._wake.acquire(timeout=wait)

    def close(self) -> None:
        """Stop the release thread and free every idle block (blocks in use stay valid)."""
        self._stop = True
        self._poke()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5)
        self.release()


class SystemHostAllocator:
    """No pooling: every request is a plain ``np.empty`` (what ``host_pool_limit=0`` amounts to,
    without the bookkeeping)."""

    def empty(self, shape: Any, dtype: Any) -> np.ndarray:
        return np.empty(_shape_of(shape), np.dtype(dtype))

    def release(self) -> int:
        return 0

    def stats(self) -> dict[str, Any]:
        return {"kind": type(self).__name__, "idle_bytes": 0, "idle_blocks": 0, "in_use_bytes": None,
                "in_use_blocks": None, "limit_bytes": 0, "effective_limit_bytes": 0, "idle_release_s": 0.0}


class HostAllocatorLike(Protocol):  # pragma: no cover - typing only
    def empty(self, shape: Any, dtype: Any) -> np.ndarray: ...
    def release(self) -> int: ...
    def stats(self) -> dict[str, Any]: ...


_current: Any = HostAllocator()
_current_lock = threading.Lock()


def get_host_allocator() -> Any:
    """The process-wide host allocator (a :class:`HostAllocator` unless replaced)."""
    return _current


def set_host_allocator(alloc: Any) -> Any:
    """Install ``alloc`` as the process-wide host allocator; returns the previous one (whose
    blocks in use stay valid; release its idle memory with its ``release()``)."""
    global _current
    for name in ("empty", "release", "stats"):
        if not callable(getattr(alloc, name, None)):
            raise TypeError(f"alloc must have empty(shape, dtype), release() and stats() methods; "
                            f"{type(alloc).__name__} has no {name}()")
    with _current_lock:
        old, _current = _current, alloc
    return old


class using_host_allocator:  # noqa: N801 - used like a function
    """``with using_host_allocator(alloc): ...`` installs ``alloc`` for the block, then restores
    the previous allocator (and releases ``alloc``'s idle memory)."""

    def __init__(self, alloc: Any) -> None:
        self.alloc = alloc
        self._old: Any = None

    def __enter__(self) -> Any:
        self._old = set_host_allocator(self.alloc)
        return self.alloc

    def __exit__(self, *exc: Any) -> None:
        set_host_allocator(self._old)
        self.alloc.release()


def host_empty(shape: Any, dtype: Any) -> np.ndarray:
    """An uninitialised host array for an operation's output or scratch, from the current host
    allocator (pooled when large)."""
    return _current.empty(shape, dtype)


def settings_changed() -> None:
    """Called by :func:`gpuframe.config.set` after a ``host_*`` setting changed: apply a lower
    limit or a shorter idle time now."""
    alloc = _current
    trim = getattr(alloc, "trim", None)
    if trim is not None:
        trim()
        if isinstance(alloc, HostAllocator):
            alloc._poke()


def _after_fork() -> None:
    # the child has the parent's memory but not its threads or lock states
    global _current
    alloc = _current
    if isinstance(alloc, HostAllocator):
        alloc._lock = threading.Lock()
        alloc._wake = threading.Lock()
        alloc._wake.acquire()
        alloc._thread = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
