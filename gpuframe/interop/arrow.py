"""Arrow interop: pyarrow objects and the Arrow PyCapsule protocol (C data, C stream and C device
interface), in both directions.

Export (``Column``/``Table`` ``__arrow_c_schema__``, ``__arrow_c_array__``, ``__arrow_c_stream__``,
``__arrow_c_device_array__``): the structs are built by :mod:`gpuframe.interop.arrow_c_abi` and point at
our buffers without copying; the capsule (and, once moved, the struct's release callback) keeps the
buffers alive.

- CPU data: the consumer sees the very same addresses as ``Buffer.ptr`` (with ``offset`` = the
  column's Arrow offset), for all three protocols.
- CUDA data: ``__arrow_c_device_array__`` exports device pointers with ``device_type`` 2 (CUDA),
  ``device_id`` the GPU ordinal and ``sync_event`` pointing at a ``cudaEvent_t`` recorded on the
  current CuPy stream (the consumer waits on it before reading). ``__arrow_c_array__`` and
  ``__arrow_c_stream__`` are CPU interfaces: for CUDA data they export a host copy of the
  columns' slices.
- Under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) a "CUDA" buffer is host memory owned by a
  numba ``FakeCUDAArray``: the device array is exported with ``device_type`` 2, ``device_id`` 0,
  the simulated buffers' (host) addresses and ``sync_event`` NULL (there is no stream to wait on).
  :func:`from_arrow` imports such a struct back by mapping each address to the simulated buffer
  that this process exported; any other address is refused, because nothing else exists there.
- ``requested_schema`` is honoured: a different field name is a rename, a different type is a
  cast (a copy; on CUDA the cast runs on the host and the result is copied back). A cast that
  pyarrow cannot do raises ``ValueError``. Extra keyword arguments of
  ``__arrow_c_device_array__`` are accepted only with the value ``None`` (the protocol's rule
  for future keywords); anything else raises ``NotImplementedError``.

Import (:func:`from_arrow`): pyarrow objects and CPU capsules go through pyarrow's importers,
which wrap the producer's memory without copying. A CUDA ``ArrowDeviceArray`` (which pyarrow's
CPU-only wheels refuse) is parsed here with ctypes and its device pointers are wrapped as they are
(CuPy ``UnownedMemory``); the producer's release callback runs when the last imported buffer dies.
"""
from __future__ import annotations

import ctypes
from functools import partial
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pyarrow as pa

from ..core import memory
from ..core.buffer import Buffer
from ..core.column import Column
from ..core.device import CPU, Device, DeviceLike, as_device, cudasim_enabled, require_cuda
from ..core.dtypes import Layout, check_supported, layout_of, offsets_dtype, physical_numpy_dtype
from ..core.table import Table
from ..core.validate import check_column
from . import arrow_c_abi as cd

__all__ = [
    "column_c_array", "column_c_device_array", "column_c_schema", "column_c_stream",
    "format_string", "from_arrow", "table_c_array", "table_c_device_array", "table_c_stream",
    "to_arrow",
]

# ============================================================================ pyarrow -> Table


def _column_from_pa(arr: pa.Array | pa.ChunkedArray, name: str, validate: bool = True) -> Column:
    """``Column.from_arrow``, after turning view strings into ``large_string``.

    Polars and DuckDB hand out ``string_view`` (and dictionaries of it); gpuframe stores strings
    as offsets + bytes, so those columns are converted: a copy.
    """
    t = arr.type
    if pa.types.is_string_view(t):
        arr = arr.cast(pa.large_string())
    elif pa.types.is_dictionary(t) and pa.types.is_string_view(t.value_type):
        arr = arr.cast(pa.dictionary(t.index_type, pa.large_string(), t.ordered))
    return Column.from_arrow(arr, name, validate=validate)


def _table_from_pa(tbl: pa.Table | pa.RecordBatch, validate: bool = True) -> Table:
    names = tbl.column_names
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"column names must be unique, got duplicates {dup}")
    return Table([(n, _column_from_pa(tbl.column(i), n, validate)) for i, n in enumerate(names)], tbl.num_rows)


