"""Hash partition on the CPU: ``partition_ids`` and ``hash_partition`` (histogram, prefix sum,
stable scatter of every column with per-thread cursors; see :mod:`gpuframe.ops.partition`).

The output is checked to fit (:func:`gpuframe.core.memory.ensure_available`) before it is
allocated; host outputs come from the host allocator.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numba
import numpy as np

from gpuframe.kernels import gather as GK
from gpuframe.kernels import partition as PK

from ...core import memory
from ...core.buffer import Buffer
from ...core.column import Column
from ...core.device import CPU
from ...core.dtypes import Layout, offsets_dtype, physical_numpy_dtype
from ...core.hostalloc import host_empty
from ...core.table import Table
from .._common import _bitmap_bytes, _check_string_size, _hash_view, _pid_dtype, _validity_args, _word_view, hash_columns
from ._target import _EMPTY_U8, ALIGN, CPU_TARGET, PARALLEL_MIN_ROWS, _cpu_threads, aligned_empty, run_rows, run_threads

__all__ = ["hash_partition", "hash_partition_heavy", "partition_ids"]


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
        run_rows(PK.pids_from_fixed, n, values, kind, validity if has_valid else _EMPTY_U8, vbit, seed,
                 num_partitions, pids)
    else:
        run_rows(PK.pids_from_hashes, n, hash_columns(CPU_TARGET, key_columns, seed), num_partitions, pids)
    return pids


def partition_ids(key_columns: Sequence[Column], num_partitions: int, seed: np.uint64) -> np.ndarray:
    with _cpu_threads(len(key_columns[0])):
        return _cpu_pids(key_columns, num_partitions, seed, np.int32)


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


def hash_partition(table: Table, key_columns: Sequence[Column], num_partitions: int,
                   seed: np.uint64) -> tuple[Table, np.ndarray]:
    with _cpu_threads(table.num_rows):
        return _cpu_hash_partition(table, key_columns, num_partitions, seed)


def _check_fits(table: Table, num_partitions: int) -> None:
    # the output is as large as the input; scratch: the ids and the byte flags of a bitmap
    n = table.num_rows
    bitmaps = any(c.validity is not None or c.layout == Layout.BOOL for _, c in table.items())
    memory.ensure_available("hash_partition", table.nbytes + n * _pid_dtype(num_partitions).itemsize
                            + (n if bitmaps else 0), CPU, rows=n, what="the partitioned table and its scratch")


def _cpu_hash_partition(table: Table, key_columns: Sequence[Column], num_partitions: int,
                        seed: np.uint64) -> tuple[Table, np.ndarray]:
    _check_fits(table, num_partitions)
    pids = _cpu_pids(key_columns, num_partitions, seed, _pid_dtype(num_partitions))
    return _scatter(table, pids, num_partitions)


def hash_partition_heavy(table: Table, key_columns: Sequence[Column], num_partitions: int, seed: np.uint64,
                         heavy: np.ndarray, codes: np.ndarray) -> tuple[Table, np.ndarray]:
    """:func:`hash_partition` into ``num_partitions`` plus ``codes.max()`` partitions: a row whose
    hash is ``heavy[j]`` (sorted) goes to partition ``num_partitions - 1 + codes[j]`` (codes from
    1), every other row to its hash partition (the skewed-merge split of :mod:`gpuframe._skew`,
    in one scatter). A capability: the CUDA backend has none (the skew split filters there)."""
    nparts = num_partitions + int(codes.max(initial=0))
    with _cpu_threads(table.num_rows):
        _check_fits(table, nparts)
        pids = host_empty(table.num_rows, _pid_dtype(nparts))
        col = key_columns[0]
        if table.num_rows and len(key_columns) == 1 and col.layout == Layout.FIXED:
            values, kind = _hash_view(col)
            validity, has_valid, vbit = _validity_args(CPU_TARGET, col)
            run_rows(PK.pids_from_fixed_heavy, table.num_rows, values, kind, validity if has_valid else _EMPTY_U8,
                     vbit, seed, num_partitions, heavy, codes, pids)
        elif table.num_rows:
            run_rows(PK.pids_from_hashes_heavy, table.num_rows, hash_columns(CPU_TARGET, key_columns, seed),
                     num_partitions, heavy, codes, pids)
        return _scatter(table, pids, nparts)


def _scatter(table: Table, pids: np.ndarray, num_partitions: int) -> tuple[Table, np.ndarray]:
    """``table``'s rows in partition order (``pids[i]`` is row ``i``'s), stable, and the offsets."""
    n = table.num_rows
    nchunks = _chunks_for(n)
    hist = np.empty((nchunks, num_partitions), np.int64)
    run_threads(PK.histogram, nchunks, pids, hist)
    offsets, cursors = _cursors(hist)

    def scatter_bitmap(bits: np.ndarray, bit_off: int) -> tuple[np.ndarray, int]:
        flags = host_empty(n, np.uint8)
        run_threads(PK.scatter_bits, nchunks, bits, bit_off, pids, cursors, flags)
        packed = host_empty(_bitmap_bytes(n), np.uint8)
        return packed, sum(run_rows(PK.pack_bytes, len(packed), flags, packed))

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
            total = sum(run_threads(PK.scatter_string_lengths, nchunks, src_offs, pids, cursors, offs))
            _check_string_size(total, odt == np.int64)
            GK.inclusive_scan_inplace(offs)
            chars = host_empty(total, np.uint8)
            run_threads(PK.scatter_string_chars, nchunks, src_offs, col.chars(), pids, cursors, offs, chars)
            validity, nulls = validity_of(col)
            out[name] = Column(col.dtype, n, Buffer(chars, CPU), validity, Buffer(offs, CPU), None, 0, nulls)
        else:  # BOOL
            data, _ = scatter_bitmap(col.data.array, col.offset)
            validity, nulls = validity_of(col)
            out[name] = Column(col.dtype, n, Buffer(data, CPU), validity, None, None, 0, nulls)
    moved: dict[str, Any] = {}
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
                run_threads(PK.scatter_fixed2_stream, nchunks, va, vb, pids, cursors, outs[na], outs[nb], bufs)
            else:
                run_threads(PK.scatter_fixed2, nchunks, va, vb, pids, cursors, outs[na], outs[nb])
        if len(cols) % 2:
            na, va = cols[-1]
            if stream:
                run_threads(PK.scatter_fixed_stream, nchunks, va, pids, cursors, outs[na], bufs[:, :1])
            else:
                run_threads(PK.scatter_fixed, nchunks, va, pids, cursors, outs[na])
    for name, data in moved.items():
        col = table[name]
        validity, nulls = validity_of(col)
        out[name] = Column(col.dtype, n, Buffer(data.view(physical_numpy_dtype(col.dtype)), CPU), validity, None,
                           col.dictionary, 0, nulls)
    return Table([(name, out[name]) for name in table.column_names], n), offsets
