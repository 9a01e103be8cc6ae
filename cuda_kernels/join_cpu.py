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
:func:`write_items` writes each item's rows at its offset, a column at a time. A build side
whose tables fit in cache is probed in place by :func:`small_match` (then :func:`write_items`);
one whose keys are distinct words, through a flat table (key word beside build position,
:func:`flat_slots`, :func:`flat_match`) up to a larger size.
All write with non-temporal stores; :func:`unmatched_build_write` adds the unmatched build
rows of outer joins, partition by partition.

Per-row functions
-----------------
Key words, the join hash, row equality and the hash-table insert and find are the ones the CUDA
kernels run (:mod:`gpuframe.kernels.keys`, :mod:`gpuframe.kernels.hashtable`), compiled here for
the CPU as their inlined copies (:func:`gpuframe.kernels.per_row.cpu`); what is CPU-only is the algorithm around them (partitioning, work items, batched
lookups whose cache misses overlap, fused output) and the raw-memory intrinsics of
:mod:`gpuframe.kernels.cpu_intrinsics`.

Columns are passed as tables of addresses (int64 ``ptrs``, one int64 word per row, or bytes for
string data) so that one compiled kernel serves every number of columns. An output row whose
values are only ever 0 or 1 (a validity: ``SRC_ONE`` or nothing on each side, fill 0 or 1) may
be one byte per row instead: its address is given negated (:func:`_put`, :func:`_row_width`).
The caller keeps the arrays alive during the call. Every kernel is ``cache=True`` and every argument type is fixed
(read-only arrays, int64 words), so each compiles once per machine.
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import prange, types

from .cpu_intrinsics import (address, call_entry, compile_kernels_beside, copy_bytes, copy_short,  # noqa: F401
                             fetch_add_at, kernel_types, load_i64, native_entry_for, prefetch, store_fence, store_i64,
                             store_i64_nt, store_u8_at)
from .cpu_intrinsics import claim as _claim
from .cpu_intrinsics import claim_one, row_block
from . import hashtable as _ht
from . import keys as _keys
from .hashtable import EMPTY
from .jit_cache import njit
from .keys import JOIN_SEED  # noqa: F401
from .per_row import cpu, cpu_variant

# the per-row functions the CUDA kernels run too, as their CPU copies (inlined into the loops)
canon_word, orig_row, row_hash, word_hash = (cpu(_keys.canon_word), cpu(_keys.orig_row), cpu(_keys.row_hash),
                                             cpu(_keys.word_hash))
key_word_row, string_span_row = cpu(_keys.key_word_row), cpu(_keys.string_span_row)
ht_find, ht_insert, ht_walk, slot_of = (cpu(_ht.ht_find), cpu(_ht.ht_insert), cpu(_ht.ht_walk),
                                        cpu(_ht.slot_of))
# output-row source codes (``k >= 0``: column ``k`` of that side's column table), defined in .join
from .join import SRC_KEY as SRC_BUILD_KEY, SRC_MATCH_KEY, SRC_NONE, SRC_ONE, SRC_ROW  # noqa: F401

_OPTS = dict(cache=True, nogil=True, error_model="numpy")
# _ITEM_KERNELS: the largest kernels (small_match, build_tables, write_items, probe_direct,
# probe_count) run each work item (chunk, partition) by a function of its own, ``_ITEM_OPTS`` (no
# reference counting: it allocates nothing, its scratch comes from the caller; no Python
# wrapper: only kernels call it), called with an int64 item number and arguments of one type
# each (a literal or a differently typed index compiles the item function twice). The kernels
# themselves are *threaded*, not numba parallel loops: each is a plain loop that claims the
# next item from ``cursor`` (blocks of consecutive items, an atomic add: _claim) until none is
# left, and
# gpuframe.backends.cpu._target.run_threads runs it on several threads at once. Numba types and
# transforms a parallel loop's body in its parfor passes as well as in the kernel: with the
# whole per-row path inlined into the loop these kernels took most of a first join's compile
# (2026-12-06, an empty numba cache, the first join: in place 30.6 -> 22.3 s with item
# functions in prange loops; 2026-12-07 a first inner + outer join of 1k rows 21.7 -> 5.3-6.3 s with
# threaded kernels, the word-key variants of for_keys and _write_item's one _emit_row). A
# kernel calls its item function through an address (``entry``, :func:`item_entry`,
# :func:`~gpuframe.kernels.cpu_intrinsics.call_entry`), not by name: numba links a callee into
# its caller's module and optimises and generates it there a second time, which took as long
# as compiling the item function itself; and the kernels no longer depend on the key kind
# (2026-12-07, the same first join: 4.8 -> 3.8 s in the process, 5.1-5.3 -> 4.0-4.1 s wall). Without
# ``_nrt=False`` the item function increfs and decrefs its arrays at every inlined per-row call:
# the 10M x 10k string-key probe ran 3x slower (150 -> 450 ms).
# On a cold cache each kernel compiles in a child process while its item function compiles here
# (item_entry -> native_entry_for(kernel=...) -> jit_cache.compile_beside).
_ITEM_OPTS = dict(_OPTS, _nrt=False, no_cpython_wrapper=True, no_cfunc_wrapper=True)


_E64 = np.zeros(0, np.int64)
_addr = address


# --------------------------------------------------------------------------- argument records
# The probe and write kernels take their arrays bundled per side, one named tuple each (numba
# types a named tuple field by field, so every field keeps its own array type and each kernel
# still compiles once per machine); the kernels read the fields by name. Each record has one
# constructor, keyword-only, that checks every array field's dtype and dimensions: a field
# passed in the wrong place fails there, not as a wrong result.
# Inside a parallel kernel, take each field into a local with its own statement before the
# prange, and use only the locals: with numba 0.68 the parfors lose the writes to arrays of a
# named tuple used in the loop (numba/numba#5872) and to locals unpacked together
# (``a, b = t.a, t.b``).
BuildSide = namedtuple("BuildSide", (
    "keys", "valid", "starts", "nparts", "pmask", "pshift", "kmode", "verify", "w", "st", "en", "ch",
    "tables", "toffs", "nxt", "unique", "orig", "cols"))
ProbeSide = namedtuple("ProbeSide", (
    "keys", "valid", "kmode", "verify", "w", "st", "en", "ch", "orig", "cols", "ilo", "ihi", "ipart"))
OutputRows = namedtuple("OutputRows", (
    "eup", "eub", "src_p", "src_b", "fill", "outs", "active", "from_build", "pst", "pen", "bst", "ben",
    "soffs", "schars"))
Tally = namedtuple("Tally", (
    "match", "bmatched", "counts", "sbytes", "cap_bytes", "item_off", "item_bytes", "ub_off", "ub_bytes"))

_I64, _U64, _U8, _IDX = "lq", "LQ", "B", "ilq"   # dtype chars: int64, uint64, uint8, int32 or int64


def _check(record: str, name: str, a, chars: str, ndim: int):
    if not isinstance(a, np.ndarray) or a.ndim != ndim or a.dtype.char not in chars:
        got = f"{a.dtype} {a.ndim}-D" if isinstance(a, np.ndarray) else type(a).__name__
        want = "/".join(str(np.dtype(c)) for c in chars)
        raise TypeError(f"{record}.{name}: expected a {ndim}-D {want} array, got {got}")
    return a