def from_arrow(obj: Any, device: DeviceLike = None, *, validate: bool = True) -> Table:
    """Build a :class:`Table` from Arrow data without copying where the memory allows.

    Parameters
    ----------
    obj : pyarrow.Table, RecordBatch, Array, ChunkedArray, gpuframe Table, or any object with
        ``__arrow_c_device_array__``, ``__arrow_c_array__`` or ``__arrow_c_stream__`` (tried in
        that order). A struct-typed array (a record batch) becomes the table's columns; any other
        array becomes a one-column table named after its field (``"0"`` when it has no name).
        So does a pyarrow StructArray (without top-level nulls).
    device : "cpu", "cuda", "cuda:N" or Device, optional
        Where the result lives; by default where ``obj`` lives (CUDA for a CUDA device array).
    validate : bool, default True
        Check every imported column's contents before any kernel can read it: string offsets
        non-decreasing and within the text, dictionary indices of valid rows within the
        dictionary, the stated null count against the validity bitmap (O(rows), vectorised; on
        CUDA by kernels on the device). ``False`` skips these for a producer you trust. The
        O(1) structural checks (buffer sizes against offset and length, the buffers and children
        each type needs) always run. A gpuframe Table or Column is taken as it is.

    Returns
    -------
    Table

    Raises
    ------
    TypeError
        For an object that is none of the above, or a column of a type gpuframe does not store
        (the message names the column and its type).
    ValueError
        (:class:`gpuframe.core.validate.InvalidColumnError`) for malformed Arrow data: names the
        column, what was expected and what was found. Nothing has been read out of bounds.
    NoGPUError
        When ``device`` (or the imported data) is on CUDA and no GPU is present.

    Notes
    -----
    Columns made of several chunks (a ChunkedArray, a multi-batch stream, a pyarrow Table built
    by concatenation) are combined into one contiguous array: that is a copy. ``string_view``
    columns (Polars, DuckDB) become ``large_string``: a copy. Single-chunk columns and CPU
    capsules are otherwise wrapped without copying; CUDA device arrays are wrapped in place on
    their GPU.
    """
    if isinstance(obj, Table):
        tbl = obj
    elif isinstance(obj, (pa.Table, pa.RecordBatch)):
        tbl = _table_from_pa(obj, validate)
    elif isinstance(obj, (pa.Array, pa.ChunkedArray)) and pa.types.is_struct(obj.type):
        tbl = _table_from_pa(_struct_to_table(obj), validate)
    elif isinstance(obj, (pa.Array, pa.ChunkedArray)):
        tbl = Table([("0", _column_from_pa(obj, "0", validate))], len(obj))
    elif isinstance(obj, Column):
        tbl = Table([("0", obj)], len(obj))
    elif (hasattr(obj, "__arrow_c_device_array__") or hasattr(obj, "__arrow_c_array__")
          or hasattr(obj, "__arrow_c_stream__")):
        tbl = _from_capsule_object(obj, validate)
    else:
        raise TypeError(
            "from_arrow expects a pyarrow Table, RecordBatch, Array or ChunkedArray, or an object "
            f"with __arrow_c_device_array__/__arrow_c_array__/__arrow_c_stream__, got {type(obj).__name__}"
        )
    return tbl if device is None else tbl.to(as_device(device))


def _struct_to_table(obj: pa.Array | pa.ChunkedArray) -> pa.Table:
    """The fields of a struct array as table columns (a record batch in array form)."""
    if obj.null_count:
        raise ValueError(f"cannot make a table of a struct array with {obj.null_count} null row(s): "
                         "the rows would lose their null flag")
    chunks = obj.chunks if isinstance(obj, pa.ChunkedArray) else [obj]
    batches = [pa.RecordBatch.from_struct_array(c) for c in chunks]
    return pa.Table.from_batches(batches, schema=pa.schema(list(obj.type)))


def _from_capsule_object(obj: Any, validate: bool = True) -> Table:
    if hasattr(obj, "__arrow_c_device_array__"):
        schema_capsule, array_capsule = obj.__arrow_c_device_array__()
        return import_device_capsules(schema_capsule, array_capsule, validate=validate)
    if hasattr(obj, "__arrow_c_array__"):
        schema_capsule, array_capsule = obj.__arrow_c_array__()
        if cd.schema_format(schema_capsule) == "+s":
            return _table_from_pa(_c_import(pa.RecordBatch._import_from_c_capsule, schema_capsule, array_capsule),
                                  validate)
        name = _capsule_field_name(schema_capsule)
        arr = _c_import(pa.Array._import_from_c_capsule, schema_capsule, array_capsule)
        return Table([(name, _column_from_pa(arr, name, validate))], len(arr))
    capsule = obj.__arrow_c_stream__()
    fmt, name = _stream_schema_format(capsule)
    if fmt == "+s":
        return _table_from_pa(_c_import(lambda c: pa.RecordBatchReader._import_from_c_capsule(c).read_all(),
                                        capsule), validate)
    chunked = _c_import(pa.ChunkedArray._import_from_c_capsule, capsule)
    name = name or "0"
    return Table([(name, _column_from_pa(chunked, name, validate))], len(chunked))


