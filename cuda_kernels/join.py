"""The CUDA kernels of the hash join, built from the per-row functions the CPU drivers use too.

The per-row functions live in one module per family, each defined once and compiled for both
targets: :mod:`gpuframe.kernels.keys` (canonical key word, join hash, row equality, general row
hash), :mod:`gpuframe.kernels.hashtable` (slot, insert, find) and
:mod:`gpuframe.kernels.hashing` (``hash_u64``, ``hash_bytes``). They are re-exported here under
their old names.

The GPU runs one global hash table (``t0 = b0 = 0``, ``pshift = 0``): one thread per build row
inserts with atomics (:func:`ht_insert`), one thread per probe row walks its chain
(:func:`ht_find`); counts, a prefix sum and a second probe pass write the pairs. The CPU drivers
(:mod:`gpuframe.kernels.join_cpu`) run the same per-row functions inside a different algorithm
(radix partitions, one table per partition in cache; see :mod:`gpuframe.kernels.hashtable`):
their partitions, slots and chains follow from the same hash, so both devices return the same
rows.
"""
from __future__ import annotations

import functools
from collections import namedtuple

import numpy as np
from numba.extending import register_jitable

from .hashtable import (EMPTY, claim_slot, ht_find, ht_insert, ht_walk, push_slot,  # noqa: F401
                        register_cuda_overloads, same_key, slot_of, table_bits)
from .kernel_set import KernelSet
from .keys import (JOIN_SEED, KMODE_BITS, KMODE_F64, canon_word, key_word_row, orig_row,  # noqa: F401
                   row_hash, rows_equal, spans_equal, string_span_row, word_hash)
from .loads import register_cuda_overloads as _register_cuda_loads

# Output-row source codes, the one definition for both targets (``k >= 0``: column ``k`` of that
# side's columns); the CPU drivers (join_cpu) and gpuframe.backends import them from here.
SRC_NONE = -1          # nothing from this side
SRC_KEY = -2           # this side's key word (in the CPU drivers: the build row's, SRC_BUILD_KEY)
SRC_MATCH_KEY = -3     # CPU probe side: the key word of the matching build row (equal to the probe's)
SRC_ONE = -4           # 1 where the side is present (a presence / validity word)
SRC_ROW = -5           # the side's original row number (gather maps)


@register_jitable
def pick_value(src, keys, code, i):
    """Output word of row ``i``: ``src[i]`` (code >= 0), the key word (``SRC_KEY``) or 1."""
    if code == SRC_KEY:
        return np.int64(keys[i])
    if code == SRC_ONE:
        return np.int64(1)
    return np.int64(src[i])


# --------------------------------------------------------------------------- kernel arguments
# The build and probe kernels take each side's arrays as one named tuple (numba-cuda types it
# field by field and passes the fields as separate kernel parameters), read by name in the
# kernel. One keyword-only constructor per record; a field in the wrong place is an error there
# (:func:`build_arrays` checks each array's dtype and dimensions), not a wrong result.
BuildArrays = namedtuple("BuildArrays", (
    "table", "nxt", "tmask", "pshift", "keys", "valid", "kmode", "verify", "orig", "w", "st", "en", "ch"))
ProbeArrays = namedtuple("ProbeArrays", ("keys", "valid", "w", "st", "en", "ch"))


def _check(record: str, name: str, a, dtype, ndim: int):
    dt = getattr(a, "dtype", None)
    if dt is None or getattr(a, "ndim", None) != ndim or np.dtype(dt) != dtype:
        got = f"{dt} {getattr(a, 'ndim', '?')}-D" if dt is not None else type(a).__name__
        raise TypeError(f"{record}.{name}: expected a {ndim}-D {np.dtype(dtype)} array, got {got}")
    return a


def build_arrays(*, table, nxt, tmask, pshift, keys, valid, kmode, verify, orig, w, st, en, ch) -> BuildArrays:
    """The build side on the device: the hash table (``table``, ``nxt``, ``tmask``, ``pshift``),
    its key words (``keys``, ``valid``; ``kmode``), whether a match is confirmed against a
    general key (``verify``: words ``w``, byte spans ``st``/``en`` into ``ch``), and the
    original rows ``orig`` (empty: the identity)."""
    c = "BuildArrays"
    i64, u64, u8 = np.int64, np.uint64, np.uint8
    return BuildArrays(_check(c, "table", table, i64, 1), _check(c, "nxt", nxt, i64, 1), np.uint64(tmask),
                       np.uint64(pshift), _check(c, "keys", keys, u64, 1), _check(c, "valid", valid, u8, 1),
                       int(kmode), bool(verify), _check(c, "orig", orig, i64, 1), _check(c, "w", w, u64, 2),
                       _check(c, "st", st, i64, 2), _check(c, "en", en, i64, 2), _check(c, "ch", ch, u8, 1))