def build_side(*, keys, valid, starts, nparts, pbits, kmode, verify, w, st, en, ch, tables, toffs, nxt,
               unique, orig, cols) -> BuildSide:
    """The build side by position: key words (``keys``, ``valid``), ``nparts = 2**pbits``
    partitions (``starts``, ``nparts + 2`` entries) and their tables (``tables``, ``toffs``),
    the match chains ``nxt``, a general key's words and byte spans ``w``/``st``/``en`` into
    ``ch``, the original rows ``orig`` (empty: the identity) and the column address table
    ``cols``. ``unique``: no key repeats."""
    c = "BuildSide"
    return BuildSide(_check(c, "keys", keys, _U64, 1), _check(c, "valid", valid, _U8, 1),
                     _check(c, "starts", starts, _I64, 1), int(nparts), np.uint64(nparts - 1), np.uint64(pbits),
                     int(kmode), bool(verify), _check(c, "w", w, _U64, 2), _check(c, "st", st, _I64, 2),
                     _check(c, "en", en, _I64, 2), _check(c, "ch", ch, _U8, 1),
                     _check(c, "tables", tables, "i", 1), _check(c, "toffs", toffs, _I64, 1),
                     _check(c, "nxt", nxt, _IDX, 1), bool(unique), _check(c, "orig", orig, _I64, 1),
                     _check(c, "cols", cols, _I64, 1))


def probe_side(*, keys, valid, kmode, verify, w, st, en, ch, orig, cols, ilo, ihi, ipart) -> ProbeSide:
    """The probe side by position (key words, a general key's words, spans and bytes, original
    rows, column address table) and its work items ``[ilo, ihi)`` of partition ``ipart``
    (``-1``: any)."""
    c = "ProbeSide"
    return ProbeSide(_check(c, "keys", keys, _U64, 1), _check(c, "valid", valid, _U8, 1), int(kmode),
                     bool(verify), _check(c, "w", w, _U64, 2), _check(c, "st", st, _I64, 2),
                     _check(c, "en", en, _I64, 2), _check(c, "ch", ch, _U8, 1), _check(c, "orig", orig, _I64, 1),
                     _check(c, "cols", cols, _I64, 1), _check(c, "ilo", ilo, _I64, 1),
                     _check(c, "ihi", ihi, _I64, 1), _check(c, "ipart", ipart, _I64, 1))


def output_rows(*, eup, eub, src_p, src_b, fill, outs, active, from_build, pst, pen, bst, ben, soffs,
                schars) -> OutputRows:
    """What the output holds: unmatched probe (``eup``) and build (``eub``) rows or not; the
    row codes ``src_p``/``src_b``/``fill`` and the address table ``outs`` of the output rows
    (int64 words; a negated address: a 0/1 row of bytes; ``active``: the rows
    :func:`probe_direct` still writes at a row's own position);
    the string key columns' probe and build spans and the addresses of their offsets and
    bytes (``from_build``: a matched row takes the build row's bytes)."""
    c = "OutputRows"
    return OutputRows(bool(eup), bool(eub), _check(c, "src_p", src_p, _I64, 1),
                      _check(c, "src_b", src_b, _I64, 1), _check(c, "fill", fill, _I64, 1),
                      _check(c, "outs", outs, _I64, 1), _check(c, "active", active, _I64, 1), bool(from_build),
                      _check(c, "pst", pst, _I64, 2), _check(c, "pen", pen, _I64, 2),
                      _check(c, "bst", bst, _I64, 2), _check(c, "ben", ben, _I64, 2),
                      _check(c, "soffs", soffs, _I64, 1), _check(c, "schars", schars, _I64, 1))


def tally(*, match, bmatched, counts, sbytes, cap_bytes, item_off, item_bytes, ub_off, ub_bytes) -> Tally:
    """Per position: the head of every probe row's match chain (``match``), the matched build
    rows (``bmatched``); per work item: rows (``counts``) and string bytes (``sbytes``)
    written or counted, the string room (``cap_bytes``), the rows' and bytes' offsets
    (``item_off``, ``item_bytes``); per build partition: the unmatched rows' offsets
    (``ub_off``, ``ub_bytes``)."""
    c = "Tally"
    return Tally(_check(c, "match", match, _IDX, 1), _check(c, "bmatched", bmatched, _U8, 1),
                 _check(c, "counts", counts, _I64, 1), _check(c, "sbytes", sbytes, _I64, 2),
                 _check(c, "cap_bytes", cap_bytes, _I64, 2), _check(c, "item_off", item_off, _I64, 1),
                 _check(c, "item_bytes", item_bytes, _I64, 2), _check(c, "ub_off", ub_off, _I64, 1),
                 _check(c, "ub_bytes", ub_bytes, _I64, 2))


# rows ahead whose key bytes the probe loop prefetches (string keys: the bytes are the only
# memory a partition-ordered probe reads out of order)
_PREFETCH_ROWS = 16


# --------------------------------------------------------------------------- partitioning
@njit(inline="always")
def _pid(keys, valid, kmode, pmask, npart, i):
    if valid.shape[0] != 0 and valid[i] == 0:
        return npart - 1
    return np.int64(word_hash(canon_word(keys[i], kmode)) & pmask)


@njit(**_OPTS)
def part_hist(keys, valid, kmode, pmask, hist, cursor):
    """Rows per (chunk, partition) into ``hist`` (zeros, ``[chunks, pmask + 2]``); partition
    ``pmask + 1`` holds the rows that never match (``valid[i] == 0``; an empty ``valid`` means
    every row may match). A threaded kernel (see _ITEM_KERNELS): the chunks it claims through
    ``cursor``."""
    n = keys.shape[0]
    nchunks, npart = hist.shape
    step = (n + nchunks - 1) // nchunks
    mine = np.zeros(2, np.int64)
    c = _claim(cursor, mine)
    while c < nchunks:
        h = hist[c]
        for i in range(c * step, min(n, (c + 1) * step)):
            h[_pid(keys, valid, kmode, pmask, npart, i)] += 1
        c = _claim(cursor, mine)


