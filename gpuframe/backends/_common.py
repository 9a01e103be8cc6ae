"""Drivers both backends share: they walk a column's layout and call a *target*'s kernels.

A target (:class:`gpuframe.backends.cpu._target.CpuTarget`,
:class:`gpuframe.backends.cuda._target.CudaTarget`) allocates on its device and runs the kernels
of ``gpuframe.kernels.{hashing,partition,gather}``; the drivers here pick the kernel arguments
(views, bitmaps, offsets) from the column, the same for both.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa

from gpuframe.kernels import hashing as HK

from ..core import memory
from ..core.buffer import Buffer
from ..core.column import Column
from ..core.dtypes import Layout, offsets_dtype, physical_numpy_dtype
from ..core.hostalloc import host_empty

INT32_MAX = np.iinfo(np.int32).max


def _bitmap_bytes(n: int) -> int:
    return (n + 7) // 8


def _word_view(values: Any) -> Any:
    """The same bytes as unsigned words of the element width (moves do not care about type)."""
    width = np.dtype(values.dtype).itemsize
    return memory.view_as(values, np.dtype(f"u{width}"))


def _hash_view(col: Column) -> tuple[Any, int]:
    """Values of a FIXED column as the kernels hash them, and their ``kind``.

    int64, uint64 and timestamps share the uint64 view (same bits, same hash), so fewer kernel
    specialisations are compiled; narrower integers keep their type for the sign extension.
    """
    vals = col.values()
    dt = np.dtype(vals.dtype)
    if dt == np.float64:
        return memory.view_as(vals, np.uint64), HK.KIND_F64
    if dt == np.float32:
        return memory.view_as(vals, np.uint32), HK.KIND_F32
    if dt == np.int64:
        return memory.view_as(vals, np.uint64), HK.KIND_INT
    return vals, HK.KIND_INT


def _pid_dtype(num_partitions: int) -> np.dtype:
    if num_partitions <= 1 << 8:
        return np.dtype(np.uint8)
    if num_partitions <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def _check_string_size(total: int, large: bool) -> None:
    if not large and total > INT32_MAX:
        raise OverflowError(
            f"the gathered string column holds {total} bytes, more than a string column's int32 offsets "
            f"allow ({INT32_MAX}); cast the column to large_string first")



# --------------------------------------------------------------------------- hashing
def _validity_args(t: Any, col: Column) -> tuple[Any, bool, int]:
    if col.validity is None:
        return t.no_bitmap(), False, 0
    return col.validity.array, True, col.offset


def hash_column(t: Any, col: Column, seed: np.uint64, combine: bool, out: Any) -> None:
    """Hash ``col`` into ``out`` (or combine into it): the contract of :mod:`gpuframe.kernels.hashing`."""
    n = len(col)
    if n == 0:
        return
    validity, has_valid, vbit = _validity_args(t, col)
    lay = col.layout
    if lay == Layout.FIXED:
        values, kind = _hash_view(col)
        t.hash_fixed(values, kind, validity, has_valid, vbit, seed, combine, out)
    elif lay == Layout.BOOL:
        t.hash_bool(col.data.array, col.offset, n, validity, has_valid, vbit, seed, combine, out)
    elif lay == Layout.STRING:
        t.hash_string(col.offsets_view(), col.chars(), validity, has_valid, vbit, seed, combine, out)
    else:
        dictionary = col.dictionary
        dict_hashes = t.empty(max(len(dictionary), 1), np.uint64)
        hash_column(t, dictionary, seed, False, dict_hashes)
        t.hash_dictionary(col.values(), dict_hashes, validity, has_valid, vbit, seed, combine, out)


def hash_columns(t: Any, columns: Sequence[Column], seed: np.uint64) -> Any:
    n = len(columns[0])
    out = t.empty(n, np.uint64)
    for j, col in enumerate(columns):
        hash_column(t, col, seed, j > 0, out)
    return out



# --------------------------------------------------------------------------- gather
def gather_column(t: Any, col: Column, idx: Any, missing: Optional[int]) -> Column:
    """Rows ``idx`` of ``col`` (indices already checked: in bounds or -1)."""
    m = len(idx)
    lay = col.layout
    offsets = None
    if lay in (Layout.FIXED, Layout.DICTIONARY):
        vals = _word_view(col.values())
        out = t.empty(m, vals.dtype)
        miss = t.gather_fixed(vals, idx, out)
        missing = miss if missing is None else missing
        data = Buffer(memory.view_as(out, physical_numpy_dtype(col.dtype)), t.device)
    elif lay == Layout.BOOL:
        out = t.empty(_bitmap_bytes(m), np.uint8)
        t.gather_bits(col.data.array, col.offset, True, idx, out)
        data = Buffer(out, t.device)
    else:
        odt = offsets_dtype(col.dtype)
        src_offs = col.offsets_view()
        offs, starts, total, miss = t.gather_string_offsets(src_offs, idx, odt, odt == np.int64)
        missing = miss if missing is None else missing
        chars = t.empty(total, np.uint8)
        t.gather_string_chars(src_offs, col.chars(), idx, offs, starts, chars)
        offsets = Buffer(offs, t.device)
        data = Buffer(chars, t.device)
    validity = None
    null_count = 0
    if col.validity is not None or missing is None or missing > 0:
        vb = t.empty(_bitmap_bytes(m), np.uint8)
        has = col.validity is not None
        valid = t.gather_bits(col.validity.array if has else t.no_bitmap(), col.offset if has else 0, has,
                              idx, vb)
        null_count = m - valid
        if null_count:
            validity = Buffer(vb, t.device)
    return Column(col.dtype, m, data, validity, offsets, col.dictionary, 0, null_count)


# --------------------------------------------------------------------------- merged join keys
NARROW_KERNEL_MIN = 1 << 16  # elements: below, numpy's astype


def narrow_host(src: np.ndarray, dtype: Any) -> np.ndarray:
    """``src.astype(dtype)`` of a 1-D host array into a narrower type (int64 words to a smaller
    integer, wrapping as astype does; float64 to float32, rounding as astype does), from
    :data:`NARROW_KERNEL_MIN` elements on written by a parallel kernel into the host
    allocator's memory. astype makes a fresh numpy array, madvised for huge pages: once memory
    is fragmented its first touches stall in compaction (20M int64 to int32: 240-310 ms against
    24-33 ms this way)."""
    dtype = np.dtype(dtype)
    if src.shape[0] < NARROW_KERNEL_MIN or not (dtype.kind in "iu" or dtype == np.float32):
        return src.astype(dtype)
    from gpuframe.kernels import join_cpu as K

    from .cpu._target import run_rows

    out = host_empty(src.shape[0], dtype)
    run_rows(K.widen_copy, len(out), src, out)
    return out


def words_to_values(words: np.ndarray, out_type: pa.DataType, encoding: str, family: str) -> np.ndarray:
    """int64 words back to the physical values of ``out_type`` (host).

    ``encoding`` ``"raw"``: a column's own bits, sign-extended from its width; ``"word"``: a key
    word of the pair's ``family`` (int64 value, uint64 bits, float64 bits, 0/1).
    """
    if pa.types.is_boolean(out_type):
        return words != 0
    phys = physical_numpy_dtype(out_type)
    if encoding == "raw":
        if phys.itemsize == 8:
            return words.view(phys)
        return narrow_host(words, np.dtype(f"i{phys.itemsize}")).view(phys)
    if family == "float":
        f = words.view(np.float64)
        return f if phys == np.float64 else narrow_host(f, phys)
    if phys == np.uint64:
        return words.view(np.uint64)
    return words if phys == np.int64 else narrow_host(words, phys)


def is_word_type(t: pa.DataType) -> bool:
    """Whether a merged key of type ``t`` is made from int64 words (not bool, string, dictionary)."""
    return not (pa.types.is_boolean(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
                or pa.types.is_dictionary(t))
