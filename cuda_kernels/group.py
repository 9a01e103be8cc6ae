"""Grouping, per row and on CUDA: the order of values that groupby's ``min``/``max`` use, and the
CUDA kernels of group ids, ``unique(keep="last")``, filter masks and the aggregations.

Per-row functions (one definition, both targets; the CPU drivers in
:mod:`gpuframe.kernels.group_cpu` call their CPU copies): :func:`value_less` (numbers, NaN above
every number) and :func:`span_cmp` (strings, bytewise).

CUDA: rows are grouped by the join's slot table (:mod:`gpuframe.kernels.slot_table`, with
``nulls_equal`` keys): every build row gets its key's representative, :func:`cuda_kernels`'s
``rep_min`` takes the smallest row of every representative's rows with an atomic minimum (the
group's first row), a scan of the first-row flags numbers the groups in the order of their first
rows, as on the CPU. Aggregations run one thread per row with atomics on the group's slot: sums
and counts with ``atomic.add``, the row of a minimum or maximum with a compare-and-swap loop
(ties go to the first row, so the result does not depend on the threads' order). Float sums
are added in the threads' order: they may differ from the CPU's in the last bits.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .kernel_set import KernelSet
from .per_row import per_row


@per_row
def value_less(a, b):
    """``a < b``, NaN above every number and equal to NaN (integers: plain ``<``)."""
    if a != a:
        return False
    if b != b:
        return True
    return a < b


@per_row
def span_cmp(offs, chars, i, j):
    """-1, 0 or 1: string row ``i`` against row ``j`` of one column (bytewise, shorter first)."""
    a0 = np.int64(offs[i])
    la = np.int64(offs[i + 1]) - a0
    b0 = np.int64(offs[j])
    lb = np.int64(offs[j + 1]) - b0
    m = la if la < lb else lb
    for k in range(m):
        x = chars[a0 + k]
        y = chars[b0 + k]
        if x != y:
            return -1 if x < y else 1
    if la == lb:
        return 0
    return -1 if la < lb else 1


# numba.cuda, bound by the first cuda_kernels() call (the simulator swaps it in the globals)
cuda = None


@functools.lru_cache(maxsize=None)
def cuda_kernels() -> KernelSet:
    """Build (once) the CUDA grouping kernels."""
    global cuda
    from numba import cuda

    @cuda.jit
    def rep_min(brep, rmin):
        # rmin[r] = the smallest row whose representative is r
        j = cuda.grid(1)
        if j < brep.shape[0]:
            cuda.atomic.min(rmin, brep[j], j)

    @cuda.jit
    def first_flags(brep, rmin, flags):
        j = cuda.grid(1)
        if j < brep.shape[0]:
            flags[j] = 1 if rmin[brep[j]] == j else 0

    @cuda.jit
    def dense_ids(brep, rmin, offs, gid, first):
        # group of row j: the number of first rows before its group's first row
        j = cuda.grid(1)
        if j < brep.shape[0]:
            f = rmin[brep[j]]
            g = offs[f]
            gid[j] = g
            if f == j:
                first[g] = j

    @cuda.jit
    def group_max_row(gid, last):
        j = cuda.grid(1)
        if j < gid.shape[0]:
            cuda.atomic.max(last, gid[j], j)

    @cuda.jit
    def last_flags(gid, last, flags):
        j = cuda.grid(1)
        if j < gid.shape[0]:
            flags[j] = 1 if last[gid[j]] == j else 0

    @cuda.jit
    def mask_flags(bits, valid, has_valid, flags):
        # a bool mask's rows: 1 where true and not null
        j = cuda.grid(1)
        if j < flags.shape[0]:
            flags[j] = 1 if bits[j] != 0 and (not has_valid or valid[j] != 0) else 0

    @cuda.jit
    def count_rows(gid, valid, has_valid, out):
        j = cuda.grid(1)
        if j < gid.shape[0] and (not has_valid or valid[j] != 0):
            cuda.atomic.add(out, gid[j], 1)

    @cuda.jit
    def sum_int(gid, vals, valid, has_valid, out, fsum, cnt):
        # int64 sums (wrapping), their float64 shadow (to tell an overflow) and the counts
        j = cuda.grid(1)
        if j < gid.shape[0] and (not has_valid or valid[j] != 0):
            g = gid[j]
            v = vals[j]
            cuda.atomic.add(out, g, v)
            cuda.atomic.add(fsum, g, np.float64(v))
            cuda.atomic.add(cnt, g, 1)

    @cuda.jit
    def sum_float(gid, vals, valid, has_valid, out, cnt):
        j = cuda.grid(1)
        if j < gid.shape[0] and (not has_valid or valid[j] != 0):
            g = gid[j]
            cuda.atomic.add(out, g, vals[j])
            cuda.atomic.add(cnt, g, 1)

    @cuda.jit
    def sq_dev(gid, vals, valid, has_valid, mean, out):
        j = cuda.grid(1)
        if j < gid.shape[0] and (not has_valid or valid[j] != 0):
            g = gid[j]
            d = vals[j] - mean[g]
            cuda.atomic.add(out, g, d * d)

    @cuda.jit
    def arg_best(gid, vals, valid, has_valid, want_max, best):
        # the row of each group's minimum / maximum (ties: the first row), by compare-and-swap
        j = cuda.grid(1)
        if j < gid.shape[0] and (not has_valid or valid[j] != 0):
            g = gid[j]
            v = vals[j]
            cur = best[g]
            while True:
                if cur >= 0:
                    c = vals[cur]
                    beats = value_less(c, v) if want_max else value_less(v, c)
                    if not beats and (value_less(v, c) or value_less(c, v) or cur < j):
                        return
                seen = cuda.atomic.cas(best, g, cur, j)
                if seen == cur:
                    return
                cur = seen

    @cuda.jit
    def arg_best_string(gid, offs, chars, valid, has_valid, want_max, best):
        j = cuda.grid(1)
        if j < gid.shape[0] and (not has_valid or valid[j] != 0):
            g = gid[j]
            cur = best[g]
            while True:
                if cur >= 0:
                    c = span_cmp(offs, chars, j, cur)
                    if want_max:
                        c = -c
                    if c > 0 or (c == 0 and cur < j):
                        return
                seen = cuda.atomic.cas(best, g, cur, j)
                if seen == cur:
                    return
                cur = seen

    @cuda.jit
    def first_last(gid, valid, has_valid, want_last, best):
        # the first / last non-null row of each group (best starts at n / -1)
        j = cuda.grid(1)
        if j < gid.shape[0] and (not has_valid or valid[j] != 0):
            if want_last:
                cuda.atomic.max(best, gid[j], j)
            else:
                cuda.atomic.min(best, gid[j], j)

    @cuda.jit
    def median_sorted(gstart, cnt, order, vals, out, has):
        # one thread per group: its cnt[g] non-null values are vals[order[gstart[g]:gstart[g] + cnt[g]]],
        # sorted (rows sorted by group, then value with the nulls last)
        g = cuda.grid(1)
        if g < out.shape[0]:
            a = gstart[g]
            k = cnt[g]
            if k == 0:
                has[g] = 0
                out[g] = np.nan
            else:
                has[g] = 1
                if k % 2 == 1:
                    out[g] = vals[order[a + k // 2]]
                else:
                    out[g] = (vals[order[a + k // 2 - 1]] + vals[order[a + k // 2]]) / 2.0

    @cuda.jit
    def iota(out):
        j = cuda.grid(1)
        if j < out.shape[0]:
            out[j] = j

    @cuda.jit
    def none_if(rows, unset):
        # a first-row search that found nothing (still ``unset``): -1
        g = cuda.grid(1)
        if g < rows.shape[0] and rows[g] == unset:
            rows[g] = -1

    @cuda.jit
    def ordered_u64(src, out):
        # uint64 values as int64 words of the same order
        j = cuda.grid(1)
        if j < out.shape[0]:
            out[j] = np.int64(src[j] ^ np.uint64(0x8000000000000000))

    @cuda.jit
    def finish_moments(kind, sums, m2, cnt, out, has):
        # kind 0: mean (sums / cnt, of cnt >= 1); 1: var, 2: std (m2 / (cnt - 1), of cnt >= 2)
        g = cuda.grid(1)
        if g < out.shape[0]:
            c = cnt[g]
            if kind == 0:
                has[g] = 1 if c >= 1 else 0
                out[g] = sums[g] / c if c >= 1 else np.nan
            else:
                has[g] = 1 if c >= 2 else 0
                v = m2[g] / (c - 1) if c >= 2 else np.nan
                out[g] = math.sqrt(v) if kind == 2 else v

    @cuda.jit
    def any_past(fsum, limit, flag):
        # flag[0] = 1 when a float shadow of an integer sum is at or past +-limit
        g = cuda.grid(1)
        if g < fsum.shape[0] and (fsum[g] >= limit or fsum[g] <= -limit):
            flag[0] = 1

    @cuda.jit
    def has_from_counts(cnt, least, has):
        g = cuda.grid(1)
        if g < cnt.shape[0]:
            has[g] = 1 if cnt[g] >= least else 0

    @cuda.jit
    def pack_flags(flags, out, count):
        # an LSB-first bitmap of uint8 flags, one output byte per thread, and its set bits
        b = cuda.grid(1)
        n = flags.shape[0]
        if b < out.shape[0]:
            byte = 0
            k = 0
            for t in range(8):
                i = b * 8 + t
                if i < n and flags[i] != 0:
                    byte |= 1 << t
                    k += 1
            out[b] = byte
            cuda.atomic.add(count, 0, k)

    @cuda.jit
    def cross_maps(nr, lidx, ridx):
        o = cuda.grid(1)
        if o < lidx.shape[0]:
            lidx[o] = o // nr
            ridx[o] = o % nr

    @cuda.jit
    def dict_rows(indices, valid, has_valid, out):
        # a dictionary column's rows of its dictionary (-1: a null index)
        j = cuda.grid(1)
        if j < out.shape[0]:
            out[j] = np.int64(indices[j]) if not has_valid or valid[j] != 0 else np.int64(-1)

    @cuda.jit
    def and_valid(valid, flags):
        j = cuda.grid(1)
        if j < flags.shape[0] and valid[j] == 0:
            flags[j] = 0

    @cuda.jit
    def any_high(src, valid, has_valid, flag):
        # flag[0] = 1 when a (non-null) uint64 value does not fit in int64
        j = cuda.grid(1)
        if j < src.shape[0] and src[j] >= np.uint64(0x8000000000000000) and (not has_valid or valid[j] != 0):
            flag[0] = 1

    return KernelSet(any_high=any_high, and_valid=and_valid, dict_rows=dict_rows, cross_maps=cross_maps, iota=iota, none_if=none_if, ordered_u64=ordered_u64, finish_moments=finish_moments,
                     any_past=any_past, has_from_counts=has_from_counts, pack_flags=pack_flags, rep_min=rep_min, first_flags=first_flags, dense_ids=dense_ids, group_max_row=group_max_row,
                     last_flags=last_flags, mask_flags=mask_flags, count_rows=count_rows, sum_int=sum_int,
                     sum_float=sum_float, sq_dev=sq_dev, arg_best=arg_best, arg_best_string=arg_best_string,
                     first_last=first_last, median_sorted=median_sorted)
