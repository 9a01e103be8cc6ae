"""CPU drivers of grouping (unique, set operations, groupby-aggregate).

Group ids: one key column's rows are grouped per chunk of rows (one chunk per thread) in a
small table that holds the key itself (:func:`column_local_groups`: a fixed-width key's word, a
string's bytes up to 15 of them, a longer string's hash confirmed against its bytes, a null one
group), and the chunks' groups merged in row order (:func:`column_merge_groups`,
:func:`renumber`); several key columns are grouped one at a time and their group ids combined
into one int64 word per row (:func:`combine_ids`), grouped the same way
(:mod:`gpuframe.backends.cpu.groups` drives it). The join's prepared keys serve too: a table per
chunk (:func:`local_groups`) for a fixed-width key without nulls, and past the per-chunk group
limit the join's radix-partitioned chained tables, each chain a group in input order
(:func:`group_first`), numbered by their first rows (:func:`dense_heads` and the two after it);
where only the
groups' first rows are wanted (``unique``, ``intersect``, ``difference``), the chains' heads
(:func:`head_rows`, :func:`flagged_rows`).

The aggregations take ``groups``, a row's group as :func:`group_of` reads it: the dense group
id of every row, or integer keys that span few values read as their slots (no group ids: see
"row groups" below), and the number of groups (or slots):

* sums, counts, means, variances, minima and maxima run over chunks of rows, one chunk per
  thread with its own accumulators (rows a cache line apart), merged at the end (the order of
  values and strings is the per-row :func:`gpuframe.kernels.group.value_less` / ``span_cmp``
  the CUDA kernels use too) (a variance takes a second pass over the squared deviations from
  the group means, for accuracy); a group's sum and count lie side by side, and with many
  groups min/max keep the best value beside its row; :func:`group_sums` makes the sizes, sums
  and non-null counts of up to four columns in one pass, a group's accumulators side by side;
* a median lays the values out by group with a stable counting sort (:func:`group_values`),
  then selects each group's middle rank(s) with a quickselect, one group per iteration of a
  parallel loop.

Every value is read as an int64 or float64 word (the caller widens narrower types) with a
validity byte per row (empty: no nulls); nulls are skipped, as SQL does.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import overload

from . import hashing as _hashing
from . import keys as _keys
from . import loads as _loads
from .group import span_cmp, value_less
from .hashing import canonical_f64_bits
from .cpu_intrinsics import call_entry, claim, claim_one, load_f64, load_i64, load_u8_at, row_block
from .hashtable import EMPTY
from .jit_cache import njit
from .per_row import cpu

_canonical_f64_bits = cpu(canonical_f64_bits)
_canon_word, _word_hash, _rows_equal = cpu(_keys.canon_word), cpu(_keys.word_hash), cpu(_keys.rows_equal)
_value_less = cpu(value_less)
_span_cmp = cpu(span_cmp)

_OPTS = dict(cache=True, nogil=True, boundscheck=False)
_NO_NRT = dict(_OPTS, _nrt=False)    # kernels that allocate nothing (see cpu_intrinsics.claim_one)


def nchunks_for(n: int) -> int:
    """Row chunks of the aggregations: one per thread, fewer for small inputs."""
    return max(1, min(numba.get_num_threads(), n // 16384 + 1))


# --------------------------------------------------------------------------- group ids
@njit(inline="always")
def _lookup(tab, tmask, wd, verify, w, st, en, ch, firsts, base, j, h):
    # the slot of row j's group (canonical key word ``wd``, hash ``h``) in ``tab``: pairs of
    # (key word, group + 1; 0 empty), the key in the slot; a general key's match confirmed
    # against the group's first row (firsts[base + group]). The slot holding it, or the empty
    # slot where it goes. (:func:`_fill` writes it out in its row loop.)
    s = np.int64(h & np.uint64(tmask))
    while True:
        e = np.int64(tab[2 * s + 1])
        if e == 0:
            break
        if tab[2 * s] == wd and (not verify or _equal_rows(w, st, en, ch, firsts[base + e - 1], j)):
            break
        s = (s + 1) & tmask
    return s


@njit(**_OPTS)
def _equal_rows(w, st, en, ch, a, b):
    # a general key's rows compared: a call, not inlined into the probe loop
    return _rows_equal(w, st, en, ch, a, w, st, en, ch, b)


@njit(inline="always")
def _grown(tab):
    # the table with twice the slots, every group moved to its slot there
    size = tab.shape[0]           # 2 words a slot: the new table has twice the slots
    new = np.zeros(2 * size, np.uint64)
    tmask = size - 1
    for s in range(size // 2):
        e = tab[2 * s + 1]
        if e != 0:
            wd = tab[2 * s]
            t = np.int64(_word_hash(wd) & np.uint64(tmask))
            while new[2 * t + 1] != 0:
                t = (t + 1) & tmask
            new[2 * t] = wd
            new[2 * t + 1] = e
    return new


@njit(**_OPTS)
def _fill(tab, keys, kmode, verify, w, st, en, ch, lfirst, base, j0, j1, count, cap, lgid):
    """Rows ``j0..j1-1`` of a chunk into its table ``tab`` (not replaced here, so the loop keeps
    its pointers in registers), each row's group within the chunk into ``lgid``. Returns ``(next
    row, groups, status)``: status 0 done, 1 the table must grow first, 2 more than ``cap``
    groups."""
    tmask = tab.shape[0] // 2 - 1
    for j in range(j0, j1):
        wd = _canon_word(keys[j], kmode)
        # _lookup, written out: numba's inlining of it made this loop ten times slower
        s = np.int64(_word_hash(wd) & np.uint64(tmask))
        while True:
            e = np.int64(tab[2 * s + 1])
            if e == 0:
                break
            if tab[2 * s] == wd:
                if not verify:
                    break
                if _equal_rows(w, st, en, ch, lfirst[base + e - 1], j):
                    break
            s = (s + 1) & tmask
        if e == 0:
            if count >= cap:
                return j, count, 2
            lfirst[base + count] = j
            count += 1
            tab[2 * s] = wd
            tab[2 * s + 1] = count
            lgid[j] = count - 1
            if 4 * count > tab.shape[0]:
                return j + 1, count, 1
        else:
            lgid[j] = e - 1
    return j1, count, 0


@njit(**_OPTS)
def _chunk(keys, kmode, verify, w, st, en, ch, lfirst, base, j0, j1, cap, lgid):
    """A whole chunk through :func:`_fill`, the table grown between calls. Returns its number of
    groups, or -1 past ``cap``."""
    tab = np.zeros(2 * 1024, np.uint64)
    j = j0
    count = np.int64(0)    # not a literal 0: one compile of the fill for both calls
    while True:
        j, count, status = _fill(tab, keys, kmode, verify, w, st, en, ch, lfirst, base, j, j1, count, cap, lgid)
        if status == 0:
            return count
        if status == 2:
            return -1
        tab = _grown(tab)


@njit(**_OPTS)
def local_groups(keys, kmode, verify, w, st, en, ch, nchunks, cap, lgid, lfirst, lcount, cursor):
    """Group each chunk of rows on its own thread with a small table (in cache while the chunk
    has few groups): ``lgid[row]`` = the row's group within its chunk, chunk ``c``'s groups'
    first rows in ``lfirst[c * step:]`` (in the order of their first rows), ``lcount[c]`` of them.
    Returns 0, or 1 when a chunk it claimed found more than ``cap`` groups (then nothing is
    usable). A threaded kernel (``gpuframe.backends.cpu._target.run_threads``)."""
    n = keys.shape[0]
    step = (n + nchunks - 1) // nchunks
    bad = 0
    c = claim_one(cursor)
    while c < nchunks:
        base = c * step
        k = _chunk(keys, kmode, verify, w, st, en, ch, lfirst, base, base, min(n, base + step), cap, lgid)
        if k < 0:
            bad = 1
            k = 0
        lcount[c] = k
        c = claim_one(cursor)
    return bad


@njit(**_OPTS)
def merge_groups(keys, kmode, verify, w, st, en, ch, nchunks, lfirst, lcount, gmap, first):
    """The chunks' groups merged, chunk by chunk in row order (so the groups are numbered in the
    order of their first rows): ``gmap[c * step + g]`` = the group of chunk ``c``'s group ``g``,
    ``first[group]`` its first row. Returns the number of groups."""
    n = keys.shape[0]
    step = (n + nchunks - 1) // nchunks
    total = 0
    for c in range(nchunks):
        total += lcount[c]
    size = 16
    while size < 2 * total:
        size *= 2
    tab = np.zeros(2 * size, np.uint64)
    tmask = size - 1
    ngroups = 0
    for c in range(nchunks):
        base = c * step
        for g in range(lcount[c]):
            j = lfirst[base + g]
            wd = _canon_word(keys[j], kmode)
            s = _lookup(tab, tmask, wd, verify, w, st, en, ch, first, 0, j, _word_hash(wd))
            if tab[2 * s + 1] == 0:
                first[ngroups] = j
                ngroups += 1
                tab[2 * s] = wd
                tab[2 * s + 1] = ngroups
            gmap[base + g] = np.int64(tab[2 * s + 1]) - 1
    return ngroups


@njit(**_NO_NRT)
def renumber(gmap, gid, lo, hi, at, cursor):
    """``gid[row] = gmap[at[k] + gid[row]]`` for the rows ``lo[k]:hi[k]`` of each piece ``k`` it
    claims: a chunk's own group ids become the merged groups, in place (the caller cuts the
    chunks whose groups moved into pieces, a few per thread: with two chunks on two threads, the
    second chunk's rows alone took as long as both)."""
    k = claim_one(cursor)
    while k < lo.shape[0]:
        base = at[k]
        for j in range(np.uint64(lo[k]), np.uint64(hi[k])):
            gid[j] = gmap[base + gid[j]]
        k = claim_one(cursor)


