"""hash_rows / partition_ids / hash_partition on a CUDA device (simulator or GPU): bit-identical
hashes and ids to the CPU backend, partitions equal as multisets. Kept at <= 2k rows."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import gpuframe
from gpuframe.core import memory
from gpuframe.kernels.partition import SHARED_HIST_MAX
from gpuframe.ops.hashing import hash_rows
from gpuframe.ops.partition import hash_partition, partition_ids

from ..common import hashref as ref
from ..common.data import DTYPES, random_array, random_table

pytestmark = pytest.mark.cudasim

ALL = {f"c{i}": t for i, t in enumerate(DTYPES)}


def on_device(col) -> bool:
    return all(b is None or not isinstance(b.array, np.ndarray) for b in (col.data, col.validity, col.offsets))


def test_hash_rows_bit_identical(cuda_device, dtype, with_nulls):
    tbl = pa.table({"k": random_array(dtype, 300, nulls=with_nulls, seed=1, cardinality=40),
                    "s": random_array(pa.string(), 300, nulls=with_nulls, seed=2)})
    cpu = gpuframe.from_arrow(tbl)
    gpu = cpu.to(cuda_device)
    for on, seed in (("k", 0), (["k", "s"], 12345)):
        got = hash_rows(gpu, on, seed=seed)
        assert not isinstance(got, np.ndarray) and memory.array_device(got) == cuda_device
        assert np.array_equal(memory.to_host(got), hash_rows(cpu, on, seed=seed))
    assert memory.to_host(hash_rows(gpu, "k")).tolist() == ref.row_hashes(tbl, "k")
    # a slice with an odd offset (bit offsets in bitmaps, offsets into strings)
    sl = gpu.slice(13, 250)
    assert np.array_equal(memory.to_host(hash_rows(sl, ["k", "s"])), hash_rows(cpu.slice(13, 250), ["k", "s"]))


def test_partition_ids_bit_identical(cuda_device, dtype, with_nulls):
    tbl = pa.table({"k": random_array(dtype, 300, nulls=with_nulls, seed=4, cardinality=60)})
    cpu = gpuframe.from_arrow(tbl)
    got = partition_ids(cpu.to(cuda_device), "k", 7, seed=3)
    host = memory.to_host(got)
    assert host.dtype == np.int32
    assert np.array_equal(host, partition_ids(cpu, "k", 7, seed=3))


def _assert_same_partitions(gpu_out, gpu_offsets, cpu_out, cpu_offsets, n):
    assert gpu_offsets.tolist() == cpu_offsets.tolist()
    assert isinstance(gpu_offsets, np.ndarray) and gpu_offsets.dtype == np.int64 and gpu_offsets.shape == (n + 1,)
    assert all(on_device(c) for c in gpu_out.columns)
    g, c = gpu_out.to_arrow(), cpu_out.to_arrow()
    assert g.schema == c.schema
    for col in gpu_out.to("cpu").columns:
        col.to_arrow().validate(full=True)
    for p in range(n):
        lo, hi = int(cpu_offsets[p]), int(cpu_offsets[p + 1])
        assert ref.sortable(g.slice(lo, hi - lo)) == ref.sortable(c.slice(lo, hi - lo)), p


@pytest.mark.parametrize("with_nulls", [False, True], ids=["nonull", "nulls"])
def test_hash_partition_every_dtype(cuda_device, with_nulls):
    tbl = random_table(400, ALL, nulls=with_nulls, seed=6, cardinality=50)
    cpu = gpuframe.from_arrow(tbl)
    gpu = cpu.to(cuda_device)
    for on, n in ((["c3", "c11"], 5), (["c16"], 3), (["c9", "c10", "c14"], 9)):
        g_out, g_off = hash_partition(gpu, on, n, seed=7)
        c_out, c_off = hash_partition(cpu, on, n, seed=7)
        assert g_out.device == cuda_device
        _assert_same_partitions(g_out, g_off, c_out, c_off, n)
        # every row of partition p has id p, computed on the device
        ids = memory.to_host(partition_ids(g_out, on, n, seed=7))
        assert np.array_equal(ids, np.repeat(np.arange(n), np.diff(g_off)))


def test_hash_partition_2k_rows_64_partitions(cuda_device):
    tbl = random_table(2000, {"a": pa.int64(), "b": pa.int64()}, seed=2)
    cpu = gpuframe.from_arrow(tbl)
    g_out, g_off = hash_partition(cpu.to(cuda_device), "a", 64)
    c_out, c_off = hash_partition(cpu, "a", 64)
    _assert_same_partitions(g_out, g_off, c_out, c_off, 64)


def test_global_histogram_path(cuda_device):
    n = SHARED_HIST_MAX + 200  # more partitions than the shared-memory histogram holds
    tbl = random_table(1500, {"k": pa.string(), "v": pa.int32()}, nulls=True, seed=8)
    cpu = gpuframe.from_arrow(tbl)
    g_out, g_off = hash_partition(cpu.to(cuda_device), "k", n)
    c_out, c_off = hash_partition(cpu, "k", n)
    _assert_same_partitions(g_out, g_off, c_out, c_off, n)


def test_skewed_and_edge_keys(cuda_device):
    i64 = np.iinfo(np.int64)
    tbl = pa.table({
        "i": pa.array([i64.min, i64.max, 0, -1, None, 5, 5, 5, 5, 5], pa.int64()),
        "f": pa.array([float("nan"), -0.0, 0.0, float("-nan"), None, 1.0, 1.0, 1.0, 1.0, 1.0]),
        "s": pa.array(["", "", "a", None, "", "x", "x", "x", "x", "x"]),
    })
    cpu = gpuframe.from_arrow(tbl)
    gpu = cpu.to(cuda_device)
    for on in ("i", "f", "s", ["i", "f", "s"]):
        assert np.array_equal(memory.to_host(hash_rows(gpu, on)), hash_rows(cpu, on))
        g_out, g_off = hash_partition(gpu, on, 4)
        c_out, c_off = hash_partition(cpu, on, 4)
        _assert_same_partitions(g_out, g_off, c_out, c_off, 4)


def test_zero_rows(cuda_device):
    gpu = gpuframe.from_arrow(random_table(0, ALL)).to(cuda_device)
    out, offsets = hash_partition(gpu, ["c0", "c11"], 4)
    assert out.num_rows == 0 and out.device == cuda_device and offsets.tolist() == [0] * 5
    assert memory.to_host(partition_ids(gpu, "c0", 4)).shape == (0,)
    assert memory.to_host(hash_rows(gpu, "c0")).shape == (0,)


def test_validation_on_device(cuda_device):
    gpu = gpuframe.from_arrow(pa.table({"a": [1, 2]})).to(cuda_device)
    with pytest.raises(KeyError, match="'b'"):
        hash_partition(gpu, "b", 2)
    with pytest.raises(ValueError, match="num_partitions.*got 0"):
        hash_partition(gpu, "a", 0)


def test_runs_the_cuda_launchers(cuda_device, monkeypatch):
    from gpuframe.backends.cuda import launch as cuda_launch

    calls = []
    real = cuda_launch.launch

    def spy(kernel, n, *args, **kw):
        calls.append((kernel.py_func if hasattr(kernel, "py_func") else kernel.fn).__name__)
        return real(kernel, n, *args, **kw)

    monkeypatch.setattr(cuda_launch, "launch", spy)
    gpu = gpuframe.from_arrow(pa.table({"a": [1, 2, 3], "s": ["x", None, "z"]})).to(cuda_device)
    hash_partition(gpu, "a", 2)
    assert calls[:2] == ["block_counts_fixed", "scatter_shared"]
    assert "invert_dest" in calls and "chars" in calls


def test_skewed_merge_split_on_the_device(cuda_device):
    """gpuframe._skew.route on CUDA tables (no one-scatter capability there: the heavy rows are
    filtered out, the light ones hash-partitioned): the same groups as on the CPU, the pieces on
    the device."""
    import gpuframe._skew as skew

    rng = np.random.default_rng(3)
    n = 1_500
    k = rng.integers(0, 80, n)
    k[rng.random(n) < 0.3] = 7
    k[rng.random(n) < 0.1] = 9
    tbl = pa.table({"k": pa.array(np.where(rng.random(n) < 0.05, None, k).tolist(), pa.int64()),
                    "s": pa.array([f"v{i % 7}" for i in range(n)]), "row": np.arange(n)})
    cpu = gpuframe.from_arrow(tbl)
    gpu = cpu.to(cuda_device)
    h = np.asarray(hash_rows(cpu, ["k"]))
    stay, away = h[np.argmax(k == 7)].reshape(1), h[np.argmax(k == 9)].reshape(1)

    def groups(t):
        out, staying, going = skew.route([t.slice(0, 700), t.slice(700)], ["k"], 2, buckets=3, seed=0, keep=None,
                                         stay=stay, away=away)
        rows = lambda pieces: sorted(r for p in pieces for r in p["row"].to_arrow().to_pylist())  # noqa: E731
        return [rows(o) for o in out], rows(staying), rows(going), [p for o in out for p in o] + staying + going

    g_out, g_stay, g_go, pieces = groups(gpu)
    c_out, c_stay, c_go, _ = groups(cpu)
    assert (g_out, g_stay, g_go) == (c_out, c_stay, c_go)
    assert g_stay == np.flatnonzero(h == stay[0]).tolist() and g_go == np.flatnonzero(h == away[0]).tolist()
    assert all(on_device(p["k"]) and p.device == cuda_device for p in pieces)
