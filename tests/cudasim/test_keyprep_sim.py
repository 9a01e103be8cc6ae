"""The CUDA backend's key preparation of dictionary keys, several string keys and uint64 joined
with a signed key (:mod:`gpuframe.kernels.keyprep`, issue 10 item 2) makes what the host path
makes: the same key words, null-flag words, byte spans, bytes and validity, array for array
(so the same row hashes and matches), and the same merged string key.

The host path (``_keys._general_side``, ``_keys._fast_side`` without the backend's kernels,
``merged_key_host`` on the CPU) is what the CPU backend runs: the oracle.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import gpuframe
from gpuframe.backends import _keys
from gpuframe.backends.cuda import join as cuda_join
from gpuframe.backends.cuda._target import widen
from gpuframe.core import memory
from gpuframe.core.device import CPU
from gpuframe.ops.keys import resolve_key_pairs

N = 50


def _dict(n, seed, index_type=pa.int32(), value_type=pa.string(), nulls=True, null_entry=True):
    rng = np.random.default_rng(seed)
    entries = ["", "a", "ß", "日本", "key-7", "abcdefghij"] + ([None] if null_entry else [])
    mask = (rng.random(n) < 0.15) if nulls else None
    idx = pa.array(rng.integers(0, len(entries), n), index_type, mask=mask)
    return pa.DictionaryArray.from_arrays(idx, pa.array(entries, value_type))


def _empty_dict(n):
    """Every index null, into an empty dictionary."""
    return pa.DictionaryArray.from_arrays(pa.nulls(n, pa.int32()), pa.array([], pa.string()))


def _strs(n, seed, t=pa.string(), nulls=True):
    rng = np.random.default_rng(seed)
    words = ["", "a", "ß", "日本", "key-7", "abcdefghij", "zz"]
    return pa.array([words[c] for c in rng.integers(0, len(words), n)], t,
                    mask=(rng.random(n) < 0.15) if nulls else None)


def _ints(n, seed, t, values, nulls=True):
    rng = np.random.default_rng(seed)
    return pa.array(rng.choice(np.array(values, t.to_pandas_dtype()), n), t,
                    mask=(rng.random(n) < 0.15) if nulls else None)


U64 = [0, 1, 5, 2**63, 2**63 + 5, 2**64 - 1]
I64 = [0, 1, 5, -1, -5, -(2**63)]

CASES = {
    "dictionary": lambda: ({"k": _dict(N, 1)}, {"k": _strs(N // 2, 2, pa.large_string())}),
    "dictionary_null_entries_only": lambda: ({"k": _dict(N, 3, nulls=False)}, {"k": _dict(N // 2, 4, pa.int8())}),
    "dictionary_no_nulls": lambda: ({"k": _dict(N, 5, pa.int16(), pa.large_string(), nulls=False, null_entry=False)},
                                    {"k": _strs(N // 2, 6, nulls=False)}),
    "dictionary_empty": lambda: ({"k": _empty_dict(N)},
                                 {"k": _strs(N // 2, 8)}),
    "two_strings": lambda: ({"k": _strs(N, 9), "k2": _dict(N, 10)},
                            {"k": _dict(N // 2, 11, pa.int64()), "k2": _strs(N // 2, 12, pa.large_string())}),
    "three_strings_and_int": lambda: ({"k": _strs(N, 13), "k2": _ints(N, 14, pa.int32(), range(3)),
                                       "k3": _strs(N, 15, nulls=False), "k4": _dict(N, 16)},
                                      {"k": _strs(N // 2, 17), "k2": _ints(N // 2, 18, pa.int8(), range(3)),
                                       "k3": _dict(N // 2, 19, nulls=False), "k4": _strs(N // 2, 20)}),
    "uint64_int64": lambda: ({"k": _ints(N, 21, pa.uint64(), U64)}, {"k": _ints(N // 2, 22, pa.int64(), I64)}),
    "int8_uint64": lambda: ({"k": _ints(N, 23, pa.int8(), [0, 1, 5, -1, -128])},
                            {"k": _ints(N // 2, 24, pa.uint64(), U64)}),
    "uint64_int16_multi": lambda: ({"k": _ints(N, 25, pa.uint64(), U64), "k2": _strs(N, 26)},
                                   {"k": _ints(N // 2, 27, pa.int16(), [0, 1, 5, -1]), "k2": _strs(N // 2, 28)}),
}


def _sides(case):
    lcols, rcols = CASES[case]()
    left, right = gpuframe.from_arrow(pa.table(lcols)), gpuframe.from_arrow(pa.table(rcols))
    on = list(lcols)
    pairs = resolve_key_pairs(left, right, on, on)
    return left, right, on, pairs


def _host(a):
    return np.asarray(memory.to_host(a))


def _valid(sk, n):
    v = _host(sk.valid)
    return np.ones(n, np.uint8) if v.shape[0] == 0 else v


def _same_side_keys(dev_sk, host_sk, what):
    n = host_sk.n
    assert dev_sk.n == n and dev_sk.verify == host_sk.verify and dev_sk.kmode == host_sk.kmode, what
    np.testing.assert_array_equal(_valid(dev_sk, n), _valid(host_sk, n), err_msg=f"{what}: validity")
    if not host_sk.verify:
        np.testing.assert_array_equal(_host(dev_sk.keys), _host(host_sk.keys), err_msg=f"{what}: key words")
        return
    np.testing.assert_array_equal(_host(dev_sk.words), _host(host_sk.words), err_msg=f"{what}: words")
    np.testing.assert_array_equal(_host(dev_sk.starts), _host(host_sk.starts), err_msg=f"{what}: starts")
    np.testing.assert_array_equal(_host(dev_sk.ends), _host(host_sk.ends), err_msg=f"{what}: ends")
    hch = _host(host_sk.chars)
    np.testing.assert_array_equal(_host(dev_sk.chars)[:hch.shape[0]], hch, err_msg=f"{what}: bytes")


@pytest.mark.parametrize("nulls_equal", [False, True], ids=["nulls", "nulls_equal"])
@pytest.mark.parametrize("case", list(CASES))
def test_device_key_preparation_is_the_host_paths(cuda_device, case, nulls_equal):
    left, right, on, pairs = _sides(case)
    lh, rh = [left[c] for c in on], [right[c] for c in on]
    # the host path: prepare_keys without the backend's kernels
    want = _keys.prepare_keys(lh, rh, pairs, nulls_equal, CPU)
    ld, rd = [left.to(cuda_device)[c] for c in on], [right.to(cuda_device)[c] for c in on]
    with memory.count_transfers() as moved:
        got = _keys.prepare_keys(ld, rd, pairs, nulls_equal, cuda_device, widen, cuda_join._key_word,
                                 cuda_join._string_span)
    assert moved.bytes == 0, f"{case}: key preparation moved {moved}"
    for side, g, w in zip(("left", "right"), got, want):
        _same_side_keys(g, w, f"{case} ({side}, nulls_equal={nulls_equal})")


@pytest.mark.parametrize("case", ["dictionary", "dictionary_null_entries_only", "dictionary_no_nulls",
                                  "dictionary_empty", "two_strings"])
def test_merged_string_key_is_the_host_paths(cuda_device, case):
    from gpuframe.backends.cuda.merged_key import merged_string_key

    left, right, on, pairs = _sides(case)
    k = on[-1] if case == "two_strings" else on[0]
    pair = pairs[on.index(k)]
    rng = np.random.default_rng(0)
    m = 70
    # one side per row (where a join has both, their keys are equal and either side's will do)
    li = rng.integers(-1, len(left), m)
    ri = np.where(li < 0, rng.integers(0, len(right), m), -1)
    ri[:3] = -1
    li[:3] = -1   # rows with neither side: null on both paths
    want = _keys.merged_key_host(left[k], right[k], pair, pair.out_type, li, ri).to_arrow()
    ld, rd = left.to(cuda_device)[k], right.to(cuda_device)[k]
    lid, rid = memory.to_device(li, cuda_device), memory.to_device(ri, cuda_device)
    with memory.count_transfers() as moved:
        got = merged_string_key(ld, rd, pair.out_type, lid, rid)
    assert moved.h2d_bytes == 0 and moved.d2h_bytes <= 16, f"{case}: the merged key moved {moved}"
    got = got.to("cpu").to_arrow()
    assert got.type == want.type and got.null_count == want.null_count
    assert got.to_pylist() == want.to_pylist()


def test_merged_string_key_of_no_rows(cuda_device):
    from gpuframe.backends.cuda.merged_key import merged_string_key

    left, right, on, pairs = _sides("dictionary")
    e = memory.to_device(np.zeros(0, np.int64), cuda_device)
    got = merged_string_key(left.to(cuda_device)["k"], right.to(cuda_device)["k"], pairs[0].out_type, e, e)
    assert got.to("cpu").to_arrow().to_pylist() == []
