"""Join keys as the join kernels take them: one comparable uint64 *word* per row, or a row hash
verified against normalised key columns (host-side code both backends share).

A key pair's family (:class:`gpuframe.backends.contract.KeyPair`) fixes how both sides become
words: the table of families, types and words is in :mod:`gpuframe.ops.keys`.

A single fixed-width key takes the *fast path* (the word itself is hashed and compared; a 64-bit
key on its own device is used as it is stored, zero-copy). Several keys, string keys, and
``nulls_equal`` with null keys take the *general path*: a row hash, verified against the words
and byte spans. ``uint64`` paired with a signed integer compares values: a row whose value the
other side's type cannot hold never matches.

Normalisation of the general path runs on the key columns' device where the backend gives its
kernels (``widen``, ``key_word``, ``string_span``: both backends do) and the keys are
fixed-width, bool and at most one plain string key. On a CUDA device the backend's
:class:`DeviceKeyPrep` (:func:`gpuframe.backends.cuda._target.key_prep`) covers the rest on the
device too: dictionary keys, several string keys (their bytes concatenated there) and the range
check of a uint64 key joined with a signed one, so nothing but sizes crosses to the host. On
the CPU those run on the host (numpy), as before.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pyarrow as pa

from gpuframe.kernels.join import KMODE_BITS, KMODE_F64

from ..core import memory
from ..core.buffer import Buffer
from ..core.column import Column, pack_bits
from ..core.device import CPU, Device
from ..core.dtypes import Layout
from ..core.hostalloc import host_empty
from ._common import narrow_host, words_to_values
from .contract import KeyPair

__all__ = ["SideKeys", "DeviceKeyPrep", "prepare_keys", "prepare_side", "key_words", "host_valid", "key_has_nulls",
           "fast_key_words", "merged_key_host"]

# widen(values, dtype, device) -> values converted to dtype on the device (a backend's kernel)
Widen = Callable[[Any, Any, Device], Any]
# key_word(src, kmode, valid, out, flag, keep): one key column's row of the general path's
# words, made on the device (a backend's kernel): out = canonical word of src (uint64), 0 where
# valid (uint8 or None) is 0; a null sets flag (uint64 row or None) to 1, else clears keep
KeyWord = Callable[[Any, int, Any, Any, Any, Any], None]
# string_span(offsets, valid, st, en, flag, keep): a string key's int64 byte spans (empty where
# valid is 0) into st/en, made on the device; flag and keep as for KeyWord
StringSpan = Callable[[Any, Any, Any, Any, Any, Any], None]


@dataclass(frozen=True)
class DeviceKeyPrep:
    """A device backend's kernels for the keys that ``key_word`` and ``string_span`` do not
    cover: they make on the device what :func:`_general_side` and :func:`_fast_side` make on
    the host (the same spans, null flags, keep bytes and validity). ``None`` arguments are
    absent arrays (no nulls, no flag word, no keep bytes)."""

    # (offsets, base, valid, st, en, flag, keep): a plain string key's int64 spans, ``base``
    # added, a null key's empty span at ``base``; flag and keep as for KeyWord
    string_span_at: Callable[..., None]
    # (indices, index_valid, dict_offsets, dict_valid, base, st, en, flag, keep): a dictionary
    # key's spans through its dictionary; a null index or a null entry is a null key
    dict_span: Callable[..., None]
    # (words_int64, valid) -> uint8 [n]: 1 where valid (None: all) and the word is >= 0
    range_valid: Callable[[Any, Any], Any]
    # (words_int64, valid, keep): keep[i] = 0 where the row is not null (valid None: none is)
    # and its word is negative
    range_clear: Callable[[Any, Any, Any], None]
    # (src, dst, base): dst[base:base + len(src)] = src (uint8)
    copy_at: Callable[[Any, Any, int], None]


def _device_key_prep(device: Device) -> Optional[DeviceKeyPrep]:
    """The :class:`DeviceKeyPrep` of ``device``'s backend (CUDA), ``None`` on the CPU."""
    if not device.is_cuda:
        return None
    from .cuda._target import key_prep     # deferred: the CPU path never imports the CUDA backend

    return key_prep()


