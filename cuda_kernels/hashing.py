"""Row hashing, one source for the CPU (njit) and CUDA (cuda.jit) targets.

Every per-row function here is declared with :func:`gpuframe.kernels.per_row.per_row`:
callable from ``@njit`` and ``@cuda.jit`` code (and plain Python under the CUDA simulator), so
hashes and partition ids are bit-identical across devices. Constants are ``np.uint64`` globals so that numba keeps the arithmetic unsigned
(``uint64 * int`` types as int64 under njit, and ``>>`` would then shift in the sign bit).

The hash of a key (the contract other modules rely on)
------------------------------------------------------
The hash of a value depends only on its canonical value within its type family, so that two
tables hash-partitioned separately send equal keys to the same place:

* integers of every width, signed or unsigned, ``date32``, ``timestamp`` (any unit, the stored
  int64) and ``bool`` (0/1): ``hash_u64(uint64(int64(value)), seed)``; a ``uint64`` value is
  hashed by its bits, so int32 ``-1``, int64 ``-1`` and uint64 ``2**64 - 1`` hash the same;
* ``float32`` and ``float64``: the float64 bit pattern of the value (float32 widened exactly,
  ``-0.0`` -> ``+0.0``, every NaN -> ``0x7FF8000000000000``), then ``hash_u64``;
  :func:`f32_bits_to_f64_bits` and :func:`canonical_f64_bits` do this on the raw bits;
* ``string``, ``large_string`` and ``dictionary<int, string>``: :func:`hash_bytes` of the utf8
  bytes (the same string hashes the same whichever of the three types holds it): the running
  hash starts at ``hash_u64(length, seed)``; each little-endian 8-byte word ``w`` then the
  zero-padded tail word (when the length is not a multiple of 8) is mixed in with
  ``h = fmix64(h ^ w)``;
* null (any type): :func:`null_hash` ``= hash_u64(NULL_HASH, seed)``;
* a row of several key columns: ``h = hash(col0)``, then ``h = hash_combine(h, hash(colj))``
  for ``j = 1, 2, ...``; one key column: the row hash is that column's hash.

The same ``seed`` is used for every column. Callers that need type promotion between two sides
(int vs float is not canonical; int32 vs int64 and string vs large_string are) promote before
hashing. The partition id of a row hash is :func:`partition_of` (high 32 bits, see there).

Drivers
-------
Each column layout has one per-row *body* (:func:`fixed_row`, :func:`bool_row`,
:func:`string_row`, :func:`dictionary_row`: hash row ``i``, or combine it into ``out[i]``),
called from a CPU driver (a threaded ``@njit`` kernel over blocks of rows) and from a CUDA
kernel (one row per thread, built lazily by :func:`cuda_kernels`). The only difference between
the targets is how :func:`hash_bytes` reads the bytes (:mod:`gpuframe.kernels.loads`: one
unaligned 8-byte load on the CPU, a byte loop on the GPU), which does not change the value.
"""
from __future__ import annotations

import functools

import numpy as np
from .cpu_intrinsics import row_block

from .jit_cache import njit
from .kernel_set import KernelSet
from .loads import load_tail, load_word
from .loads import register_cuda_overloads as _register_cuda_loads
from .per_row import cpu, per_row

M1 = np.uint64(0xFF51AFD7ED558CCD)
M2 = np.uint64(0xC4CEB9FE1A85EC53)
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
S33 = np.uint64(33)
S32 = np.uint64(32)
S6 = np.uint64(6)
S2 = np.uint64(2)
ZERO = np.uint64(0)
ONE = np.uint64(1)
# Mixed with the seed to give the hash of a null key (every null of every type hashes the same).
NULL_HASH = np.uint64(0x5BD1E9955BD1E995)

# float bit layouts
F64_EXP = np.uint64(0x7FF0000000000000)
F64_MANT = np.uint64(0x000FFFFFFFFFFFFF)
F64_SIGN = np.uint64(0x8000000000000000)
CANONICAL_NAN_BITS = np.uint64(0x7FF8000000000000)
F32_MASK = np.uint64(0xFFFFFFFF)
F32_EXP_MASK = np.uint64(0xFF)
F32_MANT = np.uint64(0x7FFFFF)
F32_HIDDEN = np.uint64(0x800000)
F32_TO_F64_BIAS = np.uint64(1023 - 127)
S23 = np.uint64(23)
S29 = np.uint64(29)
S31 = np.uint64(31)
S52 = np.uint64(52)
S63 = np.uint64(63)

# ``kind`` of a fixed-width column for :func:`hash_fixed`: how its stored bits become a key.
KIND_INT = 0   # any integer, date32, timestamp (the values themselves)
KIND_F64 = 1   # float64 passed as its uint64 bits
KIND_F32 = 2   # float32 passed as its uint32 bits


# numba.cuda, bound by the first cuda_kernels() call: a module global, because the simulator
# runs kernels by swapping the numba.cuda module in their globals.
cuda = None

