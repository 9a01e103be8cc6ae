"""Hash join: ``merge``, ``join_indices`` and ``join_size``.

All three validate their arguments here, normalise the keys (:mod:`gpuframe.ops.keys`) and run
the backend's ``"join"`` (:mod:`gpuframe.backends.impl_join`): radix-partitioned hash tables on
the CPU, one global table on CUDA, from the same per-row kernel source
(:mod:`gpuframe.kernels.join`).

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

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np
import pyarrow as pa

from ..backends.registry import resolve
from ..core import memory
from ..core.buffer import Buffer
from ..core.column import Column, pack_bits
from ..core.device import CPU, Device
from ..core.dtypes import Layout, physical_numpy_dtype
from ..core.table import Table
from .keys import KeyPair, cast_on_device, prepare_keys, resolve_key_pairs

__all__ = ["merge", "join_indices", "join_size", "HOWS"]

HOWS = ("inner", "left", "right", "outer", "semi", "anti")
OnLike = Union[str, Sequence[str], None]

SRC_NONE, SRC_KEY, SRC_ONE = -1, -2, -4


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
def _request(left: Table, right: Table, lnames: list[str], rnames: list[str], how: str,
             nulls_equal: bool) -> tuple[Any, Device, list[KeyPair], Any, Any]:
    pairs = resolve_key_pairs(left, right, lnames, rnames)
    fn, run_dev = resolve("join", left.device)
    lk, rk = prepare_keys(left, right, pairs, bool(nulls_equal), run_dev)
    return fn, run_dev, pairs, lk, rk


def _memory_guard(device: Device, bytes_per_row: int, op: str, what: str):
    """The join's ``on_count``: :func:`gpuframe.core.memory.ensure_available` for ``total`` output
    rows of ``bytes_per_row`` bytes, once the backend has counted them."""
    def check(total: int) -> None:
        memory.ensure_available(op, int(total) * int(bytes_per_row), device, rows=total, what=what)
    return check


def join_size(left: Table, right: Table, on: OnLike = None, *, left_on: OnLike = None,
              right_on: OnLike = None, how: str = "inner", nulls_equal: bool = False) -> int:
    """Number of rows ``merge``/``join_indices`` would return, without building them.

    Parameters are those of :func:`merge`. For ``semi``/``anti`` it is the number of left rows
    selected.
    """
    lnames, rnames = _resolve_on(left, right, on, left_on, right_on, how, nulls_equal)
    fn, _dev, _pairs, lk, rk = _request(left, right, lnames, rnames, how, nulls_equal)
    from ..backends.impl_join import JoinRequest

    return int(fn(JoinRequest(lk, rk, how, count_only=True)).count)


def join_indices(left: Table, right: Table, on: OnLike = None, *, left_on: OnLike = None,
                 right_on: OnLike = None, how: str = "inner", nulls_equal: bool = False) -> tuple[Any, Any]:
    """Gather maps of a join: ``(left_idx, right_idx)``, int64 arrays on the tables' device.

    Output row ``k`` pairs left row ``left_idx[k]`` with right row ``right_idx[k]``; ``-1``
    marks the missing side of an unmatched row in ``left``/``right``/``outer`` joins. For
    ``semi``/``anti`` joins ``left_idx`` lists the selected left rows in left order and
    ``right_idx`` is ``None``. Row order otherwise is unspecified (see the module notes).

    Parameters are those of :func:`merge`.
    """
    lnames, rnames = _resolve_on(left, right, on, left_on, right_on, how, nulls_equal)
    fn, run_dev, _pairs, lk, rk = _request(left, right, lnames, rnames, how, nulls_equal)
    from ..backends.impl_join import JoinRequest

    req = JoinRequest(lk, rk, how, want_indices=True,
                      on_count=_memory_guard(run_dev, 8 if how in ("semi", "anti") else 16, "join_indices",
                                            "the gather maps"))
    res = fn(req)
    dev = left.device
    lidx = memory.to_device(res.left_idx, dev)
    ridx = None if res.right_idx is None else memory.to_device(res.right_idx, dev)
    return lidx, ridx


# --------------------------------------------------------------------------- merge plan
@dataclass
class _OutCol:
    name: str
    kind: str                     # "words", "gather", "string_key"
    dtype: pa.DataType
    side: str = ""                # "left" / "right" for "gather" and raw words
    column: Optional[Column] = None
    value_row: int = -1
    valid_row: int = -1
    encoding: str = "raw"         # "raw" (the column's own bits) or "word" (a key word)
    family: str = ""
    pair: Optional[KeyPair] = None
    src_name: str = ""


def _is_word_column(col: Column) -> bool:
    return col.layout in (Layout.FIXED, Layout.BOOL)


def _widen(col: Column, device: Device) -> Any:
    """The column's values as int64 words on ``device`` (sign-extended raw bits)."""
    if col.layout == Layout.BOOL:
        host = memory.to_host(col.bool_bytes())
        return memory.to_device(host.astype(np.int64), device)
    vals = col.values()
    if np.dtype(vals.dtype).itemsize == 8:
        if col.device == device:
            return memory.view_as(vals, np.int64)
        return memory.to_device(np.ascontiguousarray(memory.to_host(vals)).view(np.int64), device)
    host = memory.to_host(vals)
    signed = host.view(np.dtype(f"i{host.dtype.itemsize}"))
    return memory.to_device(signed.astype(np.int64), device)


