"""Device-side checks of a column that comes from outside (an Arrow import, a received table).

Grid-stride kernels that each return one scalar (the first bad row, or a count), used by
:mod:`gpuframe.core.validate` under the CUDA simulator; on a real GPU the same checks are CuPy
reductions there.
"""
from __future__ import annotations

import functools

import numpy as np

from .kernel_set import KernelSet

# numba.cuda, bound by the first cuda_kernels() call: a module global, because the simulator runs
# kernels by swapping the numba.cuda module in their globals.
cuda = None


@functools.lru_cache(maxsize=None)
def cuda_kernels() -> KernelSet:
    """Grid-stride kernels; each thread folds its rows and does one atomic per result."""
    global cuda
    from numba import cuda

    @cuda.jit
    def first_decrease(o, m, out):
        # out[0]: the smallest i with o[i + 1] < o[i] (m when none)
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        for i in range(start, m, stride):
            if o[i + 1] < o[i]:
                cuda.atomic.min(out, 0, i)
                break

    @cuda.jit
    def first_bad_index(idx, ndict, validity, has_valid, vbit, out):
        # out[0]: the smallest valid row whose index is outside [0, ndict) (len(idx) when none)
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        for i in range(start, idx.shape[0], stride):
            j = np.int64(idx[i])  # a uint64 index above the int64 range turns negative: caught
            if j < 0 or j >= ndict:
                ok = True
                if has_valid:
                    b = vbit + i
                    ok = ((validity[b >> 3] >> (b & 7)) & 1) == 1
                if ok:
                    cuda.atomic.min(out, 0, i)
                    break

    @cuda.jit
    def set_bits(bits, bit_off, n, out):
        # out[0] += number of set bits among rows [0, n) starting at bit bit_off
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        count = 0
        for i in range(start, n, stride):
            b = bit_off + i
            count += (bits[b >> 3] >> (b & 7)) & 1
        if count:
            cuda.atomic.add(out, 0, count)

    return KernelSet(first_decrease=first_decrease, first_bad_index=first_bad_index, set_bits=set_bits)
