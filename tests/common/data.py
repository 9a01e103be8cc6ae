"""The dtype list and random data used across the tests (one place, readable ids)."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

DTYPES: list[pa.DataType] = [
    pa.int8(), pa.int16(), pa.int32(), pa.int64(),
    pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64(),
    pa.float32(), pa.float64(), pa.bool_(),
    pa.string(), pa.large_string(),
    pa.date32(), pa.timestamp("us"), pa.timestamp("ns", tz="UTC"),
    pa.dictionary(pa.int32(), pa.string()),
]


def dtype_id(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        return f"dict_{t.index_type}_{t.value_type}"
    if pa.types.is_timestamp(t):
        return f"timestamp_{t.unit}" + ("_tz" if t.tz else "")
    return {"float": "float32", "double": "float64", "date32[day]": "date32"}.get(str(t), str(t))


DTYPE_IDS = [dtype_id(t) for t in DTYPES]

INTEGER_DTYPES = [t for t in DTYPES if pa.types.is_integer(t)]
KEY_DTYPES = DTYPES  # every stored type can be a join/partition key


def random_array(dtype: pa.DataType, n: int, *, nulls: bool = False, seed: int = 0,
                 cardinality: int | None = None) -> pa.Array:
    """``n`` random values of ``dtype``; about 10% nulls when ``nulls``.

    ``cardinality`` bounds the number of distinct values (to make duplicate keys).
    """
    rng = np.random.default_rng(seed)
    card = cardinality or max(n, 1)
    codes = rng.integers(0, card, size=n)
    mask = (rng.random(n) < 0.1) if nulls else None
    if pa.types.is_dictionary(dtype):
        values = pa.array([f"v{c}" for c in codes], type=pa.string(), mask=mask)
        return values.dictionary_encode().cast(dtype)
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        # include empty strings and multi-byte characters
        words = ["", "a", "ß", "日本", "key"]
        vals = [words[c % len(words)] + (str(c) if c % 7 else "") for c in codes]
        return pa.array(vals, type=dtype, mask=mask)
    if pa.types.is_boolean(dtype):
        return pa.array((codes % 2).astype(bool), type=dtype, mask=mask)
    if pa.types.is_floating(dtype):
        vals = (codes - card // 2).astype(np.float64) * 0.5
        return pa.array(vals.astype(dtype.to_pandas_dtype()), type=dtype, mask=mask)
    if pa.types.is_date32(dtype):
        return pa.array(codes.astype(np.int32), type=pa.int32(), mask=mask).cast(dtype)
    if pa.types.is_timestamp(dtype):
        return pa.array(codes.astype(np.int64) * 1_000_003, type=pa.int64(), mask=mask).cast(dtype)
    info = np.iinfo(dtype.to_pandas_dtype())
    lo = max(info.min, -card // 2) if info.min < 0 else 0
    vals = np.clip(codes + lo, info.min, info.max).astype(dtype.to_pandas_dtype())
    return pa.array(vals, type=dtype, mask=mask)


def random_table(n: int, dtypes: dict[str, pa.DataType], *, nulls: bool = False, seed: int = 0,
                 cardinality: int | None = None) -> pa.Table:
    return pa.table({name: random_array(t, n, nulls=nulls, seed=seed + i, cardinality=cardinality)
                     for i, (name, t) in enumerate(dtypes.items())})


def set_key(v):
    """A Python value as set operations and grouping compare it: null == null, NaN == NaN,
    -0.0 == 0.0 (a hashable stand-in for each)."""
    if v is None:
        return ("<null>",)
    if isinstance(v, float):
        if math.isnan(v):
            return ("<nan>",)
        if v == 0.0:
            return 0.0
    return v
