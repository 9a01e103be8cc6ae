"""CPU drivers of the hash join (``njit``): partitioned build, probe by work items, fused output.

Build
-----
The build side is split into ``2**pbits`` partitions by the LOW bits of the join hash (plus one
last partition for rows that can never match: null keys, or values outside the other side's
type), together with its payload and, for general keys, the key words, byte spans and bytes
that verifying a match reads; :func:`build_tables` gives every partition its own
open-addressing table (a slice of one int32 array, slots hold partition-local row ids) so that
each table is built inside one core's cache. ``nxt`` links every build position to the next one
with the same key (global positions, ``-1`` ends a chain), see :mod:`gpuframe.kernels.join`.

Probe
-----
Probe rows are handed out as *work items*, ``[lo, hi)`` ranges of probe positions, so that
skew never leaves one thread with a hot partition:

* *scattered* probe: the probe side was scattered into partition order too (with the words
  and spans of a general key; its bytes stay where they are and are prefetched), and an item
  lies inside one partition (``part[item]``; the never-matching partition is ``nparts``).
  Every item probes one partition's table, in cache.
* *in-place* probe: the probe side is not moved; items are plain row ranges
  (``part[item] == -1``) and every row finds its partition from its hash. Only for build sides
  whose tables fit in the core's cache: elsewhere a lookup costs a cache miss, more than the
  scatter.

Writing
-------
With every build key distinct, :func:`probe_direct` probes and writes in one pass: item
``it`` writes from row ``ilo[it]`` on (it cannot emit more rows than it has probe rows) and
:func:`compact_items` closes the gaps that probe rows without a match leave. Otherwise
:func:`probe_count` counts every item's rows (and string bytes) and records the head of every
probe row's match chain (``match``), the caller takes the prefix sums, and
:func:`probe_write` writes each item's rows at its offset. Both write with non-temporal stores
and finish with the unmatched build rows of outer joins, partition by partition.

Per-row functions
-----------------
Key words, the join hash, row equality and the hash-table insert and find are the ones the CUDA
kernels run (:mod:`gpuframe.kernels.keys`, :mod:`gpuframe.kernels.hashtable`), compiled here for
the CPU as their inlined copies (:func:`gpuframe.kernels.per_row.cpu`); what is CPU-only is the algorithm around them (partitioning, work items, batched
lookups whose cache misses overlap, fused output) and the raw-memory intrinsics of
:mod:`gpuframe.kernels.cpu_intrinsics`.

Columns are passed as tables of addresses (int64 ``ptrs``, one int64 word per row, or bytes for
string data) so that one compiled kernel serves every number of columns. The caller keeps the
arrays alive during the call. Every kernel is ``cache=True`` and every argument type is fixed
(read-only arrays, int64 words), so each compiles once per machine.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .cpu_intrinsics import (address, copy_bytes, copy_short, load_i64, prefetch, store_i64,  # noqa: F401
                             store_i64_nt)
from . import hashtable as _ht
from . import keys as _keys
from .hashtable import EMPTY
from .keys import JOIN_SEED  # noqa: F401
from .per_row import cpu

# the per-row functions the CUDA kernels run too, as their CPU copies (inlined into the loops)
canon_word, orig_row, row_hash, word_hash = (cpu(_keys.canon_word), cpu(_keys.orig_row), cpu(_keys.row_hash),
                                             cpu(_keys.word_hash))
ht_find, ht_insert, ht_walk, slot_of = (cpu(_ht.ht_find), cpu(_ht.ht_insert), cpu(_ht.ht_walk),
                                        cpu(_ht.slot_of))
# output-row source codes (``k >= 0``: column ``k`` of that side's column table), defined in .join
from .join import SRC_KEY as SRC_BUILD_KEY, SRC_MATCH_KEY, SRC_NONE, SRC_ONE, SRC_ROW  # noqa: F401

_OPTS = dict(cache=True, nogil=True, error_model="numpy")


_E64 = np.zeros(0, np.int64)
_addr = address


# rows ahead whose key bytes the probe loop prefetches (string keys: the bytes are the only
# memory a partition-ordered probe reads out of order)
_PREFETCH_ROWS = 16


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


@njit(parallel=True, **_OPTS)
def scatter(keys, valid, kmode, pmask, cursors, keys_dst, iota_dst, src, dst):
    """Scatter rows into partition order (stable), chunk ``c`` of the rows starting at
    ``cursors[c]``: the key word to address ``keys_dst`` (0: skip), the row number to
    ``iota_dst`` (0: skip) and the int64 column at address ``src[k]`` to ``dst[k]``.

    (Plain stores: buffering a cache line per partition and streaming it out with
    non-temporal stores measured slower here.)
    """
    n = keys.shape[0]
    nchunks, npart = cursors.shape
    step = (n + nchunks - 1) // nchunks
    ncols = src.shape[0]
    for c in prange(nchunks):
        cur = cursors[c].copy()
        for i in range(c * step, min(n, (c + 1) * step)):
            p = _pid(keys, valid, kmode, pmask, npart, i)
            pos = cur[p]
            cur[p] = pos + 1
            if keys_dst != 0:
                store_i64(keys_dst, pos, np.int64(keys[i]))
            if iota_dst != 0:
                store_i64(iota_dst, pos, np.int64(i))
            for k in range(ncols):
                store_i64(dst[k], pos, load_i64(src[k], i))


@njit(parallel=True, **_OPTS)
def copy_spans(src_st, src_en, src_ch, dst_st, dst_ch):
    """Copy the bytes of span ``k`` (``src_ch[src_st[k]:src_en[k]]``) to ``dst_ch`` from
    ``dst_st[k]`` on (spans of 1-D arrays: ravel the ``[columns, rows]`` arrays)."""
    s = _addr(src_ch)
    d = _addr(dst_ch)
    for k in prange(src_st.shape[0]):
        n = src_en[k] - src_st[k]
        if n > 0:
            copy_bytes(d + dst_st[k], s + src_st[k], n)


@njit(parallel=True, **_OPTS)
def general_row_hash(words, st, en, chars, out):
    """``out[i]`` = :func:`gpuframe.kernels.keys.row_hash` of row ``i`` of a general
    (multi-column / string) key."""
    for i in prange(out.shape[0]):
        out[i] = row_hash(words, st, en, chars, i)


# --------------------------------------------------------------------------- build
@njit(parallel=True, **_OPTS)
def build_tables(bkeys, bvalid, bstarts, nparts, kmode, pshift, verify,
                 vb_w, vb_st, vb_en, vb_ch, tables, toffs, nxt):
    """Build the table of every partition ``p < nparts`` (build positions
    ``[bstarts[p], bstarts[p + 1])``) into ``tables[toffs[p]:toffs[p + 1]]`` (a power of two of
    slots, at least twice the rows) and chain equal keys through ``nxt`` (global positions,
    every chain in position order). Rows with ``bvalid[pos] == 0`` are left out.

    With ``verify`` the normalised key words ``vb_w`` and byte spans ``vb_st``/``vb_en`` (into
    ``vb_ch``) are indexed by build position, like every per-position array here. Returns the
    number of rows that joined a chain (0: every key is unique)."""
    chained = 0
    for p in prange(nparts):
        b0 = bstarts[p]
        nb = bstarts[p + 1] - b0
        t0 = toffs[p]
        size = toffs[p + 1] - t0
        for s in range(size):
            tables[t0 + s] = EMPTY
        tmask = np.uint64(size - 1)
        # insert in reverse so that every chain lists its rows in position order
        for j in range(nb - 1, -1, -1):
            pos = b0 + j
            nxt[pos] = EMPTY
            if bvalid.shape[0] != 0 and bvalid[pos] == 0:
                continue
            chained += ht_insert(tables, t0, tmask, pshift, nxt, bkeys, b0, j, kmode, verify, _E64,
                                 vb_w, vb_st, vb_en, vb_ch)
    return chained


# --------------------------------------------------------------------------- probe
@njit(inline="always")
def _item_partition(part, nparts, bstarts, toffs):
    # (b0, nb, t0, tmask) of an item's partition (nb = 0: nothing can match), for part >= 0
    if part < 0 or part >= nparts:
        return np.int64(0), np.int64(0), np.int64(0), np.uint64(0)
    b0 = bstarts[part]
    t0 = toffs[part]
    return b0, bstarts[part + 1] - b0, t0, np.uint64(toffs[part + 1] - t0 - 1)


@njit(inline="always")
def _find(i, part, pkeys, pvalid, kmode, pmask, pshift, ib0, inb, it0, itmask, bkeys, bstarts, tables,
          toffs, verify, vp_w, vp_st, vp_en, vp_ch, vb_w, vb_st, vb_en, vb_ch):
    # global build position heading probe position i's matches, or -1; an item of one partition
    # (part >= 0) passes that partition's (b0, nb, t0, tmask)
    if part < 0:
        if pvalid.shape[0] != 0 and pvalid[i] == 0:
            return np.int64(-1)
        w = canon_word(pkeys[i], kmode)
        h = word_hash(w)
        p = np.int64(h & pmask)
        b0 = bstarts[p]
        if bstarts[p + 1] == b0:
            return np.int64(-1)
        t0 = toffs[p]
        tmask = np.uint64(toffs[p + 1] - t0 - 1)
    else:
        if inb == 0:
            return np.int64(-1)
        w = canon_word(pkeys[i], kmode)
        h = word_hash(w)
        b0 = ib0
        t0 = it0
        tmask = itmask
    return ht_find(tables, t0, tmask, pshift, bkeys, b0, w, h, kmode, verify, _E64,
                   vb_w, vb_st, vb_en, vb_ch, vp_w, vp_st, vp_en, vp_ch, i)


_BATCH = 8
# empty verify arrays for lookups that never verify (in-place probes take only word keys)
_EW = np.zeros((0, 0), np.uint64)
_EI2 = np.zeros((0, 0), np.int64)
_E8 = np.zeros(0, np.uint8)


@njit(inline="always")
def _find_batch(i, hi, pkeys, kmode, pshift, b0, t0, tmask, bkeys, tables, ws, ss, gs, verify,
                vp_w, vp_st, vp_en, vp_ch, vb_w, vb_st, vb_en, vb_ch, pf, pch):
    """``gs[k]`` = the match of probe position ``i + k`` (``k < _BATCH``) in one partition's
    table: the hashes, slots and first table loads of the whole batch are independent, so their
    cache misses overlap instead of queueing behind each other. A general key (``verify``) is
    confirmed against the normalised key after its hash word matches; the key bytes of the row
    :data:`_PREFETCH_ROWS` ahead (below ``hi``) are prefetched."""
    for k in range(_BATCH):
        w = canon_word(pkeys[i + k], kmode)
        ws[k] = w
        s = slot_of(word_hash(w), pshift, tmask)
        ss[k] = s
        gs[k] = tables[t0 + s]
        if pf and i + k + _PREFETCH_ROWS < hi:
            prefetch(pch + vp_st[0, i + k + _PREFETCH_ROWS])
    for k in range(_BATCH):
        gs[k] = ht_walk(tables, t0, tmask, ss[k], gs[k], bkeys, b0, ws[k], kmode, verify, _E64,
                        vb_w, vb_st, vb_en, vb_ch, vp_w, vp_st, vp_en, vp_ch, i + k)


@njit(inline="always")
def _find_batch_any(i, pkeys, pvalid, kmode, pmask, pshift, bstarts, toffs, bkeys, tables, ws, ss, gs, bs,
                    ts, ms):
    """:func:`_find_batch` for unpartitioned (in-place) probe positions: each row finds its own
    partition's table; a null key (``pvalid``) or an empty partition has no match."""
    for k in range(_BATCH):
        w = canon_word(pkeys[i + k], kmode)
        ws[k] = w
        h = word_hash(w)
        p = np.int64(h & pmask)
        b0 = bstarts[p]
        t0 = toffs[p]
        tmask = np.uint64(toffs[p + 1] - t0 - 1)
        bs[k] = b0
        ts[k] = t0
        ms[k] = tmask
        if bstarts[p + 1] == b0 or (pvalid.shape[0] != 0 and pvalid[i + k] == 0):
            gs[k] = EMPTY
            ss[k] = 0
        else:
            s = slot_of(h, pshift, tmask)
            ss[k] = s
            gs[k] = tables[t0 + s]
    for k in range(_BATCH):
        gs[k] = ht_walk(tables, ts[k], ms[k], ss[k], gs[k], bkeys, bs[k], ws[k], kmode, False, _E64,
                        _EW, _EI2, _EI2, _E8, _EW, _EI2, _EI2, _E8, i + k)


