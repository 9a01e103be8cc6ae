"""The GPU join's hash table, per row: keys in the slots, duplicates laid out contiguously.

The CUDA join (:mod:`gpuframe.kernels.join`) builds one global table for the whole build side,
the way cuDF's hash join does, not the chained per-partition tables of the CPU drivers
(:mod:`gpuframe.kernels.hashtable`):

* **Open addressing, keys in the slots.** ``slots`` is a uint64 array of ``2 * (tmask + 1)``
  words: ``slots[2 s]`` holds the canonical key word of slot ``s`` and ``slots[2 s + 1]`` its
  *representative* build row plus one (0: the slot is empty). A probe reads the key and the row
  of a slot from one 16-byte pair, never through the build side's key array. Linear probing,
  load factor at most 1/2 (:func:`gpuframe.kernels.hashtable.table_bits`); a slot's first
  position comes from the join hash (:func:`gpuframe.kernels.keys.word_hash`).
* **One slot per distinct key.** The first build row of a key to claim a slot (``cas`` on the
  row word, :func:`claim_pair`) becomes its representative; every other row of that key finds
  the slot and records the representative (``brep``). With no duplicates at all (one flag word
  says so) the representative *is* the match: no counts, no scan, no second table.
* **Duplicates contiguous.** With duplicates, every key's rows are counted at their
  representative (:func:`add_count`), an exclusive scan gives each key a segment of ``csr`` and
  each row is written into its key's segment. A probe row's matches are then
  ``csr[rstart[rep]:rstart[rep + 1]]``: one contiguous run, so output row ``o`` can be written by
  its own thread (:func:`segment_of` finds the probe row of an output row by binary search over
  the output offsets), and a hot key's thousands of matches are spread over thousands of threads
  with coalesced writes instead of one thread walking a chain.

Order of a key's rows within its segment is the order the threads ran in (the join's row order
is unspecified, see :func:`gpuframe.merge`).

General keys (several columns, strings, ``nulls_equal`` with null keys): the slot word is the
row hash, and a slot whose word matches is confirmed with :func:`gpuframe.kernels.keys.rows_equal`
against its representative row.

The functions are per-row functions (:mod:`gpuframe.kernels.per_row`), compiled for both targets
(tests/test_one_source.py); only the CUDA kernels and the simulator call them. The two writes that
race between GPU threads (:func:`claim_pair`, :func:`add_count`) are atomics on the GPU and
under the simulator, plain stores on the CPU.
"""
from __future__ import annotations

import numpy as np

from .atomics import atomic_add, atomic_cas
from .atomics import register_cuda_overloads as _register_cuda_atomics
from .keys import canon_word, rows_equal, word_hash
from .per_row import per_row, per_target, register_cuda_bodies
from .hashtable import slot_of

__all__ = ["claim_pair", "add_count", "slot_insert", "slot_find", "segment_of", "register_cuda_overloads"]


# --------------------------------------------------------------------------- racing writes
def _claim_pair_cpu(slots, s, row):
    v = slots[2 * s + 1]
    if v == 0:
        slots[2 * s + 1] = np.uint64(row + 1)
    return v


def _add_count_cpu(arr, i, d):
    old = arr[i]
    arr[i] = old + d
    return old


@per_target(_claim_pair_cpu)
def claim_pair(slots, s, row):
    """Make build row ``row`` the representative of empty slot ``s``; returns the slot's previous
    row word (0: the slot is ``row``'s now, and its key word is the caller's to write).
    Atomic (``cas``) on the GPU and under the simulator."""
    return atomic_cas(slots, 2 * s + 1, np.uint64(0), np.uint64(row + 1))


@per_target(_add_count_cpu)
def add_count(arr, i, d):
    """``arr[i] += d``; returns the previous value. Atomic on the GPU and under the simulator."""
    return atomic_add(arr, i, d)


def register_cuda_overloads() -> None:
    """Teach the CUDA target :func:`claim_pair` and :func:`add_count` (idempotent; imports
    ``numba.cuda``)."""
    _register_cuda_atomics()
    register_cuda_bodies(claim_pair, add_count)


# --------------------------------------------------------------------------- per-row functions
@per_row
def slot_insert(slots, tmask, bkeys, j, kmode, verify, vb_w, vb_st, vb_en, vb_ch):
    """Insert build row ``j``: returns the representative row of its key (``j`` itself when it
    claimed a new slot). While the table is being built, a slot's key word may not be written
    yet, so an occupied slot is compared through its representative's key (``bkeys``)."""
    w = canon_word(bkeys[j], kmode)
    s = slot_of(word_hash(w), np.uint64(0), tmask)
    while True:
        v = slots[2 * s + 1]
        if v == 0:
            v = claim_pair(slots, s, j)
            if v == 0:
                slots[2 * s] = w
                return np.int64(j)
        rep = np.int64(v) - 1
        if canon_word(bkeys[rep], kmode) == w:
            if not verify or rows_equal(vb_w, vb_st, vb_en, vb_ch, rep, vb_w, vb_st, vb_en, vb_ch, j):
                return rep
        s = (s + 1) & np.int64(tmask)


@per_row
def slot_find(slots, tmask, w, verify, vb_w, vb_st, vb_en, vb_ch, vp_w, vp_st, vp_en, vp_ch, prow):
    """The representative build row of canonical key word ``w`` (probe row ``prow``'s general
    key, with ``verify``), or -1; the built table's keys are read from the slots."""
    s = slot_of(word_hash(w), np.uint64(0), tmask)
    while True:
        v = slots[2 * s + 1]
        if v == 0:
            return np.int64(-1)
        if slots[2 * s] == w:
            rep = np.int64(v) - 1
            if not verify or rows_equal(vb_w, vb_st, vb_en, vb_ch, rep, vp_w, vp_st, vp_en, vp_ch, prow):
                return rep
        s = (s + 1) & np.int64(tmask)


@per_row
def segment_of(offs, n, o):
    """The ``i`` in ``[0, n)`` with ``offs[i] <= o < offs[i + 1]`` (``offs`` non-decreasing,
    ``offs[0] == 0 <= o < offs[n]``): the probe row that output row ``o`` belongs to."""
    lo = np.int64(0)
    hi = np.int64(n)
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if offs[mid] <= o:
            lo = mid
        else:
            hi = mid
    return lo
