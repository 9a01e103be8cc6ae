"""Hash join on a CUDA device: one global hash table with the keys in its slots and each key's
duplicate build rows contiguous, built by every thread at once (atomic inserts), probed by one
thread per probe row; the gather maps written by one thread per output row (kernels in
:mod:`gpuframe.kernels.join`, the table in :mod:`gpuframe.kernels.slot_table`, from the per-row
functions the CPU drivers use too). Unique build keys take a shorter path: no counts or
segments, one pair per probe row, and for left-style joins no scan either.

Memory: before building, the table and every scratch array the call will hold are checked
against the device's free memory (``MemoryError`` naming the bytes, before any allocation);
then the output (``on_count``), with the scratch no longer needed released first.

Operations (the contract is in :mod:`gpuframe.backends.contract`): ``join`` returns gather maps
on the device (probe rows in order, then the unmatched build rows), ``join_size`` their length,
``merged_key`` a coalesced key column (on the device for every key type, nulls included). Key
preparation (:func:`gpuframe.backends._keys.prepare_keys`) gets this module's kernels (and those
of :mod:`gpuframe.kernels.keyprep` for dictionary, several string and range-checked keys), so
every key type stays on the device. The output columns of a merge are gathered from the maps
(:mod:`gpuframe.backends.cuda.gather`), so no column makes a round trip through host memory.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np
import pyarrow as pa

from ...core import memory
from ...core.buffer import Buffer
from ...core.column import Column
from ...core.device import Device, launch_context
from ...core.dtypes import Layout, physical_numpy_dtype
from .._common import is_word_type
from .._join import SRC_KEY, JoinRequest, JoinResult, _sides
from .._keys import SideKeys, fast_key_words, merged_key_host, prepare_keys
from ..contract import KeyPair
from ._target import cast_on_device, widen

__all__ = ["join", "join_size", "merged_key"]

_E64 = np.zeros(0, np.int64)


def join(left_keys: Sequence[Column], right_keys: Sequence[Column], pairs: Sequence[KeyPair], how: str,
         nulls_equal: bool, on_count: Optional[Callable[[int], None]] = None) -> tuple[Any, Optional[Any]]:
    """Gather maps ``(left_idx, right_idx)`` (int64, on the keys' device) of the join."""
    dev = left_keys[0].device
    with launch_context(dev):
        lk, rk = prepare_keys(left_keys, right_keys, pairs, nulls_equal, dev, widen, _key_word, _string_span)
        res = _cuda_join(JoinRequest(lk, rk, how, want_indices=True, on_count=on_count), dev)
    return res.left_idx, res.right_idx


def join_size(left_keys: Sequence[Column], right_keys: Sequence[Column], pairs: Sequence[KeyPair], how: str,
              nulls_equal: bool) -> int:
    """The number of rows :func:`join` would return."""
    dev = left_keys[0].device
    with launch_context(dev):
        lk, rk = prepare_keys(left_keys, right_keys, pairs, nulls_equal, dev, widen, _key_word, _string_span)
        return int(_cuda_join(JoinRequest(lk, rk, how, count_only=True), dev).count)


def merged_key(left_key: Column, right_key: Column, pair: KeyPair, dtype: Any, left_idx: Any,
               right_idx: Any) -> Column:
    """The coalesced key of ``pair`` for the rows of the gather maps: the key words of the
    present side picked by a kernel and converted on the device (a view for 8-byte values, a
    cast kernel for narrower ones); bools' bits and validity bitmaps are coalesced by a kernel
    on the device too. String keys too (dictionary keys: :mod:`gpuframe.backends.cuda.merged_key`)."""
    dev = left_key.device
    n = int(left_idx.shape[0])
    if pair.family == "bool" and pa.types.is_boolean(dtype) and not pair.is_string:
        with launch_context(dev):
            data, _ = _coalesce_bits(left_key, left_key.data, right_key, right_key.data, left_idx, right_idx, dev)
            validity, nulls = _merged_validity(left_key, right_key, left_idx, right_idx, dev)
        return Column(dtype, n, data, validity, None, None, 0, nulls)
    if pair.is_string and left_key.layout == Layout.STRING and right_key.layout == Layout.STRING:
        with launch_context(dev):
            return _merged_string_key(left_key, right_key, dtype, left_idx, right_idx, dev)
    if pair.is_string:      # a dictionary key on either side: its spans on the device
        from .merged_key import merged_string_key

        with launch_context(dev):
            return merged_string_key(left_key, right_key, dtype, left_idx, right_idx)
    phys = physical_numpy_dtype(dtype) if is_word_type(dtype) else None
    floats = pair.family == "float"
    if pair.is_string or phys is None or (floats and phys.kind != "f"):
        return merged_key_host(left_key, right_key, pair, dtype, left_idx, right_idx)
    with launch_context(dev):
        lw = fast_key_words(left_key, pair, dev, widen)
        rw = fast_key_words(right_key, pair, dev, widen)
        words = memory.empty(n, np.int64, dev)
        code = np.int64(SRC_KEY)
        _launch(_cuda().emit, n, left_idx, right_idx, lw, lw, code, rw, rw, code, np.int64(0), words)
        src = memory.view_as(words, np.float64) if floats else words
        # the value fits: it is one side's own key
        vals = memory.view_as(src, phys) if phys.itemsize == 8 else cast_on_device(src, phys, n, dev)
        validity, nulls = _merged_validity(left_key, right_key, left_idx, right_idx, dev)
    return Column(dtype, n, Buffer(vals, dev), validity, None, None, 0, nulls)


def _merged_string_key(left: Column, right: Column, dtype: Any, left_idx: Any, right_idx: Any,
                       dev: Device) -> Column:
    """A merged key of two plain string columns, on the device: validity coalesced, each row's
    length from the present side, one scan for the offsets, then the bytes copied."""
    from gpuframe.kernels.gather import cuda_kernels as gather_kernels

    k = gather_kernels()
    n = int(left_idx.shape[0])
    validity, nulls = _merged_validity(left, right, left_idx, right_idx, dev)
    vbits = validity.array if validity is not None else memory.empty(1, np.uint8, dev)
    loffs, roffs = left.offsets_view(), right.offsets_view()
    lengths = memory.empty(n, np.int64, dev)
    _launch(k["coalesce_lengths"], n, loffs, left_idx, roffs, right_idx, vbits, validity is not None, lengths)
    offs64 = memory.cumsum_exclusive(lengths, np.int64)
    total = _scalar(offs64, n)
    large = pa.types.is_large_string(dtype) or total >= 2**31 - 1
    memory.ensure_available("merge", total, dev, rows=n, what="the merged string key's bytes")
    chars = memory.empty(total, np.uint8, dev)
    lchars = left.chars() if left.chars().shape[0] else memory.empty(1, np.uint8, dev)
    rchars = right.chars() if right.chars().shape[0] else memory.empty(1, np.uint8, dev)
    _launch(k["coalesce_chars"], n, loffs, lchars, left_idx, roffs, rchars, right_idx, vbits,
            validity is not None, offs64, chars)
    if large:
        offsets = offs64
    else:
        offsets = memory.empty(n + 1, np.int32, dev)
        _launch(k["cast_copy"], n + 1, offs64, offsets)
    return Column(pa.large_string() if large else pa.string(), n, Buffer(chars, dev), validity,
                  Buffer(offsets, dev), None, 0, nulls)


def _coalesce_bits(left: Column, lbits: Optional[Buffer], right: Column, rbits: Optional[Buffer], left_idx: Any,
                   right_idx: Any, dev: Device) -> tuple[Buffer, int]:
    """The bitmap of the gather maps' rows, each bit from the left bitmap where the left row is
    present, else the right one (a missing bitmap reads as all ones), and its set bits."""
    from gpuframe.kernels.gather import cuda_kernels as gather_kernels

    n = int(left_idx.shape[0])
    out = memory.empty((n + 7) // 8, np.uint8, dev)
    count = memory.zeros(1, np.int64, dev)
    none = memory.empty(1, np.uint8, dev)
    _launch(gather_kernels()["coalesce_bits"], (n + 7) // 8,
            none if lbits is None else lbits.array, np.int64(left.offset), lbits is not None, left_idx,
            none if rbits is None else rbits.array, np.int64(right.offset), rbits is not None, right_idx,
            out, count)
    return Buffer(out, dev), _scalar(count, 0)


def _merged_validity(left: Column, right: Column, left_idx: Any, right_idx: Any,
                     dev: Device) -> tuple[Optional[Buffer], int]:
    """The merged key's validity bitmap (``None`` without nulls) and null count, on the device."""
    if not (left.has_nulls or right.has_nulls):
        return None, 0
    n = int(left_idx.shape[0])
    bits, valid = _coalesce_bits(left, left.validity, right, right.validity, left_idx, right_idx, dev)
    return (bits, n - valid) if valid < n else (None, 0)


def _key_word(src: Any, kmode: int, valid: Any, out: Any, flag: Any, keep: Any) -> None:
    """One key column's row of the general path's words, on the device (see ``_keys.KeyWord``)."""
    n = int(out.shape[0])
    dev = memory.array_device(out)
    none8 = memory.empty(1, np.uint8, dev)
    none64 = memory.empty(1, np.uint64, dev)
    _launch(_cuda().key_word, n, src, kmode, none8 if valid is None else valid, valid is not None, out,
            none64 if flag is None else flag, flag is not None, none8 if keep is None else keep, keep is not None)


def _string_span(offsets: Any, valid: Any, st: Any, en: Any, flag: Any, keep: Any) -> None:
    """One string key's byte spans for the general path, on the device (see ``_keys.StringSpan``)."""
    n = int(st.shape[0])
    dev = memory.array_device(st)
    none8 = memory.empty(1, np.uint8, dev)
    none64 = memory.empty(1, np.uint64, dev)
    _launch(_cuda().string_span, n, offsets, none8 if valid is None else valid, valid is not None, st, en,
            none64 if flag is None else flag, flag is not None, none8 if keep is None else keep, keep is not None)


def _cuda():
    from gpuframe.kernels.join import cuda_kernels

    return cuda_kernels()


def _launch(kernel: Any, n: int, *args: Any) -> None:
    from .launch import launch

    launch(kernel, n, *args)


def _scalar(arr: Any, i: int) -> int:
    return int(memory.to_host(arr[i:i + 1])[0])


def _row_hash_cuda(sk: SideKeys, dev: Device) -> None:
    if sk.keys is None:
        out = memory.empty(sk.n, np.uint64, dev)
        _launch(_cuda().row_hash, sk.n, sk.words, sk.starts, sk.ends, sk.chars, out)
        sk.keys = out


def _scratch_bytes(build_n: int, probe_n: int, semi: bool, eub: bool) -> int:
    """Bytes the join holds besides its output, at most: the table (16 per slot), the build
    rows' representatives, and with duplicates their counts, offsets and segments (8 each per
    build row); per probe row its representative, count and offset (8 each; semi/anti: a flag
    and, for the selection, a count and an offset); the matched flags and the unmatched build
    rows' selection (outer joins)."""
    from gpuframe.kernels.join import table_bits

    table = 16 << table_bits(build_n)
    per_build = 8 + 24 + 1 + (1 + 16 if eub or semi else 0)
    per_probe = 1 + 8 + 16 if semi else 24
    return table + per_build * build_n + per_probe * probe_n + 16


def slot_build(build: SideKeys, dev: Device) -> tuple[Any, Any, bool]:
    """The build side's table, built: ``(tab, brep, unique)``, the kernels'
    :class:`~gpuframe.kernels.join.SlotTable`, every build row's representative (-1: a null key
    left out) and whether every key is distinct. (Grouping uses it too:
    :mod:`gpuframe.backends.cuda.groups`.)"""
    from gpuframe.kernels.join import slot_table_arrays, table_bits

    size = 1 << table_bits(build.n)
    tab = slot_table_arrays(slots=memory.zeros(2 * size, np.uint64, dev), tmask=size - 1, keys=build.keys,
                            valid=build.valid, kmode=build.kmode, verify=build.verify, w=build.words,
                            st=build.starts, en=build.ends, ch=build.chars)
    brep = memory.empty(max(build.n, 1), np.int64, dev)
    dup = memory.zeros(1, np.int64, dev)
    _launch(_cuda().slot_build, build.n, tab, brep, dup)
    return tab, brep, not _scalar(dup, 0)


def _slot_table(build: SideKeys, dev: Device) -> tuple[Any, Any, Any, Any, bool]:
    """The build side's table, built: ``(tab, brep, rstart, csr, unique)``, the kernels'
    :class:`~gpuframe.kernels.join.SlotTable`, every build row's representative (-1: a null
    key) and, when a key repeats (``unique`` false), each representative's segment start and
    the segments of build rows (``None`` when every key is unique)."""
    k = _cuda()
    tab, brep, unique = slot_build(build, dev)
    if unique:
        return tab, brep, None, None, True
    rcount = memory.zeros(build.n, np.int64, dev)
    _launch(k.rep_count, build.n, brep, rcount)
    rstart = memory.cumsum_exclusive(rcount)
    csr = memory.empty(max(build.n, 1), np.int64, dev)
    _launch(k.csr_fill, build.n, brep, rstart, rcount, csr)
    return tab, brep, rstart, csr, False


def _probe_arrays(probe: SideKeys) -> Any:
    from gpuframe.kernels.join import probe_arrays

    return probe_arrays(keys=probe.keys, valid=probe.valid, w=probe.words, st=probe.starts, en=probe.ends,
                        ch=probe.chars)


def _count_rows(flags: Any, want: int, dev: Device) -> tuple[Any, int]:
    """The scan of rows ``i`` with ``flags[i] == want`` (``len(flags) + 1`` offsets) and their count."""
    n = int(flags.shape[0])
    counts = memory.empty(n, np.int64, dev)
    _launch(_cuda().flag_count, n, flags, np.uint8(want), counts)
    offs = memory.cumsum_exclusive(counts)
    return offs, _scalar(offs, n)


def _select_rows(flags: Any, want: int, dev: Device) -> tuple[Any, int]:
    """Rows ``i`` with ``flags[i] == want``, in order, and their count (scan + scatter)."""
    offs, total = _count_rows(flags, want, dev)
    out = memory.empty(total, np.int64, dev)
    _launch(_cuda().flag_write, int(flags.shape[0]), flags, np.uint8(want), offs, np.int64(0),
            memory.to_device(_E64, dev), out, np.int64(-1))
    return out, total


def _cuda_join(req: JoinRequest, dev: Device) -> JoinResult:
    L, R = req.left, req.right
    k = _cuda()
    _row_hash_cuda(L, dev)
    _row_hash_cuda(R, dev)
    e8 = memory.empty(0, np.uint8, dev)
    e64 = memory.empty(0, np.int64, dev)
    semi = req.how in ("semi", "anti")
    if semi:
        build_left, eup, eub = L.n < R.n, False, False
    else:
        build_left, eup, eub = _sides(req)
    probe, build = (R, L) if build_left else (L, R)
    op = getattr(req.on_count, "op", "join") if not req.count_only else "join_size"
    memory.ensure_available(op, _scratch_bytes(build.n, probe.n, semi, eub), dev, rows=build.n + probe.n,
                            what="the hash table and its scratch for the build and probe rows")
    tab, brep, rstart, csr, unique = _slot_table(build, dev)
    pside = _probe_arrays(probe)
    if rstart is None:
        rstart = e64
    if semi:
        if build_left:   # the selected left rows are the build rows whose key was matched
            rmatched = memory.zeros(build.n, np.uint8, dev)
            _launch(k.slot_probe, probe.n, tab, pside, unique, rstart, False, rmatched, e8, e64, e64)
            flags = memory.empty(build.n, np.uint8, dev)
            _launch(k.rep_flags, build.n, brep, rmatched, flags)
        else:
            flags = memory.zeros(L.n, np.uint8, dev)
            _launch(k.slot_probe, probe.n, tab, pside, unique, rstart, False, e8, flags, e64, e64)
        del tab, brep, csr
        sel, total = _select_rows(flags, 1 if req.how == "semi" else 0, dev)
        if req.count_only:
            return JoinResult(total, [])
        if req.on_count is not None:
            req.on_count(total)
        return JoinResult(total, [], sel, None)

    rmatched = memory.zeros(build.n, np.uint8, dev) if eub else e8
    prep = memory.empty(probe.n, np.int64, dev)
    if unique and eup:   # every probe row gives exactly one row: no counts, no scan
        _launch(k.slot_probe, probe.n, tab, pside, True, rstart, True, rmatched, e8, prep, e64)
        offs, total_p = e64, probe.n
    else:
        counts = memory.empty(probe.n, np.int64, dev)
        _launch(k.slot_probe, probe.n, tab, pside, unique, rstart, eup, rmatched, e8, prep, counts)
        offs = memory.cumsum_exclusive(counts)
        del counts
        total_p = _scalar(offs, probe.n)
    del tab
    total_b = 0
    if eub:
        bflags = memory.empty(build.n, np.uint8, dev)
        _launch(k.rep_flags, build.n, brep, rmatched, bflags)
        del rmatched
        boffs, total_b = _count_rows(bflags, 0, dev)
    del brep
    total = total_p + total_b
    if req.count_only:
        return JoinResult(total, [])
    if req.on_count is not None:
        req.on_count(total)
    lidx = memory.empty(total, np.int64, dev)
    ridx = memory.empty(total, np.int64, dev)
    probe_is_left = not build_left
    if unique:
        _launch(k.write_direct, probe.n, prep, offs, probe_is_left, lidx, ridx)
    else:
        _launch(k.expand, total_p, offs, prep, rstart, csr, probe_is_left, lidx, ridx)
    if eub:   # the unmatched build rows, after the probe rows
        pmap, bmap = (lidx, ridx) if probe_is_left else (ridx, lidx)
        _launch(k.flag_write, build.n, bflags, np.uint8(0), boffs, np.int64(total_p), pmap, bmap, np.int64(-1))
    return JoinResult(total, [], lidx, ridx)
