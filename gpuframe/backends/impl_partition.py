"""Backend implementations of row hashing, hash partition and gather (take).

One driver per operation walks the columns and picks kernel arguments (views, bitmaps, offsets);
a *target* (:class:`CpuTarget` or :class:`CudaTarget`) allocates and runs the kernels of
``gpuframe.kernels.{hashing,partition,gather}`` and returns counters as Python ints. The CPU
partition scatters every column (stable, per-thread cursors); the CUDA partition builds a gather
map with atomic cursors and gathers every column through it. Host outputs and scratch come from
the host allocator (:func:`gpuframe.core.hostalloc.host_empty`), which reuses the memory of freed
outputs within its idle limit. ``hash_partition`` checks that its output fits
(:func:`gpuframe.core.memory.ensure_available`) before allocating it.

Registered operations (see :mod:`gpuframe.backends.registry`):

``hash_rows(columns, seed) -> uint64 array``,
``partition_ids(columns, num_partitions, seed) -> int32 array``,
``hash_partition(table, key_columns, num_partitions, seed) -> (Table, host int64 offsets)``,
``check_indices(indices, num_rows) -> (first_bad_position or -1, number of -1 entries)``,
``gather_column(column, indices, missing) -> Column`` (indices already checked; ``missing`` is the
number of -1 entries or ``None`` when unknown).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional, Sequence

import numba
import numpy as np

from gpuframe.kernels import gather as GK
from gpuframe.kernels import hashing as HK
from gpuframe.kernels import partition as PK

from ..core import memory
from ..core.buffer import Buffer
from ..core.column import Column
from ..core.device import CPU, Device, cudasim_enabled, launch_context
from ..core.dtypes import Layout, offsets_dtype, physical_numpy_dtype
from ..core.hostalloc import host_empty
from ..core.table import Table
from .registry import register

INT32_MAX = np.iinfo(np.int32).max
_EMPTY_U8 = np.empty(0, dtype=np.uint8)


# --------------------------------------------------------------------------- host output buffers
ALIGN = 64  # bytes; Arrow's recommended alignment, and what the streaming scatter needs


def aligned_empty(shape: Any, dtype: Any) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an ``ALIGN``-byte boundary."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    raw = np.empty(count * dtype.itemsize + ALIGN, dtype=np.uint8)
    off = (-raw.ctypes.data) % ALIGN
    return raw[off:off + count * dtype.itemsize].view(dtype).reshape(shape)


def _bitmap_bytes(n: int) -> int:
    return (n + 7) // 8


def _word_view(values: Any) -> Any:
    """The same bytes as unsigned words of the element width (moves do not care about type)."""
    width = np.dtype(values.dtype).itemsize
    return memory.view_as(values, np.dtype(f"u{width}"))


def _hash_view(col: Column) -> tuple[Any, int]:
    """Values of a FIXED column as the kernels hash them, and their ``kind``.

    int64, uint64 and timestamps share the uint64 view (same bits, same hash), so fewer kernel
    specialisations are compiled; narrower integers keep their type for the sign extension.
    """
    vals = col.values()
    dt = np.dtype(vals.dtype)
    if dt == np.float64:
        return memory.view_as(vals, np.uint64), HK.KIND_F64
    if dt == np.float32:
        return memory.view_as(vals, np.uint32), HK.KIND_F32
    if dt == np.int64:
        return memory.view_as(vals, np.uint64), HK.KIND_INT
    return vals, HK.KIND_INT


def _pid_dtype(num_partitions: int) -> np.dtype:
    if num_partitions <= 1 << 8:
        return np.dtype(np.uint8)
    if num_partitions <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


# --------------------------------------------------------------------------- targets
class CpuTarget:
    """Runs the ``@njit`` kernels on host numpy arrays."""

    device = CPU

    def empty(self, n: int, dtype: Any) -> np.ndarray:
        return host_empty(n, dtype)

    def no_bitmap(self) -> np.ndarray:
        return _EMPTY_U8

    # hashing
    def hash_fixed(self, values, kind, validity, has_valid, vbit, seed, combine, out) -> None:
        HK.hash_fixed_column(values, kind, validity if has_valid else _EMPTY_U8, vbit, seed, combine, out)

    def hash_bool(self, bits, dbit, n, validity, has_valid, vbit, seed, combine, out) -> None:
        HK.hash_bool_column(bits, dbit, n, validity if has_valid else _EMPTY_U8, vbit, seed, combine, out)

    def hash_string(self, offsets, chars, validity, has_valid, vbit, seed, combine, out) -> None:
        HK.hash_string_column(offsets, chars, validity if has_valid else _EMPTY_U8, vbit, seed, combine, out)

    def hash_dictionary(self, indices, dict_hashes, validity, has_valid, vbit, seed, combine, out) -> None:
        HK.hash_dictionary_column(indices, dict_hashes, validity if has_valid else _EMPTY_U8, vbit, seed,
                                  combine, out)

    # gather
    def check_indices(self, idx, n: int) -> tuple[int, int]:
        bad, missing = GK.check_indices(idx, n)
        return (-1 if bad == len(idx) else int(bad)), int(missing)

    def gather_fixed(self, values, idx, out) -> int:
        return int(GK.gather_fixed(values, idx, out))

    def gather_bits(self, bits, bit_off, has_bits, idx, out) -> int:
        return int(GK.gather_bits(bits if has_bits else _EMPTY_U8, bit_off, has_bits, idx, out))

    def gather_string_offsets(self, offsets, idx, odt: np.dtype, large: bool) -> tuple[np.ndarray, Any, int]:
        """Offsets of the gathered strings, where each one starts in the source, total bytes."""
        m = len(idx)
        out = host_empty(m + 1, odt)
        starts = host_empty(m, np.int64)
        total = int(GK.string_lengths(offsets, idx, out, starts))
        _check_string_size(total, large)
        memory.ensure_available("gather_column", total, CPU, rows=m, what="the gathered string bytes")
        GK.inclusive_scan_inplace(out)
        return out, starts, total

    def gather_string_chars(self, offsets, chars, idx, out_offsets, starts, out_chars) -> None:
        GK.string_chars(starts, chars, out_offsets, out_chars)


class CudaTarget:
    """Launches the ``numba.cuda`` kernels (real GPU or the simulator) on one device."""

    def __init__(self, device: Device) -> None:
        self.device = device

    def empty(self, n: int, dtype: Any) -> Any:
        return memory.empty(n, dtype, self.device)

    def zeros(self, n: int, dtype: Any) -> Any:
        return memory.zeros(n, dtype, self.device)

    def no_bitmap(self) -> Any:
        return memory.empty(1, np.uint8, self.device)

    def scalar(self, arr: Any) -> int:
        return int(memory.to_host(arr)[0])

    @staticmethod
    def _launch(kernel: Any, n: int, *args: Any) -> None:
        from gpuframe.kernels.launch import launch

        launch(kernel, n, *args)

    # hashing
    def hash_fixed(self, values, kind, validity, has_valid, vbit, seed, combine, out) -> None:
        self._launch(HK.cuda_kernels()["fixed"], len(values), values, kind, validity, has_valid, vbit,
                     seed, combine, out)

    def hash_bool(self, bits, dbit, n, validity, has_valid, vbit, seed, combine, out) -> None:
        self._launch(HK.cuda_kernels()["bool"], n, bits, dbit, n, validity, has_valid, vbit, seed, combine, out)

    def hash_string(self, offsets, chars, validity, has_valid, vbit, seed, combine, out) -> None:
        self._launch(HK.cuda_kernels()["string"], len(offsets) - 1, offsets, chars, validity, has_valid, vbit,
                     seed, combine, out)

    def hash_dictionary(self, indices, dict_hashes, validity, has_valid, vbit, seed, combine, out) -> None:
        self._launch(HK.cuda_kernels()["dictionary"], len(indices), indices, dict_hashes, validity, has_valid,
                     vbit, seed, combine, out)

    # gather
    def check_indices(self, idx, n: int) -> tuple[int, int]:
        m = len(idx)
        bad = memory.to_device(np.array([m], dtype=np.int64), self.device)
        missing = self.zeros(1, np.int64)
        self._launch(GK.cuda_kernels()["check"], m, idx, n, bad, missing)
        b = self.scalar(bad)
        return (-1 if b == m else b), self.scalar(missing)

    def gather_fixed(self, values, idx, out) -> int:
        missing = self.zeros(1, np.int64)
        self._launch(GK.cuda_kernels()["fixed"], len(idx), values, idx, out, missing)
        return self.scalar(missing)

    def gather_bits(self, bits, bit_off, has_bits, idx, out) -> int:
        count = self.zeros(1, np.int64)
        self._launch(GK.cuda_kernels()["bits"], len(out), bits, bit_off, has_bits, idx, out, count)
        return self.scalar(count)

    def gather_string_offsets(self, offsets, idx, odt: np.dtype, large: bool) -> tuple[Any, Any, int]:
        m = len(idx)
        k = GK.cuda_kernels()
        lengths = self.empty(m, np.int64)
        self._launch(k["lengths"], m, offsets, idx, lengths)
        offs64 = memory.cumsum_exclusive(lengths, np.int64)
        total = self.scalar(offs64[m:m + 1])
        _check_string_size(total, large)
        memory.ensure_available("gather_column", total, self.device, rows=m, what="the gathered string bytes")
        if np.dtype(odt) == np.int64:
            return offs64, None, total
        out = self.empty(m + 1, odt)
        self._launch(k["cast_copy"], m + 1, offs64, out)
        return out, None, total

    def gather_string_chars(self, offsets, chars, idx, out_offsets, starts, out_chars) -> None:
        self._launch(GK.cuda_kernels()["chars"], len(idx), offsets, chars, idx, out_offsets, out_chars)


def _check_string_size(total: int, large: bool) -> None:
    if not large and total > INT32_MAX:
        raise OverflowError(
            f"the gathered string column holds {total} bytes, more than a string column's int32 offsets "
            f"allow ({INT32_MAX}); cast the column to large_string first")


CPU_TARGET = CpuTarget()


# Below this many rows the CPU kernels run on the calling thread only: waking the thread pool
# costs more than the work (and on a busy machine an OpenMP barrier can cost milliseconds).
PARALLEL_MIN_ROWS = 1 << 16


@contextlib.contextmanager
def _cpu_threads(rows: int) -> Iterator[None]:
    if rows >= PARALLEL_MIN_ROWS:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)




# --------------------------------------------------------------------------- hashing
def _validity_args(t: Any, col: Column) -> tuple[Any, bool, int]:
    if col.validity is None:
        return t.no_bitmap(), False, 0
    return col.validity.array, True, col.offset


def hash_column(t: Any, col: Column, seed: np.uint64, combine: bool, out: Any) -> None:
    """Hash ``col`` into ``out`` (or combine into it): the contract of :mod:`gpuframe.kernels.hashing`."""
    n = len(col)
    if n == 0:
        return
    validity, has_valid, vbit = _validity_args(t, col)
    lay = col.layout
    if lay == Layout.FIXED:
        values, kind = _hash_view(col)
        t.hash_fixed(values, kind, validity, has_valid, vbit, seed, combine, out)
    elif lay == Layout.BOOL:
        t.hash_bool(col.data.array, col.offset, n, validity, has_valid, vbit, seed, combine, out)
    elif lay == Layout.STRING:
        t.hash_string(col.offsets_view(), col.chars(), validity, has_valid, vbit, seed, combine, out)
    else:
        dictionary = col.dictionary
        dict_hashes = t.empty(max(len(dictionary), 1), np.uint64)
        hash_column(t, dictionary, seed, False, dict_hashes)
        t.hash_dictionary(col.values(), dict_hashes, validity, has_valid, vbit, seed, combine, out)


def hash_columns(t: Any, columns: Sequence[Column], seed: np.uint64) -> Any:
    n = len(columns[0])
    out = t.empty(n, np.uint64)
    for j, col in enumerate(columns):
        hash_column(t, col, seed, j > 0, out)
    return out


@register("cpu", "hash_rows")
def cpu_hash_rows(columns: Sequence[Column], seed: np.uint64) -> np.ndarray:
    with _cpu_threads(len(columns[0])):
        return hash_columns(CPU_TARGET, columns, seed)


@register("cuda", "hash_rows")
def cuda_hash_rows(columns: Sequence[Column], seed: np.uint64) -> Any:
    dev = columns[0].device
    with launch_context(dev):
        return hash_columns(CudaTarget(dev), columns, seed)


# --------------------------------------------------------------------------- gather
def gather_column(t: Any, col: Column, idx: Any, missing: Optional[int]) -> Column:
    """Rows ``idx`` of ``col`` (indices already checked: in bounds or -1)."""
    m = len(idx)
    lay = col.layout
    offsets = None
    if lay in (Layout.FIXED, Layout.DICTIONARY):
        vals = _word_view(col.values())
        out = t.empty(m, vals.dtype)
        miss = t.gather_fixed(vals, idx, out)
        missing = miss if missing is None else missing
        data = Buffer(memory.view_as(out, physical_numpy_dtype(col.dtype)), t.device)
    elif lay == Layout.BOOL:
        out = t.empty(_bitmap_bytes(m), np.uint8)
        t.gather_bits(col.data.array, col.offset, True, idx, out)
        data = Buffer(out, t.device)
    else:
        odt = offsets_dtype(col.dtype)
        src_offs = col.offsets_view()
        offs, starts, total = t.gather_string_offsets(src_offs, idx, odt, odt == np.int64)
        chars = t.empty(total, np.uint8)
        t.gather_string_chars(src_offs, col.chars(), idx, offs, starts, chars)
        offsets = Buffer(offs, t.device)
        data = Buffer(chars, t.device)
    validity = None
    null_count = 0
    if col.validity is not None or missing is None or missing > 0:
        vb = t.empty(_bitmap_bytes(m), np.uint8)
        has = col.validity is not None
        valid = t.gather_bits(col.validity.array if has else t.no_bitmap(), col.offset if has else 0, has,
                              idx, vb)
        null_count = m - valid
        if null_count:
            validity = Buffer(vb, t.device)
    return Column(col.dtype, m, data, validity, offsets, col.dictionary, 0, null_count)


@register("cpu", "check_indices")
def cpu_check_indices(indices: np.ndarray, num_rows: int) -> tuple[int, int]:
    with _cpu_threads(len(indices)):
        return CPU_TARGET.check_indices(indices, num_rows)


@register("cuda", "check_indices")
def cuda_check_indices(indices: Any, num_rows: int) -> tuple[int, int]:
    dev = memory.array_device(indices)
    with launch_context(dev):
        return CudaTarget(dev).check_indices(indices, num_rows)


@register("cpu", "gather_column")
def cpu_gather_column(column: Column, indices: np.ndarray, missing: Optional[int]) -> Column:
    with _cpu_threads(len(indices)):
        return gather_column(CPU_TARGET, column, indices, missing)


@register("cuda", "gather_column")
def cuda_gather_column(column: Column, indices: Any, missing: Optional[int]) -> Column:
    dev = column.device
    with launch_context(dev):
        return gather_column(CudaTarget(dev), column, indices, missing)


# --------------------------------------------------------------------------- partition ids
def _cpu_pids(key_columns: Sequence[Column], num_partitions: int, seed: np.uint64, dtype: Any) -> np.ndarray:
    n = len(key_columns[0])
    pids = host_empty(n, dtype)
    if n == 0:
        return pids
    col = key_columns[0]
    if len(key_columns) == 1 and col.layout == Layout.FIXED:
        # the common case: hash fused into the id pass, no uint64 hash array
        values, kind = _hash_view(col)
        validity, has_valid, vbit = _validity_args(CPU_TARGET, col)
        PK.pids_from_fixed(values, kind, validity if has_valid else _EMPTY_U8, vbit, seed, num_partitions, pids)
    else:
        PK.pids_from_hashes(hash_columns(CPU_TARGET, key_columns, seed), num_partitions, pids)
    return pids


@register("cpu", "partition_ids")
def cpu_partition_ids(key_columns: Sequence[Column], num_partitions: int, seed: np.uint64) -> np.ndarray:
    with _cpu_threads(len(key_columns[0])):
        return _cpu_pids(key_columns, num_partitions, seed, np.int32)


def _cuda_pids(t: CudaTarget, key_columns: Sequence[Column], num_partitions: int, seed: np.uint64,
               counts: Any = None) -> Any:
    n = len(key_columns[0])
    pids = t.empty(n, np.int32)
    if n == 0:
        return pids
    hashes = hash_columns(t, key_columns, seed)
    k = PK.cuda_kernels()
    if counts is None:
        t._launch(k["pids"], n, hashes, num_partitions, pids)
    elif num_partitions <= PK.SHARED_HIST_MAX:
        t._launch(k["pid_hist_shared"], n, hashes, num_partitions, pids, counts)
    else:
        t._launch(k["pid_hist_global"], n, hashes, num_partitions, pids, counts)
    return pids


@register("cuda", "partition_ids")
def cuda_partition_ids(key_columns: Sequence[Column], num_partitions: int, seed: np.uint64) -> Any:
    dev = key_columns[0].device
    with launch_context(dev):
        return _cuda_pids(CudaTarget(dev), key_columns, num_partitions, seed)


# --------------------------------------------------------------------------- hash partition
def _chunks_for(n: int) -> int:
    # one contiguous chunk per thread (one in all below PARALLEL_MIN_ROWS)
    return max(1, min(numba.get_num_threads(), n // PARALLEL_MIN_ROWS or 1))


def _cursors(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Partition offsets (``P + 1``, int64) and the first output row of each (chunk, partition)
    (uint64, as the scatter kernels take them)."""
    totals = hist.sum(axis=0)
    offsets = np.zeros(hist.shape[1] + 1, dtype=np.int64)
    np.cumsum(totals, out=offsets[1:])
    before = np.cumsum(hist, axis=0) - hist  # rows of the same partition in earlier chunks
    cursors = np.ascontiguousarray(offsets[:-1][None, :] + before, dtype=np.uint64)
    return offsets, cursors