def probe_arrays(*, keys, valid, w, st, en, ch) -> ProbeArrays:
    """The probe side on the device: key words (``keys``, ``valid``) and a general key's words,
    byte spans and bytes."""
    c = "ProbeArrays"
    return ProbeArrays(_check(c, "keys", keys, np.uint64, 1), _check(c, "valid", valid, np.uint8, 1),
                       _check(c, "w", w, np.uint64, 2), _check(c, "st", st, np.int64, 2),
                       _check(c, "en", en, np.int64, 2), _check(c, "ch", ch, np.uint8, 1))


@register_jitable
def find_match(build, probe, i):
    """The build row heading probe row ``i``'s matches in the global table, or ``EMPTY``."""
    w = canon_word(probe.keys[i], build.kmode)
    return ht_find(build.table, 0, build.tmask, build.pshift, build.keys, 0, w, word_hash(w), build.kmode,
                   build.verify, build.orig, build.w, build.st, build.en, build.ch, probe.w, probe.st, probe.en,
                   probe.ch, np.int64(i))


# --------------------------------------------------------------------------- CUDA kernels
# numba.cuda, bound by the first cuda_kernels() call: a module global, because the simulator
# runs kernels by swapping the numba.cuda module in their globals.
cuda = None


@functools.lru_cache(maxsize=None)
def cuda_kernels() -> KernelSet:
    """Build (once) the CUDA kernels of the join.

    Importing ``numba.cuda`` happens here, not at module import, so the CPU path never pays
    for it.
    """
    global cuda
    from numba import cuda

    register_cuda_overloads()
    _register_cuda_loads()

    @cuda.jit
    def k_fill(arr, value):
        i = cuda.grid(1)
        if i < arr.shape[0]:
            arr[i] = value

    @cuda.jit
    def k_key_word(src, kmode, valid, has_valid, out, flag, has_flag, keep, has_keep):
        i = cuda.grid(1)
        if i < out.shape[0]:
            key_word_row(src, kmode, valid, has_valid, out, flag, has_flag, keep, has_keep, i)

    @cuda.jit
    def k_string_span(offs, valid, has_valid, st, en, flag, has_flag, keep, has_keep):
        i = cuda.grid(1)
        if i < st.shape[0]:
            string_span_row(offs, valid, has_valid, st, en, flag, has_flag, keep, has_keep, i)

    @cuda.jit
    def k_row_hash(words, st, en, chars, out):
        i = cuda.grid(1)
        if i < out.shape[0]:
            out[i] = row_hash(words, st, en, chars, i)

    @cuda.jit
    def k_build(build):
        j = cuda.grid(1)
        bkeys = build.keys
        bvalid = build.valid
        if j < bkeys.shape[0] and (bvalid.shape[0] == 0 or bvalid[j] != 0):
            ht_insert(build.table, 0, build.tmask, build.pshift, build.nxt, bkeys, 0, j, build.kmode, build.verify,
                      build.orig, build.w, build.st, build.en, build.ch)

    @cuda.jit
    def k_probe_count(build, probe, emit_unmatched_probe, bmatched, counts):
        i = cuda.grid(1)
        if i >= probe.keys.shape[0]:
            return
        nxt = build.nxt
        pvalid = probe.valid
        c = np.int64(0)
        if pvalid.shape[0] == 0 or pvalid[i] != 0:
            t = find_match(build, probe, i)
            while t != EMPTY:
                c += 1
                if bmatched.shape[0] != 0:
                    bmatched[t] = 1
                t = nxt[t]
        if c == 0 and emit_unmatched_probe:
            c = 1
        counts[i] = c

    @cuda.jit
    def k_probe_write(build, probe, emit_unmatched_probe, offsets, out_p, out_b):
        i = cuda.grid(1)
        if i >= probe.keys.shape[0]:
            return
        nxt = build.nxt
        pvalid = probe.valid
        o = offsets[i]
        if pvalid.shape[0] == 0 or pvalid[i] != 0:
            t = find_match(build, probe, i)
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
    def k_probe_mark(build, probe, pmatched, bmatched):
        # semi/anti: mark probe rows with a match and/or build rows that were matched
        i = cuda.grid(1)
        if i >= probe.keys.shape[0]:
            return
        nxt = build.nxt
        pvalid = probe.valid
        if pvalid.shape[0] != 0 and pvalid[i] == 0:
            return
        t = find_match(build, probe, i)
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

    return KernelSet(
        fill=k_fill, key_word=k_key_word, string_span=k_string_span, emit=k_emit, map_pairs=k_map_pairs, row_hash=k_row_hash, build=k_build,
        probe_count=k_probe_count, probe_write=k_probe_write, flag_count=k_flag_count,
        flag_write=k_flag_write, probe_mark=k_probe_mark,
    )
