"""Join keys: which key types may be joined, their promoted type, and their kernel form.

A pair of key columns (one from each side) belongs to one *family*; the family fixes how both
sides become comparable uint64 *words* (see :mod:`gpuframe.kernels.join`):

============  ===========================================  ===================================
family        types                                        word
============  ===========================================  ===================================
``int``       int8..int64, uint8..uint64 (mixed allowed)   the int64 value (uint64: its bits)
``float``     float32/64, or a float with an integer       float64 bits (compared canonically:
                                                           ``-0.0 == 0.0``, NaN == NaN)
``bool``      bool with bool                               0 / 1
``date32``    date32 with date32                           the int32 day number
``timestamp`` timestamps of the same unit and time zone    the int64 value
``string``    string, large_string, dictionary<_, string>  (general path: utf8 byte spans)
============  ===========================================  ===================================

``uint64`` paired with a signed integer compares values, never bits: a uint64 value of 2**63
or more, or a negative signed value, can equal nothing on the other side, so such rows never
match (they still appear, unmatched, in outer joins). Any other pairing raises ``TypeError``
naming both columns and their types.

Key normalisation runs on the host (numpy); for CUDA tables the words are copied to the
device, except the zero-copy single-key case (a 64-bit key used as it is stored).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa

from ..core import memory
from ..core.column import Column
from ..core.device import Device, launch_context
from ..core.dtypes import Layout
from ..core.table import Table

KMODE_BITS = 0
KMODE_F64 = 1

__all__ = ["KeyPair", "SideKeys", "resolve_key_pairs", "prepare_keys", "key_words"]


@dataclass(frozen=True)
class KeyPair:
    """One left key column and its right partner."""

    left: str
    right: str
    left_type: pa.DataType
    right_type: pa.DataType
    family: str
    out_type: pa.DataType          # type of a merged (coalesced) key column
    range_checked: bool = False    # uint64 with a signed integer: rows >= 2**63 / < 0 never match

    @property
    def is_string(self) -> bool:
        return self.family == "string"


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


# --------------------------------------------------------------------------- type rules
def _family(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        return "string" if (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)) else "other"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_date32(t):
        return "date32"
    if pa.types.is_timestamp(t):
        return "timestamp"
    return "other"


def _incompatible(lname: str, lt: pa.DataType, rname: str, rt: pa.DataType, why: str) -> TypeError:
    return TypeError(f"cannot join left key {lname!r} ({lt}) with right key {rname!r} ({rt}): {why}")


def _string_out_type(lt: pa.DataType, rt: pa.DataType) -> pa.DataType:
    def base(t: pa.DataType) -> pa.DataType:
        return t.value_type if pa.types.is_dictionary(t) else t

    lb, rb = base(lt), base(rt)
    return pa.large_string() if (pa.types.is_large_string(lb) or pa.types.is_large_string(rb)) else pa.string()


def _pair(lname: str, lt: pa.DataType, rname: str, rt: pa.DataType) -> KeyPair:
    lf, rf = _family(lt), _family(rt)
    if "other" in (lf, rf):
        raise _incompatible(lname, lt, rname, rt, "that type cannot be a join key")
    numeric = {"int", "float"}
    if lf in numeric and rf in numeric:
        if lf == "int" and rf == "int":
            ln, rn = np.dtype(lt.to_pandas_dtype()), np.dtype(rt.to_pandas_dtype())
            mixed64 = (ln == np.uint64 and rn.kind == "i") or (rn == np.uint64 and ln.kind == "i")
            if mixed64:
                return KeyPair(lname, rname, lt, rt, "int", lt, range_checked=True)
            return KeyPair(lname, rname, lt, rt, "int", pa.from_numpy_dtype(np.promote_types(ln, rn)))
        out = pa.float32() if (pa.types.is_float32(lt) and pa.types.is_float32(rt)) else pa.float64()
        return KeyPair(lname, rname, lt, rt, "float", out)
    if lf != rf:
        raise _incompatible(lname, lt, rname, rt, f"a {lf} key cannot match a {rf} key")
    if lf == "timestamp":
        if lt.unit != rt.unit:
            raise _incompatible(lname, lt, rname, rt, f"timestamp units differ ({lt.unit} vs {rt.unit}); cast one side first")
        if lt.tz != rt.tz:
            raise _incompatible(lname, lt, rname, rt, f"time zones differ ({lt.tz} vs {rt.tz}); cast one side first")
        return KeyPair(lname, rname, lt, rt, "timestamp", lt)
    if lf == "string":
        return KeyPair(lname, rname, lt, rt, "string", _string_out_type(lt, rt))
    return KeyPair(lname, rname, lt, rt, lf, lt)


def resolve_key_pairs(left: Table, right: Table, left_on: Sequence[str], right_on: Sequence[str]) -> list[KeyPair]:
    """Check that each ``left_on[i]`` can be joined with ``right_on[i]`` and promote the types.

    Raises
    ------
    TypeError
        Incompatible key types; the message names both columns and both types.
    """
    return [_pair(ln, left[ln].dtype, rn, right[rn].dtype) for ln, rn in zip(left_on, right_on)]


# --------------------------------------------------------------------------- host words
def _dictionary_null_entries(col: Column) -> bool:
    d = col.dictionary
    return col.layout == Layout.DICTIONARY and d is not None and d.has_nulls


def key_has_nulls(col: Column) -> bool:
    """Whether some row of the key column is null: a null row, or (dictionary) a row whose
    dictionary entry is null."""
    return col.has_nulls or _dictionary_null_entries(col)


def _host_valid(col: Column) -> Optional[np.ndarray]:
    """uint8 per row, 0 where the key is null (or ``None``: no null keys).

    A dictionary row is null when its index is null or when the entry it points at is null
    (as in :func:`gpuframe.ops.partition.hash_partition`); a null entry's empty byte span must
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


