"""The threaded kernels: :func:`run_threads` (threads that claim work items from one atomic
counter), :func:`run_rows` (per-row kernels over blocks of rows) and the word-key kernel variants
of :func:`cpu_variant`."""
from __future__ import annotations

import threading
import time

import numba
import numpy as np
import pytest
from numba import njit

from gpuframe.backends.cpu._target import PARALLEL_MIN_ROWS, run_rows, run_threads
from gpuframe.kernels.cpu_intrinsics import ROW_BLOCK, address, claim_one, fetch_add_at, row_block
from gpuframe.kernels.join_cpu import _claim
from gpuframe.kernels.per_row import cpu_variant


@njit(nogil=True)
def _claim_all(n, seen, cursor):
    # the join's threaded kernels' loop: items claimed in blocks (join_cpu._claim)
    count = 0
    mine = np.zeros(2, np.int64)
    it = _claim(cursor, mine)
    while it < n:
        seen[it] += 1
        count += 1
        it = _claim(cursor, mine)
    return count


@njit(nogil=True)
def _add_one_each(n, seen, cursor):
    count = 0
    it = fetch_add_at(address(cursor), np.int64(1))
    while it < n:
        seen[it] += 1
        count += 1
        it = fetch_add_at(address(cursor), np.int64(1))
    return count


@pytest.mark.parametrize("kernel", [_claim_all, _add_one_each])
@pytest.mark.parametrize("items", [0, 1, 3, 7, 100_000])
def test_every_item_is_claimed_once(kernel, items):
    seen = np.zeros(items, np.int64)
    counts = run_threads(kernel, items, items, seen)
    assert (seen == 1).all()
    assert sum(counts) == items
    # a helper not started yet when the items ran out is not started at all
    assert 1 <= len(counts) <= max(1, min(numba.get_num_threads(), items))


def test_a_cursor_without_a_block_size_claims_one_item_at_a_time():
    # a kernel called directly with a zeroed cursor ends, every item claimed once
    seen = np.zeros(5, np.int64)
    assert _claim_all(5, seen, np.zeros(2, np.int64)) == 5
    assert (seen == 1).all()


def test_one_thread_runs_on_the_calling_thread():
    names = []
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        run_threads(lambda cursor: names.append(threading.current_thread().name), 8)
    finally:
        numba.set_num_threads(before)
    assert names == [threading.current_thread().name]


def test_an_error_is_raised_after_every_thread_is_done():
    if numba.get_num_threads() < 2:
        pytest.skip("one thread")
    done = []
    started = threading.Event()
    caller = threading.current_thread()

    def kernel(cursor):
        if threading.current_thread() is caller:
            assert started.wait(10)
            raise ValueError("boom")
        started.set()
        time.sleep(0.2)
        done.append(1)

    with pytest.raises(ValueError, match="boom"):
        run_threads(kernel, 2)
    assert done == [1]   # the helper had started: it was waited for, not left writing


@njit(inline="always")
def _leaf(x):
    return x + 1


@njit(inline="always")
def _mid(x):
    return _leaf(x) * 2


@njit
def _top(x):
    return _mid(x)


@njit
def _unrelated(x):
    return x - 1


@njit(inline="always")
def _leaf10(x):
    return x + 10


def test_cpu_variant_rebinds_a_name_in_every_callee_that_reaches_it():
    v = cpu_variant(_top, "ten", {"_leaf": _leaf10})
    assert v is not _top and v.py_func.__qualname__ == "_top__ten"
    assert _top(1) == 4 and v(1) == 22          # the original keeps its binding
    assert cpu_variant(_top, "ten", {"_leaf": _leaf10}) is v
    assert cpu_variant(_unrelated, "ten", {"_leaf": _leaf10}) is _unrelated


# --------------------------------------------------------------------------- per-row kernels
@njit(nogil=True, _nrt=False)
def _rows_seen(n, seen, cursor):
    # a per-row kernel's loop (cpu_intrinsics.row_block); returns its rows
    count = 0
    lo, hi = row_block(cursor, n)
    while lo < n:
        for i in range(lo, hi):
            seen[i] += 1
            count += 1
        lo, hi = row_block(cursor, n)
    return count


@njit(_nrt=False)
def _first_block(cursor, n):
    return row_block(cursor, n)


def test_row_blocks_are_unsigned():
    # the loop's index is then unsigned, and numba indexes without its negative-index
    # wraparound code (as in its prange loops)
    assert _first_block(np.array([0, 8], np.int64), 5) == (0, 5)
    assert str(_first_block.nopython_signatures[0].return_type) == "UniTuple(uint64 x 2)"


@pytest.mark.parametrize("n", [0, 1, ROW_BLOCK - 1, ROW_BLOCK, 4 * ROW_BLOCK + 3, PARALLEL_MIN_ROWS + 1])
@pytest.mark.parametrize("block", [None, 1000])
def test_every_row_is_claimed_once_in_unsigned_blocks(n, block):
    seen = np.zeros(n, np.int64)
    got = run_rows(_rows_seen, n, n, seen) if block is None else run_rows(_rows_seen, n, n, seen, block=block)
    assert (seen == 1).all()
    assert sum(got) == n
    # below PARALLEL_MIN_ROWS one thread (this one) runs every block
    assert len(got) == 1 if n < PARALLEL_MIN_ROWS else 1 <= len(got) <= numba.get_num_threads()


def test_a_per_row_kernel_called_with_a_zeroed_cursor_claims_one_row_at_a_time():
    seen = np.zeros(5, np.int64)
    assert _rows_seen(5, seen, np.zeros(2, np.int64)) == 5
    assert (seen == 1).all()


@njit(nogil=True, _nrt=False)
def _chunks_seen(nchunks, seen, cursor):
    k = claim_one(cursor)
    count = 0
    while k < nchunks:
        seen[k] += 1
        count += 1
        k = claim_one(cursor)
    return count


@pytest.mark.parametrize("items", [0, 1, 2, 9])
def test_claim_one_hands_out_each_item_once(items):
    seen = np.zeros(items, np.int64)
    got = run_threads(_chunks_seen, items, items, seen)
    assert (seen == 1).all() and sum(got) == items
