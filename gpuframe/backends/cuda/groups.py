"""Grouping on a CUDA device: group ids (unique, set operations, groupby), the last rows of
groups, and the aggregations of groupby, with the kernels of :mod:`gpuframe.kernels.group` and the
join's slot table (:func:`gpuframe.backends.cuda.join.slot_build`).

Everything stays on the device: what crosses to the host is the number of groups and a flag or
two (an integer sum's overflow). Group ids and the groups' first rows equal the CPU backend's
(groups numbered in the order of their first rows); aggregates equal them too, but for float
sums (and the means and variances made from them), added in the threads' order.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from ...core import memory
from ...core.buffer import Buffer
from ...core.column import Column
from ...core.device import Device, launch_context
from ...core.dtypes import Layout
from .._keys import prepare_side
from ..contract import KeyPair
from ._target import widen
from .join import _count_rows, _key_word, _row_hash_cuda, _scalar, _select_rows, _string_span, slot_build

__all__ = ["group_ids", "last_rows", "group_reduce"]

# an integer sum whose float64 shadow reaches this far may have wrapped (the shadow's rounding
# is far below the margin)
_INT_SUM_LIMIT = float(2**63) * (1 - 2**-20)


def _k():
    from gpuframe.kernels.group import cuda_kernels

    return cuda_kernels()


def _launch(kernel: Any, n: int, *args: Any) -> None:
    from .launch import launch

    launch(kernel, n, *args)


def group_ids(columns: Sequence[Column], pairs: Sequence[KeyPair]) -> tuple[Any, Any]:
    """``(gid, first)`` on the device: as the CPU backend's (groups in the order of their first
    rows, each group's first row ascending)."""
    dev = columns[0].device
    n = len(columns[0])
    k = _k()
    with launch_context(dev):
        if n == 0:
            e = memory.empty(0, np.int64, dev)
            return e, e
        from gpuframe.kernels.join import table_bits

        # the table (16 bytes a slot), representatives, first rows, flags, counts and their scan,
        # group ids and first rows
        memory.ensure_available("group_ids", (16 << table_bits(n)) + 57 * n, dev, rows=n,
                                what="the hash table, group ids and scratch")
        sk = prepare_side(columns, pairs, dev, widen, _key_word, _string_span)
        if sk.valid.shape[0] != 0:
            raise AssertionError("grouping keys with nulls_equal have no rows left out")
        _row_hash_cuda(sk, dev)
        tab, brep, unique = slot_build(sk, dev)
        del tab
        if unique:
            ids = memory.empty(n, np.int64, dev)
            _launch(k.iota, n, ids)
            return ids, ids
        rmin = memory.full(n, n, np.int64, dev)
        _launch(k.rep_min, n, brep, rmin)
        flags = memory.empty(n, np.uint8, dev)
        _launch(k.first_flags, n, brep, rmin, flags)
        offs, ngroups = _count_rows(flags, 1, dev)
        del flags
        gid = memory.empty(n, np.int64, dev)
        first = memory.empty(ngroups, np.int64, dev)
        _launch(k.dense_ids, n, brep, rmin, offs, gid, first)
        return gid, first


def last_rows(gid: Any, ngroups: int) -> Any:
    """The last row of every group, in input order, on the device."""
    dev = memory.array_device(gid)
    n = int(gid.shape[0])
    k = _k()
    with launch_context(dev):
        last = memory.full(max(ngroups, 1), -1, np.int64, dev)
        _launch(k.group_max_row, n, gid, last)
        flags = memory.empty(n, np.uint8, dev)
        _launch(k.last_flags, n, gid, last, flags)
        rows, _ = _select_rows(flags, 1, dev)
        return rows


# --------------------------------------------------------------------------- aggregations
def _validity(col: Column, dev: Device) -> tuple[Any, bool]:
    v = col.validity_bytes()
    return (memory.empty(1, np.uint8, dev), False) if v is None else (v, True)


