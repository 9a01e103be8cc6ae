"""Hash join: ``merge``, ``join_indices`` and ``join_size``.

All three validate their arguments, check and promote the key types (:mod:`gpuframe.ops.keys`)
and name the output columns here; the backend (``"join"`` in :mod:`gpuframe.backends.registry`)
normalises the keys and returns gather maps, and a gather materialises them. A backend that can
join and write the output in one pass (the CPU's ``"join_fused"`` capability) does so instead.
The CPU runs radix-partitioned hash tables, CUDA one global table, from the same per-row kernel
source (:mod:`gpuframe.kernels.join`).

Semantics
---------
* ``how``: ``inner``, ``left``, ``right``, ``outer``, ``semi`` (left rows with a match) and
  ``anti`` (left rows without one, null keys included).
* Null keys match nothing (SQL); ``nulls_equal=True`` makes a null match a null. NaN matches
  NaN and ``-0.0`` matches ``0.0``.
* Key types are promoted (see :mod:`gpuframe.ops.keys`); incompatible ones raise ``TypeError``.
* Row order of ``inner``/``left``/``right``/``outer`` results is unspecified, as in SQL (the
  CPU backend emits rows partition by partition; CUDA emits them in probe-row order, then the
  unmatched build rows). ``semi``/``anti`` keep the left table's order. Sort the result if you
  need an order.
* Row numbers are 64-bit throughout. The output size is counted first; an output that cannot
  fit in the free memory of its device raises ``MemoryError`` before anything is allocated.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from ..backends.contract import KeyPair, OutputColumn
from ..backends.registry import capability, resolve
from ..core import memory, streams
from ..core.column import Column
from ..core.device import Device
from ..core.table import Table
from .gather import gather_column, take
from .keys import resolve_key_pairs

__all__ = ["merge", "join_indices", "join_size", "HOWS"]

HOWS = ("inner", "left", "right", "outer", "semi", "anti")
MERGE_HOWS = HOWS + ("cross",)   # merge alone: the cross product (Cylon's Product) has no keys
OnLike = Union[str, Sequence[str], None]


# =========================================================================== validation
def _names(value: Any, param: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, (list, tuple)) and not value:
        raise ValueError(f"{param} must name at least one column, got {value!r}")
    raise TypeError(f"{param} must be a column name or a list of column names, got {value!r}")


def _check_present(table: Table, names: Sequence[str], param: str, side: str) -> None:
    missing = [n for n in names if n not in table]
    if missing:
        raise KeyError(f"{param}: the {side} table has no column {', '.join(map(repr, missing))}; "
                       f"its columns are {table.column_names}")


def _resolve_on(left: Table, right: Table, on: OnLike, left_on: OnLike, right_on: OnLike,
                how: str, nulls_equal: Any) -> tuple[list[str], list[str]]:
    if not isinstance(left, Table):
        raise TypeError(f"left must be a gpuframe.Table, got {type(left).__name__}")
    if not isinstance(right, Table):
        raise TypeError(f"right must be a gpuframe.Table, got {type(right).__name__}")
    if not isinstance(how, str) or how not in HOWS:
        raise ValueError(f"how must be one of {list(HOWS)}, got {how!r}")
    if not isinstance(nulls_equal, (bool, np.bool_)):
        raise TypeError(f"nulls_equal must be a bool, got {nulls_equal!r}")
    if left.device != right.device:
        raise ValueError(f"left and right must be on the same device, got {left.device} and {right.device}; "
                         "move one with .to(device)")
    if on is not None:
        if left_on is not None or right_on is not None:
            raise ValueError("pass either on= or left_on= and right_on=, not both; "
                             f"got on={on!r}, left_on={left_on!r}, right_on={right_on!r}")
        lnames = rnames = _names(on, "on")
    elif left_on is not None or right_on is not None:
        if left_on is None or right_on is None:
            raise ValueError("left_on and right_on must be given together; "
                             f"got left_on={left_on!r}, right_on={right_on!r}")
        lnames = _names(left_on, "left_on")
        rnames = _names(right_on, "right_on")
        if len(lnames) != len(rnames):
            raise ValueError(f"left_on and right_on must name the same number of columns, got "
                             f"{len(lnames)} ({lnames}) and {len(rnames)} ({rnames})")
    else:
        common = [n for n in left.column_names if n in right]
        if not common:
            raise ValueError("no key columns: pass on= or left_on=/right_on= (the tables share no "
                             f"column names; left has {left.column_names}, right has {right.column_names})")
        lnames = rnames = common
    _check_present(left, lnames, "on" if on is not None or left_on is None else "left_on", "left")
    _check_present(right, rnames, "on" if on is not None or right_on is None else "right_on", "right")
    for param, names in (("left_on", lnames), ("right_on", rnames)):
        if len(set(names)) != len(names):
            raise ValueError(f"{param} names a column twice, got {names}")
    return lnames, rnames


def _check_suffixes(suffixes: Any) -> tuple[str, str]:
    if (not isinstance(suffixes, (tuple, list)) or len(suffixes) != 2
            or not all(isinstance(s, str) for s in suffixes)):
        raise TypeError(f"suffixes must be a pair of str like ('_x', '_y'), got {suffixes!r}")
    if suffixes[0] == suffixes[1]:
        raise ValueError(f"suffixes must differ, got {suffixes!r}")
    return suffixes[0], suffixes[1]


# =========================================================================== core
def _keys(left: Table, right: Table, lnames: list[str], rnames: list[str],
          device: Device) -> tuple[list[KeyPair], list[Column], list[Column]]:
    """The promoted key pairs and each side's key columns on ``device`` (where the backend runs)."""
    pairs = resolve_key_pairs(left, right, lnames, rnames)
    return pairs, [left[n].to(device) for n in lnames], [right[n].to(device) for n in rnames]