# --------------------------------------------------------------------------- per-row functions
@per_row
def fmix64(k):
    """MurmurHash3's 64-bit finaliser: a bijection with full avalanche."""
    k = np.uint64(k)
    k ^= k >> S33
    k *= M1
    k ^= k >> S33
    k *= M2
    k ^= k >> S33
    return k


@per_row
def hash_u64(x, seed):
    """Hash one 64-bit word (pass the bits of any fixed-width key as uint64)."""
    return fmix64(np.uint64(x) ^ (np.uint64(seed) * GOLDEN + GOLDEN))


@per_row
def hash_combine(h, v):
    """Mix hash ``v`` into running hash ``h`` (boost's combine, widened to 64 bits)."""
    h = np.uint64(h)
    v = np.uint64(v)
    return h ^ (v + GOLDEN + (h << S6) + (h >> S2))


@per_row
def null_hash(seed):
    """The hash of a null key of any type."""
    return hash_u64(NULL_HASH, seed)


@per_row
def partition_of(h, n):
    """Partition id in ``[0, n)`` of row hash ``h``: ``((h >> 32) * n) >> 32`` in uint64.

    Uses the HIGH 32 bits on purpose: the join kernels radix-partition on the low bits, so a
    local join after a distributed shuffle on these ids stays balanced. ``n < 2**32``.
    """
    return (((np.uint64(h) >> S32) * np.uint64(n)) >> S32)


@per_row
def canonical_f64_bits(bits):
    """Canonical float64 bits: ``-0.0`` -> ``+0.0``, every NaN -> ``0x7FF8000000000000``."""
    b = np.uint64(bits)
    if (b & F64_EXP) == F64_EXP and (b & F64_MANT) != ZERO:
        return CANONICAL_NAN_BITS
    if b == F64_SIGN:
        return ZERO
    return b


@per_row
def f32_bits_to_f64_bits(bits):
    """The canonical float64 bits of the float32 with bits ``bits`` (exact widening)."""
    b = np.uint64(bits) & F32_MASK
    sign = (b >> S31) << S63
    exp = (b >> S23) & F32_EXP_MASK
    mant = b & F32_MANT
    if exp == F32_EXP_MASK:
        if mant != ZERO:
            return CANONICAL_NAN_BITS
        return sign | F64_EXP
    if exp == ZERO:
        if mant == ZERO:
            return ZERO
        # subnormal float32: a normal float64; shift the mantissa up to its hidden bit
        exp64 = np.uint64(1023 - 126)
        while (mant & F32_HIDDEN) == ZERO:
            mant = mant << ONE
            exp64 = exp64 - ONE
        return sign | (exp64 << S52) | ((mant & F32_MANT) << S29)
    return sign | ((exp + F32_TO_F64_BIAS) << S52) | (mant << S29)


@per_row
def hash_fixed(x, kind, seed):
    """Hash one stored fixed-width value; ``kind`` is KIND_INT, KIND_F64 or KIND_F32."""
    if kind == KIND_F64:
        return hash_u64(canonical_f64_bits(x), seed)
    if kind == KIND_F32:
        return hash_u64(f32_bits_to_f64_bits(x), seed)
    return hash_u64(np.uint64(x), seed)


@per_row
def bit_is_set(bitmap, i):
    """Bit ``i`` of an LSB-first (Arrow) bitmap, as 0 or 1."""
    return (np.int64(bitmap[i >> 3]) >> (i & 7)) & 1


@per_row
def hash_bytes(chars, start, end, seed):
    """Hash of the bytes ``chars[start:end]`` (the utf8 of one string): ``h = hash_u64(length,
    seed)``, then ``h = fmix64(h ^ w)`` for every little-endian 8-byte word and for the
    zero-padded tail. The join hashes its string keys with it too (its own seed)."""
    h = hash_u64(np.uint64(end - start), seed)
    p = start
    while p + 8 <= end:
        h = fmix64(h ^ load_word(chars, p))
        p += 8
    if p < end:
        h = fmix64(h ^ load_tail(chars, p, end))
    return h


@per_row
def store_hash(out, i, h, combine):
    """``out[i] = h`` for the first key column, ``hash_combine(out[i], h)`` for later ones."""
    if combine:
        out[i] = hash_combine(out[i], h)
    else:
        out[i] = h


# --------------------------------------------------------------------------- per-row bodies
# validity: the column's bitmap (absolute: bit ``vbit + i`` is row i); ``has_valid`` False when
# the column has no nulls (the array is then empty).  out: uint64 row hashes, combined into when
# ``combine``.
@per_row
def fixed_row(values, kind, validity, has_valid, vbit, seed, combine, out, i):
    if has_valid and bit_is_set(validity, vbit + i) == 0:
        h = null_hash(seed)
    else:
        h = hash_fixed(values[i], kind, seed)
    store_hash(out, i, h, combine)


