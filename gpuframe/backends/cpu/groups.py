"""Grouping on the CPU: group ids of rows (unique, set operations, groupby) and the
aggregations of groupby (kernels in :mod:`gpuframe.kernels.group_cpu`).

Rows are grouped with the join's key preparation and tables (``nulls_equal``: null == null,
NaN == NaN, -0.0 == 0.0; the contract is in :mod:`gpuframe.backends.contract`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import numba
import numpy as np
import pyarrow as pa
from numba import types

from gpuframe.kernels.cpu_intrinsics import native_entry_for
from gpuframe.kernels.jit_cache import compile_beside
from gpuframe.kernels.join import KMODE_BITS, KMODE_F64

from ...core.column import Column
from ...core.device import CPU
from ...core.dtypes import Layout
from ...core.hostalloc import host_empty
from .._keys import fast_key_words, prepare_side
from ..contract import KeyPair
from .join import (_E8, _EU64, _build_side, _count, _index_dtype, _key_word, _partition_bits, _prepare,
                   _probe_side, _ro, _ro_side, _row_hash_cpu, _string_span, _use_inplace, _widen_words)
from ._target import run_rows, run_threads
from .select import flagged_rows

__all__ = ["group_ids", "first_rows", "distinct_rows", "dense_groups", "DenseGroups", "group_reduce", "group_reduce_many",
           "last_rows", "string_groups"]


def _kernels():
    from gpuframe.kernels import group_cpu

    return group_cpu


def group_ids(columns: Sequence[Column], pairs: Sequence[KeyPair], need_gid: bool = True
              ) -> tuple[Optional[np.ndarray], np.ndarray]:
    """``(gid, first)``: every row's dense group id (groups numbered in the order of their first
    rows; int32 below 2**31 rows, else int64) and each group's first row (ascending, int64).
    Without ``need_gid`` ``gid`` may be ``None`` (:func:`first_rows`).

    One key column is grouped with its key in the table's slots (:func:`_column_ids`). Several
    are grouped one at a time, each with the group ids of the columns before it in the slots
    too: a row's group is that of its (previous group, key) pair, numbered by first rows (a
    first key that is a string with too many groups for a chunk's table: every column at once
    by the join's general path instead). Once
    a chunk of rows has too many such pairs for its table, the remaining columns are grouped
    alone and their group ids combined into one int64 word per row (``word * groups + own``;
    the words regrouped first where the product of the group counts would not fit), and the
    words grouped at the end by the join's tables."""
    n = len(columns[0])
    if n == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int64)
    if not need_gid:
        # (a column of fewer than 4 samples' rows: its chunk tables are cheap to try)
        many = n >= 4 * _SAMPLE_ROWS and _sample_share(columns[0], pairs[0]) > _MANY_GROUPS_SHARE
        if many or (columns[0].layout == Layout.FIXED and not columns[0].has_nulls):
            # a first column with many groups (its chunk tables would give up part way), or
            # one that would take the join's key preparation alone (:func:`_column_ids`):
            # every column takes it at once, the chunk tables unless the first rows have many
            # groups and, past their limit, the partitioned tables' chain heads
            return _prepared_ids(columns, pairs, chunk_tables=not many, heads_only=True)
    K = _kernels()
    codes: Any = None        # the group ids of the columns so far (dense, by first rows)
    first: Any = None        # their groups' first rows
    words: Any = None        # once chaining stops: the combined ids so far (int64)
    card = 0                 # the product of the group counts that ``words`` combines
    for col, pair in zip(columns, pairs):
        if words is None:
            if codes is None:
                got = _column_ids(col, pair, local_only=True)
                if got is None and not need_gid:
                    # the first column has too many groups for a chunk's table, and so have
                    # the rows: every column at once in the partitioned tables, whose chains'
                    # heads are the groups' first rows
                    return None, _prepared_ids(columns, pairs, chunk_tables=False, heads_only=True)[1]
                if got is None:
                    if pair.is_string and len(columns) > 1:
                        # a string key with too many groups for a chunk's table: the join's
                        # general path (a row hash verified against the bytes) takes every
                        # column in the one pass it needs for this one
                        return _prepared_ids(columns, pairs, chunk_tables=False)
                    got = _prepared_ids([col], [pair], chunk_tables=False)
            else:
                got = _column_ids(col, pair, _ro(_ids(codes)), local_only=True)
            if got is not None:
                codes, first = got
                if len(first) == n:
                    return _every_row_a_group(n)
                continue
            words, card = codes, len(first)
        gid_c, first_c = _column_ids(col, pair)
        k = len(first_c)
        if k == n:
            return _every_row_a_group(n)
        if card * k >= _COMBINE_LIMIT:
            words, regrouped = _word_ids(words)
            card = len(regrouped)
        out = host_empty(n, np.int64)
        run_rows(K.combine_ids, n, _ro(_ids(words)), _ro(_ids(gid_c)), k, out)
        words, card = out, card * k
    if words is None:
        return codes, first
    if card <= _DENSE_MAX_FACTOR * n:
        gid = host_empty(n, _id_dtype(n))
        first = host_empty(n, np.int64)
        ngroups = int(K.dense_word_ids(_ro(words), card, gid, first))
        return _every_row_a_group(n) if ngroups == n else (gid, first[:ngroups])
    return _word_ids(words)


_NO_PREV = _ro(np.zeros(0, np.int32))   # no columns before: the kernels' empty ``prev``
_EI64 = np.zeros(0, np.int64)           # no sizes wanted (``group_sums``)

# combined group ids stay below this (the words are int64)
_COMBINE_LIMIT = 2**62
# combined words below this many per row are grouped by direct address (an int64 per word)
_DENSE_MAX_FACTOR = 4