def _validity_words(col: Column, device: Device) -> Any:
    host = memory.to_host(col.validity_bytes())
    return memory.to_device(host.astype(np.int64), device)


def _plan_merge(left: Table, right: Table, pairs: list[KeyPair], how: str, suffixes: tuple[str, str],
                fast: bool, device: Device):
    """Output columns, carried words and output rows of a merge.

    On the CPU, every fixed-width column travels through the join kernel as int64 words and is
    written in the probe pass. On CUDA, every column but the merged keys is gathered on the
    device from the gather maps (:func:`gather_column`: every type, validity included), so that
    no output column makes a round trip through host memory.
    """
    carry = {"left": [], "right": []}
    rows: list[tuple[int, int, int]] = []
    cols: list[_OutCol] = []
    left_missing = how in ("right", "outer")     # rows whose left side is absent
    right_missing = how in ("left", "outer")

    def add_carry(side: str, arr: Any) -> int:
        carry[side].append(arr)
        return len(carry[side]) - 1

    def add_row(lsrc: int, rsrc: int, fill: int = 0) -> int:
        rows.append((lsrc, rsrc, fill))
        return len(rows) - 1

    def side_word_column(side: str, name: str, col: Column, out_name: str, pair: Optional[KeyPair]) -> _OutCol:
        missing = left_missing if side == "left" else right_missing
        # the fast path's key word stands for the column itself unless it was promoted to a
        # float (an int key joined with a float key keeps its exact values through a carry)
        use_key = fast and pair is not None and (pair.family != "float" or pa.types.is_float64(col.dtype))
        if use_key:
            src = SRC_KEY
        else:
            src = add_carry(side, _widen(col, device))
        vrow = -1
        if col.has_nulls:
            vsrc = add_carry(side, _validity_words(col, device))
            vrow = add_row(vsrc, SRC_NONE) if side == "left" else add_row(SRC_NONE, vsrc)
        elif missing:
            vrow = add_row(SRC_ONE, SRC_NONE) if side == "left" else add_row(SRC_NONE, SRC_ONE)
        r = add_row(src, SRC_NONE) if side == "left" else add_row(SRC_NONE, src)
        return _OutCol(out_name, "words", col.dtype, side, col, r, vrow,
                       "word" if use_key else "raw", pair.family if pair else "", pair, name)

    lkeys = {p.left: p for p in pairs}
    rkeys = {p.right: p for p in pairs}
    coalesced = {p.left for p in pairs if p.left == p.right}
    # names: left columns (keys in place), then right columns except coalesced keys
    left_names = list(left.column_names)
    right_names = [n for n in right.column_names if not (n in rkeys and n in coalesced)]
    lset = set(n for n in left_names if n not in coalesced) if how not in ("semi", "anti") else set()
    rset = set(right_names)
    sx, sy = suffixes

    def out_name(name: str, side: str) -> str:
        if name in coalesced:
            return name
        clash = name in rset if side == "left" else name in lset
        if not clash:
            return name
        return name + (sx if side == "left" else sy)

    for name in left_names:
        col = left[name]
        pair = lkeys.get(name)
        if name in coalesced:
            rcol = right[name]
            if pair.is_string:
                # validity: the present side's key validity (dictionary null entries included)
                lv, rv = _key_valid(col), _key_valid(rcol)
                vrow = -1
                if (lv is not None or rv is not None) and not device.is_cuda:   # CUDA: from gather maps
                    ls = SRC_ONE if lv is None else add_carry("left", memory.to_device(lv.astype(np.int64), device))
                    rs = SRC_ONE if rv is None else add_carry("right", memory.to_device(rv.astype(np.int64), device))
                    vrow = add_row(ls, rs)
                cols.append(_OutCol(name, "string_key", pair.out_type, valid_row=vrow, pair=pair))
            elif pair.range_checked and how == "outer":
                raise TypeError(
                    f"an outer join on {name!r} merges a {pair.left_type} key with a {pair.right_type} key "
                    "into one column, and no type holds every value of both; pass left_on= and right_on= "
                    "to keep both key columns, or cast one side first")
            else:
                out_t = pair.out_type
                if pair.range_checked:
                    out_t = pair.right_type if how == "right" else pair.left_type
                if fast:
                    vr = add_row(SRC_KEY, SRC_KEY)
                    enc = "word"
                else:
                    vr = add_row(add_carry("left", _key_word_carry(col, pair, device)),
                                 add_carry("right", _key_word_carry(rcol, pair, device)))
                    enc = "word"
                vrow = -1
                if col.has_nulls or rcol.has_nulls:
                    ls = add_carry("left", _validity_words(col, device)) if col.has_nulls else SRC_ONE
                    rs = add_carry("right", _validity_words(rcol, device)) if rcol.has_nulls else SRC_ONE
                    vrow = add_row(ls, rs)
                cols.append(_OutCol(name, "words", out_t, "", None, vr, vrow, enc, pair.family, pair))
            continue
        oname = out_name(name, "left")
        if _is_word_column(col) and not device.is_cuda:
            cols.append(side_word_column("left", name, col, oname, pair if name in lkeys else None))
        else:
            cols.append(_OutCol(oname, "gather", col.dtype, "left", col, src_name=name))
    if how in ("semi", "anti"):
        return cols, carry, rows
    for name in right_names:
        col = right[name]
        pair = rkeys.get(name)
        oname = out_name(name, "right")
        if _is_word_column(col) and not device.is_cuda:
            cols.append(side_word_column("right", name, col, oname, pair))
        else:
            cols.append(_OutCol(oname, "gather", col.dtype, "right", col, src_name=name))
    names = [c.name for c in cols]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"the merged table would have duplicate columns {dup}; pick other suffixes "
                         f"than {suffixes!r} or rename the columns first")
    return cols, carry, rows