@register("cpu", "hash_partition")
def cpu_hash_partition(table: Table, key_columns: Sequence[Column], num_partitions: int,
                       seed: np.uint64) -> tuple[Table, np.ndarray]:
    with _cpu_threads(table.num_rows):
        return _cpu_hash_partition(table, key_columns, num_partitions, seed)


def _cpu_hash_partition(table: Table, key_columns: Sequence[Column], num_partitions: int,
                        seed: np.uint64) -> tuple[Table, np.ndarray]:
    n = table.num_rows
    pid_dtype = _pid_dtype(num_partitions)
    # the output is as large as the input; scratch: the ids and the byte flags of a bitmap
    bitmaps = any(c.validity is not None or c.layout == Layout.BOOL for _, c in table.items())
    memory.ensure_available("hash_partition", table.nbytes + n * pid_dtype.itemsize + (n if bitmaps else 0),
                            CPU, rows=n, what="the partitioned table and its scratch")
    pids = _cpu_pids(key_columns, num_partitions, seed, pid_dtype)
    hist = PK.histogram(pids, num_partitions, _chunks_for(n))
    offsets, cursors = _cursors(hist)

    def scatter_bitmap(bits: np.ndarray, bit_off: int) -> tuple[np.ndarray, int]:
        flags = host_empty(n, np.uint8)
        PK.scatter_bits(bits, bit_off, pids, cursors, flags)
        packed = host_empty(_bitmap_bytes(n), np.uint8)
        return packed, int(PK.pack_bytes(flags, packed))

    def validity_of(col: Column) -> tuple[Optional[Buffer], int]:
        if col.validity is None:
            return None, 0
        packed, valid = scatter_bitmap(col.validity.array, col.offset)
        return (Buffer(packed, CPU) if valid < n else None), n - valid

    out: dict[str, Column] = {}
    fixed: dict[np.dtype, list[tuple[str, Any]]] = {}
    for name, col in table.items():
        lay = col.layout
        if lay in (Layout.FIXED, Layout.DICTIONARY):
            vals = _word_view(col.values())
            fixed.setdefault(np.dtype(vals.dtype), []).append((name, vals))
        elif lay == Layout.STRING:
            # scattered, not gathered: reads stay sequential, writes go to one stream per partition
            src_offs = col.offsets_view()
            odt = offsets_dtype(col.dtype)
            offs = host_empty(n + 1, odt)
            total = int(PK.scatter_string_lengths(src_offs, pids, cursors, offs))
            _check_string_size(total, odt == np.int64)
            GK.inclusive_scan_inplace(offs)
            chars = host_empty(total, np.uint8)
            PK.scatter_string_chars(src_offs, col.chars(), pids, cursors, offs, chars)
            validity, nulls = validity_of(col)
            out[name] = Column(col.dtype, n, Buffer(chars, CPU), validity, Buffer(offs, CPU), None, 0, nulls)
        else:  # BOOL
            data, _ = scatter_bitmap(col.data.array, col.offset)
            validity, nulls = validity_of(col)
            out[name] = Column(col.dtype, n, Buffer(data, CPU), validity, None, None, 0, nulls)
    moved: dict[str, Any] = {}
    nchunks = cursors.shape[0]
    for width, cols in fixed.items():
        outs = {name: host_empty(n, width) for name, _ in cols}
        moved.update(outs)
        stream = (n >= PARALLEL_MIN_ROWS and num_partitions <= PK.STREAM_MAX_PARTITIONS
                  and all(o.ctypes.data % ALIGN == 0 for o in outs.values()))
        bufs = aligned_empty((nchunks, 2, num_partitions * (PK.LINE_BYTES // width.itemsize)), width) \
            if stream else None
        for i in range(0, len(cols) - 1, 2):  # two columns per pass over the ids
            (na, va), (nb, vb) = cols[i], cols[i + 1]
            if stream:
                PK.scatter_fixed2_stream(va, vb, pids, cursors, outs[na], outs[nb], bufs)
            else:
                PK.scatter_fixed2(va, vb, pids, cursors, outs[na], outs[nb])
        if len(cols) % 2:
            na, va = cols[-1]
            if stream:
                PK.scatter_fixed_stream(va, pids, cursors, outs[na], bufs[:, :1])
            else:
                PK.scatter_fixed(va, pids, cursors, outs[na])
    for name, data in moved.items():
        col = table[name]
        validity, nulls = validity_of(col)
        out[name] = Column(col.dtype, n, Buffer(data.view(physical_numpy_dtype(col.dtype)), CPU), validity, None,
                           col.dictionary, 0, nulls)
    return Table([(name, out[name]) for name in table.column_names], n), offsets


@register("cuda", "hash_partition")
def cuda_hash_partition(table: Table, key_columns: Sequence[Column], num_partitions: int,
                        seed: np.uint64) -> tuple[Table, np.ndarray]:
    dev = table.device
    n = table.num_rows
    # the output is as large as the input; scratch: hashes, ids and the permutation (20 bytes a
    # row), and 16 bytes a row for each string column's lengths and 64-bit offsets
    strings = sum(1 for _, c in table.items() if c.layout == Layout.STRING)
    memory.ensure_available("hash_partition", table.nbytes + n * (20 + 16 * strings), dev, rows=n,
                            what="the partitioned table and its scratch")
    with launch_context(dev):
        t = CudaTarget(dev)
        counts = t.zeros(num_partitions, np.int64)
        pids = _cuda_pids(t, key_columns, num_partitions, seed, counts)
        offsets = memory.cumsum_exclusive(counts, np.int64)
        perm = t.empty(n, np.int64)
        fill = t.zeros(num_partitions, np.int64)
        k = PK.cuda_kernels()
        scatter = k["scatter_rows_shared"] if num_partitions <= PK.SHARED_HIST_MAX else k["scatter_rows_global"]
        t._launch(scatter, n, pids, offsets, fill, perm)
        cols = [(name, gather_column(t, col, perm, 0)) for name, col in table.items()]
    return Table(cols, n), np.ascontiguousarray(memory.to_host(offsets), dtype=np.int64)
