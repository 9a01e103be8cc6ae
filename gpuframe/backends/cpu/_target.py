"""The CPU target: runs the ``@njit`` kernels of ``gpuframe.kernels`` on host numpy arrays.

Host outputs and scratch come from the host allocator (:func:`gpuframe.core.hostalloc.host_empty`).
"""
from __future__ import annotations

import contextlib
import os
import threading
from concurrent import futures
from typing import Any, Callable, Iterator, Optional

import numba
import numpy as np

from gpuframe.kernels import gather as GK
from gpuframe.kernels import hashing as HK
from gpuframe.kernels.cpu_intrinsics import ROW_BLOCK
from gpuframe.kernels.group_cpu import nchunks_for

from ...core import memory
from ...core.device import CPU
from ...core.hostalloc import host_empty
from .._common import _check_string_size

_EMPTY_U8 = np.empty(0, dtype=np.uint8)

ALIGN = 64  # bytes; Arrow's recommended alignment, and what the streaming scatter needs


def aligned_empty(shape: Any, dtype: Any) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an ``ALIGN``-byte boundary."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    raw = np.empty(count * dtype.itemsize + ALIGN, dtype=np.uint8)
    off = (-raw.ctypes.data) % ALIGN
    return raw[off:off + count * dtype.itemsize].view(dtype).reshape(shape)


class CpuTarget:
    """Runs the ``@njit`` kernels on host numpy arrays."""

    device = CPU

    def empty(self, n: int, dtype: Any) -> np.ndarray:
        return host_empty(n, dtype)

    def no_bitmap(self) -> np.ndarray:
        return _EMPTY_U8

    # hashing
    def hash_fixed(self, values, kind, validity, has_valid, vbit, seed, combine, out) -> None:
        run_rows(HK.hash_fixed_column, len(values), values, kind, validity if has_valid else _EMPTY_U8, vbit, seed,
                 combine, out)

    def hash_bool(self, bits, dbit, n, validity, has_valid, vbit, seed, combine, out) -> None:
        run_rows(HK.hash_bool_column, n, bits, dbit, n, validity if has_valid else _EMPTY_U8, vbit, seed, combine,
                 out)

    def hash_string(self, offsets, chars, validity, has_valid, vbit, seed, combine, out) -> None:
        run_rows(HK.hash_string_column, len(offsets) - 1, offsets, chars, validity if has_valid else _EMPTY_U8, vbit,
                 seed, combine, out)

    def hash_dictionary(self, indices, dict_hashes, validity, has_valid, vbit, seed, combine, out) -> None:
        run_rows(HK.hash_dictionary_column, len(indices), indices, dict_hashes, validity if has_valid else _EMPTY_U8,
                 vbit, seed, combine, out)

    # gather
    def check_indices(self, idx, n: int) -> tuple[int, int]:
        nchunks = nchunks_for(len(idx))
        bad = np.empty(nchunks, np.int64)
        missing = np.empty(nchunks, np.int64)
        run_threads(GK.check_indices, nchunks, idx, n, nchunks, bad, missing)
        first = int(bad.min())
        return (-1 if first == len(idx) else first), int(missing.sum())

    def gather_fixed(self, values, idx, out) -> int:
        return sum(run_rows(GK.gather_fixed, len(idx), values, idx, out, _ahead(values.nbytes)))

    def gather_bits(self, bits, bit_off, has_bits, idx, out) -> int:
        return sum(run_rows(GK.gather_bits, len(out), bits if has_bits else _EMPTY_U8, bit_off, has_bits, idx, out))

    def gather_string_offsets(self, offsets, idx, odt: np.dtype, large: bool
                              ) -> tuple[np.ndarray, Any, int, Optional[int]]:
        """Offsets of the gathered strings, where each one starts in the source, total bytes,
        the number of -1 indices."""
        m = len(idx)
        out = host_empty(m + 1, odt)
        starts = host_empty(m, np.int64)
        counts = run_rows(GK.string_lengths, m, offsets, idx, out, starts)
        total, missing = sum(c[0] for c in counts), sum(c[1] for c in counts)
        _check_string_size(total, large)
        memory.ensure_available("gather_column", total, CPU, rows=m, what="the gathered string bytes")
        GK.inclusive_scan_inplace(out)
        return out, starts, total, int(missing)

    def gather_string_chars(self, offsets, chars, idx, out_offsets, starts, out_chars) -> None:
        run_rows(GK.string_chars, len(starts), starts, chars, out_offsets, out_chars, _ahead(chars.nbytes))