def _key_valid(col: Column) -> Optional[np.ndarray]:
    from .keys import _host_valid

    return _host_valid(col)


def _key_word_carry(col: Column, pair: KeyPair, device: Device) -> Any:
    from .keys import key_words

    return memory.to_device(key_words(col, pair).view(np.int64), device)


# --------------------------------------------------------------------------- materialise
def _to_host_rows(rows: list, device: Device) -> list[np.ndarray]:
    return [memory.to_host(r) for r in rows]


def _words_to_values(words: np.ndarray, out_type: pa.DataType, encoding: str, family: str,
                     src_type: Optional[pa.DataType]) -> np.ndarray:
    """int64 words back to the physical values of ``out_type`` (host)."""
    if pa.types.is_boolean(out_type):
        return words != 0
    phys = physical_numpy_dtype(out_type)
    if encoding == "raw":
        # the column's own bits, sign-extended from its width
        if phys.itemsize == 8:
            return words.view(phys)
        return words.astype(np.dtype(f"i{phys.itemsize}")).view(phys)
    # a key word: int64 value (uint64: bits), float64 bits, 0/1
    if family == "float":
        return words.view(np.float64).astype(phys, copy=False)
    if phys == np.uint64:
        return words.view(np.uint64)
    return words.astype(phys, copy=False)


def _make_column(values: np.ndarray, dtype: pa.DataType, valid: Optional[np.ndarray], device: Device) -> Column:
    if valid is not None and bool(valid.all()):
        valid = None
    col = Column.from_numpy(values, dtype, valid)
    return col.to(device) if device.is_cuda else col


