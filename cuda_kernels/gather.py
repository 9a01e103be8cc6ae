"""Gather (take) kernels: rows of one column by a 64-bit index array, ``-1`` giving a null row.

CPU kernels are threaded ``@njit`` kernels over blocks of output rows; CUDA kernels (built lazily by
:func:`cuda_kernels`) run one output row (or one output bitmap byte) per thread. Fixed-width
values are moved as unsigned words of their width (the launcher passes ``uint8/16/32/64`` views),
so one compiled kernel serves every type of a width. Bitmaps are Arrow LSB-first; a kernel that
writes a bitmap handles whole output bytes, so threads never share a byte.
"""
from __future__ import annotations

import functools

import numpy as np
from numba.extending import register_jitable

from .cpu_intrinsics import address, claim, claim_one, copy_bytes, copy_short, prefetch, row_block
from .hashing import bit_is_set
from .jit_cache import njit
from .kernel_set import KernelSet


@register_jitable
def gathered_bit(bits, bit_off, has_bits, idx, i):
    """Output bit of row ``i``: 0 for index -1, else the source bit (1 when ``not has_bits``)."""
    j = idx[i]
    if j < 0:
        return 0
    if not has_bits:
        return 1
    return bit_is_set(bits, bit_off + j)


@register_jitable
def gathered_byte(bits, bit_off, has_bits, idx, b, m):
    """Output bitmap byte ``b`` (rows ``8b .. 8b+7`` below ``m``) and its number of set bits."""
    byte = 0
    count = 0
    base = b * 8
    for k in range(8):
        i = base + k
        if i < m:
            bit = gathered_bit(bits, bit_off, has_bits, idx, i)
            byte |= bit << k
            count += bit
    return byte, count


@register_jitable
def coalesced_bit(lbits, loff, lhas, lidx, rbits, roff, rhas, ridx, i):
    """Bit of output row ``i`` of a coalesced column: the left row's bit where ``lidx[i] >= 0``,
    else the right row's (0 where neither side is present)."""
    if lidx[i] >= 0:
        return gathered_bit(lbits, loff, lhas, lidx, i)
    return gathered_bit(rbits, roff, rhas, ridx, i)


@register_jitable
def coalesced_span(loffs, lidx, roffs, ridx, vbits, has_v, i):
    """Output row ``i`` of a coalesced string column: ``(side, start, length)``, the left row's
    byte span where ``lidx[i] >= 0`` (side 0), else the right row's (side 1); empty where the
    output row is null (bit ``i`` of ``vbits`` clear, when ``has_v``) or neither side is present."""
    if has_v and bit_is_set(vbits, i) == 0:
        return 0, np.int64(0), np.int64(0)
    j = lidx[i]
    if j >= 0:
        s = np.int64(loffs[j])
        return 0, s, np.int64(loffs[j + 1]) - s
    j = ridx[i]
    if j >= 0:
        s = np.int64(roffs[j])
        return 1, s, np.int64(roffs[j + 1]) - s
    return 0, np.int64(0), np.int64(0)


# numba.cuda, bound by the first cuda_kernels() call: a module global, because the simulator
# runs kernels by swapping the numba.cuda module in their globals.
cuda = None

# --------------------------------------------------------------------------- CPU kernels
@njit(cache=True, nogil=True)
def check_indices(idx, n, nchunks, bad, missing, cursor):
    """``bad[c]``: the first position of chunk ``c`` of ``idx`` whose index is outside ``[-1, n)``
    (``len(idx)`` when none), ``missing[c]``: its ``-1`` entries, for the chunks it claims
    through ``cursor``: a threaded kernel (``gpuframe.backends.cpu._target.run_threads``; as a
    ``prange`` loop with two reductions it compiled 0.4 s longer)."""
    m = idx.shape[0]
    step = (m + nchunks - 1) // nchunks
    mine = np.zeros(2, np.int64)
    c = claim(cursor, mine)
    while c < nchunks:
        b = m
        k = 0
        for i in range(c * step, min(m, (c + 1) * step)):
            j = idx[i]
            if j == -1:
                k += 1
            elif j < -1 or j >= n:
                b = min(b, i)
        bad[c] = b
        missing[c] = k
        c = claim(cursor, mine)


