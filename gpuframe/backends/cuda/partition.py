"""Hash partition on a CUDA device: ``partition_ids`` and ``hash_partition`` (ids with a
histogram, a scan, a permutation by atomic cursors, then every column gathered through it; the
order of rows inside a partition is not defined). See :mod:`gpuframe.ops.partition`.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from gpuframe.kernels import partition as PK

from ...core import memory
from ...core.column import Column
from ...core.device import launch_context
from ...core.dtypes import Layout
from ...core.table import Table
from .._common import gather_column, hash_columns
from ._target import CudaTarget

__all__ = ["hash_partition", "partition_ids"]


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


def partition_ids(key_columns: Sequence[Column], num_partitions: int, seed: np.uint64) -> Any:
    dev = key_columns[0].device
    with launch_context(dev):
        return _cuda_pids(CudaTarget(dev), key_columns, num_partitions, seed)


def hash_partition(table: Table, key_columns: Sequence[Column], num_partitions: int,
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