@per_row
def bool_row(bits, dbit, validity, has_valid, vbit, seed, combine, out, i):
    if has_valid and bit_is_set(validity, vbit + i) == 0:
        h = null_hash(seed)
    else:
        h = hash_u64(np.uint64(bit_is_set(bits, dbit + i)), seed)
    store_hash(out, i, h, combine)


@per_row
def string_row(offsets, chars, validity, has_valid, vbit, seed, combine, out, i):
    if has_valid and bit_is_set(validity, vbit + i) == 0:
        h = null_hash(seed)
    else:
        h = hash_bytes(chars, np.int64(offsets[i]), np.int64(offsets[i + 1]), seed)
    store_hash(out, i, h, combine)


@per_row
def dictionary_row(indices, dict_hashes, validity, has_valid, vbit, seed, combine, out, i):
    if has_valid and bit_is_set(validity, vbit + i) == 0:
        h = null_hash(seed)
    else:
        h = dict_hashes[np.int64(indices[i])]
    store_hash(out, i, h, combine)


# --------------------------------------------------------------------------- CPU drivers
# validity: an empty array when the column has no nulls. The bodies are inlined (per_row.cpu).
_fixed_row, _bool_row, _string_row, _dictionary_row = (cpu(fixed_row), cpu(bool_row), cpu(string_row),
                                                       cpu(dictionary_row))


# Threaded per-row kernels (``gpuframe.backends.cpu._target.run_rows``): each claims blocks of
# rows through ``cursor``; as numba ``prange`` loops they compiled about 2 s longer a signature.
_NO_NRT = dict(cache=True, nogil=True, _nrt=False)    # see cpu_intrinsics.claim_one


@njit(**_NO_NRT)
def hash_fixed_column(values, kind, validity, vbit, seed, combine, out, cursor):
    has_valid = validity.shape[0] > 0
    n = values.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        for i in range(lo, hi):
            _fixed_row(values, kind, validity, has_valid, vbit, seed, combine, out, i)
        lo, hi = row_block(cursor, n)


@njit(**_NO_NRT)
def hash_bool_column(bits, dbit, n, validity, vbit, seed, combine, out, cursor):
    has_valid = validity.shape[0] > 0
    lo, hi = row_block(cursor, n)
    while lo < n:
        for i in range(lo, hi):
            _bool_row(bits, dbit, validity, has_valid, vbit, seed, combine, out, i)
        lo, hi = row_block(cursor, n)


@njit(**_NO_NRT)
def hash_string_column(offsets, chars, validity, vbit, seed, combine, out, cursor):
    has_valid = validity.shape[0] > 0
    n = offsets.shape[0] - 1
    lo, hi = row_block(cursor, n)
    while lo < n:
        for i in range(lo, hi):
            _string_row(offsets, chars, validity, has_valid, vbit, seed, combine, out, i)
        lo, hi = row_block(cursor, n)


@njit(**_NO_NRT)
def hash_dictionary_column(indices, dict_hashes, validity, vbit, seed, combine, out, cursor):
    has_valid = validity.shape[0] > 0
    n = indices.shape[0]
    lo, hi = row_block(cursor, n)
    while lo < n:
        for i in range(lo, hi):
            _dictionary_row(indices, dict_hashes, validity, has_valid, vbit, seed, combine, out, i)
        lo, hi = row_block(cursor, n)


# --------------------------------------------------------------------------- CUDA kernels
@functools.lru_cache(maxsize=None)
def cuda_kernels() -> KernelSet:
    """The CUDA hashing kernels, one row per thread (built on first use; numba caches each
    signature's compile): ``fixed``, ``bool``, ``string``, ``dictionary``."""
    global cuda
    from numba import cuda

    _register_cuda_loads()

    @cuda.jit
    def fixed(values, kind, validity, has_valid, vbit, seed, combine, out):
        i = cuda.grid(1)
        if i < values.shape[0]:
            fixed_row(values, kind, validity, has_valid, vbit, seed, combine, out, i)

    @cuda.jit
    def boolean(bits, dbit, n, validity, has_valid, vbit, seed, combine, out):
        i = cuda.grid(1)
        if i < n:
            bool_row(bits, dbit, validity, has_valid, vbit, seed, combine, out, i)

    @cuda.jit
    def string(offsets, chars, validity, has_valid, vbit, seed, combine, out):
        i = cuda.grid(1)
        if i < offsets.shape[0] - 1:
            string_row(offsets, chars, validity, has_valid, vbit, seed, combine, out, i)

    @cuda.jit
    def dictionary(indices, dict_hashes, validity, has_valid, vbit, seed, combine, out):
        i = cuda.grid(1)
        if i < indices.shape[0]:
            dictionary_row(indices, dict_hashes, validity, has_valid, vbit, seed, combine, out, i)

    return KernelSet(fixed=fixed, bool=boolean, string=string, dictionary=dictionary)
