"""The pooled block runner of the simulator lanes (:mod:`tests.common.sim_blocks`) runs kernels
as numba's own simulator does: barriers, early returns, block reductions, 2-D blocks, errors."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from gpuframe.core.device import cudasim_enabled

from ..common import sim_blocks

pytestmark = pytest.mark.skipif(not cudasim_enabled(), reason="needs NUMBA_ENABLE_CUDASIM=1")


@pytest.fixture(params=["pooled", "numba"])
def manager(request, monkeypatch):
    """Each test under the pooled runner and under numba's own ``BlockManager``."""
    from numba.cuda.simulator import kernel as simkernel

    pick = sim_blocks.PooledBlockManager if request.param == "pooled" else sim_blocks.numba_block_manager()
    monkeypatch.setattr(simkernel, "BlockManager", pick)
    return request.param


# a module global: the simulator runs a kernel with the fake ``cuda`` module swapped into its
# function's globals
cuda = None


@functools.lru_cache(maxsize=None)
def _kernels():
    global cuda
    from numba import cuda

    @cuda.jit
    def reverse_blocks(x, out):
        # each block reverses its slice through shared memory: wrong without a real barrier
        buf = cuda.shared.array(64, np.int64)
        t = cuda.threadIdx.x
        i = cuda.blockIdx.x * cuda.blockDim.x + t
        buf[t] = x[i]
        cuda.syncthreads()
        out[i] = buf[cuda.blockDim.x - 1 - t]

    @cuda.jit
    def early_return(out):
        # half the threads return before the barrier; the rest pass it twice
        buf = cuda.shared.array(64, np.int64)
        t = cuda.threadIdx.x
        if t % 2 == 1:
            out[t] = -1
            return
        buf[t] = t * 10
        cuda.syncthreads()
        s = 0
        for j in range(0, cuda.blockDim.x, 2):
            s += buf[j]
        cuda.syncthreads()
        out[t] = s

    @cuda.jit
    def reductions(x, out):
        t = cuda.threadIdx.x
        c = cuda.syncthreads_count(x[t] > 2)
        a = cuda.syncthreads_and(x[t] > 0)
        o = cuda.syncthreads_or(x[t] > 6)
        if t == 0:
            out[0] = c
            out[1] = a
            out[2] = o

    @cuda.jit
    def ids_2d(out):
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        bx = cuda.blockIdx.x
        out[bx, ty, tx] = bx * 1000 + ty * 100 + tx

    @cuda.jit
    def fails_at(x, bad):
        t = cuda.threadIdx.x
        cuda.syncthreads()
        if t == bad:
            x[t] = x[1000]   # out of bounds: IndexError
        cuda.syncthreads()
        x[t] = 1

    @cuda.jit
    def two_shared(out):
        # every thread asks for both shared arrays at once at the start of each launch
        a = cuda.shared.array(64, np.int64)
        b = cuda.shared.array(64, np.int64)
        t = cuda.threadIdx.x
        a[t] = t
        b[t] = 2 * t
        cuda.syncthreads()
        n = cuda.blockDim.x
        out[cuda.blockIdx.x, t] = a[n - 1 - t] + b[n - 1 - t]

    return reverse_blocks, early_return, reductions, ids_2d, fails_at, two_shared


def test_barrier_shared_memory_and_many_blocks(manager):
    reverse_blocks = _kernels()[0]
    x = np.arange(4 * 64, dtype=np.int64)
    out = np.zeros_like(x)
    reverse_blocks[4, 64](x, out)
    assert (out == x.reshape(4, 64)[:, ::-1].reshape(-1)).all()


def test_threads_that_returned_are_not_waited_for(manager):
    early_return = _kernels()[1]
    out = np.zeros(16, np.int64)
    early_return[1, 16](out)
    want = sum(range(0, 16, 2)) * 10
    assert out.tolist() == [want if t % 2 == 0 else -1 for t in range(16)]


def test_block_reductions(manager):
    reductions = _kernels()[2]
    x = np.array([1, 2, 3, 4, 5, 6, 7, 8], np.int64)
    out = np.zeros(3, np.int64)
    reductions[1, 8](x, out)
    assert out.tolist() == [6, 1, 1]
    x[0] = 0
    reductions[1, 8](x, out)
    assert out.tolist() == [6, 0, 1]


def test_two_dimensional_blocks(manager):
    ids_2d = _kernels()[3]
    out = np.zeros((3, 4, 5), np.int64)
    ids_2d[3, (5, 4)](out)
    b, y, x = np.indices(out.shape)
    assert (out == b * 1000 + y * 100 + x).all()


def test_an_error_in_one_thread_reaches_the_launcher_and_the_runner_stays_usable(manager):
    reverse_blocks, _e, _r, _i, fails_at, _s = _kernels()
    x = np.zeros(8, np.int64)
    with pytest.raises(IndexError, match=r"tid=\[3, 0, 0\] ctaid=\[0, 0, 0\]"):
        fails_at[1, 8](x, 3)
    # the next launches run whole
    fails_at[1, 8](x, -1)
    assert (x == 1).all()
    y = np.arange(128, dtype=np.int64)
    out = np.zeros_like(y)
    reverse_blocks[2, 64](y, out)
    assert (out == y.reshape(2, 64)[:, ::-1].reshape(-1)).all()


def test_the_threads_of_a_launch_share_one_shared_array(manager):
    # numba-cuda's simulator creates a shared array at a thread's first request without a lock:
    # two threads asking at once got two arrays (3 of 40 launches with this switch interval, a
    # radix scatter in the CI's lane wrote out of bounds); sim_blocks.install() adds the lock
    import sys

    from numba.cuda.simulator import kernelapi

    assert kernelapi.FakeCUDAShared.array is sim_blocks._shared_array
    two_shared = _kernels()[5]
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        bad = 0
        for _ in range(30):
            out = np.zeros((2, 64), np.int64)
            two_shared[2, 64](out)
            bad += int((out != 3 * (63 - np.arange(64))).any())
    finally:
        sys.setswitchinterval(before)
    assert bad == 0