@njit(parallel=True, **_OPTS)
def probe_count(pkeys, pvalid, kmode, pmask, pshift, nparts, ilo, ihi, ipart,
                bkeys, bstarts, tables, toffs, nxt, unique, verify,
                vp_w, vp_st, vp_en, vp_ch, vb_w, vb_st, vb_en, vb_ch,
                eup, eub, bmatched, match, counts, op_st, op_en, sbytes):
    """Output rows of every work item (``counts[item]``) and, per output string column ``c``
    (probe byte spans ``op_st[c]``/``op_en[c]``; there may be none), their output bytes
    ``sbytes[item, c]`` (a row with a probe side has the probe's key bytes). Every array is
    indexed by position (probe or build).

    ``match[pos]`` (one per probe position; empty to skip) receives the global build position
    heading the row's matches, or ``-1``; ``bmatched[pos] = 1`` for matched build positions
    when ``eub``. ``eup``: unmatched probe rows are output rows too.
    """
    store = match.shape[0] != 0
    nstr = sbytes.shape[1]
    pch = _addr(vp_ch)
    pf = verify and vp_st.shape[0] != 0
    for it in prange(ilo.shape[0]):
        c = np.int64(0)
        part = ipart[it]
        hi = ihi[it]
        ib0, inb, it0, itmask = _item_partition(part, nparts, bstarts, toffs)
        lo = ilo[it]
        batched = part >= 0 and inb != 0 and not verify   # general keys: measured slower batched here
        batched_any = part < 0 and not verify
        ws = np.empty(_BATCH, np.uint64)
        ss = np.empty(_BATCH, np.int64)
        gs = np.empty(_BATCH, np.int64)
        bs = np.empty(_BATCH, np.int64)
        ts = np.empty(_BATCH, np.int64)
        ms = np.empty(_BATCH, np.uint64)
        i0 = lo
        while i0 < hi:
            if batched and i0 + _BATCH <= hi:
                _find_batch(i0, hi, pkeys, kmode, pshift, ib0, it0, itmask, bkeys, tables, ws, ss, gs, verify,
                            vp_w, vp_st, vp_en, vp_ch, vb_w, vb_st, vb_en, vb_ch, pf, pch)
                nk = _BATCH
            elif batched_any and i0 + _BATCH <= hi:
                _find_batch_any(i0, pkeys, pvalid, kmode, pmask, pshift, bstarts, toffs, bkeys, tables,
                                ws, ss, gs, bs, ts, ms)
                nk = _BATCH
            else:
                if pf and i0 + _PREFETCH_ROWS < hi:
                    prefetch(pch + vp_st[0, i0 + _PREFETCH_ROWS])
                gs[0] = _find(i0, part, pkeys, pvalid, kmode, pmask, pshift, ib0, inb, it0, itmask, bkeys,
                              bstarts, tables, toffs, verify, vp_w, vp_st, vp_en, vp_ch, vb_w, vb_st, vb_en, vb_ch)
                nk = 1
            for kk in range(nk):
                i = i0 + kk
                g = gs[kk]
                if store:
                    match[i] = g
                k = np.int64(0)
                if unique:
                    if g >= 0:
                        k = 1
                        if eub:
                            bmatched[g] = 1
                else:
                    while g >= 0:
                        k += 1
                        if eub:
                            bmatched[g] = 1
                        g = nxt[g]
                if k == 0 and eup:
                    k = 1
                c += k
                if nstr != 0 and k != 0:
                    for sc in range(nstr):
                        sbytes[it, sc] += k * (op_en[sc, i] - op_st[sc, i])
            i0 += nk
        counts[it] = c


