"""Sort on the CPU: ``sort_indices`` (see :mod:`gpuframe.ops.sort`), and the driver both backends
share.

The driver (:func:`sort_indices_with`) turns every key column into order-preserving unsigned
words (:mod:`gpuframe.kernels.sort`) and sorts them with a stable LSD radix sort, from the last
key's lowest digit to the first key's highest; a *sorter* (:class:`CpuSorter` here,
``CudaSorter`` in :mod:`gpuframe.backends.cuda.sort`) allocates on its device and runs the
kernels. String keys (and a dictionary's string values) are ranked first (:func:`string_ranks`):
sorted by their first eight bytes (big-endian, zero-padded) and how many bytes go on past them;
groups that tie and go on are refined by the next eight bytes, with the previous ranks as the
leading key, until no group needs more. Equal strings get equal ranks, so the ranks are words
like any other.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import numba
import numpy as np
import pyarrow as pa

from gpuframe.kernels import sort as SK
from gpuframe.kernels.group_cpu import nchunks_for

from ...core.column import Column
from ...core.dtypes import Layout
from ...core.hostalloc import host_empty
from ._target import ALIGN, _cpu_threads, aligned_empty, run_rows, run_threads

__all__ = ["sort_indices", "sort_keyed", "merge_indices", "sort_indices_with", "string_ranks", "radix_argsort", "CpuSorter"]



class Key(NamedTuple):
    """One word array of the sort; ``flags``: its key's null flags (its null rows, whose words
    are 0, are left out of the key's range), or ``None``."""

    words: Any
    flags: Any = None
    null_flag: int = 1


def _aligned(arr: np.ndarray) -> bool:
    return arr.ctypes.data % ALIGN == 0


def _kind_width(dtype: pa.DataType, itemsize: int) -> int:
    if pa.types.is_floating(dtype):
        return SK.KIND_F64 if itemsize == 8 else SK.KIND_F32
    if pa.types.is_signed_integer(dtype) or pa.types.is_date32(dtype) or pa.types.is_timestamp(dtype):
        return SK.KIND_SIGNED
    return SK.KIND_UNSIGNED


def _word_dtype(bits: int) -> np.dtype:
    return np.dtype(np.uint32 if bits <= 32 else np.uint64)


def _bits_for(groups: int) -> int:
    return max(1, int(groups - 1).bit_length())


def _validity(s: Any, col: Column) -> tuple[Any, bool, int]:
    if col.validity is None:
        return s.no_bitmap(), False, 0
    return col.validity.array, True, col.offset