def _memory_guard(device: Device, bytes_per_row: int, op: str, what: str) -> Callable[[int], None]:
    """The join's ``on_count``: :func:`gpuframe.core.memory.ensure_available` for ``total`` output
    rows of ``bytes_per_row`` bytes, once the backend has counted them. Its ``op`` attribute names
    the operation for a backend's own guards (the CUDA join's hash table and scratch)."""
    def check(total: int) -> None:
        memory.ensure_available(op, int(total) * int(bytes_per_row), device, rows=total, what=what)
    check.op = op  # type: ignore[attr-defined]
    return check


def join_size(left: Table, right: Table, on: OnLike = None, *, left_on: OnLike = None,
              right_on: OnLike = None, how: str = "inner", nulls_equal: bool = False, stream: Any = None) -> int:
    """Number of rows ``merge``/``join_indices`` would return, without building them.

    Parameters are those of :func:`merge`. For ``semi``/``anti`` it is the number of left rows
    selected.
    """
    lnames, rnames = _resolve_on(left, right, on, left_on, right_on, how, nulls_equal)
    with streams.operation(stream, left.device):
        fn, run_dev = resolve("join_size", left.device)
        pairs, lkeys, rkeys = _keys(left, right, lnames, rnames, run_dev)
        return int(fn(lkeys, rkeys, pairs, how, bool(nulls_equal)))


def join_indices(left: Table, right: Table, on: OnLike = None, *, left_on: OnLike = None,
                 right_on: OnLike = None, how: str = "inner", nulls_equal: bool = False,
                 stream: Any = None) -> tuple[Any, Any]:
    """Gather maps of a join: ``(left_idx, right_idx)``, int64 arrays on the tables' device.

    Output row ``k`` pairs left row ``left_idx[k]`` with right row ``right_idx[k]``; ``-1``
    marks the missing side of an unmatched row in ``left``/``right``/``outer`` joins. For
    ``semi``/``anti`` joins ``left_idx`` lists the selected left rows in left order and
    ``right_idx`` is ``None``. Row order otherwise is unspecified (see the module notes).

    Parameters are those of :func:`merge`.
    """
    lnames, rnames = _resolve_on(left, right, on, left_on, right_on, how, nulls_equal)
    with streams.operation(stream, left.device):
        lidx, ridx = _join(left, right, lnames, rnames, how, nulls_equal, 8 if how in ("semi", "anti") else 16,
                           "join_indices", "the gather maps")
    return lidx, ridx


def _join(left: Table, right: Table, lnames: list[str], rnames: list[str], how: str, nulls_equal: bool,
          bytes_per_row: int, op: str, what: str) -> tuple[Any, Any]:
    """The backend's gather maps, on the tables' device."""
    fn, run_dev = resolve("join", left.device)
    pairs, lkeys, rkeys = _keys(left, right, lnames, rnames, run_dev)
    lidx, ridx = fn(lkeys, rkeys, pairs, how, bool(nulls_equal),
                    on_count=_memory_guard(run_dev, bytes_per_row, op, what))
    dev = left.device
    return memory.to_device(lidx, dev), None if ridx is None else memory.to_device(ridx, dev)


