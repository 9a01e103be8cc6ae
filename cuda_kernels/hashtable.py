"""The CPU join's hash tables, per row: slot, insert and find. One definition each
(:mod:`gpuframe.kernels.per_row`), compiled for both targets (the CPU drivers run them; they
compile for CUDA too, tests/test_one_source.py); the one thing the targets do differently,
writing a slot, is one name per operation with an implementation per target
(:func:`claim_slot`, :func:`push_slot`).

Open addressing with linear probing over ``table[t0:t0 + tmask + 1]`` (``EMPTY = -1``, a power
of two of slots; int32 on the CPU); a slot holds the *head* of a chain of build rows that share
one key, as a row id local to the table (build position ``b0 + id``), and ``nxt[pos]`` links
build position ``pos`` to the next position with the same key (``-1`` ends a chain). The table
therefore holds each distinct key once: heavy duplicates (one key on half of the rows) make a
long chain, never a long probe sequence for other keys. The slot of a key uses the hash bits
*above* the ``pshift`` radix-partition bits (the CPU drivers partition on the low bits), so a
partition's keys spread over its whole table.

Why the GPU uses another table
------------------------------
The CPU radix-partitions both sides first and builds one small table per partition on one
thread, inside that core's cache; one thread per table needs no atomics, inserting in reverse
position order keeps every chain in position order, and a chain is walked in cache. The GPU
builds one global table from one thread per build row, where a chain would be walked serially by
every thread that matches a hot key (twice: count, then write) and every insert of one key
would serialise on one exchange; its table keeps the keys in the slots and each key's rows
contiguous instead (:mod:`gpuframe.kernels.slot_table`). :func:`table_bits` and
:func:`slot_of` serve both.
"""
from __future__ import annotations

import numpy as np

from .atomics import atomic_cas, atomic_exch
from .atomics import register_cuda_overloads as _register_cuda_atomics
from .keys import canon_word, orig_row, rows_equal, word_hash
from .per_row import per_row, per_target, register_cuda_bodies

EMPTY = -1


# --------------------------------------------------------------------------- slot writes
def _claim_slot_cpu(table, s, j):
    # one thread builds each table on the CPU: a plain load and store
    t = table[s]
    if t == EMPTY:
        table[s] = j
    return t


def _push_slot_cpu(table, s, j):
    t = table[s]
    table[s] = j
    return t


@per_target(_claim_slot_cpu)
def claim_slot(table, s, j):
    """Put row id ``j`` in slot ``s`` if it is empty; returns the slot's previous value (``EMPTY``:
    the slot is ``j``'s now). Atomic (``cas``) on the GPU and under the simulator."""
    return atomic_cas(table, s, EMPTY, j)


@per_target(_push_slot_cpu)
def push_slot(table, s, j):
    """Make ``j`` the head of slot ``s``'s chain; returns the previous head. Atomic (``exch``)
    on the GPU and under the simulator."""
    return atomic_exch(table, s, j)


def register_cuda_overloads() -> None:
    """Teach the CUDA target :func:`claim_slot` and :func:`push_slot` (the atomic bodies above;
    idempotent; imports ``numba.cuda``)."""
    _register_cuda_atomics()
    register_cuda_bodies(claim_slot, push_slot)


# --------------------------------------------------------------------------- per-row functions
@per_row
def slot_of(h, pshift, tmask):
    """First slot of a key with hash ``h`` (the bits above the partition bits)."""
    return np.int64((h >> pshift) & tmask)


@per_row
def table_bits(n):
    """log2 of the slot count for ``n`` build rows (load factor <= 1/2, at least 16 slots)."""
    b = 4
    while (np.int64(1) << b) < 2 * n:
        b += 1
    return b


@per_row
def same_key(bkeys, bpos, w, kmode, verify, borig, vb_w, vb_st, vb_en, vb_ch,
             oside_w, oside_st, oside_en, oside_ch, orow):
    """Key of build position ``bpos`` equals canonical word ``w`` (and, with ``verify``, the
    normalised general key of row ``orow`` of the other side; ``borig`` maps build positions
    to the rows of ``vb_*``, empty: the identity)."""
    if canon_word(bkeys[bpos], kmode) != w:
        return False
    if verify:
        return rows_equal(vb_w, vb_st, vb_en, vb_ch, orig_row(borig, bpos),
                          oside_w, oside_st, oside_en, oside_ch, orow)
    return True


@per_row
def ht_insert(table, t0, tmask, pshift, nxt, bkeys, b0, j, kmode, verify, borig,
              vb_w, vb_st, vb_en, vb_ch):
    """Insert build row ``j`` of the table (build position ``b0 + j``) into
    ``table[t0:t0 + tmask + 1]``; returns 1 when it joined the chain of an equal key, else 0.

    ``nxt[b0 + j]`` must be ``-1`` beforehand; it receives the position of the previous head.
    """
    pos = b0 + j
    w = canon_word(bkeys[pos], kmode)
    s = slot_of(word_hash(w), pshift, tmask)
    me = orig_row(borig, pos)
    while True:
        t = table[t0 + s]
        if t == EMPTY:
            t = claim_slot(table, t0 + s, j)
            if t == EMPTY:
                return 0
        if same_key(bkeys, b0 + t, w, kmode, verify, borig, vb_w, vb_st, vb_en, vb_ch,
                    vb_w, vb_st, vb_en, vb_ch, me):
            nxt[pos] = b0 + push_slot(table, t0 + s, j)
            return 1
        s = (s + 1) & np.int64(tmask)


@per_row
def ht_walk(table, t0, tmask, s, t, bkeys, b0, w, kmode, verify, borig,
            vb_w, vb_st, vb_en, vb_ch, vp_w, vp_st, vp_en, vp_ch, prow):
    """The probe sequence from slot ``s``, whose entry ``t`` the caller loaded already: the
    build position heading the chain of keys equal to canonical word ``w`` (probe row ``prow``
    for ``verify``), or ``-1``."""
    while t != EMPTY:
        if same_key(bkeys, b0 + t, w, kmode, verify, borig, vb_w, vb_st, vb_en, vb_ch,
                    vp_w, vp_st, vp_en, vp_ch, prow):
            return b0 + np.int64(t)
        s = (s + 1) & np.int64(tmask)
        t = table[t0 + s]
    return np.int64(-1)


@per_row
def ht_find(table, t0, tmask, pshift, bkeys, b0, w, h, kmode, verify, borig,
            vb_w, vb_st, vb_en, vb_ch, vp_w, vp_st, vp_en, vp_ch, prow):
    """:func:`ht_walk` from the first slot of canonical word ``w`` with join hash ``h``."""
    s = slot_of(h, pshift, tmask)
    return ht_walk(table, t0, tmask, s, table[t0 + s], bkeys, b0, w, kmode, verify, borig,
                   vb_w, vb_st, vb_en, vb_ch, vp_w, vp_st, vp_en, vp_ch, prow)
