"""take / gather_column on a CUDA device (simulator or GPU), the CPU backend as the oracle."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import gpuframe
from gpuframe.core import memory
from gpuframe.ops.gather import gather_column, take

from ..common.data import DTYPES, random_array, random_table

pytestmark = pytest.mark.cudasim

ALL = {f"c{i}": t for i, t in enumerate(DTYPES)}


def assert_same(gpu_out: gpuframe.Table, cpu_out: gpuframe.Table, device) -> None:
    assert gpu_out.device == device
    for col in gpu_out.columns:
        assert all(b is None or not isinstance(b.array, np.ndarray) for b in (col.data, col.validity, col.offsets))
    g, c = gpu_out.to_arrow(), cpu_out.to_arrow()
    assert g.schema == c.schema
    for name in c.column_names:
        a, b = g.column(name), c.column(name)
        if pa.types.is_dictionary(b.type):
            a, b = a.cast(b.type.value_type), b.cast(b.type.value_type)
        la, lb = a.to_pylist(), b.to_pylist()
        assert all(x == y or (x != x and y != y) for x, y in zip(la, lb)) and len(la) == len(lb), name
        assert a.null_count == b.null_count, name
    for col in gpu_out.to("cpu").columns:
        col.to_arrow().validate(full=True)


def test_every_dtype(cuda_device, dtype, with_nulls):
    tbl = pa.table({"k": random_array(dtype, 200, nulls=with_nulls, seed=3, cardinality=30)})
    cpu = gpuframe.from_arrow(tbl)
    idx = np.random.default_rng(1).integers(-1, 200, 300)
    assert_same(take(cpu.to(cuda_device), idx), take(cpu, idx), cuda_device)


def test_all_dtypes_sliced_with_device_indices(cuda_device):
    tbl = random_table(300, ALL, nulls=True, seed=5, cardinality=40)
    cpu = gpuframe.from_arrow(tbl).slice(11, 250)
    gpu = gpuframe.from_arrow(tbl).to(cuda_device).slice(11, 250)
    idx = np.random.default_rng(2).integers(-1, 250, 400)
    dev_idx = memory.to_device(idx, cuda_device)
    assert_same(gpu.take(dev_idx), cpu.take(idx), cuda_device)


def test_minus_one_only_and_no_nulls(cuda_device):
    tbl = pa.table({"a": pa.array([1, 2, 3], pa.int64()), "s": ["x", "yy", "zzz"], "b": [True, False, True]})
    gpu = gpuframe.from_arrow(tbl).to(cuda_device)
    out = take(gpu, [2, -1, 0, -1])
    assert out.to_arrow().to_pydict() == {"a": [3, None, 1, None], "s": ["zzz", None, "x", None], "b": [True, None, True, None]}
    assert all(c.validity is None for c in take(gpu, [2, 0]).columns)


@pytest.mark.parametrize("bad", [3, -2, 2**40])
def test_out_of_bounds(cuda_device, bad):
    gpu = gpuframe.from_arrow(pa.table({"a": [1, 2, 3]})).to(cuda_device)
    with pytest.raises(IndexError, match=rf"index {bad} .*3 rows"):
        take(gpu, [0, bad, -1])


def test_gather_column_on_device(cuda_device):
    tbl = random_table(100, {"d": pa.dictionary(pa.int32(), pa.string()), "s": pa.large_string()}, nulls=True, seed=3)
    cpu = gpuframe.from_arrow(tbl)
    gpu = cpu.to(cuda_device)
    idx = np.array([5, -1, 99, 0, 5], dtype=np.int64)
    for name in ("d", "s"):
        for cb in (True, False):
            g = gather_column(gpu[name], idx, check_bounds=cb)
            assert g.device == cuda_device
            assert g.to_arrow().to_pylist() == gather_column(cpu[name], idx).to_arrow().to_pylist()
    assert gather_column(gpu["d"], idx).dictionary is gpu["d"].dictionary


def test_empty(cuda_device):
    gpu = gpuframe.from_arrow(random_table(20, ALL, nulls=True)).to(cuda_device)
    out = take(gpu, np.empty(0, np.int64))
    assert out.num_rows == 0 and out.device == cuda_device
    empty = gpuframe.from_arrow(random_table(0, ALL)).to(cuda_device)
    out = take(empty, [-1])
    assert out.num_rows == 1 and all(c.null_count == 1 for c in out.columns)
