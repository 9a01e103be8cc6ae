"""Sort kernels: order-preserving key words, and a stable LSD radix sort over them.

A sort key becomes unsigned *words* per row whose unsigned order is the key's order
(:func:`sort_word`): signed integers with the sign bit flipped; floats by the IEEE total-order
transform (negative: every bit inverted, positive: the sign bit set) after ``-0.0`` is folded to
``0.0`` and every NaN to one canonical NaN, which then sorts above ``+inf``; descending keys with
the value bits inverted. A key that may hold nulls has a word of null flags first (1 for a null
when nulls go last, 1 for a value when they go first) and its nulls' value words are 0, so that
nulls tie. Strings (and a dictionary's string values) become dense ranks first
(:func:`string_prefix`, :func:`length_class`; the driver refines the ranks eight bytes at a
time), and the ranks are the words.

The words are sorted by a stable least-significant-digit radix sort, 8 bits a pass, from the last
key's lowest digit to the first key's highest: stable pass by stable pass, ties keep the input
order end to end. The passes cover each word's range only: one pass finds the least and greatest
word (nulls left out) and the digits are those of ``word - least`` (:func:`digit_of`), so narrow
types, small ranges, common string prefixes and the flags of keys without nulls cost few passes
or none.

CPU (threaded ``@njit`` kernels): the rows are cut into one contiguous chunk per thread; each chunk
counts its digits, the cursors are a bucket-major scan of the chunks' counts, and each chunk
scatters its rows in order (stable, no atomics), as the hash partition does. A pass over memory
costs about 5.5 ns a row here, a pass over rows in the cache about 2.5: a large single key is
sorted by one such pass over its top digit into buckets that fit the cache, then each bucket most
significant digit first in per-thread scratch, short ranges by insertion sort
(:func:`bucket_sort`; the driver in
:mod:`gpuframe.backends.cpu.sort`).

CUDA (built lazily by :func:`cuda_kernels`): each block owns a contiguous range of rows;
``block_counts`` writes each block's digit histogram (``counts[d * nblocks + block]``), the
launcher scans it once (exclusive, digit-major), and ``scatter`` ranks every tile stably in shared
memory (a loop over a group of :data:`GROUP` threads' digits, plus the earlier groups' counts,
plus the block's running cursor) and writes each row once to its output place. No per-row global
atomics, no warp intrinsics (the simulator runs it too).
"""
from __future__ import annotations

import functools

import numpy as np
from numba.extending import register_jitable

from .cpu_intrinsics import LINE_BYTES, claim, claim_one, row_block, store_fence, stream_line
from .hashing import bit_is_set
from .jit_cache import njit
from .kernel_set import KernelSet
from .per_row import cpu, per_row

# How a fixed-width value's raw bits (zero-extended from ``width`` bits) are ordered.
KIND_UNSIGNED = 0
KIND_SIGNED = 1
KIND_F32 = 2
KIND_F64 = 3

# digit bits of a pass: the GPU ranks a tile's digits in shared memory (256 buckets); the CPU
# scatters with 256 too (11 bits took as long in all: fewer passes, each slower)
RADIX_BITS = 8
BUCKETS = 1 << RADIX_BITS
DIGIT_MASK = BUCKETS - 1
CPU_RADIX_BITS = 8
# length_class of a string that goes on past the current eight bytes
LONGER = 9

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_U8 = np.uint64(8)
_BYTE = np.uint64(0xFF)
ONES64 = np.uint64(0xFFFFFFFFFFFFFFFF)
SIGN64 = np.uint64(0x8000000000000000)
EXP64 = np.uint64(0x7FF0000000000000)
MANT64 = np.uint64(0x000FFFFFFFFFFFFF)
NAN64 = np.uint64(0x7FF8000000000000)
ONES32 = np.uint64(0xFFFFFFFF)
SIGN32 = np.uint64(0x80000000)
EXP32 = np.uint64(0x7F800000)
MANT32 = np.uint64(0x007FFFFF)
NAN32 = np.uint64(0x7FC00000)


# --------------------------------------------------------------------------- per-row functions
@per_row
def width_mask(width):
    """The low ``width`` bits set (uint64; all 64 for ``width >= 64``)."""
    if width >= 64:
        return ONES64
    return (_U1 << np.uint64(width)) - _U1


@per_row
def order_word(raw, kind, width):
    """The unsigned word whose order is the order of the value with raw bits ``raw`` (``width``
    bits, zero-extended): signed: sign bit flipped; floats: ``-0.0`` -> ``0.0``, NaN -> the
    canonical NaN (above ``+inf``), then the IEEE total-order transform."""
    b = np.uint64(raw)
    if kind == KIND_SIGNED:
        return b ^ (_U1 << np.uint64(width - 1))
    if kind == KIND_F64:
        if (b & EXP64) == EXP64 and (b & MANT64) != _U0:
            b = NAN64
        elif b == SIGN64:
            b = _U0
        if (b & SIGN64) != _U0:
            return b ^ ONES64
        return b | SIGN64
    if kind == KIND_F32:
        b = b & ONES32
        if (b & EXP32) == EXP32 and (b & MANT32) != _U0:
            b = NAN32
        elif b == SIGN32:
            b = _U0
        if (b & SIGN32) != _U0:
            return b ^ ONES32
        return b | SIGN32
    return b


