"""Sort on the CPU: ``sort_indices`` (see :mod:`gpuframe.ops.sort`), and the driver both backends
share.

The driver (:func:`sort_indices_with`) turns every key column into order-preserving unsigned
words (:mod:`gpuframe.kernels.sort`) and sorts them with a stable LSD radix sort, from the last
key's lowest digit to the first key's highest; a *sorter* (:class:`CpuSorter` here,
``CudaSorter`` in :mod:`gpuframe.backends.cuda.sort`) allocates on its device and runs the
kernels. String keys (and a dictionary's string values) are ranked first (:func:`string_ranks`):
sorted by their first eight bytes (big-endian, zero-padded) and how many bytes go on past them;
groups that tie and go on are refined by the next eight bytes, with the previous ranks as the
leading key, until no group needs more. Equal strings get equal ranks, so the ranks are words
like any other.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import numba
import numpy as np
import pyarrow as pa

from gpuframe.kernels import sort as SK

from ...core.column import Column
from ...core.dtypes import Layout
from ...core.hostalloc import host_empty
from ._target import _cpu_threads

__all__ = ["sort_indices", "sort_indices_with", "string_ranks", "radix_argsort", "CpuSorter"]



class Key(NamedTuple):
    """One word array of the sort; ``flags``: its key's null flags (its null rows, whose words
    are 0, are left out of the key's range), or ``None``."""

    words: Any
    flags: Any = None
    null_flag: int = 1


def _kind_width(dtype: pa.DataType, itemsize: int) -> int:
    if pa.types.is_floating(dtype):
        return SK.KIND_F64 if itemsize == 8 else SK.KIND_F32
    if pa.types.is_signed_integer(dtype) or pa.types.is_date32(dtype) or pa.types.is_timestamp(dtype):
        return SK.KIND_SIGNED
    return SK.KIND_UNSIGNED


def _word_dtype(bits: int) -> np.dtype:
    return np.dtype(np.uint32 if bits <= 32 else np.uint64)


def _bits_for(groups: int) -> int:
    return max(1, int(groups - 1).bit_length())


def _validity(s: Any, col: Column) -> tuple[Any, bool, int]:
    if col.validity is None:
        return s.no_bitmap(), False, 0
    return col.validity.array, True, col.offset


