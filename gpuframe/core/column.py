"""Column: one Arrow-layout array (validity bitmap, offsets, data, dictionary) on a device."""
from __future__ import annotations

from typing import Any, Iterator, Optional

import numpy as np
import pyarrow as pa

from . import memory, streams
from .buffer import Buffer
from .device import CPU, Device, DeviceLike, as_device
from .dtypes import Layout, check_supported, layout_of, offsets_dtype, physical_numpy_dtype


def _np_from_pa_buffer(buf: pa.Buffer, dtype: np.dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    return np.frombuffer(buf, dtype=dtype, count=buf.size // dtype.itemsize)


def _bits_to_bytes(bitmap: np.ndarray, bit_offset: int, length: int) -> np.ndarray:
    """Unpack an LSB-first bitmap slice into one uint8 (0/1) per element (host)."""
    if length == 0:
        return np.zeros(0, dtype=np.uint8)
    first = bit_offset // 8
    last = (bit_offset + length + 7) // 8
    bits = np.unpackbits(bitmap[first:last], bitorder="little")
    start = bit_offset - first * 8
    return bits[start:start + length]


def pack_bits(values: np.ndarray) -> np.ndarray:
    """Pack a host array of 0/1 (or bool) into an LSB-first Arrow bitmap."""
    return np.packbits(np.asarray(values, dtype=bool), bitorder="little")



def _combine_fixed(arr: pa.ChunkedArray) -> pa.Array:
    """``arr.combine_chunks()``; the chunks of a large fixed-width array without nulls (a
    Parquet file's row groups) copied on every thread into host-allocator memory
    (:func:`gpuframe.backends.cpu.select.concat_arrays`) instead of on one."""
    from gpuframe.backends.cpu.select import PARALLEL_CONCAT_BYTES, concat_arrays

    dtype = arr.type
    try:
        npdt = np.dtype(physical_numpy_dtype(dtype)) if layout_of(dtype) == Layout.FIXED else None
    except TypeError:        # a type gpuframe does not store: check_supported says so next
        npdt = None
    if npdt is None or arr.null_count or len(arr) * npdt.itemsize < PARALLEL_CONCAT_BYTES:
        return arr.combine_chunks()
    parts = [np.frombuffer(c.buffers()[1], npdt)[c.offset:c.offset + len(c)] for c in arr.chunks]
    data = concat_arrays(parts, npdt)
    return pa.Array.from_buffers(dtype, len(data), [None, pa.py_buffer(data)])

class Column:
    """An Arrow-layout column on a device.

    Buffers are shared, never copied, by slicing; ``offset`` is the Arrow element offset
    into every buffer (bits for bitmaps, elements for data and offsets).

    Parameters
    ----------
    dtype : pyarrow.DataType
    length : int
    data : Buffer or None
        Values (FIXED), bits (BOOL), utf8 bytes (STRING) or indices (DICTIONARY).
    validity : Buffer or None
        LSB-first bitmap; ``None`` means no nulls.
    offsets : Buffer or None
        STRING only: ``length + offset + 1`` int32/int64 offsets into ``data``.
    dictionary : Column or None
        DICTIONARY only: the dictionary values.
    offset : int
    null_count : int
        ``-1`` when not known yet (computed on demand).
    """

    __slots__ = ("dtype", "length", "data", "validity", "offsets", "dictionary", "offset", "_null_count")

    def __init__(
        self,
        dtype: pa.DataType,
        length: int,
        data: Optional[Buffer],
        validity: Optional[Buffer] = None,
        offsets: Optional[Buffer] = None,
        dictionary: Optional["Column"] = None,
        offset: int = 0,
        null_count: int = -1,
    ) -> None:
        self.dtype = dtype
        self.length = int(length)
        self.data = data
        self.validity = validity
        self.offsets = offsets
        self.dictionary = dictionary
        self.offset = int(offset)
        self._null_count = 0 if validity is None else int(null_count)

    # ------------------------------------------------------------------ basic properties
    @property
    def layout(self) -> Layout:
        return layout_of(self.dtype)

    @property
    def device(self) -> Device:
        for buf in (self.data, self.offsets, self.validity):
            if buf is not None:
                return buf.device
        if self.dictionary is not None:
            return self.dictionary.device
        return CPU

    def buffers(self) -> Iterator[Buffer]:
        """Every buffer the column references: data, offsets, validity, then its dictionary's."""
        for buf in (self.data, self.offsets, self.validity):
            if buf is not None:
                yield buf
        if self.dictionary is not None:
            yield from self.dictionary.buffers()

    def __len__(self) -> int:
        return self.length

    @property
    def null_count(self) -> int:
        if self._null_count < 0:
            if self.validity is None:
                self._null_count = 0
            elif self.device.is_cuda:
                self._null_count = self.length - _device_set_bits(self.validity.array, self.offset, self.length,
                                                                  self.device)
            else:
                valid = self.validity_bytes()
                self._null_count = int(self.length - int(valid.sum()))
        return self._null_count

    @property
    def has_nulls(self) -> bool:
        return self.validity is not None and self.null_count > 0

    @property
    def nbytes(self) -> int:
        """Bytes referenced by this column's slice (whole buffers for string data)."""
        total = 0
        lay = self.layout
        if self.validity is not None:
            total += (self.length + 7) // 8
        if lay == Layout.FIXED or lay == Layout.DICTIONARY:
            total += self.length * self.data.dtype.itemsize
        elif lay == Layout.BOOL:
            total += (self.length + 7) // 8
        else:
            offs = self.offsets_view()
            total += (self.length + 1) * offs.dtype.itemsize
            if self.length:
                first = int(memory.to_host(offs[0:1])[0])
                last = int(memory.to_host(offs[self.length:self.length + 1])[0])
                total += last - first
        if self.dictionary is not None:
            total += self.dictionary.nbytes
        return total

    # ------------------------------------------------------------------ kernel-facing views
    def values(self) -> Any:
        """Typed device array of the ``length`` values (FIXED and DICTIONARY indices)."""
        if self.layout not in (Layout.FIXED, Layout.DICTIONARY):
            raise TypeError(f"values() needs a fixed-width column, this one is {self.dtype}")
        return self.data.array[self.offset:self.offset + self.length]

    def offsets_view(self) -> Any:
        """The ``length + 1`` string offsets of this slice (absolute into ``data``)."""
        if self.layout != Layout.STRING:
            raise TypeError(f"offsets_view() needs a string column, this one is {self.dtype}")
        return self.offsets.array[self.offset:self.offset + self.length + 1]

    def chars(self) -> Any:
        """The whole utf8 byte buffer of a string column (index it with ``offsets_view``)."""
        return self.data.array

    def validity_bytes(self) -> Any:
        """One uint8 (1 valid, 0 null) per row on the column's device, or ``None`` without nulls."""
        if self.validity is None:
            return None
        return self._unpack_bits(self.validity)

    def bool_bytes(self) -> Any:
        """One uint8 (0/1) per row for a BOOL column, on the column's device."""
        if self.layout != Layout.BOOL:
            raise TypeError(f"bool_bytes() needs a bool column, this one is {self.dtype}")
        return self._unpack_bits(self.data)

    def _unpack_bits(self, bitmap: Buffer) -> Any:
        if self.device.is_cuda:
            return _device_unpack_bits(bitmap.array, self.offset, self.length, self.device)
        first = self.offset // 8
        last = (self.offset + self.length + 7) // 8
        host = _bits_to_bytes(memory.to_host(bitmap.array[first:last]), self.offset - first * 8, self.length)
        return memory.to_device(np.ascontiguousarray(host), self.device)

    # ------------------------------------------------------------------ structural ops
    def slice(self, offset: int, length: int) -> "Column":
        """Zero-copy slice of rows ``[offset, offset + length)``."""
        if offset < 0 or length < 0 or offset + length > self.length:
            raise IndexError(f"slice [{offset}, {offset + length}) is outside a column of {self.length} rows")
        nc = -1 if self.validity is not None else 0
        if self.validity is not None and offset == 0 and length == self.length:
            nc = self._null_count
        return Column(self.dtype, length, self.data, self.validity, self.offsets, self.dictionary,
                      self.offset + offset, nc)

    def to(self, device: DeviceLike) -> "Column":
        """Copy this column to ``device`` (the same object when already there).

        Only the bytes of this slice travel: the copy starts at the byte that holds bit
        ``offset`` (so the result keeps ``offset % 8``) and string offsets are rebased onto
        the copied characters. A dictionary travels whole.
        """
        dev = as_device(device)
        if dev == self.device:
            return self
        src = self.device
        if src.is_cuda and streams.current(src) is None:
            # outside an operation: copy on the stream the buffers were written on, after their
            # producer's kernels (inside one, on the operation's stream)
            with streams.operation(streams.ready_stream((b.stream for b in self.buffers()), src), src):
                return self._to(dev)
        return self._to(dev)

    def _to(self, dev: Device) -> "Column":
        new_off = self.offset % 8
        start = self.offset - new_off
        end = self.offset + self.length

        def move(arr: Any) -> Buffer:
            return Buffer(memory.to_device(arr, dev), dev)

        def bits(buf: Optional[Buffer]) -> Optional[Buffer]:
            return None if buf is None else move(buf.array[start // 8:(end + 7) // 8])

        lay = self.layout
        offsets = None
        if lay == Layout.BOOL:
            data = bits(self.data)
        elif lay == Layout.STRING:
            offs = memory.to_host(self.offsets.array[start:end + 1])
            lo, hi = int(offs[0]), int(offs[-1])
            offsets = move(np.ascontiguousarray(offs - offs.dtype.type(lo)))
            data = move(self.data.array[lo:hi])
        else:
            data = move(self.data.array[start:end])
        dictionary = None if self.dictionary is None else self.dictionary.to(dev)
        return Column(self.dtype, self.length, data, bits(self.validity), offsets,
                      dictionary, new_off, self._null_count)

    # ------------------------------------------------------------------ arrow
    @classmethod
    def from_arrow(cls, arr: pa.Array, name: str = "<column>", *, validate: bool = True) -> "Column":
        """Wrap a CPU pyarrow Array without copying its buffers.

        A ChunkedArray of one chunk is wrapped the same way; several chunks are first combined
        into one array, which is a copy.

        Parameters
        ----------
        arr : pyarrow.Array or pyarrow.ChunkedArray
        name : str
            The column's name, used in error messages.
        validate : bool, default True
            Check the contents (string offsets non-decreasing and within the text, dictionary
            indices of valid rows within the dictionary, the null count against the bitmap);
            O(rows), vectorised. ``False`` skips these for a producer you trust; the O(1)
            structural checks (buffer sizes against offset and length, buffers present) always
            run (see :mod:`gpuframe.core.validate`).

        Raises
        ------
        TypeError
            For a type gpuframe does not store.
        ValueError
            (:class:`gpuframe.core.validate.InvalidColumnError`) for a malformed array, naming the
            column, what was expected and what was found.
        """
        from .validate import check_column

        return check_column(cls._wrap_arrow(arr, name), name, validate=validate)

    @classmethod
    def _wrap_arrow(cls, arr: pa.Array, name: str) -> "Column":
        """``from_arrow`` without the checks (the caller runs them)."""
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.chunk(0) if arr.num_chunks == 1 else (
                _combine_fixed(arr) if arr.num_chunks else pa.array([], type=arr.type))
        if not isinstance(arr, pa.Array):
            raise TypeError(f"column {name!r}: expected a pyarrow Array or ChunkedArray, got {type(arr).__name__}")
        dtype = arr.type
        check_supported(dtype, name)
        lay = layout_of(dtype)
        bufs = arr.buffers()
        want = 3 if lay == Layout.STRING else 2
        if len(bufs) != want:
            raise ValueError(f"column {name!r}: a {dtype} array has {want} buffers, got {len(bufs)}")
        validity = None
        if bufs[0] is None and lay != Layout.DICTIONARY and arr.null_count > 0:
            raise ValueError(f"column {name!r}: null_count is {arr.null_count} but the array has no validity "
                             f"bitmap (expected a bitmap, or null_count 0)")
        if bufs[0] is not None and arr.null_count != 0:
            validity = Buffer(_np_from_pa_buffer(bufs[0], np.uint8), CPU, bufs[0])
        if lay == Layout.DICTIONARY:
            idx = arr.indices
            ib = idx.buffers()
            if ib[1] is None and len(arr):
                raise ValueError(f"column {name!r}: the dictionary indices buffer is missing "
                                 f"(expected {idx.offset + len(idx)} indices)")
            if ib[0] is None and idx.null_count > 0:
                raise ValueError(f"column {name!r}: null_count is {idx.null_count} but the indices have no "
                                 f"validity bitmap (expected a bitmap, or null_count 0)")
            ib1 = ib[1] if ib[1] is not None else pa.py_buffer(b"")
            data = Buffer(_np_from_pa_buffer(ib1, physical_numpy_dtype(dtype)), CPU, ib1)
            if ib[0] is not None and idx.null_count != 0:
                validity = Buffer(_np_from_pa_buffer(ib[0], np.uint8), CPU, ib[0])
            else:
                validity = None
            dictionary = cls._wrap_arrow(arr.dictionary, f"{name} (dictionary)")
            return cls(dtype, len(arr), data, validity, None, dictionary, idx.offset, idx.null_count)
        if lay == Layout.STRING:
            odt = offsets_dtype(dtype)
            offsets = Buffer(_np_from_pa_buffer(bufs[1], odt), CPU, bufs[1]) if bufs[1] is not None else None
            chars_buf = bufs[2] if bufs[2] is not None else pa.py_buffer(b"")
            data = Buffer(_np_from_pa_buffer(chars_buf, np.uint8), CPU, chars_buf)
            if len(arr) == 0 and (bufs[1] is None or bufs[1].size < (arr.offset + 1) * odt.itemsize):
                # an empty array may come without offsets
                offsets = Buffer(np.zeros(arr.offset + 1, dtype=odt), CPU)
            return cls(dtype, len(arr), data, validity, offsets, None, arr.offset, arr.null_count)
        if lay == Layout.BOOL:
            bb = bufs[1] if bufs[1] is not None else pa.py_buffer(b"")
            data = Buffer(_np_from_pa_buffer(bb, np.uint8), CPU, bb)
            return cls(dtype, len(arr), data, validity, None, None, arr.offset, arr.null_count)
        npdt = physical_numpy_dtype(dtype)
        db = bufs[1] if bufs[1] is not None else pa.py_buffer(b"")
        data = Buffer(_np_from_pa_buffer(db, npdt), CPU, db)
        return cls(dtype, len(arr), data, validity, None, None, arr.offset, arr.null_count)

    def to_arrow(self) -> pa.Array:
        """A pyarrow Array; zero-copy on the CPU, a device-to-host copy on CUDA."""
        col = self if not self.device.is_cuda else self.to(CPU)
        return col._to_arrow_cpu()

    def _to_arrow_cpu(self) -> pa.Array:
        def pb(buf: Optional[Buffer]) -> Optional[pa.Buffer]:
            if buf is None:
                return None
            arr = buf.array
            if isinstance(buf.owner, pa.Buffer) and buf.owner.address == arr.ctypes.data:
                return buf.owner
            return pa.foreign_buffer(arr.ctypes.data, arr.nbytes, base=arr)

        nc = self.null_count if self.validity is not None else 0
        lay = self.layout
        if lay == Layout.DICTIONARY:
            idx = pa.Array.from_buffers(self.dtype.index_type, self.length,
                                        [pb(self.validity), pb(self.data)], nc, self.offset)
            return pa.DictionaryArray.from_arrays(idx, self.dictionary._to_arrow_cpu(), safe=False,
                                                  ordered=self.dtype.ordered)
        if lay == Layout.STRING:
            return pa.Array.from_buffers(self.dtype, self.length,
                                         [pb(self.validity), pb(self.offsets), pb(self.data)], nc, self.offset)
        return pa.Array.from_buffers(self.dtype, self.length, [pb(self.validity), pb(self.data)], nc, self.offset)

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_numpy(cls, values: np.ndarray, dtype: Optional[pa.DataType] = None,
                   valid: Optional[np.ndarray] = None, device: DeviceLike = None) -> "Column":
        """A fixed-width or bool column over a 1-D host numpy array (no copy on the CPU).

        Parameters
        ----------
        values : numpy.ndarray
            1-D; its dtype must be the physical dtype of ``dtype`` (``int64`` for a timestamp,
            ``int32`` for date32, ...; datetime64/timedelta64 of that width are taken as their
            integer counts). Bool columns accept any 0/1 values (they are packed into bits).
        dtype : pyarrow.DataType, optional
            Default: inferred from ``values.dtype``.
        valid : array of bool, optional
            One flag per value (False = null).
        device : optional
            Where the column lives (default: the CPU).
        """
        values = np.ascontiguousarray(values)
        if values.ndim != 1:
            raise ValueError(f"values must be 1-D, got shape {values.shape}")
        if dtype is None:
            dtype = pa.from_numpy_dtype(values.dtype)
        check_supported(dtype, "<from_numpy>")
        lay = layout_of(dtype)
        if lay not in (Layout.FIXED, Layout.BOOL):
            raise TypeError(f"from_numpy builds fixed-width and bool columns, got dtype {dtype}")
        if lay == Layout.FIXED:
            phys = physical_numpy_dtype(dtype)
            if values.dtype.kind in "mM" and values.dtype.itemsize == phys.itemsize:
                values = values.view(phys)
            if values.dtype != phys:
                # reinterpreting the bytes would give wrong values, silently
                raise TypeError(f"a {dtype} column stores {phys} values, got values.dtype={values.dtype}")
        validity = None
        nc = 0
        if valid is not None:
            valid = np.asarray(valid, dtype=bool)
            if valid.shape != values.shape:
                raise ValueError(f"valid must have one flag per value ({len(values)}), got shape {valid.shape}")
            nc = int(len(valid) - valid.sum())
            if nc:
                validity = Buffer(pack_bits(valid), CPU)
            else:
                nc = 0
        n = len(values)
        if pa.types.is_boolean(dtype):
            values = pack_bits(values)
        col = cls(dtype, n, Buffer(values, CPU), validity, None, None, 0, nc)
        return col.to(device) if device is not None else col

    def to_pylist(self) -> list:
        return self.to_arrow().to_pylist()

    # ------------------------------------------------------------------ protocols (see gpuframe.interop)
    def __arrow_c_schema__(self) -> Any:
        from ..interop.arrow import column_c_schema

        return column_c_schema(self)

    def __arrow_c_array__(self, requested_schema: Any = None) -> Any:
        from ..interop.arrow import column_c_array

        return column_c_array(self, requested_schema)

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        from ..interop.arrow import column_c_stream

        return column_c_stream(self, requested_schema)

    def __arrow_c_device_array__(self, requested_schema: Any = None, **kwargs: Any) -> Any:
        from ..interop.arrow import column_c_device_array

        return column_c_device_array(self, requested_schema, **kwargs)

    def __dlpack__(self, *, stream: Any = None, max_version: Any = None, dl_device: Any = None,
                   copy: Optional[bool] = None) -> Any:
        from ..interop.dlpack import column_dlpack

        return column_dlpack(self, stream=stream, max_version=max_version, dl_device=dl_device, copy=copy)

    def __dlpack_device__(self) -> tuple[int, int]:
        from ..interop.dlpack import column_dlpack_device

        return column_dlpack_device(self)

    def __repr__(self) -> str:
        return f"Column({self.dtype}, length={self.length}, nulls={self.null_count}, device={self.device})"


# ---------------------------------------------------------------------- bitmaps on a CUDA device
def _device_launch(kernel: Any, n: int, device: Device, *args: Any, grid_stride: bool = False) -> None:
    from .device import cudasim_enabled, launch_context
    from .streams import launch_kernel

    threads = 64 if cudasim_enabled() else 256
    blocks = max(1, (n + threads - 1) // threads)
    if grid_stride:
        blocks = min(blocks, 1024)
    with launch_context(device):
        launch_kernel(kernel, blocks, threads, args, device)


def _device_unpack_bits(bits: Any, bit_off: int, n: int, device: Device) -> Any:
    """One uint8 (0/1) per row of an LSB-first bitmap, unpacked by a kernel on ``device``."""
    from ..kernels.gather import cuda_kernels

    out = memory.empty(n, np.uint8, device)
    if n:
        _device_launch(cuda_kernels()["unpack_bits"], n, device, bits, np.int64(bit_off), out)
    return out


def _device_set_bits(bits: Any, bit_off: int, n: int, device: Device) -> int:
    """The number of set bits among ``n`` bits from ``bit_off``, counted on ``device`` (one
    8-byte scalar comes back)."""
    from ..kernels.checks import cuda_kernels

    if n == 0:
        return 0
    out = memory.zeros(1, np.int64, device)
    _device_launch(cuda_kernels()["set_bits"], n, device, bits, np.int64(bit_off), np.int64(n), out,
                   grid_stride=True)
    return int(memory.to_host(out)[0])