@njit(inline="always")
def _emit_row(r, o, i, j, porig, borig, pcols, bcols, bkeys, src_p, src_b, fill, outs):
    # output row r of probe position i (or -1) and global build position j (or -1)
    sp = src_p[r]
    sb = src_b[r]
    if i >= 0 and sp >= 0:
        v = load_i64(pcols[sp], i)
    elif i >= 0 and sp == SRC_MATCH_KEY:
        v = np.int64(bkeys[j])
    elif i >= 0 and sp == SRC_ONE:
        v = np.int64(1)
    elif i >= 0 and sp == SRC_ROW:
        v = orig_row(porig, i)
    elif j >= 0 and sb >= 0:
        v = load_i64(bcols[sb], j)
    elif j >= 0 and sb == SRC_BUILD_KEY:
        v = np.int64(bkeys[j])
    elif j >= 0 and sb == SRC_ONE:
        v = np.int64(1)
    elif j >= 0 and sb == SRC_ROW:
        v = orig_row(borig, j)
    else:
        v = fill[r]
    store_i64_nt(outs[r], o, v)


@njit(inline="always")
def _emit(o, i, j, porig, borig, pcols, bcols, bkeys, src_p, src_b, fill, outs, use_active, active):
    # one output row: every output row, or (use_active and o == i) only the rows in
    # ``active``: the others already hold their probe value at position i (the scatter put it)
    if use_active and o == i:
        for k in range(active.shape[0]):
            _emit_row(active[k], o, i, j, porig, borig, pcols, bcols, bkeys, src_p, src_b, fill, outs)
    else:
        for r in range(src_p.shape[0]):
            _emit_row(r, o, i, j, porig, borig, pcols, bcols, bkeys, src_p, src_b, fill, outs)