@dataclass
class SideKeys:
    """One side's keys as the kernels take them, on the table's device."""

    n: int
    keys: Any                      # uint64 [n]: the key word (fast path) or the row hash
    valid: Any                     # uint8 [n] (0: the row never matches) or empty
    kmode: int
    verify: bool                   # general path: confirm hash matches with the words/spans
    words: Any                     # uint64 [nw, n] (general path) or [0, 0]
    starts: Any                    # int64 [ns, n] byte spans of string keys, or [0, 0]
    ends: Any
    chars: Any                     # uint8, every string key's bytes
    # host arrays kept for materialising string keys: per string pair (starts, ends, chars, valid)
    string_spans: list = field(default_factory=list)


# --------------------------------------------------------------------------- host words
def _dictionary_null_entries(col: Column) -> bool:
    d = col.dictionary
    return col.layout == Layout.DICTIONARY and d is not None and d.has_nulls


def key_has_nulls(col: Column) -> bool:
    """Whether some row of the key column is null: a null row, or (dictionary) a row whose
    dictionary entry is null."""
    return col.has_nulls or _dictionary_null_entries(col)


def host_valid(col: Column) -> Optional[np.ndarray]:
    """uint8 per row, 0 where the key is null (or ``None``: no null keys).

    A dictionary row is null when its index is null or when the entry it points at is null
    (as the row hash of a partition has it); a null entry's empty byte span must
    not match the empty string.
    """
    if not key_has_nulls(col):
        return None
    if col.has_nulls:
        valid = memory.to_host(col.validity_bytes()).astype(np.uint8, copy=True)
    else:
        valid = np.ones(len(col), np.uint8)
    if _dictionary_null_entries(col):
        col_h = col.to("cpu") if col.device.is_cuda else col
        dvalid = memory.to_host(col_h.dictionary.validity_bytes()).astype(np.uint8, copy=False)
        idx = np.asarray(col_h.values()).astype(np.int64)
        idx[valid == 0] = 0           # a null index may hold any value
        valid &= dvalid[idx]
    return valid


def key_words(col: Column, pair: KeyPair) -> np.ndarray:
    """The column's key words (uint64, host): the promoted value of every row (nulls: any)."""
    col_h = col.to("cpu") if col.device.is_cuda else col
    fam = pair.family
    if fam == "bool":
        return memory.to_host(col_h.bool_bytes()).astype(np.uint64)
    vals = col_h.values()
    if fam == "float":
        return np.ascontiguousarray(vals, dtype=np.float64).view(np.uint64)
    if vals.dtype.itemsize == 8:
        return np.ascontiguousarray(vals).view(np.uint64)
    return vals.astype(np.int64).view(np.uint64)


def _canonical_f64(words: np.ndarray) -> np.ndarray:
    f = words.view(np.float64)
    out = words.copy()
    out[np.isnan(f)] = np.uint64(0x7FF8000000000000)
    out[f == 0.0] = np.uint64(0)
    return out


def _string_spans_into(col: Column, st: np.ndarray, en: np.ndarray, base: int) -> np.ndarray:
    """Write every row's utf8 byte span (``base`` added) into ``st``/``en`` (int64, host) and
    return the bytes the spans point into; null rows get empty spans."""
    col = col.to("cpu") if col.device.is_cuda else col
    if col.layout == Layout.DICTIONARY:
        d = col.dictionary
        if len(d) == 0:
            st[:] = base
            en[:] = base
            return np.zeros(0, np.uint8)
        doffs = d.offsets_view().astype(np.int64)
        idx = col.values().astype(np.int64)
        if col.has_nulls:
            idx[memory.to_host(col.validity_bytes()) == 0] = 0    # a null index may hold any value
        np.take(doffs, idx, out=st)
        idx += 1
        np.take(doffs, idx, out=en)
        chars = d.chars()
    else:
        offs = col.offsets_view()
        st[:] = offs[:-1]
        en[:] = offs[1:]
        chars = col.chars()
    if base:
        st += base
        en += base
    return np.asarray(chars, dtype=np.uint8)


