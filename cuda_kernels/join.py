"""The CUDA kernels of the hash join, built from the per-row functions the CPU drivers use too.

The per-row functions live in one module per family, each defined once and compiled for both
targets: :mod:`gpuframe.kernels.keys` (canonical key word, join hash, row equality, general row
hash), :mod:`gpuframe.kernels.slot_table` (the GPU's table: insert, find, the output row's
probe row), :mod:`gpuframe.kernels.hashtable` (the CPU drivers' chained tables) and
:mod:`gpuframe.kernels.hashing` (``hash_u64``, ``hash_bytes``). Some are re-exported here under
their old names.

The GPU runs one global table with the keys in its slots and a key's duplicate build rows laid
out contiguously (:mod:`gpuframe.kernels.slot_table`): ``slot_build`` inserts one build row per
thread; when a key repeats, ``rep_count``, a scan and ``csr_fill`` give every key a contiguous
segment of build rows. ``slot_probe`` finds each probe row's key (and counts its output rows);
after a scan, ``expand`` writes output row ``o`` from its own thread (a hot key's matches are
written by as many threads as it has matches, coalesced), or, when the build keys are unique,
``write_direct`` writes each probe row's one pair. The CPU drivers
(:mod:`gpuframe.kernels.join_cpu`) run the same key functions inside a different algorithm
(radix partitions, one chained table per partition in cache; see
:mod:`gpuframe.kernels.hashtable`); both return the same rows (in an order the join leaves
unspecified).
"""
from __future__ import annotations

import functools
from collections import namedtuple

import numpy as np
from numba.extending import register_jitable

from .hashtable import (EMPTY, claim_slot, ht_find, ht_insert, ht_walk, push_slot,  # noqa: F401
                        same_key, slot_of, table_bits)
from .kernel_set import KernelSet
from .keys import (JOIN_SEED, KMODE_BITS, KMODE_F64, canon_word, key_word_row, orig_row,  # noqa: F401
                   row_hash, rows_equal, spans_equal, string_span_row, word_hash)
from .loads import register_cuda_overloads as _register_cuda_loads
from .slot_table import register_cuda_overloads as _register_cuda_slots
from .slot_table import add_count, segment_of, slot_find, slot_insert

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
# (:func:`slot_table_arrays` checks each array's dtype and dimensions), not a wrong result.
SlotTable = namedtuple("SlotTable", ("slots", "tmask", "keys", "valid", "kmode", "verify", "w", "st", "en", "ch"))
ProbeArrays = namedtuple("ProbeArrays", ("keys", "valid", "w", "st", "en", "ch"))


def _check(record: str, name: str, a, dtype, ndim: int):
    dt = getattr(a, "dtype", None)
    if dt is None or getattr(a, "ndim", None) != ndim or np.dtype(dt) != dtype:
        got = f"{dt} {getattr(a, 'ndim', '?')}-D" if dt is not None else type(a).__name__
        raise TypeError(f"{record}.{name}: expected a {ndim}-D {np.dtype(dtype)} array, got {got}")
    return a


def slot_table_arrays(*, slots, tmask, keys, valid, kmode, verify, w, st, en, ch) -> SlotTable:
    """The build side on the device: the table (``slots``: key word and representative row + 1
    per slot, ``tmask + 1`` slots; see :mod:`gpuframe.kernels.slot_table`), the build rows' key
    words (``keys``, ``valid``; ``kmode``) and whether a match is confirmed against a general key
    (``verify``: words ``w``, byte spans ``st``/``en`` into ``ch``)."""
    c = "SlotTable"
    u64 = np.uint64
    if int(tmask) < 0 or (int(tmask) + 1) & int(tmask) or getattr(slots, "shape", (0,))[0] != 2 * (int(tmask) + 1):
        raise ValueError(f"SlotTable: expected 2 * (tmask + 1) slot words with tmask + 1 a power of two, "
                         f"got tmask={tmask} and {getattr(slots, 'shape', '?')} words")
    return SlotTable(_check(c, "slots", slots, u64, 1), np.uint64(tmask), _check(c, "keys", keys, u64, 1),
                     _check(c, "valid", valid, np.uint8, 1), int(kmode), bool(verify), _check(c, "w", w, u64, 2),
                     _check(c, "st", st, np.int64, 2), _check(c, "en", en, np.int64, 2),
                     _check(c, "ch", ch, np.uint8, 1))


def probe_arrays(*, keys, valid, w, st, en, ch) -> ProbeArrays:
    """The probe side on the device: key words (``keys``, ``valid``) and a general key's words,
    byte spans and bytes."""
    c = "ProbeArrays"
    return ProbeArrays(_check(c, "keys", keys, np.uint64, 1), _check(c, "valid", valid, np.uint8, 1),
                       _check(c, "w", w, np.uint64, 2), _check(c, "st", st, np.int64, 2),
                       _check(c, "en", en, np.int64, 2), _check(c, "ch", ch, np.uint8, 1))