@njit(inline="always")
def _emit_strings(o, i, j, from_build, vp_st, vp_en, pch, vb_st, vb_en, bch, soffs, schars, spos):
    # string key columns of one output row: the bytes of the build row when there is one and
    # ``from_build`` (equal to the probe's), else the probe row's, else the build row's
    for c in range(soffs.shape[0]):
        if j >= 0 and (from_build or i < 0):
            s = vb_st[c, j]
            n = vb_en[c, j] - s
            src = bch + s
        elif i >= 0:
            s = vp_st[c, i]
            n = vp_en[c, i] - s
            src = pch + s
        else:
            n = 0
            src = pch
        d = spos[c]
        copy_short(schars[c] + d, src, n)
        spos[c] = d + n
        store_i64_nt(soffs[c], o + 1, d + n)


@njit(parallel=True, **_OPTS)
def probe_write(ilo, ihi, match, nxt, eup, item_off, porig, borig, pcols, bcols, bkeys,
                src_p, src_b, fill, outs, vp_st, vp_en, vp_ch, vb_st, vb_en, vb_ch,
                from_build, item_bytes, soffs, schars,
                eub, bstarts, bmatched, ub_off, ub_bytes):
    """Write every item's output rows from ``item_off[item]`` on, then (``eub``) every
    partition's unmatched build rows from ``ub_off[p]`` on (the never-matching partition's
    rows are all unmatched).

    Output row ``r`` is the int64 array at address ``outs[r]``; a row with a probe side takes
    ``src_p[r]`` (a probe column, ``SRC_MATCH_KEY``, ``SRC_ONE``, ``SRC_ROW``); otherwise, or
    with ``SRC_NONE``, a row with a build side takes ``src_b[r]`` (a build column,
    ``SRC_BUILD_KEY``, ``SRC_ONE``, ``SRC_ROW``); else ``fill[r]``. String key column ``c``
    writes its ``n + 1`` int64 offsets at ``soffs[c]`` (the caller writes offset 0) and its
    bytes at ``schars[c]``, from ``item_bytes[item, c]`` / ``ub_bytes[p, c]`` on; the spans
    ``vp_st``/``vp_en`` and ``vb_st``/``vb_en`` are indexed by position. ``porig``/``borig``
    give the original rows for ``SRC_ROW`` (empty: the identity).
    """
    pch = _addr(vp_ch)
    bch = _addr(vb_ch)
    nstr = soffs.shape[0]
    for it in prange(ilo.shape[0]):
        spos = np.zeros(nstr, np.int64)
        for c in range(nstr):
            spos[c] = item_bytes[it, c]
        o = item_off[it]
        for i in range(ilo[it], ihi[it]):
            t = match[i]
            if t < 0:
                if eup:
                    _emit(o, i, -1, porig, borig, pcols, bcols, bkeys, src_p, src_b, fill, outs, False, _E64)
                    if nstr != 0:
                        _emit_strings(o, i, -1, from_build, vp_st, vp_en, pch, vb_st, vb_en, bch,
                                      soffs, schars, spos)
                    o += 1
                continue
            while t >= 0:
                _emit(o, i, t, porig, borig, pcols, bcols, bkeys, src_p, src_b, fill, outs, False, _E64)
                if nstr != 0:
                    _emit_strings(o, i, t, from_build, vp_st, vp_en, pch, vb_st, vb_en, bch,
                                  soffs, schars, spos)
                o += 1
                t = nxt[t]
    if eub:
        for p in prange(bstarts.shape[0] - 1):
            spos = np.zeros(nstr, np.int64)
            for c in range(nstr):
                spos[c] = ub_bytes[p, c]
            o = ub_off[p]
            for j in range(bstarts[p], bstarts[p + 1]):
                if bmatched[j] == 0:
                    _emit(o, -1, j, porig, borig, pcols, bcols, bkeys, src_p, src_b, fill, outs, False, _E64)
                    if nstr != 0:
                        _emit_strings(o, -1, j, from_build, vp_st, vp_en, pch, vb_st, vb_en, bch,
                                      soffs, schars, spos)
                    o += 1


