"""Sort: ``sort(table, by)`` and the permutation behind it, ``sort_indices``.

The sort is stable (rows with equal keys keep their input order) and orders as DuckDB's
``ORDER BY`` does: NaN after every number (so first among the values when descending), ``-0.0``
equal to ``0.0``, nulls last unless ``nulls_last=False`` (for every key, whatever its direction),
strings by their UTF-8 bytes, dictionary columns by their string values.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from ..backends.registry import capability, resolve
from ..core import memory, streams
from ..core.column import Column
from ..core.dtypes import SUPPORTED_DESCRIPTION, Layout, is_supported
from ..core.table import Table
from .gather import take, take_permutation

__all__ = ["sort", "sort_indices"]


def _is_bool(x: Any) -> bool:
    return isinstance(x, (bool, np.bool_))


def _check_by(table: Table, by: Any) -> list[str]:
    if isinstance(by, str):
        names = [by]
    elif isinstance(by, (list, tuple)):
        names = list(by)
        if not names:
            raise ValueError("by must name at least one column, got an empty "
                             f"{type(by).__name__}")
        bad = [n for n in names if not isinstance(n, str)]
        if bad:
            raise TypeError(f"by must be a column name (str) or a list of them, got {bad[0]!r} in {by!r}")
    else:
        raise TypeError(f"by must be a column name (str) or a list of them, got {type(by).__name__} {by!r}")
    for name in names:
        if name not in table:
            raise KeyError(f"by: no column named {name!r}; the table has {table.column_names}")
    return names


def _check_descending(descending: Any, nkeys: int) -> list[bool]:
    if _is_bool(descending):
        return [bool(descending)] * nkeys
    if isinstance(descending, (list, tuple)):
        bad = [d for d in descending if not _is_bool(d)]
        if bad:
            raise TypeError(f"descending must be a bool or a list of bools, got {bad[0]!r} in {descending!r}")
        if len(descending) != nkeys:
            raise ValueError(f"descending must have one bool per key column ({nkeys}), got {len(descending)}: "
                             f"{descending!r}")
        return [bool(d) for d in descending]
    raise TypeError(f"descending must be a bool or a list of one bool per key column, got "
                    f"{type(descending).__name__} {descending!r}")


def _key_columns(table: Any, by: Any, descending: Any, nulls_last: Any) -> tuple[list[Column], list[bool]]:
    if not isinstance(table, Table):
        raise TypeError(f"table must be a gpuframe Table, got {type(table).__name__}")
    names = _check_by(table, by)
    desc = _check_descending(descending, len(names))
    if not _is_bool(nulls_last):
        raise TypeError(f"nulls_last must be a bool, got {type(nulls_last).__name__} {nulls_last!r}")
    cols = []
    for name in names:
        col = table[name]
        if not is_supported(col.dtype):
            raise TypeError(f"cannot sort by column {name!r} of type {col.dtype}; sort keys may be "
                            f"{SUPPORTED_DESCRIPTION}")
        cols.append(col)
    return cols, desc


def _scratch_per_row(cols: Sequence[Column]) -> int:
    """About the bytes a row the sort allocates: each key's words (8 bytes for a 64-bit value or
    a string rank, else 4; 4 more for null flags), the permutations (two of 4 bytes, the int64
    result) and one word buffer; ranking strings needs about 56 bytes a row while it runs."""
    words = 0
    strings = False
    for col in cols:
        lay = col.layout
        if lay == Layout.FIXED:
            words += 8 if np.dtype(col.values().dtype).itemsize == 8 else 4
        elif lay == Layout.BOOL:
            words += 4
        else:
            words += 8
            strings = True
        if col.validity is not None or col.dictionary is not None:
            words += 4
    return max(words + 24, 56 if strings else 0)


def sort_indices(table: Table, by: Any, *, descending: Any = False, nulls_last: bool = True) -> Any:
    """The permutation that sorts ``table`` by ``by`` (stable).

    Parameters
    ----------
    table : Table
    by : str or list of str
        The key columns, most significant first. Keys may be any integer width, float32/64,
        bool, string, large_string, dictionary<int, string> (ordered by the string values),
        date32 or timestamp, with nulls.
    descending : bool or list of bool, default False
        One direction for every key, or one per key.
    nulls_last : bool, default True
        Nulls after every value of their key (``False``: before), whatever its direction.

    Returns
    -------
    int64 array
        ``table.num_rows`` row numbers on ``table.device`` (numpy on the CPU, a device array on
        CUDA): row ``perm[i]`` of ``table`` is row ``i`` of the sorted table. Rows with equal keys
        keep their input order. Floats: NaN sorts after every number (before them when
        descending), ``-0.0`` and ``0.0`` tie.

    Raises
    ------
    KeyError
        A name in ``by`` is not a column of ``table``; the message lists the columns.
    TypeError
        ``table`` is not a Table; ``by`` is not a str or a list of str; ``descending`` is not a
        bool or a list of bools; ``nulls_last`` is not a bool; a key column's type cannot be
        sorted (the message names the column and its type).
    ValueError
        ``by`` is empty; ``descending`` is a list of another length than ``by``.
    """
    return _sort_perm(table, by, descending, nulls_last, keyed=False)[0]


def _sort_perm(table: Table, by: Any, descending: Any, nulls_last: Any, keyed: bool,
               starts: Optional[Sequence[int]] = None) -> tuple[Any, Any, Any]:
    """``(perm, key, carried)``: the permutation; with ``keyed`` the sorted first key column
    where the backend yields it without a gather (``sort_keyed``), else ``None``; and, for a
    table of one key and one other column, that column in sorted order where the backend's
    sort carried it with its rows (no permutation, no random gather: ``perm`` is then
    ``None``), else ``None``. ``starts``: the rows are sorted runs already (see
    :func:`_merge_runs`), merged where the backend can (``merge_indices``)."""
    cols, desc = _key_columns(table, by, descending, nulls_last)
    dev = table.device
    merge = capability("merge_indices", dev) if starts is not None else None
    with streams.operation(None, dev):
        n = table.num_rows
        memory.ensure_available("sort", n * (_scratch_per_row(cols) + (8 if merge is not None else 0)), dev, rows=n,
                                what="the merge's keys and permutations" if merge is not None else
                                "the sort's keys and permutations")
        if merge is not None:
            return merge(cols, desc, bool(nulls_last), starts), None, None
        both = capability("sort_keyed", dev) if keyed else None
        if both is not None:
            rest = [c for c in table.column_names if c != _first_key(by)] if len(cols) == 1 else []
            return both(cols, desc, bool(nulls_last), table[rest[0]] if len(rest) == 1 else None)
        fn, run_device = resolve("sort_indices", dev)
        if run_device != dev:
            perm = fn([c.to(run_device) for c in cols], desc, bool(nulls_last))
            return memory.to_device(perm, dev), None, None
        return fn(cols, desc, bool(nulls_last)), None, None


def sort(table: Table, by: Any, *, descending: Any = False, nulls_last: bool = True) -> Table:
    """``table``'s rows ordered by ``by`` (stable: rows with equal keys keep their input order).

    Parameters
    ----------
    table : Table
    by : str or list of str
        The key columns, most significant first (types as in :func:`sort_indices`).
    descending : bool or list of bool, default False
        One direction for every key, or one per key.
    nulls_last : bool, default True
        Nulls after every value of their key (``False``: before), whatever its direction.

    Returns
    -------
    Table
        Every column of ``table``, rows in key order, on ``table.device``: ``take(table,
        sort_indices(table, by, ...))``. NaN sorts after every number (before them when
        descending); ``-0.0`` and ``0.0`` tie; strings in UTF-8 byte order; dictionary columns
        by their string values.

    Raises
    ------
    KeyError, TypeError, ValueError
        As :func:`sort_indices`.
    MemoryError
        The sorted table would not fit in the memory available on its device.
    """
    perm, key, carried = _sort_perm(table, by, descending, nulls_last, keyed=True)
    if key is None:
        return take_permutation(table, perm)
    # the key column came sorted out of the sort: gather only the others (or none: carried)
    name = _first_key(by)
    rest = [c for c in table.column_names if c != name]
    if carried is not None:
        others = {rest[0]: carried}
    else:
        others = take_permutation(table.select(rest), perm) if rest else None
    return Table([(c, key if c == name else others[c]) for c in table.column_names], num_rows=table.num_rows)


def _first_key(by: Any) -> str:
    """The first key's name of a ``by`` already checked (a str or a list of str)."""
    return by if isinstance(by, str) else by[0]


def _merge_runs(table: Table, by: Any, starts: Sequence[int], *, descending: Any = False,
                nulls_last: bool = True, columns: Optional[Sequence[str]] = None) -> Table:
    """:func:`sort` of a table whose rows are sorted runs already (rows ``starts[r]`` to
    ``starts[r + 1] - 1`` each sorted stably by the same keys, e.g. the pieces a distributed
    sort receives, one per rank): the same table (its ``columns`` only, when given), the runs
    merged where the backend can (``merge_indices``: ties take the earlier run's rows first, as
    a stable sort does), else sorted."""
    perm = _sort_perm(table, by, descending, nulls_last, keyed=False, starts=starts)[0]
    return take(table if columns is None else table.select(list(columns)), perm)
