"""CPU drivers of the hash join: radix partitioning and per-partition hash tables (``njit``).

Both sides are scattered into ``2**pbits`` partitions by the LOW bits of the join hash (plus
one last partition for rows that can never match: null keys, or values outside the other
side's type), so each partition's build table stays in the core's cache. Every partition is
handled by one thread (``prange``) with the per-row functions of :mod:`gpuframe.kernels.join`:

1. :func:`count_partitions` builds the partition's table, probes it, counts the output rows
   and records, for every probe row, the first build row of its match chain (``match[i]``, a
   global build position or ``-1``); chains stay in the global ``nxt`` array;
2. the caller takes a prefix sum of the counts (every partition's exact output offset) and
   allocates the output;
3. :func:`write_partitions` walks ``match``/``nxt`` and writes the output rows with
   non-temporal stores (no hashing, no table, no read-for-ownership of the output).

A side after :func:`scatter` is ``keys`` (uint64, partition order) plus ``pay`` (int64
``[m, n]``): the payload words carried along (widened fixed-width values, validity bytes, the
original row index), so the write pass reads them sequentially instead of gathering.

Output rows come in partition order; within a partition, probe rows in input order, each
followed by its build matches in build input order, then (for outer sides) the partition's
unmatched build rows; the rows that can never match come last.

Large arrays are allocated by the caller (numpy) and passed in; scratch tables are allocated
once per thread. Every kernel is ``cache=True`` and its argument types are fixed (uint64 keys,
int64 payload words), so each kernel compiles once per machine.
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .join import EMPTY, canon_word, ht_find, ht_insert, orig_row, row_hash, table_bits, word_hash

_OPTS = dict(cache=True, nogil=True, error_model="numpy")


@intrinsic
def store_nt(typingctx, arr, idx, val):
    """``arr[idx] = val`` with a non-temporal store: the line bypasses the caches, which
    roughly triples the speed of streaming large outputs on this kind of machine."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1):
        return None
    sig = types.void(arr, types.intp, arr.dtype)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        inst = builder.store(args[2], ptr)
        inst.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return sig, codegen


# --------------------------------------------------------------------------- partitioning
@njit(inline="always")
def _pid(keys, valid, kmode, pmask, npart, i):
    if valid.shape[0] != 0 and valid[i] == 0:
        return npart - 1
    return np.int64(word_hash(canon_word(keys[i], kmode)) & pmask)


@njit(parallel=True, **_OPTS)
def part_hist(keys, valid, kmode, pmask, nchunks):
    """Rows per (chunk, partition); partition ``pmask + 1`` holds the rows that never match
    (``valid[i] == 0``; an empty ``valid`` means every row may match)."""
    n = keys.shape[0]
    npart = np.int64(pmask) + 2
    hist = np.zeros((nchunks, npart), dtype=np.int64)
    step = (n + nchunks - 1) // nchunks
    for c in prange(nchunks):
        h = hist[c]
        for i in range(c * step, min(n, (c + 1) * step)):
            h[_pid(keys, valid, kmode, pmask, npart, i)] += 1
    return hist


@njit(**_OPTS)
def chunk_cursors(hist):
    """Start of every (chunk, partition) in partition-major order, and the ``npart + 1``
    partition starts."""
    nchunks, npart = hist.shape
    cur = np.empty((nchunks, npart), dtype=np.int64)
    starts = np.empty(npart + 1, dtype=np.int64)
    acc = np.int64(0)
    for p in range(npart):
        starts[p] = acc
        for c in range(nchunks):
            cur[c, p] = acc
            acc += hist[c, p]
    starts[npart] = acc
    return cur, starts


@njit(parallel=True, **_OPTS)
def scatter(keys, valid, kmode, pmask, cursors, write_keys, dst_keys,
            iota_row, c0, c1, c2, c3, ncols, first_row, dst):
    """Scatter rows into partition order (stable): ``dst_keys[pos] = keys[i]`` (when
    ``write_keys``), ``dst[iota_row, pos] = i`` (when ``iota_row >= 0``) and
    ``dst[first_row + k, pos] = ck[i]`` for the ``ncols`` (<= 4) int64 columns ``c0..c3``."""
    n = keys.shape[0]
    nchunks, npart = cursors.shape
    step = (n + nchunks - 1) // nchunks
    for c in prange(nchunks):
        cur = cursors[c].copy()
        for i in range(c * step, min(n, (c + 1) * step)):
            p = _pid(keys, valid, kmode, pmask, npart, i)
            pos = cur[p]
            cur[p] = pos + 1
            if write_keys:
                dst_keys[pos] = keys[i]
            if iota_row >= 0:
                dst[iota_row, pos] = i
            if ncols > 0:
                dst[first_row, pos] = c0[i]
                if ncols > 1:
                    dst[first_row + 1, pos] = c1[i]
                    if ncols > 2:
                        dst[first_row + 2, pos] = c2[i]
                        if ncols > 3:
                            dst[first_row + 3, pos] = c3[i]