@per_row
def sort_word(raw, kind, width, valid, desc, flag_only, nulls_last):
    """The sort word of one value: :func:`order_word`, inverted when ``desc``; 0 for a null.
    With ``flag_only``, the key's null flag instead: 1 for a null when ``nulls_last``, 1 for a
    value otherwise (0 for the rest)."""
    if flag_only:
        if valid != nulls_last:
            return _U1
        return _U0
    if not valid:
        return _U0
    w = order_word(raw, kind, width)
    if desc:
        w = w ^ width_mask(width)
    return w


@per_row
def null_word(flags, null_flag, i):
    """Whether row ``i`` is a null of its key (``flags``: the key's flag words, empty for a key
    without nulls)."""
    if flags.shape[0] == 0:
        return False
    return flags[i] == null_flag


@per_row
def fixed_sort_word(values, kind, width, validity, has_valid, vbit, desc, flag_only, nulls_last, i):
    """:func:`sort_word` of row ``i`` of a fixed-width column (``values``: unsigned view)."""
    valid = True
    if has_valid:
        valid = bit_is_set(validity, vbit + i) != 0
    raw = _U0
    if valid:
        raw = np.uint64(values[i])
    return sort_word(raw, kind, width, valid, desc, flag_only, nulls_last)


@per_row
def bool_sort_word(bits, dbit, validity, has_valid, vbit, desc, flag_only, nulls_last, i):
    """:func:`sort_word` of row ``i`` of a bool column (``False < True``)."""
    valid = True
    if has_valid:
        valid = bit_is_set(validity, vbit + i) != 0
    raw = _U0
    if valid:
        raw = np.uint64(bit_is_set(bits, dbit + i))
    return sort_word(raw, KIND_UNSIGNED, 1, valid, desc, flag_only, nulls_last)


@per_row
def dict_sort_word(indices, dranks, validity, has_valid, vbit, dvalid, has_dvalid, dvbit, width, desc,
                   flag_only, nulls_last, i):
    """:func:`sort_word` of row ``i`` of a dictionary column: the rank of its entry's string
    (``dranks``); a null index or a null entry is a null."""
    valid = True
    if has_valid:
        valid = bit_is_set(validity, vbit + i) != 0
    raw = _U0
    if valid:
        k = np.int64(indices[i])
        if has_dvalid and bit_is_set(dvalid, dvbit + k) == 0:
            valid = False
        else:
            raw = np.uint64(dranks[k])
    return sort_word(raw, KIND_UNSIGNED, width, valid, desc, flag_only, nulls_last)


@per_row
def string_prefix(offsets, chars, depth, i):
    """Bytes ``[depth, depth + 8)`` of string ``i``, big-endian and zero-padded (their unsigned
    order is the strings' byte order up to padding; :func:`length_class` settles that)."""
    s = np.int64(offsets[i]) + depth
    e = np.int64(offsets[i + 1])
    w = _U0
    for k in range(8):
        w = w << _U8
        if s + k < e:
            w = w | np.uint64(chars[s + k])
    return w


@per_row
def length_class(offsets, depth, i):
    """How many of string ``i``'s bytes lie at or after ``depth``: 0..8, or :data:`LONGER`."""
    rest = np.int64(offsets[i + 1]) - np.int64(offsets[i]) - depth
    if rest <= 0:
        return np.uint64(0)
    if rest > 8:
        return np.uint64(LONGER)
    return np.uint64(rest)


@per_row
def digit_of(w, base, shift, mask):
    """The digit (``mask``: its bits) at bit ``shift`` of word ``w`` less ``base`` (the least word
    of the key: the passes then cover only the key's range)."""
    return np.int64(((np.uint64(w) - np.uint64(base)) >> np.uint64(shift)) & np.uint64(mask))


@per_row
def group_starts(perm, ranks, has_ranks, w, lc, i):
    """1 when sorted row ``i`` starts a group of equal (rank, prefix, length class), else 0."""
    if i == 0:
        return np.int64(1)
    a = perm[i]
    b = perm[i - 1]
    if w[a] != w[b] or lc[a] != lc[b]:
        return np.int64(1)
    if has_ranks and ranks[a] != ranks[b]:
        return np.int64(1)
    return np.int64(0)


@per_row
def unresolved_row(flags, lc, perm, n, i):
    """1 when sorted row ``i`` shares its group with another row and its string goes on past
    the bytes compared so far (the group needs the next eight bytes)."""
    if lc[perm[i]] != LONGER:
        return np.int64(0)
    if flags[i] == 0:
        return np.int64(1)
    if i + 1 < n and flags[i + 1] == 0:
        return np.int64(1)
    return np.int64(0)


_fixed_sort_word = cpu(fixed_sort_word)
_bool_sort_word = cpu(bool_sort_word)
_dict_sort_word = cpu(dict_sort_word)
_null_word = cpu(null_word)
_string_prefix = cpu(string_prefix)
_length_class = cpu(length_class)
_digit_of = cpu(digit_of)
_group_starts = cpu(group_starts)
_unresolved_row = cpu(unresolved_row)


