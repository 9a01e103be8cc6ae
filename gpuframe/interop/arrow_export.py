"""gpuframe -> Arrow: the Arrow PyCapsule protocol of ``Column`` and ``Table``.

``__arrow_c_schema__``, ``__arrow_c_array__``, ``__arrow_c_stream__`` and
``__arrow_c_device_array__``: the structs are built by :mod:`gpuframe.interop.arrow_c_abi` and
point at our buffers without copying; the capsule (and, once moved, the struct's release callback)
keeps the buffers alive.

- CPU data: the consumer sees the very same addresses as ``Buffer.ptr`` (with ``offset`` = the
  column's Arrow offset), for all three protocols.
- CUDA data: ``__arrow_c_device_array__`` exports device pointers with ``device_type`` 2 (CUDA),
  ``device_id`` the GPU ordinal and ``sync_event`` pointing at a ``cudaEvent_t`` recorded on the
  stream the buffers were written on (``Buffer.stream``: the producing operation's stream, so the
  event follows its last kernel; buffers from several streams: CuPy's current stream, made to
  wait on each of them). The consumer waits on it before reading. ``__arrow_c_array__`` and
  ``__arrow_c_stream__`` are CPU interfaces: for CUDA data they export a host copy of the
  columns' slices.
- Under the CUDA simulator the device array carries the simulated buffers' (host) addresses and
  ``sync_event`` NULL (:mod:`gpuframe.interop.arrow_cudasim`).
- ``requested_schema`` is honoured: a different field name is a rename, a different type is a
  cast (a copy; on CUDA the cast runs on the host and the result is copied back). A cast that
  pyarrow cannot do raises ``ValueError``. Extra keyword arguments of
  ``__arrow_c_device_array__`` are accepted only with the value ``None`` (the protocol's rule
  for future keywords); anything else raises ``NotImplementedError``.
"""
from __future__ import annotations

import ctypes
from functools import partial
from typing import Any, Callable, Optional, Sequence

import pyarrow as pa

from ..core import streams
from ..core.column import Column
from ..core.device import CPU, Device, cudasim_enabled
from ..core.dtypes import Layout
from ..core.table import Table
from . import arrow_c_abi as cd

__all__ = [
    "column_c_array", "column_c_device_array", "column_c_schema", "column_c_stream",
    "format_string", "table_c_array", "table_c_device_array", "table_c_stream", "to_arrow",
]


def to_arrow(table: Table) -> pa.Table:
    """``table.to_arrow()``: zero-copy on the CPU, a device-to-host copy on CUDA."""
    return table.to_arrow()


_UNITS = {"s": "s", "ms": "m", "us": "u", "ns": "n"}
_FORMATS = {
    pa.int8(): "c", pa.uint8(): "C", pa.int16(): "s", pa.uint16(): "S",
    pa.int32(): "i", pa.uint32(): "I", pa.int64(): "l", pa.uint64(): "L",
    pa.float32(): "f", pa.float64(): "g", pa.bool_(): "b",
    pa.string(): "u", pa.large_string(): "U", pa.date32(): "tdD",
}


def format_string(dtype: pa.DataType) -> str:
    """The Arrow C data interface format string of a gpuframe type (dictionaries: the index format)."""
    if pa.types.is_dictionary(dtype):
        return format_string(dtype.index_type)
    if pa.types.is_timestamp(dtype):
        return f"ts{_UNITS[dtype.unit]}:{dtype.tz or ''}"
    try:
        return _FORMATS[dtype]
    except KeyError:
        raise TypeError(f"gpuframe cannot export type {dtype} through the Arrow C interface") from None


def _fill_column_schema(out: cd.ArrowSchema, dtype: pa.DataType, name: str) -> None:
    if pa.types.is_dictionary(dtype):
        flags = cd.ARROW_FLAG_NULLABLE | (cd.ARROW_FLAG_DICTIONARY_ORDERED if dtype.ordered else 0)
        cd.fill_schema(out, format_string(dtype.index_type), name, flags=flags,
                       dictionary=partial(_fill_column_schema, dtype=dtype.value_type, name=""))
    else:
        cd.fill_schema(out, format_string(dtype), name)


def _fill_table_schema(out: cd.ArrowSchema, names: Sequence[str], dtypes: Sequence[pa.DataType]) -> None:
    cd.fill_schema(out, "+s", "", flags=0,
                   children=tuple(partial(_fill_column_schema, dtype=t, name=n) for n, t in zip(names, dtypes)))


def _export_null_count(col: Column) -> int:
    # -1 ("not computed") is valid in the C interface and spares a pass over a device bitmap
    return 0 if col.validity is None else int(col._null_count)