def radix_argsort(s: Any, keys: Sequence[Key], n: int, *, consume: bool = False) -> Any:
    """The stable permutation (int64) that orders rows by ``keys`` (most significant first).
    With ``consume`` the key arrays may be overwritten (used as scratch)."""
    # the passes cover each key's range only: digits of (word - least word), nulls left out (they
    # tie: all their words are 0, so their digits are equal in every pass)
    bits = s.radix_bits
    plan = []
    for words, flags, null_flag in reversed(keys):
        lo, hi = s.word_range(words, flags, null_flag)
        if lo <= hi:      # else nothing but nulls
            npass = -(-(hi - lo).bit_length() // bits)
            if npass:
                plan.append((words, np.uint64(lo), npass))
    total = sum(npass for _, _, npass in plan)
    final = s.empty(n, np.int64)
    if total == 0:
        s.iota(final)
        return final
    # intermediate permutations in 32 bits where the rows allow (fewer bytes a pass)
    pdt = np.uint32 if n < (1 << 32) else np.int64
    perm = None
    spare: list[Any] = []
    done = 0
    for words, base, npass in plan:
        # the key arrays are written only when consumed (the caller may read them again)
        src = words if perm is None else s.gather_words(words, perm)
        free: list[Any] = []
        if consume and src is words:
            words = None
        for p in range(npass):
            done += 1
            last = p == npass - 1
            dst = None if last else (free.pop() if free else s.empty(n, src.dtype))
            p_out = final if done == total else (spare.pop() if spare else s.empty(n, pdt))
            s.radix_pass(src, perm, base, p * bits, dst, p_out)
            if perm is not None:
                spare.append(perm)
            perm = p_out
            if src is not words:
                free.append(src)
            src = dst
        del src, free
    return perm


def string_ranks(s: Any, col: Column) -> tuple[Any, int]:
    """Dense ranks (int64, one per row, in byte order of the strings; validity ignored) and how
    many distinct strings there are."""
    n = len(col)
    offsets = col.offsets_view()
    chars = col.chars()
    ranks = None
    groups = 1
    depth = 0
    while True:
        w = s.empty(n, np.uint64)
        lc = s.empty(n, np.uint32)
        s.prefix_words(offsets, chars, depth, w, lc)
        keys = [] if ranks is None else [Key(ranks)]
        keys += [Key(w), Key(lc)]
        perm = radix_argsort(s, keys, n)
        flags = s.empty(n, np.int64)
        s.group_flags(perm, ranks, w, lc, flags)
        new = s.empty(n, np.int64)
        groups, unresolved = s.group_ranks(perm, flags, lc, new)
        ranks = new
        del w, lc, perm, flags
        if unresolved == 0 or groups == n:
            return ranks, groups
        depth += 8


def column_keys(s: Any, col: Column, desc: bool, nulls_last: bool) -> list[Key]:
    """The words of one key column, most significant first: its null flags when it may hold
    nulls, then its values."""
    n = len(col)
    validity, has_valid, vbit = _validity(s, col)
    lay = col.layout
    if lay == Layout.FIXED:
        vals = col.values()
        itemsize = np.dtype(vals.dtype).itemsize
        width = 8 * itemsize
        values = s.view(vals, np.dtype(f"u{itemsize}"))
        kind = _kind_width(col.dtype, itemsize)
    elif lay == Layout.STRING:
        values, groups = string_ranks(s, col)
        width, kind = _bits_for(groups), SK.KIND_UNSIGNED
    elif lay == Layout.BOOL:
        values, width, kind = None, 1, SK.KIND_UNSIGNED
    else:
        dictionary = col.dictionary
        if len(dictionary):
            dranks, groups = string_ranks(s, dictionary)
        else:
            dranks, groups = s.empty(1, np.int64), 1
        width = _bits_for(groups)
        dvalid, has_dvalid, dvbit = _validity(s, dictionary)

    def words(flag_only: bool, dtype: Any) -> Any:
        out = s.empty(n, dtype)
        if lay in (Layout.FIXED, Layout.STRING):
            s.fixed_words(values, kind, width, validity, has_valid, vbit, desc, flag_only, nulls_last, out)
        elif lay == Layout.BOOL:
            s.bool_words(col.data.array, col.offset, validity, has_valid, vbit, desc, flag_only, nulls_last, out)
        else:
            s.dict_words(col.values(), dranks, validity, has_valid, vbit, dvalid, has_dvalid, dvbit, width, desc,
                         flag_only, nulls_last, out)
        return out

    nullable = has_valid or (lay == Layout.DICTIONARY and has_dvalid)
    flags = words(True, np.uint32) if nullable else None
    value = Key(words(False, _word_dtype(width)), flags, 1 if nulls_last else 0)
    return [Key(flags), value] if nullable else [value]


def sort_indices_with(s: Any, columns: Sequence[Column], descending: Sequence[bool], nulls_last: bool) -> Any:
    """The stable sort permutation of ``columns`` on the sorter's device (int64)."""
    n = len(columns[0])
    if n <= 1:
        perm = s.empty(n, np.int64)
        if n:
            s.iota(perm)
        return perm
    keys: list[Key] = []
    for col, desc in zip(columns, descending):
        keys += column_keys(s, col, bool(desc), bool(nulls_last))
    return radix_argsort(s, keys, n, consume=True)


class CpuSorter:
    """Runs the sort kernels of :mod:`gpuframe.kernels.sort` on host arrays."""

    radix_bits = SK.CPU_RADIX_BITS
    _EMPTY_U8 = np.empty(0, np.uint8)
    _EMPTY_I64 = np.empty(0, np.int64)
    _EMPTY_U32 = np.empty(0, np.uint32)

    def empty(self, n: int, dtype: Any) -> np.ndarray:
        return host_empty(n, dtype)

    def no_bitmap(self) -> np.ndarray:
        return self._EMPTY_U8

    @staticmethod
    def view(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
        return arr.view(dtype)

    def fixed_words(self, values, kind, width, validity, has_valid, vbit, desc, flag_only, nulls_last, out):
        SK.fixed_words(values, kind, width, validity, has_valid, vbit, desc, flag_only, nulls_last, out)

    def bool_words(self, bits, dbit, validity, has_valid, vbit, desc, flag_only, nulls_last, out):
        SK.bool_words(bits, dbit, validity, has_valid, vbit, desc, flag_only, nulls_last, out)

    def dict_words(self, indices, dranks, validity, has_valid, vbit, dvalid, has_dvalid, dvbit, width, desc,
                   flag_only, nulls_last, out):
        SK.dict_words(indices, dranks, validity, has_valid, vbit, dvalid, has_dvalid, dvbit, width, desc,
                      flag_only, nulls_last, out)

    def prefix_words(self, offsets, chars, depth, w, lc):
        SK.prefix_words(offsets, chars, depth, w, lc)

    def word_range(self, words, flags, null_flag: int) -> tuple[int, int]:
        lo, hi = SK.word_range(words, self._EMPTY_U32 if flags is None else flags, np.uint32(null_flag),
                               numba.get_num_threads())
        return int(lo), int(hi)

    def radix_pass(self, w_in, p_in: Optional[np.ndarray], base: np.uint64, shift: int,
                   w_out: Optional[np.ndarray], p_out: np.ndarray) -> None:
        mask = (1 << SK.CPU_RADIX_BITS) - 1
        cursors = SK.chunk_counts(w_in, base, shift, mask, numba.get_num_threads())
        SK.scatter_pass(w_in, p_out[:0] if p_in is None else p_in, p_in is None, base, shift, mask, cursors,
                        w_in[:0] if w_out is None else w_out, p_out, w_out is not None)

    def gather_words(self, words, perm):
        out = host_empty(len(perm), words.dtype)
        SK.gather_words(words, perm, out)
        return out

    def iota(self, out):
        SK.iota(out)

    def group_flags(self, perm, ranks, w, lc, flags):
        SK.group_flags(perm, self._EMPTY_I64 if ranks is None else ranks, ranks is not None, w, lc, flags)

    def group_ranks(self, perm, flags, lc, ranks) -> tuple[int, int]:
        n = len(flags)
        incl = np.empty(n + 1, np.int64)
        incl[0] = 0
        np.cumsum(flags, out=incl[1:])
        unresolved = SK.group_ranks(perm, flags, lc, incl, ranks)
        return int(incl[n]), int(unresolved)


CPU_SORTER = CpuSorter()


def sort_indices(columns: Sequence[Column], descending: Sequence[bool], nulls_last: bool) -> np.ndarray:
    with _cpu_threads(len(columns[0])):
        return sort_indices_with(CPU_SORTER, columns, descending, nulls_last)