# --------------------------------------------------------------------------- output columns
def _output_columns(left: Table, right: Table, pairs: list[KeyPair], how: str,
                    suffixes: tuple[str, str]) -> list[OutputColumn]:
    """The merged table's columns: names (suffixes where both sides have one), sources and types.

    Left columns come first (a key pair with one name on both sides is merged in place), then
    the right columns that are not merged keys.
    """
    lkey = {p.left: i for i, p in enumerate(pairs)}
    rkey = {p.right: i for i, p in enumerate(pairs)}
    coalesced = {p.left for p in pairs if p.left == p.right}
    left_names = list(left.column_names)
    right_names = [n for n in right.column_names if not (n in rkey and n in coalesced)]
    lset = set(n for n in left_names if n not in coalesced) if how not in ("semi", "anti") else set()
    rset = set(right_names)
    sx, sy = suffixes

    def out_name(name: str, side: str) -> str:
        clash = name in rset if side == "left" else name in lset
        return name + (sx if side == "left" else sy) if clash else name

    cols: list[OutputColumn] = []
    for name in left_names:
        if name in coalesced:
            pair = pairs[lkey[name]]
            out_t = pair.out_type
            if pair.range_checked:
                if how == "outer":
                    raise TypeError(
                        f"an outer join on {name!r} merges a {pair.left_type} key with a {pair.right_type} key "
                        "into one column, and no type holds every value of both; pass left_on= and right_on= "
                        "to keep both key columns, or cast one side first")
                out_t = pair.right_type if how == "right" else pair.left_type
            cols.append(OutputColumn(name, "key", name, out_t, lkey[name]))
        else:
            cols.append(OutputColumn(out_name(name, "left"), "left", name, left[name].dtype, lkey.get(name)))
    if how in ("semi", "anti"):
        return cols
    for name in right_names:
        cols.append(OutputColumn(out_name(name, "right"), "right", name, right[name].dtype, rkey.get(name)))
    names = [c.name for c in cols]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"the merged table would have duplicate columns {dup}; pick other suffixes "
                         f"than {suffixes!r} or rename the columns first")
    return cols


