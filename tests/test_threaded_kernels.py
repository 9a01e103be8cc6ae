"""The join's threaded kernels: :func:`run_threads` (threads that claim work items from one
atomic counter) and the word-key kernel variants of :func:`cpu_variant`."""
from __future__ import annotations

import threading
import time

import numba
import numpy as np
import pytest
from numba import njit

from gpuframe.backends.cpu._target import run_threads
from gpuframe.kernels.cpu_intrinsics import address, fetch_add_at
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
