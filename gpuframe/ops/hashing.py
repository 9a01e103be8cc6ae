"""Row hashing: ``hash_rows(table, on, seed)``, the hash every partition and shuffle agrees on.

The hash of a key (a contract: the join and the distributed shuffle rely on it)
-------------------------------------------------------------------------------
The hash of a value depends only on its canonical value within its type family, so that two
tables hash-partitioned separately (the two sides of a distributed join) send equal keys to the
same place, on the CPU and on CUDA alike (bit-identical):

* integers of every width, signed or unsigned, ``date32``, ``timestamp`` and ``bool`` (0/1):
  ``hash_u64(value as int64 bits, seed)``; ``uint64`` values are hashed by their bits (int32 ``7``
  and int64 ``7`` hash the same; int64 ``-1`` and uint64 ``2**64 - 1`` too);
* ``float32`` and ``float64``: the canonical float64 bits (float32 widened exactly, ``-0.0`` ->
  ``+0.0``, every NaN -> one NaN, ``0x7FF8000000000000``), then ``hash_u64``;
* ``string``, ``large_string`` and ``dictionary<int, string>``: a hash of the utf8 bytes, the same
  for the same string whichever of the three types holds it: ``h = hash_u64(length, seed)``, then
  ``h = fmix64(h ^ w)`` for each little-endian 8-byte word ``w`` and for the zero-padded tail;
* null, of any type: ``NULL_HASH`` mixed with the seed, ``hash_u64(NULL_HASH, seed)``;
* one key column: the row hash is that column's hash; several: ``h = hash(col0)``, then
  ``h = hash_combine(h, hash(colj))`` for ``j = 1, 2, ...`` (every column with the same seed).

Callers that need type promotion between two sides promote before hashing: int32 vs int64 and
string vs large_string vs dictionary are canonical already; int vs float is not. The per-row
functions (``fmix64``, ``hash_u64``, ``hash_combine``, ``hash_bytes``, ``partition_of``...) live in
:mod:`gpuframe.kernels.hashing` and can be called inline from ``@njit`` and ``@cuda.jit`` code.
"""
from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np

from ..backends.registry import resolve
from ..core import memory, streams
from ..core.column import Column
from ..core.table import Table

__all__ = ["hash_rows", "normalize_on", "check_seed"]

OnLike = Union[str, Sequence[str]]


def normalize_on(table: Table, on: OnLike, param: str = "on") -> list[str]:
    """Validate key column names: a str or a non-empty list of str, each a column of ``table``."""
    if isinstance(on, str):
        names = [on]
    elif isinstance(on, (list, tuple)):
        names = list(on)
        if not names:
            raise ValueError(f"{param} must name at least one column, got {on!r}")
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"{param} must be a column name or a list of column names, got {on!r}")
    else:
        raise TypeError(f"{param} must be a column name or a list of column names, got {on!r}")
    for name in names:
        if name not in table:
            raise KeyError(f"{param}: no column named {name!r}; the table has {table.column_names}")
    return names


def check_seed(seed: Any) -> np.uint64:
    """``seed`` as the kernels take it: an int in ``[0, 2**64)``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int in [0, 2**64), got {seed!r}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
    return np.uint64(int(seed))


def key_columns(table: Table, names: Sequence[str], device: Any) -> list[Column]:
    """The key columns, moved to ``device`` when a backend fallback runs elsewhere."""
    return [table[n].to(device) for n in names]


def hash_rows(table: Table, on: OnLike, seed: int = 0, *, stream: Any = None) -> Any:
    """64-bit hash of each row's key columns ``on``.

    Parameters
    ----------
    table : Table
    on : str or list of str
        Key column names, hashed in this order.
    seed : int, default 0
        In ``[0, 2**64)``; the same seed gives the same hashes on every device.
    stream : CUDA stream, optional
        The operation's stream (CUDA tables only; see :func:`gpuframe.ops.join.merge`).

    Returns
    -------
    uint64 device array
        ``table.num_rows`` hashes on ``table.device`` (numpy on the CPU), following the
        contract in this module's docstring.

    Raises
    ------
    KeyError
        A name in ``on`` is not a column (the message lists the columns).
    TypeError, ValueError
        ``on`` or ``seed`` has the wrong type or value.
    """
    names = normalize_on(table, on)
    s = check_seed(seed)
    with streams.operation(stream, table.device):
        fn, run_device = resolve("hash_rows", table.device)
        if table.num_rows == 0:
            return memory.empty(0, np.uint64, table.device)
        out = fn(key_columns(table, names, run_device), s)
        return memory.to_device(out, table.device)