# --------------------------------------------------------------------------- both sides
def _use_fast_path(pairs: Sequence[KeyPair], any_nulls_equal_nulls: bool) -> bool:
    return len(pairs) == 1 and not pairs[0].is_string and not any_nulls_equal_nulls


def prepare_keys(lcols: Sequence[Column], rcols: Sequence[Column], pairs: Sequence[KeyPair], nulls_equal: bool,
                 device: Device, widen: Optional[Widen] = None,
                 key_word: Optional[KeyWord] = None,
                 string_span: Optional[StringSpan] = None) -> tuple[SideKeys, SideKeys]:
    """Both sides' :class:`SideKeys` on ``device``, from the key columns of each side
    (``lcols[i]`` pairs with ``rcols[i]`` as ``pairs[i]`` says).

    ``widen(values, dtype, device)``, where a backend gives one, converts a narrower
    fixed-width key to int64/float64 on the device itself (else that runs on the host).

    Single fixed-width keys take the fast path (the key word itself is hashed and compared);
    several keys, string keys, and ``nulls_equal`` with null keys take the general path (a
    row hash, verified against the normalised key words and byte spans). With ``widen``,
    ``key_word`` and ``string_span`` a general path of fixed-width, bool and (at most one)
    plain string keys is prepared on the device; on a CUDA device (its :class:`DeviceKeyPrep`)
    every key is, dictionary keys, several string keys and range checks included.
    """
    # pairs whose nulls must match each other: both sides get a null-flag word for them
    flag_pairs = [nulls_equal and (key_has_nulls(lc) or key_has_nulls(rc)) for lc, rc in zip(lcols, rcols)]
    more = _device_key_prep(device) if widen is not None else None
    if _use_fast_path(pairs, any(flag_pairs)):
        return (_fast_side(lcols[0], pairs[0], device, widen, more),
                _fast_side(rcols[0], pairs[0], device, widen, more))
    if (widen is not None and key_word is not None and string_span is not None
            and (more is not None or sum(1 for p in pairs if p.is_string) <= 1)
            and all(_device_words_ok(c, p, device, more) for cols in (lcols, rcols) for c, p in zip(cols, pairs))):
        return (_general_side_device(lcols, pairs, flag_pairs, device, widen, key_word, string_span, more),
                _general_side_device(rcols, pairs, flag_pairs, device, widen, key_word, string_span, more))
    return (_general_side(lcols, pairs, flag_pairs, device),
            _general_side(rcols, pairs, flag_pairs, device))


def prepare_side(cols: Sequence[Column], pairs: Sequence[KeyPair], device: Device, widen: Optional[Widen] = None,
                 key_word: Optional[KeyWord] = None, string_span: Optional[StringSpan] = None) -> SideKeys:
    """One table's :class:`SideKeys` for grouping (unique, set operations, groupby): its rows
    compared with each other, null == null (``nulls_equal``), as :func:`prepare_keys` would
    prepare either side of a self-join, made once."""
    flag_pairs = [key_has_nulls(c) for c in cols]
    more = _device_key_prep(device) if widen is not None else None
    if _use_fast_path(pairs, any(flag_pairs)):
        return _fast_side(cols[0], pairs[0], device, widen, more)
    if (widen is not None and key_word is not None and string_span is not None
            and (more is not None or sum(1 for p in pairs if p.is_string) <= 1)
            and all(_device_words_ok(c, p, device, more) for c, p in zip(cols, pairs))):
        return _general_side_device(cols, pairs, flag_pairs, device, widen, key_word, string_span, more)
    return _general_side(cols, pairs, flag_pairs, device)