def _c_import(fn: Callable[..., Any], *capsules: Any) -> Any:
    """pyarrow's C importer; its refusal of a malformed struct (``ArrowInvalid``) becomes ValueError."""
    try:
        return fn(*capsules)
    except pa.ArrowInvalid as exc:
        raise ValueError(f"malformed Arrow C data: {exc}") from None


def _capsule_field_name(schema_capsule: Any) -> str:
    s = cd.ArrowSchema.from_address(cd.capsule_pointer(schema_capsule, cd.SCHEMA_CAPSULE))
    return cd.schema_name(s) or "0"


def _stream_schema_format(capsule: Any) -> tuple[str, str]:
    """Format and name of a C stream's schema, asked through ``get_schema`` (the stream stays usable)."""
    st = cd.ArrowArrayStream.from_address(cd.capsule_pointer(capsule, cd.STREAM_CAPSULE))
    if not st.release:
        raise ValueError("the ArrowArrayStream in this capsule was already released")
    sch = cd.ArrowSchema()
    rc = st.get_schema(ctypes.pointer(st), ctypes.pointer(sch))
    if rc != 0:
        err = st.get_last_error(ctypes.pointer(st))
        msg = ctypes.string_at(err).decode("utf-8", "replace") if err else f"error code {rc}"
        raise ValueError(f"the Arrow stream's get_schema failed: {msg}")
    try:
        return ctypes.string_at(sch.format).decode("utf-8"), cd.schema_name(sch)
    finally:
        if sch.release:
            sch.release(ctypes.pointer(sch))


def to_arrow(table: Table) -> pa.Table:
    """``table.to_arrow()``: zero-copy on the CPU, a device-to-host copy on CUDA."""
    return table.to_arrow()


# ============================================================================ C device import


def import_device_capsules(schema_capsule: Any, array_capsule: Any, *, validate: bool = True) -> Table:
    """A Table from an ``(arrow_schema, arrow_device_array)`` capsule pair (CPU or CUDA).

    Both capsules are consumed (moved from). CPU arrays go through pyarrow; CUDA arrays are
    parsed here and wrapped in place. ``validate`` as in :func:`from_arrow` (the structural
    checks of the C structs always run).
    """
    columns, num_rows = import_device_columns(schema_capsule, array_capsule, validate=validate)
    return Table(columns, num_rows)


def import_device_columns(schema_capsule: Any, array_capsule: Any, *, validate: bool = True
                          ) -> tuple[list[tuple[str, Column]], int]:
    """``([(name, column), ...], num_rows)`` from a capsule pair; names are not checked for
    uniqueness (pylibcudf, for one, exports unnamed columns).

    A CUDA struct is checked before any of its buffers is wrapped: a length, offset or null
    count out of range, a buffer count or child count that does not fit the type, or a NULL
    pointer where the type needs memory raises ``ValueError`` naming the column; with
    ``validate`` (the default) the contents are then checked by kernels on the device.
    """
    device_type, device_id = cd.peek_device(array_capsule)
    struct = cd.schema_format(schema_capsule) == "+s"
    if device_type == cd.ARROW_DEVICE_CPU:
        if struct:
            rb = _c_import(pa.RecordBatch._import_from_c_device_capsule, schema_capsule, array_capsule)
            return ([(n, _column_from_pa(rb.column(i), n, validate)) for i, n in enumerate(rb.schema.names)],
                    rb.num_rows)
        name = _capsule_field_name(schema_capsule)
        arr = _c_import(pa.Array._import_from_c_device_capsule, schema_capsule, array_capsule)
        return [(name, _column_from_pa(arr, name, validate))], len(arr)
    if device_type not in (cd.ARROW_DEVICE_CUDA, cd.ARROW_DEVICE_CUDA_MANAGED):
        raise ValueError(f"cannot import an ArrowDeviceArray with device_type {device_type}: gpuframe "
                         f"reads CPU ({cd.ARROW_DEVICE_CPU}) and CUDA ({cd.ARROW_DEVICE_CUDA}) memory")
    device = Device("cuda", device_id)
    require_cuda(device)
    field = _c_import(pa.Field._import_from_c_capsule, schema_capsule)
    imported = cd.ImportedDeviceArray(array_capsule)
    arr = imported.array
    if struct:
        cd.check_node(arr, "the table (struct array)", n_buffers=1, n_children=len(field.type))
        if cd.buffer_address(arr, 0) and arr.null_count != 0:
            raise ValueError("cannot import a struct array with top-level nulls as a table: rows "
                             "would lose their null flag")
        for i, f in enumerate(field.type):
            _check_c_tree(cd.child(arr, i), f.type, f.name)
    else:
        _check_c_tree(arr, field.type, field.name or "0")
    _wait_for_producer(imported, device)
    wrap = _sim_wrapper(device, imported) if cudasim_enabled() else _cupy_wrapper(device, imported)
    if struct:
        # a struct's offset and length select the rows of every child (Arrow C data interface)
        cols = [(f.name, _column_from_c(cd.child(arr, i), f.type, f.name, int(arr.offset), device, wrap,
                                        rows=int(arr.length)))
                for i, f in enumerate(field.type)]
        num_rows = int(arr.length)
    else:
        name = field.name or "0"
        cols = [(name, _column_from_c(arr, field.type, name, 0, device, wrap))]
        num_rows = int(arr.length)
    for name, col in cols:
        check_column(col, name, validate=validate)
    return cols, num_rows