def _flag_column(values: Any, has: Any, dtype: pa.DataType, dev: Device) -> Column:
    """A column of device ``values`` with a validity bitmap from the uint8 ``has`` flags (none
    when every flag is set)."""
    n = int(values.shape[0])
    bits = memory.empty(max((n + 7) // 8, 1), np.uint8, dev)
    count = memory.zeros(1, np.int64, dev)
    _launch(_k().pack_flags, (n + 7) // 8, has, bits, count)
    valid = _scalar(count, 0)
    if valid == n:
        return Column(dtype, n, Buffer(values, dev))
    return Column(dtype, n, Buffer(values, dev), Buffer(bits, dev), None, None, 0, n - valid)


def _gather_rows(col: Column, rows: Any) -> Column:
    from .gather import gather_column

    return gather_column(col, rows, None)


def _ordered_words(col: Column, dev: Device, name: str, op: str) -> Any:
    """The column's values as int64 or float64 words of the same order, on the device."""
    t = col.dtype
    if pa.types.is_floating(t):
        return col.values() if pa.types.is_float64(t) else widen(col.values(), np.float64, dev)
    if pa.types.is_boolean(t):
        return widen(col.bool_bytes(), np.int64, dev)
    if pa.types.is_integer(t) or pa.types.is_date32(t) or pa.types.is_timestamp(t):
        v = col.values()
        if v.dtype == np.uint64:
            out = memory.empty(len(col), np.int64, dev)
            _launch(_k().ordered_u64, len(col), v, out)
            return out
        return v if v.dtype == np.int64 else widen(v, np.int64, dev)
    raise TypeError(f"{op} needs a column with an order (numbers, bool, dates, timestamps, strings), "
                    f"column {name!r} is {t}")


def _numeric(col: Column, dev: Device, op: str, name: str, as_float: bool) -> Any:
    t = col.dtype
    if pa.types.is_boolean(t):
        src = col.bool_bytes()
    elif pa.types.is_integer(t) or pa.types.is_floating(t):
        src = col.values()
    else:
        raise TypeError(f"{op} needs a numeric (integer, float or bool) column, column {name!r} is {t}")
    if as_float or pa.types.is_floating(t):
        return src if src.dtype == np.float64 else widen(src, np.float64, dev)
    if src.dtype == np.uint64:
        valid, has_valid = _validity(col, dev)
        flag = memory.zeros(1, np.int64, dev)
        _launch(_k().any_high, len(col), src, valid, has_valid, flag)
        if _scalar(flag, 0):
            raise OverflowError(f"{op} of column {name!r} overflows int64; cast it to float64 first")
        return memory.view_as(src, np.int64)    # every value fits: the sum is checked like any other
    return src if src.dtype == np.int64 else widen(src, np.int64, dev)


def group_reduce(gid: Any, ngroups: int, column: Column, op: str, name: str = "<column>") -> Column:
    """Aggregate ``column`` per group on the device (the CPU backend's contract)."""
    dev = column.device
    with launch_context(dev):
        return _reduce(gid, ngroups, column, op, name, dev)


def _reduce(gid: Any, ngroups: int, column: Column, op: str, name: str, dev: Device) -> Column:
    k = _k()
    n = int(gid.shape[0])
    G = max(ngroups, 1)
    valid, has_valid = _validity(column, dev)
    if op in ("size", "count"):
        out = memory.zeros(G, np.int64, dev)
        _launch(k.count_rows, n, gid, valid, has_valid and op == "count", out)
        return Column(pa.int64(), ngroups, Buffer(out[:ngroups], dev))
    if op in ("first", "last"):
        rows = memory.full(G, n if op == "first" else -1, np.int64, dev)
        _launch(k.first_last, n, gid, valid, has_valid, op == "last", rows)
        if op == "first":
            _launch(k.none_if, ngroups, rows, np.int64(n))
        return _gather_rows(column, rows[:ngroups])
    if op in ("min", "max"):
        if column.layout == Layout.DICTIONARY:
            from .select import decode_dictionary

            # the order is the strings'
            return _reduce(gid, ngroups, decode_dictionary(column), op, name, dev)
        rows = memory.full(G, -1, np.int64, dev)
        if column.layout == Layout.STRING:
            chars = column.chars() if column.chars().shape[0] else memory.empty(1, np.uint8, dev)
            _launch(k.arg_best_string, n, gid, column.offsets_view(), chars, valid, has_valid, op == "max", rows)
        else:
            _launch(k.arg_best, n, gid, _ordered_words(column, dev, name, op), valid, has_valid, op == "max", rows)
        return _gather_rows(column, rows[:ngroups])
    cnt = memory.zeros(G, np.int64, dev)
    if op == "sum" and not pa.types.is_floating(column.dtype):
        vals = _numeric(column, dev, op, name, as_float=False)
        out = memory.zeros(G, np.int64, dev)
        fsum = memory.zeros(G, np.float64, dev)
        _launch(k.sum_int, n, gid, vals, valid, has_valid, out, fsum, cnt)
        flag = memory.zeros(1, np.int64, dev)
        _launch(k.any_past, ngroups, fsum, _INT_SUM_LIMIT, flag)
        if _scalar(flag, 0):
            raise OverflowError(f"{op} of column {name!r} overflows int64; cast it to float64 first")
        return _with_counts(out[:ngroups], cnt, 1, pa.int64(), dev)
    vals = _numeric(column, dev, op, name, as_float=True)
    if op == "median":
        return _median(gid, ngroups, column, vals, valid, has_valid, dev)
    sums = memory.zeros(G, np.float64, dev)
    _launch(k.sum_float, n, gid, vals, valid, has_valid, sums, cnt)
    if op == "sum":
        return _with_counts(sums[:ngroups], cnt, 1, pa.float64(), dev)
    mean = memory.empty(G, np.float64, dev)
    has = memory.empty(G, np.uint8, dev)
    _launch(k.finish_moments, ngroups, np.int64(0), sums, sums, cnt, mean, has)
    if op == "mean":
        return _flag_column(mean[:ngroups], has[:ngroups], pa.float64(), dev)
    if op in ("var", "std"):
        m2 = memory.zeros(G, np.float64, dev)
        _launch(k.sq_dev, n, gid, vals, valid, has_valid, mean, m2)
        out = memory.empty(G, np.float64, dev)
        _launch(k.finish_moments, ngroups, np.int64(1 if op == "var" else 2), sums, m2, cnt, out, has)
        return _flag_column(out[:ngroups], has[:ngroups], pa.float64(), dev)
    raise ValueError(f"unknown aggregation {op!r}")


def _with_counts(values: Any, cnt: Any, least: int, dtype: pa.DataType, dev: Device) -> Column:
    ngroups = int(values.shape[0])
    has = memory.empty(max(ngroups, 1), np.uint8, dev)
    _launch(_k().has_from_counts, ngroups, cnt, np.int64(least), has)
    return _flag_column(values, has[:ngroups], dtype, dev)


def _median(gid: Any, ngroups: int, column: Column, vals: Any, valid: Any, has_valid: bool, dev: Device) -> Column:
    """Medians: the rows sorted by (group, value, nulls last) with the backend's sort, then one
    thread per group reads the middle of its non-null values."""
    from .sort import sort_indices

    k = _k()
    n = int(gid.shape[0])
    G = max(ngroups, 1)
    gcol = Column(pa.int64(), n, Buffer(gid, dev))
    vcol = _float_with_validity(vals, column, dev)
    order = sort_indices([gcol, vcol], [False, False], True)
    size = memory.zeros(G, np.int64, dev)
    _launch(k.count_rows, n, gid, valid, False, size)
    gstart = memory.cumsum_exclusive(size[:ngroups])
    cnt = memory.zeros(G, np.int64, dev)
    _launch(k.count_rows, n, gid, valid, has_valid, cnt)
    out = memory.empty(G, np.float64, dev)
    has = memory.empty(G, np.uint8, dev)
    _launch(k.median_sorted, ngroups, gstart, cnt, order, vals, out, has)
    return _flag_column(out[:ngroups], has[:ngroups], pa.float64(), dev)


def _float_with_validity(vals: Any, column: Column, dev: Device) -> Column:
    """A float64 column of ``vals`` with ``column``'s nulls (its bitmap repacked from offset 0)."""
    n = len(column)
    if column.validity is None:
        return Column(pa.float64(), n, Buffer(vals, dev))
    v = column.validity_bytes()
    return _flag_column(vals, v, pa.float64(), dev)
