"""Hash-join per-row logic, one source for the CPU (``njit``) and CUDA (``cuda.jit``) targets
(and plain Python, which the CUDA simulator runs),
and the CUDA kernels built from it.

The hash table
--------------
Open addressing with linear probing over ``table`` (int64, ``EMPTY = -1``, a power of two of
slots); a slot holds the *head* of a chain of build rows that share one key, and ``nxt[j]``
links build row ``j`` to the next row with the same key (``-1`` ends a chain). The table
therefore holds each distinct key once: heavy duplicates (one key on half of the rows) make a
long chain, never a long probe sequence for other keys. Inserting takes a ``cas`` on an empty
slot or an ``exch`` on the slot of an equal key (:mod:`gpuframe.kernels.atomics`), so the same
function fills one table from many CUDA threads (``atomic=False``: plain loads and stores).

The CPU drivers (:mod:`gpuframe.kernels.join_cpu`) build one small table per radix partition
with these per-row pieces (:func:`canon_word`, :func:`word_hash`, :func:`slot_of`, the same
chains) and compare bytes eight at a time (unaligned loads the GPU does not allow); their row
hash is bit-identical to :func:`row_hash` (tested), so both devices put every key in the same
partition and slot order and return the same rows.

Keys
----
A key is one uint64 *word* per row (``kmode`` says how to compare it):

* ``KMODE_BITS``: the bits themselves (every integer type after promotion, dates, timestamps,
  booleans, and the 64-bit row hash of the general path);
* ``KMODE_F64``: float64 bits, compared after :func:`canonical_f64_bits` (``-0.0 == 0.0``,
  every NaN equal to every NaN).

Multi-column, string and dictionary keys (and ``nulls_equal=True`` with null keys) use the
*general* path: the word is a 64-bit row hash and ``verify=True`` makes every hash match
confirm the key with :func:`rows_equal` over the normalised key columns (``words`` rows of
uint64 plus ``[start, end)`` byte spans into ``chars`` for the string columns).

The slot of a key uses the hash bits *above* the ``pshift`` radix-partition bits (the CPU
drivers partition on the low bits), so a partition's keys spread over its whole table.
"""
from __future__ import annotations

import functools

import numpy as np
from numba import njit

from .atomics import atomic_cas, atomic_exch, register_cuda_overloads
from .hashing import canonical_f64_bits, fmix64, hash_combine, hash_u64

EMPTY = -1
KMODE_BITS = 0
KMODE_F64 = 1
# A fixed seed for the join's own hash: independent of the seed a distributed shuffle used.
JOIN_SEED = np.uint64(0x2545F4914F6CDD1D)
U0 = np.uint64(0)
_S33 = np.uint64(33)
_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_SEED_MIX = np.uint64((int(JOIN_SEED) * 0x9E3779B97F4A7C15 + 0x9E3779B97F4A7C15) % 2**64)
U8 = np.uint64(8)


# --------------------------------------------------------------------------- per-row functions
_PER_ROW: list = []


def _returns(fn):
    def typer(*args, **kws):
        return fn

    return typer


def per_row(fn):
    """Make ``fn`` callable from ``cuda.jit`` kernels (see :func:`_register_cuda_per_row`) and
    from plain Python (the simulator); :func:`cpu_per_row` gives the CPU drivers their copy.

    The shared Python function carries no CPU overload. An ``overload(fn, target="cpu",
    inline="always")`` on it (what this module once did) leaves numba-core IR in the template's
    inline cache once a CPU driver compiled; numba-cuda (0.30.4) then inlined that IR into every
    CUDA kernel calling ``fn`` and failed with ``assert isinstance(inst, Stmt)``: every CUDA join
    after a CPU join in the same process (seen on the first real-GPU run;
    tests/test_per_row_targets.py reproduces it without a GPU).
    """
    _PER_ROW.append(fn)
    return fn


def cpu_per_row(fn):
    """The CPU copy of per-row function ``fn``: an ``njit(inline="always")`` dispatcher of the
    same Python source (inlined into the caller's IR: these run once per row, and a call per row
    with a dozen array arguments costs more than the work). A separate object from ``fn``, so
    the CPU and CUDA compilers never share a template."""
    return njit(inline="always")(fn)


