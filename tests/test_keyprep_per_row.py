"""The per-row functions of the CUDA key preparation (:mod:`gpuframe.kernels.keys`:
``string_span_at_row``, ``dict_span_row``, ``range_valid_row``, ``range_clear_row``,
``coalesced_key_span``) are one source for both targets, as ``tests/test_one_source.py`` checks
for the others: each compiles with ``njit`` (and as its inlined CPU copy) and for CUDA
(``compile_ptx``, sm_90, no GPU needed), and the compiled CPU copy gives what plain Python (the
simulator) gives."""
from __future__ import annotations

import numpy as np
import pytest
from numba import njit, types

from gpuframe.kernels import keys
from gpuframe.kernels.per_row import cpu


def _arr(dt):
    return types.Array(dt, 1, "C")


u64, i64, u8, i32, b1 = types.uint64, types.int64, types.uint8, types.int32, types.boolean
U8, I64, U64 = _arr(u8), _arr(i64), _arr(u64)

SIGS = {
    "string_span_at_row": (_arr(i32), i64, U8, b1, I64, I64, U64, b1, U8, b1, i64),
    "dict_span_row": (_arr(types.int8), U8, b1, _arr(i32), U8, b1, i64, I64, I64, U64, b1, U8, b1, i64),
    "range_valid_row": (I64, U8, b1, U8, i64),
    "range_clear_row": (I64, U8, b1, U8, i64),
    "coalesced_key_span": (I64, I64, U8, b1, I64, I64, I64, U8, b1, I64, i64),
}


def _wrapper(fn, nargs):
    params = ", ".join(f"a{i}" for i in range(nargs))
    ns = {"fn": fn}
    exec(f"def wrapper({params}):\n    return fn({params})\n", ns)
    return njit(ns["wrapper"])


@pytest.mark.parametrize("name", list(SIGS))
def test_compiles_for_the_cpu(name):
    sig = SIGS[name]
    for fn in (getattr(keys, name), cpu(getattr(keys, name))):
        w = _wrapper(fn, len(sig))
        w.compile(sig)
        assert w.signatures


@pytest.fixture(scope="module")
def compile_cuda():
    from numba import cuda
    import numba.cuda.dispatcher as dispatcher

    from gpuframe.kernels.compat import numba_cuda_compat

    numba_cuda_compat()
    real = dispatcher.get_current_device
    sm90 = type("FakeSM90", (), {"compute_capability": (9, 0)})()
    dispatcher.get_current_device = lambda: sm90  # compile without a driver (no GPU here)
    try:
        yield lambda fn, sig: cuda.compile_ptx(fn, sig, device=True, cc=(9, 0))[0]
    finally:
        dispatcher.get_current_device = real


@pytest.mark.parametrize("name", list(SIGS))
def test_compiles_for_cuda(name, compile_cuda):
    assert ".func" in compile_cuda(getattr(keys, name), SIGS[name])


def _rows(fn, n, *args):
    for i in range(n):
        fn(*args, i)


def test_cpu_copies_equal_python():
    rng = np.random.default_rng(4)
    n = 40
    doffs = np.array([0, 0, 1, 3, 3, 9], np.int32)          # entries "", 1, 2, "" (null), 6 bytes
    dvalid = np.array([1, 1, 1, 0, 1], np.uint8)
    idx = rng.integers(0, 5, n).astype(np.int8)
    ivalid = (rng.random(n) > 0.2).astype(np.uint8)
    offs = np.cumsum(np.concatenate([[0], rng.integers(0, 5, n)])).astype(np.int32)
    words = rng.choice(np.array([0, 5, -1, -(2**63), 2**62], np.int64), n)
    for fn_name, make in (
            ("dict_span_row", lambda: (idx, ivalid, True, doffs, dvalid, True, np.int64(7))),
            ("string_span_at_row", lambda: (offs, np.int64(11), ivalid, True))):
        results = []
        for f in (getattr(keys, fn_name), _wrapper(cpu(getattr(keys, fn_name)), len(SIGS[fn_name]))):
            for flagged in (False, True):
                st, en = np.full(n, -9, np.int64), np.full(n, -9, np.int64)
                flag, keep = np.zeros(n, np.uint64), np.ones(n, np.uint8)
                _rows(f, n, *make(), st, en, flag, flagged, keep, not flagged)
                results.append((st, en, flag, keep))
        for a, b in zip(results[:2], results[2:]):
            for x, y in zip(a, b):
                np.testing.assert_array_equal(x, y, err_msg=fn_name)
    # the dictionary's spans: entry idx, 7 added; null index or null entry: empty at 7
    st, en = np.empty(n, np.int64), np.empty(n, np.int64)
    keep = np.ones(n, np.uint8)
    _rows(keys.dict_span_row, n, idx, ivalid, True, doffs, dvalid, True, np.int64(7), st, en,
          np.zeros(1, np.uint64), False, keep, True)
    null = (ivalid == 0) | (dvalid[np.where(ivalid == 0, 0, idx)] == 0)
    np.testing.assert_array_equal(keep, (~null).astype(np.uint8))
    np.testing.assert_array_equal(st, np.where(null, 7, 7 + doffs[idx.astype(np.int64)]))
    np.testing.assert_array_equal(en, np.where(null, 7, 7 + doffs[idx.astype(np.int64) + 1]))
    for f in (keys.range_valid_row, _wrapper(cpu(keys.range_valid_row), 5)):
        out = np.full(n, 9, np.uint8)
        _rows(f, n, words, ivalid, True, out)
        np.testing.assert_array_equal(out, ((words >= 0) & (ivalid != 0)).astype(np.uint8))
    for f in (keys.range_clear_row, _wrapper(cpu(keys.range_clear_row), 5)):
        keep = np.ones(n, np.uint8)
        _rows(f, n, words, ivalid, False, keep)
        np.testing.assert_array_equal(keep, (words >= 0).astype(np.uint8))
        # a null row's stored value is not range-checked (nulls_equal must still match it)
        keep = np.ones(n, np.uint8)
        _rows(f, n, words, ivalid, True, keep)
        np.testing.assert_array_equal(keep, ((words >= 0) | (ivalid == 0)).astype(np.uint8))