@njit(parallel=True, **_OPTS)
def general_row_hash(words, st, en, chars, out):
    """``out[i]`` = the 64-bit row hash of a general (multi-column / string) key."""
    for i in prange(out.shape[0]):
        out[i] = row_hash(words, st, en, chars, i)


# --------------------------------------------------------------------------- per partition
@njit(**_OPTS)
def _build(table, nxt, bkeys, b0, nb, kmode, verify, borig, vb_w, vb_st, vb_en, vb_ch, pshift):
    """Build partition ``[b0, b0 + nb)`` into ``table``; ``nxt`` is the partition's slice of the
    chain array (local ids). Returns the slot mask."""
    tb = table_bits(nb)
    tmask = np.uint64((np.int64(1) << tb) - 1)
    for s in range(np.int64(1) << tb):
        table[s] = EMPTY
    for j in range(nb):
        nxt[j] = EMPTY
    # insert in reverse so that every chain lists its rows in input order
    for j in range(nb - 1, -1, -1):
        ht_insert(table, nxt, tmask, pshift, bkeys, b0, j, kmode, verify, borig,
                  vb_w, vb_st, vb_en, vb_ch, False)
    return tmask


@njit(parallel=True, **_OPTS)
def count_partitions(pkeys, pstarts, bkeys, bstarts, nparts, kmode, pshift, verify,
                     porig, borig, vp_w, vp_st, vp_en, vp_ch, vb_w, vb_st, vb_en, vb_ch,
                     emit_unmatched_probe, emit_unmatched_build, bmatched, nxt, match,
                     table):
    """Output rows of every partition (``nparts`` real ones, then the never-matching one).

    ``table`` is per-thread scratch ``[threads, size]``; ``nxt`` (int64, one per build
    position) receives the chains; ``match`` (int64, one per probe position, may be the
    memory of ``pkeys`` itself: each key is read before its slot is written; empty to skip)
    receives the global build position heading each probe row's matches, or ``-1``.
    ``bmatched`` (uint8 per build position) is set when ``emit_unmatched_build``.
    """
    counts = np.zeros(nparts + 1, dtype=np.int64)
    store = match.shape[0] != 0
    for p in prange(nparts):
        tab = table[numba.get_thread_id()]
        b0 = bstarts[p]
        nb = bstarts[p + 1] - b0
        p0 = pstarts[p]
        p1 = pstarts[p + 1]
        c = np.int64(0)
        if nb == 0:
            if emit_unmatched_probe:
                c = p1 - p0
            if store:
                for i in range(p0, p1):
                    match[i] = -1
            counts[p] = c
            continue
        nx = nxt[b0:b0 + nb]
        tmask = _build(tab, nx, bkeys, b0, nb, kmode, verify, borig,
                       vb_w, vb_st, vb_en, vb_ch, pshift)
        for i in range(p0, p1):
            w = canon_word(pkeys[i], kmode)
            t = ht_find(tab, tmask, pshift, bkeys, b0, w, kmode, verify, borig,
                        vb_w, vb_st, vb_en, vb_ch, vp_w, vp_st, vp_en, vp_ch, orig_row(porig, i))
            if store:
                match[i] = -1 if t == EMPTY else b0 + t
            if t == EMPTY:
                if emit_unmatched_probe:
                    c += 1
                continue
            while t != EMPTY:
                c += 1
                if emit_unmatched_build:
                    bmatched[b0 + t] = 1
                t = nx[t]
        if emit_unmatched_build:
            for j in range(b0, b0 + nb):
                if bmatched[j] == 0:
                    c += 1
        counts[p] = c
    # the never-matching partition
    c = np.int64(0)
    if emit_unmatched_probe:
        c += pstarts[nparts + 1] - pstarts[nparts]
    if emit_unmatched_build:
        c += bstarts[nparts + 1] - bstarts[nparts]
    counts[nparts] = c
    if store:
        for i in range(pstarts[nparts], pstarts[nparts + 1]):
            match[i] = -1
    return counts


# output-row source codes (see write_partitions)
SRC_NONE = -1
SRC_BUILD_KEY = -2
SRC_MATCH_KEY = -3
SRC_ONE = -4


@njit(inline="always")
def _emit(out, total, o, src_p, src_b, fill, ppay, i, bkeys, bpay, j):
    # one output row: probe position i (or -1), global build position j (or -1)
    for r in range(src_p.shape[0]):
        sp = src_p[r]
        sb = src_b[r]
        if i >= 0 and sp >= 0:
            v = ppay[sp, i]
        elif i >= 0 and sp == SRC_MATCH_KEY:
            v = np.int64(bkeys[j])
        elif i >= 0 and sp == SRC_ONE:
            v = np.int64(1)
        elif j >= 0 and sb >= 0:
            v = bpay[sb, j]
        elif j >= 0 and sb == SRC_BUILD_KEY:
            v = np.int64(bkeys[j])
        elif j >= 0 and sb == SRC_ONE:
            v = np.int64(1)
        else:
            v = fill[r]
        store_nt(out, r * total + o, v)


