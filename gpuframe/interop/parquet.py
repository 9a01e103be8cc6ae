"""Parquet files, read and written by ``pyarrow.parquet``."""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence, Union

import pyarrow as pa

from ..core.device import DeviceLike
from ..core.table import Table
from .arrow_import import from_arrow

__all__ = ["read_parquet", "write_parquet"]

PathLike = Union[str, "os.PathLike[str]"]


def read_parquet(path: PathLike, columns: Optional[Sequence[str]] = None, device: DeviceLike = None, *,
                 validate: bool = True) -> Table:
    """Read a Parquet file (or a directory of them, hive-partitioned or not) into a :class:`Table`.

    Parameters
    ----------
    path : str or os.PathLike
        A file, or a directory of Parquet files read as one dataset.
    columns : sequence of str, optional
        The columns to read, in this order (default: all).
    device : "cpu", "cuda", "cuda:N" or Device, optional
        Where the result lives (default: the CPU). Reading is done on the host; a CUDA table is a
        copy of the host table.
    validate : bool, default True
        Check the contents of every column pyarrow produced (as :func:`gpuframe.from_arrow`);
        ``False`` skips the O(rows) checks, the structural ones always run.

    Returns
    -------
    Table

    Raises
    ------
    KeyError
        Naming the requested columns the file does not have.
    TypeError
        For a ``columns`` that is a bare string, or a column of a type gpuframe does not store.
    FileNotFoundError
        When ``path`` does not exist.
    """
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such Parquet file or directory: {os.fspath(path)!r}")
    if columns is not None:
        if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
            raise TypeError(f"columns must be a sequence of column names, got {columns!r}")
        columns = list(columns)
        # pq.read_table discovers hive partitions by default: ask the same dataset for its names
        available = ds.dataset(path, format="parquet", partitioning="hive").schema.names
        missing = [c for c in columns if c not in available]
        if missing:
            raise KeyError(f"columns {missing} are not in {os.fspath(path)!r}; it has {available}")
    tbl = pq.read_table(path, columns=columns)
    return from_arrow(tbl.replace_schema_metadata(None), device, validate=validate)


def write_parquet(table: Table, path: PathLike, **kwargs: Any) -> None:
    """Write ``table`` to a Parquet file (``Table.to_parquet``).

    Parameters
    ----------
    table : Table
        On any device (CUDA data is copied to the host first).
    path : str or os.PathLike
    **kwargs
        Passed to ``pyarrow.parquet.write_table`` (``compression``, ``row_group_size``, ...).
    """
    import pyarrow.parquet as pq

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    arrow: pa.Table = table.to_arrow()
    pq.write_table(arrow, path, **kwargs)
