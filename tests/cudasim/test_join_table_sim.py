"""The CUDA join's table (keys in the slots, duplicates contiguous; gpuframe.kernels.slot_table),
run by numba's simulator: the unique-key path, a hot key whose matches are written one output
row per thread, and the kernels each path launches. The CPU backend is the oracle."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import gpuframe
from gpuframe.backends.cuda import join as cuda_join
from gpuframe.core import memory
from gpuframe.ops.join import HOWS

from ..common.join import pairs_of

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


@pytest.fixture
def launched(monkeypatch):
    """The names of the join kernels launched, with their item counts."""
    real = cuda_join._launch
    names = {id(v): k for k, v in cuda_join._cuda().items()}
    seen: list[tuple[str, int]] = []

    def spy(kernel, n, *args):
        seen.append((names.get(id(kernel), "?"), int(n)))
        real(kernel, n, *args)

    monkeypatch.setattr(cuda_join, "_launch", spy)
    return seen


def _check_same(left, right, device, **kw):
    li, ri = gpuframe.join_indices(left.to(device), right.to(device), **kw)
    got = pairs_of(memory.to_host(li), None if ri is None else memory.to_host(ri))
    assert got == pairs_of(*gpuframe.join_indices(left, right, **kw))
    return got


@pytest.mark.parametrize("how", HOWS)
def test_unique_build_keys_take_the_direct_path(cuda_device, launched, how):
    rng = np.random.default_rng(1)
    lk = rng.integers(0, 300, 400)
    left = gpuframe.from_arrow(pa.table({"k": pa.array(np.where(rng.random(400) < 0.1, None, lk), pa.int64())}))
    right = gpuframe.from_arrow(pa.table({"k": pa.array(rng.permutation(300)[:250], pa.int32())}))
    launched.clear()
    _check_same(left, right, cuda_device, on="k", how=how)
    names = [n for n, _ in launched]
    assert "slot_build" in names and "rep_count" not in names and "csr_fill" not in names
    assert "expand" not in names
    if how not in ("semi", "anti"):
        assert names.count("write_direct") == 1
    if how in ("left", "outer"):
        # the right side (smaller) builds, and every left row gives one row: no counts, no scan
        assert ("write_direct", 400) in launched
    if how == "left":
        assert "flag_count" not in names


@pytest.mark.parametrize("how", ["inner", "left", "right", "outer", "semi", "anti"])
def test_a_hot_key_is_written_one_output_row_per_thread(cuda_device, launched, how):
    # build side (the smaller): key 7 on 200 rows and 60 distinct keys; probe side: 25 rows of
    # key 7, 10 of the distinct keys, 233 rows without a match
    bk = np.concatenate([np.full(200, 7), np.arange(100, 160)])
    pk = np.concatenate([np.full(25, 7), np.arange(150, 190), np.arange(1000, 1200), [None] * 3])
    right = gpuframe.from_arrow(pa.table({"k": pa.array(np.random.default_rng(2).permutation(bk), pa.int64())}))
    left = gpuframe.from_arrow(pa.table({"k": pa.array(pk, pa.int64())}))
    launched.clear()
    got = _check_same(left, right, cuda_device, on="k", how=how)
    names = [n for n, _ in launched]
    if how in ("semi", "anti"):
        assert "expand" not in names
        return
    assert "csr_fill" in names and "write_direct" not in names
    total_p = 25 * 200 + 10 + (233 if how in ("left", "outer") else 0)
    assert ("expand", total_p) in launched
    rows_of_7 = set(np.flatnonzero(right.to_arrow()["k"].to_numpy(zero_copy_only=False) == 7).tolist())
    for i in range(25):
        assert {r for p, r in got if p == i} == rows_of_7


def test_general_keys_with_one_hash_word_are_told_apart(cuda_device):
    # string keys: the slot word is the row hash, a match confirmed against the representative
    left = gpuframe.from_arrow(pa.table({"k": ["a", "bb", "", None, "a", "ccc", "bb"] * 20}))
    right = gpuframe.from_arrow(pa.table({"k": ["bb", "a", "a", "", "dd", None]}))
    for how in ("inner", "outer"):
        for ne in (False, True):
            _check_same(left, right, cuda_device, on="k", how=how, nulls_equal=ne)
