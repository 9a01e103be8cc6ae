"""Join keys, per row: the canonical key word, its hash, and row equality. One definition
each (:mod:`gpuframe.kernels.per_row`): compiled into the CPU drivers (:mod:`gpuframe.kernels.join_cpu`)
and the CUDA kernels (:mod:`gpuframe.kernels.join`) alike, and run as plain Python by the CUDA
simulator.

A key is one uint64 *word* per row (``kmode`` says how to compare it):

* ``KMODE_BITS``: the bits themselves (every integer type after promotion, dates, timestamps,
  booleans, and the 64-bit row hash of the general path);
* ``KMODE_F64``: float64 bits, compared after :func:`canonical_f64_bits` (``-0.0 == 0.0``,
  every NaN equal to every NaN).

Multi-column, string and dictionary keys (and ``nulls_equal=True`` with null keys) use the
*general* path: the word is :func:`row_hash` and every hash match is confirmed with
:func:`rows_equal` over the normalised key columns (``words``: uint64 ``[n_words, rows]``,
null flags included as extra rows; ``st``/``en``: int64 ``[n_strings, rows]`` byte spans into
``chars``, uint8).

The join hashes with its own seed (:data:`JOIN_SEED`), independent of the seed a distributed
shuffle used (:mod:`gpuframe.kernels.hashing`), through the same ``hash_u64`` for a key word;
the general path's rows and string bytes through its own cheaper :func:`key_bytes_step`.
"""
from __future__ import annotations

import numpy as np

from .hashing import canonical_f64_bits, hash_u64
from .loads import load_tail, load_word
from .per_row import per_row

KMODE_BITS = 0
KMODE_F64 = 1
# A fixed seed for the join's own hash: independent of the seed a distributed shuffle used.
JOIN_SEED = np.uint64(0x2545F4914F6CDD1D)


@per_row
def canon_word(w, kmode):
    """The comparable form of key word ``w`` (uint64)."""
    if kmode == KMODE_F64:
        return canonical_f64_bits(w)
    return np.uint64(w)


@per_row
def word_hash(w):
    """The join hash of a canonical key word: ``hash_u64(w, JOIN_SEED)``."""
    return hash_u64(w, JOIN_SEED)


@per_row
def orig_row(orig, pos):
    """Original row of table position ``pos`` (``orig`` empty means the identity)."""
    if orig.shape[0] == 0:
        return np.int64(pos)
    return np.int64(orig[pos])


@per_row
def spans_equal(ach, a0, a1, bch, b0, b1):
    """``ach[a0:a1] == bch[b0:b1]``, compared eight bytes at a time. A span of 8 to 32 bytes
    takes four word loads a side at fixed places (0, 8 and 16, each at most the last word's
    place, and the last word, overlapping its neighbour) with no branch on the length, so the
    join's verify of short string keys, whose lengths vary row to row, does not mispredict a
    loop's exit on every row. Longer spans go word by word (the last word overlapping),
    shorter ones as one zero-padded tail."""
    n = a1 - a0
    if n != b1 - b0:
        return False
    if n < 8:
        return n <= 0 or load_tail(ach, a0, a1) == load_tail(bch, b0, b1)
    last = n - 8
    if n <= 32:
        k1 = min(8, last)
        k2 = min(16, last)
        d = (load_word(ach, a0) ^ load_word(bch, b0)) | (load_word(ach, a0 + k1) ^ load_word(bch, b0 + k1))
        d |= load_word(ach, a0 + k2) ^ load_word(bch, b0 + k2)
        d |= load_word(ach, a0 + last) ^ load_word(bch, b0 + last)
        return d == 0
    k = 0
    while k < last:
        if load_word(ach, a0 + k) != load_word(bch, b0 + k):
            return False
        k += 8
    return load_word(ach, a0 + last) == load_word(bch, b0 + last)


@per_row
def rows_equal(aw, ast, aen, ach, ia, bw, bst, ben, bch, ib):
    """Whether row ``ia`` of side A and row ``ib`` of side B have equal general keys (one
    string column alone, the commonest general key, without the loops)."""
    if aw.shape[0] == 0 and ast.shape[0] == 1:
        return spans_equal(ach, ast[0, ia], aen[0, ia], bch, bst[0, ib], ben[0, ib])
    for c in range(aw.shape[0]):
        if aw[c, ia] != bw[c, ib]:
            return False
    for c in range(ast.shape[0]):
        if not spans_equal(ach, ast[c, ia], aen[c, ia], bch, bst[c, ib], ben[c, ib]):
            return False
    return True