def _fill_column_array(out: cd.ArrowArray, col: Column) -> None:
    validity = col.validity.ptr if col.validity is not None else 0
    lay = col.layout
    dictionary = None
    if lay == Layout.STRING:
        buffers = [validity, col.offsets.ptr, col.data.ptr]
    else:
        buffers = [validity, col.data.ptr]
        if lay == Layout.DICTIONARY:
            dictionary = partial(_fill_column_array, col=col.dictionary)
    cd.fill_array(out, length=col.length, null_count=_export_null_count(col), offset=col.offset,
                  buffers=buffers, dictionary=dictionary, keepalive=col)


def _fill_table_array(out: cd.ArrowArray, columns: Sequence[Column], num_rows: int) -> None:
    cd.fill_array(out, length=num_rows, null_count=0, offset=0, buffers=[0],
                  children=tuple(partial(_fill_column_array, col=c) for c in columns))


def sync_stream(columns: Sequence[Column], device: Device) -> int:
    """The stream the export's event is recorded on: the one the columns' buffers were written on
    (the producing operation's), ordered after all of them when they come from several."""
    return streams.ready_stream((b.stream for c in columns for b in c.buffers()), device)


def _record_sync_event(device: Device, stream_ptr: int) -> Optional[tuple[Any, ctypes.c_void_p]]:
    """A cudaEvent recorded on stream ``stream_ptr``, and the ``cudaEvent_t`` it is stored in.

    ``None`` under the simulator (no stream exists: the data is ready when the kernel returns).
    """
    if cudasim_enabled():
        return None
    import cupy as cp

    with cp.cuda.Device(device.id):
        event = cp.cuda.Event(block=False, disable_timing=True)
        event.record(cp.cuda.ExternalStream(stream_ptr, device.id))
    return event, ctypes.c_void_p(event.ptr)


def _device_array_capsule(fill: Callable[[cd.ArrowArray], None], device: Device,
                          columns: Sequence[Column]) -> Any:
    d = cd.ArrowDeviceArray()
    fill(d.array)
    if device.is_cuda:
        d.device_type = cd.ARROW_DEVICE_CUDA
        d.device_id = device.id
        sync = _record_sync_event(device, sync_stream(columns, device))
        if sync is not None:
            cd.attach(d.array, sync)  # event and cudaEvent_t live until the consumer releases
            d.sync_event = ctypes.addressof(sync[1])
        else:
            d.sync_event = None
    else:
        d.device_type = cd.ARROW_DEVICE_CPU
        d.device_id = -1
        d.sync_event = None
    return cd.new_capsule(d, cd.DEVICE_ARRAY_CAPSULE)


def _check_kwargs(kwargs: dict[str, Any]) -> None:
    extra = sorted(k for k, v in kwargs.items() if v is not None)
    if extra:
        raise NotImplementedError(f"__arrow_c_device_array__ received unsupported keyword argument(s): {extra}")


def _schema_capsule(fill: Callable[[cd.ArrowSchema], None]) -> Any:
    s = cd.ArrowSchema()
    fill(s)
    return cd.new_capsule(s, cd.SCHEMA_CAPSULE)


def _cast_column(col: Column, target: pa.DataType, name: str) -> Column:
    """``col`` as ``target`` (a copy; computed on the host), on ``col``'s device."""
    try:
        arr = col.to_arrow().cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"could not cast column {name!r} from {col.dtype} to requested type {target}: {exc}") from None
    try:
        out = Column.from_arrow(arr, name)
    except TypeError as exc:
        raise ValueError(f"cannot export column {name!r} as requested type {target}: {exc}") from None
    return out.to(col.device)


def _resolve_requested(names: list[str], cols: list[Column], requested: Optional[pa.Schema]
                       ) -> tuple[list[str], list[Column], bool]:
    """Apply a requested schema: ``(names, columns, needs_cast)``; columns are cast only on CUDA."""
    if requested is None:
        return names, cols, False
    if len(requested) != len(cols):
        raise ValueError(f"requested schema has {len(requested)} fields, the table has {len(cols)} "
                         f"columns: got {requested}")
    needs_cast = any(f.type != c.dtype for f, c in zip(requested, cols))
    return list(requested.names), cols, needs_cast


# ------------------------------------------------------------------------ table


def _table_parts(table: Table) -> tuple[list[str], list[Column]]:
    return table.column_names, table.columns


def _cpu_cast_batch(names: list[str], cols: list[Column], num_rows: int, target: pa.Schema) -> pa.RecordBatch:
    rb = pa.RecordBatch.from_arrays([c.to_arrow() for c in cols], names=names) if cols else \
        pa.RecordBatch.from_pydict({})
    try:
        return rb.rename_columns(target.names).cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"could not cast {rb.schema} to requested schema {target}: {exc}") from None


def _host_parts(table: Table, requested_schema: Any) -> tuple[list[str], list[Column], Optional[pa.RecordBatch]]:
    """Host columns to export, or a pyarrow batch when the request needs a cast (CPU interfaces)."""
    host = table.to(CPU) if table.device.is_cuda else table
    names, cols = _table_parts(host)
    requested = None if requested_schema is None else pa.Schema._import_from_c_capsule(requested_schema)
    names2, cols, needs_cast = _resolve_requested(names, cols, requested)
    if needs_cast:
        return names, cols, _cpu_cast_batch(names, cols, host.num_rows, requested)
    return names2, cols, None


