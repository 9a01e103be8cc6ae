"""Row selection and stacking: ``filter`` (a boolean mask) and ``concat`` (tables one after
another), and the column matching by name that ``concat`` and the set operations share."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from ..backends.registry import resolve
from ..core import memory
from ..core.column import Column
from ..core.table import Table
from .gather import take

__all__ = ["filter", "concat", "matched_columns"]


def _as_mask(mask: Any, table: Table) -> Column:
    """``mask`` as a bool Column on the table's device."""
    col: Column
    if isinstance(mask, Column):
        col = mask
    elif isinstance(mask, (pa.Array, pa.ChunkedArray)):
        arr = mask.combine_chunks() if isinstance(mask, pa.ChunkedArray) else mask
        if not pa.types.is_boolean(arr.type):
            raise TypeError(f"mask must hold bools, got a pyarrow array of {arr.type}")
        col = Column.from_arrow(arr)
    elif isinstance(mask, np.ndarray) or isinstance(mask, (list, tuple)):
        arr = np.asarray(mask)
        if arr.dtype != np.bool_:
            raise TypeError(f"mask must hold bools, got an array of {arr.dtype}")
        col = Column.from_numpy(arr, pa.bool_())
    elif hasattr(mask, "__dlpack__") or hasattr(mask, "__cuda_array_interface__"):
        from ..interop.dlpack import from_dlpack

        col = from_dlpack(mask)
        if isinstance(col, Table):
            col = col.columns[0]
    else:
        raise TypeError("mask must be a bool gpuframe Column, pyarrow array, numpy array or DLPack tensor, "
                        f"got {type(mask).__name__}")
    if not pa.types.is_boolean(col.dtype):
        raise TypeError(f"mask must hold bools, got a column of {col.dtype}")
    if len(col) != table.num_rows:
        raise ValueError(f"mask must have one value per row of the table ({table.num_rows:,}), got {len(col):,}")
    return col.to(table.device)


def filter(table: Table, mask: Any) -> Table:  # noqa: A001  (the issue's name)
    """The rows of ``table`` where ``mask`` is true, in their order.

    Parameters
    ----------
    table : Table
    mask : bool Column, pyarrow array, numpy array or DLPack tensor (e.g. a torch.bool tensor)
        One value per row; a null in a mask Column or pyarrow array counts as false (the row is
        dropped).

    Raises
    ------
    TypeError
        ``table`` is not a Table, or ``mask`` is not a bool mask.
    ValueError
        ``mask`` does not have one value per row.
    """
    if not isinstance(table, Table):
        raise TypeError(f"table must be a gpuframe.Table, got {type(table).__name__}")
    col = _as_mask(mask, table)
    fn, run_dev = resolve("mask_rows", table.device)
    rows = fn(col.to(run_dev))
    if int(rows.shape[0]) == table.num_rows:
        return table
    return take(table, memory.to_device(rows, table.device))


def _cast(col: Column, dtype: pa.DataType) -> Column:
    """``col`` as ``dtype`` (the backend's ``cast_column``: on a CUDA device numbers, strings and
    string dictionaries are converted there)."""
    if col.dtype == dtype:
        return col
    fn, run_dev = resolve("cast_column", col.device)
    return fn(col.to(run_dev), dtype).to(col.device)


def matched_columns(tables: Sequence[Table], op: str, params: Sequence[str]) -> list[tuple[str, pa.DataType]]:
    """The columns of ``tables`` matched by name: every table must have the same set of names
    (order from the first); each column's type is the types promoted as join keys are (a
    string dictionary becomes its string type). Raises ``ValueError`` for other names and
    ``TypeError`` for types that cannot be combined, naming the tables (``params``) and the
    column."""
    from .keys import _pair

    first = tables[0]
    if first.num_columns == 0:
        raise ValueError(f"{op}: {params[0]} has no columns")
    names = list(first.column_names)
    out: list[tuple[str, pa.DataType]] = []
    for t, p in zip(tables[1:], params[1:]):
        if set(t.column_names) != set(names):
            extra = [n for n in t.column_names if n not in names]
            missing = [n for n in names if n not in t]
            raise ValueError(f"{op}: {p} must have the columns of {params[0]} ({names}); it lacks {missing} "
                             f"and has {extra} besides")
    for name in names:
        dtype = first[name].dtype
        for t, p in zip(tables[1:], params[1:]):
            other = t[name].dtype
            if other == dtype:
                continue
            try:
                pair = _pair(name, dtype, name, other)
            except TypeError as e:
                raise TypeError(f"{op}: column {name!r} is {dtype} in {params[0]} and {other} in {p}; these types "
                                f"cannot be combined ({e})") from None
            if pair.range_checked:
                raise TypeError(f"{op}: column {name!r} is {dtype} in {params[0]} and {other} in {p}; no integer "
                                "type holds every value of both: cast one first")
            dtype = pair.out_type
        if pa.types.is_dictionary(dtype) and any(t[name].dtype != dtype for t in tables):
            dtype = pa.large_string() if pa.types.is_large_string(dtype.value_type) else pa.string()
        out.append((name, dtype))
    return out


def concat(tables: Sequence[Table]) -> Table:
    """The rows of ``tables``, one table after another.

    Columns are matched by name (every table must have the same names; the order is the first
    table's) and their types promoted as join keys are; incompatible types raise ``TypeError``
    naming the column and both types. Every table must be on one device.
    """
    if isinstance(tables, Table) or not isinstance(tables, (list, tuple)):
        raise TypeError(f"tables must be a list of gpuframe.Table, got {type(tables).__name__}")
    if not tables:
        raise ValueError("tables must hold at least one table, got an empty list")
    for i, t in enumerate(tables):
        if not isinstance(t, Table):
            raise TypeError(f"tables[{i}] must be a gpuframe.Table, got {type(t).__name__}")
    dev = tables[0].device
    for i, t in enumerate(tables):
        if t.device != dev:
            raise ValueError(f"every table must be on one device: tables[0] is on {dev}, tables[{i}] on {t.device}")
    if len(tables) == 1:
        return tables[0]
    cols = matched_columns(tables, "concat", [f"tables[{i}]" for i in range(len(tables))])
    fn, run_dev = resolve("concat_columns", dev)
    out = []
    for name, dtype in cols:
        parts = [_cast(t[name].to(run_dev), dtype) for t in tables]
        out.append((name, fn(parts, dtype).to(dev)))
    return Table(out, sum(t.num_rows for t in tables))
