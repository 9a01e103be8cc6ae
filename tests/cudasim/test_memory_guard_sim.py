"""The memory guard on a CUDA device (simulator or GPU): it raises before allocating, naming the
operation, the device and the sizes."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import gpuframe
from gpuframe.core import memory
from gpuframe.core.device import cudasim_enabled

pytestmark = pytest.mark.cudasim


class _Seen(list):
    limit = 1000   # bytes the fake device has free; a test may raise it


@pytest.fixture
def small_device_memory(monkeypatch, cuda_device):
    real = memory.available_bytes
    seen = _Seen()

    def fake(device):
        if device.is_cuda:
            seen.append(device)
            return seen.limit, "a test limit"
        return real(device)

    monkeypatch.setattr(memory, "available_bytes", fake)
    monkeypatch.setattr(memory, "GUARD_MIN_BYTES", 0)   # small tables: the simulator is slow
    return seen


def _table(n: int = 2000):
    return gpuframe.from_arrow(pa.table({"k": np.arange(n, dtype=np.int64), "v": np.ones(n)}))


def test_guard_take_and_hash_partition_on_the_device(cuda_device, small_device_memory):
    t = _table().to(cuda_device)
    dev = str(cuda_device).replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(MemoryError, match=rf"^take: the gathered table of 2,000 rows needs about 32,000 bytes "
                                          rf"\(0.00 GiB\) on {dev}, but only 1,000 bytes"):
        gpuframe.take(t, np.arange(2000))
    # 32,000 bytes of output, 2,000 of one-byte ids (the hash is fused into the count pass) and the
    # per-block counts and their scan (16 bytes per partition and block: the grid differs between
    # the simulator and a GPU)
    with pytest.raises(MemoryError, match=rf"^hash_partition: the partitioned table and its scratch of 2,000 rows "
                                          rf"needs about 34,\d{{3}} bytes \(0.00 GiB\) on {dev}"):
        gpuframe.hash_partition(t, "k", 4)
    assert small_device_memory and all(d == cuda_device for d in small_device_memory)


def test_guard_merge_on_the_device(cuda_device, small_device_memory):
    left, right = _table().to(cuda_device), _table(1000).to(cuda_device)
    # first the table and scratch, before the build: 2,048 slots of 16 bytes, 33 bytes per build
    # row (representative, counts, offsets, segments, matched flag), 24 per probe row, 16
    scratch = 16 * 2048 + 33 * 1000 + 24 * 2000 + 16
    for fn, op in ((gpuframe.merge, "merge"), (gpuframe.join_indices, "join_indices")):
        with pytest.raises(MemoryError, match=rf"^{op}: the hash table and its scratch for the build and probe rows "
                                              rf"of 3,000 rows needs about {scratch:,} bytes"):
            fn(left, right, on="k")
    with pytest.raises(MemoryError, match=rf"^join_size: the hash table and its scratch .* needs about {scratch:,}"):
        gpuframe.join_size(left, right, on="k")
    # then the output, once counted: 10 keys, 200 x 100 rows each
    small_device_memory.limit = scratch + 1000
    many_l = gpuframe.from_arrow(pa.table({"k": np.arange(2000) % 10, "v": np.ones(2000)})).to(cuda_device)
    many_r = gpuframe.from_arrow(pa.table({"k": np.arange(1000) % 10, "w": np.ones(1000)})).to(cuda_device)
    with pytest.raises(MemoryError, match=r"^merge: the merged table of 200,000 rows needs about"):
        gpuframe.merge(many_l, many_r, on="k")
    with pytest.raises(MemoryError, match=r"^join_indices: the gather maps of 200,000 rows needs about 3,200,000 "):
        gpuframe.join_indices(many_l, many_r, on="k")


def test_available_device_memory(cuda_device):
    have, why = memory.available_bytes(cuda_device)
    assert have > 0 and why
    if cudasim_enabled():   # the simulator's arrays are host memory: the host's limits apply
        assert "memory" in why and "CuPy" not in why
    else:
        assert "free on the device" in why and "CuPy's pool" in why
