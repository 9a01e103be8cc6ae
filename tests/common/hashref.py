"""A pure-Python reference of gpuframe's row hash (the contract in gpuframe.ops.hashing).

Written from the contract with Python ints, independently of the numba kernels, so that tests
of hash_rows / partition_ids / hash_partition compare against something that can disagree.
"""
from __future__ import annotations

import struct

import pyarrow as pa

MASK = (1 << 64) - 1
M1 = 0xFF51AFD7ED558CCD
M2 = 0xC4CEB9FE1A85EC53
GOLDEN = 0x9E3779B97F4A7C15
NULL_HASH = 0x5BD1E9955BD1E995
CANONICAL_NAN = 0x7FF8000000000000


def fmix64(k: int) -> int:
    k &= MASK
    k ^= k >> 33
    k = (k * M1) & MASK
    k ^= k >> 33
    k = (k * M2) & MASK
    k ^= k >> 33
    return k


def hash_u64(x: int, seed: int) -> int:
    return fmix64((x & MASK) ^ ((seed * GOLDEN + GOLDEN) & MASK))


def hash_combine(h: int, v: int) -> int:
    return h ^ ((v + GOLDEN + ((h << 6) & MASK) + (h >> 2)) & MASK)


def null_hash(seed: int) -> int:
    return hash_u64(NULL_HASH, seed)


def float_bits(x: float) -> int:
    if x != x:
        return CANONICAL_NAN
    if x == 0.0:
        return 0
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def bytes_hash(b: bytes, seed: int) -> int:
    h = hash_u64(len(b), seed)
    for p in range(0, len(b), 8):
        h = fmix64(h ^ int.from_bytes(b[p:p + 8], "little"))
    return h


def value_hashes(arr: pa.Array | pa.ChunkedArray, seed: int = 0) -> list[int]:
    """Per-row hash of one column, following the contract."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.cast(t.value_type)
        t = arr.type
    if pa.types.is_date32(t):
        arr = arr.cast(pa.int32())
    elif pa.types.is_timestamp(t):
        arr = arr.cast(pa.int64())
    values = arr.to_pylist()
    out = []
    for v in values:
        if v is None:
            out.append(null_hash(seed))
        elif isinstance(v, str):
            out.append(bytes_hash(v.encode("utf8"), seed))
        elif isinstance(v, bool):
            out.append(hash_u64(int(v), seed))
        elif isinstance(v, float):
            out.append(hash_u64(float_bits(v), seed))
        else:
            out.append(hash_u64(int(v) & MASK, seed))
    return out


def row_hashes(table: pa.Table, on: list[str] | str, seed: int = 0) -> list[int]:
    on = [on] if isinstance(on, str) else on
    hs = value_hashes(table.column(on[0]), seed)
    for name in on[1:]:
        hs = [hash_combine(h, v) for h, v in zip(hs, value_hashes(table.column(name), seed))]
    return hs


def partition_of(h: int, n: int) -> int:
    return ((h >> 32) * n) >> 32


def partition_ids(table: pa.Table, on: list[str] | str, n: int, seed: int = 0) -> list[int]:
    return [partition_of(h, n) for h in row_hashes(table, on, seed)]


def sortable(table: pa.Table) -> list[tuple]:
    """Rows as tuples, sorted, for multiset comparison (NaN and None made comparable)."""
    def key(v):
        if v is None:
            return (0, "")
        if isinstance(v, float) and v != v:
            return (1, "nan")
        return (2, repr(v))
    cols = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in table.columns]
    rows = list(zip(*[c.to_pylist() for c in cols])) if cols else []
    return sorted(tuple(key(v) for v in r) for r in rows)


__all__ = ["fmix64", "hash_u64", "hash_combine", "null_hash", "float_bits", "bytes_hash", "value_hashes",
           "row_hashes", "partition_of", "partition_ids", "sortable"]