def _word_ids(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(gid, first)`` of int64 words (two columns' group ids combined)."""
    col = Column.from_numpy(np.ascontiguousarray(words, dtype=np.int64), pa.int64())
    return _prepared_ids([col], [KeyPair("<group ids>", "<group ids>", pa.int64(), pa.int64(), "int", pa.int64())])


def _column_ids(col: Column, pair: KeyPair, prev: Any = None, local_only: bool = False,
                fixed_local_only: bool = False) -> Any:
    """``(gid, first)`` of one key column (with ``prev``, the rows' group ids by the columns
    before, of the (previous group, key) pairs): the key in the slots of a table per chunk of
    rows (a string's bytes when it has at most 15, its hash and then its bytes when longer; a
    null one group), merged in row order. Past :data:`_LOCAL_GROUPS` groups in a chunk ``None``
    with ``local_only``, else the join's prepared keys and partitioned tables
    (:func:`_prepared_ids`), which also take a key without ``prev`` or nulls (its word alone in
    the slots: faster; its chunk tables alone too with ``fixed_local_only``, ``None`` past
    their limit) and the layouts the slots do not."""
    n = len(col)
    valid = _valid(col) if col.has_nulls else _E8
    got = None
    tried = True             # the chunk tables were tried (and found too many groups)
    if col.layout == Layout.STRING:
        got = _column_kernel_ids(_EU64, KMODE_BITS, _ro(valid), _ro(col.offsets_view()),
                                 _ro(np.ascontiguousarray(col.chars())), prev, n)
    elif col.layout == Layout.DICTIONARY and col.dictionary is not None:
        got = _dictionary_ids(col, prev)
    elif prev is None and not col.has_nulls:
        return _prepared_ids([col], [pair], local_only=fixed_local_only)
    elif col.layout == Layout.FIXED or pair.family == "bool":
        words = fast_key_words(col, pair, CPU, _widen_words)
        kmode = KMODE_F64 if pair.family == "float" else KMODE_BITS
        got = _column_kernel_ids(_ro(np.ascontiguousarray(words)), kmode, _ro(valid), None, None, prev, n)
    else:
        tried = False
    if got is not None or local_only:
        return got
    return _prepared_ids([col], [pair], chunk_tables=not tried)


def _dictionary_ids(col: Column, prev: Any) -> Any:
    """A dictionary column's groups: its dictionary's values grouped, every row's word the group
    of its entry (a null index the null entries' group, or one of its own), then grouped."""
    d = col.dictionary
    dgid, dfirst = _column_ids(d, KeyPair("<dictionary>", "<dictionary>", d.dtype, d.dtype, "string", d.dtype))
    k = len(dfirst)
    null_code = k
    if d.has_nulls:
        dnull = np.flatnonzero(np.asarray(d.validity_bytes()) == 0)
        if len(dnull):
            null_code = int(dgid[dnull[0]])
    idx = np.asarray(col.values())
    codes = np.take(np.asarray(dgid, np.int64), idx.astype(np.intp, copy=False), mode="clip")
    if col.has_nulls:
        codes[np.asarray(col.validity_bytes()) == 0] = null_code
    if prev is None:
        return _word_ids(codes)
    return _column_kernel_ids(_ro(codes.view(np.uint64)), KMODE_BITS, _E8, None, None, prev, len(codes))


def _column_kernel_ids(keys: Any, kmode: int, valid: np.ndarray, offs: Any, chars: Any, prev: Any, n: int) -> Any:
    """``(gid, first)`` of a fixed-width key's ``keys`` (``offs``, ``chars`` None) or a string
    key's ``offs`` and ``chars`` (``keys`` empty), with ``prev`` (or None) as in
    :func:`_column_ids`, by :func:`gpuframe.kernels.group_cpu.column_local_groups` and its merge,
    or ``None`` when a chunk has more than :data:`_LOCAL_GROUPS` groups."""
    K = _kernels()
    nch = K.nchunks_for(n)
    gid = host_empty(n, _id_dtype(n))   # chunk-local ids first
    lfirst = host_empty(n, np.int64)
    lcount = np.zeros(nch, np.int64)
    args = (keys, kmode, valid, offs, chars, _NO_PREV if prev is None else prev, n, nch)
    if any(run_threads(K.column_local_groups, nch, *args, _LOCAL_GROUPS, gid, lfirst, lcount)):
        return None
    if nch == 1:
        ngroups = int(lcount[0])
        return _every_row_a_group(n) if ngroups == n else (gid, lfirst[:ngroups].copy())
    gmap = host_empty(n, gid.dtype)
    first = host_empty(int(lcount.sum()), np.int64)
    ngroups = int(K.column_merge_groups(*args, lfirst, lcount, gmap, first))
    if ngroups == n:
        return _every_row_a_group(n)
    _renumber(K, n, nch, lcount, gmap, gid)
    return gid, first[:ngroups]


def _prepared_ids(columns: Sequence[Column], pairs: Sequence[KeyPair], chunk_tables: bool = True,
                  heads_only: bool = False, local_only: bool = False) -> Any:
    """``(gid, first)`` through the join's key preparation: a table per chunk of rows, or past
    :data:`_LOCAL_GROUPS` groups in a chunk (or without ``chunk_tables``: the caller's chunk
    tables of the first key already found too many) the join's partitioned tables
    (``local_only``: ``None`` instead). ``heads_only``: ``(None, first)`` from the partitioned
    tables, the heads of their chains (no group ids)."""
    K = _kernels()
    n = len(columns[0])
    # on a cold numba cache local_groups' chunk function (7.5 s of its 8.1 s compile) compiles
    # in a child process while the keys are prepared and hashed here
    beside = compile_beside([(K._chunk, _chunk_types(n))] if chunk_tables else [])
    try:
        sk = _group_side(columns, pairs)
    finally:
        beside.wait()
    local = _local_group_ids(sk, n) if chunk_tables else None
    if local is not None or local_only:
        return local
    pbits = _partition_bits(n, 0)
    # string keys' bytes stay where they are: only the build's own comparisons read them (no
    # probe follows), and copying them in partition order cost more than it saved (unique of
    # 10M string rows in a fresh process: 1.52-1.70 s -> 1.20-1.21 s, 296 MB less at the peak)
    B = _build_side(sk, pbits, [], need_orig=pbits > 0, copy_bytes=False)
    if B.unique:
        return _every_row_a_group(n)
    nparts = 1 << pbits
    if heads_only:
        return None, _heads(B)
    rep = host_empty(n, np.int64)
    run_threads(K.group_first, nparts, B.starts, nparts, B.toffs, B.tables, B.nxt, B.orig, rep,
                np.zeros(nparts, np.int64))
    gid = host_empty(n, _id_dtype(n))
    first = host_empty(n, np.int64)
    ngroups = _dense_ids(K, _ro(rep), gid, first)
    return gid, first[:ngroups]


def _dense_ids(K: Any, rep: np.ndarray, gid: np.ndarray, first: np.ndarray) -> int:
    """Dense group ids in the order of the groups' first rows, from ``rep`` (every row's group's
    first row): ``first[g]`` group ``g``'s first row (ascending), ``gid[row] = g``; returns the
    number of groups (:func:`~gpuframe.kernels.group_cpu.dense_heads`, ``dense_first``,
    ``dense_rest``)."""
    n = len(rep)
    nch = K.nchunks_for(n)
    cnt = np.zeros(nch + 1, np.int64)
    run_threads(K.dense_heads, nch, rep, nch, cnt)
    np.cumsum(cnt, out=cnt)
    run_threads(K.dense_first, nch, rep, nch, cnt, gid, first)
    run_rows(K.dense_rest, n, rep, gid)
    return int(cnt[nch])


def _renumber(K: Any, n: int, nch: int, lcount: np.ndarray, gmap: np.ndarray, gid: np.ndarray) -> None:
    """Each chunk's own group ids in ``gid`` (``nch`` chunks of rows) become the merged groups
    ``gmap[chunk start + id]``, in place. A chunk whose groups keep their numbers (the first
    chunk's always do: its groups are the first ones) is left as it is; the other chunks' rows go
    in a few pieces per thread (:func:`~gpuframe.kernels.group_cpu.renumber`: with two chunks on
    two threads, the second chunk's rows alone took as long as both)."""
    step = -(-n // nch)
    moved = []
    for c in range(nch):
        k = int(lcount[c])
        if k and (gmap[c * step:c * step + k] != np.arange(k)).any():
            moved.append(c)
    if not moved:
        return
    todo = sum(min(n, c * step + step) - c * step for c in moved)
    span = max(4096, -(-todo // (4 * numba.get_num_threads())))
    pieces = [(a, min(n, c * step + step, a + span), c * step) for c in moved
              for a in range(c * step, min(n, c * step + step), span)]
    lo, hi, at = (np.array(col, np.int64) for col in zip(*pieces))
    run_threads(K.renumber, len(pieces), gmap, gid, lo, hi, at)


def _heads(B: Any, flags: np.ndarray = _E8, want: int = 1) -> np.ndarray:
    """The first rows (ascending int64) of the groups of the partitioned tables ``B`` (with
    ``flags``: those whose head has ``flags[pos] == want``)."""
    keep = np.zeros(len(B.keys), np.uint8)
    run_threads(_kernels().head_rows, len(B.starts) - 2, B.starts, len(B.starts) - 2, B.nxt, B.orig, flags, want,
                keep)
    return flagged_rows(keep)


def first_rows(columns: Sequence[Column], pairs: Sequence[KeyPair]) -> np.ndarray:
    """The first row of every group of equal rows of ``columns`` (ascending int64): ``unique``'s
    rows. As ``group_ids(...)[1]``, without the group ids where making them costs (many groups:
    the heads of the partitioned tables' chains)."""
    return group_ids(columns, pairs, need_gid=False)[1]


def distinct_rows(left_keys: Sequence[Column], right_keys: Sequence[Column], pairs: Sequence[KeyPair],
                  how: str) -> Optional[np.ndarray]:
    """The first row (ascending int64) of every distinct row of ``left_keys`` that has an equal
    row in ``right_keys`` (``how="semi"``: ``intersect``) or has none (``"anti"``:
    ``difference``), rows compared as ``group_ids`` compares them (null == null, NaN == NaN,
    -0.0 == 0.0).

    One pass over each side: the left rows in the join's partitioned tables (every chain a
    group, its head the group's first row), the right rows probed against them marking the
    chains they match (the chain's head), then the heads with (or without) a mark. ``None``
    (the caller's general path then: ``unique`` and a semi or anti join) where the first column
    has few groups, or where the key preparation leaves rows out of the tables (a uint64 key
    paired with a signed one, whose values past int64's range never match but still form
    groups)."""
    if how not in ("semi", "anti"):
        raise ValueError(f"how must be 'semi' or 'anti', got {how!r}")
    if _few_groups(left_keys[0], pairs[0]):
        # the left rows' groups found by ``unique``'s chunk tables and a join on those few rows
        # beat a table of every left row
        return None
    lk, rk = _prepare(left_keys, right_keys, pairs, True)
    if lk.valid.shape[0] != 0 or rk.valid.shape[0] != 0:
        return None
    n = lk.n
    if n == 0:
        return np.zeros(0, np.int64)
    _row_hash_cpu(lk)
    _row_hash_cpu(rk)
    lk, rk = _ro_side(lk), _ro_side(rk)
    pbits = _partition_bits(n, rk.n)
    B = _build_side(lk, pbits, [], need_orig=pbits > 0)
    if rk.n == 0:
        bmatched = np.zeros(n, np.uint8)
    else:
        P = _probe_side(rk, pbits, _use_inplace(lk, pbits), False)
        # only the heads' marks are read: the probe marks the head of the chain it finds and
        # never walks the chain (``unique``), however many rows a group has
        _c, _s, bmatched = _count(rk, lk, P, dataclasses.replace(B, unique=True), pbits, False, True,
                                  np.zeros(0, _index_dtype(n)))
    # read-only, as the empty flags of ``first_rows``: one compiled signature of the kernel
    return _heads(B, _ro(bmatched), 1 if how == "semi" else 0)


# the rows that :func:`_sample_share` groups; the shares of them that are groups below which
# a column has few groups (:func:`distinct_rows`) and above which it has many (``first_rows``)
_SAMPLE_ROWS = 1 << 16
_FEW_GROUPS_SHARE = 1 / 16
_MANY_GROUPS_SHARE = 1 / 2


def _sample_share(col: Column, pair: KeyPair) -> float:
    """The groups of the column's first (at most :data:`_SAMPLE_ROWS`) rows over their number
    (1.0 past the chunk tables' limit): a guess at how many groups the column has, on which only
    the speed of a path depends."""
    m = min(len(col), _SAMPLE_ROWS)
    got = _column_ids(col.slice(0, m), pair, local_only=True, fixed_local_only=True)
    return 1.0 if got is None else len(got[1]) / max(m, 1)


def string_groups(col: Column) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """``(gid, first)`` of a string column's rows by their bytes alone (validity ignored: a
    null row is grouped by the bytes under it), by the chunk tables of :func:`_column_ids`,
    where the column looks like it has few distinct strings (under :data:`_FEW_GROUPS_SHARE`
    of its first :data:`_SAMPLE_ROWS` rows) and no chunk of rows holds more than
    :data:`_LOCAL_GROUPS` of them; else ``None`` (the sort then ranks every row)."""
    n = len(col)
    offs = _ro(col.offsets_view())
    chars = _ro(np.ascontiguousarray(col.chars()))
    m = min(n, _SAMPLE_ROWS)
    sample = _column_kernel_ids(_EU64, KMODE_BITS, _E8, offs[:m + 1], chars, None, m)
    if sample is None or len(sample[1]) >= _FEW_GROUPS_SHARE * m:
        return None
    return _column_kernel_ids(_EU64, KMODE_BITS, _E8, offs, chars, None, n)


def _few_groups(col: Column, pair: KeyPair) -> bool:
    """Whether the column looks like it has few groups (:func:`_sample_share`)."""
    return pair.left_type == pair.right_type and _sample_share(col, pair) < _FEW_GROUPS_SHARE


def _ids(gid: Any) -> np.ndarray:
    """Group ids as the kernels take them: contiguous int32 or int64 (others converted)."""
    gid = np.ascontiguousarray(gid)
    return gid if gid.dtype in (np.int32, np.int64) else gid.astype(np.int64)


def last_rows(gid: np.ndarray, ngroups: int) -> np.ndarray:
    """The last row of every group, in input order (``unique(keep="last")``)."""
    K = _kernels()
    gid = _ids(gid)
    last = np.empty(ngroups, np.int64)
    K.last_rows(gid, ngroups, last)
    keep = np.zeros(len(gid), np.bool_)
    keep[last] = True
    return np.flatnonzero(keep).astype(np.int64, copy=False)


def _id_dtype(n: int) -> Any:
    """Group ids: int32 below 2**31 rows (every kernel then compiles once for them), else int64."""
    return np.int32 if n < 2**31 - 1 else np.int64


def _every_row_a_group(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(n, dtype=_id_dtype(n)), np.arange(n, dtype=np.int64)


# groups a chunk of rows may find before grouping falls back to partitioned tables: a chunk's
# table (int32 slots, at most half full) then still fits in a core's L2
_LOCAL_GROUPS = 1 << 18


def _group_side(columns: Sequence[Column], pairs: Sequence[KeyPair]) -> Any:
    """The grouping keys through the join's key preparation: hashed, read-only."""
    sk = prepare_side(columns, pairs, CPU, _widen_words, _key_word, _string_span)
    if sk.valid.shape[0] != 0:
        raise AssertionError("grouping keys with nulls_equal have no rows left out")
    _row_hash_cpu(sk)
    return _ro_side(sk)


def _chunk_types(n: int) -> tuple:
    """The numba types :func:`~gpuframe.kernels.group_cpu.local_groups` calls its chunk function
    ``_chunk`` with for ``n`` rows of :func:`_group_side`'s keys (read-only key words and spans;
    chunk-local ids of :func:`_id_dtype`), known before the keys are prepared."""
    def ro(dtype: Any, ndim: int) -> Any:
        return types.Array(dtype, ndim, "C", readonly=True)

    ids = types.Array(types.int32 if _id_dtype(n) == np.int32 else types.int64, 1, "C")
    return (ro(types.uint64, 1), types.int64, types.boolean, ro(types.uint64, 2), ro(types.int64, 2),
            ro(types.int64, 2), ro(types.uint8, 1), types.Array(types.int64, 1, "C"), types.int64, types.int64,
            types.int64, types.int64, ids)


def _local_group_ids(sk: Any, n: int) -> Any:
    """``(gid, first)`` by one table per chunk of rows (each thread its own chunk) merged in row
    order, or ``None`` when a chunk has more than :data:`_LOCAL_GROUPS` groups (the partitioned
    tables do better there)."""
    K = _kernels()
    nch = K.nchunks_for(n)
    gid = host_empty(n, _id_dtype(n))   # chunk-local ids first
    lfirst = host_empty(n, np.int64)
    lcount = np.zeros(nch, np.int64)
    args = (sk.keys, sk.kmode, sk.verify, sk.words, sk.starts, sk.ends, sk.chars)
    if any(run_threads(K.local_groups, nch, *args, nch, _LOCAL_GROUPS, gid, lfirst, lcount)):
        return None
    if nch == 1:
        ngroups = int(lcount[0])
        return _every_row_a_group(n) if ngroups == n else (gid, lfirst[:ngroups])
    gmap = host_empty(n, gid.dtype)
    first = host_empty(int(lcount.sum()), np.int64)
    ngroups = int(K.merge_groups(*args, nch, lfirst, lcount, gmap, first))
    if ngroups == n:
        return _every_row_a_group(n)
    _renumber(K, n, nch, lcount, gmap, gid)
    return gid, first[:ngroups]


# --------------------------------------------------------------------------- dense keys
# Integer keys (any width, dates, timestamps) whose values span at most this many slots in all
# (and at most max(rows, _DENSE_MIN_SLOTS)) are grouped by their slots (:func:`dense_groups`)
_DENSE_MAX_SLOTS = 1 << 21
_DENSE_MIN_SLOTS = 1 << 12
_DENSE_FAMILIES = ("int", "date32", "timestamp")


@dataclasses.dataclass(frozen=True)
class DenseGroups:
    """Rows grouped by the slots of their integer keys (:func:`dense_groups`).

    ``groups`` is the reductions' ``groups`` argument (``group_reduce(groups, slots, ...)``
    gives one value per slot; see :mod:`gpuframe.kernels.group_cpu`): a table of the key
    columns, or for one key without nulls whose values start near 0 the int64 values
    themselves, which are their slots; ``slots`` their number,
    ``order`` the slots that hold rows in the output's order and ``first`` their first rows
    (int64 both). ``in_key_order``: ``order`` is ascending (the keys' order, nulls last)."""

    groups: np.ndarray
    slots: int
    order: np.ndarray
    first: np.ndarray
    in_key_order: bool
    arrays: tuple          # the arrays at ``groups``' addresses, kept alive with it

    @property
    def ngroups(self) -> int:
        return len(self.order)

    def row_groups(self) -> np.ndarray:
        """Every row's slot (int64): the group ids for what takes an array (``nunique``)."""
        if self.groups.ndim == 1:
            return self.groups
        K = _kernels()
        n = int(self.groups[0, K.DENSE_ROWS])
        out = host_empty(n, np.int64)
        run_rows(K.row_groups, n, self.groups, out)
        return out


def dense_groups(columns: Sequence[Column], pairs: Sequence[KeyPair], key_order: bool = False
                 ) -> Optional[DenseGroups]:
    """The groups of integer key columns (integers, dates, timestamps; nulls one group) whose
    values span few slots: ``hi - lo + 1`` per column (one more with nulls), their product at
    most the rows (or :data:`_DENSE_MIN_SLOTS`) and :data:`_DENSE_MAX_SLOTS`. A row's group is
    then the slot of its keys, read from the columns by each reduction (no hashing, no group
    ids); ``None`` for other keys (one pass over each column to find its range, at most).

    The groups come in the order of their first rows, or with ``key_order`` in the keys' order
    (ascending, nulls last: the slots' order)."""
    n = len(columns[0])
    if n == 0 or any(c.layout != Layout.FIXED or p.family not in _DENSE_FAMILIES for c, p in zip(columns, pairs)):
        return None
    K = _kernels()
    nch = K.nchunks_for(n)
    limit = min(_DENSE_MAX_SLOTS, max(n, _DENSE_MIN_SLOTS))
    words, valids, lows, cards = [], [], [], []
    slots = 1
    for col in columns:
        w = _ro(_int64_words(col))
        valid = _ro(_valid(col)) if col.has_nulls else _E8
        lo, hi = _key_range(K, w, valid, nch)
        k = (hi - lo + 1 if hi >= lo else 0) + (1 if valid.shape[0] else 0)
        slots *= k
        if slots > limit:
            return None
        words.append(w)
        valids.append(valid)
        lows.append(lo if hi >= lo else 0)
        cards.append(k)
    groups: np.ndarray
    most = slots             # the groups there can be (slots may grow below)
    if len(columns) == 1 and not valids[0].shape[0] and 0 <= lows[0] <= cards[0] and lows[0] + cards[0] <= limit:
        # one key without nulls whose values start near 0 (ids): the values are the slots
        # (the reductions then read them as they read group ids: 1.2-1.5x faster than slots
        # computed from a table of the columns)
        groups, slots = words[0], lows[0] + cards[0]
    else:
        groups = np.zeros((len(columns), K.DENSE_FIELDS), np.int64)
        for i, (w, valid, lo, k) in enumerate(zip(words, valids, lows, cards)):
            groups[i, K.DENSE_WORDS] = w.ctypes.data
            groups[i, K.DENSE_LOW] = lo
            groups[i, K.DENSE_SLOTS] = k
            groups[i, K.DENSE_VALID] = valid.ctypes.data if valid.shape[0] else 0
            groups[i, K.DENSE_ROWS] = n
        groups = _ro(groups)
    firsts = _first_last(K, groups, slots, _E8, nch, False, most)
    held = np.flatnonzero(firsts >= 0)
    if key_order:
        order = held
    elif len(held) * 80 < n:
        order = held[np.argsort(firsts[held])]
    else:
        # many groups for the rows: their first rows flagged and read back in order (10M rows:
        # 9-16 ms, where an argsort of the first rows took 7.5 ms for 100k groups, 101 ms for 1M)
        flags = np.zeros(n, np.uint8)
        flags[firsts[held]] = 1
        rows = flagged_rows(flags)
        order = np.empty(len(rows), np.int64)
        K.row_groups_at(groups, rows, order)
    return DenseGroups(groups, slots, order.astype(np.int64, copy=False), firsts[order], key_order,
                       (tuple(words), tuple(valids)))


def _int64_words(col: Column) -> np.ndarray:
    """An integer-like column's values as int64 words (a view where they are 64-bit; uint64
    values past int64's range wrap to negative words, which keep their order as long as every
    value is past it, and otherwise span too many slots)."""
    v = np.asarray(col.values())
    if v.dtype.itemsize == 8:
        return np.ascontiguousarray(v).view(np.int64)
    return v.astype(np.int64)


# --------------------------------------------------------------------------- aggregations
def _valid(col: Column) -> np.ndarray:
    v = col.validity_bytes()
    return np.zeros(0, np.uint8) if v is None else np.ascontiguousarray(v)


def _numeric(col: Column, op: str, name: str) -> np.ndarray:
    """The column's values as int64 (integers, bools) or float64 (floats)."""
    t = col.dtype
    if pa.types.is_boolean(t):
        return np.ascontiguousarray(col.bool_bytes(), dtype=np.int64)
    if pa.types.is_integer(t):
        v = col.values()
        if v.dtype != np.uint64:
            return np.ascontiguousarray(v, dtype=np.int64)
        if op != "sum":
            return v.astype(np.float64)
        if len(v) and int(v.max()) > np.iinfo(np.int64).max:
            _overflow(name, op)
        return np.ascontiguousarray(v).view(np.int64)
    if pa.types.is_floating(t):
        return np.ascontiguousarray(col.values(), dtype=np.float64)
    raise TypeError(f"{op} needs a numeric (integer, float or bool) column, column {name!r} is {t}")


def _overflow(name: str, op: str) -> Any:
    raise OverflowError(f"{op} of column {name!r} overflows int64; cast it to float64 first")


def _ordered_words(col: Column, name: str, op: str) -> tuple[np.ndarray, bool]:
    """Values that order like the column's: int64 (integers, bools, dates, timestamps) or
    float64."""
    t = col.dtype
    if pa.types.is_floating(t):
        return np.ascontiguousarray(col.values(), dtype=np.float64), True
    if pa.types.is_boolean(t):
        return np.ascontiguousarray(col.bool_bytes(), dtype=np.int64), False
    if pa.types.is_integer(t) or pa.types.is_date32(t) or pa.types.is_timestamp(t):
        v = col.values()
        if v.dtype == np.uint64:
            return v.view(np.int64) ^ np.int64(-2**63), False  # order-preserving for uint64
        return np.ascontiguousarray(v, dtype=np.int64), False
    raise TypeError(f"{op} needs a column with an order (numbers, bool, dates, timestamps, strings), "
                    f"column {name!r} is {t}")


def _float_column(values: np.ndarray, has: np.ndarray) -> Column:
    return Column.from_numpy(values, pa.float64(), valid=None if has.all() else has.astype(bool))


def _gather(col: Column, rows: np.ndarray) -> Column:
    from .gather import gather_column

    return gather_column(col, rows, None)


def _groups_of(gid: Any) -> tuple[Any, int]:
    """``(groups, rows)``: group ids as the kernels take them, or a dense groups' table as it is."""
    if getattr(gid, "ndim", 1) == 2:
        return gid, int(gid[0, _kernels().DENSE_ROWS])
    gid = _ro(_ids(gid))
    return gid, len(gid)


def group_reduce(gid: Any, ngroups: int, column: Column, op: str, name: str = "<column>") -> Column:
    """Aggregate ``column`` per group: one row per group ``0..ngroups-1`` (see
    :func:`gpuframe.ops.groupby.groupby_agg` for the ops and their types; ``nunique`` is made
    there, from ``group_ids`` and ``count``). ``gid``: every row's group id, or the ``groups``
    of :class:`DenseGroups` with ``ngroups`` its slots (one row per slot, empty ones too)."""
    K = _kernels()
    gid, n = _groups_of(gid)
    nch = K.nchunks_for(n)
    valid = _valid(column)
    if op in ("size", "count"):
        acc = _chunk_acc(nch, ngroups, np.int64)
        run_threads(K.count_rows, nch, gid, ngroups, _E8 if op == "size" else valid, acc)
        return Column.from_numpy(_sum_chunks(K, acc, ngroups), pa.int64())
    if op in ("first", "last"):
        return _gather(column, _first_last(K, gid, ngroups, valid, nch, op == "last", 0))
    if op in ("min", "max"):
        if column.layout == Layout.DICTIONARY:
            return group_reduce(gid, ngroups, _decoded(column), op, name)
        rows = np.empty(ngroups, np.int64)
        best = _chunk_acc(nch, ngroups, np.int64)
        if column.layout == Layout.STRING:
            offs, chars = column.offsets_view(), column.chars()
            run_threads(K.arg_extreme_string, nch, gid, ngroups, offs, chars, valid, op == "max", best)
            run_rows(K.arg_extreme_string_merge, ngroups, best, offs, chars, op == "max", rows)
        else:
            vals, _ = _ordered_words(column, name, op)
            kept = ngroups > _KEPT_VALUES_GROUPS    # each chunk's best values kept beside their rows
            bestv = _chunk_acc(nch, ngroups, vals.dtype) if kept else np.empty((nch, 0), vals.dtype)
            run_threads(K.arg_extreme, nch, gid, ngroups, vals, valid, op == "max", best, bestv)
            run_rows(K.arg_extreme_merge, ngroups, best, vals, op == "max", rows)
        return _gather(column, rows)
    vals = _numeric(column, op, name)
    counts = np.empty(ngroups, np.int64)
    if op == "sum":
        if vals.dtype == np.int64:
            out = np.empty(ngroups, np.int64)
            acc = _chunk_acc(nch, ngroups, np.int64, 2)
            over = run_threads(K.sum_int, nch, gid, ngroups, vals, valid, acc)
            if any(run_rows(K.sum_int_merge, ngroups, acc, out, counts)) or any(over):
                _overflow(name, op)
            return _sum_column(out, counts)
        outf = np.empty(ngroups, np.float64)
        _sum_float(K, gid, ngroups, vals, valid, nch, outf, counts)
        return _sum_column(outf, counts)
    # vals are int64 or float64: the kernels below convert each value to float64 as they read it
    if op == "median":
        gstart, gvals = _group_values(K, gid, ngroups, nch, valid, vals)
        out = np.empty(ngroups, np.float64)
        has = np.empty(ngroups, np.uint8)
        # a group's values at a time (quickselect): small blocks keep the threads' shares even
        run_rows(K.median_float, ngroups, gstart, gvals, out, has, block=256)
        return _float_column(out, has != 0)
    sums = np.empty(ngroups, np.float64)
    _sum_float(K, gid, ngroups, vals, valid, nch, sums, counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts
    if op == "mean":
        return _float_column(mean, counts > 0)
    if op in ("var", "std"):
        return _spread_column(op, _sq_dev(K, gid, ngroups, vals, valid, mean, nch), counts)
    raise ValueError(f"unknown aggregation {op!r}")


def _chunk_acc(nchunks: int, ngroups: int, dtype: Any, fields: int = 0) -> np.ndarray:
    """Accumulators of the chunked reductions (``gpuframe.kernels.group_cpu``): a row of
    ``ngroups + STRIDE_PAD`` for each chunk of rows (``fields`` side by side a group where not 0),
    uninitialised: each chunk's thread zeroes (and first touches) its own row."""
    shape = (nchunks, ngroups + _kernels().STRIDE_PAD) + ((fields,) if fields else ())
    return host_empty(int(np.prod(shape)), dtype).reshape(shape)


def _sum_chunks(K: Any, acc: np.ndarray, ngroups: int) -> np.ndarray:
    out = np.empty(ngroups, acc.dtype)
    run_rows(K.sum_chunks, ngroups, acc, out)
    return out


def _sum_float(K: Any, gid: Any, ngroups: int, vals: np.ndarray, valid: np.ndarray, nch: int,
               out: np.ndarray, counts: np.ndarray) -> None:
    acc = _chunk_acc(nch, ngroups, np.float64, 2)
    run_threads(K.sum_float, nch, gid, ngroups, vals, valid, acc)
    run_rows(K.sum_float_merge, ngroups, acc, out, counts)


def _sq_dev(K: Any, gid: Any, ngroups: int, vals: np.ndarray, valid: np.ndarray, mean: np.ndarray,
            nch: int) -> np.ndarray:
    """Each group's sum of squared deviations from its ``mean`` (the variance's second pass)."""
    acc = _chunk_acc(nch, ngroups, np.float64)
    run_threads(K.sq_dev, nch, gid, ngroups, vals, valid, mean, acc)
    return _sum_chunks(K, acc, ngroups)


def _group_values(K: Any, gid: Any, ngroups: int, nch: int, valid: np.ndarray, vals: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(gstart, gvals)``: the non-null values laid out by group (a stable counting sort), group
    ``g``'s values ``gvals[gstart[g]:gstart[g + 1]]`` in input order."""
    hist = _chunk_acc(nch, ngroups, np.int64)
    run_threads(K.group_hist, nch, gid, ngroups, valid, hist)
    counts = hist[:, :ngroups].T.ravel()          # group-major, then chunk
    ends = np.cumsum(counts)
    starts = (ends - counts).reshape(ngroups, nch)
    hist[:, :ngroups] = starts.T
    gstart = np.empty(ngroups + 1, np.int64)
    gstart[:ngroups] = starts[:, 0] if ngroups else 0
    gstart[ngroups] = ends[-1] if len(ends) else 0
    gvals = host_empty(int(gstart[ngroups]), np.float64)
    run_threads(K.group_values, nch, gid, valid, vals, hist, gvals)
    return gstart, gvals


def _sum_column(total: np.ndarray, counts: np.ndarray) -> Column:
    """Sums (int64 or float64) with their groups' non-null counts: null where there are none."""
    if total.dtype == np.int64:
        return Column.from_numpy(total, pa.int64(), valid=None if (counts > 0).all() else counts > 0)
    return _float_column(total, counts > 0)


def _spread_column(op: str, m2: np.ndarray, counts: np.ndarray) -> Column:
    """``var`` or ``std`` (ddof 1) from the sums of squared deviations: null below two values."""
    with np.errstate(invalid="ignore", divide="ignore"):
        var = m2 / (counts - 1)
    return _float_column(np.sqrt(var) if op == "std" else var, counts > 1)


# groups past which min/max keep each group's best value beside its row (``arg_extreme``'s
# ``kept``: by 100k groups reading it back from the column missed the cache; by 100 it hit)
_KEPT_VALUES_GROUPS = 1 << 14
# the ops :func:`group_reduce_many` computes in one pass over the rows
_SUM_OPS = ("size", "count", "sum", "mean", "var", "std")
# groups up to which the aggregations share one pass (past them a kernel each was as fast or
# faster: a sum and a count of 1M rows by 900k groups, 13.3 ms in one pass, 10.5 ms apart; by
# 100k groups, 4.0 and 3.1 ms; a sum and a mean of 10M rows by 100k groups, 54 and 35 ms); the
# pass runs in more chunks of rows than threads (3 means of 10M rows by 100 groups: 20 ms in 8
# chunks, 28-38 ms in 2, on 2 threads)
_SUM_PASS_GROUPS = 1 << 14


def group_reduce_many(gid: Any, ngroups: int, specs: Sequence[tuple[Column, str, str]]) -> list[Column]:
    """``[group_reduce(gid, ngroups, column, op, name) for column, op, name in specs]``, with
    the ``size``, ``count``, ``sum``, ``mean`` (and the means of ``var`` and ``std``) of up to
    four columns at a time made by one pass over the rows where the groups are few
    (:data:`_SUM_PASS_GROUPS`)
    (:func:`gpuframe.kernels.group_cpu.group_sums`): a row's group is read once for all of
    them, and a column's values once for its sum and mean. An integer sum joins the pass when
    its values' range shows it cannot overflow int64; otherwise it takes ``group_reduce``'s
    checked sum."""
    K = _kernels()
    gid, n = _groups_of(gid)
    if ngroups > _SUM_PASS_GROUPS or sum(1 for _, op, _ in specs if op in _SUM_OPS) < 2:
        # many groups: a kernel per aggregation (the one pass's accumulators leave the cache
        # as its columns add up, and merging the chunks' accumulators costs as much as the
        # pass); or nothing to share a pass with
        return [group_reduce(gid, ngroups, c, op, name) for c, op, name in specs]
    plan = _SumPlan(K, n)
    fused = [plan.add(col, op, name) if op in _SUM_OPS else False for col, op, name in specs]
    if sum(1 for f in fused if f) < 2:
        return [group_reduce(gid, ngroups, c, op, name) for c, op, name in specs]
    nch = max(1, min(4 * K.nchunks_for(n), n // 16384 + 1))
    size, sums, counts = plan.run(gid, ngroups, nch)
    out: list[Column] = []
    m2_of: dict[str, np.ndarray] = {}
    for (col, op, name), f in zip(specs, fused):
        if not f:
            out.append(group_reduce(gid, ngroups, col, op, name))
            continue
        cnt = counts.get(name, size)
        if op in ("size", "count"):
            out.append(Column.from_numpy((size if op == "size" else cnt).copy(), pa.int64()))
            continue
        total = sums[(name, "int") if op == "sum" and (name, "int") in sums else (name, "float")]
        if op == "sum":
            out.append(_sum_column(total, cnt))
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / cnt
        if op == "mean":
            out.append(_float_column(mean, cnt > 0))
            continue
        if name not in m2_of:
            vals, valid = plan.inputs(col, op, name)
            m2_of[name] = _sq_dev(K, gid, ngroups, vals, valid, mean, K.nchunks_for(n))
        out.append(_spread_column(op, m2_of[name], cnt))
    return out


class _SumPlan:
    """The columns of :func:`group_reduce_many`'s pass: one row of the kernel's table per
    column and sum (an exact int64 sum, a float64 sum, or none: its non-null values counted)."""

    def __init__(self, K: Any, n: int) -> None:
        self.K = K
        self.n = n
        self.rows: dict[tuple[str, str], list[int]] = {}   # (name, "int"/"float"/"count") -> row
        self.keep: list[np.ndarray] = []                     # the arrays at the rows' addresses
        self._valids: dict[str, np.ndarray] = {}
        self._values: dict[tuple[str, bool], np.ndarray] = {}

    def inputs(self, col: Column, op: str, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(values as _numeric reads them for op, validity bytes)`` of column ``name``, made
        once for every op that reads them the same way."""
        valid = self.validity(col, name)
        key = (name, op == "sum")        # a uint64 column's sum reads int64 words, others floats
        if key not in self._values:
            self._values[key] = np.ascontiguousarray(_numeric(col, "sum" if op == "sum" else "mean", name))
        return self._values[key], valid

    def validity(self, col: Column, name: str) -> np.ndarray:
        """Column ``name``'s validity bytes (empty: no nulls), unpacked once."""
        if name not in self._valids:
            self._valids[name] = _valid(col)
        return self._valids[name]

    def add(self, col: Column, op: str, name: str) -> bool:
        """Whether ``op`` of ``col`` joins the pass (adding the rows it needs)."""
        K = self.K
        if op == "size":
            return True
        if op == "count":
            valid = self.validity(col, name)
            if valid.shape[0] and (name, "count") not in self.rows and not self._counted(name):
                self._row(name, "count", K.SUM_NONE, None, valid)
            return True
        vals, valid = self.inputs(col, op, name)
        if vals.dtype == np.int64 and op == "sum":
            if (name, "int") not in self.rows:
                if not _int_sum_fits(K, vals, valid, self.n):
                    return False
                self._row(name, "int", K.SUM_INT, vals, valid)
            return True
        if (name, "float") not in self.rows:
            kind = K.SUM_FLOAT if vals.dtype == np.float64 else K.SUM_INT_AS_FLOAT
            self._row(name, "float", kind, vals, valid)
        return True

    def _counted(self, name: str) -> bool:
        return any(key[0] == name for key in self.rows)

    def _row(self, name: str, what: str, kind: int, vals: Optional[np.ndarray], valid: np.ndarray) -> None:
        has_nulls = valid.shape[0] != 0
        # a column's non-null values are counted by its first row only
        count = has_nulls and not self._counted(name)
        if vals is not None:
            self.keep.append(vals)
        if has_nulls:
            self.keep.append(valid)
        self.rows[(name, what)] = [0 if vals is None else vals.ctypes.data, kind,
                                   valid.ctypes.data if has_nulls else 0, 0, 1 if count else -1]

    def run(self, gid: Any, ngroups: int, nch: int
            ) -> tuple[np.ndarray, dict[tuple[str, str], np.ndarray], dict[str, np.ndarray]]:
        """``(size, sums by (name, "int"/"float"), non-null counts by name)`` (in passes of
        :data:`~gpuframe.kernels.group_cpu.SUM_COLUMNS` columns)."""
        K = self.K
        keys = list(self.rows)
        size = np.empty(ngroups, np.int64)
        sums: dict[tuple[str, str], np.ndarray] = {}
        counts: dict[str, np.ndarray] = {}
        for at in range(0, max(len(keys), 1), K.SUM_COLUMNS):
            part = keys[at:at + K.SUM_COLUMNS]
            table = np.zeros((len(part), K.SUM_FIELDS), np.int64)
            nint = nfloat = ncount = 0
            for r, key in enumerate(part):
                table[r] = self.rows[key]
                kind = table[r, K.SUM_KIND]
                if kind == K.SUM_INT:
                    table[r, K.SUM_SLOT] = nint
                    nint += 1
                elif kind != K.SUM_NONE:
                    table[r, K.SUM_SLOT] = nfloat
                    nfloat += 1
                if table[r, K.SUM_COUNT] >= 0:
                    table[r, K.SUM_COUNT] = ncount
                    ncount += 1
            base = 1 if at == 0 else 0
            acc = _sums_acc(K, gid, _ro(table), nint, nfloat, ncount, nch, ngroups, base)
            if base:
                size[:] = acc[:, 0]
            isums = np.ascontiguousarray(acc[:, base:base + nint].T)
            fsums = np.ascontiguousarray(acc[:, base + nint:base + nint + nfloat].T).view(np.float64)
            cnts = np.ascontiguousarray(acc[:, base + nint + nfloat:base + nint + nfloat + ncount].T)
            for r, key in enumerate(part):
                kind = table[r, K.SUM_KIND]
                if kind == K.SUM_INT:
                    sums[key] = isums[table[r, K.SUM_SLOT]]
                elif kind != K.SUM_NONE:
                    sums[key] = fsums[table[r, K.SUM_SLOT]]
                if table[r, K.SUM_COUNT] >= 0:
                    counts[key[0]] = cnts[table[r, K.SUM_COUNT]]
        return size, sums, counts


def _sums_acc(K: Any, gid: Any, table: np.ndarray, nint: int, nfloat: int, ncount: int, nch: int, ngroups: int,
              base: int) -> np.ndarray:
    """:func:`~gpuframe.kernels.group_cpu.group_sums` over ``nch`` chunks on the threads, the
    chunks' accumulators added up in chunk order: ``[group, field]`` int64 words (the float
    sums' fields hold float64 bits)."""
    width = max(base + nint + nfloat + ncount, 1)
    acc = np.zeros((nch, ngroups + K.STRIDE_PAD, width), np.int64)   # chunks a cache line apart
    accf = acc.view(np.float64)
    args = (gid, table, base, nint, nfloat, acc, accf)
    run_threads(K.group_sums, nch, native_entry_for(K._sums_chunk, args, (types.int64,) * 3), *args, nch)
    # as the kernel's merge did: the int fields (sizes, sums, counts) add up wrapping as int64,
    # the float sums from 0.0 in chunk order
    out = acc[0, :ngroups].copy()
    outf = out.view(np.float64)
    fl = slice(base + nint, base + nint + nfloat)
    outf[:, fl] += 0.0
    for c in range(1, nch):
        floats = outf[:, fl] + accf[c, :ngroups, fl]
        out += acc[c, :ngroups]
        outf[:, fl] = floats
    return out


def _int_sum_fits(K: Any, vals: np.ndarray, valid: np.ndarray, n: int) -> bool:
    """Whether no sum of at most ``n`` of the non-null int64 ``vals`` can overflow int64 (one
    pass for their range)."""
    lo, hi = _key_range(K, _ro(vals), _ro(valid) if valid.shape[0] else _E8, K.nchunks_for(len(vals)))
    if lo > hi:
        return True
    return max(abs(lo), abs(hi)) * n < 2**63


def _first_last(K: Any, groups: Any, ngroups: int, valid: np.ndarray, nch: int, want_last: bool,
                most: int) -> np.ndarray:
    """The first (or last) non-null row of each group, -1 for none
    (:func:`~gpuframe.kernels.group_cpu.first_last` on ``nch`` chunks on the threads, then each
    group's first or last chunk that has one)."""
    best = np.full((nch, ngroups + K.STRIDE_PAD), -1, np.int64)   # chunks a cache line apart
    run_threads(K.first_last, nch, groups, valid, nch, want_last, most, best)
    out = best[nch - 1 if want_last else 0, :ngroups].copy()
    for c in (range(nch - 2, -1, -1) if want_last else range(1, nch)):
        none = out < 0
        out[none] = best[c, :ngroups][none]
    return out


def _key_range(K: Any, words: np.ndarray, valid: np.ndarray, nchunks: int) -> tuple[int, int]:
    """The lowest and highest int64 ``words`` of the non-null rows (``valid`` empty: no nulls);
    lowest > highest when there are none. ``nchunks`` chunks on the threads."""
    lo = np.empty(nchunks, np.int64)
    hi = np.empty(nchunks, np.int64)
    run_threads(K.key_range, nchunks, words, valid, nchunks, lo, hi)
    return int(lo.min()), int(hi.max())


def _decoded(col: Column) -> Column:
    """A dictionary column as a plain column of its values (on the host)."""
    arr = col.to_arrow()
    return Column.from_arrow(arr.cast(arr.type.value_type))
