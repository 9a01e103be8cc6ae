"""A faster way for numba's CUDA simulator to run a thread block, for the simulator test lanes.

numba-cuda's simulator (``numba.cuda.simulator.kernel.BlockManager``) starts a new Python thread
for every CUDA thread of every block and then polls them in a loop until they end. Most of a
simulator test's time went there: a join of 32-128 rows launches ~700 kernels and ~56,000
threads, and starting them and polling took 10 of its 14 s (cProfile).

:class:`PooledBlockManager` runs a block the same way, every CUDA thread a Python thread that
runs the kernel's function and ``threading.current_thread()`` giving the kernel API its
``threadIdx``, ``blockIdx`` and ``syncthreads`` but on threads kept in a pool and reused block
after block, and with a barrier that waits on a condition variable instead of polling:

* ``syncthreads()`` returns once every thread of the block that is still running has reached it
  (threads that have returned are not waited for, as in the simulator);
* a thread that raises aborts the block: threads waiting at (or later reaching) ``syncthreads``
  raise too, and once every thread has ended the first exception is raised to the launcher with
  the simulator's ``tid=[x, y, z] ctaid=[x, y, z]: message`` form;
* ``syncthreads_count``/``_and``/``_or`` and shared memory behave as the simulator's (the same
  ``block_state`` array, the same per-launch shared allocations).

:func:`install` replaces the simulator's ``BlockManager`` (a module global that
``FakeCUDAKernel.__call__`` reads at each launch) and makes ``cuda.shared.array`` safe for the
block's threads: the simulator looks an allocation up by the caller's line and creates it when
missing, without a lock, so two threads that ask at once could each create one and work on
different "shared" arrays, one of them never initialised (``np.empty``): a radix scatter then
wrote to row 1943 of 100 (``test_sort_table_on_the_device``, once in the CI's cudasim lane;
3 of 40 launches of a two-array kernel with a 1 us switch interval). Nothing else of numba is
changed.
"""
from __future__ import annotations

import sys
import threading
from typing import Any

import numpy as np

__all__ = ["PooledBlockManager", "install", "numba_block_manager"]


class _Block:
    """One block's run: the barrier and the threads' outcome."""

    def __init__(self, nthreads: int) -> None:
        self.cv = threading.Condition(threading.Lock())
        self.running = nthreads        # threads that have not returned
        self.arrived = 0               # of those, the ones waiting at the barrier
        self.generation = 0            # barriers passed
        self.abort = False
        self.error: Any = None         # (exception, traceback) of the first thread that raised
        self.done = threading.Event()

    def _release(self) -> None:
        self.arrived = 0
        self.generation += 1
        self.cv.notify_all()

    def syncthreads(self) -> None:
        with self.cv:
            if self.abort:
                raise RuntimeError("abort flag set on syncthreads call")
            self.arrived += 1
            if self.arrived == self.running:
                self._release()
            else:
                passed = self.generation
                while self.generation == passed and not self.abort:
                    self.cv.wait()
            if self.abort:
                raise RuntimeError("abort flag set on syncthreads clear")

    def finished(self, error: Any) -> None:
        with self.cv:
            if error is not None and self.error is None:
                self.error = error
                self.abort = True
                self.cv.notify_all()
            self.running -= 1
            if self.running == 0:
                self.done.set()
            elif self.arrived == self.running:
                self._release()     # the threads still running all wait at the barrier