# --------------------------------------------------------------------------- one key column
# A single key column's rows grouped with the key itself in the slot: two words per key and no
# row hash, no normalised key arrays, no verification call for every row. Several key columns
# are grouped one column at a time and their group ids combined into one int64 word per row
# (gpuframe.backends.cpu.groups), which is grouped the same way.
#
# A row's key, (w0, w1):
# * a fixed-width key (``keys``, ``offs`` and ``chars`` None): its canonical word (``kmode``),
#   ``(word, 0)``;
# * a string key (``offs`` and ``chars``; ``keys`` empty): a string of at most 15 bytes is its bytes, ``(bytes 0-7, bytes 8-14 |
#   length << 56)``, compared exactly; a longer one ``(hash of its bytes, LONG | length)``,
#   confirmed against the bytes of the group's first row;
# * a null row (``valid[j] == 0``; ``valid`` empty: no nulls) ``(0, NULL_KEY)``, one group.
SHORT_MAX = 15
NULL_KEY = np.uint64(1) << np.uint64(62)
LONG_KEY = np.uint64(1) << np.uint64(63)
_LEN_SHIFT = np.uint64(56)
_W1_MIX = np.uint64(0xC2B2AE3D27D4EB4F)
_STR_SEED = np.uint64(0x6A09E667F3BCC909)
_FIB = np.uint64(0x9E3779B97F4A7C15)
_W2_MIX = np.uint64(0x165667B19E3779F9)
_DENSE_MIN = 16384
_DENSE_ROWS = 4
_load_word, _load_tail, _hash_bytes = cpu(_loads.load_word), cpu(_loads.load_tail), cpu(_hashing.hash_bytes)
_spans_equal = cpu(_keys.spans_equal)


@njit(inline="always")
def _col_key(keys, kmode, valid, offs, chars, j):
    """Row ``j``'s key ``(w0, w1)`` (see above)."""
    if valid.shape[0] != 0 and valid[j] == 0:
        return np.uint64(0), NULL_KEY
    if offs is None:
        return _canon_word(keys[j], kmode), np.uint64(0)
    s = np.int64(offs[j])
    e = np.int64(offs[j + 1])
    ln = e - s
    if ln > SHORT_MAX:
        return _hash_bytes(chars, s, e, _STR_SEED), LONG_KEY | np.uint64(ln)
    tag = np.uint64(ln) << _LEN_SHIFT
    if ln == 0:
        return np.uint64(0), tag
    if ln < 8:
        return _load_tail(chars, s, e), tag
    w0 = _load_word(chars, s)
    if ln == 8:
        return w0, tag
    return w0, _load_tail(chars, s + 8, e) | tag


@njit(inline="always")
def _prev_of(prev, j):
    # the row's group among the columns before (``prev`` empty: no columns before; an array,
    # not None, so that each kernel compiles once for both)
    if prev.shape[0] == 0:
        return np.uint64(0)
    return np.uint64(prev[j])


@njit(inline="always")
def _col_slot(w0, w1, w2, shift):
    # the slot of key (w0, w1, w2) in a table of 2**(64 - shift) slots: Fibonacci hashing (one
    # multiply, the product's high bits) of the words mixed
    return np.int64(((w0 ^ (w1 * _W1_MIX) ^ (w2 * _W2_MIX)) * _FIB) >> shift)


@njit(inline="always")
def _shift_of(size):
    # 64 - log2(size) for a power of two ``size``
    b = 0
    while (1 << b) < size:
        b += 1
    return np.uint64(64 - b)