def _device_words_ok(col: Column, pair: KeyPair, device: Device, more: Optional[DeviceKeyPrep]) -> bool:
    if col.device != device:
        return False
    if pair.is_string:
        # without ``more``, a dictionary's spans and null entries are made on the host
        return col.layout == Layout.STRING or (more is not None and col.layout == Layout.DICTIONARY)
    if pair.range_checked and more is None:
        return False
    return col.layout == Layout.FIXED or pair.family == "bool"


def _device_key_words(col: Column, pair: KeyPair, device: Device, widen: Widen) -> Any:
    """The key column's values as uint64 words on the device (floats as float64 bits, integers
    sign-extended, bools 0/1): a view for 8-byte values, a ``widen`` kernel otherwise."""
    if pair.family == "bool":
        return memory.view_as(widen(col.bool_bytes(), np.int64, device), np.uint64)
    vals = col.values()
    if pair.family == "float":
        f64 = vals if pa.types.is_float64(col.dtype) else widen(vals, np.float64, device)
        return memory.view_as(f64, np.uint64)
    if col.data.dtype.itemsize == 8:
        return memory.view_as(vals, np.uint64)
    return memory.view_as(widen(vals, np.int64, device), np.uint64)


def _string_chars(col: Column) -> Any:
    """The bytes a string key's spans point into (a dictionary's: its dictionary's)."""
    return col.dictionary.chars() if col.layout == Layout.DICTIONARY else col.chars()


def _device_spans(col: Column, base: int, st: Any, en: Any, flag: Any, keep: Any, string_span: StringSpan,
                  more: Optional[DeviceKeyPrep]) -> None:
    """One string key's spans (``base`` added), null flags and keep bytes, by kernels on the
    column's device: what :func:`_string_spans_into` and :func:`host_valid` make on the host."""
    valid = col.validity_bytes() if col.has_nulls else None
    if col.layout == Layout.DICTIONARY:
        d = col.dictionary
        dvalid = d.validity_bytes() if d.has_nulls else None
        more.dict_span(col.values(), valid, d.offsets_view(), dvalid, base, st, en, flag, keep)
    elif base:
        more.string_span_at(col.offsets_view(), base, valid, st, en, flag, keep)
    else:
        string_span(col.offsets_view(), valid, st, en, flag, keep)


def _general_side_device(cols: Sequence[Column], pairs: Sequence[KeyPair], flag_pairs: Sequence[bool],
                         device: Device, widen: Widen, key_word: KeyWord, string_span: StringSpan,
                         more: Optional[DeviceKeyPrep] = None) -> SideKeys:
    """:func:`_general_side` made by kernels on ``device``: the same words, null-flag words,
    byte spans and validity, nothing copied to the host. Without ``more`` the keys are
    fixed-width, bool and one plain string key (its spans point into its own byte buffer); with
    it dictionary keys, several string keys (their bytes concatenated on the device, each key's
    spans offset by where its bytes start, as on the host) and range-checked keys too."""
    n = len(cols[0])
    nflag = sum(1 for f in flag_pairs if f)
    ns = sum(1 for p in pairs if p.is_string)
    warr = memory.empty((len(pairs) - ns + nflag, n), np.uint64, device)
    sarr = memory.empty((ns, n), np.int64, device)
    earr = memory.empty((ns, n), np.int64, device)
    need_keep = (any(key_has_nulls(c) and not f for c, f in zip(cols, flag_pairs))
                 or any(p.range_checked for p in pairs))
    keep = memory.full(n, 1, np.uint8, device) if need_keep else None
    string_cols = [c for c, p in zip(cols, pairs) if p.is_string]
    if len(string_cols) == 1:
        chars = _string_chars(string_cols[0])       # the spans point into the key's own bytes
    else:
        total = sum(int(_string_chars(c).shape[0]) for c in string_cols)
        chars = memory.empty(total, np.uint8, device)
        base = 0
        for c in string_cols:
            src = _string_chars(c)
            more.copy_at(src, chars, base)
            base += int(src.shape[0])
    if chars.shape[0] == 0:
        chars = memory.empty(1, np.uint8, device)   # empty spans only; no 0-byte kernel argument
    fi = len(pairs) - ns
    wi = 0
    si = 0
    base = 0
    for col, pair, flag in zip(cols, pairs, flag_pairs):
        flag_row = None
        if flag:
            flag_row = warr[fi]
            fi += 1
        if pair.is_string:
            _device_spans(col, base, sarr[si], earr[si], flag_row, keep, string_span, more)
            base += int(_string_chars(col).shape[0])
            si += 1
        else:
            valid = col.validity_bytes() if col.has_nulls else None
            src = _device_key_words(col, pair, device, widen)
            if pair.range_checked:
                # as on the host: only a non-null row's value is range-checked (a null row's
                # stored value is garbage; under nulls_equal it matches the other side's nulls)
                more.range_clear(memory.view_as(src, np.int64), valid, keep)
            key_word(src, KMODE_F64 if pair.family == "float" else KMODE_BITS, valid, warr[wi], flag_row, keep)
            wi += 1
    sk = SideKeys(n, None, None, KMODE_BITS, True, warr, sarr, earr, chars, [])
    sk.valid = keep if keep is not None else memory.empty(0, np.uint8, device)
    return sk