def table_c_array(table: Table, requested_schema: Optional[Any] = None) -> tuple[Any, Any]:
    """``Table.__arrow_c_array__``: a struct ArrowArray over the columns (a host copy for CUDA data)."""
    names, cols, casted = _host_parts(table, requested_schema)
    if casted is not None:
        return casted.__arrow_c_array__()
    types = [c.dtype for c in cols]
    s = _schema_capsule(partial(_fill_table_schema, names=names, dtypes=types))
    a = cd.ArrowArray()
    _fill_table_array(a, cols, table.num_rows)
    return s, cd.new_capsule(a, cd.ARRAY_CAPSULE)


def table_c_stream(table: Table, requested_schema: Optional[Any] = None) -> Any:
    """``Table.__arrow_c_stream__``: a one-batch C stream (a host copy for CUDA data)."""
    names, cols, casted = _host_parts(table, requested_schema)
    if casted is not None:
        return pa.RecordBatchReader.from_batches(casted.schema, [casted]).__arrow_c_stream__()
    types = [c.dtype for c in cols]
    return cd.stream_capsule(partial(_fill_table_schema, names=names, dtypes=types),
                             [partial(_fill_table_array, columns=cols, num_rows=table.num_rows)])


def table_c_device_array(table: Table, requested_schema: Optional[Any] = None, **kwargs: Any) -> tuple[Any, Any]:
    """``Table.__arrow_c_device_array__``: a struct ArrowDeviceArray on the table's device, no copy."""
    _check_kwargs(kwargs)
    names, cols = _table_parts(table)
    device = table.device
    requested = None if requested_schema is None else pa.Schema._import_from_c_capsule(requested_schema)
    names2, cols, needs_cast = _resolve_requested(names, cols, requested)
    if needs_cast:
        if not device.is_cuda:
            return _cpu_cast_batch(names, cols, table.num_rows, requested).__arrow_c_device_array__()
        cols = [c if f.type == c.dtype else _cast_column(c, f.type, f.name) for f, c in zip(requested, cols)]
    types = [c.dtype for c in cols]
    s = _schema_capsule(partial(_fill_table_schema, names=names2, dtypes=types))
    return s, _device_array_capsule(partial(_fill_table_array, columns=cols, num_rows=table.num_rows), device,
                                    cols)


# ------------------------------------------------------------------------ column


def _requested_type(requested_schema: Any) -> Optional[pa.DataType]:
    return None if requested_schema is None else pa.DataType._import_from_c_capsule(requested_schema)


def column_c_schema(col: Column) -> Any:
    """``Column.__arrow_c_schema__``: the column's type as an ArrowSchema (empty name)."""
    return _schema_capsule(partial(_fill_column_schema, dtype=col.dtype, name=""))


def _host_column(col: Column, requested_schema: Any) -> tuple[Column, Optional[pa.Array]]:
    host = col.to(CPU) if col.device.is_cuda else col
    target = _requested_type(requested_schema)
    if target is None or target == host.dtype:
        return host, None
    try:
        return host, host.to_arrow().cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"could not cast {host.dtype} to requested type {target}: {exc}") from None


def column_c_array(col: Column, requested_schema: Optional[Any] = None) -> tuple[Any, Any]:
    """``Column.__arrow_c_array__`` (a host copy for CUDA data)."""
    host, casted = _host_column(col, requested_schema)
    if casted is not None:
        return casted.__arrow_c_array__()
    a = cd.ArrowArray()
    _fill_column_array(a, host)
    return column_c_schema(host), cd.new_capsule(a, cd.ARRAY_CAPSULE)


def column_c_stream(col: Column, requested_schema: Optional[Any] = None) -> Any:
    """``Column.__arrow_c_stream__``: a one-chunk stream of the column (a host copy for CUDA data)."""
    host, casted = _host_column(col, requested_schema)
    if casted is not None:
        return pa.chunked_array([casted]).__arrow_c_stream__()
    return cd.stream_capsule(partial(_fill_column_schema, dtype=host.dtype, name=""),
                             [partial(_fill_column_array, col=host)])


def column_c_device_array(col: Column, requested_schema: Optional[Any] = None, **kwargs: Any) -> tuple[Any, Any]:
    """``Column.__arrow_c_device_array__``: the column on its own device, no copy."""
    _check_kwargs(kwargs)
    target = _requested_type(requested_schema)
    if target is not None and target != col.dtype:
        if not col.device.is_cuda:
            try:
                return col.to_arrow().cast(target, safe=True).__arrow_c_device_array__()
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ValueError(f"could not cast {col.dtype} to requested type {target}: {exc}") from None
        col = _cast_column(col, target, "<column>")
    return column_c_schema(col), _device_array_capsule(partial(_fill_column_array, col=col), col.device, [col])
