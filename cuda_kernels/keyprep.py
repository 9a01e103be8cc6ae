"""The CUDA kernels of the join's key preparation beyond what :mod:`gpuframe.kernels.join` has:
several string keys (their bytes concatenated on the device, spans offset by a base),
dictionary string keys (spans and nulls through the dictionary), a uint64 key joined with a
signed one (the range check), and the coalesced (merged) string key of a merge made from
per-row spans, so a dictionary key's is made on the device too.

The per-row functions are :mod:`gpuframe.kernels.keys`' (``string_span_at_row``,
``dict_span_row``, ``range_valid_row``, ``range_clear_row``, ``coalesced_key_span``), defined
once for both targets; the launchers are in :mod:`gpuframe.backends.cuda._target` and
:mod:`gpuframe.backends.cuda.merged_key`.
"""
from __future__ import annotations

import functools

from .kernel_set import KernelSet
from .keys import coalesced_key_span, dict_span_row, range_clear_row, range_valid_row, string_span_at_row

# numba.cuda, bound by the first cuda_kernels() call: a module global, because the simulator
# runs kernels by swapping the numba.cuda module in their globals.
cuda = None


@functools.lru_cache(maxsize=None)
def cuda_kernels() -> KernelSet:
    """Build (once) the key-preparation kernels (``numba.cuda`` is imported here, not at module
    import, so the CPU path never pays for it)."""
    global cuda
    from numba import cuda

    @cuda.jit
    def k_string_span_at(offs, base, valid, has_valid, st, en, flag, has_flag, keep, has_keep):
        i = cuda.grid(1)
        if i < st.shape[0]:
            string_span_at_row(offs, base, valid, has_valid, st, en, flag, has_flag, keep, has_keep, i)

    @cuda.jit
    def k_dict_span(idx, ivalid, has_ivalid, doffs, dvalid, has_dvalid, base, st, en, flag, has_flag, keep,
                    has_keep):
        i = cuda.grid(1)
        if i < st.shape[0]:
            dict_span_row(idx, ivalid, has_ivalid, doffs, dvalid, has_dvalid, base, st, en, flag, has_flag, keep,
                          has_keep, i)

    @cuda.jit
    def k_range_valid(words, valid, has_valid, out):
        i = cuda.grid(1)
        if i < out.shape[0]:
            range_valid_row(words, valid, has_valid, out, i)

    @cuda.jit
    def k_range_clear(words, valid, has_valid, keep):
        i = cuda.grid(1)
        if i < keep.shape[0]:
            range_clear_row(words, valid, has_valid, keep, i)

    @cuda.jit
    def k_copy_at(src, dst, base):
        # dst[base + i] = src[i]: one string key's bytes into the bytes several keys share
        i = cuda.grid(1)
        if i < src.shape[0]:
            dst[base + i] = src[i]

    @cuda.jit
    def k_coalesce_valid(lst, len_, lkeep, has_lkeep, lidx, rst, ren, rkeep, has_rkeep, ridx, out, count):
        # output validity bitmap byte b of a coalesced string key, and its set bits
        b = cuda.grid(1)
        m = lidx.shape[0]
        if b < out.shape[0]:
            byte = 0
            c = 0
            for k in range(8):
                i = b * 8 + k
                if i < m:
                    _s, _st, _ln, v = coalesced_key_span(lst, len_, lkeep, has_lkeep, lidx, rst, ren, rkeep,
                                                         has_rkeep, ridx, i)
                    byte |= v << k
                    c += v
            out[b] = byte
            if c:
                cuda.atomic.add(count, 0, c)

    @cuda.jit
    def k_coalesce_lengths(lst, len_, lkeep, has_lkeep, lidx, rst, ren, rkeep, has_rkeep, ridx, out_lengths):
        i = cuda.grid(1)
        if i < lidx.shape[0]:
            _s, _st, ln, _v = coalesced_key_span(lst, len_, lkeep, has_lkeep, lidx, rst, ren, rkeep, has_rkeep,
                                                 ridx, i)
            out_lengths[i] = ln

    @cuda.jit
    def k_coalesce_chars(lst, len_, lkeep, has_lkeep, lidx, lchars, rst, ren, rkeep, has_rkeep, ridx, rchars,
                         out_offsets, out_chars):
        i = cuda.grid(1)
        if i < lidx.shape[0]:
            side, start, ln, _v = coalesced_key_span(lst, len_, lkeep, has_lkeep, lidx, rst, ren, rkeep,
                                                     has_rkeep, ridx, i)
            dst = out_offsets[i]
            if side == 0:
                for k in range(ln):
                    out_chars[dst + k] = lchars[start + k]
            else:
                for k in range(ln):
                    out_chars[dst + k] = rchars[start + k]

    return KernelSet(string_span_at=k_string_span_at, dict_span=k_dict_span, range_valid=k_range_valid,
                     range_clear=k_range_clear, copy_at=k_copy_at, coalesce_valid=k_coalesce_valid,
                     coalesce_lengths=k_coalesce_lengths, coalesce_chars=k_coalesce_chars)
