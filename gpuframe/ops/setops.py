"""Set operations on rows: ``unique``, ``union``, ``intersect`` and ``difference``.

Rows compare equal when every column does, with null == null, NaN == NaN and -0.0 == 0.0, as
SQL's set operations and DISTINCT do. Rows are grouped by the backend's ``group_ids`` (the
join's key preparation and hash tables with ``nulls_equal``), ``intersect`` and ``difference``
are the distinct rows of a semi and an anti join on every column (:mod:`gpuframe.ops.join`).
A backend may do better with its optional ``first_rows`` (the groups' first rows without group
ids) and ``distinct_rows`` (intersect's and difference's rows in one pass over each side: the
left rows' hash tables marked by the right rows); the CPU backend has both.

Order: ``unique`` keeps the rows in input order (``keep="first"``/``"any"``: the groups' first
rows; ``"last"``: their last rows, in input order); ``union`` lists the left table's distinct
rows first; ``intersect`` and ``difference`` keep the left table's order.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from ..backends.registry import capability, resolve
from ..core import memory
from ..core.table import Table
from .gather import take
from .keys import pair_for
from .select import _cast, concat, matched_columns

__all__ = ["unique", "union", "intersect", "difference", "group_keys"]

KEEP = ("first", "last", "any")


def _check_table(table: Any, param: str) -> Table:
    if not isinstance(table, Table):
        raise TypeError(f"{param} must be a gpuframe.Table, got {type(table).__name__}")
    return table


def _subset(table: Table, subset: Any, param: str = "subset") -> list[str]:
    if subset is None:
        names = list(table.column_names)
        if not names:
            raise ValueError(f"{param}: the table has no columns")
        return names
    if isinstance(subset, str):
        names = [subset]
    elif isinstance(subset, (list, tuple)) and all(isinstance(s, str) for s in subset):
        names = list(subset)
        if not names:
            raise ValueError(f"{param} must name at least one column, got {subset!r}")
    else:
        raise TypeError(f"{param} must be a column name or a list of column names, got {subset!r}")
    missing = [n for n in names if n not in table]
    if missing:
        raise KeyError(f"{param}: the table has no column {', '.join(map(repr, missing))}; its columns are "
                       f"{table.column_names}")
    if len(set(names)) != len(names):
        raise ValueError(f"{param} names a column twice, got {names}")
    return names


def group_keys(table: Table, names: Sequence[str]) -> tuple[Any, Any]:
    """``(gid, first)`` of the rows of ``table`` grouped by columns ``names`` on the table's
    device: every row's dense group id (groups numbered in the order of their first rows) and
    the first row of each group (ascending)."""
    cols = [table[n] for n in names]
    pairs = [pair_for(n, c.dtype) for n, c in zip(names, cols)]
    fn, run_dev = resolve("group_ids", table.device)
    return fn([c.to(run_dev) for c in cols], pairs)


def unique(table: Table, subset: Any = None, *, keep: str = "any") -> Table:
    """One row for every distinct value of the ``subset`` columns (every column by default).

    Parameters
    ----------
    table : Table
    subset : str or list of str, optional
        The columns that decide whether two rows are duplicates.
    keep : {"any", "first", "last"}, default "any"
        Which row of a group of duplicates stays: the first, the last, or any of them (the
        cheapest; today the first).

    Returns
    -------
    Table
        Every column of ``table``, the kept rows in input order.

    Raises
    ------
    TypeError, KeyError, ValueError
        Not a table, an unknown column in ``subset``, a bad ``keep``, or a column type that
        cannot be compared (nested types, binary...).
    """
    _check_table(table, "table")
    names = _subset(table, subset)
    if not isinstance(keep, str) or keep not in KEEP:
        raise ValueError(f"keep must be one of {list(KEEP)}, got {keep!r}")
    if table.num_rows <= 1:
        return table
    if keep == "last":
        gid, first = group_keys(table, names)
        fn, run_dev = resolve("last_rows", table.device)
        rows = fn(gid, int(first.shape[0]))
    else:
        rows = _first_rows(table, names)
    if int(rows.shape[0]) == table.num_rows:
        return table
    return take(table, memory.to_device(rows, table.device))


def _first_rows(table: Table, names: Sequence[str]) -> Any:
    """The first row of every group of equal rows of columns ``names`` (ascending): the
    backend's ``first_rows`` where it has one (no group ids made), else ``group_ids``'."""
    fn = capability("first_rows", table.device)
    if fn is None:
        return group_keys(table, names)[1]
    cols = [table[n] for n in names]
    return fn(cols, [pair_for(n, c.dtype) for n, c in zip(names, cols)])


def _pair_tables(left: Table, right: Table, op: str) -> tuple[Table, Table]:
    """Both tables with the left's column order and each column's promoted type."""
    _check_table(left, "left")
    _check_table(right, "right")
    if left.device != right.device:
        raise ValueError(f"{op}: left and right must be on the same device, got {left.device} and {right.device}; "
                         "move one with .to(device)")
    cols = matched_columns([left, right], op, ["left", "right"])

    def cast(t: Table) -> Table:
        return Table([(n, _cast(t[n], dt)) for n, dt in cols], t.num_rows)

    return cast(left), cast(right)


def union(left: Table, right: Table, *, distinct: bool = True) -> Table:
    """The rows of both tables: distinct ones (SQL ``UNION``), or every row (``distinct=False``,
    ``UNION ALL``: the left rows, then the right ones).

    Columns are matched by name (both tables must have the same names; the order is the left
    table's) and their types promoted as join keys are (int32 with int64 gives int64, a string
    dictionary with strings gives strings); types that cannot be combined raise ``TypeError``
    naming the column and both types.
    """
    if not isinstance(distinct, (bool, np.bool_)):
        raise TypeError(f"distinct must be a bool, got {distinct!r}")
    lt, rt = _pair_tables(left, right, "union")
    both = concat([lt, rt])
    return unique(both, keep="first") if distinct else both


def _set_join(left: Table, right: Table, how: str) -> Table:
    from .join import join_indices

    op = "intersect" if how == "semi" else "difference"
    _pair_tables(left, right, op)    # the same names, types that can be compared (the join promotes them)
    lt, rt = left, right
    names = list(lt.column_names)
    if lt.num_rows and rt.num_rows:
        got = _distinct_join(lt, rt, names, how)
        if got is not None:
            return got
    # distinct left rows first: the join then probes each once
    lu = unique(lt, keep="first")
    if lu.num_rows == 0 or (how == "anti" and rt.num_rows == 0):
        return lu
    if how == "semi" and rt.num_rows == 0:
        return lu.slice(0, 0)
    rows, _ = join_indices(lu, rt, on=names, how=how, nulls_equal=True)
    if int(rows.shape[0]) == lu.num_rows:
        return lu
    return take(lu, rows)


def _distinct_join(left: Table, right: Table, names: list[str], how: str) -> Optional[Table]:
    """``_set_join`` in one pass over each side by the backend's ``distinct_rows`` (the left rows
    in the join's tables, their groups marked by the right rows), or ``None`` without it."""
    fn = capability("distinct_rows", left.device)
    if fn is None:
        return None
    from .join import _keys

    pairs, lkeys, rkeys = _keys(left, right, names, names, left.device)
    rows = fn(lkeys, rkeys, pairs, how)
    if rows is None:
        return None
    if int(rows.shape[0]) == left.num_rows:
        return left
    return take(left, memory.to_device(rows, left.device))


def intersect(left: Table, right: Table) -> Table:
    """The distinct rows of ``left`` that are rows of ``right`` too (SQL ``INTERSECT``), in the
    left table's order and with its column types. Columns are matched by name and compared as
    their types promoted as in :func:`union`."""
    return _set_join(left, right, "semi")


def difference(left: Table, right: Table) -> Table:
    """The distinct rows of ``left`` that are not rows of ``right`` (SQL ``EXCEPT``), in the left
    table's order and with its column types. Columns are matched by name and compared as their
    types promoted as in :func:`union`."""
    return _set_join(left, right, "anti")