def _empty_verify(device: Device) -> tuple[Any, Any, Any, Any]:
    return (memory.to_device(np.zeros((0, 0), np.uint64), device),
            memory.to_device(np.zeros((0, 0), np.int64), device),
            memory.to_device(np.zeros((0, 0), np.int64), device),
            memory.to_device(np.zeros(0, np.uint8), device))


def _fast_side(col: Column, pair: KeyPair, device: Device, widen: Optional[Widen],
               more: Optional[DeviceKeyPrep] = None) -> SideKeys:
    n = len(col)
    if pair.family == "float":
        zero_copy = pa.types.is_float64(col.dtype)
    else:
        zero_copy = col.layout == Layout.FIXED and col.data.dtype.itemsize == 8
    if pair.range_checked and more is not None and col.device == device and col.layout == Layout.FIXED:
        # an integer key joined with uint64 (or uint64 with a signed one), on the device:
        # widened there where narrower, and a value the other side's type cannot hold (its
        # int64 word negative) never matches
        vals = col.values()
        words = memory.view_as(vals if zero_copy else widen(vals, np.int64, device), np.int64)
        keys = memory.view_as(words, np.uint64)
        valid = more.range_valid(words, col.validity_bytes() if col.has_nulls else None)
    elif (not zero_copy and widen is not None and col.device == device
            and (col.layout == Layout.FIXED or pair.family == "bool") and not pair.range_checked):
        # a narrower fixed-width (or bool) key on the device: widened there (sign-extended, or to
        # float64; bools unpacked to one byte per row first), validity unpacked there too
        src = col.bool_bytes() if pair.family == "bool" else col.values()
        keys = memory.view_as(widen(src, np.float64 if pair.family == "float" else np.int64, device), np.uint64)
        valid = col.validity_bytes() if col.has_nulls else memory.empty(0, np.uint8, device)
    elif zero_copy and col.device == device:
        keys = memory.view_as(col.values(), np.uint64)
        valid_dev = col.validity_bytes() if col.has_nulls else None
        if pair.range_checked:
            # a value that the other side's type cannot hold never matches
            words = key_words(col, pair)
            valid_h = (words.view(np.int64) >= 0).astype(np.uint8)
            if valid_dev is not None:
                valid_h &= memory.to_host(valid_dev)
            valid = memory.to_device(valid_h, device)
        else:
            valid = valid_dev if valid_dev is not None else memory.to_device(np.zeros(0, np.uint8), device)
    else:
        words = key_words(col, pair)
        valid_h = host_valid(col)
        if pair.range_checked:
            rc = (words.view(np.int64) >= 0).astype(np.uint8)
            valid_h = rc if valid_h is None else (valid_h & rc)
        keys = memory.to_device(words, device)
        valid = memory.to_device(valid_h if valid_h is not None else np.zeros(0, np.uint8), device)
    w, st, en, ch = _empty_verify(device)
    kmode = KMODE_F64 if pair.family == "float" else KMODE_BITS
    return SideKeys(n, keys, valid, kmode, False, w, st, en, ch)