def _register_cuda_per_row() -> None:
    from numba.cuda.extending import overload as cuda_overload

    for fn in _PER_ROW:
        cuda_overload(fn, target="cuda", strict=False)(_returns(fn))


@per_row
def canon_word(w, kmode):
    """The comparable form of key word ``w`` (uint64)."""
    if kmode == KMODE_F64:
        return canonical_f64_bits(w)
    return np.uint64(w)


@per_row
def word_hash(w):
    """The join hash of a canonical key word: ``hash_u64(w, JOIN_SEED)`` of
    :mod:`gpuframe.kernels.hashing`, spelled out so that it inlines into the probe loops."""
    k = np.uint64(w) ^ _SEED_MIX
    k ^= k >> _S33
    k *= _M1
    k ^= k >> _S33
    k *= _M2
    k ^= k >> _S33
    return k


@per_row
def orig_row(orig, pos):
    """Original row of table position ``pos`` (``orig`` empty means the identity)."""
    if orig.shape[0] == 0:
        return np.int64(pos)
    return np.int64(orig[pos])


@per_row
def spans_equal(ach, a0, a1, bch, b0, b1):
    """``ach[a0:a1] == bch[b0:b1]`` byte for byte."""
    n = a1 - a0
    if n != b1 - b0:
        return False
    for k in range(n):
        if ach[a0 + k] != bch[b0 + k]:
            return False
    return True


@per_row
def rows_equal(aw, ast, aen, ach, ia, bw, bst, ben, bch, ib):
    """Whether row ``ia`` of side A and row ``ib`` of side B have equal keys.

    ``aw``/``bw``: uint64 ``[n_words, rows]`` normalised fixed-width key words (null flags
    included as extra rows); ``ast``/``aen``: int64 ``[n_strings, rows]`` byte spans into
    ``ach`` (uint8) for the string key columns; likewise for B.
    """
    for c in range(aw.shape[0]):
        if aw[c, ia] != bw[c, ib]:
            return False
    for c in range(ast.shape[0]):
        if not spans_equal(ach, ast[c, ia], aen[c, ia], bch, bst[c, ib], ben[c, ib]):
            return False
    return True


@per_row
def bytes_hash(chars, start, end):
    """Hash of ``chars[start:end]``, eight bytes at a time (little-endian words)."""
    h = hash_u64(np.uint64(end - start), JOIN_SEED)
    p = start
    while p + 8 <= end:
        w = U0
        for k in range(8):
            w |= np.uint64(chars[p + k]) << np.uint64(8 * k)
        h = fmix64(h ^ w)
        p += 8
    if p < end:
        w = U0
        for k in range(end - p):
            w |= np.uint64(chars[p + k]) << np.uint64(8 * k)
        h = fmix64(h ^ w)
    return h


@per_row
def row_hash(words, st, en, chars, i):
    """64-bit hash of row ``i`` of a general key (fixed words, then string spans)."""
    h = hash_u64(np.uint64(words.shape[0] + st.shape[0]), JOIN_SEED)
    for c in range(words.shape[0]):
        h = hash_combine(h, word_hash(words[c, i]))
    for c in range(st.shape[0]):
        h = hash_combine(h, bytes_hash(chars, st[c, i], en[c, i]))
    return fmix64(h)


@per_row
def slot_of(h, pshift, tmask):
    return np.int64((h >> pshift) & tmask)


@per_row
def same_key(bkeys, bpos, w, kmode, verify, borig, vb_w, vb_st, vb_en, vb_ch,
             oside_w, oside_st, oside_en, oside_ch, orow):
    """Key of build position ``bpos`` equals canonical word ``w`` (and, with ``verify``, the
    normalised key of row ``orow`` of the other side)."""
    if canon_word(bkeys[bpos], kmode) != w:
        return False
    if verify:
        return rows_equal(vb_w, vb_st, vb_en, vb_ch, orig_row(borig, bpos),
                          oside_w, oside_st, oside_en, oside_ch, orow)
    return True


