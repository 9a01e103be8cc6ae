"""Checks that a :class:`~gpuframe.core.column.Column` is safe to hand to a kernel.

Every kernel trusts its column's layout: string offsets index the text buffer, dictionary indices
index the dictionary, buffers hold ``offset + length`` elements. Data that comes from outside
(pyarrow arrays, the Arrow C data and C device interfaces, Parquet and pandas through pyarrow,
tables received from peers) is checked here before any kernel sees it, so that a malformed input
raises :class:`InvalidColumnError` (a ``ValueError``) instead of reading out of bounds (a
segfault on the CPU, a poisoned context on a GPU).

Two levels:

* :func:`check_structure` (always, O(1) per column): non-negative length/offset, a null count
  in ``[-1, length]``, the buffers each layout needs, present, of the right dtype and large enough
  for ``offset + length`` rows (bitmaps: bits; string offsets: ``offset + length + 1`` entries),
  a dictionary of the declared value type.
* :func:`check_contents` (by default; ``validate=False`` on the import functions skips it,
  O(rows)): string offsets non-decreasing, the first ``>= 0`` and the last within the text
  buffer; dictionary indices of valid rows in ``[0, len(dictionary))`` (a null row's index may
  hold anything, as Arrow allows); a stated null count equal to the validity bitmap's.

CPU columns are checked with numpy in chunks (no allocation proportional to the rows); CUDA
columns on the device, returning scalars only (nothing proportional to the rows is copied to the
host): CuPy reductions on a real GPU, ``numba.cuda`` grid-stride kernels under the CUDA
simulator (which has no CuPy).

This module imports only ``gpuframe.core``.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pyarrow as pa

from ..errors import InvalidColumnError  # noqa: F401  (re-exported: defined in the leaf module)
from . import memory
from .column import Column
from .device import cudasim_enabled, launch_context
from .streams import launch_kernel
from .dtypes import Layout, is_supported, layout_of, offsets_dtype, physical_numpy_dtype

__all__ = ["InvalidColumnError", "check_column", "check_contents", "check_structure", "check_table",
           "count_set_bits"]

_CHUNK = 1 << 18  # elements per numpy step: keeps temporaries in cache, nothing O(rows) allocated


def _fail(name: str, problem: str) -> None:
    raise InvalidColumnError(name, problem)


# =============================================================================== structure
def _check_buffer(name: str, what: str, buf: Any, dtype: np.dtype, need: int, unit: str) -> None:
    if buf is None:
        if need > 0:
            _fail(name, f"{what} buffer is missing: expected {need} {unit}, got none")
        return
    got_dt = np.dtype(buf.dtype)
    if got_dt != dtype:
        _fail(name, f"{what} buffer has dtype {got_dt}, expected {dtype}")
    shape = getattr(buf.array, "shape", None)
    if shape is None or len(shape) != 1:
        _fail(name, f"{what} buffer must be 1-D, got shape {shape}")
    if buf.size < need:
        _fail(name, f"{what} buffer is too small: expected at least {need} {unit}, got {buf.size}")


def check_structure(col: Column, name: str = "<column>") -> None:
    """O(1) layout checks (see the module docstring); raises :class:`InvalidColumnError`."""
    dtype = col.dtype
    if not isinstance(dtype, pa.DataType) or not is_supported(dtype):
        _fail(name, f"unsupported type {dtype}")
    n, off, nc = col.length, col.offset, col._null_count
    if n < 0:
        _fail(name, f"length must be >= 0, got {n}")
    if off < 0:
        _fail(name, f"offset must be >= 0, got {off}")
    if nc < -1 or nc > n:
        _fail(name, f"null_count must be in [-1, {n}] (length {n}), got {nc}")
    end = off + n if n else 0  # an empty slice reads nothing: its buffers may be empty
    bits = (end + 7) // 8
    u8 = np.dtype(np.uint8)
    if col.validity is not None:
        _check_buffer(name, "validity", col.validity, u8, bits, f"bytes for {end} bits (offset {off} + length {n})")
    lay = layout_of(dtype)
    if lay == Layout.BOOL:
        _check_buffer(name, "data", col.data, u8, bits, f"bytes for {end} bits (offset {off} + length {n})")
    elif lay == Layout.STRING:
        _check_buffer(name, "offsets", col.offsets, offsets_dtype(dtype), off + n + 1,
                      f"offsets (offset {off} + length {n} + 1)")
        _check_buffer(name, "text", col.data, u8, 0, "bytes")
        if col.data is None and n > 0:
            _fail(name, "text buffer is missing")
    else:
        what = "indices" if lay == Layout.DICTIONARY else "data"
        _check_buffer(name, what, col.data, physical_numpy_dtype(dtype), end,
                      f"values (offset {off} + length {n})")
    if lay == Layout.DICTIONARY:
        d = col.dictionary
        if d is None:
            _fail(name, f"type {dtype} needs a dictionary, got none")
        if d.dtype != dtype.value_type:
            _fail(name, f"dictionary has type {d.dtype}, expected {dtype.value_type}")
        check_structure(d, f"{name} (dictionary)")
    elif col.dictionary is not None:
        _fail(name, f"type {dtype} has no dictionary, got one of {col.dictionary.length} entries")


# =============================================================================== contents
def check_contents(col: Column, name: str = "<column>") -> None:
    """O(rows) checks of a structurally valid column (see the module docstring)."""
    lay = col.layout
    if lay == Layout.DICTIONARY:
        check_contents(col.dictionary, f"{name} (dictionary)")
    if col.length == 0 and lay != Layout.STRING:
        return  # nothing to read (an empty string column still has one offset to check)
    if col.device.is_cuda:
        _Device(col).run(name)
    else:
        _check_host(col, name)


def check_column(col: Column, name: str = "<column>", *, validate: bool = True) -> Column:
    """:func:`check_structure`, then :func:`check_contents` unless ``validate`` is False; returns ``col``."""
    check_structure(col, name)
    if validate:
        check_contents(col, name)
    return col


def check_table(table: Any, *, validate: bool = True) -> Any:
    """:func:`check_column` for every column of a Table; returns the table."""
    for name, col in table.items():
        check_column(col, name, validate=validate)
    return table


def _stated_nulls(col: Column) -> Optional[int]:
    """The null count to check against the bitmap, or None (no bitmap, or not stated)."""
    if col.validity is None or col._null_count < 0:
        return None
    return col._null_count


def _unsigned(dt: np.dtype) -> np.dtype:
    return np.dtype(f"u{dt.itemsize}")


# ------------------------------------------------------------------------------- host
_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount_bytes(b: np.ndarray) -> int:
    if hasattr(np, "bitwise_count"):
        return int(np.bitwise_count(b).sum(dtype=np.int64))
    return int(_POP8[b].sum(dtype=np.int64))


def count_set_bits(bitmap: np.ndarray, bit_offset: int, length: int) -> int:
    """Set bits among ``length`` bits of a host LSB-first bitmap starting at ``bit_offset``."""
    if length <= 0:
        return 0
    first, last = bit_offset // 8, (bit_offset + length + 7) // 8
    total = 0
    for s in range(first, last, _CHUNK * 8):
        total += _popcount_bytes(bitmap[s:min(s + _CHUNK * 8, last)])
    head = bit_offset - first * 8
    if head:
        total -= bin(int(bitmap[first]) & ((1 << head) - 1)).count("1")
    tail = (bit_offset + length) - (last - 1) * 8
    if tail < 8:
        total -= bin(int(bitmap[last - 1]) >> tail).count("1")
    return total


def _bit(bitmap: np.ndarray, i: int) -> int:
    return int(bitmap[i >> 3] >> (i & 7)) & 1


def _first_decrease_host(o: np.ndarray) -> int:
    """Index ``i`` of the first ``o[i + 1] < o[i]``, or -1."""
    m = o.shape[0] - 1
    tmp = np.empty(min(m, _CHUNK), dtype=bool)
    for s in range(0, m, _CHUNK):
        e = min(s + _CHUNK, m)
        t = tmp[:e - s]
        np.less(o[s + 1:e + 1], o[s:e], out=t)
        if t.any():
            return s + int(np.argmax(t))
    return -1


def _first_bad_index_host(idx: np.ndarray, ndict: int, validity: Optional[np.ndarray], vbit: int) -> int:
    """Position of the first index of a valid row outside ``[0, ndict)``, or -1."""
    u = idx.view(_unsigned(idx.dtype))  # negative indices become huge: one comparison catches both
    for s in range(0, u.shape[0], _CHUNK):
        chunk = u[s:s + _CHUNK]
        if chunk.shape[0] and int(chunk.max()) >= ndict:
            for p in np.flatnonzero(chunk >= ndict):
                i = s + int(p)
                if validity is None or _bit(validity, vbit + i):
                    return i
    return -1


def _check_host(col: Column, name: str) -> None:
    n, off = col.length, col.offset
    lay = col.layout
    if lay == Layout.STRING:
        o = col.offsets.array[off:off + n + 1]
        _check_offset_ends(name, int(o[0]), int(o[n]), col.data.size, n)
        i = _first_decrease_host(o)
        if i >= 0:
            _fail(name, f"string offsets must not decrease: row {i} has offsets {int(o[i])} -> {int(o[i + 1])}")
    elif lay == Layout.DICTIONARY:
        vb = col.validity.array if col.validity is not None else None
        idx = col.data.array[off:off + n]
        i = _first_bad_index_host(idx, col.dictionary.length, vb, off)
        if i >= 0:
            _bad_index(name, i, idx[i], col.dictionary.length)
    stated = _stated_nulls(col)
    if stated is not None:
        nulls = n - count_set_bits(col.validity.array, off, n)
        _check_nulls(name, stated, nulls)


def _check_offset_ends(name: str, first: int, last: int, nchars: int, n: int) -> None:
    if first < 0:
        _fail(name, f"the first string offset must be >= 0, got {first}")
    if n and last > nchars:  # an empty slice reads no text (as Arrow's own validation)
        _fail(name, f"the last string offset must be <= the text size {nchars}, got {last}")


def _bad_index(name: str, row: int, value: Any, ndict: int) -> None:
    _fail(name, f"dictionary index of row {row} must be in [0, {ndict}) (dictionary of {ndict} entries), "
                f"got {int(value)}")


def _check_nulls(name: str, stated: int, counted: int) -> None:
    if stated != counted:
        _fail(name, f"null_count does not match the validity bitmap: stated {stated}, the bitmap has {counted}")


# ------------------------------------------------------------------------------- device
_MAX_BLOCKS = 1024


class _Device:
    """Device-side checks of one CUDA column: kernels on its GPU, scalars back."""

    def __init__(self, col: Column) -> None:
        self.col = col
        self.device = col.device

    def _launch(self, kernel: Any, n: int, *args: Any) -> None:
        threads = 64 if cudasim_enabled() else 256
        blocks = max(1, min(_MAX_BLOCKS, (n + threads - 1) // threads))
        with launch_context(self.device):
            launch_kernel(kernel, blocks, threads, args, self.device)

    def _counter(self, value: int) -> Any:
        return memory.to_device(np.array([value], dtype=np.int64), self.device)

    @staticmethod
    def _scalar(arr: Any, i: int = 0) -> int:
        return int(memory.to_host(arr[i:i + 1])[0])

    def run(self, name: str) -> None:
        if cudasim_enabled():
            self._run_kernels(name)
        else:
            self._run_cupy(name)

    def _run_cupy(self, name: str) -> None:
        """CuPy reductions (a real GPU): each returns a scalar; nothing O(rows) leaves the device."""
        import cupy as cp

        col = self.col
        n, off = col.length, col.offset
        lay = col.layout
        with cp.cuda.Device(self.device.id):
            if lay == Layout.STRING:
                o = cp.asarray(col.offsets.array)[off:off + n + 1]
                _check_offset_ends(name, int(o[0]), int(o[n]), col.data.size, n)
                if n:
                    dec = o[1:] < o[:-1]
                    if bool(dec.any()):
                        i = int(dec.argmax())
                        _fail(name, f"string offsets must not decrease: row {i} has offsets {int(o[i])} -> "
                                    f"{int(o[i + 1])}")
            elif lay == Layout.DICTIONARY:
                idx = cp.asarray(col.data.array)[off:off + n]
                ndict = col.dictionary.length
                u = idx.view(_unsigned(idx.dtype))  # negative indices become huge
                if int(u.max()) >= ndict:
                    bad = u >= ndict
                    if col.validity is not None:
                        rows = cp.arange(off, off + n, dtype=cp.int64)
                        vb = cp.asarray(col.validity.array)
                        bad &= ((vb[rows >> 3] >> (rows & 7).astype(cp.uint8)) & 1).astype(bool)
                    if bool(bad.any()):
                        i = int(bad.argmax())
                        _bad_index(name, i, int(idx[i]), ndict)
            stated = _stated_nulls(col)
            if stated is not None:
                vb = cp.asarray(col.validity.array)
                first, last = off // 8, (off + n + 7) // 8
                table = memory.to_device(_POP8, self.device)   # counted: 256 bytes
                ones = int(table[vb[first:last]].sum(dtype=cp.int64))
                head, tail = off - first * 8, (off + n) - (last - 1) * 8
                if head:
                    ones -= bin(int(vb[first]) & ((1 << head) - 1)).count("1")
                if tail < 8:
                    ones -= bin(int(vb[last - 1]) >> tail).count("1")
                _check_nulls(name, stated, n - ones)

    def _run_kernels(self, name: str) -> None:
        """numba.cuda kernels (the simulator, where there is no CuPy)."""
        col = self.col
        from ..kernels.checks import cuda_kernels

        k = cuda_kernels()
        n, off = col.length, col.offset
        lay = col.layout
        if lay == Layout.STRING:
            o = col.offsets.array[off:off + n + 1]
            _check_offset_ends(name, self._scalar(o, 0), self._scalar(o, n), col.data.size, n)
            out = self._counter(n)
            self._launch(k["first_decrease"], n, o, n, out)
            i = self._scalar(out)
            if i < n:
                _fail(name, f"string offsets must not decrease: row {i} has offsets "
                            f"{self._scalar(o, i)} -> {self._scalar(o, i + 1)}")
        elif lay == Layout.DICTIONARY:
            idx = col.data.array[off:off + n]
            has_valid = col.validity is not None
            vb = col.validity.array if has_valid else memory.empty(1, np.uint8, self.device)
            out = self._counter(n)
            ndict = col.dictionary.length
            self._launch(k["first_bad_index"], n, idx, np.int64(ndict), vb, has_valid, np.int64(off), out)
            i = self._scalar(out)
            if i < n:
                _bad_index(name, i, self._scalar(idx, i), ndict)
        stated = _stated_nulls(col)
        if stated is not None:
            out = self._counter(0)
            self._launch(k["set_bits"], n, col.validity.array, np.int64(off), np.int64(n), out)
            _check_nulls(name, stated, n - self._scalar(out))