def _bytes_per_row(table: Table, columns: Optional[Sequence[OutputColumn]] = None, side: str = "") -> int:
    """About how many bytes an output row takes: 8 for the gather map, plus the columns' average
    row width (all of ``table``'s, or those of ``columns`` from ``side``)."""
    if columns is None:
        n = max(table.num_rows, 1)
        return 8 + max(1, table.nbytes // n)
    b = 0
    for c in columns:
        if c.source == side or (c.source == "key" and side == "left"):
            col = table[c.column]
            b += (max(1, col.nbytes // len(col)) if len(col) else 8) + 1
    return b


def merge(left: Table, right: Table, on: OnLike = None, *, left_on: OnLike = None, right_on: OnLike = None,
          how: str = "inner", suffixes: tuple[str, str] = ("_x", "_y"), nulls_equal: bool = False,
          stream: Any = None) -> Table:
    """Join two tables on key columns, pandas-style.

    Parameters
    ----------
    left, right : Table
        On the same device.
    on : str or list of str, optional
        Key columns present in both tables (they appear once in the result). Without ``on``,
        ``left_on`` and ``right_on``, the columns the tables share are the keys.
    left_on, right_on : str or list of str, optional
        Key columns of each side, pairwise; both sets are kept (a pair with the same name
        appears once, like ``on``).
    how : {"inner", "left", "right", "outer", "semi", "anti", "cross"}, default "inner"
        ``semi``/``anti`` return the left rows with / without a match (left columns only,
        left order; null keys never match, so they are in every ``anti`` result). ``cross``
        is the cross product (every left row with every right row, left-major order), and
        takes no keys.
    suffixes : pair of str, default ("_x", "_y")
        Appended to non-key column names present on both sides.
    nulls_equal : bool, default False
        Whether a null key matches a null key.
    stream : CUDA stream, optional
        The stream every kernel, allocation, scan and copy of the operation is queued on (CUDA
        tables only): a ``cupy.cuda.Stream``, a numba stream, an object with ``__cuda_stream__``
        or ``.ptr``, or an int ``cudaStream_t``. Default: CuPy's current stream. The inputs must
        be ready on it (see :mod:`gpuframe.core.streams`).

    Returns
    -------
    Table
        Left columns (keys in place), then the right columns that are not merged keys.
        A merged key has the promoted type of the pair (dictionary keys come back as
        strings) and takes the value of whichever side is present. Row order is unspecified
        except for ``semi``/``anti``.

    Raises
    ------
    KeyError
        A key column is missing (the message lists the table's columns).
    TypeError
        Key types that cannot be compared (both columns and types are named), or arguments
        of the wrong type (a ``stream`` that is not a stream names ``stream``).
    ValueError
        Bad ``how``, ``on``/``left_on``/``right_on`` combinations, key counts that differ,
        suffixes, or result names that would collide; a ``stream`` for CPU tables.
    MemoryError
        The result does not fit in the free memory of the device (raised before allocating).
    """
    if not isinstance(how, str) or how not in MERGE_HOWS:
        raise ValueError(f"how must be one of {list(MERGE_HOWS)}, got {how!r}")
    if how == "cross":
        return _cross(left, right, on, left_on, right_on, _check_suffixes(suffixes), stream)
    lnames, rnames = _resolve_on(left, right, on, left_on, right_on, how, nulls_equal)
    sfx = _check_suffixes(suffixes)
    with streams.operation(stream, left.device):
        return _merge(left, right, lnames, rnames, how, sfx, nulls_equal)


def _cross(left: Table, right: Table, on: OnLike, left_on: OnLike, right_on: OnLike, sfx: tuple[str, str],
           stream: Any) -> Table:
    """``merge(how="cross")``: every left row with every right row (left-major)."""
    for t, param in ((left, "left"), (right, "right")):
        if not isinstance(t, Table):
            raise TypeError(f"{param} must be a gpuframe.Table, got {type(t).__name__}")
    if on is not None or left_on is not None or right_on is not None:
        raise ValueError("how='cross' takes no keys; got "
                         f"on={on!r}, left_on={left_on!r}, right_on={right_on!r}")
    if left.device != right.device:
        raise ValueError(f"left and right must be on the same device, got {left.device} and {right.device}; "
                         "move one with .to(device)")
    columns = _output_columns(left, right, [], "cross", sfx)
    nl, nr = left.num_rows, right.num_rows
    total = nl * nr
    dev = left.device
    with streams.operation(stream, dev):
        bpr = 16 + _bytes_per_row(left, columns, "left") + _bytes_per_row(right, columns, "right")
        memory.ensure_available("merge", total * bpr, dev, rows=total,
                                what=f"the cross product ({nl:,} x {nr:,})")
        fn, run_dev = resolve("cross_maps", dev)
        lidx, ridx = fn(nl, nr, run_dev)
        lidx, ridx = memory.to_device(lidx, dev), memory.to_device(ridx, dev)
        out = []
        for c in columns:
            src, idx = (left, lidx) if c.source == "left" else (right, ridx)
            out.append((c.name, gather_column(src[c.column], idx, check_bounds=False)))
        return Table(out, total)


def _merge(left: Table, right: Table, lnames: list[str], rnames: list[str], how: str, sfx: tuple[str, str],
           nulls_equal: bool) -> Table:
    dev = left.device
    if how in ("semi", "anti"):
        lidx, _ = _join(left, right, lnames, rnames, how, nulls_equal, _bytes_per_row(left), "merge", "the result")
        return take(left, lidx)
    pairs = resolve_key_pairs(left, right, lnames, rnames)
    columns = _output_columns(left, right, pairs, how, sfx)
    fn, run_dev = resolve("join", dev)
    lt, rt = left.to(run_dev), right.to(run_dev)
    fused = capability("join_fused", run_dev)
    if fused is not None:
        # the backend joins and writes the output columns in one pass
        out, total = fused(lt, rt, pairs, how, bool(nulls_equal), columns, "merge")
        return Table([(name, col.to(dev)) for name, col in out], total)
    bpr = 16 + _bytes_per_row(lt, columns, "left") + _bytes_per_row(rt, columns, "right")
    lidx, ridx = fn([lt[p.left] for p in pairs], [rt[p.right] for p in pairs], pairs, how, bool(nulls_equal),
                    on_count=_memory_guard(run_dev, bpr, "merge", "the merged table"))
    merged_key = None
    out: list[tuple[str, Column]] = []
    for c in columns:
        if c.source == "key":
            if merged_key is None:
                merged_key, _ = resolve("merged_key", run_dev)
            pair = pairs[c.pair]
            col = merged_key(lt[pair.left], rt[pair.right], pair, c.dtype, lidx, ridx)
        else:
            src, idx = (lt, lidx) if c.source == "left" else (rt, ridx)
            col = gather_column(src[c.column], idx, check_bounds=False)
        out.append((c.name, col.to(dev)))
    return Table(out, int(lidx.shape[0]))