@njit(parallel=True, **_OPTS)
def scatter(keys, valid, kmode, pmask, cursors, keys_dst, iota_dst, src, dst):
    """Scatter rows into partition order (stable), chunk ``c`` of the rows starting at
    ``cursors[c]``: the key word to address ``keys_dst`` (0: skip), the row number to
    ``iota_dst`` (0: skip) and the int64 column at address ``src[k]`` to ``dst[k]``.

    (Plain stores: buffering a cache line per partition and streaming it out with
    non-temporal stores measured slower here.) A numba parallel loop, not a threaded kernel:
    the same loop as a plain ``njit`` loop (or calling a function per chunk) ran 2.6x slower on
    one thread (10M rows, 417 against 160 ms, 2026-12-07): the parallel loop's gufunc is
    compiled into better code here, for reasons not found.
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


# The per-row kernels below are threaded (``gpuframe.backends.cpu._target.run_rows``: blocks of
# rows claimed through ``cursor``), without reference counting (they allocate nothing; see
# cpu_intrinsics.claim_one): as numba ``prange`` loops they compiled 1-3 s longer a signature
# (widen_copy has one per pair of types).
_ROWS_OPTS = dict(_OPTS, _nrt=False)


@njit(**_ROWS_OPTS)
def copy_spans(src_st, src_en, src_ch, dst_st, dst_ch, cursor):
    """Copy the bytes of span ``k`` (``src_ch[src_st[k]:src_en[k]]``) to ``dst_ch`` from
    ``dst_st[k]`` on (spans of 1-D arrays: ravel the ``[columns, rows]`` arrays)."""
    s = _addr(src_ch)
    d = _addr(dst_ch)
    m = src_st.shape[0]
    lo, hi = row_block(cursor, m)
    while lo < m:
        for k in range(lo, hi):
            n = src_en[k] - src_st[k]
            if n > 0:
                copy_short(d + dst_st[k], s + src_st[k], n)
        lo, hi = row_block(cursor, m)


@njit(**_ROWS_OPTS)
def key_words(src, kmode, valid, has_valid, out, flag, has_flag, keep, has_keep, cursor):
    """Every row's :func:`gpuframe.kernels.keys.key_word_row` (the general path's words of one
    key column, made on the threads; the CUDA kernel runs the same per-row function)."""
    n = out.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        for i in range(lo, hi):
            key_word_row(src, kmode, valid, has_valid, out, flag, has_flag, keep, has_keep, i)
        lo, hi = row_block(cursor, n)


@njit(**_ROWS_OPTS)
def string_spans(offs, valid, has_valid, st, en, flag, has_flag, keep, has_keep, cursor):
    """Every row's :func:`gpuframe.kernels.keys.string_span_row` (one string key's spans)."""
    n = st.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        for i in range(lo, hi):
            string_span_row(offs, valid, has_valid, st, en, flag, has_flag, keep, has_keep, i)
        lo, hi = row_block(cursor, n)


@njit(**_ROWS_OPTS)
def widen_copy(src, out, cursor):
    """``out[i] = src[i]`` (sign- or zero-extending, float32 to float64 exactly; or int64 string
    offsets known to fit into int32), on the threads."""
    n = out.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        for i in range(lo, hi):
            out[i] = src[i]
        lo, hi = row_block(cursor, n)


@njit(**_ROWS_OPTS)
def general_row_hash(words, st, en, chars, out, cursor):
    """``out[i]`` = :func:`gpuframe.kernels.keys.row_hash` of row ``i`` of a general
    (multi-column / string) key."""
    n = out.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        for i in range(lo, hi):
            out[i] = row_hash(words, st, en, chars, i)
        lo, hi = row_block(cursor, n)


# --------------------------------------------------------------------------- build
@njit(**_ITEM_OPTS)
def _build_item(build, p):
    # build_tables' partition ``p`` (see _ITEM_KERNELS); returns its rows that joined a chain
    bkeys = build.keys
    bvalid = build.valid
    bstarts = build.starts
    kmode = build.kmode
    pshift = build.pshift
    verify = build.verify
    vb_w = build.w
    vb_st = build.st
    vb_en = build.en
    vb_ch = build.ch
    tables = build.tables
    toffs = build.toffs
    nxt = build.nxt
    pf = verify and vb_st.shape[0] != 0
    bch = _addr(vb_ch)
    chained = 0
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
        if pf and j >= _PREFETCH_ROWS:
            prefetch(bch + vb_st[0, pos - _PREFETCH_ROWS])
        nxt[pos] = EMPTY
        if bvalid.shape[0] != 0 and bvalid[pos] == 0:
            continue
        chained += ht_insert(tables, t0, tmask, pshift, nxt, bkeys, b0, j, kmode, verify, _E64,
                             vb_w, vb_st, vb_en, vb_ch)
    return chained


@njit(**_OPTS)
def build_tables(entry, build, cursor):
    """Build the table of every partition ``p < build.nparts`` (build positions
    ``[starts[p], starts[p + 1])``) into ``tables[toffs[p]:toffs[p + 1]]`` (a power of two of
    slots, at least twice the rows) and chain equal keys through ``nxt`` (global positions,
    every chain in position order). Rows with ``valid[pos] == 0`` are left out (a
    :class:`BuildSide`; its ``unique``, ``orig`` and ``cols`` are not read).

    With ``verify`` the normalised key words ``w`` and byte spans ``st``/``en`` (into ``ch``)
    are indexed by build position, like every per-position array here. A threaded kernel (see
    _ITEM_KERNELS): builds the partitions it claims through ``cursor``, and returns the number
    of their rows that joined a chain (summed over the threads, 0: every key is unique)."""
    chained = 0
    mine = np.zeros(2, np.int64)
    p = _claim(cursor, mine)
    while p < build.nparts:
        chained += call_entry(entry, (build, p))
        p = _claim(cursor, mine)
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


# --------------------------------------------------------------------------- word-key variants
@njit(inline="always")
def _no_rows_equal(aw, ast, aen, ach, ia, bw, bst, ben, bch, ib):
    # keys.rows_equal in the word-key variants: never called there (verify is false)
    return False


@njit(inline="always")
def _no_row_hash(words, st, en, chars, i):
    # keys.row_hash in the word-key variants: never called there (the probe keys are words)
    return np.uint64(0)


@njit(inline="always")
def _no_match_rows(lo, hi, pkeys, pvalid, kmode, verify, vp_w, vp_st, vp_en, vp_ch, bkeys, bstarts, tables,
                   toffs, pmask, pshift, vb_w, vb_st, vb_en, vb_ch, match):
    # _match_rows in the word-key variants: never called there (word keys are found in batches)
    return


@njit(inline="always")
def _no_emit_strings(o, i, j, from_build, vp_st, vp_en, pch, vb_st, vb_en, bch, soffs, schars, spos):
    # _emit_strings in the word-key variants: never called there (only general keys have
    # string key columns to write)
    return


_WORD_KEYS = {"rows_equal": _no_rows_equal, "row_hash": _no_row_hash, "_match_rows": _no_match_rows,
              "_emit_strings": _no_emit_strings}


def for_keys(item, verify: bool):
    """Item function ``item`` itself for general keys (``verify``: matches are checked against
    the key words and bytes), else its word-key variant
    (:func:`~gpuframe.kernels.per_row.cpu_variant`), which leaves out the general keys'
    comparison, hash, one-row lookups and string-key output (:data:`_WORD_KEYS`): the join of
    an integer key (the commonest) compiles a fraction of it (2026-12-07, an empty cache:
    ``_build_item`` 3.1 -> 0.6-0.8 s, ``_small_match_item`` 6.2 -> 1.1 s)."""
    return item if verify else cpu_variant(item, "words", _WORD_KEYS)


@njit(inline="always")
def _batch_scratch():
    # a threaded kernel's scratch for the lookups of one batch of _BATCH rows
    return (np.empty(_BATCH, np.uint64), np.empty(_BATCH, np.int64), np.empty(_BATCH, np.int64),
            np.empty(_BATCH, np.int64), np.empty(_BATCH, np.int64), np.empty(_BATCH, np.uint64))


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
def _find_batch_any(i, hi, pkeys, pvalid, kmode, pmask, pshift, bstarts, toffs, bkeys, tables, ws, ss, gs,
                    bs, ts, ms):
    """:func:`_find_batch` for the unpartitioned (in-place) probe positions ``[i, hi)``, at most
    :data:`_BATCH`: each row finds its own partition's table; a null key (``pvalid``) or an
    empty partition has no match. Called with ``hi = i + _BATCH`` (probe_count's whole batches)
    the count is a constant and the loops unroll."""
    nb = min(_BATCH, hi - i)
    for k in range(nb):
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
    for k in range(nb):
        gs[k] = ht_walk(tables, ts[k], ms[k], ss[k], gs[k], bkeys, bs[k], ws[k], kmode, False, _E64,
                        _EW, _EI2, _EI2, _E8, _EW, _EI2, _EI2, _E8, i + k)


@njit(inline="always")
def _tally_row(it, i, g, unique, nxt, eup, eub, bmatched, nstr, sbytes, op_st, op_en):
    # output rows of probe position i whose chain starts at build position g (or -1), counted into
    # item it: the matched build rows flagged (eub), the output string bytes added
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
    if nstr != 0 and k != 0:
        for sc in range(nstr):
            sbytes[it, sc] += k * (op_en[sc, i] - op_st[sc, i])
    return k


@njit(**_ITEM_OPTS)
def _count_item(probe, build, out, tally, it, ws, ss, gs, bs, ts, ms):
    # probe_count's work item ``it`` (see _ITEM_KERNELS), with its batch scratch
    pkeys = probe.keys
    pvalid = probe.valid
    kmode = probe.kmode
    verify = probe.verify
    vp_w = probe.w
    vp_st = probe.st
    vp_en = probe.en
    vp_ch = probe.ch
    ilo = probe.ilo
    ihi = probe.ihi
    ipart = probe.ipart
    bkeys = build.keys
    bstarts = build.starts
    tables = build.tables
    toffs = build.toffs
    nxt = build.nxt
    unique = build.unique
    nparts = build.nparts
    pmask = build.pmask
    pshift = build.pshift
    vb_w = build.w
    vb_st = build.st
    vb_en = build.en
    vb_ch = build.ch
    eup = out.eup
    eub = out.eub
    op_st = out.pst
    op_en = out.pen
    bmatched = tally.bmatched
    match = tally.match
    counts = tally.counts
    sbytes = tally.sbytes
    store = match.shape[0] != 0
    nstr = sbytes.shape[1]
    pch = _addr(vp_ch)
    pf = verify and vp_st.shape[0] != 0
    c = np.int64(0)
    part = ipart[it]
    hi = ihi[it]
    ib0, inb, it0, itmask = _item_partition(part, nparts, bstarts, toffs)
    lo = ilo[it]
    batched = part >= 0 and inb != 0 and not verify   # general keys: measured slower batched here
    batched_any = part < 0 and not verify
    i0 = lo
    while i0 < hi:
        if batched and i0 + _BATCH <= hi:
            _find_batch(i0, hi, pkeys, kmode, pshift, ib0, it0, itmask, bkeys, tables, ws, ss, gs, verify,
                        vp_w, vp_st, vp_en, vp_ch, vb_w, vb_st, vb_en, vb_ch, pf, pch)
            nk = _BATCH
        elif batched_any and i0 + _BATCH <= hi:
            _find_batch_any(i0, i0 + _BATCH, pkeys, pvalid, kmode, pmask, pshift, bstarts, toffs, bkeys, tables,
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
            c += _tally_row(it, i, g, unique, nxt, eup, eub, bmatched, nstr, sbytes, op_st, op_en)
        i0 += nk
    counts[it] = c
    return 0


@njit(**_OPTS)
def probe_count(entry, probe, build, out, tally, cursor):
    """Output rows of every work item of ``probe`` (``tally.counts[item]``) and, per output
    string column ``c`` (probe byte spans ``out.pst[c]``/``out.pen[c]``; there may be none),
    their output bytes ``tally.sbytes[item, c]`` (a row with a probe side has the probe's key
    bytes). Every array is indexed by position (probe or build).

    ``tally.match[pos]`` (one per probe position; empty to skip) receives the global build
    position heading the row's matches, or ``-1``; ``tally.bmatched[pos] = 1`` for matched
    build positions when ``out.eub``. ``out.eup``: unmatched probe rows are output rows too.
    (:class:`ProbeSide`, :class:`BuildSide`, :class:`OutputRows`, :class:`Tally`.) A threaded
    kernel (see _ITEM_KERNELS): the work items it claims through ``cursor``.
    """
    ws, ss, gs, bs, ts, ms = _batch_scratch()
    mine = np.zeros(2, np.int64)
    it = _claim(cursor, mine)
    while it < probe.ilo.shape[0]:
        call_entry(entry, (probe, build, out, tally, it, ws, ss, gs, bs, ts, ms))
        it = _claim(cursor, mine)


@njit(inline="always")
def _put(a, o, v, nt):
    # value v into row o of the output row at address a: int64 words (a non-temporal store
    # with nt, a constant at every call), or (a < 0) bytes at -a
    if a < 0:
        store_u8_at(o - a, np.uint64(v))
    elif nt:
        store_i64_nt(a, o, v)
    else:
        store_i64(a, o, v)


@njit(inline="always")
def _row_width(a):
    # bytes per row of the output row at address a (see _put), and its data address
    if a < 0:
        return np.int64(1), -a
    return np.int64(8), a


@njit(inline="always")
def _emit_row(r, o, i, j, porig, borig, pcols, bcols, bkeys, src_p, src_b, fill, outs):
    # output row r of probe position i (or -1) and global build position j (or -1)
    _put(outs[r], o, _emit_value(r, i, j, porig, borig, pcols, bcols, bkeys, src_p, src_b, fill), True)


@njit(inline="always")
def _emit_value(r, i, j, porig, borig, pcols, bcols, bkeys, src_p, src_b, fill):
    # the value of output row r for probe position i (or -1) and global build position j (or -1)
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
    return v


@njit(inline="always")
def _emit_strings(o, i, j, from_build, vp_st, vp_en, pch, vb_st, vb_en, bch, soffs, schars, spos):
    # string key columns of one output row: the bytes of the build row when there is one and
    # ``from_build`` (equal to the probe's), else the probe row's, else the build row's
    for c in range(soffs.shape[0]):
        if soffs[c] == 0:
            continue                    # a column the caller does without (write_items)
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
        store_i64(soffs[c], o + 1, d + n)


@njit(**_ROWS_OPTS)
def unmatched_build_write(probe, build, out, tally, spos_all, cursor):
    """Write every partition's unmatched build rows (``tally.bmatched[pos] == 0``) from
    ``tally.ub_off[p]`` on, their string key bytes from ``tally.ub_bytes[p, c]`` on (the
    never-matching partition's rows are all unmatched); the probe side is absent on every one.
    (:class:`BuildSide`: its partitions, keys, original rows, columns and key bytes;
    :class:`OutputRows`.)

    Output row ``r`` is the int64 array at address ``outs[r]`` (the uint8 array at
    ``-outs[r]`` when negative); a row with a probe side takes
    ``src_p[r]`` (a probe column, ``SRC_MATCH_KEY``, ``SRC_ONE``, ``SRC_ROW``); otherwise, or
    with ``SRC_NONE``, a row with a build side takes ``src_b[r]`` (a build column,
    ``SRC_BUILD_KEY``, ``SRC_ONE``, ``SRC_ROW``); else ``fill[r]``. String key column ``c``
    writes its ``n + 1`` int64 offsets at ``soffs[c]`` (the caller writes offset 0) and its
    bytes at ``schars[c]``; the spans ``vp_st``/``vp_en`` and ``vb_st``/``vb_en`` are indexed
    by position. ``porig``/``borig`` give the original rows for ``SRC_ROW`` (empty: the
    identity).

    A threaded kernel (``gpuframe.backends.cpu._target.run_threads``) over the partitions it
    claims through ``cursor``; ``spos_all``: scratch, a row of ``nstr`` words a partition. As a
    numba ``prange`` loop it took 6 s of a first outer join's compile."""
    porig = probe.orig
    pcols = probe.cols
    vp_ch = probe.ch
    borig = build.orig
    bcols = build.cols
    bkeys = build.keys
    bstarts = build.starts
    vb_ch = build.ch
    src_p = out.src_p
    src_b = out.src_b
    fill = out.fill
    outs = out.outs
    vp_st = out.pst
    vp_en = out.pen
    vb_st = out.bst
    vb_en = out.ben
    from_build = out.from_build
    soffs = out.soffs
    schars = out.schars
    bmatched = tally.bmatched
    ub_off = tally.ub_off
    ub_bytes = tally.ub_bytes
    pch = _addr(vp_ch)
    bch = _addr(vb_ch)
    nstr = soffs.shape[0]
    p = claim_one(cursor)
    while p < bstarts.shape[0] - 1:
        spos = spos_all[p]
        for c in range(nstr):
            spos[c] = ub_bytes[p, c]
        o = ub_off[p]
        for j in range(bstarts[p], bstarts[p + 1]):
            if bmatched[j] == 0:
                # one call site of the inlined _emit_row (a second, for rows in the probe's
                # place, took 1.9 s of the kernel's 3.6 s compile)
                for r in range(src_p.shape[0]):
                    _emit_row(r, o, -1, j, porig, borig, pcols, bcols, bkeys, src_p, src_b, fill, outs)
                if nstr != 0:
                    _emit_strings(o, -1, j, from_build, vp_st, vp_en, pch, vb_st, vb_en, bch,
                                  soffs, schars, spos)
                o += 1
        p = claim_one(cursor)


@njit(inline="always")
def _copy_value(kind, src, i, g, fillv, bkeys):
    # probe_direct's copy of one value (kind 0: probe column src at i, 1: build column src at
    # g, 2: the build key at g, 3: one; a build-side kind without a match, g < 0: fillv)
    if kind == 0:
        return load_i64(src, i)
    if g < 0:
        return fillv
    if kind == 1:
        return load_i64(src, g)
    if kind == 2:
        return np.int64(bkeys[g])
    return np.int64(1)


@njit(**_ITEM_OPTS)
def _direct_item(probe, build, out, tally, it, a_out, a_src, a_kind, a_fill, copy_only, misses_fill, spos,
                 ws, ss, gs, sel):
    # probe_direct's work item ``it`` (see _ITEM_KERNELS), with the kernel's row plan (a_*,
    # copy_only, misses_fill) and the item's scratch (spos: one word a string column; the batch's)
    pkeys = probe.keys
    pvalid = probe.valid
    kmode = probe.kmode
    verify = probe.verify
    vp_w = probe.w
    vp_st = probe.st
    vp_en = probe.en
    vp_ch = probe.ch
    ilo = probe.ilo
    ihi = probe.ihi
    ipart = probe.ipart
    porig = probe.orig
    pcols = probe.cols
    bkeys = build.keys
    bstarts = build.starts
    tables = build.tables
    toffs = build.toffs
    nparts = build.nparts
    pmask = build.pmask
    pshift = build.pshift
    vb_w = build.w
    vb_st = build.st
    vb_en = build.en
    vb_ch = build.ch
    borig = build.orig
    bcols = build.cols
    eup = out.eup
    eub = out.eub
    src_p = out.src_p
    src_b = out.src_b
    fill = out.fill
    outs = out.outs
    active = out.active
    from_build = out.from_build
    soffs = out.soffs
    schars = out.schars
    op_st = out.pst
    op_en = out.pen
    ob_st = out.bst
    ob_en = out.ben
    bmatched = tally.bmatched
    cap_bytes = tally.cap_bytes
    counts = tally.counts
    sbytes = tally.sbytes
    nstr = soffs.shape[0]
    nrows = src_p.shape[0]
    pch = _addr(vp_ch)
    bch = _addr(vb_ch)
    pf = verify and vp_st.shape[0] != 0
    na = active.shape[0]
    part = ipart[it]
    lo = ilo[it]
    hi = ihi[it]
    ib0, inb, it0, itmask = _item_partition(part, nparts, bstarts, toffs)
    for c in range(nstr):
        spos[c] = cap_bytes[it, c]
    o = lo
    batched = part >= 0 and inb != 0
    i0 = lo
    while i0 < hi:
        if batched and i0 + _BATCH <= hi:
            _find_batch(i0, hi, pkeys, kmode, pshift, ib0, it0, itmask, bkeys, tables, ws, ss, gs, verify,
                        vp_w, vp_st, vp_en, vp_ch, vb_w, vb_st, vb_en, vb_ch, pf, pch)
            nk = _BATCH
        else:
            if pf and i0 + _PREFETCH_ROWS < hi:
                prefetch(pch + vp_st[0, i0 + _PREFETCH_ROWS])
            gs[0] = _find(i0, part, pkeys, pvalid, kmode, pmask, pshift, ib0, inb, it0, itmask, bkeys,
                          bstarts, tables, toffs, verify, vp_w, vp_st, vp_en, vp_ch, vb_w, vb_st, vb_en, vb_ch)
            nk = 1
        # a batch of rows that all match, in their probe positions: written a column at a
        # time (a line of each column in turn; row by row, the non-temporal stores of two or
        # more columns interleaved measured 3-4x slower here). A single row (an item's last
        # rows, a partition without build rows) takes the same two paths as a batch of one:
        # a third, row-at-a-time path compiled 1 s longer for rows that are rarely many
        whole = copy_only and o == i0
        if whole:
            for kk in range(nk):
                if gs[kk] < 0 and not misses_fill:
                    whole = False
                    break
        if whole:
            if eub:
                for kk in range(nk):
                    if gs[kk] >= 0:
                        bmatched[gs[kk]] = 1
            for k in range(na):
                kind = a_kind[k]
                src = a_src[k]
                dst = a_out[k]
                for kk in range(nk):
                    _put(dst, o + kk, _copy_value(kind, src, i0 + kk, gs[kk], a_fill[k], bkeys), False)
            if nstr != 0:
                for kk in range(nk):
                    _emit_strings(o + kk, i0 + kk, gs[kk], from_build, op_st, op_en, pch, ob_st, ob_en, bch,
                                  soffs, schars, spos)
            o += nk
            i0 += nk
            continue
        # the batch's output rows (matched, or every one with eup), packed from o on, a
        # column at a time: every output row where a row is not in its probe position
        cnt = 0
        for kk in range(nk):
            g = gs[kk]
            if g >= 0 or eup:
                sel[cnt] = kk
                cnt += 1
                if g >= 0 and eub:
                    bmatched[g] = 1
        in_place = o == i0 and cnt == nk      # then only the active rows need writing
        for k in range(na if in_place else nrows):
            r = active[k] if in_place else k
            for c in range(cnt):
                _put(outs[r], o + c, _emit_value(r, i0 + sel[c], gs[sel[c]], porig, borig, pcols,
                                                 bcols, bkeys, src_p, src_b, fill), False)
        if nstr != 0:
            for c in range(cnt):
                _emit_strings(o + c, i0 + sel[c], gs[sel[c]], from_build, op_st, op_en, pch, ob_st, ob_en,
                              bch, soffs, schars, spos)
        o += cnt
        i0 += nk
    counts[it] = o - lo
    for c in range(nstr):
        sbytes[it, c] = spos[c] - cap_bytes[it, c]
    return 0


@njit(**_OPTS)
def probe_direct(entry, probe, build, out, tally, cursor):
    """Probe and write in one pass, for build sides whose keys are all distinct (at most one
    output row per probe row) and a probe side scattered into partitions (every work item of
    one partition; in-place probes take :func:`small_match`). (:class:`ProbeSide`,
    :class:`BuildSide`, :class:`OutputRows`; :class:`Tally`: ``cap_bytes`` in, ``counts``,
    ``sbytes`` and ``bmatched`` out.)

    Item ``it`` writes its rows from row ``ilo[it]`` on (its rows never outgrow its positions)
    and its string bytes from ``cap_bytes[it, c]`` on (the bytes of all its probe keys fit
    there); ``counts[it]`` and ``sbytes[it, c]`` receive what it wrote, and
    :func:`compact_items` closes the gaps. Only the output rows listed in ``active`` need
    writing where a row stays at its probe position: the others already hold their probe value
    at every probe position (the scatter put it there). The output string columns take
    the spans ``op_*`` (probe) and ``ob_*`` (build); see :func:`unmatched_build_write` for the rest.
    """
    pcols = probe.cols
    bcols = build.cols
    eup = out.eup
    src_p = out.src_p
    src_b = out.src_b
    fill = out.fill
    outs = out.outs
    active = out.active
    nstr = out.soffs.shape[0]
    # the common case: every output row still to write at a matched row in its probe position
    # is a probe column, a build column, the key or a build side's validity (a left join's):
    # copy those without decoding the row codes (a_kind 0: probe column a_src at i, 1: build
    # column a_src at g, 2: the build key at g, 3: one)
    na = active.shape[0]
    a_out = np.empty(na, np.int64)
    a_src = np.zeros(na, np.int64)
    a_kind = np.full(na, -1, np.int64)
    a_fill = np.empty(na, np.int64)
    copy_only = na >= 0           # True, typed as a plain bool: one compile of _direct_item
    for k in range(na):
        r = active[k]
        a_out[k] = outs[r]
        a_fill[k] = fill[r]
        if src_p[r] >= 0:
            a_kind[k] = 0
            a_src[k] = pcols[src_p[r]]
        elif src_p[r] == SRC_MATCH_KEY:
            a_kind[k] = 2
        elif src_p[r] == SRC_NONE and src_b[r] >= 0:
            a_kind[k] = 1
            a_src[k] = bcols[src_b[r]]
        elif src_p[r] == SRC_NONE and src_b[r] == SRC_ONE:
            a_kind[k] = 3
        else:
            copy_only = False
    # an unmatched probe row that is an output row (eup) takes its probe columns and the fill
    # of the rest (as _emit_row does), unless a row is the matching build key
    misses_fill = eup
    for k in range(na):
        if a_kind[k] == 2:
            misses_fill = False
    spos = np.empty(nstr, np.int64)
    ws, ss, gs, bs, ts, ms = _batch_scratch()
    mine = np.zeros(2, np.int64)
    it = _claim(cursor, mine)
    while it < probe.ilo.shape[0]:
        call_entry(entry, (probe, build, out, tally, it, a_out, a_src, a_kind, a_fill, copy_only, misses_fill,
                           spos, ws, ss, gs, bs))
        it = _claim(cursor, mine)
    store_fence()


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
                wd, a = _row_width(outs[r])
                copy_bytes(a + wd * dst, a + wd * src, wd * n)
        for c in range(soffs.shape[0]):
            sb = cap_bytes[it, c]
            db = item_bytes[it, c]
            if sb != db:
                copy_bytes(schars[c] + db, schars[c] + sb, sbytes[it, c])
            if sb != db or src != dst:
                delta = db - sb
                for k in range(1, n + 1):
                    store_i64(soffs[c], dst + k, load_i64(soffs[c], src + k) + delta)


# --------------------------------------------------------------------------- small build sides
@njit(inline="always")
def _match_rows(lo, hi, pkeys, pvalid, kmode, verify, vp_w, vp_st, vp_en, vp_ch, bkeys, bstarts, tables, toffs,
                pmask, pshift, vb_w, vb_st, vb_en, vb_ch, match):
    # small_match's rows [lo, hi) one at a time: general keys (verified; unhashed when pkeys
    # is empty), which the word-key variants never have (they bind this name to a stub)
    for i in range(lo, hi):
        g = np.int64(-1)
        if pvalid.shape[0] == 0 or pvalid[i] != 0:
            if pkeys.shape[0] != 0:
                w = canon_word(pkeys[i], kmode)
            else:
                w = row_hash(vp_w, vp_st, vp_en, vp_ch, i)
            h = word_hash(w)
            p = np.int64(h & pmask)
            b0 = bstarts[p]
            if bstarts[p + 1] != b0:
                t0 = toffs[p]
                tmask = np.uint64(toffs[p + 1] - t0 - 1)
                s = slot_of(h, pshift, tmask)
                g = ht_walk(tables, t0, tmask, s, tables[t0 + s], bkeys, b0, w, kmode, verify, _E64,
                            vb_w, vb_st, vb_en, vb_ch, vp_w, vp_st, vp_en, vp_ch, i)
        match[i] = g


@njit(**_ITEM_OPTS)
def _small_match_item(probe, build, out, tally, it, ws, ss, gs, bs, ts, ms):
    # small_match's work item ``it`` (see _ITEM_KERNELS)
    pkeys = probe.keys
    pvalid = probe.valid
    kmode = probe.kmode
    verify = probe.verify
    vp_w = probe.w
    vp_st = probe.st
    vp_en = probe.en
    vp_ch = probe.ch
    ilo = probe.ilo
    ihi = probe.ihi
    bkeys = build.keys
    bstarts = build.starts
    tables = build.tables
    toffs = build.toffs
    nxt = build.nxt
    unique = build.unique
    pmask = build.pmask
    pshift = build.pshift
    vb_w = build.w
    vb_st = build.st
    vb_en = build.en
    vb_ch = build.ch
    eup = out.eup
    eub = out.eub
    match = tally.match
    bmatched = tally.bmatched
    counts = tally.counts
    nulls = pvalid.shape[0] != 0
    hashed = pkeys.shape[0] != 0
    batched = hashed and not verify
    lo = ilo[it]
    hi = ihi[it]
    if batched:
        # one call site for whole batches and the short last one: the count is not a constant
        # and the loops do not unroll (1M x 100k int64, in place: 5% slower, 0.5 ms a join),
        # but this item function compiles in 1.1 s, not 1.7-1.9 s with a second, unrolled site
        # (a first join 5.3 s, not 6.8 s)
        start = lo
        while start < hi:
            _find_batch_any(start, hi, pkeys, pvalid, kmode, pmask, pshift, bstarts, toffs, bkeys, tables,
                            ws, ss, gs, bs, ts, ms)
            for k in range(min(_BATCH, hi - start)):
                match[start + k] = gs[k]
            start += _BATCH
    else:
        _match_rows(lo, hi, pkeys, pvalid, kmode, verify, vp_w, vp_st, vp_en, vp_ch, bkeys, bstarts, tables,
                    toffs, pmask, pshift, vb_w, vb_st, vb_en, vb_ch, match)
    c = np.int64(0)
    for i in range(lo, hi):
        c += _tally_row(it, i, np.int64(match[i]), unique, nxt, eup, eub, bmatched, 0, _EI2, _EI2, _EI2)
    counts[it] = c
    return 0


@njit(**_OPTS)
def small_match(entry, probe, build, out, tally, cursor):
    """The count pass for a build side whose tables stay in cache, probe rows in place (work
    items of partition ``-1``): ``tally.match[i]`` (the head of probe position ``i``'s chain,
    or ``-1``), ``tally.counts[item]`` (output rows: the chains' lengths, and 1 for an
    unmatched row with ``out.eup``) and ``tally.bmatched`` (``out.eub``); the output bytes of
    string keys are :func:`small_string_bytes`'s. A general key's probe rows may come unhashed
    (``probe.keys`` empty): each row's :func:`~gpuframe.kernels.keys.row_hash` is taken here,
    as it is probed.

    Word keys are found :data:`_BATCH` rows at a time (:func:`_find_batch_any`, as
    :func:`probe_count` does): the loads of a batch are independent, so they overlap even where
    the tables sit in L2. 2026-12-06, 10M probe rows, int64 keys, in-place: 55 -> 41-47 ms on a
    ten-row build side, 99 -> 75 ms at 20k build rows, 150 -> 113 ms at 100k; a 1M-row build
    side's lookups 360 -> 242 ms (it is partitioned instead: :data:`_INPLACE_BUILD_BYTES`).
    General keys (verified against their bytes) go one row at a time. A threaded kernel (see
    _ITEM_KERNELS): the work items it claims through ``cursor``."""
    ws, ss, gs, bs, ts, ms = _batch_scratch()
    mine = np.zeros(2, np.int64)
    it = _claim(cursor, mine)
    while it < probe.ilo.shape[0]:
        call_entry(entry, (probe, build, out, tally, it, ws, ss, gs, bs, ts, ms))
        it = _claim(cursor, mine)


@njit(parallel=True, **_OPTS)
def small_string_bytes(probe, build, out, tally):
    """``tally.sbytes[item, c]``, the output bytes of string key column ``c`` (probe spans
    ``out.pst``/``out.pen``) of every work item, from ``tally.match`` as :func:`small_match`
    left it. A pass of its own, run only when those bytes are written: a join whose output is
    the probe side in its own order takes the probe's string columns, and the sums, kept in
    :func:`small_match`'s loop, cost the 10M x 10k string-key join a sixth of its probe."""
    ilo = probe.ilo
    ihi = probe.ihi
    nxt = build.nxt
    unique = build.unique
    eup = out.eup
    op_st = out.pst
    op_en = out.pen
    match = tally.match
    sbytes = tally.sbytes
    nstr = sbytes.shape[1]
    for it in prange(ilo.shape[0]):
        for i in range(ilo[it], ihi[it]):
            _tally_row(it, i, np.int64(match[i]), unique, nxt, eup, False, _E8, nstr, sbytes, op_st, op_en)


# --------------------------------------------------------------------------- flat lookups
# A build side of distinct word keys probed in place reads a *flat* table: every slot of every
# partition's table as 16 bytes, the key word beside the build position, so that a lookup is
# one cache line where the int32 table and the key words cost two dependent misses. Each probe
# row's first slot is computed and prefetched _FLAT_AHEAD rows before the row is resolved (a
# ring of _FLAT_RING slots), so that many misses are in flight at once. A filter of one
# 64-bit word per 8 slots (two bits a key, by its first slot) rules most absent keys out before
# their slot is fetched: 2026-12-07, 10M probe rows of which half miss against 1M build keys,
# flat_match 235 -> 181 ms (medians of 9, interleaved); every row matching, unchanged within the
# noise (101 / 109 ms, 235 / 248 ms).
_FLAT_AHEAD = 16
_FLAT_RING = 32              # a power of two, at least _FLAT_AHEAD


@njit(**_ROWS_OPTS)
def flat_slots(tables, toffs, starts, bkeys, kmode, pshift, flat, bits, cursor):
    """The flat table of a build side whose key words are all distinct: ``flat[x, 0]`` the
    canonical key word of the build row in slot ``x`` of the partitions' tables (``tables``,
    slices ``toffs``; partition ``p``'s rows from build position ``starts[p]``), ``flat[x, 1]``
    its global build position, ``-1`` for an empty slot; and its filter ``bits``: word
    ``x >> 3`` holds two bits (:func:`_filter_bits`) of every key whose first slot is ``x``.
    A table's slots are a multiple of 16 from a multiple of 16, so that each filter word
    belongs to one partition (one thread). A threaded kernel over the partitions it claims
    through ``cursor``."""
    nparts = toffs.shape[0] - 1
    p = claim_one(cursor)
    while p < nparts:
        b0 = starts[p]
        t0 = toffs[p]
        tmask = np.uint64(toffs[p + 1] - t0 - 1)
        for x in range(t0 >> 3, toffs[p + 1] >> 3):
            bits[x] = 0
        for x in range(t0, toffs[p + 1]):
            t = tables[x]
            if t == EMPTY:
                flat[x, 0] = 0
                flat[x, 1] = -1
            else:
                w = canon_word(bkeys[b0 + t], kmode)
                flat[x, 0] = np.int64(w)
                flat[x, 1] = b0 + np.int64(t)
                h = word_hash(w)
                x0 = t0 + slot_of(h, pshift, tmask)
                bits[x0 >> 3] |= _filter_bits(h)
        p = claim_one(cursor)


@njit(inline="always")
def _filter_bits(h):
    # a key's two filter bits, from hash bits no partition or slot uses (52-63)
    return (np.uint64(1) << ((h >> np.uint64(52)) & np.uint64(63))) | \
        (np.uint64(1) << ((h >> np.uint64(58)) & np.uint64(63)))


@njit(inline="always")
def _flat_first(pkeys, pvalid, kmode, pmask, pshift, toffs, bits, i):
    # the first flat-table slot of probe row i's key, or -1: a null key, an empty partition, or
    # a key the filter rules out (its word lacks one of the key's bits)
    if pvalid.shape[0] != 0 and pvalid[i] == 0:
        return np.int64(-1)
    h = word_hash(canon_word(pkeys[i], kmode))
    p = np.int64(h & pmask)
    t0 = toffs[p]
    n = toffs[p + 1] - t0
    if n == 0:
        return np.int64(-1)
    x = t0 + slot_of(h, pshift, np.uint64(n - 1))
    f = _filter_bits(h)
    if bits[x >> 3] & f != f:
        return np.int64(-1)
    return x


@njit(inline="always")
def _flat_next(x, w, pmask, toffs):
    # the slot after x in the probe sequence of canonical word w (linear, inside w's partition)
    p = np.int64(word_hash(w) & pmask)
    t0 = toffs[p]
    return t0 + ((x - t0 + 1) & (toffs[p + 1] - t0 - 1))


@njit(**_ROWS_OPTS)
def flat_match(pkeys, pvalid, kmode, pmask, pshift, toffs, flat, bits, eup, eub, ilo, ihi, match, bmatched,
               counts, rings, cursor):
    """:func:`small_match` for a build side of distinct word keys, from its flat table
    (:func:`flat_slots`) and its filter ``bits``, probe rows in place: ``match[i]``, the global build position of
    probe position ``i``'s key or ``-1``; ``counts[item]``, the item's output rows (its
    matches, every row with ``eup``); ``bmatched`` flagged with ``eub``. Rows are resolved in
    order, each one's slot prefetched :data:`_FLAT_AHEAD` rows earlier. A threaded kernel over
    the work items it claims through ``cursor``; ``rings``: scratch, :data:`_FLAT_RING` words an
    item. As a numba ``prange`` loop it took 4 s of a first join's compile."""
    base = _addr(flat)
    rmask = _FLAT_RING - 1
    it = claim_one(cursor)
    while it < ilo.shape[0]:
        lo = ilo[it]
        hi = ihi[it]
        ring = rings[it]
        for i in range(lo, min(hi, lo + _FLAT_AHEAD)):
            x = _flat_first(pkeys, pvalid, kmode, pmask, pshift, toffs, bits, i)
            ring[i & rmask] = x
            if x >= 0:
                prefetch(base + 16 * x)
        c = np.int64(0)
        for i in range(lo, hi):
            j = i + _FLAT_AHEAD
            if j < hi:
                xj = _flat_first(pkeys, pvalid, kmode, pmask, pshift, toffs, bits, j)
                ring[j & rmask] = xj
                if xj >= 0:
                    prefetch(base + 16 * xj)
            x = ring[i & rmask]
            g = np.int64(-1)
            if x >= 0:
                w = canon_word(pkeys[i], kmode)
                pos = flat[x, 1]
                while pos >= 0:
                    if flat[x, 0] == np.int64(w):
                        g = pos
                        break
                    x = _flat_next(x, w, pmask, toffs)
                    pos = flat[x, 1]
            match[i] = g
            if g >= 0:
                c += 1
                if eub:
                    bmatched[g] = 1
            elif eup:
                c += 1
        counts[it] = c
        it = claim_one(cursor)


@njit(inline="always")
def _chain_next(t, unique, nxt):
    # the build position after ``t`` in its chain of equal keys, or -1 (after a miss, t < 0, or
    # a unique key: one output row)
    return np.int64(-1) if t < 0 or unique else np.int64(nxt[t])


# dense write sources (write_dense): a probe column, the matching build key (every row matches),
# one, a build column, the build key, the build side's presence (the last three: the fill where
# a row has no match)
DENSE_PROBE, DENSE_MATCH_KEY, DENSE_ONE, DENSE_BUILD, DENSE_BUILD_KEY, DENSE_BUILD_ONE = 0, 1, 2, 3, 4, 5


@njit(**_ROWS_OPTS)
def write_dense(match, kinds, srcs, fills, outs, bkeys, ilo, ihi, cursor):
    """The write pass of a unique build side's join where every probe row gives one output
    row, in its probe position (:func:`small_match` or :func:`flat_match` found ``match``;
    every row matched, or unmatched probe rows are kept): output row ``r`` (address
    ``outs[r]``, as :func:`_put` takes it) from source ``kinds[r]`` (``DENSE_*``; column
    address ``srcs[r]``, fill ``fills[r]``), a column at a time over each work item
    ``[ilo, ihi)``. A build value is read at ``max(t, 0)`` and chosen without a branch, so
    that matches and misses alternating at random (a left join) do not mispredict every
    other row, as the row codes of :func:`write_items` did (10M rows, half of them missing,
    against 1M build keys: 140-240 -> 62 ms). A threaded kernel over the work items it claims
    through ``cursor``."""
    it = claim_one(cursor)
    while it < ilo.shape[0]:
        lo = ilo[it]
        hi = ihi[it]
        for r in range(kinds.shape[0]):
            a = outs[r]
            kind = kinds[r]
            src = srcs[r]
            fv = fills[r]
            for i in range(lo, hi):
                t = np.int64(match[i])
                tt = max(t, np.int64(0))
                if kind == DENSE_PROBE:
                    v = load_i64(src, i)
                elif kind == DENSE_BUILD:
                    v = load_i64(src, tt)
                elif kind == DENSE_MATCH_KEY or kind == DENSE_BUILD_KEY:
                    v = np.int64(bkeys[tt])
                else:
                    v = np.int64(1)
                _put(a, i, fv if kind >= DENSE_BUILD and t < 0 else v, True)
        store_fence()
        it = claim_one(cursor)


@njit(**_ITEM_OPTS)
def _write_item(probe, build, out, tally, it, spos):
    # write_items' work item ``it`` (see _ITEM_KERNELS); ``spos``: scratch, one word a string column
    ilo = probe.ilo
    ihi = probe.ihi
    porig = probe.orig
    pcols = probe.cols
    vp_ch = probe.ch
    nxt = build.nxt
    borig = build.orig
    bcols = build.cols
    bkeys = build.keys
    vb_ch = build.ch
    unique = build.unique
    eup = out.eup
    src_p = out.src_p
    src_b = out.src_b
    fill = out.fill
    outs = out.outs
    vp_st = out.pst
    vp_en = out.pen
    vb_st = out.bst
    vb_en = out.ben
    from_build = out.from_build
    soffs = out.soffs
    schars = out.schars
    match = tally.match
    item_off = tally.item_off
    item_bytes = tally.item_bytes
    pch = _addr(vp_ch)
    bch = _addr(vb_ch)
    nstr = soffs.shape[0]
    nrows = src_p.shape[0]
    lo = ilo[it]
    hi = ihi[it]
    for r in range(nrows):
        if outs[r] == 0:
            continue
        o = item_off[it]
        for i in range(lo, hi):
            t = np.int64(match[i])
            if t < 0 and not eup:
                continue
            # the row's matches in chain order; one row for a miss (t < 0) or a unique key. One
            # call site of the inlined _emit_row (three took 3x its compile, no faster)
            while True:
                _emit_row(r, o, i, t, porig, borig, pcols, bcols, bkeys, src_p, src_b, fill, outs)
                o += 1
                t = _chain_next(t, unique, nxt)
                if t < 0:
                    break
    if nstr != 0:
        for c in range(nstr):
            spos[c] = item_bytes[it, c]
        o = item_off[it]
        for i in range(lo, hi):
            t = np.int64(match[i])
            if t < 0 and not eup:
                continue
            while True:
                _emit_strings(o, i, t, from_build, vp_st, vp_en, pch, vb_st, vb_en, bch, soffs, schars, spos)
                o += 1
                t = _chain_next(t, unique, nxt)
                if t < 0:
                    break
    return 0


@njit(**_OPTS)
def write_items(entry, probe, build, out, tally, cursor):
    """The write pass after :func:`probe_count` or :func:`small_match`: every work item's
    output rows from ``tally.item_off[item]`` on (each probe row's match chain from
    ``tally.match``), one output row (column) at a time, then its string key bytes from
    ``tally.item_bytes[item, c]`` on. An output row whose address in ``out.outs`` is 0 is left
    out (the caller needs none: the output is the probe side in its own order). The unmatched
    build rows of ``out.eub`` are :func:`unmatched_build_write`'s. (Row codes, string spans and
    the rest as there.)

    A column at a time: one row code for a whole loop, and an item's probe rows, its
    partition's build rows and chains stay in cache while each column is written (the
    many-to-many int64 join at 1M rows wrote 3.2x faster than row by row). A threaded kernel
    (see _ITEM_KERNELS): the work items it claims through ``cursor``."""
    spos = np.zeros(out.soffs.shape[0], np.int64)
    mine = np.zeros(2, np.int64)
    it = _claim(cursor, mine)
    while it < probe.ilo.shape[0]:
        call_entry(entry, (probe, build, out, tally, it, spos))
        it = _claim(cursor, mine)
    store_fence()



# --------------------------------------------------------------------------- item entries
_T_U64 = types.Array(types.uint64, 1, "C")
_T_I64 = types.Array(types.int64, 1, "C")
_BATCH_TYPES = (_T_U64, _T_I64, _T_I64, _T_I64, _T_I64, _T_U64)   # _batch_scratch
# threaded kernel -> its item function and the types of what the kernel passes it after the
# records it was given and the item number (see _ITEM_KERNELS)
_ITEMS = {
    build_tables: (_build_item, ()),
    probe_count: (_count_item, _BATCH_TYPES),
    small_match: (_small_match_item, _BATCH_TYPES),
    write_items: (_write_item, (_T_I64,)),
    probe_direct: (_direct_item, (_T_I64,) * 4 + (types.boolean,) * 2 + (_T_I64,) + _BATCH_TYPES[:4]),
}
def item_entry(kernel, verify: bool, records: tuple) -> tuple[int, int]:
    """The ``entry`` argument of threaded kernel ``kernel`` called with ``records`` (its
    arguments between ``entry`` and ``cursor``): the address and tag of its item function
    (:func:`for_keys` ``verify``) compiled (or loaded from numba's cache) for the records'
    types, the item number and the kernel's scratch
    (:func:`~gpuframe.kernels.cpu_intrinsics.native_entry_for`), which the kernel calls
    through :func:`call_entry`."""
    item, extra = _ITEMS[kernel]
    return native_entry_for(for_keys(item, verify), records, (types.int64,) + extra, kernel=kernel)


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
            copy_short(dst + d, a + ast[ia[o]], n)
        elif ib[o] >= 0:
            copy_short(dst + d, b + bst[ib[o]], n)
