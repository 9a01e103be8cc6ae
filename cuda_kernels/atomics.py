"""Atomic read-modify-write on one array element: one name for Python and ``cuda.jit``.

The join's slot writes (:func:`gpuframe.kernels.hashtable.claim_slot`, ``push_slot``,
``claim_pair`` and ``add_count``) call these names on the GPU and under the simulator, and each target supplies its own implementation:

* plain Python, which is also what the CUDA simulator runs: a lock around the read and the
  write, so the simulator's block threads see real atomics;
* ``cuda.jit``: ``numba.cuda.atomic.cas``, ``exch`` and ``add``, registered by
  :func:`register_cuda_overloads` (called by the CUDA kernel factories, so that importing this
  module does not import ``numba.cuda``).

No CPU driver needs an atomic (the CPU join builds each table on one thread, the CPU partition
gives every thread its own cursors), so there is no ``njit`` implementation.

Every function returns the element's value from before the operation. Elements must be
integers (``cuda.atomic.cas`` supports 32- and 64-bit integers).
"""
from __future__ import annotations

import threading

__all__ = ["atomic_add", "atomic_cas", "atomic_exch", "register_cuda_overloads"]

_LOCK = threading.Lock()


# --------------------------------------------------------------------------- Python stubs
def atomic_cas(arr, idx, expected, new):
    """``old = arr[idx]; if old == expected: arr[idx] = new``, atomically; returns ``old``."""
    with _LOCK:
        old = arr[idx]
        if old == expected:
            arr[idx] = new
        return old


def atomic_exch(arr, idx, value):
    """``old = arr[idx]; arr[idx] = value``, atomically; returns ``old``."""
    with _LOCK:
        old = arr[idx]
        arr[idx] = value
        return old


def atomic_add(arr, idx, value):
    """``old = arr[idx]; arr[idx] = old + value``, atomically; returns ``old``."""
    with _LOCK:
        old = arr[idx]
        arr[idx] = old + value
        return old


# --------------------------------------------------------------------------- CUDA
_CUDA_REGISTERED = False


def register_cuda_overloads() -> None:
    """Teach the CUDA target the three names (idempotent; imports ``numba.cuda``)."""
    global _CUDA_REGISTERED
    if _CUDA_REGISTERED:
        return
    from numba import cuda
    from numba.cuda.extending import overload as cuda_overload

    @cuda_overload(atomic_cas, target="cuda")
    def _ov_cas_cuda(arr, idx, expected, new):
        def impl(arr, idx, expected, new):
            return cuda.atomic.cas(arr, idx, expected, new)

        return impl

    @cuda_overload(atomic_exch, target="cuda")
    def _ov_exch_cuda(arr, idx, value):
        def impl(arr, idx, value):
            return cuda.atomic.exch(arr, idx, value)

        return impl

    @cuda_overload(atomic_add, target="cuda")
    def _ov_add_cuda(arr, idx, value):
        def impl(arr, idx, value):
            return cuda.atomic.add(arr, idx, value)

        return impl

    _CUDA_REGISTERED = True

