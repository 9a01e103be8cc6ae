"""Little-endian words from byte arrays: one name per load, an implementation per target.

The per-row functions that read string bytes (:func:`gpuframe.kernels.hashing.hash_bytes`,
:func:`gpuframe.kernels.keys.spans_equal`) read them eight at a time through these two names,
and each target supplies the load it does best:

* plain Python (what the CUDA simulator runs) and ``cuda.jit``: a loop over the bytes (a GPU
  thread may not load 8 bytes from an address that is not a multiple of 8); the CUDA
  registration is :func:`register_cuda_overloads`, called by the CUDA kernel factories, so
  that importing this module does not import ``numba.cuda``;
* ``njit`` (``target="cpu"``): one unaligned 8-byte load (x86-64 and AArch64 allow them), and
  for the tail one masked load when the 8 bytes lie inside the array.

The value is the same on every target (tested), so the hash of a string is the same on every
device. ``chars`` is a 1-D uint8 array; the CPU's wide loads need a C-contiguous one (other
layouts get the byte loop).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload, register_jitable

from .per_row import per_target, register_cuda_bodies

__all__ = ["load_word", "load_tail", "register_cuda_overloads"]

_U0 = np.uint64(0)
_U8 = np.uint64(8)
_U64 = np.uint64(64)
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


# --------------------------------------------------------------------------- CPU (njit)
def _wide(chars) -> bool:
    return (isinstance(chars, types.Array) and chars.ndim == 1 and chars.layout == "C"
            and chars.dtype == types.uint8)


@intrinsic
def _load_u64_unaligned(typingctx, chars, p):
    """The uint64 at ``&chars[p]`` (no alignment, no bounds check)."""
    if not _wide(chars):
        return None
    sig = types.uint64(chars, types.intp)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, signature.args[0], ary, [args[1]],
                                       wraparound=False)
        return builder.load(builder.bitcast(ptr, ir.IntType(64).as_pointer()), align=1)

    return sig, codegen


def _bytes_le(chars, p, end):
    w = _U0
    for k in range(end - p):
        w |= np.uint64(chars[p + k]) << np.uint64(8 * k)
    return w


def _word_cpu(chars, p):
    """CPU only (never called by a CUDA kernel, so it may carry an inline CPU overload)."""


def _tail_cpu(chars, p, end):
    """CPU only, like :func:`_word_cpu`."""


@overload(_word_cpu, target="cpu", inline="always")
def _ov_word_cpu(chars, p):
    if _wide(chars):
        return lambda chars, p: _load_u64_unaligned(chars, p)
    return lambda chars, p: _bytes_le(chars, p, p + 8)


@overload(_tail_cpu, target="cpu", inline="always")
def _ov_tail_cpu(chars, p, end):
    if not _wide(chars):
        return lambda chars, p, end: _bytes_le(chars, p, end)

    def impl(chars, p, end):
        if p + 8 <= chars.shape[0]:
            # one load, the bytes past ``end`` masked off (they are inside the array)
            return _load_u64_unaligned(chars, p) & (_ONES >> (_U64 - _U8 * np.uint64(end - p)))
        return _bytes_le(chars, p, end)

    return impl


_bytes_le = register_jitable(inline="always")(_bytes_le)


def _load_word_cpu(chars, p):
    return _word_cpu(chars, p)


def _load_tail_cpu(chars, p, end):
    return _tail_cpu(chars, p, end)


# --------------------------------------------------------------------------- the names
@per_target(_load_word_cpu)
def load_word(chars, p):
    """The 8 bytes ``chars[p:p + 8]`` as a little-endian uint64."""
    w = _U0
    for k in range(8):
        w |= np.uint64(chars[p + k]) << np.uint64(8 * k)
    return w


@per_target(_load_tail_cpu)
def load_tail(chars, p, end):
    """The ``end - p`` (1 to 7) bytes ``chars[p:end]``, zero-padded, as a little-endian uint64."""
    w = _U0
    for k in range(end - p):
        w |= np.uint64(chars[p + k]) << np.uint64(8 * k)
    return w


# --------------------------------------------------------------------------- CUDA
def register_cuda_overloads() -> None:
    """Teach the CUDA target the two names: the byte loops above (idempotent; imports
    ``numba.cuda``)."""
    register_cuda_bodies(load_word, load_tail)