@register_jitable
def find_rep(tab, probe, i):
    """The representative build row of probe row ``i``'s key, or -1 (a null key: -1)."""
    pvalid = probe.valid
    if pvalid.shape[0] != 0 and pvalid[i] == 0:
        return np.int64(-1)
    return slot_find(tab.slots, tab.tmask, canon_word(probe.keys[i], tab.kmode), tab.verify, tab.w, tab.st,
                     tab.en, tab.ch, probe.w, probe.st, probe.en, probe.ch, np.int64(i))


@register_jitable
def put_pair(lidx, ridx, o, p, b, probe_is_left):
    """Output row ``o`` of the gather maps: probe row ``p`` with build row ``b`` (-1: none)."""
    if probe_is_left:
        lidx[o] = p
        ridx[o] = b
    else:
        lidx[o] = b
        ridx[o] = p


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

    _register_cuda_slots()
    _register_cuda_loads()

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
    def k_slot_build(tab, brep, dup):
        # one thread per build row: its key's representative row (-1: a null key); dup[0] = 1
        # once any row finds its key already there
        j = cuda.grid(1)
        bkeys = tab.keys
        if j >= bkeys.shape[0]:
            return
        bvalid = tab.valid
        if bvalid.shape[0] != 0 and bvalid[j] == 0:
            brep[j] = -1
            return
        rep = slot_insert(tab.slots, tab.tmask, bkeys, j, tab.kmode, tab.verify, tab.w, tab.st, tab.en, tab.ch)
        brep[j] = rep
        if rep != j and dup[0] == 0:
            dup[0] = 1

    @cuda.jit
    def k_rep_count(brep, rcount):
        # rows of each key, counted at its representative
        j = cuda.grid(1)
        if j < brep.shape[0]:
            r = brep[j]
            if r >= 0:
                add_count(rcount, r, 1)

    @cuda.jit
    def k_csr_fill(brep, rstart, rcount, csr):
        # each build row into its key's segment (rcount counts down to 0)
        j = cuda.grid(1)
        if j < brep.shape[0]:
            r = brep[j]
            if r >= 0:
                csr[rstart[r] + add_count(rcount, r, -1) - 1] = j

    @cuda.jit
    def k_slot_probe(tab, probe, unique, rstart, eup, rmatched, pmatched, prep, counts):
        # one thread per probe row: its key's representative (prep), its output rows (counts),
        # the representatives matched (rmatched) and the probe rows matched (pmatched); an empty
        # array is not written
        i = cuda.grid(1)
        if i >= probe.keys.shape[0]:
            return
        rep = find_rep(tab, probe, i)
        if rep >= 0:
            if rmatched.shape[0] != 0 and rmatched[rep] == 0:
                rmatched[rep] = 1
            if pmatched.shape[0] != 0:
                pmatched[i] = 1
        if prep.shape[0] != 0:
            prep[i] = rep
        if counts.shape[0] != 0:
            c = np.int64(0)
            if rep >= 0:
                c = np.int64(1) if unique else rstart[rep + 1] - rstart[rep]
            if c == 0 and eup:
                c = np.int64(1)
            counts[i] = c

    @cuda.jit
    def k_expand(offs, prep, rstart, csr, probe_is_left, lidx, ridx):
        # one thread per output row of the probe rows: its probe row by binary search over the
        # offsets, its build row from the key's contiguous segment (-1: an unmatched probe row)
        o = cuda.grid(1)
        n = prep.shape[0]
        if o < offs[n]:
            i = segment_of(offs, n, o)
            rep = prep[i]
            b = np.int64(-1)
            if rep >= 0:
                b = csr[rstart[rep] + o - offs[i]]
            put_pair(lidx, ridx, o, i, b, probe_is_left)

    @cuda.jit
    def k_write_direct(prep, offs, probe_is_left, lidx, ridx):
        # unique build keys: probe row i gives at most one row, at offs[i] (every row, at i,
        # when offs is empty: the unmatched probe rows are kept)
        i = cuda.grid(1)
        if i < prep.shape[0]:
            o = np.int64(i)
            if offs.shape[0] != 0:
                o = offs[i]
                if offs[i + 1] == o:
                    return
            put_pair(lidx, ridx, o, i, prep[i], probe_is_left)

    @cuda.jit
    def k_rep_flags(brep, rmatched, flags):
        # flags[j] = 1 where build row j's key was matched (a null key never is)
        j = cuda.grid(1)
        if j < brep.shape[0]:
            r = brep[j]
            flags[j] = 1 if r >= 0 and rmatched[r] != 0 else 0

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

    return KernelSet(
        key_word=k_key_word, string_span=k_string_span, emit=k_emit, row_hash=k_row_hash,
        slot_build=k_slot_build, rep_count=k_rep_count, csr_fill=k_csr_fill, slot_probe=k_slot_probe,
        expand=k_expand, write_direct=k_write_direct, rep_flags=k_rep_flags, flag_count=k_flag_count,
        flag_write=k_flag_write,
    )