@njit(**_OPTS)
def _same_long(offs, chars, a, b):
    # two long strings (their hashes and lengths equal) compared byte for byte
    return _spans_equal(chars, np.int64(offs[a]), np.int64(offs[a + 1]), chars, np.int64(offs[b]),
                        np.int64(offs[b + 1]))


@njit(**_OPTS)
def _col_fill(tab, keys, kmode, valid, offs, chars, prev, lfirst, base, j0, j1, count, cap, lgid):
    """Rows ``j0..j1-1`` of a chunk into its table ``tab`` (four words a slot: w0, w1, the
    row's group among the columns before, group + 1; 0 empty), as :func:`_fill` does for a
    prepared key. Returns ``(next row, groups, status)``: status 0 done, 1 the table must grow
    first, 2 more than ``cap`` groups, or, with ``prev``, past :data:`_DENSE_MIN` groups more
    than one for every :data:`_DENSE_ROWS` rows so far (the (previous group, key) pairs too
    many for a table per chunk: the column grouped alone and the ids combined do better)."""
    tmask = tab.shape[0] // 4 - 1
    shift = _shift_of(tmask + 1)
    for j in range(j0, j1):
        # _col_key, written out: numba's inlining of a function returning a pair made this
        # loop three times slower
        if valid.shape[0] != 0 and valid[j] == 0:
            w0 = np.uint64(0)
            w1 = NULL_KEY
        elif offs is None:        # a fixed-width key (numba prunes the other branch)
            w0 = _canon_word(keys[j], kmode)
            w1 = np.uint64(0)
        else:
            p = np.int64(offs[j])
            q = np.int64(offs[j + 1])
            ln = q - p
            w1 = np.uint64(ln) << _LEN_SHIFT
            if ln > SHORT_MAX:
                w0 = _hash_bytes(chars, p, q, _STR_SEED)
                w1 = LONG_KEY | np.uint64(ln)
            elif ln == 0:
                w0 = np.uint64(0)
            elif ln < 8:
                w0 = _load_tail(chars, p, q)
            else:
                w0 = _load_word(chars, p)
                if ln > 8:
                    w1 |= _load_tail(chars, p + 8, q)
        w2 = _prev_of(prev, j)
        s = _col_slot(w0, w1, w2, shift)
        while True:
            e = np.int64(tab[4 * s + 3])
            if e == 0:
                break
            if tab[4 * s] == w0 and tab[4 * s + 1] == w1 and tab[4 * s + 2] == w2:
                if offs is None or w1 < LONG_KEY:
                    break
                if _same_long(offs, chars, lfirst[base + e - 1], j):
                    break
            s = (s + 1) & tmask
        if e == 0:
            if count >= cap or (prev.shape[0] != 0 and count >= _DENSE_MIN and _DENSE_ROWS * count > j - base):
                return j, count, 2
            lfirst[base + count] = j
            count += 1
            tab[4 * s] = w0
            tab[4 * s + 1] = w1
            tab[4 * s + 2] = w2
            tab[4 * s + 3] = count
            lgid[j] = count - 1
            if 2 * count > tmask + 1:
                return j + 1, count, 1
        else:
            lgid[j] = e - 1
    return j1, count, 0


@njit(**_OPTS)
def _col_grown(tab):
    # the table with twice the slots, every group moved to its slot there
    size = tab.shape[0] // 4
    new = np.zeros(8 * size, np.uint64)
    tmask = 2 * size - 1
    shift = _shift_of(2 * size)
    for s in range(size):
        e = tab[4 * s + 3]
        if e != 0:
            w0 = tab[4 * s]
            w1 = tab[4 * s + 1]
            w2 = tab[4 * s + 2]
            t = _col_slot(w0, w1, w2, shift)
            while new[4 * t + 3] != 0:
                t = (t + 1) & tmask
            new[4 * t] = w0
            new[4 * t + 1] = w1
            new[4 * t + 2] = w2
            new[4 * t + 3] = e
    return new


@njit(**_OPTS)
def _col_chunk(keys, kmode, valid, offs, chars, prev, lfirst, base, j0, j1, cap, lgid):
    tab = np.zeros(4 * 256, np.uint64)
    j = j0
    count = np.int64(0)    # not a literal 0: one compile of the fill for both calls
    while True:
        j, count, status = _col_fill(tab, keys, kmode, valid, offs, chars, prev, lfirst, base, j, j1, count, cap,
                                     lgid)
        if status == 0:
            return count
        if status == 2:
            return -1
        tab = _col_grown(tab)


@njit(**_OPTS)
def column_local_groups(keys, kmode, valid, offs, chars, prev, n, nchunks, cap, lgid, lfirst, lcount, cursor):
    """One key column's rows grouped per chunk (one chunk per thread), as
    :func:`local_groups` does for prepared keys; with ``prev`` (the rows' group ids by the
    columns before, else empty) a row's group is that of its (previous group, key) pair. Returns
    0, or 1 when a chunk it claimed found more than ``cap`` groups (then nothing is usable)."""
    step = (n + nchunks - 1) // nchunks
    bad = 0
    c = claim_one(cursor)
    while c < nchunks:
        base = c * step
        k = _col_chunk(keys, kmode, valid, offs, chars, prev, lfirst, base, base, min(n, base + step), cap, lgid)
        if k < 0:
            bad = 1
            k = 0
        lcount[c] = k
        c = claim_one(cursor)
    return bad


@njit(**_OPTS)
def column_merge_groups(keys, kmode, valid, offs, chars, prev, n, nchunks, lfirst, lcount, gmap, first):
    """The chunks' groups merged in row order, as :func:`merge_groups` does. Returns the number
    of groups."""
    step = (n + nchunks - 1) // nchunks
    total = 0
    for c in range(nchunks):
        total += lcount[c]
    size = 16
    while size < 2 * total:
        size *= 2
    tab = np.zeros(4 * size, np.uint64)
    tmask = size - 1
    shift = _shift_of(size)
    ngroups = 0
    for c in range(nchunks):
        base = c * step
        for g in range(lcount[c]):
            j = lfirst[base + g]
            w0, w1 = _col_key(keys, kmode, valid, offs, chars, j)
            w2 = _prev_of(prev, j)
            s = _col_slot(w0, w1, w2, shift)
            while True:
                e = np.int64(tab[4 * s + 3])
                if e == 0:
                    break
                if tab[4 * s] == w0 and tab[4 * s + 1] == w1 and tab[4 * s + 2] == w2:
                    if offs is None or w1 < LONG_KEY:
                        break
                    if _same_long(offs, chars, first[e - 1], j):
                        break
                s = (s + 1) & tmask
            if e == 0:
                first[ngroups] = j
                ngroups += 1
                tab[4 * s] = w0
                tab[4 * s + 1] = w1
                tab[4 * s + 2] = w2
                tab[4 * s + 3] = ngroups
                e = ngroups
            gmap[base + g] = e - 1
    return ngroups