def _general_side(cols: Sequence[Column], pairs: Sequence[KeyPair], flag_pairs: Sequence[bool],
                  device: Device) -> SideKeys:
    n = len(cols[0])
    ns = sum(1 for p in pairs if p.is_string)
    words: list[np.ndarray] = []
    null_rows: list[np.ndarray] = []
    # scratch from the host allocator: reused between calls, and never madvised for huge pages
    # (numpy's own arrays of 4 MiB or more are: their first touches can stall in compaction)
    sarr = host_empty((ns, n), np.int64)
    earr = host_empty((ns, n), np.int64)
    chars: list[np.ndarray] = []
    spans = []
    base = 0
    si = 0
    valid = host_empty(n, np.uint8)
    valid.fill(1)
    for col, pair, flag in zip(cols, pairs, flag_pairs):
        v = host_valid(col)
        if pair.is_string:
            ch = _string_spans_into(col, sarr[si], earr[si], base)
            if v is not None:
                null = v == 0
                sarr[si][null] = base
                earr[si][null] = base
            chars.append(ch)
            spans.append((sarr[si], earr[si], None, v))
            base += len(ch)
            si += 1
        else:
            w = key_words(col, pair)
            if pair.family == "float":
                w = _canonical_f64(w)
            if pair.range_checked:
                # only non-null rows: a null row's stored value is garbage, and under
                # nulls_equal the row must still match the other side's nulls
                in_range = w.view(np.int64) >= 0
                if v is not None:
                    in_range |= v == 0
                valid &= in_range.astype(np.uint8)
            if v is not None:
                w = np.where(v != 0, w, np.uint64(0))
            words.append(np.ascontiguousarray(w, dtype=np.uint64))
        if flag:
            null_rows.append(np.zeros(n, np.uint64) if v is None else (v == 0).astype(np.uint64))
        elif v is not None:
            valid &= v
    words_all = words + null_rows
    warr = np.stack(words_all) if words_all else np.zeros((0, n), np.uint64)
    charr = np.concatenate(chars) if len(chars) > 1 else (chars[0] if chars else np.zeros(0, np.uint8))
    charr = np.ascontiguousarray(charr)
    # per string key (in pair order): spans into the concatenated bytes, and the key validity
    spans = [(s_, e_, charr, v_) for s_, e_, _, v_ in spans]
    sk = SideKeys(n, None, None, KMODE_BITS, True,
                  memory.to_device(warr, device), memory.to_device(sarr, device),
                  memory.to_device(earr, device), memory.to_device(charr, device), spans)
    sk.valid = memory.to_device(valid if not valid.all() else np.zeros(0, np.uint8), device)
    return sk


def fast_key_words(col: Column, pair: KeyPair, device: Device, widen: Optional[Widen] = None) -> Any:
    """The key words (uint64, on ``device``) of one key column, as the fast path compares them."""
    return _fast_side(col, pair, device, widen, _device_key_prep(device) if widen is not None else None).keys


