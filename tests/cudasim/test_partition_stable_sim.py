"""hash_partition on a CUDA device returns the CPU's table exactly: the same rows in the same order
(stable inside each partition), the same offsets, values (bit for bit, NaN and -0.0 included),
validity and null counts. Kept at <= 2k rows (the simulator runs every thread in Python)."""
from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa
import pytest

import gpuframe
from gpuframe.backends.cuda import launch as cuda_launch
from gpuframe.backends.cuda import partition as CP
from gpuframe.core import memory
from gpuframe.kernels.partition import SHARED_HIST_MAX
from gpuframe.ops.partition import hash_partition

from ..common.data import random_array

pytestmark = pytest.mark.cudasim

GLOBAL_PATH = SHARED_HIST_MAX + 476  # more partitions than the shared-memory histogram holds


def _table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    specials = np.array([np.nan, -0.0, 0.0, -np.nan, 1.5, np.inf])
    f64 = np.where(rng.random(n) < 0.3, specials[rng.integers(0, len(specials), n)],
                   rng.integers(0, 40, n).astype(np.float64))
    return pa.table({
        "i64": pa.array(rng.integers(-50, 50, n), pa.int64()),
        "i32": pa.array(rng.integers(-(2 ** 31), 2 ** 31, n), pa.int32()),
        "f64": pa.array(f64, pa.float64()),
        "s": random_array(pa.string(), n, seed=seed + 1, cardinality=30),
        "ni64": random_array(pa.int64(), n, nulls=True, seed=seed + 2, cardinality=25),
        # payloads
        "u16": pa.array(rng.integers(0, 2 ** 16, n), pa.uint16()),
        "f32": pa.array(rng.random(n), pa.float32()),
        "b": random_array(pa.bool_(), n, nulls=True, seed=seed + 3),
        "ls": random_array(pa.large_string(), n, nulls=True, seed=seed + 4),
        "ni32": random_array(pa.int32(), n, nulls=True, seed=seed + 5),
        "ts": random_array(pa.timestamp("us"), n, seed=seed + 6),
        "d": random_array(pa.dictionary(pa.int32(), pa.string()), n, nulls=True, seed=seed + 7),
    })


