"""Logical types (pyarrow ``DataType``) and their physical layout in gpuframe buffers."""
from __future__ import annotations

from enum import Enum

import functools

import numpy as np
import pyarrow as pa


class Layout(Enum):
    FIXED = "fixed"        # one data buffer of fixed-width values
    BOOL = "bool"          # one bit-packed data buffer (LSB first, Arrow layout)
    STRING = "string"      # offsets (int32 or int64) + utf8 bytes
    DICTIONARY = "dictionary"  # integer indices + a dictionary Column


_FIXED = {
    pa.int8(): np.int8, pa.int16(): np.int16, pa.int32(): np.int32, pa.int64(): np.int64,
    pa.uint8(): np.uint8, pa.uint16(): np.uint16, pa.uint32(): np.uint32, pa.uint64(): np.uint64,
    pa.float32(): np.float32, pa.float64(): np.float64, pa.date32(): np.int32,
}

SUPPORTED_DESCRIPTION = (
    "int8-int64, uint8-uint64, float32/64, bool, string, large_string, date32, timestamp "
    "and dictionary<int, string>"
)


@functools.lru_cache(maxsize=1024)
def layout_of(dtype: pa.DataType) -> Layout:
    if pa.types.is_dictionary(dtype):
        return Layout.DICTIONARY
    if pa.types.is_boolean(dtype):
        return Layout.BOOL
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return Layout.STRING
    return Layout.FIXED


def physical_numpy_dtype(dtype: pa.DataType) -> np.dtype:
    """numpy dtype of the data buffer of a FIXED column (or the indices of a dictionary)."""
    if pa.types.is_dictionary(dtype):
        return physical_numpy_dtype(dtype.index_type)
    if pa.types.is_timestamp(dtype):
        return np.dtype(np.int64)
    try:
        return np.dtype(_FIXED[dtype])
    except KeyError:
        raise TypeError(f"{dtype} has no fixed-width physical layout") from None


def offsets_dtype(dtype: pa.DataType) -> np.dtype:
    return np.dtype(np.int64 if pa.types.is_large_string(dtype) else np.int32)


def is_supported(dtype: pa.DataType) -> bool:
    if pa.types.is_dictionary(dtype):
        return (pa.types.is_integer(dtype.index_type)
                and (pa.types.is_string(dtype.value_type) or pa.types.is_large_string(dtype.value_type)))
    if pa.types.is_timestamp(dtype):
        return True
    return (dtype in _FIXED or pa.types.is_boolean(dtype)
            or pa.types.is_string(dtype) or pa.types.is_large_string(dtype))


def check_supported(dtype: pa.DataType, name: str) -> None:
    """Raise ``TypeError`` naming the column when ``dtype`` is outside what gpuframe stores."""
    if not is_supported(dtype):
        raise TypeError(
            f"column {name!r} has unsupported type {dtype}; gpuframe supports {SUPPORTED_DESCRIPTION}"
        )


def is_numeric(dtype: pa.DataType) -> bool:
    return pa.types.is_integer(dtype) or pa.types.is_floating(dtype)


def is_string_like(dtype: pa.DataType) -> bool:
    return (pa.types.is_string(dtype) or pa.types.is_large_string(dtype)
            or (pa.types.is_dictionary(dtype) and is_string_like(dtype.value_type)))