def _check_c_tree(arr: cd.ArrowArray, dtype: pa.DataType, name: str) -> None:
    """Structural checks of one column's ArrowArray node (and its dictionary) before any buffer
    is wrapped or read."""
    check_supported(dtype, name)
    lay = layout_of(dtype)
    cd.check_node(arr, f"column {name!r} of type {dtype}", n_buffers=3 if lay == Layout.STRING else 2,
                  n_children=0, dictionary=lay == Layout.DICTIONARY,
                  required=(1, 2) if lay == Layout.STRING else (1,))
    if lay == Layout.DICTIONARY:
        _check_c_tree(arr.dictionary.contents, dtype.value_type, f"{name} (dictionary)")


Wrapper = Callable[[int, int, np.dtype], Buffer]


def _wait_for_producer(imported: cd.ImportedDeviceArray, device: Device) -> None:
    ev_ptr = imported.struct.sync_event
    if not ev_ptr or cudasim_enabled():
        return
    import cupy as cp

    event = ctypes.c_void_p.from_address(ev_ptr).value
    if event:
        with cp.cuda.Device(device.id):
            cp.cuda.runtime.streamWaitEvent(cp.cuda.get_current_stream().ptr, event, 0)


def _cupy_wrapper(device: Device, imported: cd.ImportedDeviceArray) -> Wrapper:
    import cupy as cp

    def wrap(ptr: int, nbytes: int, dtype: np.dtype) -> Buffer:
        dtype = np.dtype(dtype)
        with cp.cuda.Device(device.id):
            if nbytes == 0 or not ptr:
                if nbytes:
                    raise ValueError(f"ArrowDeviceArray has a NULL buffer where {nbytes} bytes are needed")
                return Buffer(cp.empty(0, dtype=dtype), device)
            cd.check_device_range(ptr, nbytes, device.id)
            mem = cp.cuda.UnownedMemory(ptr, nbytes, imported, device.id)
            arr = cp.ndarray((nbytes // dtype.itemsize,), dtype, cp.cuda.MemoryPointer(mem, 0))
        return Buffer(arr, device, owner=imported)

    return wrap


def _sim_exported_buffers() -> dict[int, Any]:
    """Simulated CUDA arrays that this process exported and the consumer has not released yet."""
    found: dict[int, Any] = {}
    for keep in list(cd._STATES.values()):
        for obj in keep:
            if isinstance(obj, Column):
                for buf in (obj.data, obj.validity, obj.offsets):
                    if buf is not None and buf.device.is_cuda:
                        found[buf.ptr] = buf.array
    return found


def _sim_wrapper(device: Device, imported: cd.ImportedDeviceArray) -> Wrapper:
    from numba import cuda
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

    known = _sim_exported_buffers()

    def wrap(ptr: int, nbytes: int, dtype: np.dtype) -> Buffer:
        dtype = np.dtype(dtype)
        src = known.get(ptr)
        if src is None and nbytes == 0:
            return Buffer(cuda.device_array(0, dtype=dtype), device, owner=imported)
        if src is None:
            raise ValueError(
                f"under the CUDA simulator only device arrays exported by gpuframe in this process "
                f"can be imported; address 0x{ptr:x} is not one of them")
        raw = src._ary.view(np.uint8)
        if raw.nbytes < nbytes:
            raise ValueError(f"ArrowDeviceArray buffer at 0x{ptr:x} needs {nbytes} bytes, the exported "
                             f"buffer has {raw.nbytes}")
        return Buffer(FakeCUDAArray(raw[:nbytes].view(dtype)), device, owner=imported)

    return wrap


def _column_from_c(arr: cd.ArrowArray, dtype: pa.DataType, name: str, parent_offset: int,
                   device: Device, wrap: Wrapper, rows: Optional[int] = None) -> Column:
    """One column from an ArrowArray node; ``rows`` (with ``parent_offset``) is the struct
    parent's window when ``arr`` is a child of a record batch."""
    check_supported(dtype, name)
    lay = layout_of(dtype)
    n = int(arr.length) if rows is None else int(rows)
    off = int(arr.offset) + int(parent_offset)
    if parent_offset + n > int(arr.length):
        raise ValueError(f"column {name!r}: the struct selects rows [{parent_offset}, {parent_offset + n}) "
                         f"but the child array has {arr.length}")
    vptr = cd.buffer_address(arr, 0)
    validity = None
    null_count = 0
    if vptr and arr.null_count != 0:
        validity = wrap(vptr, (off + n + 7) // 8, np.dtype(np.uint8))
        # the child's count covers its own rows; a narrower window is counted on demand
        same_rows = parent_offset == 0 and n == int(arr.length)
        null_count = int(arr.null_count) if same_rows else -1
    offsets = None
    dictionary = None
    if lay == Layout.BOOL:
        data = wrap(cd.buffer_address(arr, 1), (off + n + 7) // 8, np.dtype(np.uint8))
    elif lay == Layout.STRING:
        odt = offsets_dtype(dtype)
        optr = cd.buffer_address(arr, 1)
        if not optr and n == 0:
            offsets = Buffer(memory.zeros(off + 1, odt, device), device)
        else:
            offsets = wrap(optr, (off + n + 1) * odt.itemsize, odt)
        nchars = int(memory.to_host(offsets.array[off + n:off + n + 1])[0])
        if nchars < 0:
            raise ValueError(f"column {name!r}: the last string offset (the text size) must be >= 0, got {nchars}")
        data = wrap(cd.buffer_address(arr, 2), nchars, np.dtype(np.uint8))
    else:
        npdt = physical_numpy_dtype(dtype)
        data = wrap(cd.buffer_address(arr, 1), (off + n) * npdt.itemsize, npdt)
        if lay == Layout.DICTIONARY:
            if not arr.dictionary:
                raise ValueError(f"column {name!r} is dictionary-encoded but its ArrowArray has no dictionary")
            dictionary = _column_from_c(arr.dictionary.contents, dtype.value_type, f"{name} (dictionary)", 0,
                                        device, wrap)
    return Column(dtype, n, data, validity, offsets, dictionary, off, null_count)


# ============================================================================ export


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


def _record_sync_event(device: Device) -> Optional[tuple[Any, ctypes.c_void_p]]:
    """A cudaEvent recorded on the current CuPy stream, and the ``cudaEvent_t`` it is stored in.

    ``None`` under the simulator (no stream exists: the data is ready when the kernel returns).
    """
    if cudasim_enabled():
        return None
    import cupy as cp

    with cp.cuda.Device(device.id):
        event = cp.cuda.Event(block=False, disable_timing=True)
        event.record(cp.cuda.get_current_stream())
    return event, ctypes.c_void_p(event.ptr)


def _device_array_capsule(fill: Callable[[cd.ArrowArray], None], device: Device) -> Any:
    d = cd.ArrowDeviceArray()
    fill(d.array)
    if device.is_cuda:
        d.device_type = cd.ARROW_DEVICE_CUDA
        d.device_id = device.id
        sync = _record_sync_event(device)
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
    return s, _device_array_capsule(partial(_fill_table_array, columns=cols, num_rows=table.num_rows), device)


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
    return column_c_schema(col), _device_array_capsule(partial(_fill_column_array, col=col), col.device)
