"""Atomic read-modify-write on one array element: one name for Python, ``njit`` and ``cuda.jit``.

Per-row logic written once as ``register_jitable`` functions (the join's hash-table insert, for
example) calls these names, and each target supplies its own implementation:

* plain Python, which is also what the CUDA simulator runs: a lock around the read and the
  write, so the simulator's block threads see real atomics;
* ``njit`` (``target="cpu"``): LLVM's ``cmpxchg`` and ``atomicrmw`` on the element's address,
  emitted by small ``@intrinsic`` functions;
* ``cuda.jit``: ``numba.cuda.atomic.cas``, ``exch`` and ``add``, registered by
  :func:`register_cuda_overloads` (called by the CUDA kernel factories, so that importing this
  module does not import ``numba.cuda``).

Every function returns the element's value from before the operation. Elements must be
integers (``cuda.atomic.cas`` supports 32- and 64-bit integers).
"""
from __future__ import annotations

import threading

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

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


# --------------------------------------------------------------------------- CPU (njit)
def _check_int_array(arr: types.Type) -> bool:
    return isinstance(arr, types.Array) and arr.ndim == 1 and isinstance(arr.dtype, types.Integer)


def _element_pointer(context, builder, aryty, aryval, idxval):
    ary = context.make_array(aryty)(context, builder, aryval)
    return cgutils.get_item_pointer(context, builder, aryty, ary, [idxval], wraparound=False)


@intrinsic
def _cpu_cas(typingctx, arr, idx, expected, new):
    if not _check_int_array(arr):
        return None
    dty = arr.dtype
    sig = dty(arr, types.intp, dty, dty)

    def codegen(context, builder, signature, args):
        ptr = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        pair = builder.cmpxchg(ptr, args[2], args[3], "seq_cst", "monotonic")
        return builder.extract_value(pair, 0)

    return sig, codegen


def _rmw_intrinsic(op: str):
    @intrinsic
    def _rmw(typingctx, arr, idx, value):
        if not _check_int_array(arr):
            return None
        dty = arr.dtype
        sig = dty(arr, types.intp, dty)

        def codegen(context, builder, signature, args):
            ptr = _element_pointer(context, builder, signature.args[0], args[0], args[1])
            return builder.atomic_rmw(op, ptr, args[2], "seq_cst")

        return sig, codegen

    return _rmw


_cpu_exch = _rmw_intrinsic("xchg")
_cpu_add = _rmw_intrinsic("add")


@overload(atomic_cas, target="cpu")
def _ov_cas_cpu(arr, idx, expected, new):
    if _check_int_array(arr):
        return lambda arr, idx, expected, new: _cpu_cas(arr, idx, expected, new)
    return None


@overload(atomic_exch, target="cpu")
def _ov_exch_cpu(arr, idx, value):
    if _check_int_array(arr):
        return lambda arr, idx, value: _cpu_exch(arr, idx, value)
    return None


@overload(atomic_add, target="cpu")
def _ov_add_cpu(arr, idx, value):
    if _check_int_array(arr):
        return lambda arr, idx, value: _cpu_add(arr, idx, value)
    return None


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