# key_bytes_step's constants: an odd multiplier (a bijection of uint64) and a shift
_KB_LEN = np.uint64(0x9E3779B97F4A7C15)
_KB_MUL = np.uint64(0xC2B2AE3D27D4EB4F)
_KB_SHIFT = np.uint64(32)


@per_row
def key_bytes_step(h, w):
    """One step of :func:`key_bytes_hash` and :func:`row_hash`: ``w`` xored in, its high half
    xored into its low half, multiplied by an odd constant (a bijection of ``h`` for a given
    ``w`` and of ``w`` for a given ``h``). The xor-shift comes before the multiply so that no
    difference passes through a step unchanged: a multiply by an odd constant turns a flip of
    bit 63, and only that, into the same flip, which the next word could undo (the rotate and
    multiply this replaces hashed two strings with one flip each, bit 34 of one word and bit 63
    of the next, to one value)."""
    x = h ^ w
    x ^= x >> _KB_SHIFT
    return x * _KB_MUL


@per_row
def key_bytes_hash(chars, start, end):
    """The join's hash of the bytes ``chars[start:end]`` (one string key): from the length,
    a :func:`key_bytes_step` per 8-byte little-endian word: an xor-shift and a multiply a word
    where :func:`hash_bytes` runs a whole ``fmix64``.

    The words, as :func:`spans_equal` loads them: a key of 8 to 32 bytes always takes four,
    at 0, 8 and 16 (each at most the last word's place) and the last word (overlapping its
    neighbour), so that keys whose lengths vary row to row take no branch on the length; a
    longer key every word, the last one overlapping; a shorter one its bytes zero-padded
    (nothing for the empty key). The value is a function of the bytes alone, the same on
    every target; :func:`word_hash` spreads the bits for the tables and partitions, and
    :func:`rows_equal` confirms every match, so the hash decides speed only. (The shuffle's
    and groupby's string hashes are :func:`hash_bytes`.)"""
    n = end - start
    h = (np.uint64(n) * _KB_LEN) ^ JOIN_SEED
    if n < 8:
        if n > 0:
            h = key_bytes_step(h, load_tail(chars, start, end))
        return h
    last = end - 8
    if n <= 32:
        h = key_bytes_step(h, load_word(chars, start))
        h = key_bytes_step(h, load_word(chars, min(start + 8, last)))
        h = key_bytes_step(h, load_word(chars, min(start + 16, last)))
        return key_bytes_step(h, load_word(chars, last))
    p = start
    while p < last:
        h = key_bytes_step(h, load_word(chars, p))
        p += 8
    return key_bytes_step(h, load_word(chars, last))


@per_row
def row_hash(words, st, en, chars, i):
    """The key word of row ``i`` of a general key (fixed words, then string spans): a
    :func:`key_bytes_step` per word and per string's :func:`key_bytes_hash`, from the column
    count. It is not finalised: the tables and partitions place a key word by
    :func:`word_hash`, a whole ``fmix64``, and compare the words themselves only as a filter
    before :func:`rows_equal`."""
    h = (np.uint64(words.shape[0] + st.shape[0]) * _KB_LEN) ^ JOIN_SEED
    for c in range(words.shape[0]):
        h = key_bytes_step(h, words[c, i])
    for c in range(st.shape[0]):
        h = key_bytes_step(h, key_bytes_hash(chars, st[c, i], en[c, i]))
    return h


@per_row
def key_word_row(src, kmode, valid, has_valid, out, flag, has_flag, keep, has_keep, i):
    """Row ``i`` of one key column's words on the general path: the canonical word, 0 for a null
    key; a null sets the row's null-flag word (``has_flag``: ``nulls_equal``), else clears its
    keep byte (``has_keep``)."""
    null = has_valid and valid[i] == 0
    out[i] = np.uint64(0) if null else canon_word(src[i], kmode)
    if has_flag:
        flag[i] = np.uint64(1) if null else np.uint64(0)
    elif null and has_keep:
        keep[i] = 0