# A random gather from a source of more than this many bytes prefetches PREFETCH_AHEAD rows
# ahead (a cache-sized source gains nothing and pays for the prefetches).
PREFETCH_MIN_BYTES = 4 << 20
PREFETCH_AHEAD = 32


def _ahead(source_bytes: int) -> int:
    return PREFETCH_AHEAD if source_bytes > PREFETCH_MIN_BYTES else 0


CPU_TARGET = CpuTarget()


# Below this many rows the CPU kernels run on the calling thread only: waking the thread pool
# costs more than the work (and on a busy machine an OpenMP barrier can cost milliseconds).
PARALLEL_MIN_ROWS = 1 << 16


@contextlib.contextmanager
def _cpu_threads(rows: int) -> Iterator[None]:
    if rows >= PARALLEL_MIN_ROWS:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


# --------------------------------------------------------------------------- threaded kernels
# The join's largest kernels are not numba parallel loops (a ``prange`` loop's own compile, its
# parfor passes and gufunc, took 1-5 s of a first join for each of them) but plain ``njit``
# loops that claim work items from a shared counter (``cursor``, an atomic add): run_threads
# runs one on several threads at once, the calling thread and the pool's. Each kernel releases
# the GIL (``nogil``). A thread claims a block of consecutive items at a time, about
# 1/BLOCKS_PER_THREAD of its share: claimed one at a time, the threads took turns on
# neighbouring items (the same partition's table, loaded into both cores' caches) and the
# two-pass probe of 10M x 20M int64 ran 13% slower than numba's static split (285-293 against
# 252-256 ms, 2026-12-07); in blocks, as fast (258 ms), and a thread done early still takes
# blocks from a slower one.
BLOCKS_PER_THREAD = 4
_POOL: Optional[futures.ThreadPoolExecutor] = None
_POOL_LOCK = threading.Lock()


def _pool() -> futures.ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = futures.ThreadPoolExecutor(max(1, numba.config.NUMBA_NUM_THREADS - 1),
                                               thread_name_prefix="gpuframe-cpu")
        return _POOL


def _forget_pool() -> None:   # a forked child has none of the parent's threads
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def run_threads(kernel: Callable[..., Any], items: int, *args: Any) -> list[Any]:
    """Run ``kernel(*args, cursor)`` on ``min(numba.get_num_threads(), items)`` threads at once,
    this one among them, and return their results (this thread's first; a helper thread that
    had not started when this one found no items left is not started). ``cursor`` is a fresh
    int64 array ``[0, block]``: the kernel claims its ``items`` work items from ``cursor[0]``,
    ``block`` consecutive ones at a time (``join_cpu._claim``, an atomic add), or one at a
    time (``cpu_intrinsics.claim_one``).
    ``numba.get_num_threads()`` is this thread's setting, as for numba's parallel loops (a Dask
    task's share of the host); one item (the join's small inputs) runs on this thread alone.
    Returns when every thread is done, also when one raised (then it raises that error)."""
    nthreads = max(1, min(numba.get_num_threads(), items))
    return _run(kernel, nthreads, max(1, -(-items // (nthreads * BLOCKS_PER_THREAD))), args)


def run_rows(kernel: Callable[..., Any], n: int, *args: Any, block: int = ROW_BLOCK) -> list[Any]:
    """Run a threaded per-row kernel over ``n`` rows: ``kernel(*args, cursor)`` claims blocks of
    ``block`` rows (``cursor[1]``; :func:`~gpuframe.kernels.cpu_intrinsics.row_block`) on up to
    ``numba.get_num_threads()`` threads, one where ``n`` is below :data:`PARALLEL_MIN_ROWS`;
    returns their results as :func:`run_threads` does. numba's ``prange`` loops ran these kernels
    before: a ``parallel=True`` kernel compiled 1-5 s longer for each of its signatures (0.8 s
    against 1.9 s for the sort's word kernel)."""
    n = int(n)
    nthreads = 1 if n < PARALLEL_MIN_ROWS else max(1, min(numba.get_num_threads(), -(-n // block)))
    return _run(kernel, nthreads, block, args)


def _run(kernel: Callable[..., Any], nthreads: int, block: int, args: tuple) -> list[Any]:
    cursor = np.array([0, block], np.int64)
    if nthreads == 1:
        return [kernel(*args, cursor)]
    pool = _pool()
    others = [pool.submit(kernel, *args, cursor) for _ in range(nthreads - 1)]
    try:
        mine = kernel(*args, cursor)
    finally:
        # every item is claimed now: a helper not started yet has nothing left to do
        running = [f for f in others if not f.cancel()]
        futures.wait(running)
    return [mine] + [f.result() for f in running]
