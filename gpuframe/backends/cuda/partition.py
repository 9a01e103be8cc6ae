"""Hash partition on a CUDA device: ``partition_ids`` and ``hash_partition``. See
:mod:`gpuframe.ops.partition`.

``hash_partition`` returns the CPU backend's table exactly: rows keep their input order inside
each partition (stable). Row hashes, then per-block histograms (``block_counts_*``), one exclusive
scan of the counts in partition-major order (``scan[p * nblocks + b]`` is where block ``b``'s rows
of partition ``p`` start), then ``scatter_*``: stable ranks inside each block and the scatter of
up to two fixed-width columns of one width straight to their output rows. Further fixed-width
columns are scattered through the scatter map the same pass writes (``scatter_by_dest``); bool
data, validity bitmaps and strings are gathered through its inverse (``invert_dest``), since
rows that share an output byte cannot be written from separate threads. No per-row global
atomics (see :mod:`gpuframe.kernels.partition`).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from gpuframe.kernels import partition as PK

from ...core import memory
from ...core.buffer import Buffer
from ...core.column import Column
from ...core.device import launch_context
from ...core.dtypes import Layout, physical_numpy_dtype
from ...core.table import Table
from .._common import _bitmap_bytes, _hash_view, _pid_dtype, _validity_args, _word_view, gather_column, hash_columns
from ._target import CudaTarget
from .launch import launch_config

__all__ = ["hash_partition", "partition_ids"]

# Grid of the partition kernels: at most MAX_BLOCKS blocks, each over a contiguous range of at
# least MIN_TILES tiles and ROWS_PER_PARTITION rows per partition (a block loads and writes its
# cursors once: partitions x blocks in all); with more partitions than a shared histogram holds,
# the counts (partitions x blocks) stay below MAX_COUNTS.
MAX_BLOCKS = 1024
MIN_TILES = 4
ROWS_PER_PARTITION = 8
MAX_COUNTS = 1 << 24


def _grid(n: int, num_partitions: int) -> tuple[int, int, int]:
    """``(blocks, threads, rows_per_block)`` of the partition kernels for ``n > 0`` rows."""
    _, threads = launch_config(n)
    threads = min(threads, PK.TILE_MAX)
    tiles = -(-n // threads)
    min_tiles = max(MIN_TILES, -(-ROWS_PER_PARTITION * num_partitions // threads))
    blocks = max(1, min(MAX_BLOCKS, -(-tiles // min_tiles)))
    if num_partitions > PK.SHARED_HIST_MAX:
        blocks = max(1, min(blocks, MAX_COUNTS // num_partitions))
    rows_per_block = -(-tiles // blocks) * threads
    return -(-n // rows_per_block), threads, rows_per_block


def _cuda_pids(t: CudaTarget, key_columns: Sequence[Column], num_partitions: int, seed: np.uint64) -> Any:
    n = len(key_columns[0])
    pids = t.empty(n, np.int32)
    if n == 0:
        return pids
    hashes = hash_columns(t, key_columns, seed)
    t._launch(PK.cuda_kernels()["pids"], n, hashes, num_partitions, pids)
    return pids


def partition_ids(key_columns: Sequence[Column], num_partitions: int, seed: np.uint64) -> Any:
    dev = key_columns[0].device
    with launch_context(dev):
        return _cuda_pids(CudaTarget(dev), key_columns, num_partitions, seed)


def _launch_grid(kernel: Any, n: int, blocks: int, threads: int, *args: Any) -> None:
    from .launch import launch

    launch(kernel, n, *args, threads=threads, blocks=blocks)


def hash_partition(table: Table, key_columns: Sequence[Column], num_partitions: int,
                   seed: np.uint64) -> tuple[Table, np.ndarray]:
    dev = table.device
    n = table.num_rows
    fixed: dict[np.dtype, list[tuple[str, Any]]] = {}
    others = []  # gathered through the permutation: bool, string, and every validity bitmap
    for name, col in table.items():
        if col.layout in (Layout.FIXED, Layout.DICTIONARY):
            vals = _word_view(col.values())
            fixed.setdefault(np.dtype(vals.dtype), []).append((name, vals))
        if col.layout in (Layout.BOOL, Layout.STRING) or col.validity is not None:
            others.append(name)
    groups = [cols[i:i + 2] for cols in fixed.values() for i in range(0, len(cols), 2)]
    want_dest = len(groups) > 1 or bool(others)
    shared = num_partitions <= PK.SHARED_HIST_MAX
    key = key_columns[0]
    fused_hash = shared and len(key_columns) == 1 and key.layout == Layout.FIXED
    blocks, threads, rpb = _grid(n, num_partitions) if n else (0, 0, 0)
    # the output is as large as the input; scratch: the row hashes (unless fused), the ids, the
    # counts (partitions x blocks) and their scan, the scatter map and the permutation (when needed), and 16
    # bytes a row for each string column's lengths and offsets
    strings = sum(1 for _, c in table.items() if c.layout == Layout.STRING)
    per_row = (0 if fused_hash else 8) + _pid_dtype(num_partitions).itemsize + (8 if want_dest else 0) \
        + (8 if others else 0) + 16 * strings
    memory.ensure_available("hash_partition", table.nbytes + n * per_row + 16 * num_partitions * blocks, dev,
                            rows=n, what="the partitioned table and its scratch")
    with launch_context(dev):
        t = CudaTarget(dev)
        if n == 0:
            empty = t.empty(0, np.int64)
            cols = [(name, gather_column(t, col, empty, 0)) for name, col in table.items()]
            return Table(cols, 0), np.zeros(num_partitions + 1, dtype=np.int64)
        k = PK.cuda_kernels()
        pids = t.empty(n, _pid_dtype(num_partitions))
        counts = t.empty(num_partitions * blocks, np.int64)
        if fused_hash:
            # the common case: the hash fused into the count pass, no uint64 hash array
            values, kind = _hash_view(key)
            validity, has_valid, vbit = _validity_args(t, key)
            _launch_grid(k["block_counts_fixed"], n, blocks, threads, values, kind, validity, has_valid, vbit,
                         seed, num_partitions, rpb, pids, counts)
        else:
            hashes = hash_columns(t, key_columns, seed)
            _launch_grid(k["block_counts_shared" if shared else "block_counts_global"], n, blocks, threads,
                         hashes, num_partitions, rpb, pids, counts)
            del hashes
        cursors = memory.cumsum_exclusive(counts, np.int64)
        # partition p starts where its block 0 does; the last entry is n
        offsets = np.ascontiguousarray(memory.to_host(cursors[::blocks]), dtype=np.int64)

        outs: dict[str, Any] = {}
        dest = t.empty(n, np.int64) if want_dest else t.empty(1, np.int64)
        first = groups[0] if groups else []
        dummy = first[0][1][:1] if first else t.empty(1, np.uint8)
        ins = [v for _, v in first] + [dummy] * (2 - len(first))
        res = [t.empty(n, v.dtype) for _, v in first]
        res += [t.empty(1, dummy.dtype)] * (2 - len(first))
        _launch_grid(k["scatter_shared" if shared else "scatter_global"], n, blocks, threads,
                     pids, cursors, num_partitions, rpb, ins[0], ins[1], res[0], res[1], len(first), dest,
                     want_dest)
        for (name, _), out in zip(first, res):
            outs[name] = out
        for grp in groups[1:]:
            a, b = grp[0][1], grp[-1][1]
            out_a = t.empty(n, a.dtype)
            out_b = t.empty(n, b.dtype) if len(grp) > 1 else out_a
            t._launch(k["scatter_by_dest"], n, a, b, len(grp), dest, out_a, out_b)
            outs[grp[0][0]] = out_a
            outs[grp[-1][0]] = out_b
        perm = None
        if others:
            perm = t.empty(n, np.int64)
            t._launch(k["invert_dest"], n, dest, perm)

        cols = []
        for name, col in table.items():
            if name not in outs:
                cols.append((name, gather_column(t, col, perm, 0)))
                continue
            validity, nulls = None, 0
            if col.validity is not None:
                vb = t.empty(_bitmap_bytes(n), np.uint8)
                nulls = n - t.gather_bits(col.validity.array, col.offset, True, perm, vb)
                validity = Buffer(vb, dev) if nulls else None
            data = Buffer(memory.view_as(outs[name], physical_numpy_dtype(col.dtype)), dev)
            cols.append((name, Column(col.dtype, n, data, validity, None, col.dictionary, 0, nulls)))
    return Table(cols, n), offsets
