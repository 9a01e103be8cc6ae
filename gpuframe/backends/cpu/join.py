"""Hash join on the CPU: radix-partitioned ``njit`` drivers (kernels in
:mod:`gpuframe.kernels.join_cpu`, per-row functions shared with CUDA in :mod:`gpuframe.kernels.join`).

Operations (the contract is in :mod:`gpuframe.backends.contract`):

* ``join``: gather maps; ``join_size``: their length, counted without building them;
* ``merged_key``: a coalesced key column from gather maps (host code shared with CUDA);
* ``join_fused`` (a capability only this backend has): the join and the output columns in one
  pass, without gather maps in between: every fixed-width column travels through the kernels as
  int64 words and is written in the probe pass, merged string keys are written by the kernels
  too, and only the other columns are gathered.

The build side is the smaller one (ties: the right side), for every ``how``; an outer side that is
the build side is tracked with matched flags. The build side is radix-partitioned (about
:data:`_ROWS_PER_PARTITION` rows a partition) with everything that verifying a key needs, and
every partition gets its own table. The probe side is scattered into the same partitions (left
in place when the build side's tables fit in cache: :func:`_cpu_small`) and probed in work items
of at most :data:`_ITEM_ROWS` rows, so a hot key never serialises a join. Distinct build keys
take one pass (probe and write); repeated ones, and in-place probes, two (count, then write a
column at a time). Large buffers, outputs included, come from the host allocator
(:func:`gpuframe.core.hostalloc.host_empty`). Semi and anti joins return the selected left row
numbers, in left order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pyarrow as pa

from ...core import memory
from ...core.buffer import Buffer
from ...core.column import Column, pack_bits
from ...core.device import CPU
from ...core.dtypes import Layout, physical_numpy_dtype
from ...core.hostalloc import host_empty
from ...core.table import Table
from .._common import is_word_type, narrow_host, words_to_values
from .._join import SRC_KEY, SRC_NONE, SRC_ONE, JoinRequest, JoinResult, _sides
from .._keys import SideKeys, host_valid, key_words, merged_key_host, prepare_keys
from ..contract import KeyPair, OutputColumn
from ._target import run_rows, run_threads
from .gather import gather_column

__all__ = ["join", "join_size", "join_fused", "merged_key"]


# =========================================================================== operations
def join(left_keys: Sequence[Column], right_keys: Sequence[Column], pairs: Sequence[KeyPair], how: str,
         nulls_equal: bool, on_count: Optional[Callable[[int], None]] = None) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Gather maps ``(left_idx, right_idx)`` (host int64) of the join of the key columns."""
    lk, rk = _prepare(left_keys, right_keys, pairs, nulls_equal)
    res = run(JoinRequest(lk, rk, how, want_indices=True, on_count=on_count))
    return res.left_idx, res.right_idx


def join_size(left_keys: Sequence[Column], right_keys: Sequence[Column], pairs: Sequence[KeyPair], how: str,
              nulls_equal: bool) -> int:
    """The number of rows :func:`join` would return."""
    lk, rk = _prepare(left_keys, right_keys, pairs, nulls_equal)
    return int(run(JoinRequest(lk, rk, how, count_only=True)).count)


def merged_key(left_key: Column, right_key: Column, pair: KeyPair, dtype: Any, left_idx: Any,
               right_idx: Any) -> Column:
    """The coalesced key of ``pair`` for the rows of the gather maps."""
    return merged_key_host(left_key, right_key, pair, dtype, left_idx, right_idx)


def _prepare(left_keys: Sequence[Column], right_keys: Sequence[Column], pairs: Sequence[KeyPair],
             nulls_equal: bool) -> tuple[SideKeys, SideKeys]:
    """Both sides' join keys, the general path's words and spans made by parallel kernels
    (the per-row functions the CUDA backend's kernels run) where ``prepare_keys`` can."""
    return prepare_keys(left_keys, right_keys, pairs, nulls_equal, CPU, _widen_words, _key_word, _string_span)


def _widen_words(values: np.ndarray, dtype: Any, device: Any) -> np.ndarray:
    out = host_empty(len(values), dtype)
    run_rows(_cpu_kernels().widen_copy, len(out), values, out)
    return out


_NONE8 = np.zeros(1, np.uint8)
_NONE64 = np.zeros(1, np.uint64)


def _key_word(src: np.ndarray, kmode: int, valid: Optional[np.ndarray], out: np.ndarray,
              flag: Optional[np.ndarray], keep: Optional[np.ndarray]) -> None:
    """``_keys.KeyWord`` on the CPU."""
    run_rows(_cpu_kernels().key_words, len(out), src, kmode, _NONE8 if valid is None else valid, valid is not None,
             out, _NONE64 if flag is None else flag, flag is not None, _NONE8 if keep is None else keep,
             keep is not None)


def _string_span(offsets: np.ndarray, valid: Optional[np.ndarray], st: np.ndarray, en: np.ndarray,
                 flag: Optional[np.ndarray], keep: Optional[np.ndarray]) -> None:
    """``_keys.StringSpan`` on the CPU."""
    run_rows(_cpu_kernels().string_spans, len(st), offsets, _NONE8 if valid is None else valid, valid is not None,
             st, en, _NONE64 if flag is None else flag, flag is not None, _NONE8 if keep is None else keep,
             keep is not None)


@dataclass
class _Out:
    """How one output column is made from the fused join's word rows."""

    spec: OutputColumn
    kind: str                 # "words", "string_key" or "gather"
    value_row: int = -1
    valid_row: int = -1
    encoding: str = "raw"     # "raw" (the column's own bits) or "word" (a key word)
    family: str = ""
    string_key: int = -1      # index among the string key pairs
    column: Optional[Column] = None


def _widen(col: Column) -> np.ndarray:
    """The column's values as int64 words (sign-extended raw bits)."""
    if col.layout == Layout.BOOL:
        return memory.to_host(col.bool_bytes()).astype(np.int64)
    vals = col.values()
    if np.dtype(vals.dtype).itemsize == 8:
        return memory.view_as(vals, np.int64)
    return vals.view(np.dtype(f"i{vals.dtype.itemsize}")).astype(np.int64)


def _validity_words(col: Column) -> np.ndarray:
    return memory.to_host(col.validity_bytes()).astype(np.int64)


def _plan(left: Table, right: Table, pairs: Sequence[KeyPair], how: str, columns: Sequence[OutputColumn],
          fast: bool) -> tuple[list[_Out], dict, list]:
    """Output columns, carried words and output rows of a fused merge.

    Every fixed-width column travels through the join kernel as int64 words (a key column on
    the fast path as the key word itself) and is written in the probe pass.
    """
    carry: dict = {"left": [], "right": []}
    rows: list[tuple[int, int, int]] = []
    outs: list[_Out] = []
    left_missing = how in ("right", "outer")     # rows whose left side is absent
    right_missing = how in ("left", "outer")
    string_index = {i: sum(1 for p in pairs[:i] if p.is_string) for i, p in enumerate(pairs)}

    def add_carry(side: str, arr: Any) -> int:
        carry[side].append(arr)
        return len(carry[side]) - 1

    def add_row(lsrc: int, rsrc: int, fill: int = 0) -> int:
        rows.append((lsrc, rsrc, fill))
        return len(rows) - 1

    for spec in columns:
        pair = pairs[spec.pair] if spec.pair is not None else None
        if spec.source == "key":
            col, rcol = left[pair.left], right[pair.right]
            if pair.is_string:
                # validity: the present side's key validity (dictionary null entries included)
                lv, rv = host_valid(col), host_valid(rcol)
                vrow = -1
                if lv is not None or rv is not None:
                    ls = SRC_ONE if lv is None else add_carry("left", lv.astype(np.int64))
                    rs = SRC_ONE if rv is None else add_carry("right", rv.astype(np.int64))
                    vrow = add_row(ls, rs)
                outs.append(_Out(spec, "string_key", valid_row=vrow, string_key=string_index[spec.pair]))
                continue
            if fast:
                vr = add_row(SRC_KEY, SRC_KEY)
            else:
                vr = add_row(add_carry("left", key_words(col, pair).view(np.int64)),
                             add_carry("right", key_words(rcol, pair).view(np.int64)))
            vrow = -1
            if col.has_nulls or rcol.has_nulls:
                ls = add_carry("left", _validity_words(col)) if col.has_nulls else SRC_ONE
                rs = add_carry("right", _validity_words(rcol)) if rcol.has_nulls else SRC_ONE
                vrow = add_row(ls, rs)
            outs.append(_Out(spec, "words", vr, vrow, "word", pair.family))
            continue
        side = spec.source
        col = (left if side == "left" else right)[spec.column]
        if col.layout not in (Layout.FIXED, Layout.BOOL):
            outs.append(_Out(spec, "gather", column=col))
            continue
        missing = left_missing if side == "left" else right_missing
        # the fast path's key word stands for the column itself unless it was promoted to a
        # float (an int key joined with a float key keeps its exact values through a carry)
        use_key = fast and pair is not None and (pair.family != "float" or pa.types.is_float64(col.dtype))
        src = SRC_KEY if use_key else add_carry(side, _widen(col))
        vrow = -1
        if col.has_nulls:
            vsrc = add_carry(side, _validity_words(col))
            vrow = add_row(vsrc, SRC_NONE) if side == "left" else add_row(SRC_NONE, vsrc)
        elif missing:
            vrow = add_row(SRC_ONE, SRC_NONE) if side == "left" else add_row(SRC_NONE, SRC_ONE)
        r = add_row(src, SRC_NONE) if side == "left" else add_row(SRC_NONE, src)
        outs.append(_Out(spec, "words", r, vrow, "word" if use_key else "raw", pair.family if pair else "",
                         column=col))
    return outs, carry, rows