@njit(parallel=True, **_OPTS)
def write_partitions(ppay, pstarts, bkeys, bpay, bstarts, nparts, nxt, match,
                     emit_unmatched_probe, emit_unmatched_build, bmatched, offsets,
                     src_p, src_b, fill, out, total):
    """Write every partition's rows at ``offsets[p]`` (after :func:`count_partitions`).

    ``out`` is the flat int64 view of an ``[R, total]`` array. Output row ``r`` of a row with
    a probe side takes ``src_p[r]``: ``k >= 0`` probe payload row ``k``, ``SRC_MATCH_KEY`` the
    key word of the matching build row (equal to the probe's), ``SRC_ONE`` 1; otherwise, or
    with ``SRC_NONE``, a row with a build side takes ``src_b[r]`` (``k >= 0``,
    ``SRC_BUILD_KEY`` or ``SRC_ONE``); else ``fill[r]``.
    """
    for p in prange(nparts + 1):
        b0 = bstarts[p]
        b1 = bstarts[p + 1]
        o = offsets[p]
        for i in range(pstarts[p], pstarts[p + 1]):
            t = match[i]
            if t < 0:
                if emit_unmatched_probe:
                    _emit(out, total, o, src_p, src_b, fill, ppay, i, bkeys, bpay, -1)
                    o += 1
                continue
            while t >= 0:
                _emit(out, total, o, src_p, src_b, fill, ppay, i, bkeys, bpay, t)
                o += 1
                t = nxt[t]
                if t >= 0:
                    t += b0
        if emit_unmatched_build:
            for j in range(b0, b1):
                if p == nparts or bmatched[j] == 0:
                    _emit(out, total, o, src_p, src_b, fill, ppay, -1, bkeys, bpay, j)
                    o += 1


@njit(parallel=True, **_OPTS)
def mark_partitions(pkeys, pstarts, bkeys, bstarts, nparts, kmode, pshift, verify,
                    porig, borig, vp_w, vp_st, vp_en, vp_ch, vb_w, vb_st, vb_en, vb_ch,
                    pmatched, bmatched, nxt, table):
    """Semi/anti joins: ``pmatched[pos] = 1`` for probe positions with a match and
    ``bmatched[pos] = 1`` for matched build positions (either array may be empty)."""
    for p in prange(nparts):
        tab = table[numba.get_thread_id()]
        b0 = bstarts[p]
        nb = bstarts[p + 1] - b0
        if nb == 0:
            continue
        nx = nxt[b0:b0 + nb]
        tmask = _build(tab, nx, bkeys, b0, nb, kmode, verify, borig,
                       vb_w, vb_st, vb_en, vb_ch, pshift)
        for i in range(pstarts[p], pstarts[p + 1]):
            w = canon_word(pkeys[i], kmode)
            t = ht_find(tab, tmask, pshift, bkeys, b0, w, kmode, verify, borig,
                        vb_w, vb_st, vb_en, vb_ch, vp_w, vp_st, vp_en, vp_ch, orig_row(porig, i))
            if t == EMPTY:
                continue
            if pmatched.shape[0] != 0:
                pmatched[i] = 1
            if bmatched.shape[0] != 0:
                while t != EMPTY:
                    bmatched[b0 + t] = 1
                    t = nx[t]


@njit(parallel=True, **_OPTS)
def flags_to_rows(flags, orig, out):
    """``out[orig[pos]] = flags[pos]``: partition-order flags back to input order."""
    for pos in prange(flags.shape[0]):
        out[orig[pos]] = flags[pos]


@njit(parallel=True, **_OPTS)
def span_lengths(ast, aen, ia, bst, ben, ib, out_len):
    """Byte length of every output string: side A's row ``ia[o]`` when ``ia[o] >= 0``, else
    side B's row ``ib[o]`` (``-1`` on both: a null, length 0)."""
    for o in prange(ia.shape[0]):
        if ia[o] >= 0:
            out_len[o] = aen[ia[o]] - ast[ia[o]]
        elif ib[o] >= 0:
            out_len[o] = ben[ib[o]] - bst[ib[o]]
        else:
            out_len[o] = 0


@njit(parallel=True, **_OPTS)
def span_copy(ast, ach, ia, bst, bch, ib, out_off, out_chars):
    """Copy every output string's bytes to ``out_chars[out_off[o]:out_off[o + 1]]``."""
    for o in prange(ia.shape[0]):
        d = out_off[o]
        n = out_off[o + 1] - d
        if ia[o] >= 0:
            s = ast[ia[o]]
            for k in range(n):
                out_chars[d + k] = ach[s + k]
        elif ib[o] >= 0:
            s = bst[ib[o]]
            for k in range(n):
                out_chars[d + k] = bch[s + k]