# --------------------------------------------------------------------------- merged keys
def _take(arr: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``arr[idx]`` where ``idx >= 0``, zero elsewhere."""
    out = np.zeros(len(idx), arr.dtype)
    here = idx >= 0
    out[here] = arr[idx[here]]
    return out


def merged_key_host(left_key: Column, right_key: Column, pair: KeyPair, dtype: pa.DataType, left_idx: Any,
                    right_idx: Any) -> Column:
    """The coalesced key of ``pair`` for the rows of the gather maps, made on the host and moved
    to the key columns' device: the key of the left side where the left row is present, else
    the right side's, as ``dtype``; null where that key is null.

    A string key on a CUDA device (plain or dictionary-encoded, the only keys the CUDA backend's
    ``merged_key`` leaves to this function) is made on the device instead
    (:func:`gpuframe.backends.cuda.merged_key.merged_string_key`, the same column)."""
    device = left_key.device
    if pair.is_string and device.is_cuda:
        from .cuda.merged_key import merged_string_key    # deferred: the CPU path never imports it

        return merged_string_key(left_key, right_key, dtype, left_idx, right_idx)
    li = np.ascontiguousarray(memory.to_host(left_idx), dtype=np.int64)
    ri = np.ascontiguousarray(memory.to_host(right_idx), dtype=np.int64)
    if pair.is_string:
        col = _string_key_column(left_key, right_key, dtype, li, ri)
    else:
        left_here = li >= 0
        words = np.where(left_here, _take(key_words(left_key, pair), li), _take(key_words(right_key, pair), ri))
        valid = None
        if left_key.has_nulls or right_key.has_nulls:
            lv = memory.to_host(left_key.validity_bytes()) if left_key.has_nulls else np.ones(len(left_key), np.uint8)
            rv = memory.to_host(right_key.validity_bytes()) if right_key.has_nulls else np.ones(len(right_key), np.uint8)
            valid = np.where(left_here, _take(lv, li), _take(rv, ri)) != 0
            if bool(valid.all()):
                valid = None
        vals = words_to_values(words.view(np.int64), dtype, "word", pair.family)
        col = Column.from_numpy(vals, dtype, valid)
    return col.to(device)


def _string_key_column(left_key: Column, right_key: Column, dtype: pa.DataType, li: np.ndarray,
                       ri: np.ndarray) -> Column:
    """A merged string key (host): the string of whichever side is present, by the span kernels
    of :mod:`gpuframe.kernels.join_cpu`.

    Where both sides are present their keys are byte-equal, so the bytes are copied from the
    side with fewer rows (usually the build side, whose bytes stay in cache).
    """
    from gpuframe.kernels import join_cpu as K

    def spans(col: Column) -> tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray]]:
        st = host_empty(len(col), np.int64)
        en = host_empty(len(col), np.int64)
        ch = _string_spans_into(col, st, en, 0)
        return st, en, np.ascontiguousarray(ch, dtype=np.uint8), host_valid(col)

    lk, rk = spans(left_key), spans(right_key)
    # "a" is preferred where both are present
    (a, ia), (b, ib) = ((rk, ri), (lk, li)) if len(rk[0]) <= len(lk[0]) else ((lk, li), (rk, ri))
    ast, aen, ach, av = a
    bst, ben, bch, bv = b
    n = len(li)
    a_here = ia >= 0
    valid = a_here | (ib >= 0)
    if av is not None:
        valid &= ~a_here | (av[np.maximum(ia, 0)] != 0)
    if bv is not None:
        valid &= a_here | (bv[np.maximum(ib, 0)] != 0)
    ia2 = np.where(valid, ia, -1)
    ib2 = np.where(valid, ib, -1)
    lengths = np.empty(n, np.int64)
    K.span_lengths(ast, aen, ia2, bst, ben, ib2, lengths)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    large = pa.types.is_large_string(dtype) or total >= 2**31 - 1
    chars = np.empty(total, np.uint8)
    K.span_copy(ast, ach, ia2, bst, bch, ib2, offsets, chars)
    nulls = int(n - valid.sum())
    validity = Buffer(pack_bits(valid), CPU) if nulls else None
    return Column(pa.large_string() if large else pa.string(), n, Buffer(chars, CPU), validity,
                  Buffer(offsets if large else narrow_host(offsets, np.int32), CPU), None, 0, nulls)
