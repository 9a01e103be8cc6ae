"""Hash partition: ``partition_ids`` and ``hash_partition`` (histogram, scan, scatter).

A row goes to partition ``((h >> 32) * n) >> 32`` (uint64 arithmetic) where ``h`` is its
:func:`gpuframe.ops.hashing.hash_rows` hash and ``n`` the number of partitions: the HIGH 32 bits
of the hash, because the join kernels radix-partition on the low bits, so a local join after a
distributed shuffle on these ids stays balanced (``gpuframe.kernels.hashing.partition_of``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..backends.registry import resolve
from ..core import memory, streams
from ..core.table import Table
from .hashing import OnLike, check_seed, key_columns, normalize_on

__all__ = ["hash_partition", "partition_ids", "check_num_partitions"]

MAX_PARTITIONS = 2**31 - 1


def check_num_partitions(num_partitions: Any) -> int:
    if isinstance(num_partitions, bool) or not isinstance(num_partitions, (int, np.integer)):
        raise TypeError(f"num_partitions must be an int >= 1, got {num_partitions!r}")
    n = int(num_partitions)
    if n < 1:
        raise ValueError(f"num_partitions must be an int >= 1, got {num_partitions!r}")
    if n > MAX_PARTITIONS:
        raise ValueError(f"num_partitions must be at most {MAX_PARTITIONS}, got {num_partitions!r}")
    return n


def partition_ids(table: Table, on: OnLike, num_partitions: int, seed: int = 0, *, stream: Any = None) -> Any:
    """The partition id of every row, as :func:`hash_partition` assigns them.

    Parameters
    ----------
    table : Table
    on : str or list of str
        Key column names.
    num_partitions : int
        At least 1.
    seed : int, default 0
        The hash seed (see :func:`gpuframe.ops.hashing.hash_rows`).
    stream : CUDA stream, optional
        The operation's stream (CUDA tables only), as in :func:`hash_partition`.

    Returns
    -------
    int32 device array
        ``table.num_rows`` ids in ``[0, num_partitions)`` on ``table.device``:
        ``partition_of(hash_rows(table, on, seed), num_partitions)``.
    """
    names = normalize_on(table, on)
    n = check_num_partitions(num_partitions)
    s = check_seed(seed)
    with streams.operation(stream, table.device):
        fn, run_device = resolve("partition_ids", table.device)
        if table.num_rows == 0:
            return memory.empty(0, np.int32, table.device)
        memory.ensure_available("partition_ids", 12 * table.num_rows, run_device, rows=table.num_rows,
                                what="the partition ids and row hashes")
        out = fn(key_columns(table, names, run_device), n, s)
        return memory.to_device(out, table.device)


def hash_partition(table: Table, on: OnLike, num_partitions: int, *, seed: int = 0,
                   stream: Any = None) -> tuple[Table, np.ndarray]:
    """Reorder the rows of ``table`` so that each partition's rows are contiguous.

    Parameters
    ----------
    table : Table
        Any column types, nulls included; every column moves with its row.
    on : str or list of str
        Key column names; a row's partition is ``partition_of(hash_rows(table, on, seed), n)``.
    num_partitions : int
        At least 1.
    seed : int, default 0
        The hash seed; the same seed gives the same partitions on every device.
    stream : CUDA stream, optional
        The stream every kernel, allocation, scan and copy of the operation is queued on (CUDA
        tables only): a ``cupy.cuda.Stream``, a numba stream, an object with ``__cuda_stream__``
        or ``.ptr``, or an int ``cudaStream_t``. Default: CuPy's current stream. ``offsets`` is
        on the host, so the stream has been synchronised up to the scan when this returns.

    Returns
    -------
    (Table, numpy.ndarray)
        The partitioned table (on ``table.device``) and ``offsets``, a host (numpy) int64 array of
        ``num_partitions + 1`` entries: partition ``i`` holds rows ``[offsets[i], offsets[i+1])``.
        The rows of a partition keep their input order (stable) on every device, so the CPU and
        CUDA backends return identical tables.

    Raises
    ------
    KeyError
        A name in ``on`` is not a column (the message lists the columns).
    TypeError, ValueError
        ``on``, ``num_partitions``, ``seed`` or ``stream`` has the wrong type or value (a
        ``stream`` for a CPU table is a ``ValueError``).
    MemoryError
        The partitioned table (as large as ``table``) and its scratch would not fit in the memory
        available on the device (the host: the tightest of the system, cgroup and Dask worker
        limits); raised by the backend before it allocates anything.
    """
    names = normalize_on(table, on)
    n = check_num_partitions(num_partitions)
    s = check_seed(seed)
    with streams.operation(stream, table.device):
        fn, run_device = resolve("hash_partition", table.device)
        src = table.to(run_device)
        out, offsets = fn(src, key_columns(src, names, run_device), n, s)
        if run_device != table.device:
            out = out.to(table.device)
    return out, np.ascontiguousarray(offsets, dtype=np.int64)