@njit(**_OPTS)
def dense_word_ids(words, card, gid, first):
    """Group ids of words that are all in ``0..card-1`` (the combined group ids of several
    columns), by direct address instead of a hash table: ``gid[row]`` numbered in the order of
    the groups' first rows, ``first[group]`` that row. Returns the number of groups."""
    seen = np.full(card, -1, gid.dtype)
    ngroups = 0
    for j in range(words.shape[0]):
        w = words[j]
        g = seen[w]
        if g < 0:
            g = ngroups
            seen[w] = g
            first[g] = j
            ngroups += 1
        gid[j] = g
    return ngroups


@njit(**_NO_NRT)
def combine_ids(a, b, kb, out, cursor):
    """``out[j] = a[j] * kb + b[j]``: two columns' group ids as one int64 word (the caller
    checks that the product of the group counts fits); ``run_rows``."""
    n = a.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        for j in range(lo, hi):
            out[j] = np.int64(a[j]) * kb + np.int64(b[j])
        lo, hi = row_block(cursor, n)


@njit(**_NO_NRT)
def group_first(starts, nparts, toffs, tables, nxt, orig, rep, gcount, cursor):
    """``rep[row]`` = the first row of ``row``'s group, for every row of every partition's
    chains; ``gcount[p]`` = the groups of partition ``p``. ``orig`` maps build positions to rows
    (empty: the identity). A threaded kernel over the partitions it claims."""
    p = claim_one(cursor)
    while p < nparts:
        b0 = starts[p]
        t0 = toffs[p]
        size = toffs[p + 1] - t0
        g = 0
        for s in range(size):
            h = tables[t0 + s]
            if h == EMPTY:
                continue
            g += 1
            pos = b0 + np.int64(h)
            first = orig[pos] if orig.shape[0] != 0 else pos
            while pos != EMPTY:
                r = orig[pos] if orig.shape[0] != 0 else pos
                rep[r] = first
                pos = np.int64(nxt[pos])
        gcount[p] = g
        p = claim_one(cursor)


@njit(**_OPTS)
def head_rows(starts, nparts, nxt, orig, flags, want, keep, cursor):
    """``keep[row] = 1`` for the first row of every group: the head of every chain of the
    partitioned tables (a chain is a group in position order: its head is the one position of
    the chain no ``nxt`` points to); with ``flags`` (one per build position; empty: every
    group) only the groups whose head has ``flags[pos] == want`` (the probe's ``bmatched``,
    which marks the head of the chain a probe row finds). ``orig`` maps build positions to rows (empty: the
    identity). (Reading a partition's ``nxt`` measured 2x faster than scanning its table's
    slots, which are 2-4 times as many.) A threaded kernel over the partitions it claims."""
    check_flags = flags.shape[0] != 0
    p = claim_one(cursor)
    while p < nparts:
        b0 = starts[p]
        nb = starts[p + 1] - b0
        linked = np.zeros(nb, np.uint8)
        for j in range(nb):
            t = nxt[b0 + j]
            if t != EMPTY:
                linked[np.int64(t) - b0] = 1
        for j in range(nb):
            if linked[j] != 0:
                continue
            pos = b0 + j
            if check_flags and flags[pos] != want:
                continue
            keep[orig[pos] if orig.shape[0] != 0 else pos] = 1
        p = claim_one(cursor)


@njit(**_OPTS)
def count_flags(flags, nchunks, cnt, cursor):
    """``cnt[c + 1]`` = the nonzero bytes of chunk ``c`` of ``flags``, for the chunks it claims
    through ``cursor``: a threaded kernel (``gpuframe.backends.cpu._target.run_threads``; the
    caller takes the running sum; as a ``prange`` loop it compiled 0.4 s longer)."""
    n = flags.shape[0]
    step = (n + nchunks - 1) // nchunks
    mine = np.zeros(2, np.int64)
    c = claim(cursor, mine)
    while c < nchunks:
        k = np.int64(0)
        for j in range(c * step, min(n, (c + 1) * step)):
            k += flags[j] != 0
        cnt[c + 1] = k
        c = claim(cursor, mine)


@njit(**_NO_NRT)
def flagged_rows(flags, nchunks, cnt, out, cursor):
    """The rows of the nonzero bytes of ``flags``, ascending, into ``out`` (``cnt`` from
    :func:`count_flags`): ``np.flatnonzero`` on every thread, for the chunks it claims."""
    n = flags.shape[0]
    step = (n + nchunks - 1) // nchunks
    c = claim_one(cursor)
    while c < nchunks:
        g = cnt[c]
        lo = c * step
        last = min(n, (c + 1) * step) - 1
        while last >= lo and flags[last] == 0:
            last -= 1
        # without a branch (a random mask mispredicts half of them): every row is written at
        # the cursor, which only a flagged row moves on; up to the chunk's last flagged row, so
        # that no write lands in the next chunk's room
        for j in range(lo, last + 1):
            out[g] = j
            g += flags[j] != 0
        c = claim_one(cursor)


@njit(**_NO_NRT)
def dense_heads(rep, nchunks, cnt, cursor):
    """``cnt[c + 1]``: the rows ``j`` of chunk ``c`` that head their group (``rep[j] == j``),
    for the chunks it claims: the first step of the dense group ids (``backends/cpu/groups.py``'s
    ``_dense_ids``: :func:`dense_first`, then :func:`dense_rest`, a chunk per thread)."""
    n = rep.shape[0]
    step = (n + nchunks - 1) // nchunks
    c = claim_one(cursor)
    while c < nchunks:
        k = 0
        for j in range(np.uint64(c * step), np.uint64(max(0, min(n, (c + 1) * step)))):
            if rep[j] == j:
                k += 1
        cnt[c + 1] = k
        c = claim_one(cursor)


@njit(**_NO_NRT)
def dense_first(rep, nchunks, cnt, gid, first, cursor):
    """The group heads of each chunk it claims numbered from ``cnt[c]`` (the running sum of
    :func:`dense_heads`' counts), in row order: ``first[g]`` the head, ``gid[head] = g``."""
    n = rep.shape[0]
    step = (n + nchunks - 1) // nchunks
    c = claim_one(cursor)
    while c < nchunks:
        g = cnt[c]
        for j in range(np.uint64(c * step), np.uint64(max(0, min(n, (c + 1) * step)))):
            if rep[j] == j:
                first[g] = j
                gid[j] = g
                g += 1
        c = claim_one(cursor)


