"""Gather: ``take(table, indices)`` and the column-level ``gather_column``.

Indices are 64-bit row numbers; ``-1`` gives a null row (the unmatched side of an outer join);
any other negative value or one ``>= num_rows`` raises :class:`IndexError`.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..backends.registry import resolve
from ..core import memory, streams
from ..core.column import Column
from ..core.device import Device
from ..core.dtypes import Layout
from ..core.table import Table

__all__ = ["take", "gather_column", "as_indices"]


def as_indices(indices: Any, device: Device) -> Any:
    """``indices`` as a 1-D int64 array on ``device`` (numpy, device array or a Python sequence)."""
    if isinstance(indices, np.ndarray) or not (hasattr(indices, "__cuda_array_interface__")
                                               or type(indices).__name__ == "FakeCUDAArray"):
        arr = indices if isinstance(indices, np.ndarray) else np.asarray(indices)
        if arr.dtype == object or (arr.size == 0 and arr.dtype.kind not in "iu"):
            if arr.size:
                raise TypeError(f"indices must be integers, got {indices!r}")
            arr = arr.astype(np.int64)
    else:
        arr = indices
    shape = tuple(arr.shape)
    if len(shape) != 1:
        raise ValueError(f"indices must be one-dimensional, got shape {shape}")
    dt = np.dtype(arr.dtype)
    if dt.kind not in "iu":
        raise TypeError(f"indices must be an integer array (int64), got dtype {dt}")
    if dt != np.int64:
        host = memory.to_host(arr)
        if dt == np.uint64 and host.size and int(host.max()) > np.iinfo(np.int64).max:
            raise IndexError(f"index {int(host.max())} is out of bounds (it does not fit int64)")
        arr = host.astype(np.int64)
    elif isinstance(arr, np.ndarray) and not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return memory.to_device(arr, device)


def _raise_out_of_bounds(indices: Any, pos: int, num_rows: int) -> None:
    value = int(memory.to_host(indices[pos:pos + 1])[0])
    raise IndexError(
        f"index {value} (at position {pos} of indices) is out of bounds for a table of {num_rows} rows; "
        f"valid indices are -1 (null row) and 0..{num_rows - 1}")


def _check(indices: Any, num_rows: int, device: Device) -> int:
    fn, _ = resolve("check_indices", device)
    bad, missing = fn(indices, num_rows)
    if bad >= 0:
        _raise_out_of_bounds(indices, bad, num_rows)
    return missing


def gather_column(column: Column, indices: Any, *, check_bounds: bool = True, stream: Any = None) -> Column:
    """Rows ``indices`` of ``column`` as a new column on the same device.

    Parameters
    ----------
    column : Column
    indices : int64 array (numpy or device array) or sequence of int
        Row numbers; ``-1`` gives a null row.
    check_bounds : bool, default True
        ``False`` skips the bounds pass: only for indices known to be in ``[-1, len(column))``
        (a join's gather maps); an out-of-range index then reads out of bounds.
    stream : CUDA stream, optional
        The operation's stream (CUDA columns only), as in :func:`take`.

    Returns
    -------
    Column
        ``len(indices)`` rows, offset 0; nulls where the source row is null or the index is -1.
        A dictionary column keeps (shares) its dictionary.

    Raises
    ------
    IndexError
        With ``check_bounds``, an index outside ``[-1, len(column))``; the message names it.
    """
    dev = column.device
    with streams.operation(stream, dev):
        idx = as_indices(indices, dev)
        missing: Optional[int] = _check(idx, len(column), dev) if check_bounds else None
        fn, run_device = resolve("gather_column", dev)
        if run_device != dev:
            out = fn(column.to(run_device), memory.to_device(idx, run_device), missing)
            return out.to(dev)
        return fn(column, idx, missing)


def _gathered_bytes(col: Column, m: int, missing: Optional[int]) -> int:
    """About how many bytes ``m`` gathered rows of ``col`` take (string bytes: at the column's
    average length; the exact figure is checked again once the gather has counted them)."""
    lay = col.layout
    n = len(col)
    if lay in (Layout.FIXED, Layout.DICTIONARY):
        out = m * np.dtype(col.values().dtype).itemsize
    elif lay == Layout.BOOL:
        out = (m + 7) // 8
    elif n:
        out = -(-col.nbytes * m // n)     # offsets and bytes at the column's average
    else:
        out = (m + 1) * np.dtype(col.offsets_view().dtype).itemsize
    if col.validity is not None or missing is None or missing > 0:
        out += (m + 7) // 8
    return out


def take(table: Table, indices: Any, *, stream: Any = None) -> Table:
    """Rows ``indices`` of ``table``, in that order.

    Parameters
    ----------
    table : Table
    indices : int64 array (numpy or device array) or sequence of int
        Row numbers; ``-1`` gives a row of nulls (for outer joins). Copied to ``table.device``
        when they live elsewhere.
    stream : CUDA stream, optional
        The stream every kernel, allocation and copy of the operation is queued on (CUDA tables
        only): a ``cupy.cuda.Stream``, a numba stream, an object with ``__cuda_stream__`` or
        ``.ptr``, or an int ``cudaStream_t``. Default: CuPy's current stream.

    Returns
    -------
    Table
        ``len(indices)`` rows on ``table.device``; every column type with its nulls.

    Raises
    ------
    IndexError
        An index other than -1 that is negative or ``>= table.num_rows``; the message names the
        value and the table size.
    MemoryError
        The gathered table would not fit in the memory available on its device (the host: the
        tightest of the system, cgroup and Dask worker limits); raised before allocating it.
    TypeError, ValueError
        ``indices`` is not a one-dimensional integer array; ``stream`` is not a stream
        (``TypeError``) or is given for a CPU table (``ValueError``).
    """
    with streams.operation(stream, table.device):
        return _take(table, indices)


def take_permutation(table: Table, perm: Any) -> Table:
    """:func:`take` of a permutation an operation made (a sort's): every row number in bounds,
    none -1, so neither checked nor converted; int64, or uint32 where the sort wrote it so
    (``sort_keyed``)."""
    if getattr(perm, "dtype", None) not in (np.int64, np.uint32):
        return _take(table, perm)
    return _gather_table(table, perm, 0)


def _take(table: Table, indices: Any) -> Table:
    idx = as_indices(indices, table.device)
    return _gather_table(table, idx, _check(idx, table.num_rows, table.device))


def _gather_table(table: Table, idx: Any, missing: int) -> Table:
    """Rows ``idx`` (checked: in bounds or -1, ``missing`` of them -1) of every column."""
    dev = table.device
    m = len(idx)
    memory.ensure_available("take", sum(_gathered_bytes(col, m, missing) for _, col in table.items()), dev,
                            rows=m, what="the gathered table")
    fn, run_device = resolve("gather_column", dev)
    if run_device != dev:
        host_idx = memory.to_device(idx, run_device)
        cols = [(name, fn(col.to(run_device), host_idx, missing).to(dev)) for name, col in table.items()]
    else:
        cols = [(name, fn(col, idx, missing)) for name, col in table.items()]
    return Table(cols, m)
