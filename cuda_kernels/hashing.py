"""Per-row hash functions, one source for the CPU (njit) and CUDA (cuda.jit) targets.

Every function here is ``register_jitable``: callable from ``@njit`` and ``@cuda.jit`` code, so
partition ids and join results are bit-identical across devices. Constants are ``np.uint64``
globals so that numba keeps the arithmetic unsigned (``uint64 * int`` types as int64 under
njit, and ``>>`` would then shift in the sign bit).
"""
from __future__ import annotations

import numpy as np
from numba.extending import register_jitable

M1 = np.uint64(0xFF51AFD7ED558CCD)
M2 = np.uint64(0xC4CEB9FE1A85EC53)
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
S33 = np.uint64(33)
S6 = np.uint64(6)
S2 = np.uint64(2)
ZERO = np.uint64(0)
# Hash of a null key (nulls_equal=True places all nulls together) and of a NaN.
NULL_HASH = np.uint64(0x5BD1E9955BD1E995)


@register_jitable
def fmix64(k):
    """MurmurHash3's 64-bit finaliser: a bijection with full avalanche."""
    k = np.uint64(k)
    k ^= k >> S33
    k *= M1
    k ^= k >> S33
    k *= M2
    k ^= k >> S33
    return k


@register_jitable
def hash_u64(x, seed):
    """Hash one 64-bit word (pass the bits of any fixed-width key as uint64)."""
    return fmix64(np.uint64(x) ^ (np.uint64(seed) * GOLDEN + GOLDEN))


@register_jitable
def hash_combine(h, v):
    """Mix hash ``v`` into running hash ``h`` (boost's combine, widened to 64 bits)."""
    h = np.uint64(h)
    v = np.uint64(v)
    return h ^ (v + GOLDEN + (h << S6) + (h >> S2))