@njit(parallel=True, **_OPTS)
def probe_direct(pkeys, pvalid, kmode, pmask, pshift, nparts, ilo, ihi, ipart,
                 bkeys, bstarts, tables, toffs, verify, vp_w, vp_st, vp_en, vp_ch, vb_w, vb_st, vb_en, vb_ch,
                 eup, eub, bmatched, porig, borig, pcols, bcols, src_p, src_b, fill, outs, active,
                 from_build, op_st, op_en, ob_st, ob_en, cap_bytes, soffs, schars, counts, sbytes):
    """Probe and write in one pass, for build sides whose keys are all distinct (at most one
    output row per probe row).

    Item ``it`` writes its rows from row ``ilo[it]`` on (its rows never outgrow its positions)
    and its string bytes from ``cap_bytes[it, c]`` on (the bytes of all its probe keys fit
    there); ``counts[it]`` and ``sbytes[it, c]`` receive what it wrote, and
    :func:`compact_items` closes the gaps. Only the output rows listed in ``active`` need
    writing where a row stays at its probe position: the others already hold their probe value
    at every probe position (the scatter put it there). The output string columns take
    the spans ``op_*`` (probe) and ``ob_*`` (build); see :func:`probe_write` for the rest.
    """
    nstr = soffs.shape[0]
    pch = _addr(vp_ch)
    bch = _addr(vb_ch)
    pf = verify and vp_st.shape[0] != 0
    # the common case: every output row still to write at a matched row in its probe position
    # is a probe column, a build column or the key: copy those without decoding the row codes
    # (a_kind 0: probe column a_src at i, 1: build column a_src at g, 2: the build key at g)
    na = active.shape[0]
    a_out = np.empty(na, np.int64)
    a_src = np.zeros(na, np.int64)
    a_kind = np.empty(na, np.int64)
    copy_only = True
    for k in range(na):
        r = active[k]
        a_out[k] = outs[r]
        if src_p[r] >= 0:
            a_kind[k] = 0
            a_src[k] = pcols[src_p[r]]
        elif src_p[r] == SRC_MATCH_KEY:
            a_kind[k] = 2
        elif src_p[r] == SRC_NONE and src_b[r] >= 0:
            a_kind[k] = 1
            a_src[k] = bcols[src_b[r]]
        else:
            copy_only = False
    for it in prange(ilo.shape[0]):
        part = ipart[it]
        lo = ilo[it]
        hi = ihi[it]
        ib0, inb, it0, itmask = _item_partition(part, nparts, bstarts, toffs)
        spos = np.empty(nstr, np.int64)
        for c in range(nstr):
            spos[c] = cap_bytes[it, c]
        o = lo
        batched = part >= 0 and inb != 0
        batched_any = part < 0 and not verify
        ws = np.empty(_BATCH, np.uint64)
        ss = np.empty(_BATCH, np.int64)
        gs = np.empty(_BATCH, np.int64)
        bs = np.empty(_BATCH, np.int64)
        ts = np.empty(_BATCH, np.int64)
        ms = np.empty(_BATCH, np.uint64)
        i0 = lo
        while i0 < hi:
            if batched and i0 + _BATCH <= hi:
                _find_batch(i0, hi, pkeys, kmode, pshift, ib0, it0, itmask, bkeys, tables, ws, ss, gs, verify,
                            vp_w, vp_st, vp_en, vp_ch, vb_w, vb_st, vb_en, vb_ch, pf, pch)
                nk = _BATCH
            elif batched_any and i0 + _BATCH <= hi:
                _find_batch_any(i0, pkeys, pvalid, kmode, pmask, pshift, bstarts, toffs, bkeys, tables,
                                ws, ss, gs, bs, ts, ms)
                nk = _BATCH
            else:
                if pf and i0 + _PREFETCH_ROWS < hi:
                    prefetch(pch + vp_st[0, i0 + _PREFETCH_ROWS])
                gs[0] = _find(i0, part, pkeys, pvalid, kmode, pmask, pshift, ib0, inb, it0, itmask, bkeys,
                              bstarts, tables, toffs, verify, vp_w, vp_st, vp_en, vp_ch, vb_w, vb_st, vb_en, vb_ch)
                nk = 1
            for kk in range(nk):
                i = i0 + kk
                g = gs[kk]
                if g >= 0:
                    if eub:
                        bmatched[g] = 1
                elif not eup:
                    continue
                if copy_only and g >= 0 and o == i:
                    for k in range(na):
                        kind = a_kind[k]
                        if kind == 1:
                            v = load_i64(a_src[k], g)
                        elif kind == 0:
                            v = load_i64(a_src[k], i)
                        else:
                            v = np.int64(bkeys[g])
                        store_i64_nt(a_out[k], o, v)
                else:
                    _emit(o, i, g, porig, borig, pcols, bcols, bkeys, src_p, src_b, fill, outs, True, active)
                if nstr != 0:
                    _emit_strings(o, i, g, from_build, op_st, op_en, pch, ob_st, ob_en, bch, soffs, schars, spos)
                o += 1
            i0 += nk
        counts[it] = o - lo
        for c in range(nstr):
            sbytes[it, c] = spos[c] - cap_bytes[it, c]


