"""The merged (coalesced) string key of a CUDA merge, made on the device for every layout of
either side: plain strings and dictionary-encoded strings (null indices and null dictionary
entries are null keys, as the host path has it).

Each side's rows become byte spans into that side's bytes (its own, or its dictionary's) and a
keep byte per row (0: a null key), by the key-preparation kernels of
:mod:`gpuframe.kernels.keyprep`; then, per output row, the present side's span is coalesced
(the left one where the left row is present: where both are, their keys are byte-equal):
validity and null count, lengths, one scan for the offsets, the bytes. What crosses to the host
is two scalars (the null count and the byte total).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ...core import memory
from ...core.buffer import Buffer
from ...core.column import Column
from ...core.device import Device, launch_context
from ...core.dtypes import Layout
from .._keys import key_has_nulls
from ._target import key_prep

__all__ = ["merged_string_key"]


def _side_spans(col: Column, dev: Device) -> tuple[Any, Any, Any, bool, Any]:
    """``(starts, ends, keep, has_keep, chars)`` of a string key column on the device: int64
    byte spans of every row into ``chars``, and a keep byte per row (0 where the key is null;
    ``has_keep`` False when no key is null)."""
    prep = key_prep()
    n = len(col)
    st = memory.empty(n, np.int64, dev)
    en = memory.empty(n, np.int64, dev)
    has_keep = key_has_nulls(col)
    keep = memory.full(n, 1, np.uint8, dev) if has_keep else None
    valid = col.validity_bytes() if col.has_nulls else None
    if col.layout == Layout.DICTIONARY:
        d = col.dictionary
        chars = d.chars()
        if n:
            prep.dict_span(col.values(), valid, d.offsets_view(), d.validity_bytes() if d.has_nulls else None, 0,
                           st, en, None, keep)
    elif col.layout == Layout.STRING:
        chars = col.chars()
        if n:
            prep.string_span_at(col.offsets_view(), 0, valid, st, en, None, keep)
    else:
        raise TypeError(f"a merged string key needs string or dictionary columns, got {col.dtype}")
    # no 0-byte kernel arguments: a side without rows (or bytes) is never read
    if chars.shape[0] == 0:
        chars = memory.empty(1, np.uint8, dev)
    if n == 0:
        st, en = memory.empty(1, np.int64, dev), memory.empty(1, np.int64, dev)
    if keep is None or n == 0:
        keep = memory.empty(1, np.uint8, dev)
    return st, en, keep, has_keep and n > 0, chars


def merged_string_key(left: Column, right: Column, dtype: Any, left_idx: Any, right_idx: Any) -> Column:
    """The coalesced string key of the gather maps' rows (int64 ``left_idx``/``right_idx`` on
    the columns' device, ``-1`` for a missing side): the key of the left row where present,
    else the right row's; null where that key is null (or neither side is present). A
    ``large_string`` column when ``dtype`` is one or the bytes need 64-bit offsets, else
    ``string``; the same column the host path (``gpuframe.backends._keys.merged_key_host``)
    makes."""
    from gpuframe.kernels.gather import cuda_kernels as gather_kernels
    from gpuframe.kernels.keyprep import cuda_kernels

    from .launch import launch

    dev = left.device
    n = int(left_idx.shape[0])
    k = cuda_kernels()
    with launch_context(dev):
        lst, len_, lkeep, lhas, lch = _side_spans(left, dev)
        rst, ren, rkeep, rhas, rch = _side_spans(right, dev)
        spans = (lst, len_, lkeep, lhas, left_idx, rst, ren, rkeep, rhas, right_idx)
        # validity as the host path has it: the present side's key is null, or no side is present
        bits = memory.empty((n + 7) // 8, np.uint8, dev)
        count = memory.zeros(1, np.int64, dev)
        launch(k.coalesce_valid, (n + 7) // 8, *spans, bits, count)
        nulls = n - int(memory.to_host(count)[0]) if n else 0
        validity = Buffer(bits, dev) if nulls else None
        lengths = memory.empty(n, np.int64, dev)
        launch(k.coalesce_lengths, n, *spans, lengths)
        offs64 = memory.cumsum_exclusive(lengths, np.int64)
        total = int(memory.to_host(offs64[n:n + 1])[0])
        large = pa.types.is_large_string(dtype) or total >= 2**31 - 1
        memory.ensure_available("merge", total, dev, rows=n, what="the merged string key's bytes")
        chars = memory.empty(max(total, 1), np.uint8, dev)
        launch(k.coalesce_chars, n, lst, len_, lkeep, lhas, left_idx, lch, rst, ren, rkeep, rhas, right_idx, rch,
               offs64, chars)
        chars = chars[:total]
        if large:
            offsets = offs64
        else:
            offsets = memory.empty(n + 1, np.int32, dev)
            launch(gather_kernels()["cast_copy"], n + 1, offs64, offsets)
    return Column(pa.large_string() if large else pa.string(), n, Buffer(chars, dev), validity,
                  Buffer(offsets, dev), None, 0, nulls)
