"""Row selection on the CPU: the rows of a boolean mask, and columns stacked one after another."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from ...core.buffer import Buffer
from ...core.column import Column
from ...core.device import CPU
from ...core.dtypes import Layout, physical_numpy_dtype
from ...core.hostalloc import host_empty
from ._target import run_threads

__all__ = ["flagged_rows", "mask_rows", "valid_rows", "concat_arrays", "concat_columns", "cross_maps", "cast_column"]


def flagged_rows(flags: np.ndarray) -> np.ndarray:
    """``np.flatnonzero(flags)`` (a uint8 or bool array) as int64, counted and written on every
    thread (:func:`gpuframe.kernels.group_cpu.flagged_rows`), into an output of its exact size."""
    from gpuframe.kernels import group_cpu as K

    flags = np.ascontiguousarray(flags).view(np.uint8)
    n = len(flags)
    nch = K.nchunks_for(n)
    cnt = np.zeros(nch + 1, np.int64)
    run_threads(K.count_flags, nch, flags, nch, cnt)
    np.cumsum(cnt, out=cnt)
    rows = host_empty(int(cnt[nch]), np.int64)
    run_threads(K.flagged_rows, nch, flags, nch, cnt, rows)
    return rows


def mask_rows(mask: Column) -> np.ndarray:
    """The int64 row numbers where the bool column ``mask`` is true (a null counts as false)."""
    keep = np.asarray(mask.bool_bytes()).view(np.uint8)      # 0/1 bytes, as validity_bytes()
    valid = mask.validity_bytes()
    if valid is not None:
        keep = keep & np.asarray(valid).view(np.uint8)
    return flagged_rows(keep)


def valid_rows(columns: Sequence[Column]) -> np.ndarray:
    """The int64 row numbers where no column of ``columns`` is null."""
    keep = np.ones(len(columns[0]), np.uint8)
    for c in columns:
        v = c.validity_bytes()
        if v is not None:
            keep &= np.asarray(v).view(np.uint8)
    return flagged_rows(keep)


# a concatenation copies in blocks of this many bytes, spread over the threads; below
# PARALLEL_CONCAT_BYTES in all, one numpy copy per part
COPY_BLOCK_BYTES = 1 << 20
PARALLEL_CONCAT_BYTES = 4 << 20


def concat_arrays(parts: Sequence[np.ndarray], dtype: Any) -> np.ndarray:
    """The 1-D arrays ``parts`` (of ``dtype``, contiguous) one after another, in a new array
    from the host allocator, copied on every thread in blocks of :data:`COPY_BLOCK_BYTES`
    (pyarrow's and numpy's concatenations copy on one thread, and the output's fresh pages then
    fault on that thread alone: 94 MB took 0.25-0.35 s here)."""
    dtype = np.dtype(dtype)
    total = sum(len(p) for p in parts)
    out = host_empty(total, dtype)
    nbytes = total * dtype.itemsize
    if nbytes < PARALLEL_CONCAT_BYTES:
        pos = 0
        for p in parts:
            out[pos:pos + len(p)] = p
            pos += len(p)
        return out
    from gpuframe.kernels import gather as GK

    src: list[int] = []
    dst: list[int] = []
    size: list[int] = []
    at = out.ctypes.data
    for p in parts:
        p = np.ascontiguousarray(p, dtype)
        base, n = p.ctypes.data, p.nbytes
        for off in range(0, n, COPY_BLOCK_BYTES):
            src.append(base + off)
            dst.append(at + off)
            size.append(min(COPY_BLOCK_BYTES, n - off))
        at += n
    run_threads(GK.copy_blocks, len(src), np.array(src, np.int64), np.array(dst, np.int64), np.array(size, np.int64))
    return out


def concat_columns(columns: Sequence[Column], dtype: pa.DataType) -> Column:
    """The columns (all of ``dtype``) one after another: fixed-width columns without nulls by
    :func:`concat_arrays`, the others by pyarrow's concatenation (dictionaries unified)."""
    npdt = np.dtype(physical_numpy_dtype(dtype)) if columns[0].layout == Layout.FIXED else None
    if (npdt is not None and all(c.null_count == 0 for c in columns)
            and sum(len(c) for c in columns) * npdt.itemsize >= PARALLEL_CONCAT_BYTES):
        data = concat_arrays([c.values() for c in columns], npdt)
        return Column(dtype, len(data), Buffer(data, CPU), None, None, None, 0, 0)
    arrays = [c.to_arrow() for c in columns]
    if columns[0].layout == Layout.DICTIONARY:
        return Column.from_arrow(pa.chunked_array(arrays, dtype).unify_dictionaries().combine_chunks(),
                                 validate=False)
    return Column.from_arrow(pa.concat_arrays(arrays), validate=False)


def cross_maps(nl: int, nr: int, device: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The gather maps of the cross product of ``nl`` x ``nr`` rows, left-major."""
    return (np.repeat(np.arange(nl, dtype=np.int64), nr), np.tile(np.arange(nr, dtype=np.int64), nl))


def cast_column(col: Column, dtype: pa.DataType) -> Column:
    """``col`` as ``dtype`` (pyarrow's cast: integers widened, strings decoded...)."""
    if col.dtype == dtype:
        return col
    return Column.from_arrow(col.to_arrow().cast(dtype), validate=False)
