"""Helpers for the interop tests: slices with odd offsets, protocol-only wrappers, buffer checks."""
from __future__ import annotations

from typing import Any

import pyarrow as pa

from gpuframe.core.column import Column
from gpuframe.core.dtypes import Layout
from gpuframe.interop import arrow_c_abi

from .data import random_array

# (rows generated, slice offset, slice length): whole arrays, 0 rows, and slices whose offset is
# not a multiple of 8 (bitmaps start mid-byte) or ends mid-byte
SLICES = [(37, 0, 37), (0, 0, 0), (37, 5, 19), (37, 13, 0), (64, 3, 61)]
SLICE_IDS = ["whole37", "empty", "off5len19", "off13len0", "off3len61"]


def sliced_array(dtype: pa.DataType, case: tuple[int, int, int], nulls: bool, seed: int = 1) -> pa.Array:
    n, off, length = case
    return random_array(dtype, n, nulls=nulls, seed=seed).slice(off, length)


class StreamOnly:
    """Exposes only ``__arrow_c_stream__`` of the wrapped object."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        return self.obj.__arrow_c_stream__(requested_schema)


class ArrayOnly:
    """Exposes only ``__arrow_c_array__`` of the wrapped object."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __arrow_c_array__(self, requested_schema: Any = None) -> Any:
        return self.obj.__arrow_c_array__(requested_schema)


class DeviceArrayOnly:
    """Exposes only ``__arrow_c_device_array__`` of the wrapped object."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __arrow_c_device_array__(self, requested_schema: Any = None, **kwargs: Any) -> Any:
        return self.obj.__arrow_c_device_array__(requested_schema, **kwargs)


def expected_addresses(col: Column) -> list:
    """The buffer addresses a zero-copy pyarrow view of ``col`` must have, in ``Array.buffers()``
    order for the column itself (dictionary: its indices; the dictionary is checked separately)."""
    validity = col.validity.ptr if col.validity is not None else None
    if col.layout == Layout.STRING:
        return [validity, col.offsets.ptr, col.data.ptr]
    return [validity, col.data.ptr]


def assert_same_memory(arr: pa.Array, col: Column) -> None:
    """``arr`` (pyarrow) views exactly ``col``'s buffers, at ``col``'s offset."""
    assert arr.offset == col.offset
    assert len(arr) == col.length
    got = [None if b is None else b.address for b in arr.buffers()[:len(expected_addresses(col))]]
    if col.validity is None:
        got[0] = None  # pyarrow may keep a validity buffer that we left out (no nulls)
    assert got == expected_addresses(col)
    if col.dictionary is not None:
        assert_same_memory(arr.dictionary, col.dictionary)


def live_exports() -> int:
    # no gc.collect(): exports hold no reference cycles, so dropping the last reference must
    # release them at once (and a collection per test would slow the CPU lane down)
    return arrow_c_abi.live_exports()


def assert_released(before: int) -> None:
    """Every struct gpuframe exported since ``before = live_exports()`` has been released."""
    now = live_exports()
    assert now == before, f"{now - before} exported struct(s) still alive"