# --------------------------------------------------------------------------- CPU drivers
# Threaded kernels (``gpuframe.backends.cpu._target.run_threads``; ``run_rows`` for the per-row
# ones, each claiming blocks of rows through ``cursor``, its last argument): as numba ``prange``
# loops they compiled 1-5 s longer a signature (the word kernel 1.9 s against 0.8 s).
_OPTS = dict(cache=True, nogil=True)
_NO_NRT = dict(_OPTS, _nrt=False)    # kernels that allocate nothing (see cpu_intrinsics.claim_one)


@register_jitable
def _bounds(n, c, nchunks):
    # rows lo:hi of chunk c, unsigned (see cpu_intrinsics.row_block)
    return np.uint64(n * c // nchunks), np.uint64(n * (c + 1) // nchunks)


@njit(**_NO_NRT)
def fixed_words(values, kind, width, validity, has_valid, vbit, desc, flag_only, nulls_last, out, cursor):
    n = out.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        for i in range(lo, hi):
            out[i] = _fixed_sort_word(values, kind, width, validity, has_valid, vbit, desc, flag_only, nulls_last, i)
        lo, hi = row_block(cursor, n)


@njit(**_NO_NRT)
def bool_words(bits, dbit, validity, has_valid, vbit, desc, flag_only, nulls_last, out, cursor):
    n = out.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        for i in range(lo, hi):
            out[i] = _bool_sort_word(bits, dbit, validity, has_valid, vbit, desc, flag_only, nulls_last, i)
        lo, hi = row_block(cursor, n)


@njit(**_NO_NRT)
def dict_words(indices, dranks, validity, has_valid, vbit, dvalid, has_dvalid, dvbit, width, desc, flag_only,
               nulls_last, out, cursor):
    n = out.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        for i in range(lo, hi):
            out[i] = _dict_sort_word(indices, dranks, validity, has_valid, vbit, dvalid, has_dvalid, dvbit, width,
                                     desc, flag_only, nulls_last, i)
        lo, hi = row_block(cursor, n)


@njit(**_NO_NRT)
def prefix_words(offsets, chars, depth, w, lc, cursor):
    n = w.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        for i in range(lo, hi):
            w[i] = _string_prefix(offsets, chars, depth, i)
            lc[i] = _length_class(offsets, depth, i)
        lo, hi = row_block(cursor, n)


@njit(cache=True, nogil=True)
def word_range(words, flags, null_flag, nchunks, lo_w, hi_w, cursor):
    """``lo_w[c]``, ``hi_w[c]``: the least and the greatest word (as uint64) of the rows of
    chunk ``c`` that are not nulls (``lo_w[c] > hi_w[c]``: none), for the chunks it claims
    through ``cursor``: a threaded kernel (``gpuframe.backends.cpu._target.run_threads``). A
    ``prange`` loop over the chunks compiled in 2.3 s, this in a fraction of it."""
    n = words.shape[0]
    mine = np.zeros(2, np.int64)
    c = claim(cursor, mine)
    while c < nchunks:
        lo, hi = _bounds(n, c, nchunks)
        a = ONES64
        b = _U0
        for i in range(lo, hi):
            if _null_word(flags, null_flag, i):
                continue
            w = np.uint64(words[i])
            a = min(a, w)
            b = max(b, w)
        lo_w[c] = a
        hi_w[c] = b
        c = claim(cursor, mine)


@njit(**_NO_NRT)
def chunk_counts(words, base, shift, mask, hist, cursor):
    """``hist[c]``: the digit histogram of chunk ``c`` of the rows (``hist``: zeros, one row a
    chunk), for the chunks it claims (the caller makes the scatter's cursors of it)."""
    n = words.shape[0]
    nchunks = hist.shape[0]
    c = claim_one(cursor)
    while c < nchunks:
        lo, hi = _bounds(n, c, nchunks)
        h = hist[c]
        for i in range(lo, hi):
            h[_digit_of(words[i], base, shift, mask)] += 1
        c = claim_one(cursor)


@njit(**_OPTS)
def scatter_pass(w_in, p_in, ident, base, shift, mask, cursors, w_out, p_out, want_w, cursor):
    """One stable pass: row ``i`` of each chunk goes to its digit's cursor (``p_in`` is the
    identity when ``ident``); ``w_out`` is written only when ``want_w``."""
    n = w_in.shape[0]
    nchunks = cursors.shape[0]
    c = claim_one(cursor)
    while c < nchunks:
        lo, hi = _bounds(n, c, nchunks)
        _scatter_rows(w_in, p_in, ident, lo, hi, base, shift, mask, cursors[c].copy(), w_out, p_out, want_w)
        c = claim_one(cursor)


# rows a line of the streaming pass holds: 16 uint32 row numbers, one 64-byte line (and 16
# words or 8-byte carried values, one or two lines)
STREAM_ROWS = 16
STREAM_MAX_BUCKETS = 1024


@njit(**_OPTS)
def scatter_pass_stream(w_in, carry, base, shift, mask, cursors, w_out, p_out, bw, bp, cursor):
    """:func:`scatter_pass` of every row and its word: ``p_out`` gets the row numbers (``carry``
    None: a branch pruned at compile time, not tested per row) or the row's ``carry`` value (a
    payload that travels with its row, 4 or 8 bytes),
    through write-combining buffers (as the hash partition's ``scatter_fixed_stream``): each chunk gathers :data:`STREAM_ROWS` rows per bucket in
    a small buffer (``bw``, ``bp``: ``(nchunks, buckets * STREAM_ROWS)``, rows 64-byte aligned)
    and writes them as whole lines with non-temporal stores, so a scatter into a thousand
    buckets neither reads its output lines first nor touches a page per row. Lines shared with
    another chunk's rows and the unfinished last lines are written a row at a time.
    ``w_out``/``p_out``: 64-byte aligned."""
    n = w_in.shape[0]
    nchunks = cursors.shape[0]
    nb = cursors.shape[1]
    per = STREAM_ROWS
    last = per - 1
    wline = LINE_BYTES // w_out.itemsize
    pline = LINE_BYTES // p_out.itemsize
    c = claim_one(cursor)
    while c < nchunks:
        lo, hi = _bounds(n, c, nchunks)
        start = cursors[c].copy()
        cur = cursors[c].copy()
        lw = bw[c]
        lp = bp[c]
        for i in range(lo, hi):
            w = w_in[i]
            d = _digit_of(w, base, shift, mask)
            k = cur[d]
            slot = k & last
            at = d * per + slot
            lw[at] = w
            if carry is None:
                lp[at] = i
            else:
                lp[at] = carry[i]
            k += 1
            cur[d] = k
            if slot == last:
                first = k - per
                row = d * per
                if first >= start[d]:
                    for t in range(0, per, wline):
                        stream_line(w_out, np.uint64(first + t), lw, np.uint64(row + t))
                    for t in range(0, per, pline):
                        stream_line(p_out, np.uint64(first + t), lp, np.uint64(row + t))
                else:
                    for j in range(start[d], k):
                        w_out[j] = lw[row + (j & last)]
                        p_out[j] = lp[row + (j & last)]
        for d in range(nb):
            k = cur[d]
            row = d * per
            for j in range(max(k - (k & last), start[d]), k):
                w_out[j] = lw[row + (j & last)]
                p_out[j] = lp[row + (j & last)]
        store_fence()
        c = claim_one(cursor)


@register_jitable
def _scatter_rows(w_in, p_in, ident, lo, hi, base, shift, mask, cur, w_out, p_out, want_w):
    """Rows ``lo:hi`` of one stable pass: row ``i`` goes to its digit's cursor in ``cur``."""
    for i in range(lo, hi):
        w = w_in[i]
        d = _digit_of(w, base, shift, mask)
        k = cur[d]
        cur[d] = k + 1
        if want_w:
            w_out[k] = w
        if ident:
            p_out[k] = i
        else:
            p_out[k] = p_in[i]


@register_jitable
def _scatter_local(src_w, src_p, base, shift, mask, cur, dst_w, dst_p):
    """One stable pass over a bucket held in the cache."""
    _scatter_rows(src_w, src_p, False, 0, src_w.shape[0], base, shift, mask, cur, dst_w, dst_p, True)


@njit(**_OPTS)
def bucket_sort(w_in, p_in, starts, groups, base, low_bits, digit_bits, small, perm_out, w_out, want_w, cursor):
    """The second half of the CPU's large sorts: rows already ordered by the bits of
    ``word - base`` above ``low_bits`` (a bucket per value of them, ``starts``: its first row),
    each bucket sorted by the rest (stable, so ties keep the order of ``p_in``), then written
    out: ``perm_out[j] = p_in`` of the row that goes to ``j`` and, with ``want_w``, its word
    (``w_out``). ``groups``: where each thread's run of buckets starts.

    A bucket is copied into per-thread scratch that stays in the cache and sorted there most
    significant digit first: a range's live digit (one on which its rows differ) scatters it stably into the
    other scratch buffer, its sub-ranges go on the same way, and a range of at most ``small``
    rows is finished by an insertion sort (stable), a range whose bits are all compared is
    left in its order. A digit has at most ``digit_bits`` bits and about log2 of the range's
    rows, so that a short range does not pay for a wide histogram. Random words part after
    about log2 of the bucket's rows bits, where the LSD passes pay for every digit."""
    nmax = 1 << digit_bits
    g = claim_one(cursor)
    while g < groups.shape[0] - 1:
        b0 = groups[g]
        b1 = groups[g + 1]
        cap = 1
        for b in range(b0, b1):
            cap = max(cap, starts[b + 1] - starts[b])
        # two scratch buffers as the rows of one array: a range's buffer is an index (an
        # array variable assigned per range would count references at every assignment)
        ws = np.empty((2, cap), w_in.dtype)
        ps = np.empty((2, cap), p_in.dtype)
        hist = np.empty(nmax, np.int64)
        depth = low_bits * nmax + 1
        st_o = np.empty(depth, np.int64)
        st_k = np.empty(depth, np.int64)
        st_r = np.empty(depth, np.int64)
        st_b = np.empty(depth, np.int64)
        for b in range(b0, b1):
            s = starts[b]
            m = starts[b + 1] - s
            if m == 0:
                continue
            for i in range(m):
                ws[0, i] = w_in[s + i]
                ps[0, i] = p_in[s + i]
            top = 1
            st_o[0] = 0
            st_k[0] = m
            st_r[0] = low_bits
            st_b[0] = 0
            while top > 0:
                top -= 1
                o = st_o[top]
                k = st_k[top]
                r = st_r[top]
                src = st_b[top]
                dst = 1 - src
                if k <= small:
                    # stable insertion sort
                    for i in range(o + 1, o + k):
                        x = ws[src, i]
                        q = ps[src, i]
                        j = i - 1
                        while j >= o and ws[src, j] > x:
                            ws[src, j + 1] = ws[src, j]
                            ps[src, j + 1] = ps[src, j]
                            j -= 1
                        ws[src, j + 1] = x
                        ps[src, j + 1] = q
                    r = 0
                # the first digit (below the bits compared) on which the range's rows differ
                bits = min(digit_bits, max(_bit_length(k) - 1, 1))
                nd = 1 << bits
                mask = nd - 1
                sh = 0
                while r > 0:
                    sh = max(r - bits, 0)
                    for d in range(nd):
                        hist[d] = 0
                    for i in range(o, o + k):
                        hist[_digit_of(ws[src, i], base, sh, mask)] += 1
                    if hist[_digit_of(ws[src, o], base, sh, mask)] != k:
                        break
                    r = sh
                if r == 0:
                    # finished: its rows go to buffer 0, where the bucket is copied out from
                    if src == 1:
                        for i in range(o, o + k):
                            ws[0, i] = ws[1, i]
                            ps[0, i] = ps[1, i]
                    continue
                total = o
                for d in range(nd):
                    c = hist[d]
                    hist[d] = total
                    total += c
                for i in range(o, o + k):
                    w = ws[src, i]
                    d = _digit_of(w, base, sh, mask)
                    j = hist[d]
                    hist[d] = j + 1
                    ws[dst, j] = w
                    ps[dst, j] = ps[src, i]
                # hist[d] is now the end of digit d's sub-range
                lo = o
                for d in range(nd):
                    hi = hist[d]
                    c = hi - lo
                    if c == 1 or (c > 0 and sh == 0):
                        if dst == 1:
                            for i in range(lo, hi):
                                ws[0, i] = ws[1, i]
                                ps[0, i] = ps[1, i]
                    elif c > 0:
                        st_o[top] = lo
                        st_k[top] = c
                        st_r[top] = sh
                        st_b[top] = dst
                        top += 1
                    lo = hi
            for i in range(m):
                perm_out[s + i] = ps[0, i]
            if want_w:
                for i in range(m):
                    w_out[s + i] = ws[0, i]
        g = claim_one(cursor)


@register_jitable
def _bit_length(k):
    n = 0
    while k > 0:
        k >>= 1
        n += 1
    return n


@njit(**_NO_NRT)
def first_ranks(perm, w, lc, ranks, todo, nchunks, counts, cursor):
    """The CPU's string ranks after the first sort (``perm``: every row by its first eight bytes
    ``w`` and length class ``lc``): ``ranks[perm[i]]`` the sorted position where row
    ``perm[i]``'s group of equal (``w``, ``lc``) starts, so that a later refinement of one group
    leaves every other rank as it is; ``todo`` gets the rows of the groups that need the next
    eight bytes (in sorted order); returns how many.

    In ``nchunks`` chunks of sorted rows at once (each finds where the group of its first row
    starts by looking back), every row's words loaded once, each row compared with the next
    (the groups' starts found on the way, as :func:`group_starts` would flag them), each
    chunk's rows to refine written from its own first position and moved to the front at the
    end (by the caller: ``counts[c]``, chunk ``c``'s rows to refine, at ``todo[c * step:]``).
    The ranks' stores land at random: one thread stored ten million in 0.5 s. For the chunks it
    claims through ``cursor``."""
    n = perm.shape[0]
    step = (n + nchunks - 1) // nchunks
    c = claim_one(cursor)
    while c < nchunks:
        lo = min(n, c * step)
        hi = min(n, lo + step)
        counts[c] = 0
        if lo < hi:
            counts[c] = _first_ranks_chunk(perm, w, lc, ranks, todo, n, lo, hi)
        c = claim_one(cursor)


@register_jitable
def _first_ranks_chunk(perm, w, lc, ranks, todo, n, lo, hi):
    # first_ranks' rows lo:hi (at least one); returns how many need the next bytes
    start = lo
    while start > 0 and w[perm[start]] == w[perm[start - 1]] and lc[perm[start]] == lc[perm[start - 1]]:
        start -= 1
    cur = perm[lo]
    cw = w[cur]
    cl = lc[cur]
    cflag = start == lo
    k = 0
    for i in range(lo, hi):
        nx = cur
        nw = cw
        nl = cl
        nflag = True
        if i + 1 < n:
            nx = perm[i + 1]
            nw = w[nx]
            nl = lc[nx]
            nflag = nw != cw or nl != cl
        if cflag:
            start = i
        ranks[cur] = start
        if cl == LONGER and not (cflag and nflag):
            todo[lo + k] = cur
            k += 1
        cur = nx
        cw = nw
        cl = nl
        cflag = nflag
    return k


@njit(**_NO_NRT)
def prefix_words_of(offsets, chars, depth, rows, w, lc, cursor):
    """:func:`prefix_words` of the rows ``rows`` only."""
    n = rows.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        for j in range(lo, hi):
            w[j] = _string_prefix(offsets, chars, depth, rows[j])
            lc[j] = _length_class(offsets, depth, rows[j])
        lo, hi = row_block(cursor, n)


@njit(cache=True)
def refine_ranks(sub, rank, w, lc, ranks, todo):
    """One refinement of the CPU's string ranks: rows ``todo`` (all the rows of the groups that
    needed more bytes), ``sub`` their order by (old rank, next eight bytes, length class),
    ``rank`` their old ranks: a group that started at position ``p`` splits into groups ranked
    ``p`` plus their offset in it. ``todo`` is overwritten with the rows that still tie and go
    on (their number is returned); ``ranks`` is updated in place."""
    m = sub.shape[0]
    rows = todo[:m].copy()
    g0 = 0
    s0 = 0
    k = 0
    for i in range(m):
        a = sub[i]
        if i > 0:
            b = sub[i - 1]
            if rank[a] != rank[b]:
                g0 = i
                s0 = i
            elif w[a] != w[b] or lc[a] != lc[b]:
                s0 = i
        ranks[rows[a]] = rank[a] + (s0 - g0)
        if lc[a] == LONGER:
            alone = s0 == i and (i + 1 == m or rank[sub[i + 1]] != rank[a] or w[sub[i + 1]] != w[a]
                                 or lc[sub[i + 1]] != lc[a])
            if not alone:
                todo[k] = rows[a]
                k += 1
    return k


@njit(**_NO_NRT)
def gather_words(words, perm, out, cursor):
    n = out.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        for i in range(lo, hi):
            out[i] = words[perm[i]]
        lo, hi = row_block(cursor, n)


@njit(**_NO_NRT)
def pack_words(packed, first, words, base, mask, shift, cursor):
    """``packed |= ((words - base) & mask) << shift`` (``=`` when ``first``): keys whose ranges
    fit one word together, the most significant in the highest bits."""
    n = packed.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        for i in range(lo, hi):
            v = ((np.uint64(words[i]) - base) & mask) << shift
            if first:
                packed[i] = v
            else:
                packed[i] |= v
        lo, hi = row_block(cursor, n)


@njit(**_NO_NRT)
def decode_words(words, flip, out, cursor):
    """An integer key's values from its sort words (``out``: an unsigned view of the values;
    it may share ``words``' memory): the words with the bits ``flip`` inverted."""
    n = out.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        for i in range(lo, hi):
            out[i] = np.uint64(words[i]) ^ flip
        lo, hi = row_block(cursor, n)


@njit(**_NO_NRT)
def iota(out, cursor):
    n = out.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        for i in range(lo, hi):
            out[i] = i
        lo, hi = row_block(cursor, n)


# --------------------------------------------------------------------------- merging sorted runs
# Rows that are sorted runs already (a distributed sort's pieces, one per rank) are merged, not
# sorted again: ``keys`` is a (k, n) uint64 array of every row's sort words, most significant
# first, compared lexicographically (one row when the keys pack into one word).
@register_jitable
def _row_le(keys, a, b, desc):
    # row a's words <= row b's (>= with ``desc``)
    for c in range(keys.shape[0]):
        x = keys[c, a]
        y = keys[c, b]
        if x != y:
            return (x > y) if desc else (x < y)
    return True


@register_jitable
def _run_row(src, ident, q):
    # the row at position q of the runs being merged
    return np.int64(q) if ident else np.int64(src[q])


@njit(**_NO_NRT)
def merge_round(keys, src, ident, tasks, dst, desc, cursor):
    """One round of stable pairwise merges: each task ``(a_lo, a_hi, b_hi, k0, k1)`` writes
    outputs ``k0..k1-1`` of the merge of run A (positions ``a_lo..a_hi-1`` of ``src``) and run
    B (``a_hi..b_hi-1``) to ``dst[a_lo + k]``; on ties A's rows come first. ``src[q]`` is the
    row at position ``q`` (``ident``: ``q`` itself). A task finds where its outputs start in
    both runs by a binary search (the merge path), so a large pair's merge splits over threads.
    ``keys`` may also be one row of an integer key's own values (signed or not, as their type
    orders them), in descending order with ``desc`` (sort words are always ascending). For the
    tasks it claims through ``cursor``."""
    t = claim_one(cursor)
    while t < tasks.shape[0]:
        _merge_task(keys, src, ident, tasks, dst, desc, t)
        t = claim_one(cursor)


@register_jitable
def _merge_task(keys, src, ident, tasks, dst, desc, t):
    a_lo = tasks[t, 0]
    a_hi = tasks[t, 1]
    b_hi = tasks[t, 2]
    k0 = tasks[t, 3]
    k1 = tasks[t, 4]
    na = a_hi - a_lo
    nb = b_hi - a_hi
    # the least i (A's rows among the first k0 outputs) whose next A row sorts after the
    # last B row taken
    lo = max(0, k0 - nb)
    hi = min(k0, na)
    while lo < hi:
        i = (lo + hi) >> 1
        if _row_le(keys, _run_row(src, ident, a_lo + i), _run_row(src, ident, a_hi + k0 - i - 1), desc):
            lo = i + 1
        else:
            hi = i
    a = a_lo + lo
    b = a_hi + k0 - lo
    k = k0
    if keys.shape[0] == 1:
        # one word a row: without branches on the comparison (half of them would be
        # mispredicted where the runs interleave at random)
        w = keys[0]
        while k < k1 and a < a_hi and b < b_hi:
            ra = _run_row(src, ident, a)
            rb = _run_row(src, ident, b)
            ta = np.int64(w[ra] >= w[rb]) if desc else np.int64(w[ra] <= w[rb])
            dst[a_lo + k] = rb + (ra - rb) * ta
            a += ta
            b += 1 - ta
            k += 1
    else:
        while k < k1 and a < a_hi and b < b_hi:
            ra = _run_row(src, ident, a)
            rb = _run_row(src, ident, b)
            if _row_le(keys, ra, rb, desc):
                dst[a_lo + k] = ra
                a += 1
            else:
                dst[a_lo + k] = rb
                b += 1
            k += 1
    # one run is used up (or the task's outputs are written): the other's rows follow
    while k < k1 and a < a_hi:
        dst[a_lo + k] = _run_row(src, ident, a)
        a += 1
        k += 1
    while k < k1:
        dst[a_lo + k] = _run_row(src, ident, b)
        b += 1
        k += 1


@njit(**_NO_NRT)
def group_flags(perm, ranks, has_ranks, w, lc, flags, cursor):
    n = flags.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        for i in range(lo, hi):
            flags[i] = _group_starts(perm, ranks, has_ranks, w, lc, i)
        lo, hi = row_block(cursor, n)


@njit(**_NO_NRT)
def group_ranks(perm, flags, lc, incl, ranks, cursor):
    """``ranks[perm[i]]``: the dense rank of sorted row ``i``'s group (``incl``: the exclusive
    scan of ``flags``); returns how many of its rows sit in groups still to be refined (the
    caller adds the threads' counts up)."""
    n = flags.shape[0]
    unresolved = 0
    lo, hi = row_block(cursor, n)
    while lo < n:
        for i in range(lo, hi):
            ranks[perm[i]] = incl[i + 1] - 1
            unresolved += _unresolved_row(flags, lc, perm, n, i)
        lo, hi = row_block(cursor, n)
    return unresolved


# --------------------------------------------------------------------------- CUDA kernels
# Rows a block ranks at once (one per thread) and a group ranked by a plain loop (no warp
# intrinsics, so the simulator runs it too).
TILE_MAX = 256
GROUP = 32
GROUPS_MAX = TILE_MAX // GROUP
# numba.cuda, bound by the first cuda_kernels() call: a module global, because the simulator
# runs kernels by swapping the numba.cuda module in their globals.
cuda = None


@functools.lru_cache(maxsize=None)
def cuda_kernels() -> KernelSet:
    """The CUDA sort kernels (built on first use; numba caches each signature's compile)."""
    global cuda
    from numba import cuda

    @cuda.jit
    def k_fixed_words(values, kind, width, validity, has_valid, vbit, desc, flag_only, nulls_last, out):
        i = cuda.grid(1)
        if i < out.shape[0]:
            out[i] = fixed_sort_word(values, kind, width, validity, has_valid, vbit, desc, flag_only, nulls_last, i)

    @cuda.jit
    def k_bool_words(bits, dbit, validity, has_valid, vbit, desc, flag_only, nulls_last, out):
        i = cuda.grid(1)
        if i < out.shape[0]:
            out[i] = bool_sort_word(bits, dbit, validity, has_valid, vbit, desc, flag_only, nulls_last, i)

    @cuda.jit
    def k_dict_words(indices, dranks, validity, has_valid, vbit, dvalid, has_dvalid, dvbit, width, desc,
                     flag_only, nulls_last, out):
        i = cuda.grid(1)
        if i < out.shape[0]:
            out[i] = dict_sort_word(indices, dranks, validity, has_valid, vbit, dvalid, has_dvalid, dvbit, width,
                                    desc, flag_only, nulls_last, i)

    @cuda.jit
    def k_prefix_words(offsets, chars, depth, w, lc):
        i = cuda.grid(1)
        if i < w.shape[0]:
            w[i] = string_prefix(offsets, chars, depth, i)
            lc[i] = length_class(offsets, depth, i)

    @cuda.jit
    def k_word_range(words, flags, null_flag, lo_w, hi_w):
        # the least and greatest word of the rows that are not nulls: each thread over a grid
        # stride, then one atomic each
        a = ONES64
        b = _U0
        for i in range(cuda.grid(1), words.shape[0], cuda.gridsize(1)):
            if null_word(flags, null_flag, i):
                continue
            w = np.uint64(words[i])
            a = min(a, w)
            b = max(b, w)
        cuda.atomic.min(lo_w, 0, a)
        cuda.atomic.max(hi_w, 0, b)

    @cuda.jit
    def k_block_counts(words, base, shift, rows_per_block, counts):
        # counts[d * nblocks + block]: the block's rows with digit d
        local = cuda.shared.array(BUCKETS, np.int32)
        t = cuda.threadIdx.x
        nt = cuda.blockDim.x
        blk = cuda.blockIdx.x
        nb = cuda.gridDim.x
        for d in range(t, BUCKETS, nt):
            local[d] = 0
        cuda.syncthreads()
        lo = blk * rows_per_block
        hi = min(words.shape[0], lo + rows_per_block)
        for i in range(lo + t, hi, nt):
            cuda.atomic.add(local, digit_of(words[i], base, shift, DIGIT_MASK), 1)
        cuda.syncthreads()
        for d in range(t, BUCKETS, nt):
            counts[d * nb + blk] = local[d]

    @cuda.jit
    def k_scatter(w_in, p_in, ident, least, shift, cursors, rows_per_block, w_out, p_out, want_w):
        # cursors[d * nblocks + block]: the output row of the block's first row with digit d (the
        # exclusive scan of the counts). Stable ranks per tile: a row's rank among the earlier
        # rows of its group with its digit (GROUP iterations), plus the counts of the earlier
        # groups (ghist), plus the block's running cursor (base).
        sdig = cuda.shared.array(TILE_MAX, np.int32)
        ghist = cuda.shared.array((GROUPS_MAX, BUCKETS), np.int16)
        base = cuda.shared.array(BUCKETS, np.int64)
        t = cuda.threadIdx.x
        nt = cuda.blockDim.x
        blk = cuda.blockIdx.x
        nb = cuda.gridDim.x
        g = t // GROUP
        g0 = g * GROUP
        g1 = min(g0 + GROUP, nt)
        ngroups = (nt + GROUP - 1) // GROUP
        for d in range(t, BUCKETS, nt):
            base[d] = cursors[d * nb + blk]
            for q in range(GROUPS_MAX):
                ghist[q, d] = 0
        lo = blk * rows_per_block
        hi = min(w_in.shape[0], lo + rows_per_block)
        for start in range(lo, hi, nt):
            i = start + t
            d = np.int32(-1)
            if i < hi:
                d = np.int32(digit_of(w_in[i], least, shift, DIGIT_MASK))
            sdig[t] = d
            cuda.syncthreads()  # digits written; the previous tile's cursors and ghist settled
            r = 0
            last = True
            if d >= 0:
                for j in range(g0, g1):
                    if sdig[j] == d:
                        if j < t:
                            r += 1
                        elif j > t:
                            last = False
                if last:
                    ghist[g, d] = r + 1
            cuda.syncthreads()  # group counts written
            rank = 0
            total = 0
            if d >= 0:
                rank = r
                for q in range(ngroups):
                    c = ghist[q, d]
                    if q < g:
                        rank += c
                    total += c
                k = base[d] + rank
                if want_w:
                    w_out[k] = w_in[i]
                if ident:
                    p_out[k] = i
                else:
                    p_out[k] = p_in[i]
            cuda.syncthreads()  # every row has read the cursors and group counts
            if d >= 0 and last:
                ghist[g, d] = 0
                if rank + 1 == total:
                    base[d] += total

    @cuda.jit
    def k_gather_words(words, perm, out):
        i = cuda.grid(1)
        if i < out.shape[0]:
            out[i] = words[perm[i]]

    @cuda.jit
    def k_iota(out):
        i = cuda.grid(1)
        if i < out.shape[0]:
            out[i] = i

    @cuda.jit
    def k_group_flags(perm, ranks, has_ranks, w, lc, flags):
        i = cuda.grid(1)
        if i < flags.shape[0]:
            flags[i] = group_starts(perm, ranks, has_ranks, w, lc, i)

    @cuda.jit
    def k_group_ranks(perm, flags, lc, incl, ranks, unresolved):
        i = cuda.grid(1)
        n = flags.shape[0]
        if i < n:
            ranks[perm[i]] = incl[i + 1] - 1
            if unresolved_row(flags, lc, perm, n, i) != 0:
                cuda.atomic.add(unresolved, 0, np.int64(1))

    return KernelSet(fixed_words=k_fixed_words, bool_words=k_bool_words, dict_words=k_dict_words,
                     prefix_words=k_prefix_words, word_range=k_word_range,
                     block_counts=k_block_counts, scatter=k_scatter,
                     gather_words=k_gather_words, iota=k_iota, group_flags=k_group_flags,
                     group_ranks=k_group_ranks)