@njit(**_NO_NRT)
def dense_rest(rep, gid, cursor):
    """``gid[j] = gid[rep[j]]`` for the rows that do not head their group (``run_rows``)."""
    n = rep.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        for j in range(lo, hi):
            r = rep[j]
            if r != j:
                gid[j] = gid[r]
        lo, hi = row_block(cursor, n)


@njit(**_OPTS)
def last_rows(gid, ngroups, out):
    """``out[g]`` = the last row of group ``g``."""
    for j in range(gid.shape[0]):
        out[gid[j]] = j


# --------------------------------------------------------------------------- row groups
# The reductions take ``groups``, a row's group found by :func:`group_of`: either dense group
# ids (a 1-d int32 or int64 array, one per row), or the key columns themselves where they are
# integers whose values span a small range (:func:`gpuframe.backends.cpu.groups.dense_groups`):
# a 2-d int64 array with a row ``(address of the values as int64 words, lowest value, slots,
# address of the validity bytes or 0, rows)`` per key column (addresses, as the CPU join's
# column tables: numba's parallel loops take no tuples of arrays; the caller keeps the arrays
# alive). Column ``i``'s slot is ``word - lowest`` (``slots - 1`` for a null), a row's group is
# ``((x0 * slots1) + x1) * slots2 + ...``: no hashing, no group id array, and the groups are
# in the keys' order.
DENSE_WORDS, DENSE_LOW, DENSE_SLOTS, DENSE_VALID, DENSE_ROWS, DENSE_FIELDS = 0, 1, 2, 3, 4, 5


def group_of(groups, j):
    """The group (id or slot) of row ``j`` (compiled code only: see :func:`_group_of`)."""
    raise NotImplementedError("group_of runs in compiled code only")


def group_rows(groups):
    """The number of rows of ``groups`` (compiled code only)."""
    raise NotImplementedError("group_rows runs in compiled code only")


def _dense_slot(groups, j):
    s = np.int64(0)
    for i in range(groups.shape[0]):
        va = groups[i, DENSE_VALID]
        k = groups[i, DENSE_SLOTS]
        if va != 0 and load_u8_at(va + j) == 0:
            x = k - 1
        else:
            x = load_i64(groups[i, DENSE_WORDS], j) - groups[i, DENSE_LOW]
        s = s * k + x
    return s


def _gid_of(groups, j):
    return groups[j]


@overload(group_of, target="cpu")
def _group_of(groups, j):
    if isinstance(groups, types.Array) and groups.ndim == 1:
        return _gid_of
    if isinstance(groups, types.Array) and groups.ndim == 2:
        return _dense_slot
    return None


@overload(group_rows, target="cpu")
def _group_rows(groups):
    if isinstance(groups, types.Array) and groups.ndim == 1:
        return lambda groups: groups.shape[0]
    if isinstance(groups, types.Array) and groups.ndim == 2:
        return lambda groups: groups[0, DENSE_ROWS]
    return None


# the row length of the per-chunk accumulators: one cache line more than the groups, so that
# two threads never write the same line (with few groups, the last group of one chunk and the
# first of the next shared a line: a sum of 10M rows by 100 groups took 25 ms, 17 ms padded)
STRIDE_PAD = 8


@njit(inline="always")
def _stride(ngroups):
    return ngroups + STRIDE_PAD


@njit(**_OPTS)
def key_range(words, valid, nchunks, lo, hi, cursor):
    """``lo[c]``, ``hi[c]``: the lowest and highest int64 ``words`` of the non-null rows of
    chunk ``c`` (``valid`` empty: no nulls; ``lo[c] > hi[c]``: none), for the chunks it claims
    through ``cursor``: a threaded kernel (``gpuframe.backends.cpu._target.run_threads``). A
    ``prange`` loop over the chunks compiled in 2 s, this in a fraction of it."""
    n = words.shape[0]
    step = (n + nchunks - 1) // nchunks
    mine = np.zeros(2, np.int64)
    c = claim(cursor, mine)
    while c < nchunks:
        a = np.int64(np.iinfo(np.int64).max)
        b = np.int64(np.iinfo(np.int64).min)
        if valid.shape[0] == 0:
            for j in range(c * step, min(n, (c + 1) * step)):
                x = words[j]
                a = min(a, x)
                b = max(b, x)
        else:
            for j in range(c * step, min(n, (c + 1) * step)):
                if valid[j] != 0:
                    x = words[j]
                    a = min(a, x)
                    b = max(b, x)
        lo[c] = a
        hi[c] = b
        c = claim(cursor, mine)


@njit(**_NO_NRT)
def row_groups(groups, out, cursor):
    """``out[row]`` = the row's group (:func:`group_of`): dense keys' slots as an array
    (``run_rows``)."""
    n = group_rows(groups)
    lo, hi = row_block(cursor, n)
    while lo < n:
        for j in range(lo, hi):
            out[j] = group_of(groups, j)
        lo, hi = row_block(cursor, n)


@njit(**_OPTS)
def row_groups_at(groups, rows, out):
    """``out[i]`` = the group of row ``rows[i]``."""
    for i in range(rows.shape[0]):
        out[i] = group_of(groups, rows[i])


# --------------------------------------------------------------------------- reductions
@njit(inline="always")
def _ok(valid, j):
    return valid.shape[0] == 0 or valid[j] != 0


# The reductions below are threaded kernels (``gpuframe.backends.cpu._target.run_threads``):
# each chunk of rows that one claims through ``cursor`` zeroes its own accumulators (the
# caller's ``acc[c]``, one row a chunk, :func:`_stride` wide so that no two chunks share a line)
# and adds its rows into them; a merge kernel (``run_rows`` over the groups) adds the chunks up.
# As numba ``prange`` loops, each compiled 1.5-3 s longer for each of its signatures.
@njit(inline="always")
def _chunk_of(groups, nchunks, c):
    # rows lo:hi of chunk c, unsigned (see cpu_intrinsics.row_block)
    n = group_rows(groups)
    step = (n + nchunks - 1) // nchunks
    return np.uint64(c * step), np.uint64(max(0, min(n, (c + 1) * step)))


@njit(**_NO_NRT)
def count_rows(groups, ngroups, valid, acc, cursor):
    """``acc[c, g]``: the non-null rows (every row when ``valid`` is empty) of group ``g`` in
    chunk ``c`` of the rows (:func:`sum_chunks` adds them up)."""
    nchunks = acc.shape[0]
    c = claim_one(cursor)
    while c < nchunks:
        a = acc[c]
        a[:ngroups] = 0
        lo, hi = _chunk_of(groups, nchunks, c)
        for j in range(lo, hi):
            if _ok(valid, j):
                a[group_of(groups, j)] += 1
        c = claim_one(cursor)