@njit(**_OPTS)
def compact_items(ilo, counts, item_off, outs, cap_bytes, sbytes, item_bytes, soffs, schars):
    """Move every item's rows written by :func:`probe_direct` (from ``ilo[it]``) to
    ``item_off[it]``, its string bytes from ``cap_bytes[it, c]`` to ``item_bytes[it, c]``
    (shifting its offsets to match), in item order (every move is to the left)."""
    for it in range(ilo.shape[0]):
        src = ilo[it]
        dst = item_off[it]
        n = counts[it]
        if n == 0:
            continue
        if src != dst:
            for r in range(outs.shape[0]):
                copy_bytes(outs[r] + 8 * dst, outs[r] + 8 * src, 8 * n)
        for c in range(soffs.shape[0]):
            sb = cap_bytes[it, c]
            db = item_bytes[it, c]
            if sb != db:
                copy_bytes(schars[c] + db, schars[c] + sb, sbytes[it, c])
            if sb != db or src != dst:
                delta = db - sb
                for k in range(1, n + 1):
                    store_i64(soffs[c], dst + k, load_i64(soffs[c], src + k) + delta)


# --------------------------------------------------------------------------- CUDA string keys
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
    dst = _addr(out_chars)
    a = _addr(ach)
    b = _addr(bch)
    for o in prange(ia.shape[0]):
        d = out_off[o]
        n = out_off[o + 1] - d
        if n <= 0:
            continue
        if ia[o] >= 0:
            copy_bytes(dst + d, a + ast[ia[o]], n)
        elif ib[o] >= 0:
            copy_bytes(dst + d, b + bst[ib[o]], n)
