"""Arrow interop: pyarrow objects and the Arrow PyCapsule protocol (C data and C device interface)."""
from __future__ import annotations

from typing import Any, Optional

import pyarrow as pa

from ..core.column import Column
from ..core.device import DeviceLike, as_device
from ..core.table import Table


def _table_from_pa(tbl: pa.Table) -> Table:
    names = tbl.column_names
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"column names must be unique, got duplicates {dup}")
    return Table([(n, Column.from_arrow(tbl.column(i), n)) for i, n in enumerate(names)], tbl.num_rows)


def from_arrow(obj: Any, device: DeviceLike = None) -> Table:
    """Build a :class:`Table` from Arrow data without copying where the memory allows.

    Parameters
    ----------
    obj : pyarrow.Table, RecordBatch, Array, ChunkedArray, or any object exposing
        ``__arrow_c_device_array__``, ``__arrow_c_array__`` or ``__arrow_c_stream__``.
        An array becomes a one-column table named ``"0"`` (or its field name).
    device : "cpu", "cuda", "cuda:N" or Device, optional
        Where the result lives; by default where ``obj`` lives.
    """
    if isinstance(obj, Table):
        tbl = obj
    elif isinstance(obj, pa.Table):
        tbl = _table_from_pa(obj)
    elif isinstance(obj, pa.RecordBatch):
        tbl = _table_from_pa(pa.Table.from_batches([obj]))
    elif isinstance(obj, (pa.Array, pa.ChunkedArray)):
        tbl = Table([("0", Column.from_arrow(obj, "0"))], len(obj))
    elif hasattr(obj, "__arrow_c_device_array__") or hasattr(obj, "__arrow_c_array__") or hasattr(obj, "__arrow_c_stream__"):
        tbl = _from_capsule_object(obj)
    else:
        raise TypeError(
            "from_arrow expects a pyarrow Table, RecordBatch, Array or ChunkedArray, or an object "
            f"with __arrow_c_array__/__arrow_c_stream__/__arrow_c_device_array__, got {type(obj).__name__}"
        )
    return tbl if device is None else tbl.to(as_device(device))


def _from_capsule_object(obj: Any) -> Table:
    if hasattr(obj, "__arrow_c_stream__"):
        return _table_from_pa(pa.table(obj))
    if hasattr(obj, "__arrow_c_array__"):
        schema_capsule, array_capsule = obj.__arrow_c_array__()
        try:
            rb = pa.RecordBatch._import_from_c_capsule(schema_capsule, array_capsule)
            return _table_from_pa(pa.Table.from_batches([rb]))
        except Exception:
            arr = pa.Array._import_from_c_capsule(schema_capsule, array_capsule)
            return Table([("0", Column.from_arrow(arr, "0"))], len(arr))
    schema_capsule, array_capsule = obj.__arrow_c_device_array__()
    rb = pa.RecordBatch._import_from_c_device_capsule(schema_capsule, array_capsule)
    return _table_from_pa(pa.Table.from_batches([rb]))


def to_arrow(table: Table) -> pa.Table:
    return table.to_arrow()


def table_c_array(table: Table, requested_schema: Optional[Any] = None) -> Any:
    rb = pa.RecordBatch.from_arrays([c.to_arrow() for c in table.columns], names=table.column_names) \
        if table.num_columns else pa.RecordBatch.from_pydict({})
    return rb.__arrow_c_array__(requested_schema)


def table_c_stream(table: Table, requested_schema: Optional[Any] = None) -> Any:
    return table.to_arrow().__arrow_c_stream__(requested_schema)


def table_c_device_array(table: Table, requested_schema: Optional[Any] = None, **kwargs: Any) -> Any:
    if table.device.is_cuda:
        raise NotImplementedError("CUDA ArrowDeviceArray export is not implemented yet")
    rb = pa.RecordBatch.from_arrays([c.to_arrow() for c in table.columns], names=table.column_names)
    return rb.__arrow_c_device_array__(requested_schema, **kwargs)
