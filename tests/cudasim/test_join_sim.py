"""The CUDA join (run by numba's simulator: NUMBA_ENABLE_CUDASIM=1) returns what the CPU
backend returns, for every ``how`` and key shape. Tables stay small: the simulator is slow."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import gpuframe
from gpuframe.core import memory
from gpuframe.ops.join import HOWS

from ..common.data import random_table
from ..common.join import pairs_of, ref_pairs, rows_multiset

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


def _cases():
    rng = np.random.default_rng(3)
    ints_l = pa.table({"k": pa.array(np.where(rng.random(300) < 0.3, 5, rng.integers(0, 60, 300))),
                       "a": np.arange(300)})
    ints_r = pa.table({"k": pa.array(np.repeat(np.arange(0, 80, 3), 3)), "b": np.arange(81) * 2.5})
    multi_l = random_table(200, {"k1": pa.int32(), "k2": pa.string(), "a": pa.float32()}, nulls=True,
                           seed=1, cardinality=7)
    multi_r = random_table(150, {"k1": pa.int64(), "k2": pa.large_string(), "b": pa.int8()}, nulls=True,
                           seed=2, cardinality=7)
    fl = pa.table({"k": pa.array([np.nan, -0.0, 1.0, None, 2.0, np.nan]), "a": np.arange(6)})
    fr = pa.table({"k": pa.array([0.0, np.nan, 2.0, None], pa.float32()), "b": np.arange(4)})
    # a dictionary whose null ENTRY (not index) must be a null key, never the empty string
    dl = pa.table({"k": pa.DictionaryArray.from_arrays(pa.array([0, 1, 1, 2, None, 0], pa.int32()),
                                                      pa.array(["a", None, ""])),
                   "a": np.arange(6)})
    dr = pa.table({"k": pa.array(["", "a", None, "b"]), "b": np.arange(4)})
    # fixed-width keys only: the general path's words are made on the device
    fixed_l = random_table(200, {"k1": pa.int16(), "k2": pa.float64(), "k3": pa.bool_(), "a": pa.int32()},
                           nulls=True, seed=3, cardinality=5)
    fixed_r = random_table(150, {"k1": pa.int64(), "k2": pa.float32(), "k3": pa.bool_(), "b": pa.bool_()},
                           nulls=True, seed=4, cardinality=5)
    # one string key, with nulls and empty strings, on a sliced column (offsets not from 0)
    sl = pa.table({"k": pa.array(["x", "", None, "ab", "", "zz", None, "ab", "q"]).slice(1),
                   "a": np.arange(8)})
    sr = pa.table({"k": pa.array(["", "ab", None, "zz", "nope"], pa.large_string()), "b": np.arange(5)})
    return {"string_nulls_empty": (sl, sr, ["k"]), "int_skew_dups": (ints_l, ints_r, ["k"]), "multi_string_nulls": (multi_l, multi_r, ["k1", "k2"]),
            "multi_fixed_nulls": (fixed_l, fixed_r, ["k1", "k2", "k3"]),
            "float_nan_zero": (fl, fr, ["k"]), "dictionary_null_entry": (dl, dr, ["k"])}


CASES = _cases()


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("nulls_equal", [False, True])
def test_cuda_matches_cpu(cuda_device, case, how, nulls_equal):
    left, right, on = CASES[case]
    Lh, Rh = gpuframe.from_arrow(left), gpuframe.from_arrow(right)
    Lc, Rc = Lh.to(cuda_device), Rh.to(cuda_device)
    kw = dict(on=on, how=how, nulls_equal=nulls_equal)
    li, ri = gpuframe.join_indices(Lc, Rc, **kw)
    assert memory.array_device(li) == cuda_device
    cli, cri = gpuframe.join_indices(Lh, Rh, **kw)
    got = pairs_of(memory.to_host(li), None if ri is None else memory.to_host(ri))
    assert got == pairs_of(cli, cri) == ref_pairs(left, right, on, on, how, nulls_equal)
    if how in ("semi", "anti"):
        assert list(memory.to_host(li)) == list(cli)   # left order on both
    assert gpuframe.join_size(Lc, Rc, **kw) == gpuframe.join_size(Lh, Rh, **kw)
    out_c = gpuframe.merge(Lc, Rc, **kw)
    assert out_c.device == cuda_device
    out_h = gpuframe.merge(Lh, Rh, **kw).to_arrow()
    oc = out_c.to_arrow()
    assert oc.column_names == out_h.column_names
    assert oc.schema == out_h.schema
    assert rows_multiset(oc, oc.column_names) == rows_multiset(out_h, out_h.column_names)


def test_cuda_empty_sides(cuda_device):
    empty = gpuframe.from_arrow(pa.table({"k": pa.array([], pa.int64()), "a": pa.array([], pa.int64())}))
    full = gpuframe.from_arrow(pa.table({"k": [1, 2], "b": [3, 4]}))
    for how in HOWS:
        for L, R in ((empty, full), (full.rename({"b": "a"}), empty.rename({"a": "b"}))):
            n = gpuframe.join_size(L.to(cuda_device), R.to(cuda_device), on="k", how=how)
            assert n == gpuframe.join_size(L, R, on="k", how=how)
            out = gpuframe.merge(L.to(cuda_device), R.to(cuda_device), on="k", how=how)
            assert out.num_rows == n


def test_cuda_atomic_insert_many_threads(cuda_device):
    # many threads insert the same key at once: every row must end up in the chain
    left = pa.table({"k": pa.array([1] * 130 + [2] * 70), "a": np.arange(200)})
    right = pa.table({"k": pa.array([1, 2, 3]), "b": [0, 1, 2]})
    Lc, Rc = gpuframe.from_arrow(left).to(cuda_device), gpuframe.from_arrow(right).to(cuda_device)
    li, ri = gpuframe.join_indices(Rc, Lc, on="k", how="outer")
    assert pairs_of(memory.to_host(li), memory.to_host(ri)) == ref_pairs(right, left, ["k"], ["k"], "outer")


def test_cuda_merge_every_payload_type_stays_on_device(cuda_device):
    """Payload columns of every type (nulls included), and left_on/right_on keys, come out of a
    CUDA merge gathered on the device: equal to the CPU merge, every buffer on the GPU."""
    from ..common.data import DTYPES

    types = {f"p{i}": t for i, t in enumerate(DTYPES)}
    # ~300 output rows per join type: every payload type with nulls, at a quarter of the
    # simulator's time at 120 x 90 (the CI lane's budget)
    left = random_table(60, {"x": pa.int64(), **types}, nulls=True, seed=5, cardinality=9)
    right = random_table(45, {"y": pa.int32(), "q": pa.float64(), "s": pa.string()}, nulls=True, seed=6,
                         cardinality=9)
    Lh, Rh = gpuframe.from_arrow(left), gpuframe.from_arrow(right)
    Lc, Rc = Lh.to(cuda_device), Rh.to(cuda_device)
    for how in ("inner", "left", "right", "outer"):
        kw = dict(left_on="x", right_on="y", how=how)
        out_c = gpuframe.merge(Lc, Rc, **kw)
        for name in out_c.column_names:
            col = out_c[name]
            for buf in (col.data, col.validity, col.offsets):
                assert buf is None or buf.device == cuda_device, (how, name)
        oc, oh = out_c.to_arrow(), gpuframe.merge(Lh, Rh, **kw).to_arrow()
        assert oc.schema == oh.schema
        assert rows_multiset(oc, oc.column_names) == rows_multiset(oh, oh.column_names), how
    # a merged 8-byte key without nulls is a view of the join's output words, on the device
    a = pa.table({"k": np.arange(50, dtype=np.int64) % 7, "v": np.arange(50)})
    b = pa.table({"k": np.arange(7, dtype=np.int64), "w": np.arange(7) * 1.5})
    out = gpuframe.merge(gpuframe.from_arrow(a).to(cuda_device), gpuframe.from_arrow(b).to(cuda_device), on="k")
    assert out["k"].data.device == cuda_device
    assert sorted(out.to_arrow().column("k").to_pylist()) == sorted((np.arange(50) % 7).tolist())


@pytest.mark.parametrize("ltype,rtype", [(pa.int32(), pa.int64()), (pa.int8(), pa.int16()), (pa.uint16(), pa.uint32()),
                                         (pa.float32(), pa.float64()), (pa.date32(), pa.date32()),
                                         (pa.int32(), pa.float32())])
def test_cuda_narrow_keys_widened_on_device(cuda_device, ltype, rtype):
    """Narrow fixed-width keys without nulls are widened by a kernel on the GPU: same result as
    the CPU, negative values and -0.0 included."""
    vals = np.array([-3, -1, 0, 1, 2, 2, 5, 7, 7, 7, 9, 100])
    def arr(t, v):
        if pa.types.is_unsigned_integer(t):
            v = np.abs(v)
        if pa.types.is_date(t):
            return pa.array(v.astype(np.int32), pa.int32()).cast(t)
        return pa.array(v).cast(t)
    left = pa.table({"k": arr(ltype, vals), "a": np.arange(len(vals))})
    right = pa.table({"k": arr(rtype, np.concatenate([vals[::2], [-0, 42]])), "b": np.arange(len(vals[::2]) + 2)})
    Lh, Rh = gpuframe.from_arrow(left), gpuframe.from_arrow(right)
    for how in ("inner", "outer", "semi"):
        oc = gpuframe.merge(Lh.to(cuda_device), Rh.to(cuda_device), on="k", how=how).to_arrow()
        oh = gpuframe.merge(Lh, Rh, on="k", how=how).to_arrow()
        assert oc.schema == oh.schema
        assert rows_multiset(oc, oc.column_names) == rows_multiset(oh, oh.column_names), how
