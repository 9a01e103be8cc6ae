"""Row selection on a CUDA device: the rows of a boolean mask (a flag kernel, a scan and a
scatter, nothing through the host), columns stacked one after another (kernels; a few scalars
per piece through the host), and the cross product's gather maps."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from ...core import memory
from ...core.column import Column
from ...core.device import CPU, launch_context

__all__ = ["mask_rows", "valid_rows", "concat_columns", "cross_maps", "cast_column", "decode_dictionary"]


def mask_rows(mask: Column) -> Any:
    """The int64 row numbers (on the device) where the bool column ``mask`` is true (a null
    counts as false)."""
    from gpuframe.kernels.group import cuda_kernels

    from .join import _select_rows
    from .launch import launch

    dev = mask.device
    n = len(mask)
    with launch_context(dev):
        valid = mask.validity_bytes()
        flags = memory.empty(n, np.uint8, dev)
        launch(cuda_kernels().mask_flags, n, mask.bool_bytes(), memory.empty(1, np.uint8, dev) if valid is None
               else valid, valid is not None, flags)
        rows, _ = _select_rows(flags, 1, dev)
        return rows


def valid_rows(columns: Sequence[Column]) -> Any:
    """The int64 row numbers (on the device) where no column of ``columns`` is null."""
    from gpuframe.kernels.group import cuda_kernels

    from .join import _select_rows
    from .launch import launch

    dev = columns[0].device
    n = len(columns[0])
    with launch_context(dev):
        flags = memory.full(n, 1, np.uint8, dev)
        for c in columns:
            if c.validity is not None:
                launch(cuda_kernels().and_valid, n, c.validity_bytes(), flags)
        rows, _ = _select_rows(flags, 1, dev)
        return rows


def _copy_at(src: Any, dst: Any, base: int) -> None:
    """``dst[base:base + len(src)] = src`` by a kernel (elements converted to ``dst``'s type)."""
    from gpuframe.kernels.keyprep import cuda_kernels

    from .launch import launch

    if int(src.shape[0]):
        launch(cuda_kernels().copy_at, int(src.shape[0]), src, dst, np.int64(base))


def _scalar(arr: Any, i: int) -> int:
    return int(memory.to_host(arr[i:i + 1])[0])


def _concat_bitmaps(bitmaps: Sequence[tuple[Any, int, int]], rows: Sequence[int], total: int,
                    dev: Any) -> Any:
    """One LSB-first bitmap of ``total`` rows from ``(bitmap array or None, first bit, rows)``
    per piece (``None``: every bit set), on the device: the pieces' bytes gathered into one
    scratch buffer, then :mod:`gpuframe.kernels.assemble`'s ``concat_bits``."""
    from gpuframe.comm.device_assembly import concat_bits, descriptors

    src, bits, sizes = [], [], []
    at = 0
    for arr, first_bit, n in bitmaps:
        if arr is None or n == 0:
            src.append(-1)
            bits.append(0)
            sizes.append(0)
            continue
        nbytes = (first_bit % 8 + n + 7) // 8
        src.append(at)
        bits.append(first_bit % 8)
        sizes.append(nbytes)
        at += nbytes
    scratch = memory.empty(max(at, 1), np.uint8, dev)
    for (arr, first_bit, n), s_, nb in zip(bitmaps, src, sizes):
        if s_ >= 0:
            b0 = first_bit // 8
            _copy_at(arr[b0:b0 + nb], scratch, s_)
    return concat_bits(descriptors(rows, total, src=src, bit=bits), scratch, total, dev)


def concat_columns(columns: Sequence[Column], dtype: pa.DataType) -> Column:
    """The columns (all of ``dtype``) one after another, on the device: values, bitmaps and
    string offsets assembled by kernels (a few scalars per piece cross to the host).
    Dictionary columns go through the host (pyarrow unifies their dictionaries)."""
    from ...core.buffer import Buffer
    from ...core.dtypes import Layout, offsets_dtype, physical_numpy_dtype

    dev = columns[0].device
    lay = columns[0].layout
    if lay == Layout.DICTIONARY:
        from ..cpu.select import concat_columns as host_concat

        return host_concat([c.to(CPU) for c in columns], dtype).to(dev)
    ns = [len(c) for c in columns]
    rows = [0]
    for n in ns[:-1]:
        rows.append(rows[-1] + n)
    total = sum(ns)
    with launch_context(dev):
        validity, nulls = None, 0
        if any(c.validity is not None for c in columns):
            validity = Buffer(_concat_bitmaps([(c.validity.array if c.validity is not None else None, c.offset, n)
                                               for c, n in zip(columns, ns)], rows, total, dev), dev)
            nulls = sum(c.null_count for c in columns)
        offsets = None
        if lay == Layout.FIXED:
            out = memory.empty(total, physical_numpy_dtype(dtype), dev)
            for c, r in zip(columns, rows):
                _copy_at(c.values(), out, r)
            data = Buffer(out, dev)
        elif lay == Layout.BOOL:
            data = Buffer(_concat_bitmaps([(c.data.array, c.offset, n) for c, n in zip(columns, ns)], rows, total,
                                          dev), dev)
        else:
            from gpuframe.comm.device_assembly import descriptors, rebase_offsets

            odt = offsets_dtype(dtype)
            spans = []
            for c, n in zip(columns, ns):
                offs = c.offsets_view()
                spans.append((_scalar(offs, 0), _scalar(offs, n)))
            starts = [0]
            for b, e in spans[:-1]:
                starts.append(starts[-1] + e - b)
            total_chars = starts[-1] + spans[-1][1] - spans[-1][0]
            if odt == np.int32 and total_chars >= 2**31:
                raise ValueError(f"the concatenated {dtype} column has {total_chars:,} bytes of text, more than 32-bit "
                                 "offsets address; cast the columns to large_string first")
            chars = memory.empty(max(total_chars, 1), np.uint8, dev)
            scratch = memory.empty(max(total, 1), np.int64, dev)
            for c, n, (b, e), cs, r in zip(columns, ns, spans, starts, rows):
                _copy_at(c.chars()[b:e], chars, cs)
                _copy_at(c.offsets_view()[:n], scratch, r)
            desc = descriptors(rows, total, src=rows, bit=[b for b, _ in spans], add=starts)
            offsets = Buffer(rebase_offsets(desc, scratch, total, total_chars, odt, dev), dev)
            data = Buffer(chars[:total_chars], dev)
        return Column(dtype, total, data, validity, offsets, None, 0, nulls)


def cross_maps(nl: int, nr: int, device: Any) -> tuple[Any, Any]:
    """The gather maps of the cross product of ``nl`` x ``nr`` rows, left-major, made on ``device``."""
    from gpuframe.kernels.group import cuda_kernels

    from .launch import launch

    total = nl * nr
    with launch_context(device):
        lidx = memory.empty(total, np.int64, device)
        ridx = memory.empty(total, np.int64, device)
        launch(cuda_kernels().cross_maps, total, np.int64(max(nr, 1)), lidx, ridx)
    return lidx, ridx


def decode_dictionary(col: Column) -> Column:
    """A string dictionary column as a plain column of its strings (the dictionary's type), on the
    device: its indices widened (a null index: -1) and the dictionary gathered."""
    from gpuframe.kernels.group import cuda_kernels

    from .gather import gather_column
    from .launch import launch

    dev = col.device
    n = len(col)
    with launch_context(dev):
        valid = col.validity_bytes()
        rows = memory.empty(n, np.int64, dev)
        launch(cuda_kernels().dict_rows, n, col.values(), memory.empty(1, np.uint8, dev) if valid is None else valid,
               valid is not None, rows)
        return gather_column(col.dictionary, rows, None)


def _repacked_validity(col: Column) -> Any:
    """``col``'s validity bitmap starting at bit 0 (the same buffer when it does already)."""
    from ...core.buffer import Buffer

    if col.validity is None or col.offset == 0:
        return col.validity
    return Buffer(_concat_bitmaps([(col.validity.array, col.offset, len(col))], [0], len(col), col.device), col.device)


def cast_column(col: Column, dtype: pa.DataType) -> Column:
    """``col`` as ``dtype`` on the device: numbers converted by a kernel, string and large_string
    offsets converted (the text shared), a string dictionary decoded; other casts through the
    host (pyarrow)."""
    from ...core.buffer import Buffer
    from ...core.dtypes import Layout, physical_numpy_dtype
    from ._target import cast_on_device

    dev = col.device
    n = len(col)
    lay = col.layout
    strings = (pa.types.is_string(dtype) or pa.types.is_large_string(dtype))
    with launch_context(dev):
        if lay == Layout.DICTIONARY and strings:
            plain = decode_dictionary(col)
            return plain if plain.dtype == dtype else cast_column(plain, dtype)
        if lay == Layout.STRING and strings:
            if pa.types.is_string(dtype) and int(col.chars().shape[0]) >= 2**31:
                raise ValueError(f"a {col.dtype} column of {int(col.chars().shape[0]):,} bytes of text cannot be "
                                 f"cast to {dtype} (32-bit offsets)")
            offs = cast_on_device(col.offsets_view(), np.int32 if pa.types.is_string(dtype) else np.int64, n + 1, dev)
            return Column(dtype, n, col.data, _repacked_validity(col), Buffer(offs, dev), None, 0, col.null_count)
        numeric = pa.types.is_integer(dtype) or pa.types.is_floating(dtype)
        if lay == Layout.FIXED and numeric and (pa.types.is_integer(col.dtype) or pa.types.is_floating(col.dtype)):
            vals = cast_on_device(col.values(), physical_numpy_dtype(dtype), n, dev)
            return Column(dtype, n, Buffer(vals, dev), _repacked_validity(col), None, None, 0, col.null_count)
    from ..cpu.select import cast_column as host_cast

    return host_cast(col.to(CPU), dtype).to(dev)