def prepare_keys(left: Table, right: Table, pairs: Sequence[KeyPair], nulls_equal: bool,
                 device: Device) -> tuple[SideKeys, SideKeys]:
    """Both sides' :class:`SideKeys` on ``device``.

    Single fixed-width keys take the fast path (the key word itself is hashed and compared);
    several keys, string keys, and ``nulls_equal`` with null keys take the general path (a
    row hash, verified against the normalised key words and byte spans).
    """
    lcols = [left[p.left] for p in pairs]
    rcols = [right[p.right] for p in pairs]
    # pairs whose nulls must match each other: both sides get a null-flag word for them
    flag_pairs = [nulls_equal and (key_has_nulls(lc) or key_has_nulls(rc)) for lc, rc in zip(lcols, rcols)]
    if _use_fast_path(pairs, any(flag_pairs)):
        return _fast_side(lcols[0], pairs[0], device), _fast_side(rcols[0], pairs[0], device)
    return (_general_side(lcols, pairs, flag_pairs, device),
            _general_side(rcols, pairs, flag_pairs, device))


def _empty_verify(device: Device) -> tuple[Any, Any, Any, Any]:
    return (memory.to_device(np.zeros((0, 0), np.uint64), device),
            memory.to_device(np.zeros((0, 0), np.int64), device),
            memory.to_device(np.zeros((0, 0), np.int64), device),
            memory.to_device(np.zeros(0, np.uint8), device))


def _fast_side(col: Column, pair: KeyPair, device: Device) -> SideKeys:
    n = len(col)
    if pair.family == "float":
        zero_copy = pa.types.is_float64(col.dtype)
    else:
        zero_copy = col.layout == Layout.FIXED and col.data.dtype.itemsize == 8
    if (not zero_copy and device.is_cuda and col.device == device and col.layout == Layout.FIXED
            and not pair.range_checked and not key_has_nulls(col)):
        # a narrower fixed-width key on the GPU: widened there (sign-extended, or to float64)
        keys = _widen_on_device(col, np.float64 if pair.family == "float" else np.int64, device)
        valid = memory.to_device(np.zeros(0, np.uint8), device)
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
        valid_h = _host_valid(col)
        if pair.range_checked:
            rc = (words.view(np.int64) >= 0).astype(np.uint8)
            valid_h = rc if valid_h is None else (valid_h & rc)
        keys = memory.to_device(words, device)
        valid = memory.to_device(valid_h if valid_h is not None else np.zeros(0, np.uint8), device)
    w, st, en, ch = _empty_verify(device)
    kmode = KMODE_F64 if pair.family == "float" else KMODE_BITS
    return SideKeys(n, keys, valid, kmode, False, w, st, en, ch)


def cast_on_device(src: Any, dtype: Any, n: int, device: Device) -> Any:
    """``src[:n]`` converted to ``dtype`` element by element by a CUDA kernel on ``device``
    (C casts: sign- or zero-extending, float32 to float64 exactly, narrowing by truncation)."""
    from ..kernels.gather import cuda_kernels
    from ..kernels.launch import launch

    out = memory.empty(n, dtype, device)
    with launch_context(device):
        launch(cuda_kernels()["cast_copy"], n, src, out)
    return out


def _widen_on_device(col: Column, dtype: Any, device: Device) -> Any:
    """The values of a fixed-width device column widened to ``dtype`` (int64 or float64), as
    uint64 words."""
    return memory.view_as(cast_on_device(col.values(), dtype, len(col), device), np.uint64)


def _general_side(cols: Sequence[Column], pairs: Sequence[KeyPair], flag_pairs: Sequence[bool],
                  device: Device) -> SideKeys:
    n = len(cols[0])
    ns = sum(1 for p in pairs if p.is_string)
    words: list[np.ndarray] = []
    null_rows: list[np.ndarray] = []
    sarr = np.empty((ns, n), np.int64)
    earr = np.empty((ns, n), np.int64)
    chars: list[np.ndarray] = []
    spans = []
    base = 0
    si = 0
    valid = np.ones(n, dtype=np.uint8)
    for col, pair, flag in zip(cols, pairs, flag_pairs):
        v = _host_valid(col)
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
                valid &= (w.view(np.int64) >= 0).astype(np.uint8)
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