@per_row
def ht_insert(table, nxt, tmask, pshift, bkeys, base, j, kmode, verify, borig,
              vb_w, vb_st, vb_en, vb_ch, atomic):
    """Insert build row ``j`` (position ``base + j`` of ``bkeys``; table ids are ``j``).

    ``nxt[j]`` must be ``-1`` beforehand. With ``atomic`` many threads may insert at once.
    """
    w = canon_word(bkeys[base + j], kmode)
    s = slot_of(word_hash(w), pshift, tmask)
    me = orig_row(borig, base + j)
    while True:
        t = table[s]
        if t == EMPTY:
            if atomic:
                t = atomic_cas(table, s, EMPTY, j)
                if t == EMPTY:
                    return
            else:
                table[s] = j
                return
        if same_key(bkeys, base + t, w, kmode, verify, borig, vb_w, vb_st, vb_en, vb_ch,
                    vb_w, vb_st, vb_en, vb_ch, me):
            if atomic:
                nxt[j] = atomic_exch(table, s, j)
            else:
                nxt[j] = t
                table[s] = j
            return
        s = (s + 1) & np.int64(tmask)


@per_row
def ht_find(table, tmask, pshift, bkeys, base, w, kmode, verify, borig,
            vb_w, vb_st, vb_en, vb_ch, vp_w, vp_st, vp_en, vp_ch, prow):
    """Head of the chain of build rows whose key equals canonical word ``w`` (probe row
    ``prow`` for ``verify``), or ``-1``."""
    s = slot_of(word_hash(w), pshift, tmask)
    while True:
        t = table[s]
        if t == EMPTY:
            return np.int64(-1)
        if same_key(bkeys, base + t, w, kmode, verify, borig, vb_w, vb_st, vb_en, vb_ch,
                    vp_w, vp_st, vp_en, vp_ch, prow):
            return t
        s = (s + 1) & np.int64(tmask)


SRC_NONE = -1
SRC_KEY = -2
SRC_ONE = -4


@per_row
def pick_value(src, keys, code, i):
    """Output word of row ``i``: ``src[i]`` (code >= 0), the key word (``SRC_KEY``) or 1."""
    if code == SRC_KEY:
        return np.int64(keys[i])
    if code == SRC_ONE:
        return np.int64(1)
    return np.int64(src[i])


@per_row
def table_bits(n):
    """log2 of the slot count for ``n`` build rows (load factor <= 1/2, at least 16 slots)."""
    b = 4
    while (np.int64(1) << b) < 2 * n:
        b += 1
    return b


# --------------------------------------------------------------------------- CUDA kernels
# numba.cuda, bound by the first cuda_kernels() call: a module global, because the simulator
# runs kernels by swapping the numba.cuda module in their globals.
cuda = None


