"""Row selection on the CPU: the rows of a boolean mask, and columns stacked one after another."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from ...core.column import Column
from ...core.dtypes import Layout
from ...core.hostalloc import host_empty

__all__ = ["flagged_rows", "mask_rows", "valid_rows", "concat_columns", "cross_maps", "cast_column"]


def flagged_rows(flags: np.ndarray) -> np.ndarray:
    """``np.flatnonzero(flags)`` (a uint8 or bool array) as int64, counted and written on every
    thread (:func:`gpuframe.kernels.group_cpu.flagged_rows`), into an output of its exact size."""
    from gpuframe.kernels import group_cpu as K

    flags = np.ascontiguousarray(flags).view(np.uint8)
    n = len(flags)
    nch = K.nchunks_for(n)
    cnt = np.zeros(nch + 1, np.int64)
    K.count_flags(flags, nch, cnt)
    rows = host_empty(int(cnt[nch]), np.int64)
    K.flagged_rows(flags, nch, cnt, rows)
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


def concat_columns(columns: Sequence[Column], dtype: pa.DataType) -> Column:
    """The columns (all of ``dtype``) one after another (pyarrow's concatenation; dictionaries
    unified)."""
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