@njit(**_NO_NRT)
def sum_chunks(acc, out, cursor):
    """``out[g]`` = the sum over the chunks ``c`` of ``acc[c, g]`` (in chunk order), for the
    blocks of groups it claims."""
    n = out.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        for g in range(lo, hi):
            s = acc[0, g]
            for c in range(1, acc.shape[0]):
                s += acc[c, g]
            out[g] = s
        lo, hi = row_block(cursor, n)


@njit(inline="always")
def _wrap_add(a, b):
    # a + b modulo 2**64: unsigned, so that LLVM cannot assume the signed sum does not overflow
    # (it folds the overflow tests of a signed sum away)
    return np.int64(np.uint64(a) + np.uint64(b))


@njit(**_NO_NRT)
def sum_int(groups, ngroups, vals, valid, acc, cursor):
    """Integer sums per group (int64, wrapping) and non-null counts of chunk ``c`` of the rows in
    ``acc[c, g, 0]`` and ``acc[c, g, 1]`` (side by side: one cache line a row; with 100k groups,
    two arrays missed the cache twice); returns 1 when a sum overflowed int64 (a thread's
    chunks), else 0. :func:`sum_int_merge` adds the chunks up."""
    nchunks = acc.shape[0]
    bad = 0
    c = claim_one(cursor)
    while c < nchunks:
        a = acc[c]
        a[:ngroups] = 0
        lo, hi = _chunk_of(groups, nchunks, c)
        for j in range(lo, hi):
            if _ok(valid, j):
                g = group_of(groups, j)
                x = a[g, 0]
                v = vals[j]
                s = _wrap_add(x, v)
                if ((x ^ s) & (v ^ s)) < 0:
                    bad = 1
                a[g, 0] = s
                a[g, 1] += 1
        c = claim_one(cursor)
    return bad


@njit(**_NO_NRT)
def sum_int_merge(acc, out, counts, cursor):
    """:func:`sum_int`'s chunks added up: ``out[g]`` the sum, ``counts[g]`` the count; returns 1
    when a sum of the blocks of groups it claims overflowed int64, else 0."""
    n = out.shape[0]
    bad = 0
    lo, hi = row_block(cursor, n)
    while lo < n:
        for g in range(lo, hi):
            s = np.int64(0)
            k = np.int64(0)
            for c in range(acc.shape[0]):
                a = acc[c, g, 0]
                t = _wrap_add(s, a)
                if ((a ^ t) & (s ^ t)) < 0:
                    bad = 1
                s = t
                k += acc[c, g, 1]
            out[g] = s
            counts[g] = k
        lo, hi = row_block(cursor, n)
    return bad


@njit(**_NO_NRT)
def sum_float(groups, ngroups, vals, valid, acc, cursor):
    """Float sums per group (float64) and non-null counts of chunk ``c`` of the rows, side by
    side in ``acc[c, g]`` as :func:`sum_int`'s (the count as a float64, exact below 2**53 rows).
    :func:`sum_float_merge` adds the chunks up."""
    nchunks = acc.shape[0]
    c = claim_one(cursor)
    while c < nchunks:
        a = acc[c]
        a[:ngroups] = 0.0
        lo, hi = _chunk_of(groups, nchunks, c)
        for j in range(lo, hi):
            if _ok(valid, j):
                g = group_of(groups, j)
                a[g, 0] += vals[j]
                a[g, 1] += 1.0
        c = claim_one(cursor)


@njit(**_NO_NRT)
def sum_float_merge(acc, out, counts, cursor):
    """:func:`sum_float`'s chunks added up in chunk order: ``out[g]`` the sum, ``counts[g]``."""
    n = out.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        for g in range(lo, hi):
            s = 0.0
            k = 0.0
            for c in range(acc.shape[0]):
                s += acc[c, g, 0]
                k += acc[c, g, 1]
            out[g] = s
            counts[g] = np.int64(k)
        lo, hi = row_block(cursor, n)


# the columns of :func:`group_sums`: one row per column, these fields
SUM_VALUES, SUM_KIND, SUM_VALID, SUM_SLOT, SUM_COUNT, SUM_FIELDS = 0, 1, 2, 3, 4, 5
# its kinds: an exact int64 sum of int64 values, a float64 sum of float64 values or of int64
# values (each converted as it is read), or no sum (the non-null values counted only)
SUM_INT, SUM_FLOAT, SUM_INT_AS_FLOAT, SUM_NONE = 0, 1, 2, 3


# the columns one call of :func:`group_sums` takes
SUM_COLUMNS = 4


@njit(inline="always")
def _sum_one(acc, accf, c, g, j, kind, addr, va, at, r):
    # one column's value of row ``j`` added to group ``g``'s sum at field ``at`` (an int sum
    # unchecked: an overflow test here made every column's loop 1.5x slower, taken or not)
    if va != 0 and load_u8_at(va + j) == 0:
        return
    if r >= 0:
        acc[c, g, r] += 1
    if kind == SUM_FLOAT:
        accf[c, g, at] += load_f64(addr, j)
    elif kind == SUM_INT_AS_FLOAT:
        accf[c, g, at] += np.float64(load_i64(addr, j))
    elif kind == SUM_INT:
        acc[c, g, at] += load_i64(addr, j)


@njit(inline="always")
def _sum_field(cols, i, f, default):
    return cols[i, f] if i < cols.shape[0] else default


@njit(inline="always")
def _sum_column(cols, i, base, nints, nfloats):
    # column ``i``'s (kind, address of its values, of its validity, field of its sum, field of
    # its count or -1), read once a chunk; a column past the table's end is of kind none
    return (_sum_field(cols, i, SUM_KIND, SUM_NONE), _sum_field(cols, i, SUM_VALUES, 0),
            _sum_field(cols, i, SUM_VALID, 0), _sum_at(cols, i, base, nints), _count_at(cols, i, base, nints, nfloats))


@njit(inline="always")
def _sum_at(cols, i, base, nints):
    # the field of column ``i``'s sum in a group's accumulators: the size (``base`` 1, else
    # none), the int sums, the float sums, the counts
    if i >= cols.shape[0] or cols[i, SUM_KIND] == SUM_NONE:
        return 0
    k = cols[i, SUM_SLOT]
    return base + k if cols[i, SUM_KIND] == SUM_INT else base + nints + k


@njit(inline="always")
def _count_at(cols, i, base, nints, nfloats):
    if i >= cols.shape[0] or cols[i, SUM_COUNT] < 0:
        return -1
    return base + nints + nfloats + cols[i, SUM_COUNT]


