"""Arrow -> gpuframe: :func:`from_arrow` and the import of Arrow C device arrays.

pyarrow objects and CPU capsules (``__arrow_c_array__``, ``__arrow_c_stream__``, and
``__arrow_c_device_array__`` with CPU memory) go through pyarrow's importers, which wrap the
producer's memory without copying. A CUDA ``ArrowDeviceArray`` (which pyarrow's CPU-only wheels
refuse) is parsed here with ctypes (:mod:`gpuframe.interop.arrow_c_abi`): its structure is checked
before any buffer is wrapped, then its device pointers are wrapped as they are (CuPy
``UnownedMemory``); the producer's release callback runs when the last imported buffer dies. Under
the CUDA simulator the addresses are mapped back to the simulated buffers this process exported
(:mod:`gpuframe.interop.arrow_cudasim`).
"""
from __future__ import annotations

import ctypes
from typing import Any, Callable, Optional

import numpy as np
import pyarrow as pa

from ..core import memory
from ..core.buffer import Buffer
from ..core.column import Column
from ..core.device import Device, DeviceLike, as_device, cudasim_enabled, require_cuda
from ..core.dtypes import Layout, check_supported, layout_of, offsets_dtype, physical_numpy_dtype
from ..core.table import Table
from ..core.validate import check_column
from . import arrow_c_abi as cd
from .arrow_cudasim import sim_wrapper

__all__ = ["from_arrow", "import_device_capsules", "import_device_columns"]

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
    wrap = sim_wrapper(device, imported) if cudasim_enabled() else _cupy_wrapper(device, imported)
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
