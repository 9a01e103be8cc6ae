"""Groupby-aggregate: ``Table.groupby(by).agg(out=(column, op), ...)`` and ``groupby_agg``.

Rows are grouped by the backend's ``group_ids`` (null keys form one group unless ``dropna``;
NaN == NaN, -0.0 == 0.0), then every aggregation runs over the group ids (``group_reduce``).
Where the backend offers them (the CPU's capabilities): integer keys that span few values are
grouped by their slots instead of group ids (``dense_groups``: no hashing), and the
aggregations that allow it share one pass over the rows (``group_reduce_many``).

Semantics, as SQL's: nulls in the values are skipped; an aggregate over a group whose values are
all null is null (``count`` is 0), ``var`` and ``std`` (ddof 1) of a single value are null,
``first``/``last`` are the first/last non-null value in input order. Sums of integers and bools
are int64 (an overflow raises ``OverflowError``), of floats float64; ``mean``, ``var``, ``std``
and ``median`` are float64; ``count``, ``size`` and ``nunique`` int64; ``min``, ``max``,
``first`` and ``last`` keep the column's type (NaN is above every number, as in DuckDB; strings
compare bytewise). One row per group, key columns first; group order is the order of the groups'
first rows unless ``sort=True`` sorts by the keys.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from ..backends.registry import capability, resolve
from ..core import memory
from ..core.buffer import Buffer
from ..core.column import Column
from ..core.table import Table
from .gather import gather_column, take
from .keys import pair_for
from .setops import _check_table, _subset, group_keys

__all__ = ["GroupBy", "groupby_agg", "OPS"]

OPS = ("sum", "count", "size", "mean", "min", "max", "var", "std", "median", "first", "last", "nunique")
_NUMERIC_OPS = ("sum", "mean", "var", "std", "median")
_ORDERED_OPS = ("min", "max")


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def _is_ordered(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return (_is_numeric(t) or pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_date32(t)
            or pa.types.is_timestamp(t))


def _check_aggs(table: Table, by: Sequence[str], aggs: Any) -> list[tuple[str, str, str]]:
    if not isinstance(aggs, Mapping) or not aggs:
        raise TypeError("aggs must be a non-empty mapping {output name: (column, op)}, e.g. "
                        f"{{'total': ('v', 'sum')}}, got {aggs!r}")
    out = []
    for name, spec in aggs.items():
        if not isinstance(name, str):
            raise TypeError(f"aggs: output names must be str, got {name!r}")
        if (not isinstance(spec, (tuple, list)) or len(spec) != 2 or not isinstance(spec[0], str)
                or not isinstance(spec[1], str)):
            raise TypeError(f"aggs[{name!r}] must be a (column, op) pair of str, got {spec!r}")
        column, op = spec
        if op not in OPS:
            raise ValueError(f"aggs[{name!r}]: unknown op {op!r}; the ops are {list(OPS)}")
        if column not in table:
            raise KeyError(f"aggs[{name!r}]: the table has no column {column!r}; its columns are {table.column_names}")
        t = table[column].dtype
        if op in _NUMERIC_OPS and not _is_numeric(t):
            raise TypeError(f"aggs[{name!r}]: {op} needs a numeric (integer, float or bool) column, column "
                            f"{column!r} is {t}")
        if op in _ORDERED_OPS and not _is_ordered(t):
            raise TypeError(f"aggs[{name!r}]: {op} needs a column with an order, column {column!r} is {t}")
        if name in by:
            raise ValueError(f"aggs: output name {name!r} is a key column's name; pick another")
        out.append((name, column, op))
    return out


def groupby_agg(table: Table, by: Any, aggs: Mapping[str, tuple[str, str]], *, dropna: bool = False,
                sort: bool = False) -> Table:
    """Aggregate columns of ``table`` per group of the ``by`` columns.

    Parameters
    ----------
    table : Table
    by : str or list of str
        The key columns.
    aggs : mapping of str to (str, str)
        ``{output name: (column, op)}``; ``op`` is one of ``sum``, ``count`` (non-null values),
        ``size`` (rows), ``mean``, ``min``, ``max``, ``var``, ``std`` (ddof 1), ``median``,
        ``first``, ``last``, ``nunique`` (distinct non-null values).
    dropna : bool, default False
        Leave out the rows whose key has a null (otherwise null keys form one group).
    sort : bool, default False
        Sort the groups by their keys (ascending, nulls last); otherwise they come in the
        order of their first rows.

    Returns
    -------
    Table
        The key columns, then one column per aggregation in ``aggs`` order.

    Raises
    ------
    KeyError
        An unknown column.
    TypeError
        Arguments of the wrong type, or an op the column's type does not support (``sum`` of a
        string column...).
    ValueError
        An unknown op, or an output name that is a key column's name.
    OverflowError
        An integer sum that does not fit in int64.
    """
    _check_table(table, "table")
    names = _subset(table, by, "by")
    for flag, param in ((dropna, "dropna"), (sort, "sort")):
        if not isinstance(flag, bool):
            raise TypeError(f"{param} must be a bool, got {flag!r}")
    specs = _check_aggs(table, names, aggs)
    dev = table.device
    reduce, run_dev = resolve("group_reduce", dev)
    t = table.to(run_dev)
    if dropna:
        t = _drop_null_keys(t, names)
    dense = capability("dense_groups", run_dev)
    grouping = None
    if dense is not None and t.num_rows:
        grouping = dense([t[n] for n in names], [pair_for(n, t[n].dtype) for n in names], sort)
    if grouping is not None:
        # integer keys spanning few values: every reduction reads the keys' slots (one value
        # per slot), and the slots that hold rows are picked in the output's order
        gid, nids, select, first = grouping.groups, grouping.slots, grouping.order, grouping.first
        ngroups = grouping.ngroups
    else:
        gid, first = group_keys(t, names)
        nids = ngroups = int(first.shape[0])
        select = None
    out: list[tuple[str, Column]] = list(take(t.select(names), first).items())
    many = capability("group_reduce_many", run_dev)
    plain = [(t[column], op, column) for _, column, op in specs if op != "nunique"]
    if many is not None:
        # the backend's one pass over the rows for the aggregations that allow it
        reduced = iter(many(gid, nids, plain))
    else:
        reduced = (reduce(gid, nids, c, op, column) for c, op, column in plain)
    ids = None               # every row's group id, for nunique (dense keys: their slots)
    for name, column, op in specs:
        if op == "nunique":
            if ids is None:
                ids = gid if grouping is None else grouping.row_groups()
            col = _nunique(t, ids, nids, column, reduce)
        else:
            col = next(reduced)
        out.append((name, col if select is None else gather_column(col, select, check_bounds=False)))
    result = Table([(n, c.to(dev)) for n, c in out], ngroups)
    if sort and ngroups > 1 and not (grouping is not None and grouping.in_key_order):
        from .sort import sort as sort_table

        result = sort_table(result, names)
    return result


def _nunique(table: Table, gid: Any, ngroups: int, column: str, reduce: Any) -> Column:
    """Distinct non-null values per group: the (group, value) pairs grouped (set semantics:
    NaN == NaN, -0.0 == 0.0), then their non-null values counted per group."""
    dev = table.device
    n = table.num_rows
    gtype = pa.int32() if gid.dtype == np.int32 else pa.int64()
    pairs = Table([("g", Column(gtype, n, Buffer(gid, dev))), ("v", table[column])], n)
    _, first = group_keys(pairs, ["g", "v"])
    distinct = take(pairs, first)
    return reduce(distinct["g"].values(), ngroups, distinct["v"], "count", column)


def _drop_null_keys(table: Table, names: Sequence[str]) -> Table:
    """The rows whose key columns hold no null (the backend's ``valid_rows``)."""
    nullable = [table[n] for n in names if table[n].has_nulls]
    if not nullable:
        return table
    fn, run_dev = resolve("valid_rows", table.device)
    rows = fn([c.to(run_dev) for c in nullable])
    return take(table, memory.to_device(rows, table.device))


class GroupBy:
    """``table.groupby(by, dropna=False, sort=False)``: call :meth:`agg`."""

    def __init__(self, table: Table, by: Any, *, dropna: bool = False, sort: bool = False) -> None:
        _check_table(table, "table")
        self._names = _subset(table, by, "by")
        for flag, param in ((dropna, "dropna"), (sort, "sort")):
            if not isinstance(flag, bool):
                raise TypeError(f"{param} must be a bool, got {flag!r}")
        self._table = table
        self._dropna = dropna
        self._sort = sort

    def agg(self, aggs: Mapping[str, tuple[str, str]] | None = None, **named: tuple[str, str]) -> Table:
        """``groupby_agg(table, by, {**aggs, **named}, dropna=..., sort=...)``:
        ``t.groupby("k").agg(total=("v", "sum"), n=("v", "count"))``."""
        spec = dict(aggs or {})
        spec.update(named)
        return groupby_agg(self._table, self._names, spec, dropna=self._dropna, sort=self._sort)

    def __repr__(self) -> str:
        return f"GroupBy(by={self._names}, dropna={self._dropna}, sort={self._sort}, rows={self._table.num_rows})"