class _SimThread(threading.Thread):
    """A pooled thread: runs one CUDA thread of a block at a time; the simulator's kernel API
    reads ``threadIdx``, ``blockIdx``, ``thread_id`` and the ``syncthreads*`` methods from it."""

    def __init__(self, pool: "_Pool") -> None:
        super().__init__(daemon=True, name="cudasim-thread")
        self._pool = pool
        self._go = threading.Event()
        self._job: Any = None

    def run(self) -> None:
        while True:
            self._go.wait()
            self._go.clear()
            f, args, block = self._job
            self._job = None
            error = None
            try:
                f(*args)
            except BaseException as e:  # noqa: BLE001 - handed to the launcher, as the simulator does
                tid = "tid=%s" % list(self.threadIdx)
                ctaid = "ctaid=%s" % list(self.blockIdx)
                msg = "%s %s" % (tid, ctaid) if str(e) == "" else "%s %s: %s" % (tid, ctaid, e)
                try:
                    exc = type(e)(msg)
                except Exception:  # an exception type that takes other arguments: as it is
                    exc = e
                error = (exc, sys.exc_info()[2])
            block.finished(error)

    def syncthreads(self) -> None:
        self._block.syncthreads()

    def _reduce(self, value: Any, fn: Any) -> Any:
        state = self._manager.block_state
        state[self._index] = value
        self.syncthreads()
        got = fn(state)
        self.syncthreads()
        return got

    def syncthreads_count(self, value: Any) -> int:
        return int(self._reduce(value, np.count_nonzero))

    def syncthreads_and(self, value: Any) -> int:
        return 1 if self._reduce(value, np.all) else 0

    def syncthreads_or(self, value: Any) -> int:
        return 1 if self._reduce(value, np.any) else 0


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_SimThread] = []

    def take(self, n: int) -> list[_SimThread]:
        with self._lock:
            got = self._idle[-n:] if n else []
            del self._idle[len(self._idle) - len(got):]
        while len(got) < n:
            t = _SimThread(self)
            t.start()
            got.append(t)
        return got

    def give(self, threads: list[_SimThread]) -> None:
        with self._lock:
            self._idle.extend(threads)


_POOL = _Pool()


class PooledBlockManager:
    """Drop-in for ``numba.cuda.simulator.kernel.BlockManager`` (same constructor and ``run``)."""

    def __init__(self, f: Any, grid_dim: Any, block_dim: Any, debug: bool) -> None:
        self._grid_dim = grid_dim
        self._block_dim = block_dim
        self._f = f
        self._debug = debug
        self.block_state = np.zeros(block_dim, dtype=np.bool_)

    def run(self, grid_point: Any, *args: Any) -> None:
        from numba.cuda.simulator.kernelapi import Dim3

        points = list(np.ndindex(*self._block_dim))
        threads = _POOL.take(len(points))
        block = _Block(len(points))
        f = self._f
        if self._debug:
            inner = f

            def f(*a: Any) -> None:
                np.seterr(divide="raise")
                inner(*a)
        bx, by, _bz = self._block_dim
        block_idx = Dim3(*grid_point)
        for t, p in zip(threads, points):
            t.blockIdx = block_idx
            t.threadIdx = Dim3(*p)
            t.thread_id = p[0] + bx * (p[1] + by * p[2])
            t._index = p
            t._manager = self
            t._block = block
            t._job = (f, args, block)
        for t in threads:
            t._go.set()
        block.done.wait()
        _POOL.give(threads)
        if block.error is not None:
            exc, tb = block.error
            raise exc.with_traceback(tb)


_NUMBA_BLOCK_MANAGER: Any = None


_SHARED_LOCK = threading.Lock()


def _shared_array(self: Any, shape: Any, dtype: Any, alignment: Any = None) -> Any:
    """numba-cuda's ``FakeCUDAShared.array`` with its lookup-or-create under a lock: every
    thread of a launch that asks at one line gets the same array."""
    from numba.core import types
    from numba.np import numpy_support

    if alignment is not None:
        raise RuntimeError("Array alignment is not supported in cudasim")
    if isinstance(dtype, types.Type):
        dtype = numpy_support.as_dtype(dtype)
    if shape == 0:   # dynamic shared memory: one buffer
        count = self._dynshared_size // np.dtype(dtype).itemsize
        return np.frombuffer(self._dynshared.data, dtype=dtype, count=count)
    frame = sys._getframe(1)
    caller = (frame.f_code.co_filename, frame.f_lineno)
    with _SHARED_LOCK:
        res = self._allocations.get(caller)
        if res is None:
            res = self._allocations[caller] = np.empty(shape, dtype)
    return res


def install() -> None:
    """Make the simulator run blocks with :class:`PooledBlockManager` and allocate shared
    arrays under a lock (idempotent)."""
    global _NUMBA_BLOCK_MANAGER
    from numba.cuda.simulator import kernel as simkernel
    from numba.cuda.simulator import kernelapi

    if simkernel.BlockManager is not PooledBlockManager:
        _NUMBA_BLOCK_MANAGER = simkernel.BlockManager
    simkernel.BlockManager = PooledBlockManager
    kernelapi.FakeCUDAShared.array = _shared_array


def numba_block_manager() -> Any:
    """The simulator's own ``BlockManager`` (also after :func:`install`)."""
    from numba.cuda.simulator import kernel as simkernel

    return _NUMBA_BLOCK_MANAGER or simkernel.BlockManager