@per_row
def string_span_row(offs, valid, has_valid, st, en, flag, has_flag, keep, has_keep, i):
    """Row ``i`` of one string key's byte spans on the general path: its offsets widened to
    int64, an empty span for a null key (whose flag word or keep byte is set as by
    :func:`key_word_row`)."""
    null = has_valid and valid[i] == 0
    if null:
        st[i] = 0
        en[i] = 0
    else:
        st[i] = np.int64(offs[i])
        en[i] = np.int64(offs[i + 1])
    if has_flag:
        flag[i] = np.uint64(1) if null else np.uint64(0)
    elif null and has_keep:
        keep[i] = 0


# --------------------------------------------------------------------------- device key preparation
# What the host path of gpuframe.backends._keys did with numpy, per row, for the CUDA backend's
# key preparation (gpuframe.kernels.keyprep): several string keys (spans into their
# concatenated bytes, ``base`` added), dictionary keys, and a uint64 key joined with a signed one.
@per_row
def string_span_at_row(offs, base, valid, has_valid, st, en, flag, has_flag, keep, has_keep, i):
    """:func:`string_span_row` with ``base`` added to the span (the key's bytes start at
    ``base`` of bytes several string keys share); a null key's span is empty at ``base``."""
    null = has_valid and valid[i] == 0
    if null:
        st[i] = base
        en[i] = base
    else:
        st[i] = base + np.int64(offs[i])
        en[i] = base + np.int64(offs[i + 1])
    if has_flag:
        flag[i] = np.uint64(1) if null else np.uint64(0)
    elif null and has_keep:
        keep[i] = 0


@per_row
def dict_span_row(idx, ivalid, has_ivalid, doffs, dvalid, has_dvalid, base, st, en, flag, has_flag, keep,
                  has_keep, i):
    """Row ``i`` of a dictionary string key's byte spans: the span of dictionary entry
    ``idx[i]`` (``doffs``: the dictionary's offsets, ``base`` added). The key is null where the
    index is null (``ivalid``) or the entry it points at is (``dvalid``): an empty span at
    ``base``, the flag word or keep byte set as by :func:`key_word_row`."""
    null = has_ivalid and ivalid[i] == 0
    j = np.int64(0)
    if not null:
        j = np.int64(idx[i])
        null = has_dvalid and dvalid[j] == 0
    if null:
        st[i] = base
        en[i] = base
    else:
        st[i] = base + np.int64(doffs[j])
        en[i] = base + np.int64(doffs[j + 1])
    if has_flag:
        flag[i] = np.uint64(1) if null else np.uint64(0)
    elif null and has_keep:
        keep[i] = 0


@per_row
def range_valid_row(words, valid, has_valid, out, i):
    """Row ``i``'s validity on the fast path of a uint64 key joined with a signed one: 1 where
    the key is not null and its value fits both types (``words``: int64 view of the words,
    ``>= 0``)."""
    if (has_valid and valid[i] == 0) or words[i] < 0:
        out[i] = 0
    else:
        out[i] = 1


@per_row
def range_clear_row(words, valid, has_valid, keep, i):
    """The general path's range check: clear row ``i``'s keep byte where it is not null and its
    int64 word is negative (a value the other side's type cannot hold). A null row's stored value
    is not looked at: under ``nulls_equal`` it must still match the other side's nulls."""
    if words[i] < 0 and not (has_valid and valid[i] == 0):
        keep[i] = 0


@per_row
def coalesced_key_span(lst, len_, lkeep, has_lkeep, lidx, rst, ren, rkeep, has_rkeep, ridx, i):
    """Output row ``i`` of a coalesced string key from per-row spans (a dictionary's or a plain
    string's): ``(side, start, length, valid)``, the left row where ``lidx[i] >= 0`` (side 0),
    else the right row (side 1); null (empty) where that row's keep byte is 0 or neither side is
    present."""
    j = lidx[i]
    if j >= 0:
        if has_lkeep and lkeep[j] == 0:
            return 0, np.int64(0), np.int64(0), 0
        s = np.int64(lst[j])
        return 0, s, np.int64(len_[j]) - s, 1
    j = ridx[i]
    if j >= 0:
        if has_rkeep and rkeep[j] == 0:
            return 1, np.int64(0), np.int64(0), 0
        s = np.int64(rst[j])
        return 1, s, np.int64(ren[j]) - s, 1
    return 0, np.int64(0), np.int64(0), 0