def _exact(arr: pa.Array) -> list:
    """Values with floats as their bits (NaN == NaN, -0.0 != 0.0), None for nulls."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    vals = arr.to_pylist()
    if pa.types.is_floating(arr.type):
        fmt = "<d" if arr.type.bit_width == 64 else "<f"
        return [None if v is None else struct.pack(fmt, v) for v in vals]
    return vals


def assert_identical(gpu_out, gpu_offsets, cpu_out, cpu_offsets):
    assert isinstance(gpu_offsets, np.ndarray) and gpu_offsets.dtype == np.int64
    assert gpu_offsets.tolist() == cpu_offsets.tolist()
    assert gpu_out.num_rows == cpu_out.num_rows and gpu_out.column_names == cpu_out.column_names
    host = gpu_out.to("cpu")
    for name in cpu_out.column_names:
        g, c = host[name], cpu_out[name]
        assert g.dtype == c.dtype, name
        assert g.null_count == c.null_count, name
        ga, ca = g.to_arrow(), c.to_arrow()
        ga.validate(full=True)
        assert _exact(ga) == _exact(ca), name


def _both(tbl: pa.Table, cuda_device, on, nparts, seed=11):
    cpu = gpuframe.from_arrow(tbl)
    g_out, g_off = hash_partition(cpu.to(cuda_device), on, nparts, seed=seed)
    assert g_out.device == cuda_device
    c_out, c_off = hash_partition(cpu, on, nparts, seed=seed)
    assert_identical(g_out, g_off, c_out, c_off)
    return g_off


KEYS = ["i64", "i32", "f64", "s", "ni64", ["i32", "s", "f64"]]
KEY_IDS = ["int64", "int32", "float64", "string", "nullable", "multi"]


@pytest.mark.parametrize("on", KEYS, ids=KEY_IDS)
@pytest.mark.parametrize("nparts", [64])
def test_identical_1k_rows(cuda_device, on, nparts):
    _both(_table(1000, seed=1), cuda_device, on, nparts)


@pytest.mark.parametrize("nparts", [1, 7, 1000, GLOBAL_PATH])
def test_identical_partition_counts(cuda_device, nparts):
    _both(_table(1000, seed=2), cuda_device, "i64", nparts)


@pytest.mark.parametrize("on", KEYS[::2], ids=KEY_IDS[::2])
@pytest.mark.parametrize("nparts", [1000, GLOBAL_PATH])
def test_more_partitions_than_rows(cuda_device, on, nparts):
    off = _both(_table(300, seed=3), cuda_device, on, nparts)
    assert (np.diff(off) == 0).sum() >= nparts - 300


@pytest.mark.parametrize("n", [0, 1, 65])
@pytest.mark.parametrize("nparts", [1, 7, GLOBAL_PATH])
def test_tiny_tables(cuda_device, n, nparts):
    _both(_table(n, seed=4), cuda_device, ["i64", "s"], nparts)


@pytest.mark.parametrize("nparts", [7, 64, GLOBAL_PATH])
def test_many_blocks_and_tiles(cuda_device, monkeypatch, nparts):
    # many blocks of one tile, then one block of many tiles: stability across both boundaries
    monkeypatch.setattr(CP, "ROWS_PER_PARTITION", 0)
    monkeypatch.setattr(CP, "MIN_TILES", 1)
    tbl = _table(1000, seed=5)
    _both(tbl, cuda_device, "ni64", nparts)
    monkeypatch.setattr(CP, "MAX_BLOCKS", 1)
    _both(tbl, cuda_device, "i64", nparts)


def test_skewed_and_sliced(cuda_device):
    # one hot key (every row in one partition, every rank in one tile), and an odd slice offset
    n = 700
    tbl = _table(n, seed=6).set_column(0, "i64", pa.array(np.full(n, 42), pa.int64()))
    _both(tbl, cuda_device, "i64", 64)
    cpu = gpuframe.from_arrow(_table(1200, seed=7))
    for on in ("ni64", ["s", "f64"]):
        g = hash_partition(cpu.to(cuda_device).slice(13, 1000), on, 7)
        c = hash_partition(cpu.slice(13, 1000), on, 7)
        assert_identical(*g, *c)


def _launched(monkeypatch) -> list[str]:
    names: list[str] = []
    real = cuda_launch.launch

    def spy(kernel, n, *args, **kw):
        fn = kernel.py_func if hasattr(kernel, "py_func") else kernel.fn
        names.append(f"{fn.__module__.rsplit('.', 1)[-1]}.{fn.__name__}")
        return real(kernel, n, *args, **kw)

    monkeypatch.setattr(cuda_launch, "launch", spy)
    return names


def test_fixed_columns_are_scattered_directly(cuda_device, monkeypatch):
    names = _launched(monkeypatch)
    tbl = _table(500, seed=8).select(["i64", "i32", "f64"])
    _both(tbl, cuda_device, "i64", 5)
    # no permutation, no gather: one count pass, one scan, one scatter pass
    # no hash array (a single fixed-width key is hashed in the count pass), no permutation, no gather
    assert "partition.invert_dest" not in names and not any(n.startswith(("gather.", "hashing.")) for n in names)
    assert names.count("partition.block_counts_fixed") == 1 and names.count("partition.scatter_shared") == 1
    assert "partition.scatter_by_dest" in names  # i32 and f64 differ in width: the second via the map
    names.clear()
    _both(tbl.select(["i64", "f64"]), cuda_device, "i64", 5)
    assert names == ["partition.block_counts_fixed", "partition.scatter_shared"]
    names.clear()
    _both(tbl, cuda_device, ["i64", "f64"], 5)  # several keys: the row hashes first
    assert names[:2] == ["hashing.fixed", "hashing.fixed"] and "partition.block_counts_shared" in names