def _key_plan(s: Any, keys: Sequence[Key]) -> list[tuple[Any, np.uint64, int, int]]:
    """``(words, least word, passes, bits of the range)`` of every key that orders anything,
    least significant first. The passes cover each key's range only: digits of (word - least
    word), nulls left out (they tie: all their words are 0, so their digits are equal in every
    pass); a key that is all nulls, or one value, is left out (its null flags, a key of their
    own, still order its nulls)."""
    bits = s.radix_bits
    plan = []
    for words, flags, null_flag in reversed(keys):
        lo, hi = s.word_range(words, flags, null_flag)
        if lo <= hi:      # else nothing but nulls
            npass = -(-(hi - lo).bit_length() // bits)
            if npass:
                plan.append((words, np.uint64(lo), npass, (hi - lo).bit_length()))
    return plan


def _packed(s: Any, plan: list, n: int) -> Optional[tuple[Any, np.uint64, int, int]]:
    """The plan's keys packed into one 64-bit word a row, as a plan entry, where their ranges
    fit one word together and the sorter packs (else ``None``); a single key as it is."""
    if len(plan) == 1:
        return plan[0]
    pack = getattr(s, "pack_words", None)
    if pack is None or sum(p[3] for p in plan) > 64:
        return None
    packed, shift = None, 0
    for words, base, _npass, nbits in plan:
        packed = pack(packed, words, base, nbits, shift, n)
        shift += nbits
    return packed, np.uint64(0), -(-shift // s.radix_bits), shift


def radix_argsort(s: Any, keys: Sequence[Key], n: int, *, consume: bool = False, sorted_words: bool = False,
                  narrow: bool = False, carry: Optional[np.ndarray] = None) -> Any:
    """The stable permutation (int64) that orders rows by ``keys`` (most significant first).
    With ``consume`` the key arrays may be overwritten (used as scratch). With ``sorted_words``
    (one key, on a sorter with ``large_sort``): ``(perm, words)``, the key's words in sorted
    order as well (``None`` where the sort did not produce them: a key without a range). With
    ``narrow`` the permutation may be uint32 (fewer than 2**32 rows) where the large sort made
    it: written over its scratch row numbers, no fresh int64 array (800 MB at 100M rows).
    ``carry`` (with ``sorted_words`` and ``narrow``): a uint32/uint64 payload the large sort may
    carry in place of the row numbers (see ``large_sort``); the result is then ``(perm,
    words, carried)``, ``perm`` being ``carry`` in sorted order where ``carried`` is true."""
    bits = s.radix_bits
    plan = _key_plan(s, keys)
    total = sum(p[2] for p in plan)
    if total == 0:
        final = s.empty(n, np.int64)
        s.iota(final)
        out = (final, keys[0].words if len(keys) == 1 else None) if sorted_words else final
        return out + (False,) if carry is not None else out
    packed = _packed(s, plan, n)
    if packed is not None and len(plan) > 1:
        # keys whose ranges fit one 64-bit word together sort as that word: no gather of each
        # key's words between its passes, and the large sort's buckets apply
        plan = [packed]
        total = plan[0][2]
    large = getattr(s, "large_sort", None)
    final = None if narrow else s.empty(n, np.int64)
    if large is not None and len(plan) == 1:
        # the sorted words go over the key's own (consumed) array
        w_out = plan[0][0] if sorted_words else None
        assert carry is None or (sorted_words and narrow), "carry needs sorted_words and narrow"
        perm = large(plan[0][0], plan[0][1], plan[0][3], final, w_out, carry)
        if perm is not None:
            return (perm, w_out, True) if carry is not None else (perm, w_out) if sorted_words else perm
    if final is None:
        final = s.empty(n, np.int64)
    # intermediate permutations in 32 bits where the rows allow (fewer bytes a pass)
    pdt = np.uint32 if n < (1 << 32) else np.int64
    perm = None
    spare: list[Any] = []
    done = 0
    out_words = None
    for words, base, npass, _bits in plan:
        # the key arrays are written only when consumed (the caller may read them again)
        src = words if perm is None else s.gather_words(words, perm)
        free: list[Any] = []
        if consume and src is words:
            words = None
        for p in range(npass):
            done += 1
            last = p == npass - 1
            if last and sorted_words:
                dst = out_words = free.pop() if free else s.empty(n, src.dtype)
            else:
                dst = None if last else (free.pop() if free else s.empty(n, src.dtype))
            p_out = final if done == total else (spare.pop() if spare else s.empty(n, pdt))
            s.radix_pass(src, perm, base, p * bits, dst, p_out)
            if perm is not None:
                spare.append(perm)
            perm = p_out
            if src is not words:
                free.append(src)
            src = dst
        del src, free
    if carry is not None:
        return perm, out_words, False
    return (perm, out_words) if sorted_words else perm


def string_ranks(s: Any, col: Column) -> tuple[Any, int]:
    """Dense ranks (int64, one per row, in byte order of the strings; validity ignored) and how
    many distinct strings there are."""
    n = len(col)
    offsets = col.offsets_view()
    chars = col.chars()
    ranks = None
    groups = 1
    depth = 0
    while True:
        w = s.empty(n, np.uint64)
        lc = s.empty(n, np.uint32)
        s.prefix_words(offsets, chars, depth, w, lc)
        keys = [] if ranks is None else [Key(ranks)]
        perm = radix_argsort(s, keys + [Key(w), Key(lc)], n)
        flags = s.empty(n, np.int64)
        s.group_flags(perm, ranks, w, lc, flags)
        new = s.empty(n, np.int64)
        groups, unresolved = s.group_ranks(perm, flags, lc, new)
        ranks = new
        del w, lc, perm, flags
        if unresolved == 0 or groups == n:
            return ranks, groups
        depth += 8


def _ranks(s: Any, col: Column) -> tuple[Any, int]:
    """The sorter's own ranking of a string column where it has one, else :func:`string_ranks`."""
    own = getattr(s, "string_ranks", None)
    return own(col) if own is not None else string_ranks(s, col)


def column_keys(s: Any, col: Column, desc: bool, nulls_last: bool) -> list[Key]:
    """The words of one key column, most significant first: its null flags when it may hold
    nulls, then its values."""
    n = len(col)
    validity, has_valid, vbit = _validity(s, col)
    lay = col.layout
    if lay == Layout.FIXED:
        vals = col.values()
        itemsize = np.dtype(vals.dtype).itemsize
        width = 8 * itemsize
        values = s.view(vals, np.dtype(f"u{itemsize}"))
        kind = _kind_width(col.dtype, itemsize)
    elif lay == Layout.STRING:
        values, groups = _ranks(s, col)
        width, kind = _bits_for(groups), SK.KIND_UNSIGNED
    elif lay == Layout.BOOL:
        values, width, kind = None, 1, SK.KIND_UNSIGNED
    else:
        dictionary = col.dictionary
        if len(dictionary):
            dranks, groups = _ranks(s, dictionary)
        else:
            dranks, groups = s.empty(1, np.int64), 1
        width = _bits_for(groups)
        dvalid, has_dvalid, dvbit = _validity(s, dictionary)

    def words(flag_only: bool, dtype: Any) -> Any:
        out = s.empty(n, dtype)
        if lay in (Layout.FIXED, Layout.STRING):
            s.fixed_words(values, kind, width, validity, has_valid, vbit, desc, flag_only, nulls_last, out)
        elif lay == Layout.BOOL:
            s.bool_words(col.data.array, col.offset, validity, has_valid, vbit, desc, flag_only, nulls_last, out)
        else:
            s.dict_words(col.values(), dranks, validity, has_valid, vbit, dvalid, has_dvalid, dvbit, width, desc,
                         flag_only, nulls_last, out)
        return out

    nullable = has_valid or (lay == Layout.DICTIONARY and has_dvalid)
    flags = words(True, np.uint32) if nullable else None
    value = Key(words(False, _word_dtype(width)), flags, 1 if nulls_last else 0)
    return [Key(flags), value] if nullable else [value]


def sort_indices_with(s: Any, columns: Sequence[Column], descending: Sequence[bool], nulls_last: bool) -> Any:
    """The stable sort permutation of ``columns`` on the sorter's device (int64)."""
    n = len(columns[0])
    if n <= 1:
        perm = s.empty(n, np.int64)
        if n:
            s.iota(perm)
        return perm
    keys: list[Key] = []
    for col, desc in zip(columns, descending):
        keys += column_keys(s, col, bool(desc), bool(nulls_last))
    return radix_argsort(s, keys, n, consume=True)


class CpuSorter:
    """Runs the sort kernels of :mod:`gpuframe.kernels.sort` on host arrays."""

    radix_bits = SK.CPU_RADIX_BITS
    # large_sort: from how many rows, about how many rows a bucket, and the top digit's bits.
    # At most 1,024 buckets, as the join's partitions (a scatter into more thrashes the TLB).
    # 2026-12-06, with LSD passes in the buckets, (1 << 17, 12) -> (1 << 15, 10): int64
    # sort_indices 3M rows 82 -> 59 ms, 10M 230 -> 212 ms, 100M unchanged (10 top bits either
    # way; 11 took 2.85 s against 2.73 s, 12 3.5 s). 2026-12-07, the buckets sorted MSD first
    # (fewer passes over a bucket, so larger buckets pay): 1 << 15 -> 1 << 16, 10M int64 keys
    # over the whole range 386 -> 330 ms, of a 40-bit range 345 -> 299 ms (1 << 17 and 1 << 18
    # no faster; 3M rows within the noise)
    LARGE_MIN_ROWS = 1 << 17
    LARGE_MIN_PASSES = 3
    BUCKET_ROWS = 1 << 16
    LARGE_TOP_MAX = 10
    # bucket_sort: ranges of at most this many rows are finished by insertion sort (8, 16 and
    # 32 within the noise of each other at 100M int64 keys, 2026-12-07)
    BUCKET_SMALL = 16
    # string_ranks: from how many rows a column is tried as a category (few distinct strings)
    CATEGORY_MIN_ROWS = 1 << 16
    _EMPTY_U8 = np.empty(0, np.uint8)
    _EMPTY_I64 = np.empty(0, np.int64)
    _EMPTY_U32 = np.empty(0, np.uint32)

    def empty(self, n: int, dtype: Any) -> np.ndarray:
        return host_empty(n, dtype)

    def no_bitmap(self) -> np.ndarray:
        return self._EMPTY_U8

    @staticmethod
    def view(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
        return arr.view(dtype)

    def fixed_words(self, values, kind, width, validity, has_valid, vbit, desc, flag_only, nulls_last, out):
        run_rows(SK.fixed_words, len(out), values, kind, width, validity, has_valid, vbit, desc, flag_only,
                 nulls_last, out)

    def bool_words(self, bits, dbit, validity, has_valid, vbit, desc, flag_only, nulls_last, out):
        run_rows(SK.bool_words, len(out), bits, dbit, validity, has_valid, vbit, desc, flag_only, nulls_last, out)

    def dict_words(self, indices, dranks, validity, has_valid, vbit, dvalid, has_dvalid, dvbit, width, desc,
                   flag_only, nulls_last, out):
        run_rows(SK.dict_words, len(out), indices, dranks, validity, has_valid, vbit, dvalid, has_dvalid, dvbit,
                 width, desc, flag_only, nulls_last, out)

    def prefix_words(self, offsets, chars, depth, w, lc):
        run_rows(SK.prefix_words, len(w), offsets, chars, depth, w, lc)

    def word_range(self, words, flags, null_flag: int) -> tuple[int, int]:
        nchunks = nchunks_for(len(words))
        lo = np.empty(nchunks, np.uint64)
        hi = np.empty(nchunks, np.uint64)
        run_threads(SK.word_range, nchunks, words, self._EMPTY_U32 if flags is None else flags, np.uint32(null_flag),
                    nchunks, lo, hi)
        return int(lo.min()), int(hi.max())

    def radix_pass(self, w_in, p_in: Optional[np.ndarray], base: np.uint64, shift: int,
                   w_out: Optional[np.ndarray], p_out: np.ndarray) -> None:
        mask = (1 << SK.CPU_RADIX_BITS) - 1
        cursors = _chunk_cursors(w_in, base, shift, mask, numba.get_num_threads())
        run_threads(SK.scatter_pass, len(cursors), w_in, p_out[:0] if p_in is None else p_in, p_in is None, base,
                    shift, mask, cursors, w_in[:0] if w_out is None else w_out, p_out, w_out is not None)

    def large_sort(self, words, base, nbits: int, out, w_out=None, carry=None) -> Optional[np.ndarray]:
        """Sort a large single word array (``nbits``: the bits of its range) most significant
        digit first: one pass over memory by the top digit into buckets of about
        :data:`BUCKET_ROWS` rows, then each bucket by the rest in the cache
        (:func:`~gpuframe.kernels.sort.bucket_sort`). Returns the permutation: ``out`` (int64),
        or with ``out=None`` the scratch row numbers, overwritten bucket by bucket (each bucket
        is in the cache before its rows are written; uint32 below 2**32 rows). Declines
        (returns None) where the radix passes over memory are as cheap: few rows or few passes,
        or keys so skewed that one bucket would hold a large share of the rows. ``w_out``: where
        the sorted words go (it may be ``words``), or ``None``. ``carry``: a uint32 or uint64
        array of a value per row (a payload column's bits) that travels with its row through the
        scatter and the buckets in place of the row numbers: the result is then ``carry`` in
        sorted order (``out`` must be ``None``), no permutation is made and nothing is gathered."""
        n = len(words)
        if n < self.LARGE_MIN_ROWS or -(-nbits // SK.CPU_RADIX_BITS) < self.LARGE_MIN_PASSES:
            return None
        top = min(max((n // self.BUCKET_ROWS).bit_length(), 1), self.LARGE_TOP_MAX, nbits - 1)
        shift = nbits - top
        mask = (1 << top) - 1
        nt = numba.get_num_threads()
        cursors = _chunk_cursors(words, base, shift, mask, nt)
        starts = np.empty(mask + 2, np.int64)
        starts[:-1] = cursors[0]
        starts[-1] = n
        if int(np.diff(starts).max()) > max(n // 16, 1 << 18):
            return None
        w_mid = host_empty(n, words.dtype)
        ident = carry is None
        p_mid = host_empty(n, (np.uint32 if n < (1 << 32) else np.int64) if ident else carry.dtype)
        if (p_mid.dtype in (np.uint32, np.uint64) and mask < SK.STREAM_MAX_BUCKETS and _aligned(w_mid)
                and _aligned(p_mid)):
            # whole lines with streaming stores: 100M int64 words into 1,024 buckets 0.96-0.98
            # -> 0.71-0.74 s into memory already mapped, about as fast either way into fresh
            # pages (2026-12-07); the whole sort of 100M int64 keys, five in a row with the
            # pool large enough to keep the scratch: 4.1-4.35 -> 3.1-3.9 s
            line = (nt, (mask + 1) * SK.STREAM_ROWS)
            run_threads(SK.scatter_pass_stream, nt, words, carry, base, shift, mask, cursors, w_mid,
                        p_mid, aligned_empty(line, words.dtype), aligned_empty(line, p_mid.dtype))
        else:
            run_threads(SK.scatter_pass, nt, words, p_mid[:0] if ident else carry, ident, base, shift, mask, cursors,
                        w_mid, p_mid, True)
        # each thread's buckets: runs of about equal rows, a few per thread
        cuts = np.searchsorted(starts, np.linspace(0, n, 4 * nt + 1)[1:-1].astype(np.int64))
        groups = np.unique(np.concatenate(([0], cuts, [mask + 1]))).astype(np.int64)
        want_w = w_out is not None
        perm = p_mid if out is None else out
        run_threads(SK.bucket_sort, len(groups) - 1, w_mid, p_mid, starts, groups, base, shift, SK.CPU_RADIX_BITS,
                    self.BUCKET_SMALL, perm, w_out if want_w else words[:0], want_w)
        return perm

    def string_ranks(self, col: Column) -> tuple[np.ndarray, int]:
        """Ranks of a string column in byte order (int64, one per row, equal strings equal; the
        rank bound returned in place of a count): :func:`string_ranks`' first sort of every row
        by its first eight bytes, then each refinement sorts only the rows still tied (with
        :func:`string_ranks`, every round sorted every row again, and random words of 9 letters
        or more tie somewhere in their first eight bytes at ten million rows). The ranks are
        where a row's group starts in the sorted order, so a refined group's new ranks leave
        the others unchanged."""
        n = len(col)
        if n >= self.CATEGORY_MIN_ROWS:
            got = self._category_ranks(col)
            if got is not None:
                return got
        offsets = col.offsets_view()
        chars = col.chars()
        w = host_empty(n, np.uint64)
        lc = host_empty(n, np.uint32)
        run_rows(SK.prefix_words, n, offsets, chars, 0, w, lc)
        perm = radix_argsort(self, [Key(w), Key(lc)], n)
        ranks = host_empty(n, np.int64)
        todo = host_empty(n, np.int64)
        m = _first_ranks(perm, w, lc, ranks, todo)
        del perm, w, lc
        depth = 8
        while m:
            rows = todo[:m]
            ws = np.empty(m, np.uint64)
            lcs = np.empty(m, np.uint32)
            run_rows(SK.prefix_words_of, m, offsets, chars, depth, rows, ws, lcs)
            rank = ranks[rows]
            sub = radix_argsort(self, [Key(rank), Key(ws), Key(lcs)], m)
            m = int(SK.refine_ranks(sub, rank, ws, lcs, ranks, todo))
            depth += 8
        return ranks, n

    def _category_ranks(self, col: Column) -> Optional[tuple[np.ndarray, int]]:
        """:meth:`string_ranks` of a column of few distinct strings (a category): its rows
        grouped by their bytes (:func:`~gpuframe.backends.cpu.groups.string_groups`, a hash
        table per chunk of rows, ``None`` where the strings look many), the distinct strings
        ranked, and every row given its string's rank (the rank bound: their number). Ranking
        every row sorted ten million rows of 1000 words of 6-14 letters in 1.66 s here, most
        of it refining the groups that tie in their first eight bytes, each holding many rows."""
        from .gather import gather_column
        from .groups import string_groups

        got = string_groups(col)
        if got is None:
            return None
        gid, first = got
        dranks, bound = self.string_ranks(gather_column(col, first, None))
        ranks = host_empty(len(col), np.int64)
        run_rows(SK.gather_words, len(ranks), dranks, gid, ranks)
        return ranks, bound

    def pack_words(self, packed, words, base, nbits: int, shift: int, n: int) -> np.ndarray:
        """``packed`` (a new zeroed word array when ``None``) with the ``nbits`` bits of
        ``words - base`` put in at bit ``shift``; a null's word, outside the key's range, is
        cut to those bits as well (every null has the same word, so nulls still tie, and the
        key's null flags, higher up in the word, order them)."""
        first = packed is None
        if first:
            packed = host_empty(n, np.uint64)
        run_rows(SK.pack_words, n, packed, first, words, base, np.uint64(int(SK.width_mask(nbits))),
                 np.uint64(shift))
        return packed

    def gather_words(self, words, perm):
        out = host_empty(len(perm), words.dtype)
        run_rows(SK.gather_words, len(out), words, perm, out)
        return out

    def iota(self, out):
        run_rows(SK.iota, len(out), out)

    def group_flags(self, perm, ranks, w, lc, flags):
        run_rows(SK.group_flags, len(flags), perm, self._EMPTY_I64 if ranks is None else ranks, ranks is not None, w,
                 lc, flags)

    def group_ranks(self, perm, flags, lc, ranks) -> tuple[int, int]:
        n = len(flags)
        incl = np.empty(n + 1, np.int64)
        incl[0] = 0
        np.cumsum(flags, out=incl[1:])
        unresolved = sum(run_rows(SK.group_ranks, n, perm, flags, lc, incl, ranks))
        return int(incl[n]), int(unresolved)


def _chunk_cursors(words, base, shift: int, mask: int, nchunks: int) -> np.ndarray:
    """The cursors of a stable scatter of ``words`` by their digit ``((w - base) >> shift) &
    mask`` in ``nchunks`` chunks of rows: ``cur[c, d]`` is where chunk ``c``'s first row with digit
    ``d`` goes (digit-major, then chunk order), from each chunk's histogram
    (:func:`~gpuframe.kernels.sort.chunk_counts`)."""
    hist = np.zeros((nchunks, mask + 1), np.int64)
    run_threads(SK.chunk_counts, nchunks, words, base, shift, mask, hist)
    flat = hist.T.ravel()                 # digit-major
    cur = np.empty_like(flat)
    cur[0] = 0
    np.cumsum(flat[:-1], out=cur[1:])
    return np.ascontiguousarray(cur.reshape(mask + 1, nchunks).T)


def _first_ranks(perm, w, lc, ranks, todo) -> int:
    """:func:`~gpuframe.kernels.sort.first_ranks` in chunks of rows, one per thread, and the
    chunks' rows to refine moved to the front of ``todo``; returns how many."""
    n = len(perm)
    nchunks = max(1, numba.get_num_threads())
    counts = np.zeros(nchunks, np.int64)
    run_threads(SK.first_ranks, nchunks, perm, w, lc, ranks, todo, nchunks, counts)
    step = -(-n // nchunks)
    m = 0
    for c in range(nchunks):
        k = int(counts[c])
        if k and m != c * step:
            todo[m:m + k] = todo[c * step:c * step + k]
        m += k
    return m


CPU_SORTER = CpuSorter()


def _decodable(columns: Sequence[Column]) -> bool:
    """One integer-like key (any width, date32, timestamp) without nulls: its sort words are
    its values with some bits flipped."""
    if len(columns) != 1:
        return False
    col = columns[0]
    return (col.layout == Layout.FIXED and col.null_count == 0 and not pa.types.is_floating(col.dtype)
            and len(col) > 1)


def sort_indices(columns: Sequence[Column], descending: Sequence[bool], nulls_last: bool) -> np.ndarray:
    with _cpu_threads(len(columns[0])):
        return sort_indices_with(CPU_SORTER, columns, descending, nulls_last)


def _carriable(col: Optional[Column], n: int) -> Optional[np.ndarray]:
    """``col``'s values as the uint32/uint64 words the large sort can carry with their rows: a
    fixed-width column of 4 or 8 bytes a value, without nulls, of ``n`` rows; else ``None``."""
    if col is None or col.layout != Layout.FIXED or col.null_count != 0 or len(col) != n:
        return None
    vals = col.values()
    size = np.dtype(vals.dtype).itemsize
    if size not in (4, 8) or vals.ndim != 1 or not vals.flags.c_contiguous:
        return None
    return vals.view(np.uint32 if size == 4 else np.uint64)


def sort_keyed(columns: Sequence[Column], descending: Sequence[bool], nulls_last: bool,
               carry: Optional[Column] = None) -> tuple[Optional[np.ndarray], Optional[Column], Optional[Column]]:
    """``sort_indices``, the first key column sorted where the sort yields it without a
    gather, and ``carry`` sorted where the sort carried it: ``(perm, key, carried)``.

    The key: a single integer key without nulls (date32 and timestamp too), whose sorted words
    decode to its values (a flip of the sign bit, of every bit when descending); else ``None``.
    A gather of a large column reads it at random (100M int64 values: about 1 s here), the
    decoding is one sequential pass over the words, in place. ``carry``: a column of 4 or 8
    bytes a value without nulls (the table's one other column) that the large sort moves with
    its rows in place of their row numbers; ``carried`` is it in sorted order, and ``perm`` is
    then ``None`` (nothing is left to gather). Where the sort did not carry it, ``carried`` is
    ``None`` and ``perm`` the permutation: uint32 where the large sort wrote it over its
    scratch row numbers, else int64."""
    if not _decodable(columns):
        return sort_indices(columns, descending, nulls_last), None, None
    col = columns[0]
    n = len(col)
    bits = _carriable(carry, n)
    with _cpu_threads(n):
        (key,) = column_keys(CPU_SORTER, col, bool(descending[0]), bool(nulls_last))
        res = radix_argsort(CPU_SORTER, [key], n, consume=True, sorted_words=True, narrow=True, carry=bits)
        perm, words = res[0], res[1]
        carried = None
        if bits is not None and res[2]:
            carried = Column.from_numpy(perm.view(carry.values().dtype), carry.dtype)
            perm = None
        if words is None:
            return perm, None, carried
        vals = col.values()
        itemsize = np.dtype(vals.dtype).itemsize
        width = 8 * itemsize
        flip = int(SK.width_mask(width)) if descending[0] else 0
        if pa.types.is_signed_integer(col.dtype) or pa.types.is_date32(col.dtype) or pa.types.is_timestamp(col.dtype):
            flip ^= 1 << (width - 1)
        out = words.view(vals.dtype) if words.dtype.itemsize == itemsize else host_empty(n, vals.dtype)
        run_rows(SK.decode_words, n, words, np.uint64(flip), out.view(f"u{itemsize}"))
    return perm, Column.from_numpy(out, col.dtype), carried


def _identity(n: int) -> np.ndarray:
    perm = host_empty(n, np.int64)
    run_rows(SK.iota, n, perm)
    return perm


# rows a merge task writes at least: smaller pieces cost more in binary searches and scheduling
_MERGE_TASK_ROWS = 1 << 16


def merge_indices(columns: Sequence[Column], descending: Sequence[bool], nulls_last: bool,
                  starts: Sequence[int]) -> np.ndarray:
    """``sort_indices`` of rows that are sorted runs already: rows ``starts[r]`` to
    ``starts[r + 1] - 1`` sorted (stably) by ``columns``; the runs are merged, not sorted again,
    ties taking the earlier run's rows first, so the permutation is the one ``sort_indices``
    gives (stable). ``starts`` runs from 0 to the row count, non-decreasing.

    The keys' sort words (as the sort makes them: strings ranked first) are packed into one
    64-bit word a row where their ranges fit one (else compared key by key; a single integer key
    without nulls compares its values as they are), and pairs of runs
    merged in rounds (:func:`gpuframe.kernels.sort.merge_round`), each pair's merge split over
    the threads."""
    n = len(columns[0])
    bounds = [int(b) for b in starts]
    if not bounds or bounds[0] != 0 or bounds[-1] != n or any(a > b for a, b in zip(bounds, bounds[1:])):
        raise ValueError(f"starts must run from 0 to the row count ({n}) without decreasing, got {bounds}")
    runs = [b for i, b in enumerate(bounds) if i == 0 or b != bounds[i - 1]]   # empty runs dropped
    with _cpu_threads(n):
        if len(runs) <= 2:      # one run: sorted already
            return _identity(n)
        desc = False
        if _decodable(columns):
            # one integer key without nulls: its values compare as they are (no words to make)
            words = np.ascontiguousarray(columns[0].values()).reshape(1, n)
            desc = bool(descending[0])
        else:
            keys: list[Key] = []
            for col, d in zip(columns, descending):
                keys += column_keys(CPU_SORTER, col, bool(d), bool(nulls_last))
            plan = _key_plan(CPU_SORTER, keys)
            if not plan:            # every row ties
                return _identity(n)
            packed = _packed(CPU_SORTER, plan, n)
            if packed is not None:
                words = packed[0].astype(np.uint64, copy=False).reshape(1, n)
            else:
                words = np.empty((len(plan), n), np.uint64)
                for row, (w, _base, _npass, _nbits) in enumerate(reversed(plan)):   # most significant first
                    words[row] = w
            del keys, plan, packed
        threads = numba.get_num_threads()
        src, dst = None, host_empty(n, np.int64)
        while len(runs) > 2:
            tasks = []
            merged = [0]
            for p in range(0, len(runs) - 1, 2):
                a_lo, a_hi = runs[p], runs[p + 1]
                b_hi = runs[p + 2] if p + 2 < len(runs) else a_hi     # the odd run out: copied
                rows = b_hi - a_lo
                pieces = max(1, min(4 * threads, rows // _MERGE_TASK_ROWS))
                cuts = [rows * k // pieces for k in range(pieces + 1)]
                tasks += [(a_lo, a_hi, b_hi, k0, k1) for k0, k1 in zip(cuts, cuts[1:])]
                merged.append(b_hi)
            run_threads(SK.merge_round, len(tasks), words, dst[:0] if src is None else src, src is None,
                        np.array(tasks, np.int64), dst, desc)
            if src is None and len(merged) > 2:
                src = host_empty(n, np.int64)
            src, dst = dst, src
            runs = merged
        return src