@njit(_nrt=False, **_OPTS)
def _sums_chunk(groups, cols, base, nints, nfloats, acc, accf, c, n, step):
    # group_sums' chunk ``c`` of rows, a function of its own that the kernel calls through an
    # address: inlined into a parallel loop, its four columns' code made numba's parfor passes
    # the kernel's compile time; compiled without reference counting (it allocates nothing),
    # as the join's item kernels are (see gpuframe.kernels.join_cpu's _ITEM_KERNELS): with it,
    # the function ran 4x slower. Returns 0 (call_entry's int64)
    m = cols.shape[0]
    kind0, addr0, va0, at0, r0 = _sum_column(cols, 0, base, nints, nfloats)
    kind1, addr1, va1, at1, r1 = _sum_column(cols, 1, base, nints, nfloats)
    kind2, addr2, va2, at2, r2 = _sum_column(cols, 2, base, nints, nfloats)
    kind3, addr3, va3, at3, r3 = _sum_column(cols, 3, base, nints, nfloats)
    for j in range(c * step, min(n, (c + 1) * step)):
        g = group_of(groups, j)
        if base:
            acc[c, g, 0] += 1
        if m > 0:
            _sum_one(acc, accf, c, g, j, kind0, addr0, va0, at0, r0)
        if m > 1:
            _sum_one(acc, accf, c, g, j, kind1, addr1, va1, at1, r1)
        if m > 2:
            _sum_one(acc, accf, c, g, j, kind2, addr2, va2, at2, r2)
        if m > 3:
            _sum_one(acc, accf, c, g, j, kind3, addr3, va3, at3, r3)
    return 0


@njit(**_OPTS)
def group_sums(entry, groups, cols, base, nints, nfloats, acc, accf, nchunks, cursor):
    """Up to :data:`SUM_COLUMNS` columns' sums per group in one pass over the rows (a row's
    group is found once for all), chunk ``c`` of the rows into ``acc[c]``: ``acc[c, g, 0]``
    the rows of group ``g`` (``base`` 1, else not counted); per column ``i`` of
    ``cols`` (a row ``(address of its values as int64 or float64 words, kind, address of its
    validity bytes or 0, its row in the sums of its kind, its row in ``counts`` or -1)``): its
    sum of non-null values in ``acc[c, g, base + slot]`` (kind :data:`SUM_INT`: the caller has
    made sure that no sum overflows int64, e.g. from the values' range) or, as float64,
    ``accf[c, g, base + nints + slot]`` (``accf``: ``acc`` viewed as float64), and its non-null
    values in ``acc[c, g, base + nints + nfloats + row]`` (a column with nulls). The caller
    adds the chunks up.

    A group's accumulators (size, sums, counts) lie side by side, so that a row touches one
    cache line however many columns there are (with 100k groups, one array per accumulator
    missed the cache once for each). The columns are read into scalars before the loop over
    the rows, each added by code of its own: a loop over the columns' table inside it ran twice
    as long, as did a loop per column over blocks of rows.

    A threaded kernel (``gpuframe.backends.cpu._target.run_threads``): the chunks it claims
    through ``cursor``, each by :func:`_sums_chunk` called through ``entry``
    (:func:`~gpuframe.kernels.cpu_intrinsics.call_entry`; ``backends/cpu/groups.py``'s
    ``_sums_acc``), compiled once and not again inside this kernel. As a ``prange`` loop
    calling it by name, with the chunks' merge, this kernel compiled in 3.3 s."""
    n = np.int64(group_rows(groups))
    step = (n + nchunks - 1) // nchunks
    mine = np.zeros(2, np.int64)
    c = claim(cursor, mine)
    while c < nchunks:
        call_entry(entry, (groups, cols, base, nints, nfloats, acc, accf, c, n, step))
        c = claim(cursor, mine)


@njit(**_NO_NRT)
def sq_dev(groups, ngroups, vals, valid, mean, acc, cursor):
    """``acc[c, g]``: the sum of squared deviations from group ``g``'s ``mean`` of chunk ``c`` of
    the rows (the variance's second pass; :func:`sum_chunks` adds them up)."""
    nchunks = acc.shape[0]
    c = claim_one(cursor)
    while c < nchunks:
        a = acc[c]
        a[:ngroups] = 0.0
        lo, hi = _chunk_of(groups, nchunks, c)
        for j in range(lo, hi):
            if _ok(valid, j):
                g = group_of(groups, j)
                d = vals[j] - mean[g]
                a[g] += d * d
        c = claim_one(cursor)


@njit(**_NO_NRT)
def arg_extreme(groups, ngroups, vals, valid, want_max, best, bestv, cursor):
    """``best[c, g]``: the row of group ``g``'s minimum (``want_max`` false) or maximum over the
    non-null rows of chunk ``c`` (-1: none), ties to the first row; ``vals`` int64 or float64
    (NaN above every number). :func:`arg_extreme_merge` picks among the chunks. With ``bestv``
    (not empty) each chunk keeps its groups' best values beside their rows (for many groups:
    reading the best row's value back from ``vals`` missed the cache, 40.7 -> 25.0 ms for 10M
    int64 rows by 100k groups; by 100 groups the read hits and keeping cost 15.7 -> 18.5 ms)."""
    nchunks = best.shape[0]
    kept = bestv.shape[1] != 0
    c = claim_one(cursor)
    while c < nchunks:
        bc = best[c]
        bc[:ngroups] = -1
        lo, hi = _chunk_of(groups, nchunks, c)
        for j in range(lo, hi):
            if _ok(valid, j):
                g = group_of(groups, j)
                v = vals[j]
                b = bc[g]
                if b < 0 or _better(v, bestv[c, g] if kept else vals[b], want_max):
                    bc[g] = j
                    if kept:
                        bestv[c, g] = v
        c = claim_one(cursor)


@njit(**_NO_NRT)
def arg_extreme_merge(best, vals, want_max, out, cursor):
    """``out[g]``: the best of the chunks' rows ``best[:, g]`` of :func:`arg_extreme` (-1: none),
    ties to the first chunk, for the blocks of groups it claims."""
    n = out.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        for g in range(lo, hi):
            b = np.int64(-1)
            for c in range(best.shape[0]):
                r = best[c, g]
                if r >= 0 and (b < 0 or _better(vals[r], vals[b], want_max)):
                    b = r
            out[g] = b
        lo, hi = row_block(cursor, n)


@njit(inline="always")
def _better(a, b, want_max):
    # a strictly beats b (for integers the NaN tests are always false)
    return _value_less(b, a) if want_max else _value_less(a, b)


