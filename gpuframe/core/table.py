"""Table: named Arrow-layout columns of equal length on one device."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import pyarrow as pa

from .column import Column
from .device import CPU, Device, DeviceLike, as_device

if TYPE_CHECKING:  # pragma: no cover
    import pandas


def _is_int(x: Any) -> bool:
    # numpy integers count (offsets often come from an offsets array); bools do not
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


class Table:
    """An ordered set of named :class:`Column` objects with the same length, on one device.

    Build one with :func:`gpuframe.from_arrow`, :func:`gpuframe.from_pandas` or
    :func:`gpuframe.read_parquet`; move it with :meth:`to`.
    """

    __slots__ = ("_columns", "_num_rows")

    def __init__(self, columns: Mapping[str, Column] | Iterable[tuple[str, Column]], num_rows: Optional[int] = None) -> None:
        pairs = list(columns.items() if isinstance(columns, Mapping) else columns)
        cols = dict(pairs)
        if len(cols) != len(pairs):
            names = [n for n, _ in pairs]
            dup = sorted({n for n in names if names.count(n) > 1}, key=str)
            raise ValueError(f"column names must be unique, got duplicates {dup}")
        for name, col in cols.items():
            if not isinstance(name, str):
                raise TypeError(f"column names must be str, got {name!r}")
            if not isinstance(col, Column):
                raise TypeError(f"column {name!r} must be a gpuframe Column (use gpuframe.from_arrow for "
                                f"Arrow data), got {type(col).__name__}")
        if num_rows is not None and (not _is_int(num_rows) or num_rows < 0):
            raise ValueError(f"num_rows must be a non-negative int or None, got {num_rows!r}")
        lengths = {len(c) for c in cols.values()}
        if len(lengths) > 1 or (lengths and num_rows is not None and int(num_rows) not in lengths):
            got = {n: len(c) for n, c in cols.items()}
            expected = "" if num_rows is None else f" (num_rows={int(num_rows)})"
            raise ValueError(f"all columns must have the same length{expected}, got lengths {got}")
        devices = {c.device for c in cols.values() if len(c) or c.data is not None}
        if len(devices) > 1:
            where = {n: str(c.device) for n, c in cols.items()}
            raise ValueError(f"all columns must live on one device, got {where}")
        self._columns: dict[str, Column] = cols
        if lengths:
            self._num_rows = lengths.pop()
        else:
            self._num_rows = int(num_rows or 0)

    # ------------------------------------------------------------------ shape and access
    @property
    def num_rows(self) -> int:
        return self._num_rows

    @property
    def num_columns(self) -> int:
        return len(self._columns)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_rows, self.num_columns)

    def __len__(self) -> int:
        return self._num_rows

    @property
    def column_names(self) -> list[str]:
        return list(self._columns)

    @property
    def columns(self) -> list[Column]:
        return list(self._columns.values())

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(n, c.dtype, nullable=True) for n, c in self._columns.items()])

    @property
    def device(self) -> Device:
        for c in self._columns.values():
            return c.device
        return CPU

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self._columns.values())

    def items(self) -> Iterator[tuple[str, Column]]:
        return iter(self._columns.items())

    def __contains__(self, name: object) -> bool:
        return name in self._columns

    def __getitem__(self, key: Union[str, int]) -> Column:
        if isinstance(key, int):
            names = self.column_names
            if not -len(names) <= key < len(names):
                raise IndexError(f"column index {key} is out of range for {len(names)} columns")
            return self._columns[names[key]]
        try:
            return self._columns[key]
        except KeyError:
            raise KeyError(f"no column named {key!r}; the table has {self.column_names}") from None

    def column(self, key: Union[str, int]) -> Column:
        return self[key]

    def select(self, names: Sequence[str]) -> "Table":
        """The named columns, in the given order (no copy)."""
        if isinstance(names, str):
            names = [names]
        return Table([(n, self[n]) for n in names], self._num_rows)

    def rename(self, mapping: Mapping[str, str]) -> "Table":
        return Table([(mapping.get(n, n), c) for n, c in self._columns.items()], self._num_rows)

    def with_column(self, name: str, column: Column) -> "Table":
        cols = dict(self._columns)
        cols[name] = column
        return Table(cols, self._num_rows)

    def slice(self, offset: int = 0, length: Optional[int] = None) -> "Table":
        """Zero-copy rows ``[offset, offset + length)`` (to the end when ``length`` is None)."""
        if not _is_int(offset) or offset < 0:
            raise ValueError(f"offset must be a non-negative int, got {offset!r}")
        offset = int(offset)
        if length is None:
            length = max(self._num_rows - offset, 0)
        if not _is_int(length) or length < 0:
            raise ValueError(f"length must be a non-negative int or None, got {length!r}")
        length = int(length)
        offset = min(offset, self._num_rows)
        length = min(length, self._num_rows - offset)
        return Table([(n, c.slice(offset, length)) for n, c in self._columns.items()], length)

    def to(self, device: DeviceLike) -> "Table":
        """This table on ``device`` (the same object when it is already there)."""
        dev = as_device(device)
        if dev == self.device:
            return self
        from .device import require_cuda

        require_cuda(dev)
        return Table([(n, c.to(dev)) for n, c in self._columns.items()], self._num_rows)

    # ------------------------------------------------------------------ operations
    def take(self, indices: Any, *, stream: Any = None) -> "Table":
        """Gather rows by a 64-bit index array; ``-1`` gives a null row (``gpuframe.take``)."""
        from ..ops.gather import take

        return take(self, indices, stream=stream)

    def merge(self, right: "Table", on: Any = None, **kwargs: Any) -> "Table":
        """``gpuframe.merge(self, right, ...)``."""
        from ..ops.join import merge

        return merge(self, right, on, **kwargs)

    def partition_by_hash(self, on: Any, num_partitions: int, *, seed: int = 0,
                          stream: Any = None) -> list["Table"]:
        """Hash-partition and return the partitions as zero-copy slices of one table."""
        from ..ops.partition import hash_partition
        from .memory import to_host

        out, offsets = hash_partition(self, on, num_partitions, seed=seed, stream=stream)
        offs = to_host(offsets)
        return [out.slice(int(offs[i]), int(offs[i + 1] - offs[i])) for i in range(num_partitions)]

    def sort(self, by: Any, *, descending: Any = False, nulls_last: bool = True) -> "Table":
        """The rows ordered by ``by`` (``gpuframe.sort``; stable)."""
        from ..ops.sort import sort

        return sort(self, by, descending=descending, nulls_last=nulls_last)

    def unique(self, subset: Any = None, *, keep: str = "any") -> "Table":
        """One row per distinct value of ``subset`` (all columns by default): ``gpuframe.unique``."""
        from ..ops.setops import unique

        return unique(self, subset, keep=keep)

    def drop_duplicates(self, subset: Any = None, *, keep: str = "any") -> "Table":
        """Another name for :meth:`unique`."""
        return self.unique(subset, keep=keep)

    def groupby(self, by: Any, *, dropna: bool = False, sort: bool = False) -> Any:
        """A :class:`gpuframe.ops.groupby.GroupBy`: ``t.groupby("k").agg(total=("v", "sum"))``."""
        from ..ops.groupby import GroupBy

        return GroupBy(self, by, dropna=dropna, sort=sort)

    def filter(self, mask: Any) -> "Table":
        """The rows where ``mask`` (a bool Column, array or DLPack tensor of the table's length) is
        true; a null in a mask Column drops its row (``gpuframe.filter``)."""
        from ..ops.select import filter as filter_rows

        return filter_rows(self, mask)

    # ------------------------------------------------------------------ interop
    def to_arrow(self) -> pa.Table:
        arrays = [c.to_arrow() for c in self._columns.values()]
        if not arrays:
            return pa.table({})
        return pa.Table.from_arrays(arrays, names=self.column_names)

    def to_pandas(self, **kwargs: Any) -> "pandas.DataFrame":
        from ..interop.pandas import to_pandas

        return to_pandas(self, **kwargs)

    def to_torch(self, *, nulls: str = "raise") -> dict[str, Any]:
        from ..interop.dlpack import table_to_torch

        return table_to_torch(self, nulls=nulls)

    def to_parquet(self, path: Any, **kwargs: Any) -> None:
        from ..interop.parquet import write_parquet

        write_parquet(self, path, **kwargs)

    def to_csv(self, path: Any, **kwargs: Any) -> None:
        """Write a CSV file through ``pyarrow.csv`` (host copy first for CUDA tables)."""
        from ..interop.csv import write_csv

        write_csv(self, path, **kwargs)

    def to_cudf(self) -> Any:
        from ..interop.cudf import to_cudf

        return to_cudf(self)

    def __arrow_c_schema__(self) -> Any:
        return self.schema.__arrow_c_schema__()

    def __arrow_c_array__(self, requested_schema: Any = None) -> Any:
        from ..interop.arrow import table_c_array

        return table_c_array(self, requested_schema)

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        from ..interop.arrow import table_c_stream

        return table_c_stream(self, requested_schema)

    def __arrow_c_device_array__(self, requested_schema: Any = None, **kwargs: Any) -> Any:
        from ..interop.arrow import table_c_device_array

        return table_c_device_array(self, requested_schema, **kwargs)

    def equals(self, other: "Table") -> bool:
        """Same schema and the same values in the same order."""
        return isinstance(other, Table) and self.to_arrow().equals(other.to_arrow())

    def __repr__(self) -> str:
        from ..interop.display import table_repr

        return table_repr(self)
