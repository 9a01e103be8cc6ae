"""CUDA operations keep their rows on the device: the bytes they copy between host and device
(counted by :func:`gpuframe.core.memory.count_transfers`) are sizes and scalars, the same for a
small and a four times larger input.

Run under numba's simulator (NUMBA_ENABLE_CUDASIM=1), where device arrays are numba's
FakeCUDAArrays and every copy still goes through :mod:`gpuframe.core.memory`. Every key type is
listed: fixed-width, bool, nullable, several columns, ``nulls_equal``, strings, dictionary
strings (null indices and null dictionary entries), several string keys and uint64 joined with
int64; the last ones' answers are checked against the CPU backend's too.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import gpuframe
import gpuframe.ops.hashing
from gpuframe.core import memory
from gpuframe.ops.join import HOWS

from ..common.data import random_table

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")

# rows of the left side (the right side has half): 96 more rows at the larger size, so that even
# one byte a row moved shows above GROWTH. The simulator's time grows with the rows and the
# output, and O(1) traffic shows at these sizes as well as at larger ones (the CI lane's budget).
SIZES = (32, 128)
SLOW_SIZES = (32, 128)   # bool keys (two values: many-to-many outputs), string and multi-column keys
LIMIT = 4096             # bytes an operation may move at either size
GROWTH = 64              # bytes it may move more at the larger size (a data-dependent scalar or two)

FIXED_KEYS = {"int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(), "int64": pa.int64(),
              "uint64": pa.uint64(), "float32": pa.float32(), "float64": pa.float64(), "bool": pa.bool_(),
              "date32": pa.date32(), "timestamp": pa.timestamp("us")}
# every how for these; inner and outer (probe and both sides' unmatched rows) for the rest
ALL_HOWS = {"int64"}
# one key type per device path (narrow integer widened, 64-bit zero-copy, uint64, float
# canonicalised, bool bits): the simulator is slow, and the types within a path share
# its code (the CI lane's time budget)
JOIN_KEYS = ["int8", "int64", "uint64", "float32", "bool"]


def _tables(key: str, n: int, nulls: bool, device):
    t = FIXED_KEYS[key]
    left = random_table(n, {"k": t, "a": pa.int64(), "s": pa.int16()}, nulls=nulls, seed=1, cardinality=40)
    right = random_table(n // 2, {"k": t, "b": pa.float64(), "c": pa.bool_()}, nulls=nulls, seed=5,
                         cardinality=40)
    return gpuframe.from_arrow(left).to(device), gpuframe.from_arrow(right).to(device)


def _moved(fn) -> memory.TransferCount:
    with memory.count_transfers() as t:
        fn()
    return t


def _sizes(key: str = "") -> tuple[int, int]:
    return SLOW_SIZES if key in ("bool", "string", "multi") else SIZES


def _assert_o1(small: memory.TransferCount, large: memory.TransferCount, what: str, sizes=SIZES) -> None:
    at = f"{what}: {small} at {sizes[0]} rows, {large} at {sizes[1]}"
    assert large.bytes <= LIMIT and small.bytes <= LIMIT, at
    assert large.bytes - small.bytes <= GROWTH, at


def test_counter_counts_both_ways(cuda_device):
    host = np.arange(100, dtype=np.int64)
    with memory.count_transfers() as t:
        dev = memory.to_device(host, cuda_device)
        with memory.count_transfers() as inner:
            back = memory.to_host(dev)
        memory.to_host(host)                  # already on the host: no copy
        memory.zeros(10, np.int64, cuda_device)   # an allocation, not a copy
    assert (t.h2d_calls, t.h2d_bytes, t.d2h_calls, t.d2h_bytes) == (1, 800, 1, 800)
    assert (inner.h2d_calls, inner.d2h_calls, inner.d2h_bytes) == (0, 1, 800)
    assert list(back) == list(host)


@pytest.mark.parametrize("nulls", [False, True], ids=["no_nulls", "nulls"])
@pytest.mark.parametrize("key", JOIN_KEYS)
def test_join_ops_move_o1_bytes(cuda_device, key, nulls):
    hows = HOWS if key in ALL_HOWS else ("inner", "outer")
    sizes = _sizes(key)
    sides = {n: _tables(key, n, nulls, cuda_device) for n in sizes}
    for how in hows:
        for op in (gpuframe.merge, gpuframe.join_indices, gpuframe.join_size):
            if op is not gpuframe.merge and how not in ("inner", "outer"):
                continue     # merge runs join_indices itself
            got = [_moved(lambda: op(*sides[n], on="k", how=how)) for n in sizes]
            _assert_o1(*got, f"{op.__name__}(how={how!r}) on {key} keys", sizes)


@pytest.mark.parametrize("key", ["int8", "int64", "bool"])
def test_nulls_equal_with_null_keys_moves_o1_bytes(cuda_device, key):
    # null keys that match each other: the general path (row hash + words), on the device
    hows = HOWS if key in ALL_HOWS else ("inner", "outer")
    sizes = _sizes(key)
    sides = {n: _tables(key, n, True, cuda_device) for n in sizes}
    for how in hows:
        for op in (gpuframe.merge, gpuframe.join_size):
            got = [_moved(lambda: op(*sides[n], on="k", how=how, nulls_equal=True)) for n in sizes]
            _assert_o1(*got, f"{op.__name__}(how={how!r}, nulls_equal=True) on {key} keys", sizes)


def _multi_tables(n: int, nulls: bool, device):
    lt = {"k1": pa.int32(), "k2": pa.float64(), "k3": pa.bool_(), "k4": pa.date32(), "a": pa.int64()}
    rt = {"k1": pa.int64(), "k2": pa.float32(), "k3": pa.bool_(), "k4": pa.date32(), "b": pa.int8()}
    left = random_table(n, lt, nulls=nulls, seed=1, cardinality=3)
    right = random_table(n // 2, rt, nulls=nulls, seed=7, cardinality=3)
    return gpuframe.from_arrow(left).to(device), gpuframe.from_arrow(right).to(device)


@pytest.mark.parametrize("nulls,nulls_equal", [(False, False), (True, False), (True, True)],
                         ids=["no_nulls", "nulls", "nulls_equal"])
def test_multi_column_keys_move_o1_bytes(cuda_device, nulls, nulls_equal):
    on = ["k1", "k2", "k3", "k4"]
    sizes = _sizes("multi")
    sides = {n: _multi_tables(n, nulls, cuda_device) for n in sizes}
    for how in HOWS:
        # join_indices for the two join types whose gather maps differ in kind (as the tests above)
        for op in (gpuframe.merge, gpuframe.join_indices):
            if op is not gpuframe.merge and how not in ("inner", "outer"):
                continue
            got = [_moved(lambda: op(*sides[n], on=on, how=how, nulls_equal=nulls_equal)) for n in sizes]
            _assert_o1(*got, f"{op.__name__}(how={how!r}, nulls_equal={nulls_equal}) on four key columns", sizes)
    got = [_moved(lambda: gpuframe.ops.hashing.hash_rows(sides[n][0], on)) for n in sizes]
    _assert_o1(*got, "hash_rows of four key columns", sizes)


@pytest.mark.parametrize("key", ["int64", "bool"])
def test_nulls_equal_without_null_keys_moves_o1_bytes(cuda_device, key):
    # nulls_equal only changes the key path where a key is null
    sizes = _sizes(key)
    sides = {n: _tables(key, n, False, cuda_device) for n in sizes}
    got = [_moved(lambda: gpuframe.merge(*sides[n], on="k", how="outer", nulls_equal=True)) for n in sizes]
    _assert_o1(*got, f"merge(nulls_equal=True) on {key} keys without nulls", sizes)


@pytest.mark.parametrize("nulls", [False, True], ids=["no_nulls", "nulls"])
@pytest.mark.parametrize("key", ["int8", "bool"])
def test_take_moves_o1_bytes(cuda_device, key, nulls):
    got = []
    for n in SIZES:
        left, _ = _tables(key, n, nulls, cuda_device)
        idx = memory.to_device(np.random.default_rng(0).integers(0, n, n), cuda_device)
        got.append(_moved(lambda: gpuframe.take(left, idx)))
    _assert_o1(*got, f"take of {key} and payload columns")


@pytest.mark.parametrize("nulls", [False, True], ids=["no_nulls", "nulls"])
@pytest.mark.parametrize("key", ["int64", "bool"])
def test_hash_rows_and_partition_move_o1_bytes(cuda_device, key, nulls):
    from gpuframe.ops.hashing import hash_rows

    tables = {n: _tables(key, n, nulls, cuda_device)[0] for n in SIZES}
    got = [_moved(lambda: hash_rows(tables[n], ["k", "s"])) for n in SIZES]
    _assert_o1(*got, f"hash_rows of {key} keys")
    # the partition offsets (num_partitions + 1 int64) come back to the host by contract
    got = [_moved(lambda: gpuframe.hash_partition(tables[n], ["k", "s"], 4)) for n in SIZES]
    _assert_o1(*got, f"hash_partition of {key} keys")


def _string_tables(n: int, nulls: bool, device, fixed_too: bool):
    lt = {"k": pa.string(), "a": pa.int64()}
    rt = {"k": pa.large_string(), "b": pa.float32()}
    if fixed_too:
        lt["k2"], rt["k2"] = pa.int32(), pa.int32()
    left = random_table(n, lt, nulls=nulls, seed=2, cardinality=6)
    right = random_table(n // 2, rt, nulls=nulls, seed=9, cardinality=6)
    return gpuframe.from_arrow(left).to(device), gpuframe.from_arrow(right).to(device)


@pytest.mark.parametrize("nulls,nulls_equal", [(False, False), (True, False), (True, True)],
                         ids=["no_nulls", "nulls", "nulls_equal"])
@pytest.mark.parametrize("fixed_too", [False, True], ids=["string", "string_and_int32"])
def test_string_keys_move_o1_bytes(cuda_device, fixed_too, nulls, nulls_equal):
    on = ["k", "k2"] if fixed_too else ["k"]
    sizes = _sizes("string")
    sides = {n: _string_tables(n, nulls, cuda_device, fixed_too) for n in sizes}
    for how in HOWS:
        for op in (gpuframe.merge, gpuframe.join_indices, gpuframe.join_size):
            if op is not gpuframe.merge and how not in ("inner", "outer"):
                continue
            got = [_moved(lambda: op(*sides[n], on=on, how=how, nulls_equal=nulls_equal)) for n in sizes]
            _assert_o1(*got, f"{op.__name__}(how={how!r}, nulls_equal={nulls_equal}) on {on}", sizes)


# --------------------------------------------------------------------------- issue 10, item 2
# key types whose preparation (and merged key) the CUDA backend once made on the host
def _dict_strings(n: int, seed: int, index_type, value_type, nulls: bool) -> pa.Array:
    """Dictionary strings: an empty string and multi-byte entries, and with ``nulls`` null
    indices and a null dictionary entry (a null key too) that some rows point at."""
    rng = np.random.default_rng(seed)
    entries = ["", "a", "ß", "日本", "key-7", "abcdefghij"] + ([None] if nulls else [])
    idx = pa.array(rng.integers(0, len(entries), n), index_type, mask=(rng.random(n) < 0.1) if nulls else None)
    return pa.DictionaryArray.from_arrays(idx, pa.array(entries, value_type))


def _strings(n: int, seed: int, t, nulls: bool) -> pa.Array:
    rng = np.random.default_rng(seed)
    words = ["", "a", "ß", "日本", "key-7", "abcdefghij", "zz"]
    return pa.array([words[c] for c in rng.integers(0, len(words), n)], t,
                    mask=(rng.random(n) < 0.1) if nulls else None)


def _ints(n: int, seed: int, t, values, nulls: bool) -> pa.Array:
    rng = np.random.default_rng(seed)
    return pa.array(rng.choice(np.array(values, t.to_pandas_dtype()), n), t,
                    mask=(rng.random(n) < 0.1) if nulls else None)


_U64 = [0, 1, 5, 7, 2**63, 2**63 + 5, 2**64 - 1]     # half of them no int64 can equal
_I64 = [0, 1, 5, 7, -1, -5, -(2**63)]                 # negatives: no uint64 can equal


def _item2_arrays(case: str, n: int, nulls: bool) -> tuple[dict, dict, dict]:
    """(left columns, right columns, the join's key arguments) of one case, ``n`` left rows."""
    m = n // 2
    if case == "dictionary":              # dictionary<int32, string> with string
        return ({"k": _dict_strings(n, 1, pa.int32(), pa.string(), nulls)},
                {"k": _strings(m, 2, pa.large_string(), nulls)}, {"on": "k"})
    if case == "dictionary_both":         # dictionary<int8, large_string> with dictionary<int16, string>
        return ({"k": _dict_strings(n, 3, pa.int8(), pa.large_string(), nulls)},
                {"k": _dict_strings(m, 4, pa.int16(), pa.string(), nulls)}, {"on": "k"})
    if case == "two_strings":             # a string and a dictionary key on each side
        return ({"k": _strings(n, 5, pa.string(), nulls), "k2": _dict_strings(n, 6, pa.int32(), pa.string(), nulls)},
                {"k": _dict_strings(m, 7, pa.int32(), pa.string(), nulls), "k2": _strings(m, 8, pa.large_string(), nulls)},
                {"on": ["k", "k2"]})
    if case == "dictionary_and_int":      # a dictionary string key and an integer key
        return ({"k": _dict_strings(n, 9, pa.int32(), pa.string(), nulls), "k2": _ints(n, 10, pa.int32(), range(3), nulls)},
                {"k": _strings(m, 11, pa.string(), nulls), "k2": _ints(m, 12, pa.int64(), range(3), nulls)},
                {"on": ["k", "k2"]})
    if case == "uint64_int64":            # values >= 2**63 on the uint64 side, negatives on the other
        # left_on/right_on: an outer merge keeps both key columns (no type holds every value of both)
        return ({"k": _ints(n, 13, pa.uint64(), _U64, nulls)}, {"rk": _ints(m, 14, pa.int64(), _I64, nulls)},
                {"left_on": "k", "right_on": "rk"})
    if case == "uint64_int8_multi":       # range checks on the general path (with a second key)
        return ({"k": _ints(n, 15, pa.uint64(), _U64, nulls), "k2": _ints(n, 16, pa.int16(), range(2), nulls)},
                {"rk": _ints(m, 17, pa.int8(), [0, 1, 5, 7, -1, -5, -128], nulls), "rk2": _ints(m, 18, pa.int64(), range(2), nulls)},
                {"left_on": ["k", "k2"], "right_on": ["rk", "rk2"]})
    raise ValueError(case)


def _item2_tables(case: str, n: int, nulls: bool):
    lcols, rcols, on = _item2_arrays(case, n, nulls)
    left = pa.table({**lcols, "a": np.arange(n)})
    right = pa.table({**rcols, "b": np.arange(n // 2) * 0.5})
    return gpuframe.from_arrow(left), gpuframe.from_arrow(right), on


def _sorted_pairs(li, ri) -> list:
    return sorted(zip(memory.to_host(li).tolist(), memory.to_host(ri).tolist()))


def _sorted_rows(t) -> list:
    return sorted(map(repr, t.to("cpu").to_arrow().to_pylist()))


ITEM2_CASES = {"dictionary": (False, True), "dictionary_both": (True,), "two_strings": (True,),
               "dictionary_and_int": (True,), "uint64_int64": (False, True), "uint64_int8_multi": (True,)}


@pytest.mark.parametrize("case,nulls_equal", [(c, ne) for c, nes in ITEM2_CASES.items() for ne in nes],
                         ids=[f"{c}-{'nulls_equal' if ne else 'nulls'}" for c, nes in ITEM2_CASES.items()
                              for ne in nes])
def test_item2_keys_move_o1_bytes_and_match_the_cpu(cuda_device, case, nulls_equal):
    sizes = SLOW_SIZES
    host = {n: _item2_tables(case, n, nulls=True) for n in sizes}
    dev = {n: (host[n][0].to(cuda_device), host[n][1].to(cuda_device)) for n in sizes}
    for how in ("inner", "outer"):
        kw = dict(host[sizes[0]][2], how=how, nulls_equal=nulls_equal)
        got, moved = {}, []
        for n in sizes:
            moved.append(_moved(lambda: got.__setitem__(n, gpuframe.join_indices(*dev[n], **kw))))
            assert _sorted_pairs(*got[n]) == _sorted_pairs(*gpuframe.join_indices(*host[n][:2], **kw)), \
                f"join_indices(how={how!r}) on {case}, {n} rows: differs from the CPU backend"
        _assert_o1(*moved, f"join_indices(how={how!r}, nulls_equal={nulls_equal}) on {case}", sizes)
        moved = []
        for n in sizes:
            moved.append(_moved(lambda: got.__setitem__(n, gpuframe.merge(*dev[n], **kw))))
            want = gpuframe.merge(*host[n][:2], **kw)
            assert got[n].schema == want.schema, f"merge(how={how!r}) on {case}: {got[n].schema} != {want.schema}"
            assert _sorted_rows(got[n]) == _sorted_rows(want), \
                f"merge(how={how!r}) on {case}, {n} rows: differs from the CPU backend"
        _assert_o1(*moved, f"merge(how={how!r}, nulls_equal={nulls_equal}) on {case}", sizes)