@njit(**_NO_NRT)
def arg_extreme_string(groups, ngroups, offs, chars, valid, want_max, best, cursor):
    """:func:`arg_extreme` of a string column (bytewise order, as UTF-8 sorts code points);
    :func:`arg_extreme_string_merge` picks among the chunks."""
    nchunks = best.shape[0]
    c = claim_one(cursor)
    while c < nchunks:
        bc = best[c]
        bc[:ngroups] = -1
        lo, hi = _chunk_of(groups, nchunks, c)
        for j in range(lo, hi):
            if _ok(valid, j):
                g = group_of(groups, j)
                b = bc[g]
                if b < 0 or _str_better(offs, chars, j, b, want_max):
                    bc[g] = j
        c = claim_one(cursor)


@njit(**_NO_NRT)
def arg_extreme_string_merge(best, offs, chars, want_max, out, cursor):
    """:func:`arg_extreme_merge` of :func:`arg_extreme_string`'s chunks."""
    n = out.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        for g in range(lo, hi):
            b = np.int64(-1)
            for c in range(best.shape[0]):
                r = best[c, g]
                if r >= 0 and (b < 0 or _str_better(offs, chars, r, b, want_max)):
                    b = r
            out[g] = b
        lo, hi = row_block(cursor, n)


@njit(inline="always")
def _str_better(offs, chars, i, j, want_max):
    c = _span_cmp(offs, chars, i, j)
    return c > 0 if want_max else c < 0


@njit(**_OPTS)
def first_last(groups, valid, nchunks, want_last, most, best, cursor):
    """``best[c, g]``: the first (or last) non-null row of group ``g`` in chunk ``c`` of the rows
    (left as it is, -1 from the caller, where there is none), for the chunks it claims through
    ``cursor``: a threaded kernel (``gpuframe.backends.cpu._target.run_threads``; the caller
    takes each group's first or last chunk that has one). For the first rows, each chunk stops
    once it has found ``most`` groups (0: never), as many as there can be (dense keys that fill
    their range are all found in the first rows). As a ``prange`` loop with the chunks' merge it
    compiled 1 s longer."""
    n = group_rows(groups)
    step = (n + nchunks - 1) // nchunks
    mine = np.zeros(2, np.int64)
    c = claim(cursor, mine)
    while c < nchunks:
        found = 0
        for j in range(c * step, min(n, (c + 1) * step)):
            if _ok(valid, j):
                g = group_of(groups, j)
                if want_last:
                    best[c, g] = j
                elif best[c, g] < 0:
                    best[c, g] = j
                    found += 1
                    if found == most:
                        break
        c = claim(cursor, mine)


@njit(**_NO_NRT)
def group_hist(groups, ngroups, valid, hist, cursor):
    """``hist[c, g]``: the non-null rows (``valid[row] != 0``; empty: all) of group ``g`` in
    chunk ``c`` of the rows, the first step of :func:`group_values`' stable counting sort."""
    nchunks = hist.shape[0]
    c = claim_one(cursor)
    while c < nchunks:
        h = hist[c]
        h[:ngroups] = 0
        lo, hi = _chunk_of(groups, nchunks, c)
        for j in range(lo, hi):
            if valid.shape[0] == 0 or valid[j] != 0:
                h[group_of(groups, j)] += 1
        c = claim_one(cursor)


@njit(**_NO_NRT)
def group_values(groups, valid, vals, cur, out, cursor):
    """The non-null values laid out by group with a stable counting sort: chunk ``c``'s value of
    group ``g`` go to ``out`` from ``cur[c, g]`` on (the caller's scan of :func:`group_hist`'s
    counts, group-major), in input order."""
    nchunks = cur.shape[0]
    c = claim_one(cursor)
    while c < nchunks:
        h = cur[c]
        lo, hi = _chunk_of(groups, nchunks, c)
        for j in range(lo, hi):
            if valid.shape[0] == 0 or valid[j] != 0:
                g = group_of(groups, j)
                out[h[g]] = vals[j]
                h[g] += 1
        c = claim_one(cursor)


@njit(**_OPTS)
def _kth(v, lo, hi, k):
    """The value of rank ``k`` (an index in ``lo..hi-1``) of ``v[lo:hi]`` (no NaN), by
    quickselect in place: afterwards every value before ``v[k]`` in the range is at most it."""
    while hi - lo > 16:
        mid = lo + (hi - lo) // 2
        a = v[lo]
        b = v[mid]
        c = v[hi - 1]
        if a < b:
            pivot = b if b < c else (c if a < c else a)
        else:
            pivot = a if a < c else (c if b < c else b)
        i = lo
        j = hi - 1
        while i <= j:
            while v[i] < pivot:
                i += 1
            while v[j] > pivot:
                j -= 1
            if i <= j:
                t = v[i]
                v[i] = v[j]
                v[j] = t
                i += 1
                j -= 1
        # v[lo:j+1] <= pivot, v[i:hi] >= pivot, v[j+1:i] == pivot
        if k <= j:
            hi = j + 1
        elif k >= i:
            lo = i
        else:
            return v[k]
    for i in range(lo + 1, hi):       # insertion sort of the last few
        x = v[i]
        j = i - 1
        while j >= lo and v[j] > x:
            v[j + 1] = v[j]
            j -= 1
        v[j + 1] = x
    return v[k]


@njit(**_OPTS)
def median_float(gstart, gvals, out, has, cursor):
    """Median of each group's (non-null, float64) values ``gvals[gstart[g]:gstart[g+1]]``
    (reordered in place), NaN above every number: the NaNs are moved to the group's end and the
    middle rank(s) selected among the numbers (a quickselect, linear in the group's size); for
    the blocks of groups it claims."""
    ngroups = gstart.shape[0] - 1
    lo, hi = row_block(cursor, ngroups)
    while lo < ngroups:
        for g in range(lo, hi):
            has[g] = gstart[g + 1] > gstart[g]
            out[g] = _median_of(gvals, gstart[g], gstart[g + 1])
        lo, hi = row_block(cursor, ngroups)


@njit(inline="always")
def _median_of(gvals, a, b):
    # the median of gvals[a:b] (NaN when empty or when the middle rank is a NaN)
    k = b - a
    if k == 0:
        return np.nan
    e = a                          # the numbers first, then the NaNs
    for t in range(a, b):
        x = gvals[t]
        if not np.isnan(x):
            gvals[e] = x
            e += 1
    for t in range(e, b):
        gvals[t] = np.nan
    hi = a + k // 2                # the upper middle rank
    if hi >= e:
        return np.nan
    upper = _kth(gvals, a, e, hi)
    if k % 2 == 1:
        return upper
    lower = gvals[a]
    for t in range(a + 1, hi):
        if gvals[t] > lower:
            lower = gvals[t]
    return (lower + upper) / 2.0
