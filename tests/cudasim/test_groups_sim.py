"""unique, the set operations, filter and groupby on CUDA (numba's simulator): the CPU backend's
results, and O(1) bytes between host and device. Small tables: the simulator is slow."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

import gpuframe
from gpuframe.core import memory
from gpuframe.ops.groupby import OPS

from ..common.data import random_array

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")

LIMIT = 4096   # bytes an operation may move (sizes and scalars)


def _table(n: int, seed: int, card: int) -> pa.Table:
    return pa.table({"i": random_array(pa.int32(), n, nulls=True, seed=seed, cardinality=card),
                     "s": random_array(pa.string(), n, nulls=True, seed=seed + 1, cardinality=card),
                     "f": random_array(pa.float64(), n, nulls=True, seed=seed + 2, cardinality=card),
                     "b": random_array(pa.bool_(), n, nulls=True, seed=seed + 3)})


def _host(t) -> pa.Table:
    return t.to("cpu").to_arrow()


def _same(a: pa.Table, b: pa.Table, rel: float = 0.0) -> None:
    assert a.schema == b.schema
    for name in a.column_names:
        x, y = a.column(name).to_pylist(), b.column(name).to_pylist()
        for u, v in zip(x, y):
            if isinstance(u, float) and isinstance(v, float):
                assert (math.isnan(u) and math.isnan(v)) or math.isclose(u, v, rel_tol=rel, abs_tol=rel), (name, u, v)
            else:
                assert u == v, (name, u, v)
        assert len(x) == len(y)


@pytest.mark.parametrize("keep", ["first", "last", "any"])
def test_unique_matches_cpu(cuda_device, keep):
    t = _table(150, 1, 6)
    g = gpuframe.from_arrow(t)
    for subset in (["i"], ["s", "b"], None):
        _same(_host(gpuframe.unique(g.to(cuda_device), subset, keep=keep)), gpuframe.unique(g, subset, keep=keep)
              .to_arrow())


def test_set_ops_filter_concat_match_cpu(cuda_device):
    a, b = _table(120, 2, 5), _table(80, 5, 5)
    ga, gb = gpuframe.from_arrow(a), gpuframe.from_arrow(b)
    da, db = ga.to(cuda_device), gb.to(cuda_device)
    for op in (gpuframe.union, gpuframe.intersect, gpuframe.difference):
        _same(_host(op(da, db)), op(ga, gb).to_arrow())
    _same(_host(gpuframe.union(da, db, distinct=False)), gpuframe.union(ga, gb, distinct=False).to_arrow())
    mask = gpuframe.Column.from_arrow(pa.array(np.arange(120) % 3 == 0).cast(pa.bool_()))
    _same(_host(da.filter(mask.to(cuda_device))), ga.filter(mask).to_arrow())
    sa, sb = ga.slice(0, 9), gb.slice(0, 7)
    _same(_host(gpuframe.merge(sa.to(cuda_device), sb.to(cuda_device), how="cross")),
          gpuframe.merge(sa, sb, how="cross").to_arrow())


@pytest.mark.parametrize("by", [["i"], ["s", "b"]], ids=str)
def test_groupby_matches_cpu(cuda_device, by):
    t = _table(160, 7, 8)
    g = gpuframe.from_arrow(t)
    if by == ["i"]:     # every op of a float column, and the int and string ones
        aggs = {f"{op}_f": ("f", op) for op in OPS}
        aggs.update({f"{op}_i": ("i", op) for op in ("sum", "min", "max", "median")})
        aggs.update({f"{op}_s": ("s", op) for op in ("min", "max", "nunique")})
    else:
        aggs = {"sum_b": ("b", "sum"), "mean_i": ("i", "mean"), "first_s": ("s", "first"), "var_f": ("f", "var")}
    want = gpuframe.groupby_agg(g, by, aggs).to_arrow()
    got = _host(gpuframe.groupby_agg(g.to(cuda_device), by, aggs))
    _same(got, want, rel=1e-12)     # float sums: added in another order


def test_group_operations_move_o1_bytes(cuda_device):
    g = gpuframe.from_arrow(_table(128, 9, 10)).to(cuda_device)
    memory.available_bytes(cuda_device)
    ops = {
        "unique": lambda: gpuframe.unique(g, ["i", "s"]),
        "unique_last": lambda: gpuframe.unique(g, ["f"], keep="last"),
        "intersect": lambda: gpuframe.intersect(g, g.slice(0, 100)),
        "groupby": lambda: gpuframe.groupby_agg(g, ["s"], {"a": ("f", "sum"), "b": ("i", "max"), "c": ("f", "std"),
                                                           "d": ("s", "first"), "e": ("i", "sum")}),
        "filter": lambda: g.filter(gpuframe.Column.from_arrow(pa.array(np.arange(128) % 2 == 0)).to(cuda_device)),
    }
    for name, fn in ops.items():
        with memory.count_transfers() as moved:
            fn()
        assert moved.bytes <= LIMIT, (name, moved)


def test_integer_sum_overflow_raises_on_the_device(cuda_device):
    big = np.iinfo(np.int64).max // 2 + 1
    t = gpuframe.from_arrow(pa.table({"k": [1, 1, 2], "v": [big, big, 1]})).to(cuda_device)
    with pytest.raises(OverflowError, match="sum of column 'v' overflows int64"):
        gpuframe.groupby_agg(t, "k", {"s": ("v", "sum")})
    u = gpuframe.from_arrow(pa.table({"k": [1, 2, 2], "v": pa.array([2**63, 5, 1], pa.uint64())})).to(cuda_device)
    with pytest.raises(OverflowError, match="sum of column 'v' overflows int64"):
        gpuframe.groupby_agg(u, "k", {"s": ("v", "sum")})


def test_uint64_order_on_the_device(cuda_device):
    t = pa.table({"k": [1, 2, 1, 2, 1], "v": pa.array([2**64 - 1, 3, 0, None, 2**63], pa.uint64())})
    aggs = {"lo": ("v", "min"), "hi": ("v", "max"), "s": ("v", "count")}
    _same(_host(gpuframe.groupby_agg(gpuframe.from_arrow(t).to(cuda_device), "k", aggs)),
          gpuframe.groupby_agg(gpuframe.from_arrow(t), "k", aggs).to_arrow())


def test_concat_on_the_device(cuda_device):
    t = _table(70, 11, 9).append_column("L", pa.array([f"x{i}" for i in range(70)], pa.large_string()))
    g = gpuframe.from_arrow(t)
    pieces = [g.slice(3, 20), g.slice(0, 0), g.slice(29, 41), g.slice(0, 5)]   # offsets not on byte boundaries
    want = gpuframe.concat(pieces).to_arrow()
    dev = [p.to(cuda_device) for p in pieces]
    with memory.count_transfers() as moved:
        got = gpuframe.concat(dev)
    _same(_host(got), want)
    assert moved.bytes <= LIMIT, moved


def test_promotions_dictionaries_and_dropna_on_the_device(cuda_device):
    a = pa.table({"k": random_array(pa.int32(), 60, nulls=True, seed=1, cardinality=7),
                  "s": random_array(pa.dictionary(pa.int16(), pa.string()), 60, nulls=True, seed=2, cardinality=5)})
    b = pa.table({"k": random_array(pa.int64(), 40, nulls=True, seed=3, cardinality=7),
                  "s": random_array(pa.large_string(), 40, nulls=True, seed=4, cardinality=5)}).slice(3)
    ga, gb = gpuframe.from_arrow(a), gpuframe.from_arrow(b)
    da, db = ga.to(cuda_device), gb.to(cuda_device)
    with memory.count_transfers() as moved:
        got = gpuframe.union(da, db)
        got_all = gpuframe.union(da, db, distinct=False)
        grouped = gpuframe.groupby_agg(da, "k", {"lo": ("s", "min"), "hi": ("s", "max")}, dropna=True)
    assert moved.bytes <= LIMIT, moved
    _same(_host(got), gpuframe.union(ga, gb).to_arrow())
    _same(_host(got_all), gpuframe.union(ga, gb, distinct=False).to_arrow())
    _same(_host(grouped), gpuframe.groupby_agg(ga, "k", {"lo": ("s", "min"), "hi": ("s", "max")}, dropna=True)
          .to_arrow())
