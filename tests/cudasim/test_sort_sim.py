"""The CUDA sort under numba's simulator: the permutation equals the CPU backend's exactly (a
stable sort has one answer), for every key type with and without nulls, both directions, both
null placements, several keys, sliced columns, 0 and 1 rows; and it keeps its rows on the device
(O(1) bytes between host and device, counted by :func:`gpuframe.core.memory.count_transfers`).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import gpuframe
from gpuframe.core import memory

from ..common.data import DTYPE_IDS, DTYPES, random_array

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


def _both(table: pa.Table, cuda_device, by, **kw):
    host = gpuframe.from_arrow(table)
    dev = host.to(cuda_device)
    expected = gpuframe.sort_indices(host, by, **kw)
    got = gpuframe.sort_indices(dev, by, **kw)
    assert memory.array_device(got) == cuda_device
    assert np.dtype(got.dtype) == np.int64
    return memory.to_host(got), expected


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_one_key_equals_cpu(dtype, cuda_device):
    n = 160
    table = pa.table({"k": random_array(dtype, n, nulls=True, seed=3, cardinality=50)})
    # one direction and null placement per type (the simulator's time), each of the four in turn
    which = DTYPES.index(dtype)
    got, expected = _both(table, cuda_device, "k", descending=which % 2 == 1, nulls_last=which % 4 < 2)
    assert got.tolist() == expected.tolist()


def test_floats_and_int64_extremes_equal_cpu(cuda_device):
    nan = float("nan")
    f = [0.0, -0.0, nan, float("inf"), -float("inf"), None, 1.5, -0.0, -nan, -2.5, 0.0, 3.0]
    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    i = [hi, 0, lo, -1, None, 1, lo, hi, lo + 1, hi - 1, 0, 0]
    table = pa.table({"f": pa.array(f, pa.float64()), "g": pa.array(f, pa.float32()), "i": pa.array(i, pa.int64())})
    for by, desc in (("f", False), (["i", "g"], True)):   # float64, then int64 extremes before float32
        got, expected = _both(table, cuda_device, by, descending=desc)
        assert got.tolist() == expected.tolist()
        if by == "f":
            assert got.tolist() == [4, 9, 0, 1, 7, 10, 6, 11, 3, 2, 8, 5]


def test_strings_with_shared_prefixes_equal_cpu(cuda_device):
    rng = np.random.default_rng(4)
    prefix = "customer#0000000-"
    vals = [prefix + str(x) * int(rng.integers(1, 3)) for x in rng.integers(0, 12, 40)]
    vals[::9] = [prefix] * len(vals[::9])
    vals[1::10] = ["", "a\x00", "ß", "日本", "a", "abcdefgh", "abcdefgh\x00", None, "z", "é", "e", None][:len(vals[1::10])]
    table = pa.table({"s": pa.array(vals, pa.string()), "l": pa.array(vals, pa.large_string())})
    got, expected = _both(table, cuda_device, "l", descending=True, nulls_last=False)
    assert got.tolist() == expected.tolist()


def test_dictionary_with_null_and_duplicate_entries_equals_cpu(cuda_device):
    dictionary = pa.array(["pear", None, "apple", "pear", "", "Zed"])
    indices = pa.array([0, 1, 2, 3, 4, 5, None, 3, 0, 2, 1, 5], pa.int32())
    table = pa.table({"k": pa.DictionaryArray.from_arrays(indices, dictionary)})
    got, expected = _both(table, cuda_device, "k")
    assert got.tolist() == expected.tolist() == [4, 5, 11, 2, 9, 0, 3, 7, 8, 1, 6, 10]


def test_multi_key_sliced_equals_cpu(cuda_device):
    n = 140
    table = pa.table({"a": random_array(pa.int16(), n, nulls=True, seed=1, cardinality=4),
                      "b": random_array(pa.string(), n, nulls=True, seed=2, cardinality=30),
                      "c": random_array(pa.float64(), n, nulls=True, seed=3, cardinality=20),
                      "d": random_array(pa.bool_(), n, nulls=True, seed=4)}).slice(13, 120)
    got, expected = _both(table, cuda_device, ["a", "b", "c", "d"], descending=[False, True, False, True],
                          nulls_last=False)
    assert got.tolist() == expected.tolist()


def test_larger_table_equals_cpu(cuda_device):
    # several blocks per radix pass and several tiles per block
    n = 500
    rng = np.random.default_rng(7)
    table = pa.table({"a": pa.array(rng.integers(-(1 << 40), 1 << 40, n)),
                      "b": pa.array(rng.integers(0, 5, n).astype(np.int32))})
    got, expected = _both(table, cuda_device, ["b", "a"], descending=[False, True])
    assert got.tolist() == expected.tolist()


def test_zero_one_and_equal_rows(cuda_device):
    for n in (0, 1):
        table = pa.table({"k": pa.array(np.arange(n)), "s": pa.array([str(x) for x in range(n)], pa.string())})
        got, expected = _both(table, cuda_device, ["k", "s"])
        assert got.tolist() == expected.tolist() == list(range(n))
    table = pa.table({"k": pa.nulls(70, pa.int64()), "s": pa.array(["x"] * 70)})
    assert _both(table, cuda_device, ["s", "k"])[0].tolist() == list(range(70))


def test_sort_table_on_the_device(cuda_device):
    n = 100
    table = pa.table({"k": random_array(pa.int32(), n, nulls=True, seed=9, cardinality=10),
                      "s": random_array(pa.string(), n, nulls=True, seed=10),
                      "b": random_array(pa.bool_(), n, nulls=True, seed=11)})
    out = gpuframe.from_arrow(table).to(cuda_device).sort(["k", "s"], descending=[True, False])
    assert out.device == cuda_device
    assert out.to("cpu").to_arrow().equals(gpuframe.sort(gpuframe.from_arrow(table), ["k", "s"],
                                                         descending=[True, False]).to_arrow())


LIMIT = 4096   # bytes a sort may move at either size
GROWTH = 64    # bytes it may move more at the larger size


@pytest.mark.parametrize("types", [
    {"k": pa.int64(), "j": pa.bool_()},
    {"s": pa.string()},
    {"d": pa.dictionary(pa.int32(), pa.string()), "k": pa.float32()},
], ids=["int64-bool", "string", "dict-float32"])
def test_sort_moves_o1_bytes(types, cuda_device):
    moved = []
    sizes = (32, 128) if "s" in types or "d" in types else (64, 256)   # strings: the simulator's time
    for n in sizes:
        table = pa.table({name: random_array(t, n, nulls=True, seed=5 + i, cardinality=n // 2)
                          for i, (name, t) in enumerate(types.items())})
        dev = gpuframe.from_arrow(table).to(cuda_device)
        dev[list(types)[0]].null_count  # noqa: B018 - counted before, not inside the sort
        with memory.count_transfers() as t:
            perm = gpuframe.sort_indices(dev, list(types))
        moved.append(t)
        assert memory.to_host(perm).tolist() == gpuframe.sort_indices(gpuframe.from_arrow(table),
                                                                     list(types)).tolist()
    small, large = moved
    at = f"{small} at {sizes[0]} rows, {large} at {sizes[1]}"
    assert small.bytes <= LIMIT and large.bytes <= LIMIT, at
    assert large.bytes - small.bytes <= GROWTH, at