def _string_key_column(pair: KeyPair, lk, rk, lidx: Any, ridx: Any, device: Device) -> Column:
    """A merged string key: the string of whichever side is present (host kernels over the
    byte spans of both sides).

    Where both sides are present their keys are byte-equal, so the bytes are copied from the
    side with fewer distinct rows (usually the build side, whose bytes stay in cache).
    """
    from ..kernels import join_cpu as K

    li = np.ascontiguousarray(memory.to_host(lidx), dtype=np.int64)
    ri = np.ascontiguousarray(memory.to_host(ridx), dtype=np.int64)
    # (starts, ends, chars, valid) per side; "a" is preferred where both are present
    (a, ia), (b, ib) = ((rk, ri), (lk, li)) if len(rk[0]) <= len(lk[0]) else ((lk, li), (rk, ri))
    ast, aen, ach, av = a
    bst, ben, bch, bv = b
    n = len(li)
    a_here = ia >= 0
    valid = a_here | (ib >= 0)
    if av is not None:
        valid &= ~a_here | (av[np.maximum(ia, 0)] != 0)
    if bv is not None:
        valid &= a_here | (bv[np.maximum(ib, 0)] != 0)
    ia2 = np.where(valid, ia, -1)
    ib2 = np.where(valid, ib, -1)
    lengths = np.empty(n, np.int64)
    K.span_lengths(ast, aen, ia2, bst, ben, ib2, lengths)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    large = pa.types.is_large_string(pair.out_type) or total >= 2**31 - 1
    chars = np.empty(total, np.uint8)
    K.span_copy(ast, np.asarray(ach, np.uint8), ia2, bst, np.asarray(bch, np.uint8), ib2, offsets, chars)
    dtype = pa.large_string() if large else pa.string()
    offs = offsets if large else offsets.astype(np.int32)
    nulls = int(n - valid.sum())
    validity = Buffer(pack_bits(valid), CPU) if nulls else None
    col = Column(dtype, n, Buffer(chars, CPU), validity, Buffer(offs, CPU), None, 0, nulls)
    return col.to(device) if device.is_cuda else col


def _string_column(out_type: pa.DataType, offsets: np.ndarray, chars: np.ndarray,
                   valid: Optional[np.ndarray]) -> Column:
    """A host string column from int64 offsets (``large_string`` when ``out_type`` is, or when
    the bytes outgrow int32 offsets)."""
    n = len(offsets) - 1
    large = pa.types.is_large_string(out_type) or int(offsets[-1]) >= 2**31 - 1
    offs = offsets if large else offsets.astype(np.int32)
    nulls = 0 if valid is None else int(n - np.count_nonzero(valid))
    validity = Buffer(pack_bits(valid), CPU) if nulls else None
    return Column(pa.large_string() if large else pa.string(), n, Buffer(chars, CPU), validity,
                  Buffer(offs, CPU), None, 0, nulls)