@functools.lru_cache(maxsize=None)
def cuda_kernels():
    """Build (once) the CUDA kernels of the join; see ``gpuframe.backends.impl_join``.

    Returns a namespace of ``cuda.jit`` kernels. Importing ``numba.cuda`` happens here, not
    at module import, so the CPU path never pays for it.
    """
    import types

    global cuda
    from numba import cuda

    register_cuda_overloads()
    _register_cuda_per_row()

    @cuda.jit
    def k_fill(arr, value):
        i = cuda.grid(1)
        if i < arr.shape[0]:
            arr[i] = value

    @cuda.jit
    def k_row_hash(words, st, en, chars, out):
        i = cuda.grid(1)
        if i < out.shape[0]:
            out[i] = row_hash(words, st, en, chars, i)

    @cuda.jit
    def k_build(table, nxt, tmask, pshift, bkeys, bvalid, kmode, verify, borig,
                vb_w, vb_st, vb_en, vb_ch):
        j = cuda.grid(1)
        if j < bkeys.shape[0] and (bvalid.shape[0] == 0 or bvalid[j] != 0):
            ht_insert(table, nxt, tmask, pshift, bkeys, 0, j, kmode, verify, borig,
                      vb_w, vb_st, vb_en, vb_ch, True)

    @cuda.jit
    def k_probe_count(table, nxt, tmask, pshift, bkeys, kmode, verify, borig,
                      vb_w, vb_st, vb_en, vb_ch, pkeys, pvalid, vp_w, vp_st, vp_en, vp_ch,
                      emit_unmatched_probe, bmatched, counts):
        i = cuda.grid(1)
        if i >= pkeys.shape[0]:
            return
        c = np.int64(0)
        if pvalid.shape[0] == 0 or pvalid[i] != 0:
            w = canon_word(pkeys[i], kmode)
            t = ht_find(table, tmask, pshift, bkeys, 0, w, kmode, verify, borig,
                        vb_w, vb_st, vb_en, vb_ch, vp_w, vp_st, vp_en, vp_ch, np.int64(i))
            while t != EMPTY:
                c += 1
                if bmatched.shape[0] != 0:
                    bmatched[t] = 1
                t = nxt[t]
        if c == 0 and emit_unmatched_probe:
            c = 1
        counts[i] = c

    @cuda.jit
    def k_probe_write(table, nxt, tmask, pshift, bkeys, kmode, verify, borig,
                      vb_w, vb_st, vb_en, vb_ch, pkeys, pvalid, vp_w, vp_st, vp_en, vp_ch,
                      emit_unmatched_probe, offsets, out_p, out_b):
        i = cuda.grid(1)
        if i >= pkeys.shape[0]:
            return
        o = offsets[i]
        if pvalid.shape[0] == 0 or pvalid[i] != 0:
            w = canon_word(pkeys[i], kmode)
            t = ht_find(table, tmask, pshift, bkeys, 0, w, kmode, verify, borig,
                        vb_w, vb_st, vb_en, vb_ch, vp_w, vp_st, vp_en, vp_ch, np.int64(i))
            while t != EMPTY:
                out_p[o] = i
                out_b[o] = t
                o += 1
                t = nxt[t]
        if o == offsets[i] and emit_unmatched_probe:
            out_p[o] = i
            out_b[o] = -1

    @cuda.jit
    def k_flag_count(flags, want, counts):
        # counts[i] = 1 where flags[i] == want (unmatched build rows, semi/anti selections)
        i = cuda.grid(1)
        if i < flags.shape[0]:
            counts[i] = 1 if flags[i] == want else 0

    @cuda.jit
    def k_flag_write(flags, want, offsets, base, out_a, out_b, fill_a):
        # rows i with flags[i] == want go to out_b[base + offsets[i]] (out_a gets fill_a)
        i = cuda.grid(1)
        if i < flags.shape[0] and flags[i] == want:
            o = base + offsets[i]
            out_b[o] = i
            if out_a.shape[0] != 0:
                out_a[o] = fill_a

    @cuda.jit
    def k_probe_mark(table, nxt, tmask, pshift, bkeys, kmode, verify, borig,
                     vb_w, vb_st, vb_en, vb_ch, pkeys, pvalid, vp_w, vp_st, vp_en, vp_ch,
                     pmatched, bmatched):
        # semi/anti: mark probe rows with a match and/or build rows that were matched
        i = cuda.grid(1)
        if i >= pkeys.shape[0]:
            return
        if pvalid.shape[0] != 0 and pvalid[i] == 0:
            return
        w = canon_word(pkeys[i], kmode)
        t = ht_find(table, tmask, pshift, bkeys, 0, w, kmode, verify, borig,
                    vb_w, vb_st, vb_en, vb_ch, vp_w, vp_st, vp_en, vp_ch, np.int64(i))
        if t != EMPTY:
            if pmatched.shape[0] != 0:
                pmatched[i] = 1
            if bmatched.shape[0] != 0:
                while t != EMPTY:
                    bmatched[t] = 1
                    t = nxt[t]

    @cuda.jit
    def k_emit(lidx, ridx, lsrc, lkeys, lcode, rsrc, rkeys, rcode, fill, out):
        # one output column: left source when the left row is there, else right, else fill
        o = cuda.grid(1)
        if o < out.shape[0]:
            i = lidx[o]
            j = ridx[o]
            if i >= 0 and lcode != SRC_NONE:
                out[o] = pick_value(lsrc, lkeys, lcode, i)
            elif j >= 0 and rcode != SRC_NONE:
                out[o] = pick_value(rsrc, rkeys, rcode, j)
            else:
                out[o] = fill

    @cuda.jit
    def k_map_pairs(out_p, out_b, probe_is_left, lidx, ridx):
        o = cuda.grid(1)
        if o < out_p.shape[0]:
            if probe_is_left:
                lidx[o] = out_p[o]
                ridx[o] = out_b[o]
            else:
                lidx[o] = out_b[o]
                ridx[o] = out_p[o]

    return types.SimpleNamespace(
        fill=k_fill, emit=k_emit, map_pairs=k_map_pairs, row_hash=k_row_hash, build=k_build, probe_count=k_probe_count,
        probe_write=k_probe_write, flag_count=k_flag_count, flag_write=k_flag_write,
        probe_mark=k_probe_mark,
    )