# Threaded kernels (``gpuframe.backends.cpu._target.run_rows``: blocks of rows claimed through
# ``cursor``, the last argument; the counts they return are each thread's, the caller adds them
# up). As numba ``prange`` loops they compiled 1-2 s longer a signature.
_NO_NRT = dict(cache=True, nogil=True, _nrt=False)    # kernels that allocate nothing (see cpu_intrinsics.claim_one)
@njit(**_NO_NRT)
def gather_fixed(values, idx, out, ahead, cursor):
    """``out[i] = values[idx[i]]`` (0 for -1); returns the number of -1 entries. ``ahead`` > 0:
    the value ``ahead`` rows on is prefetched (for sources larger than the cache)."""
    missing = 0
    n = idx.shape[0]
    va = address(values)
    size = np.int64(values.itemsize)
    lo, hi = row_block(cursor, n)
    while lo < n:
        for i in range(lo, hi):
            if ahead > 0 and i + ahead < n:
                jn = idx[i + ahead]
                if jn >= 0:
                    prefetch(va + size * jn)
            j = idx[i]
            if j < 0:
                out[i] = 0
                missing += 1
            else:
                out[i] = values[j]
        lo, hi = row_block(cursor, n)
    return missing


@njit(**_NO_NRT)
def gather_bits(bits, bit_off, has_bits, idx, out, cursor):
    """Gather a bitmap (validity or bool data) into ``out`` (``ceil(m / 8)`` bytes, ``run_rows``
    over them); returns the number of set bits. Without ``has_bits`` every source bit counts as 1
    (validity of a column without nulls), so only -1 rows come out 0."""
    m = idx.shape[0]
    nb = out.shape[0]
    total = 0
    lo, hi = row_block(cursor, nb)
    while lo < nb:
        for b in range(lo, hi):
            byte, count = gathered_byte(bits, bit_off, has_bits, idx, b, m)
            out[b] = byte
            total += count
        lo, hi = row_block(cursor, nb)
    return total


@njit(**_NO_NRT)
def string_lengths(offsets, idx, out_offsets, starts, cursor):
    """``out_offsets[i + 1] = len(string idx[i])`` (0 for -1), ``out_offsets[0] = 0`` and
    ``starts[i]`` = where that string starts (so the copy does not read the offsets at random
    again); returns the total number of bytes and the number of -1 indices (so that a gather
    with none, of a column without nulls, makes no validity)."""
    total = 0
    missing = 0
    out_offsets[0] = 0
    n = idx.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        for i in range(lo, hi):
            j = idx[i]
            if j < 0:
                ln = 0
                starts[i] = 0
                missing += 1
            else:
                s0 = np.int64(offsets[j])
                ln = np.int64(offsets[j + 1]) - s0
                starts[i] = s0
            out_offsets[i + 1] = ln
            total += ln
        lo, hi = row_block(cursor, n)
    return total, missing


@njit(**_NO_NRT)
def string_chars(starts, chars, out_offsets, out_chars, ahead, cursor):
    """Copy string ``i`` (``starts[i]``, length from ``out_offsets``) to
    ``out_chars[out_offsets[i]:out_offsets[i + 1]]``; ``ahead`` > 0: the string ``ahead`` rows
    on is prefetched (for sources larger than the cache: the sorted output of 10M strings,
    77 -> 61 ms; in a cache-sized source the prefetches cost 18%)."""
    src = address(chars)
    out = address(out_chars)
    n = starts.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        for i in range(lo, hi):
            if ahead > 0 and i + ahead < n:
                prefetch(src + starts[i + ahead])
            dst = np.int64(out_offsets[i])
            copy_short(out + dst, src + starts[i], np.int64(out_offsets[i + 1]) - dst)
        lo, hi = row_block(cursor, n)


@njit(**_NO_NRT)
def copy_blocks(src, dst, nbytes, cursor):
    """Copy ``nbytes[k]`` bytes from address ``src[k]`` to address ``dst[k]`` for every ``k`` it
    claims (``run_threads`` over the blocks; ranges must not overlap): a concatenation's copy,
    whose first touches of fresh output pages then fault on every thread."""
    k = claim_one(cursor)
    while k < src.shape[0]:
        copy_bytes(dst[k], src[k], nbytes[k])
        k = claim_one(cursor)


@njit(cache=True)
def inclusive_scan_inplace(a):
    """``a[i] += a[i - 1]`` for ``i >= 1`` (string offsets from lengths, without a temporary)."""
    for i in range(1, a.shape[0]):
        a[i] += a[i - 1]