def merge(left: Table, right: Table, on: OnLike = None, *, left_on: OnLike = None, right_on: OnLike = None,
          how: str = "inner", suffixes: tuple[str, str] = ("_x", "_y"), nulls_equal: bool = False) -> Table:
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
    how : {"inner", "left", "right", "outer", "semi", "anti"}, default "inner"
        ``semi``/``anti`` return the left rows with / without a match (left columns only,
        left order; null keys never match, so they are in every ``anti`` result).
    suffixes : pair of str, default ("_x", "_y")
        Appended to non-key column names present on both sides.
    nulls_equal : bool, default False
        Whether a null key matches a null key.

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
        of the wrong type.
    ValueError
        Bad ``how``, ``on``/``left_on``/``right_on`` combinations, key counts that differ,
        suffixes, or result names that would collide.
    MemoryError
        The result does not fit in the free memory of the device (raised before allocating).
    """
    lnames, rnames = _resolve_on(left, right, on, left_on, right_on, how, nulls_equal)
    sfx = _check_suffixes(suffixes)
    fn, run_dev, pairs, lk, rk = _request(left, right, lnames, rnames, how, nulls_equal)
    from ..backends.impl_join import JoinRequest

    dev = left.device
    if how in ("semi", "anti"):
        res = fn(JoinRequest(lk, rk, how, want_indices=True,
                             on_count=_memory_guard(run_dev, _bytes_per_row(left, []), "merge",
                                                    "the result")))
        from .gather import take

        return take(left, memory.to_device(res.left_idx, dev))
    fast = not lk.verify
    lt = left.to(run_dev) if run_dev != dev else left
    rt = right.to(run_dev) if run_dev != dev else right
    cols, carry, rows = _plan_merge(lt, rt, pairs, how, sfx, fast, run_dev)
    string_pairs = [p for p in pairs if p.is_string]
    # the CPU backend writes merged string keys itself; CUDA results build them from gather maps
    fused = not run_dev.is_cuda
    string_keys = [string_pairs.index(c.pair) for c in cols if c.kind == "string_key"] if fused else []
    want_idx = any(c.kind == "gather" or (c.kind == "string_key" and not fused) for c in cols)
    bpr = 8 * len(rows) + (16 if want_idx else 0) + _gather_bytes_per_row(cols)
    req = JoinRequest(lk, rk, how, carry["left"], carry["right"], rows, want_idx, string_keys=string_keys,
                      on_count=_memory_guard(run_dev, bpr, "merge", "the merged table"))
    res = fn(req)
    del carry, req
    total = res.count
    out: list[tuple[str, Column]] = []
    on_host = run_dev.is_cuda  # word rows are converted on the host for CUDA results
    hrows = None
    for c in cols:
        if c.kind == "words":
            if not run_dev.is_cuda and c.valid_row < 0 and c.encoding == "raw" and _is_word_column_type(c.dtype) \
                    and physical_numpy_dtype(c.dtype).itemsize == 8:
                vals = res.rows[c.value_row].view(physical_numpy_dtype(c.dtype))
                out.append((c.name, Column(c.dtype, total, Buffer(vals, CPU), None, None, None, 0, 0)))
                continue
            vals = _device_key_values(c, res.rows[c.value_row], total, run_dev) if run_dev.is_cuda else None
            if vals is not None:
                col = Column(c.dtype, total, Buffer(vals, run_dev), None, None, None, 0, 0)
                out.append((c.name, col if run_dev == dev else col.to(dev)))
                continue
            if hrows is None:
                hrows = _to_host_rows(res.rows, run_dev) if on_host else res.rows
            words = hrows[c.value_row]
            vals = _words_to_values(words, c.dtype, c.encoding, c.family, None)
            valid = None if c.valid_row < 0 else hrows[c.valid_row] != 0
            out.append((c.name, _make_column(vals, c.dtype, valid, dev)))
        elif c.kind == "string_key" and fused:
            offsets, chars = res.strings[string_keys.index(string_pairs.index(c.pair))]
            valid = None if c.valid_row < 0 else res.rows[c.valid_row] != 0
            out.append((c.name, _string_column(c.pair.out_type, offsets, chars, valid)))
        elif c.kind == "string_key":
            sidx = string_pairs.index(c.pair)
            out.append((c.name, _string_key_column(c.pair, lk.string_spans[sidx], rk.string_spans[sidx],
                                                   res.left_idx, res.right_idx, dev)))
        else:
            from .gather import gather_column

            idx = res.left_idx if c.side == "left" else res.right_idx
            src = (left if c.side == "left" else right)[c.src_name]
            out.append((c.name, gather_column(src, memory.to_device(idx, dev), check_bounds=False)))
    return Table(out, total)


def _device_key_values(c: _OutCol, words: Any, n: int, device: Device) -> Optional[Any]:
    """A merged key's values made from its int64 output words on the GPU, the conversion the
    host does in :func:`_words_to_values` (8 bytes: a view; narrower: a cast kernel), or None
    where the host must do it (nulls, bool, string)."""
    if c.valid_row >= 0 or not _is_word_column_type(c.dtype):
        return None
    phys = physical_numpy_dtype(c.dtype)
    floats = c.encoding == "word" and c.family == "float"
    if floats and phys.kind != "f":
        return None
    src = memory.view_as(words, np.float64) if floats else words
    if phys.itemsize == 8:
        return memory.view_as(src, phys)
    return cast_on_device(src, phys, n, device)   # the value fits: it is one side's own key


def _is_word_column_type(t: pa.DataType) -> bool:
    return not (pa.types.is_boolean(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
                or pa.types.is_dictionary(t))


def _gather_bytes_per_row(cols: list[_OutCol]) -> int:
    b = 0
    for c in cols:
        if c.kind == "gather" and c.column is not None and len(c.column):
            b += max(1, c.column.nbytes // len(c.column)) + 1
        elif c.kind == "string_key":
            b += 16
    return b


def _bytes_per_row(table: Table, _cols: list) -> int:
    n = max(table.num_rows, 1)
    return 8 + max(1, table.nbytes // n)