def _gather_bytes_per_row(outs: list[_Out]) -> int:
    b = 0
    for o in outs:
        if o.kind == "gather" and o.column is not None and len(o.column):
            b += max(1, o.column.nbytes // len(o.column)) + 1
        elif o.kind == "string_key":
            b += 16
    return b


def _string_column(out_type: Any, offsets: np.ndarray, chars: np.ndarray, valid: Optional[np.ndarray]) -> Column:
    """A host string column from int64 offsets (``large_string`` when ``out_type`` is, or when
    the bytes outgrow int32 offsets)."""
    n = len(offsets) - 1
    large = pa.types.is_large_string(out_type) or int(offsets[-1]) >= 2**31 - 1
    offs = offsets if large else narrow_host(offsets, np.int32)
    nulls = 0 if valid is None else int(n - np.count_nonzero(valid))
    validity = Buffer(pack_bits(valid), CPU) if nulls else None
    return Column(pa.large_string() if large else pa.string(), n, Buffer(chars, CPU), validity,
                  Buffer(offs, CPU), None, 0, nulls)


def join_fused(left: Table, right: Table, pairs: Sequence[KeyPair], how: str, nulls_equal: bool,
               columns: Sequence[OutputColumn], op: str = "merge") -> tuple[list[tuple[str, Column]], int]:
    """The merged table's ``columns`` (with their names) and its number of rows, in one pass.

    Before anything is allocated for the output, its size is checked with
    :func:`gpuframe.core.memory.ensure_available` (``op`` names the operation in the error).
    """
    lk, rk = _prepare([left[p.left] for p in pairs], [right[p.right] for p in pairs], pairs, nulls_equal)
    outs, carry, rows = _plan(left, right, pairs, how, columns, not lk.verify)
    string_keys = [o.string_key for o in outs if o.kind == "string_key"]
    want_idx = any(o.kind == "gather" for o in outs)
    bpr = 8 * len(rows) + (16 if want_idx else 0) + _gather_bytes_per_row(outs)

    def on_count(total: int) -> None:
        memory.ensure_available(op, int(total) * bpr, CPU, rows=total, what="the merged table")

    views, string_views = _views(left, right, pairs, outs)
    req = JoinRequest(lk, rk, how, carry["left"], carry["right"], rows, want_idx, string_keys=string_keys,
                      on_count=on_count, views=views, string_views=string_views)
    res = run(req)
    del carry, req
    total = res.count
    result: list[tuple[str, Column]] = []
    strings = iter(res.strings)
    for o in outs:
        spec = o.spec
        own = _own_column(left, right, pairs, o, res.identity)
        if own is not None:
            # the output is that side's rows in their own order: its column, zero-copy
            result.append((spec.name, own))
            continue
        if o.kind == "words":
            if o.valid_row < 0 and o.encoding == "raw" and is_word_type(spec.dtype) \
                    and physical_numpy_dtype(spec.dtype).itemsize == 8:
                vals = res.rows[o.value_row].view(physical_numpy_dtype(spec.dtype))
                result.append((spec.name, Column(spec.dtype, total, Buffer(vals, CPU), None, None, None, 0, 0)))
                continue
            vals = words_to_values(res.rows[o.value_row], spec.dtype, o.encoding, o.family)
            valid = None if o.valid_row < 0 else _as_bool(res.rows[o.valid_row])
            if valid is not None and bool(valid.all()):
                valid = None
            result.append((spec.name, Column.from_numpy(vals, spec.dtype, valid)))
        elif o.kind == "string_key":
            offsets, chars = next(strings)
            valid = None if o.valid_row < 0 else _as_bool(res.rows[o.valid_row])
            result.append((spec.name, _string_column(spec.dtype, offsets, chars, valid)))
        else:
            idx = res.left_idx if spec.source == "left" else res.right_idx
            result.append((spec.name, gather_column(o.column, idx, None)))
    return result, total


def _as_bool(row: np.ndarray) -> np.ndarray:
    """A validity output row as bools (a byte row holds only 0 and 1: a view)."""
    return row.view(np.bool_) if row.dtype == np.uint8 else row != 0


def _own_column(left: Table, right: Table, pairs: Sequence[KeyPair], o: _Out, side: Optional[str]
                ) -> Optional[Column]:
    """The column of side ``side`` that output ``o`` is, when the output is that side's rows in
    their own order: a column of that side, or a merged key (the present side's key, and that
    side is present on every row) of that side's type. Float keys are left out: a merged float
    key is the canonical key word (``-0.0`` joins ``0.0`` and comes out as ``0.0``)."""
    if side is None:
        return None
    spec = o.spec
    if spec.source == "key":
        pair = pairs[spec.pair]
        col = left[pair.left] if side == "left" else right[pair.right]
        ok = pair.family != "float"
    else:
        col = o.column if spec.source == side else None
        ok = col is not None
    return col if ok and col is not None and col.dtype == spec.dtype else None


def _views(left: Table, right: Table, pairs: Sequence[KeyPair], outs: list[_Out]) -> tuple[dict, dict]:
    """:attr:`JoinRequest.views` and ``string_views``: the output rows and string keys that
    each side's own columns stand in for (:func:`_own_column`)."""
    views: dict = {}
    string_views: dict = {}
    position = {id(o): k for k, o in enumerate(o for o in outs if o.kind == "string_key")}
    for o in outs:
        sides = frozenset(s for s in ("left", "right") if _own_column(left, right, pairs, o, s) is not None)
        if not sides:
            continue
        if o.kind == "string_key":
            string_views[position[id(o)]] = sides
        for r in (o.value_row, o.valid_row):
            if r >= 0:
                views[r] = sides
    return views, string_views


# =========================================================================== drivers
def _cpu_kernels():
    from gpuframe.kernels import join_cpu

    return join_cpu


def _threaded(kernel: Any, verify: bool, items: int, *records: Any) -> list:
    """Run the threaded kernel ``kernel`` over ``items`` work items, with its item function for
    general keys (``verify``) or word keys (:func:`~gpuframe.kernels.join_cpu.item_entry`)."""
    return run_threads(kernel, items, _cpu_kernels().item_entry(kernel, verify, records), *records)


def _ro(a: np.ndarray) -> np.ndarray:
    """A read-only view: every input reaches the kernels with one numba type (arrays wrapping
    Arrow buffers are read-only already), so each kernel compiles once."""
    v = a.view()
    v.flags.writeable = False
    return v


_E64 = _ro(np.zeros(0, np.int64))
_E8 = _ro(np.zeros(0, np.uint8))
_E2 = _ro(np.zeros((0, 0), np.int64))
_EU64 = _ro(np.zeros(0, np.uint64))
_EI32 = np.zeros(0, np.int32)         # the hash tables, for the write passes (which read none)

# Target build rows per CPU partition: a partition's table, chains and keys fit in L2.
_ROWS_PER_PARTITION = 4096
# At most 1,024 partitions: a scatter into 4,096 (each row's hash word, row number and key
# words: four streams a partition) thrashes the TLB. 2026-12-06, `unique` of 10M int64 rows of
# two columns: 0.54 s at 4,096 partitions, 0.37 s at 1,024 (0.35 s at 512, whose 20k-row tables
# build slower); the union of 2 x 10M rows 1.36 -> 1.00 s; the 10M x 10M joins unchanged
# (0.69 s); 40M rows still gain (3.0 -> 2.2 s), with partitions of 40k rows.
_MAX_PARTITION_BITS = 10
_BIG_PROBE_ROWS = 1 << 25
_BIG_PROBE_PARTITION_BITS = 9
# Probe rows per work item: small enough to spread a hot partition over every thread.
_ITEM_ROWS = 16384
# In-place probing (no probe scatter) when the build side's tables and keys take at most this
# many bytes: they then stay in cache (L2 and the L3 beside it) while the probe streams past
# them in batches. 2026-12-06, 10M probe rows against int64 build sides (about 20 bytes a
# row), medians of 6, partitioned -> in place: 60k rows 147-176 -> 95-99 ms, 100k 169 -> 109-148,
# 150k 150-164 -> 133-140, 200k 158-177 -> 160-162, 300k 153-159 -> 181-184; 1M probe rows
# against 100k 22 -> 18 ms, against 300k 18-21 -> 27-29 ms.
_INPLACE_BUILD_BYTES = 3 << 20
# A build side of distinct word keys is probed in place through a flat table (each slot's key
# word beside its build position: one cache line a lookup, prefetched rows ahead) when that
# table takes at most _FLAT_CACHE_BYTES (it stays in cache), or at most _FLAT_BUILD_BYTES and
# the probe keys are skewed (at least _FLAT_SKEW of a sample of _FLAT_SAMPLE probe keys repeat
# one another: their rows stay in cache). The output is then the probe side in its own order
# where every probe row gives one row (a left join, an inner join that matches every row), and
# the probe's columns are not copied at all. 2026-12-07, 10M probe rows, in one process,
# alternating, ms (flat / partitioned): 100k uniform build keys 75 / 129 (small_match); 300k
# 171 / 142-165; 1M 198-326 / 142-202; 1M, Zipf(1.3) probe keys (80% of a sample repeat)
# 131-137 / 139-173, Zipf(2) 72 / 108.
_FLAT_CACHE_BYTES = 8 << 20
_FLAT_BUILD_BYTES = 40 << 20
_FLAT_SAMPLE = 2048
_FLAT_SKEW = 0.5


def _span_rows(st: np.ndarray, en: np.ndarray, sel: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Byte spans ``[len(sel), n]`` of the string key columns ``sel`` (views when ``sel`` is
    every column in order)."""
    sel = list(sel)
    if not sel:
        return _E2, _E2
    if sel == list(range(st.shape[0])):
        return st, en
    return _ro(np.ascontiguousarray(st[sel])), _ro(np.ascontiguousarray(en[sel]))


def _row_hash_cpu(sk: SideKeys) -> None:
    if sk.keys is None:
        K = _cpu_kernels()
        out = host_empty(sk.n, np.uint64)
        run_rows(K.general_row_hash, len(out), _ro(sk.words), _ro(sk.starts), _ro(sk.ends), _ro(sk.chars), out)
        sk.keys = out


def _ro_side(sk: SideKeys) -> SideKeys:
    from dataclasses import replace

    return replace(sk, keys=None if sk.keys is None else _ro(sk.keys), valid=_ro(sk.valid), words=_ro(sk.words),
                   starts=_ro(sk.starts),
                   ends=_ro(sk.ends), chars=_ro(sk.chars))


def _ptrs(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """The address table of 8-byte-word column arrays (the caller keeps the arrays alive)."""
    if not arrays:
        return _E64
    for a in arrays:
        if a.dtype.itemsize != 8 or not a.flags.c_contiguous:
            raise AssertionError(f"join column must be contiguous 8-byte words, got {a.dtype} {a.strides}")
    return _ro(np.array([a.ctypes.data for a in arrays], dtype=np.int64))


def _as_words(a: Any) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a if a.dtype == np.int64 else a.view(np.int64)


def _partition_bits(nbuild: int, nprobe: int) -> int:
    """Radix bits: partitions of about :data:`_ROWS_PER_PARTITION` build rows, but at most
    ``2**_MAX_PARTITION_BITS`` partitions, and fewer (``2**_BIG_PROBE_PARTITION_BITS``) for a
    probe side of more than :data:`_BIG_PROBE_ROWS` rows: scattering it into thousands of
    partitions then costs more than tables that outgrow the core's cache."""
    if nbuild <= _ROWS_PER_PARTITION:
        return 0
    cap = _BIG_PROBE_PARTITION_BITS if nprobe > _BIG_PROBE_ROWS else _MAX_PARTITION_BITS
    return min(cap, int(math.ceil(math.log2(nbuild / _ROWS_PER_PARTITION))))


def _index_dtype(n: int) -> Any:
    return np.int32 if n < 2**31 - 1 else np.int64


def _cursors(sk: SideKeys, pbits: int) -> tuple[np.ndarray, np.ndarray]:
    """Scatter cursors ``[chunks, partitions]`` and the ``nparts + 2`` partition starts."""
    import numba

    K = _cpu_kernels()
    nchunks = max(1, min(numba.get_num_threads() * 4, sk.n // 65536 + 1))
    hist = np.zeros((nchunks, (1 << pbits) + 1), np.int64)
    run_threads(K.part_hist, nchunks, sk.keys, sk.valid, sk.kmode, np.uint64((1 << pbits) - 1), hist)
    flat = hist.T.ravel()                       # partition-major
    cum = np.cumsum(flat)
    cursors = np.ascontiguousarray((cum - flat).reshape(hist.shape[1], nchunks).T)
    starts = np.zeros(hist.shape[1] + 1, np.int64)
    starts[1:] = cum[nchunks - 1::nchunks]
    return cursors, starts


def _scatter(sk: SideKeys, pbits: int, cursors: np.ndarray, keys_dst: Optional[np.ndarray],
             iota_dst: Optional[np.ndarray], src: Sequence[np.ndarray], dst: Sequence[np.ndarray]) -> None:
    K = _cpu_kernels()
    K.scatter(sk.keys, sk.valid, sk.kmode, np.uint64((1 << pbits) - 1), cursors,
              0 if keys_dst is None else keys_dst.ctypes.data, 0 if iota_dst is None else iota_dst.ctypes.data,
              _ptrs(src), _ptrs(dst))


def _verify_rows(sk: SideKeys, n: int) -> tuple[list, list, tuple]:
    """Scatter sources and fresh destinations of a general key's words and byte spans."""
    nw, ns = sk.words.shape[0], sk.starts.shape[0]
    w = host_empty((nw, n), np.uint64) if nw else sk.words
    st = host_empty((ns, n), np.int64) if ns else sk.starts
    en = host_empty((ns, n), np.int64) if ns else sk.ends
    src = [sk.words[r].view(np.int64) for r in range(nw)] + [sk.starts[r] for r in range(ns)] + \
        [sk.ends[r] for r in range(ns)]
    dst = [w[r].view(np.int64) for r in range(nw)] + [st[r] for r in range(ns)] + [en[r] for r in range(ns)]
    return src, dst, (w, st, en)


@dataclass
class _Build:
    keys: np.ndarray          # uint64 key words by build position
    valid: np.ndarray         # uint8 by position (unpartitioned build with null keys) or empty
    starts: np.ndarray        # int64 [nparts + 2]: partition p holds positions [starts[p], starts[p+1])
    orig: np.ndarray          # int64 original row of each position (empty: the identity)
    cols: list                # int64 payload columns by position
    w: np.ndarray             # general keys: words / byte spans / bytes, by position
    st: np.ndarray
    en: np.ndarray
    ch: np.ndarray
    tables: Optional[np.ndarray]
    toffs: np.ndarray
    nxt: np.ndarray
    unique: bool              # no key repeats: every chain has one row


def _build_side(sk: SideKeys, pbits: int, carry: Sequence[np.ndarray], need_orig: bool,
                copy_bytes: bool = True) -> _Build:
    """Partition (``pbits > 0``) the build side with its payload and, for general keys, its
    key words, byte spans and bytes (so that verifying a match reads partition-local memory;
    without ``copy_bytes`` the spans keep pointing into the input's bytes), then build every
    partition's table."""
    K = _cpu_kernels()
    nparts = 1 << pbits
    n = sk.n
    carry = [_as_words(c) for c in carry]
    w, st, en, ch = sk.words, sk.starts, sk.ends, sk.chars
    if pbits == 0:
        keys, valid, orig, cols = sk.keys, sk.valid, _E64, carry
        starts = np.array([0, n, n], np.int64)
    else:
        cursors, starts = _cursors(sk, pbits)
        keys = host_empty(n, np.uint64)
        orig = host_empty(n, np.int64) if need_orig else None
        cols = [host_empty(n, np.int64) for _ in carry]
        src, dst = list(carry), list(cols)
        if sk.verify:
            vsrc, vdst, (w, st, en) = _verify_rows(sk, n)
            src += vsrc
            dst += vdst
        _scatter(sk, pbits, cursors, keys, orig, src, dst)
        if sk.verify and st.shape[0] and copy_bytes:
            lens = en - st
            new_st = np.empty(lens.size, np.int64)
            np.cumsum(lens.ravel(), out=new_st)
            nbytes = int(new_st[-1]) if lens.size else 0
            new_st -= lens.ravel()
            ch = host_empty(nbytes, np.uint8)
            run_rows(K.copy_spans, st.size, _ro(st.ravel()), _ro(en.ravel()), sk.chars, _ro(new_st), ch)
            st = new_st.reshape(st.shape)
            en = st + lens
            del lens
        keys, valid, orig = _ro(keys), _E8, (_E64 if orig is None else _ro(orig))
        cols = [_ro(c) for c in cols]
        w, st, en, ch = _ro(w), _ro(st), _ro(en), _ro(ch)
    sizes = np.diff(starts[:nparts + 1])
    if int(sizes.max(initial=0)) >= 2**31 - 1:
        raise MemoryError(f"one join partition has {int(sizes.max()):,} build rows (one key repeated that "
                          "often); at most 2**31 - 2 are supported")
    bits = np.maximum(4, np.ceil(np.log2(np.maximum(2 * sizes, 1))).astype(np.int64))
    slots = np.where(sizes > 0, np.left_shift(1, bits), 0)
    toffs = np.zeros(nparts + 1, np.int64)
    np.cumsum(slots, out=toffs[1:])
    tables = host_empty(int(toffs[-1]), np.int32)
    nxt = host_empty(n, _index_dtype(n))
    chained = sum(_threaded(K.build_tables, sk.verify, nparts, K.build_side(
        keys=keys, valid=valid, starts=starts, nparts=nparts, pbits=pbits, kmode=sk.kmode, verify=sk.verify,
        w=w, st=st, en=en, ch=ch, tables=tables, toffs=toffs, nxt=nxt, unique=False, orig=_E64, cols=_E64)))
    return _Build(keys, valid, starts, orig, cols, w, st, en, ch, tables, toffs, _ro(nxt), chained == 0)


@dataclass
class _Probe:
    keys: Optional[np.ndarray]  # uint64 key words by probe position
    valid: np.ndarray         # uint8 (in-place) or empty
    orig: np.ndarray          # int64 original row of each position (empty: the identity)
    w: np.ndarray             # general keys: words and byte spans by position (bytes: the input's)
    st: np.ndarray
    en: np.ndarray
    ilo: np.ndarray           # work items: positions [ilo, ihi) of partition ipart (-1: any)
    ihi: np.ndarray
    ipart: np.ndarray
    inplace: bool
    cursors: Optional[np.ndarray] = None
    keys_buf: Optional[np.ndarray] = None


def _items(starts: np.ndarray, parts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Work items: every range ``[starts[k], starts[k + 1])`` (of partition ``parts[k]``) cut
    into pieces of at most :data:`_ITEM_ROWS` rows."""
    sizes = np.diff(starts)
    pieces = np.maximum(1, -(-sizes // _ITEM_ROWS))
    pieces[sizes == 0] = 0
    k = np.repeat(np.arange(len(sizes)), pieces)
    first = np.cumsum(pieces) - pieces
    j = np.arange(len(k)) - np.repeat(first, pieces)
    ilo = starts[k] + j * _ITEM_ROWS
    ihi = np.minimum(ilo + _ITEM_ROWS, starts[k + 1])
    return (_ro(ilo.astype(np.int64)), _ro(ihi.astype(np.int64)), _ro(parts[k].astype(np.int64)))


def _probe_side(sk: SideKeys, pbits: int, inplace: bool, need_orig: bool,
                extra_src: Sequence[np.ndarray] = (), extra_dst: Sequence[np.ndarray] = (),
                orig_dst: Optional[np.ndarray] = None, keys_dst: Optional[np.ndarray] = None) -> _Probe:
    """The probe side by position: unmoved (``inplace``) or scattered into partition order with
    the words and byte spans of a general key; ``extra_src`` columns are scattered to
    ``extra_dst``, the original row numbers to ``orig_dst`` (else, with ``need_orig``, to a
    scratch array) and the key words to ``keys_dst`` (else to a scratch array), in one pass."""
    n = sk.n
    if inplace:
        ilo, ihi, ipart = _items(np.array([0, n], np.int64), np.array([-1], np.int64))
        return _Probe(sk.keys, sk.valid, _E64, sk.words, sk.starts, sk.ends, ilo, ihi, ipart, True)
    cursors, starts = _cursors(sk, pbits)
    keys = keys_dst[:n].view(np.uint64) if keys_dst is not None else host_empty(n, np.uint64)
    orig = orig_dst if orig_dst is not None else (host_empty(n, np.int64) if need_orig else None)
    w, st, en = sk.words, sk.starts, sk.ends
    src: list = list(extra_src)
    dst: list = list(extra_dst)
    if sk.verify:
        vsrc, vdst, (w, st, en) = _verify_rows(sk, n)
        src += vsrc
        dst += vdst
    _scatter(sk, pbits, cursors, keys, orig, src, dst)
    ilo, ihi, ipart = _items(starts, np.arange(len(starts) - 1, dtype=np.int64))
    return _Probe(_ro(keys), _E8, _E64 if orig is None else _ro(orig), _ro(w), _ro(st), _ro(en),
                  ilo, ihi, ipart, False, cursors, keys)


def _use_inplace(build: SideKeys, pbits: int) -> bool:
    nb = build.n
    ws = 12 * nb + 8 * nb            # tables (about 3 int32 slots a row) and key words
    if build.verify:
        ws += 16 * nb + int(build.chars.nbytes) + 8 * int(build.words.shape[0]) * nb
    return pbits == 0 or ws <= _INPLACE_BUILD_BYTES


def _use_flat(probe: SideKeys, build: SideKeys, B: _Build) -> bool:
    """Probe in place through a flat table (:func:`~gpuframe.kernels.join_cpu.flat_match`):
    word keys, every build key distinct, and the flat table (16 bytes a slot) within
    :data:`_FLAT_CACHE_BYTES`, or within :data:`_FLAT_BUILD_BYTES` for skewed probe keys
    (:func:`_skewed`)."""
    if probe.verify or build.verify or not B.unique:
        return False
    nbytes = 16 * int(B.toffs[-1])
    return nbytes <= _FLAT_CACHE_BYTES or (nbytes <= _FLAT_BUILD_BYTES and _skewed(probe.keys))


def _skewed(keys: np.ndarray) -> bool:
    """At least :data:`_FLAT_SKEW` of :data:`_FLAT_SAMPLE` keys spread over ``keys`` repeat
    another key of the sample (uniform keys over a million values: almost none do; a
    Zipf(1.3) probe: about 80%)."""
    n = len(keys)
    if n < 2 * _FLAT_SAMPLE:
        return False
    sample = keys[::n // _FLAT_SAMPLE][:_FLAT_SAMPLE]
    return 1.0 - len(np.unique(sample)) / len(sample) >= _FLAT_SKEW


def _build_record(B: _Build, build: SideKeys, pbits: int, tables: Optional[np.ndarray] = None):
    """The kernels' :class:`~gpuframe.kernels.join_cpu.BuildSide` of ``B`` (``tables``: in
    place of ``B.tables``, which the write pass does not read and may have released)."""
    return _cpu_kernels().build_side(
        keys=B.keys, valid=B.valid, starts=B.starts, nparts=1 << pbits, pbits=pbits, kmode=build.kmode,
        verify=build.verify, w=B.w, st=B.st, en=B.en, ch=B.ch, tables=B.tables if tables is None else tables,
        toffs=B.toffs, nxt=B.nxt, unique=B.unique, orig=B.orig, cols=_ptrs(B.cols))


def _probe_record(P: _Probe, probe: SideKeys, pcols: Sequence[np.ndarray] = (), keys: Optional[np.ndarray] = None,
                  items: bool = True):
    """The kernels' :class:`~gpuframe.kernels.join_cpu.ProbeSide` of ``P`` with the columns
    ``pcols`` (``keys``: in place of ``P.keys``; ``items=False``: no work items)."""
    return _cpu_kernels().probe_side(
        keys=P.keys if keys is None else keys, valid=P.valid, kmode=probe.kmode, verify=probe.verify, w=P.w,
        st=P.st, en=P.en, ch=probe.chars, orig=P.orig, cols=_ptrs(pcols), ilo=P.ilo if items else _E64,
        ihi=P.ihi if items else _E64, ipart=P.ipart if items else _E64)


def _output_record(*, eup: bool, eub: bool, pst: np.ndarray = _E2, pen: np.ndarray = _E2, bst: np.ndarray = _E2,
                   ben: np.ndarray = _E2, src_p: np.ndarray = _E64, src_b: np.ndarray = _E64,
                   fill: np.ndarray = _E64, outs: Sequence[np.ndarray] = (), active: np.ndarray = _E64,
                   from_build: bool = False, soffs: Sequence[np.ndarray] = (), schars: Sequence[np.ndarray] = ()):
    """The kernels' :class:`~gpuframe.kernels.join_cpu.OutputRows` (address tables of ``outs``,
    ``soffs`` and ``schars``); what a pass does not read may be left out."""
    return _cpu_kernels().output_rows(
        eup=eup, eub=eub, src_p=src_p, src_b=src_b, fill=fill, outs=_row_addresses(outs), active=active,
        from_build=from_build, pst=pst, pen=pen, bst=bst, ben=ben, soffs=_addresses(soffs),
        schars=_addresses(schars))


def _tally(*, match: np.ndarray = _E64, bmatched: np.ndarray = _E8, counts: np.ndarray = _E64,
           sbytes: np.ndarray = _E2, cap_bytes: np.ndarray = _E2, item_off: np.ndarray = _E64,
           item_bytes: np.ndarray = _E2, ub_off: np.ndarray = _E64, ub_bytes: np.ndarray = _E2):
    """The kernels' :class:`~gpuframe.kernels.join_cpu.Tally`; what a pass does not read may be
    left out."""
    return _cpu_kernels().tally(match=match, bmatched=bmatched, counts=counts, sbytes=sbytes,
                                cap_bytes=cap_bytes, item_off=item_off, item_bytes=item_bytes, ub_off=ub_off,
                                ub_bytes=ub_bytes)


def _count(probe: SideKeys, build: SideKeys, P: _Probe, B: _Build, pbits: int, eup: bool, eub: bool,
           match: np.ndarray, out_spans: Optional[tuple] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    K = _cpu_kernels()
    ost, oen = out_spans if out_spans is not None else (_E2, _E2)
    bmatched = np.zeros(len(B.keys) if eub else 0, dtype=np.uint8)
    counts = np.zeros(len(P.ilo), np.int64)
    sbytes = np.zeros((len(P.ilo), ost.shape[0]), np.int64)
    _threaded(K.probe_count, probe.verify or build.verify, len(P.ilo), _probe_record(P, probe),
              _build_record(B, build, pbits), _output_record(eup=eup, eub=eub, pst=ost, pen=oen),
              _tally(match=match, bmatched=bmatched, counts=counts, sbytes=sbytes))
    return counts, sbytes, bmatched


def _exclusive(x: np.ndarray, start: int = 0) -> tuple[np.ndarray, int]:
    out = np.empty(len(x), np.int64)
    if len(x):
        np.cumsum(x, out=out)
        total = int(out[-1])
        out -= x
    else:
        total = 0
    out += start
    return out, total + start


def _unmatched_build(B: _Build, bst: np.ndarray, ben: np.ndarray, bmatched: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Unmatched build rows and their string key bytes, per partition (every partition of
    ``B.starts``, the never-matching one included)."""
    z = bmatched == 0
    cz = np.zeros(len(z) + 1, np.int64)
    np.cumsum(z, out=cz[1:])
    counts = cz[B.starts[1:]] - cz[B.starts[:-1]]
    nstr = bst.shape[0]
    sb = np.zeros((len(counts), nstr), np.int64)
    for c in range(nstr):
        cl = np.zeros(len(z) + 1, np.int64)
        np.cumsum(np.where(z, ben[c] - bst[c], 0), out=cl[1:])
        sb[:, c] = cl[B.starts[1:]] - cl[B.starts[:-1]]
    return counts, sb


def _string_room(sbytes: np.ndarray, ub_bytes: Optional[np.ndarray], total: int, skip: Any = ()
                 ) -> tuple[np.ndarray, list, list]:
    """Where each work item (``sbytes[item, c]``: its bytes of string column ``c``) and, after
    them, each partition's unmatched build rows (``ub_bytes``, turned into offsets in place;
    ``None``: none) write their bytes: ``(item_bytes, offsets, bytes)``, the int64 offsets
    (``total + 1``, the first 0) and bytes of every output string column, ``None`` for the
    columns in ``skip``."""
    nitems, nstr = sbytes.shape
    item_bytes = np.zeros((nitems, nstr), np.int64)
    soffs: list = []
    schars: list = []
    for c in range(nstr):
        if c in skip:
            soffs.append(None)
            schars.append(None)
            continue
        item_bytes[:, c], tb = _exclusive(sbytes[:, c])
        if ub_bytes is not None:
            ub_bytes[:, c], tb = _exclusive(ub_bytes[:, c], tb)
        off = host_empty(total + 1, np.int64)
        off[0] = 0
        soffs.append(off)
        schars.append(host_empty(tb, np.uint8))
    return item_bytes, soffs, schars


def _fits(on_count: Optional[Callable[[int], None]], rows: int) -> bool:
    if on_count is None:
        return True
    try:
        on_count(rows)
    except MemoryError:
        return False
    return True


def run(req: JoinRequest) -> JoinResult:
    """The CPU join. The build side is partitioned and gets its tables first; then either

    * *small* (the build side's tables fit in cache, or its keys are distinct words whose flat
      table :func:`_use_flat` takes: the probe rows stay in place): find every
      probe row's match, allocate the outputs at their exact size, write them a column at a
      time; an output that is the probe side in its own order takes the probe's columns;
    * *direct* (every build key distinct: at most one output row per probe row): one pass
      probes and writes, each work item into the room of its own probe positions, and a
      compaction closes the gaps left by probe rows without a match (none in a join where
      every probe row matches). Scattered probe columns land directly in their output rows.
    * *two passes* (repeated build keys, and ``join_size``): count every item's rows, take
      the prefix sum, write.
    """
    K = _cpu_kernels()
    if req.how in ("semi", "anti"):
        _row_hash_cpu(req.left)
        _row_hash_cpu(req.right)
        req.left, req.right = _ro_side(req.left), _ro_side(req.right)
        return _cpu_semi_anti(req)
    build_left, eup, eub = _sides(req)
    probe, build = (req.right, req.left) if build_left else (req.left, req.right)
    pbits = _partition_bits(build.n, probe.n)
    inplace = _use_inplace(build, pbits)
    _row_hash_cpu(build)
    # an in-place probe of a general key hashes its rows as it probes them (small_match)
    if not inplace or req.count_only:
        _row_hash_cpu(probe)
    probe, build = _ro_side(probe), _ro_side(build)
    L, R = (build, probe) if build_left else (probe, build)
    req.left, req.right = L, R
    pcarry_src, bcarry_src = (req.carry_right, req.carry_left) if build_left else (req.carry_left, req.carry_right)
    count_only = req.count_only
    string_keys = [] if count_only else list(req.string_keys)
    want_idx = req.want_indices and not count_only

    # output-row codes in probe/build terms; the probe's key is carried only when unmatched
    # probe rows need it (matched rows take the equal build key)
    pcarry = [_as_words(c) for c in pcarry_src]
    src_p, src_b, fill = [], [], []
    probe_key_slot = -1
    probe_name = "right" if build_left else "left"
    views = [] if req.views is None else [r for r, sides in req.views.items() if probe_name in sides]
    for lsrc, rsrc, f in req.rows:
        ps, bs = (rsrc, lsrc) if build_left else (lsrc, rsrc)
        if ps == SRC_KEY:
            if eup:
                if probe_key_slot < 0:
                    probe_key_slot = len(pcarry)
                    pcarry.append(probe.keys.view(np.int64))
                ps = probe_key_slot
            else:
                ps = K.SRC_MATCH_KEY
        src_p.append(ps)
        src_b.append(K.SRC_BUILD_KEY if bs == SRC_KEY else bs)
        fill.append(f)
    if want_idx:
        lrow = (K.SRC_NONE, K.SRC_ROW) if build_left else (K.SRC_ROW, K.SRC_NONE)
        rrow = (K.SRC_ROW, K.SRC_NONE) if build_left else (K.SRC_NONE, K.SRC_ROW)
        for sp_, sb_ in (lrow, rrow):
            if req.views is not None and sp_ == K.SRC_ROW:
                views.append(len(src_p))
            src_p.append(sp_)
            src_b.append(sb_)
            fill.append(-1)
    B = _build_side(build, pbits, [] if count_only else bcarry_src, want_idx)
    flat = not count_only and _use_flat(probe, build, B)
    if (inplace and not count_only) or flat:
        return _cpu_small(req, probe, build, B, pbits, eup, eub, pcarry, src_p, src_b, fill, string_keys,
                          want_idx, views, probe_name, flat)
    cap = probe.n + (build.n if eub else 0)
    direct = B.unique and not count_only and _fits(req.on_count, cap)
    if direct:
        return _cpu_direct(req, probe, build, B, pbits, eup, eub, pcarry, src_p, src_b, fill,
                           string_keys, want_idx, cap, probe_key_slot)
    return _cpu_two_pass(req, probe, build, B, pbits, inplace, eup, eub, pcarry, src_p, src_b, fill,
                         string_keys, want_idx)


def _string_outputs(P: _Probe, B: _Build, string_keys: list) -> tuple:
    pst, pen = _span_rows(P.st, P.en, string_keys)
    bst, ben = _span_rows(B.st, B.en, string_keys)
    return pst, pen, bst, ben


def _addresses(arrays: Sequence[np.ndarray]) -> np.ndarray:
    if not arrays:
        return _E64
    return _ro(np.array([a.ctypes.data for a in arrays], np.int64))


def _result(total: int, outs: list, want_idx: bool, soffs: list, schars: list,
            identity: Optional[str] = None) -> JoinResult:
    rows = outs
    lidx = ridx = None
    if want_idx:
        lidx, ridx = rows[-2], rows[-1]
        rows = rows[:-2]
    return JoinResult(total, rows, lidx, ridx, list(zip(soffs, schars)), identity)


def _row_dtypes(src_p: Sequence[int], src_b: Sequence[int], fill: Sequence[int]) -> list[np.dtype]:
    """Each output row's dtype: uint8 for a row that only ever holds 0 or 1 (a validity: one,
    or nothing, on each side, and a fill of 0 or 1), int64 words for the rest. A left join's
    validity of the build side's columns is then 1 byte a row, not 8."""
    K = _cpu_kernels()
    flag = (K.SRC_ONE, K.SRC_NONE)
    return [np.dtype(np.uint8) if sp in flag and sb in flag and f in (0, 1) else np.dtype(np.int64)
            for sp, sb, f in zip(src_p, src_b, fill)]


def _row_addresses(outs: Sequence[Optional[np.ndarray]]) -> np.ndarray:
    """The address table of output rows as the write kernels take it: :func:`_addresses_or_0`
    with a byte row's address negated."""
    sign = [-1 if a is not None and a.dtype.itemsize == 1 else 1 for a in outs]
    return _ro(_addresses_or_0(outs) * np.array(sign, np.int64))


def _addresses_or_0(arrays: Sequence[Optional[np.ndarray]]) -> np.ndarray:
    """The address table of output arrays, 0 for one left out (``None``)."""
    for a in arrays:
        if a is not None and not a.flags.c_contiguous:
            raise AssertionError(f"join output must be contiguous, got strides {a.strides}")
    return _ro(np.array([0 if a is None else a.ctypes.data for a in arrays], np.int64))


def _cpu_small(req: JoinRequest, probe: SideKeys, build: SideKeys, B: _Build, pbits: int, eup: bool, eub: bool,
               pcarry: list, src_p: list, src_b: list, fill: list, string_keys: list, want_idx: bool,
               views: list, probe_name: str, flat: bool = False) -> JoinResult:
    """A build side whose tables stay in cache: the probe rows stay in place, one pass finds
    every row's match (:func:`~gpuframe.kernels.join_cpu.small_match`; with ``flat``, distinct
    word keys, :func:`~gpuframe.kernels.join_cpu.flat_match` through the flat table), the
    outputs are allocated at their exact size, and a second pass writes them a column at a time
    (:func:`_write_dense` where every probe row gives one row in its position, then
    :func:`~gpuframe.kernels.join_cpu.write_items` for what is left). When every probe row
    gives exactly one output row, in order (a unique build side with every row matching, or a
    left join), the output *is* the probe side: the rows in ``views`` are not made at all (the
    caller takes the probe side's own columns)."""
    K = _cpu_kernels()
    P = _probe_side(probe, pbits, True, False)
    pst, pen, bst, ben = _string_outputs(P, B, string_keys)
    nstr = len(string_keys)
    match = host_empty(probe.n, _index_dtype(build.n))
    bmatched = np.zeros(build.n if eub else 0, dtype=np.uint8)
    counts = np.zeros(len(P.ilo), np.int64)
    if flat:
        nslots = int(B.toffs[-1])
        table = host_empty((nslots, 2), np.int64)
        bits = host_empty(nslots >> 3, np.uint64)
        rings = np.empty((len(P.ilo), K._FLAT_RING), np.int64)
        match_args = (P.keys, P.valid, probe.kmode, np.uint64((1 << pbits) - 1), np.uint64(pbits), _ro(B.toffs),
                      _ro(table), _ro(bits), eup, eub, P.ilo, P.ihi, match, bmatched, counts, rings)
        # on a cold numba cache, flat_match (the longest compile of this path) compiles in a
        # child process while flat_slots and write_dense compile here
        beside = K.compile_kernels_beside([(K.flat_match, match_args)])
        try:
            run_threads(K.flat_slots, len(B.toffs) - 1, B.tables, _ro(B.toffs), _ro(B.starts), B.keys, build.kmode,
                        np.uint64(pbits), table, bits)
            if beside.started:   # the kernels of the write pass, while the child still compiles
                if B.unique and build.n:
                    K.write_dense.compile(K.kernel_types(_write_dense_args(match, B, P)))
                if eub and beside.running():
                    out = _output_record(eup=eup, eub=eub, pst=pst, pen=pen, bst=bst, ben=ben)
                    K.unmatched_build_write.compile(K.kernel_types(_unmatched_build_args(
                        P, probe, pcarry, _build_record(B, build, pbits, tables=_EI32), out, build)))
        finally:
            beside.wait()
        B.tables = None
        run_threads(K.flat_match, len(P.ilo), *match_args)
        del table, bits, match_args
    else:
        # a general key's probe rows come unhashed (keys None): small_match hashes them; the
        # string keys' output bytes are summed afterwards, where they are written
        _threaded(K.small_match, probe.verify or build.verify, len(P.ilo),
                  _probe_record(P, probe, keys=_EU64 if P.keys is None else None),
                  _build_record(B, build, pbits), _output_record(eup=eup, eub=eub),
                  _tally(match=match, bmatched=bmatched, counts=counts))
    item_off, total = _exclusive(counts)
    probe_rows = total
    if eub:
        ub_counts, ub_bytes = _unmatched_build(B, bst, ben, bmatched)
        ub_off, total = _exclusive(ub_counts, total)
    else:
        ub_counts, ub_off, ub_bytes = _E64, _E64, np.zeros((0, nstr), np.int64)
    if req.on_count is not None:
        req.on_count(total)
    B.tables = None
    sviews = [c for c, sides in req.string_views.items() if probe_name in sides] if req.views is not None else []
    identity = bool(views or sviews) and B.unique and probe_rows == probe.n and total == probe.n
    skip = set(views) if identity else set()
    sskip = set(sviews) if identity else set()
    sbytes = np.zeros((len(P.ilo), nstr), np.int64)
    if set(range(nstr)) - sskip:
        K.small_string_bytes(_probe_record(P, probe, keys=_EU64 if P.keys is None else None),
                             _build_record(B, build, pbits, tables=_EI32),
                             _output_record(eup=eup, eub=eub, pst=pst, pen=pen), _tally(match=match, sbytes=sbytes))
    rdt = _row_dtypes(src_p, src_b, fill)
    outs = [None if r in skip else host_empty(total, rdt[r]) for r in range(len(src_p))]
    item_bytes, soffs, schars = _string_room(sbytes, ub_bytes if eub else None, total, sskip)
    if total and len(src_p) + nstr:
        rest = outs
        if B.unique and probe_rows == probe.n and build.n:
            # every probe row gives one output row, in its probe position (write_dense reads a
            # missing row's build values at row 0: a build side has one)
            rest = _write_dense(P, pcarry, B, src_p, src_b, fill, outs, match)

        def record(rows: list) -> Any:
            return K.output_rows(eup=eup, eub=eub, src_p=_ro(np.array(src_p, np.int64)),
                                 src_b=_ro(np.array(src_b, np.int64)), fill=_ro(np.array(fill, np.int64)),
                                 outs=_row_addresses(rows), active=_E64, from_build=False, pst=pst, pen=pen,
                                 bst=bst, ben=ben, soffs=_addresses_or_0(soffs), schars=_addresses_or_0(schars))

        # write_items writes what write_dense left; the unmatched build rows (eub) take every row
        _write(P, probe, pcarry, B, build, pbits, record(rest), match, item_off, item_bytes, eub, ub_counts, bmatched,
               ub_off, ub_bytes, items=any(o is not None for o in rest) or nstr > len(sskip),
               ub_out=None if rest is outs else record(outs))
    del match
    return _result(total, outs, want_idx, soffs, schars, probe_name if identity else None)


def _write_dense(P: _Probe, pcols: list, B: _Build, src_p: list, src_b: list, fill: list, outs: list,
                 match: np.ndarray) -> list:
    """Write the output rows of ``outs`` that :func:`~gpuframe.kernels.join_cpu.write_dense`
    covers, for a join where every probe row gives one output row in its probe position;
    returns ``outs`` with those rows left out (``None``): the rows left for ``write_items``."""
    K = _cpu_kernels()
    kinds, srcs, fills, rows = [], [], [], []
    rest = list(outs)
    for r, (sp, sb, f) in enumerate(zip(src_p, src_b, fill)):
        if outs[r] is None:
            continue
        src = 0
        if sp >= 0:
            kind, src = K.DENSE_PROBE, pcols[sp].ctypes.data
        elif sp == K.SRC_MATCH_KEY:
            kind = K.DENSE_MATCH_KEY
        elif sp == K.SRC_ONE:
            kind = K.DENSE_ONE
        elif sp == K.SRC_NONE and sb >= 0:
            kind, src = K.DENSE_BUILD, B.cols[sb].ctypes.data
        elif sp == K.SRC_NONE and sb == K.SRC_BUILD_KEY:
            kind = K.DENSE_BUILD_KEY
        elif sp == K.SRC_NONE and sb == K.SRC_ONE:
            kind = K.DENSE_BUILD_ONE
        else:
            continue                # row numbers (gather maps): write_items
        kinds.append(kind)
        srcs.append(src)
        fills.append(f)
        rows.append(outs[r])
        rest[r] = None
    if rows:
        run_threads(K.write_dense, len(P.ilo), *_write_dense_args(match, B, P, kinds, srcs, fills, rows))
    return rest


def _write_dense_args(match: np.ndarray, B: _Build, P: _Probe, kinds: Sequence = (), srcs: Sequence = (),
                      fills: Sequence = (), rows: Sequence = ()) -> tuple:
    """:func:`~gpuframe.kernels.join_cpu.write_dense`'s arguments (with none of the lists:
    arguments of the same types, to compile it ahead)."""
    return (match, _ro(np.array(kinds, np.int64)), _ro(np.array(srcs, np.int64)), _ro(np.array(fills, np.int64)),
            _row_addresses(rows), B.keys, P.ilo, P.ihi)


def _cpu_direct(req: JoinRequest, probe: SideKeys, build: SideKeys, B: _Build, pbits: int,
                eup: bool, eub: bool, pcarry: list, src_p: list, src_b: list, fill: list,
                string_keys: list, want_idx: bool, cap: int, probe_key_slot: int = -1) -> JoinResult:
    """The one-pass join of a partitioned probe side (in-place probes take :func:`_cpu_small`).
    ``probe_key_slot``: the column of ``pcarry`` that is the probe's own key words (an outer
    probe side's merged key), or -1."""
    K = _cpu_kernels()
    nrows = len(src_p)
    outs = [host_empty(cap, dt) for dt in _row_dtypes(src_p, src_b, fill)]
    placed = np.zeros(nrows, np.uint8)
    # every probe column goes straight to the first output row that takes it
    home: dict[int, int] = {}
    for r, sp in enumerate(src_p):
        if sp >= 0 and sp not in home:
            home[sp] = r
    orig_row = next((r for r, sp in enumerate(src_p) if sp == K.SRC_ROW), -1)
    # a fast-path key equals the probe's own key word wherever it matches: the scatter
    # writes the probe keys straight into that output row, and the probe reads them there
    key_row = -1 if probe.verify else next((r for r, sp in enumerate(src_p) if sp == K.SRC_MATCH_KEY), -1)
    # the same for an outer probe side's key (a left join's merged key is the probe's key on
    # every row): its carried column is the probe's key words, which the scatter writes anyway
    own_key = -1
    if key_row < 0 and not probe.verify and probe_key_slot in home:
        own_key = probe_key_slot
        key_row = home[own_key]
    pcols = [outs[home[k]] if k in home else host_empty(probe.n, np.int64) for k in range(len(pcarry))]
    for r in list(home.values()) + [x for x in (orig_row, key_row) if x >= 0]:
        placed[r] = 1
    scattered = [k for k in range(len(pcarry)) if k != own_key]
    P = _probe_side(probe, pbits, False, False, [pcarry[k] for k in scattered],
                    [pcols[k][:probe.n] for k in scattered],
                    outs[orig_row] if orig_row >= 0 else None, outs[key_row] if key_row >= 0 else None)
    src_p = list(src_p)
    for row in (orig_row, key_row):
        if row >= 0:
            # that output row now holds its value by probe position: a probe column
            code = src_p[row]
            src_p = [len(pcols) if sp == code else sp for sp in src_p]
            pcols = pcols + [outs[row]]
    pst, pen, bst, ben = _string_outputs(P, B, string_keys)
    nstr = len(string_keys)
    nitems = len(P.ilo)
    # string room: item ``it`` may write the bytes of all its probe keys from cap_bytes[it] on
    cap_bytes = np.zeros((nitems, nstr), np.int64)
    soffs, schars = [], []
    for c in range(nstr):
        cl = np.zeros(probe.n + 1, np.int64)
        np.cumsum(pen[c] - pst[c], out=cl[1:])
        cap_bytes[:, c] = cl[P.ilo]
        room = int(cl[-1]) + (int((ben[c] - bst[c]).sum()) if eub else 0)
        off = host_empty(cap + 1, np.int64)
        off[0] = 0
        soffs.append(off)
        schars.append(host_empty(room, np.uint8))
    bmatched = np.zeros(build.n if eub else 0, dtype=np.uint8)
    counts = np.zeros(nitems, np.int64)
    sbytes = np.zeros((nitems, nstr), np.int64)
    sp_arr = _ro(np.array(src_p, np.int64))
    sb_arr = _ro(np.array(src_b, np.int64))
    fill_arr = _ro(np.array(fill, np.int64))
    out = _output_record(eup=eup, eub=eub, pst=pst, pen=pen, bst=bst, ben=ben, src_p=sp_arr, src_b=sb_arr,
                         fill=fill_arr, outs=outs, active=_ro(np.flatnonzero(placed == 0).astype(np.int64)),
                         from_build=True, soffs=soffs, schars=schars)
    _threaded(K.probe_direct, probe.verify or build.verify, nitems, _probe_record(P, probe, pcols),
              _build_record(B, build, pbits), out,
              _tally(bmatched=bmatched, counts=counts, sbytes=sbytes, cap_bytes=_ro(cap_bytes)))
    B.tables = None
    P.keys = P.keys_buf = None
    item_off, total = _exclusive(counts)
    item_bytes = np.zeros((nitems, nstr), np.int64)
    tbytes = []
    for c in range(nstr):
        item_bytes[:, c], tb = _exclusive(sbytes[:, c])
        tbytes.append(tb)
    if not (np.array_equal(item_off, P.ilo) and np.array_equal(item_bytes, cap_bytes)):
        K.compact_items(P.ilo, counts, item_off, _row_addresses(outs), _ro(cap_bytes), _ro(sbytes), _ro(item_bytes),
                        _addresses(soffs), _addresses(schars))
    if eub:
        ub_counts, ub_bytes = _unmatched_build(B, bst, ben, bmatched)
        ub_off, total = _exclusive(ub_counts, total)
        for c in range(nstr):
            ub_bytes[:, c], tbytes[c] = _exclusive(ub_bytes[:, c], tbytes[c])
        if int(ub_counts.sum()):
            build_rec = _build_record(B, build, pbits, tables=_EI32)
            run_threads(K.unmatched_build_write, len(build_rec.starts) - 1,
                        *_unmatched_build_args(P, probe, pcols, build_rec, out, build, bmatched, ub_off, ub_bytes))
    # right-size outputs that used less than half of their room
    if total < cap // 2:
        outs = [_shrink(o, total) for o in outs]
        soffs = [_shrink(o, total + 1) for o in soffs]
    else:
        outs = [o[:total] for o in outs]
        soffs = [o[:total + 1] for o in soffs]
    schars = [_shrink(ch, tb) if tb < len(ch) // 2 else ch[:tb] for ch, tb in zip(schars, tbytes)]
    return _result(total, outs, want_idx, soffs, schars)


def _E2i(nstr: int) -> np.ndarray:
    return _ro(np.zeros((0, nstr), np.int64))


def _shrink(a: np.ndarray, n: int) -> np.ndarray:
    out = host_empty(n, a.dtype)
    out[:] = a[:n]
    return out


def _cpu_two_pass(req: JoinRequest, probe: SideKeys, build: SideKeys, B: _Build, pbits: int, inplace: bool,
                  eup: bool, eub: bool, pcarry: list, src_p: list, src_b: list, fill: list,
                  string_keys: list, want_idx: bool) -> JoinResult:
    K = _cpu_kernels()
    count_only = req.count_only
    P = _probe_side(probe, pbits, inplace, want_idx)
    pst, pen, bst, ben = _string_outputs(P, B, string_keys)
    nstr = len(string_keys)
    idt = _index_dtype(build.n)
    match = np.zeros(0, idt) if count_only else host_empty(probe.n, idt)
    counts, sbytes, bmatched = _count(probe, build, P, B, pbits, eup, eub, match, (pst, pen))
    item_off, total = _exclusive(counts)
    if eub:
        ub_counts, ub_bytes = _unmatched_build(B, bst, ben, bmatched)
        ub_off, total = _exclusive(ub_counts, total)
    else:
        ub_counts, ub_off, ub_bytes = _E64, _E64, np.zeros((0, nstr), np.int64)
    if count_only:
        return JoinResult(total, [])
    if req.on_count is not None:
        req.on_count(total)
    B.tables = None                             # not needed any more: back to the allocator
    # the probe payload, by probe position (in-place probes write in _cpu_small)
    assert not P.inplace
    pcols = [P.keys_buf.view(np.int64) if k == 0 else host_empty(probe.n, np.int64)
             for k in range(len(pcarry))]
    P.keys = None
    if pcarry:
        # the keys' buffer is free now that the matches are counted: it takes the first column
        _scatter(probe, pbits, P.cursors, None, None, pcarry, pcols)
    P.keys_buf = None
    nrows = len(src_p)
    outs = [host_empty(total, dt) for dt in _row_dtypes(src_p, src_b, fill)]
    item_bytes, soffs, schars = _string_room(sbytes, ub_bytes if eub else None, total)
    if total and nrows + nstr:
        out = _output_record(eup=eup, eub=eub, pst=pst, pen=pen, bst=bst, ben=ben,
                             src_p=_ro(np.array(src_p, np.int64)), src_b=_ro(np.array(src_b, np.int64)),
                             fill=_ro(np.array(fill, np.int64)), outs=outs, from_build=True, soffs=soffs,
                             schars=schars)
        _write(P, probe, pcols, B, build, pbits, out, match, item_off, item_bytes, eub, ub_counts, bmatched, ub_off,
               ub_bytes)
    return _result(total, outs, want_idx, soffs, schars)


def _write(P: _Probe, probe: SideKeys, pcols: list, B: _Build, build: SideKeys, pbits: int, out: Any,
           match: np.ndarray, item_off: np.ndarray, item_bytes: np.ndarray, eub: bool, ub_counts: np.ndarray,
           bmatched: np.ndarray, ub_off: np.ndarray, ub_bytes: np.ndarray, items: bool = True,
           ub_out: Any = None) -> None:
    """The write pass of every output row (``out``) once the matches are counted: every work
    item's rows a column at a time (:func:`~gpuframe.kernels.join_cpu.write_items`; not with
    ``items=False``: nothing left for it), then, for ``eub``, the unmatched build rows
    (:func:`~gpuframe.kernels.join_cpu.unmatched_build_write`; into ``ub_out``'s rows where
    given)."""
    K = _cpu_kernels()
    build_rec = _build_record(B, build, pbits, tables=_EI32)
    if items:
        _threaded(K.write_items, probe.verify or build.verify, len(P.ilo),
                  _probe_record(P, probe, pcols, keys=_EU64), build_rec, out,
                  _tally(match=_ro(match), item_off=_ro(item_off), item_bytes=_ro(item_bytes)))
    if eub and int(ub_counts.sum()):
        args = _unmatched_build_args(P, probe, pcols, build_rec, out if ub_out is None else ub_out, build, bmatched,
                                     ub_off, ub_bytes)
        run_threads(K.unmatched_build_write, len(build_rec.starts) - 1, *args)


def _unmatched_build_args(P: _Probe, probe: SideKeys, pcols: Sequence[np.ndarray], build_rec: Any, out: Any,
                          build: SideKeys, bmatched: np.ndarray = _E8, ub_off: np.ndarray = _E64,
                          ub_bytes: Optional[np.ndarray] = None) -> tuple:
    """:func:`~gpuframe.kernels.join_cpu.unmatched_build_write`'s arguments: the records and its
    scratch (a word per string key column a partition), which it runs on the threads a
    partition at a time (with the defaults: arguments of the same types, to compile it ahead)."""
    nstr = out.soffs.shape[0]
    tally = _tally(match=np.zeros(0, _index_dtype(build.n)), item_bytes=_E2i(nstr), bmatched=_ro(bmatched),
                   ub_off=_ro(ub_off), ub_bytes=_E2i(nstr) if ub_bytes is None else _ro(ub_bytes))
    spos = np.empty((len(build_rec.starts) - 1, nstr), np.int64)
    return _probe_record(P, probe, pcols, keys=_EU64, items=False), build_rec, out, tally, spos


def _cpu_semi_anti(req: JoinRequest) -> JoinResult:
    L, R = req.left, req.right
    build_left = L.n < R.n
    probe, build = (R, L) if build_left else (L, R)
    pbits = _partition_bits(build.n, probe.n)
    inplace = _use_inplace(build, pbits)
    B = _build_side(build, pbits, [], True)
    P = _probe_side(probe, pbits, inplace, True)
    flags = np.zeros(L.n, dtype=np.uint8)
    idt = _index_dtype(build.n)
    if build_left:
        _counts, _sb, bmatched = _count(probe, build, P, B, pbits, False, True, np.zeros(0, idt))
        if len(B.orig):
            flags[B.orig] = bmatched
        else:
            flags[:] = bmatched
    else:
        match = host_empty(probe.n, idt)
        _count(probe, build, P, B, pbits, False, False, match)
        hit = (match >= 0).view(np.uint8)
        if len(P.orig):
            flags[P.orig] = hit
        else:
            flags[:] = hit
    want = 1 if req.how == "semi" else 0
    sel = np.flatnonzero(flags == want).astype(np.int64)
    if req.count_only:
        return JoinResult(len(sel), [])
    if req.on_count is not None:
        req.on_count(len(sel))
    return JoinResult(len(sel), [], sel, None)