# --------------------------------------------------------------------------- CUDA kernels
@functools.lru_cache(maxsize=None)
def cuda_kernels() -> KernelSet:
    """The CUDA gather kernels (built on first use; numba caches each signature's compile).

    Counters (``missing``, ``count``, ``bad``) are one-element device arrays updated with atomics.
    """
    global cuda
    from numba import cuda

    @cuda.jit
    def check(idx, n, bad, missing):
        i = cuda.grid(1)
        if i < idx.shape[0]:
            j = idx[i]
            if j == -1:
                cuda.atomic.add(missing, 0, 1)
            elif j < -1 or j >= n:
                cuda.atomic.min(bad, 0, i)

    @cuda.jit
    def fixed(values, idx, out, missing):
        i = cuda.grid(1)
        if i < idx.shape[0]:
            j = idx[i]
            if j < 0:
                out[i] = 0
                cuda.atomic.add(missing, 0, 1)
            else:
                out[i] = values[j]

    @cuda.jit
    def bits(src, bit_off, has_bits, idx, out, count):
        b = cuda.grid(1)
        if b < out.shape[0]:
            byte, c = gathered_byte(src, bit_off, has_bits, idx, b, idx.shape[0])
            out[b] = byte
            if c:
                cuda.atomic.add(count, 0, c)

    @cuda.jit
    def lengths(offsets, idx, out_lengths):
        i = cuda.grid(1)
        if i < idx.shape[0]:
            j = idx[i]
            if j < 0:
                out_lengths[i] = 0
            else:
                out_lengths[i] = np.int64(offsets[j + 1]) - np.int64(offsets[j])

    @cuda.jit
    def cast_copy(src, out):
        i = cuda.grid(1)
        if i < out.shape[0]:
            out[i] = src[i]

    @cuda.jit
    def chars(offsets, src_chars, idx, out_offsets, out_chars):
        i = cuda.grid(1)
        if i < idx.shape[0]:
            j = idx[i]
            if j >= 0:
                src = np.int64(offsets[j])
                dst = np.int64(out_offsets[i])
                ln = np.int64(out_offsets[i + 1]) - dst
                for k in range(ln):
                    out_chars[dst + k] = src_chars[src + k]

    @cuda.jit
    def unpack_bits(src, bit_off, out):
        # one uint8 (0/1) per row from an LSB-first bitmap starting at bit ``bit_off``
        i = cuda.grid(1)
        if i < out.shape[0]:
            out[i] = bit_is_set(src, bit_off + i)

    @cuda.jit
    def coalesce_bits(lbits, loff, lhas, lidx, rbits, roff, rhas, ridx, out, count):
        # output bitmap byte b of a coalesced column (see coalesced_bit) and its set bits
        b = cuda.grid(1)
        m = lidx.shape[0]
        if b < out.shape[0]:
            byte = 0
            c = 0
            for k in range(8):
                i = b * 8 + k
                if i < m:
                    bit = coalesced_bit(lbits, loff, lhas, lidx, rbits, roff, rhas, ridx, i)
                    byte |= bit << k
                    c += bit
            out[b] = byte
            if c:
                cuda.atomic.add(count, 0, c)

    @cuda.jit
    def coalesce_lengths(loffs, lidx, roffs, ridx, vbits, has_v, out_lengths):
        i = cuda.grid(1)
        if i < lidx.shape[0]:
            _side, _start, ln = coalesced_span(loffs, lidx, roffs, ridx, vbits, has_v, i)
            out_lengths[i] = ln

    @cuda.jit
    def coalesce_chars(loffs, lchars, lidx, roffs, rchars, ridx, vbits, has_v, out_offsets, out_chars):
        i = cuda.grid(1)
        if i < lidx.shape[0]:
            side, start, ln = coalesced_span(loffs, lidx, roffs, ridx, vbits, has_v, i)
            dst = np.int64(out_offsets[i])
            if side == 0:
                for k in range(ln):
                    out_chars[dst + k] = lchars[start + k]
            else:
                for k in range(ln):
                    out_chars[dst + k] = rchars[start + k]

    return KernelSet(check=check, fixed=fixed, bits=bits, lengths=lengths, cast_copy=cast_copy,
                     chars=chars, unpack_bits=unpack_bits, coalesce_bits=coalesce_bits,
                     coalesce_lengths=coalesce_lengths, coalesce_chars=coalesce_chars)
