"""Join keys: every stored key type, promotion between types, incompatible types, and the
validation errors of the public functions."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import gpuframe

from .common.data import DTYPES, DTYPE_IDS, random_array, random_table
from .test_join import check_join, cpu_path  # noqa: F401 (fixture)


@pytest.mark.parametrize("how", ["inner", "left", "outer", "anti"])
@pytest.mark.parametrize("t", DTYPES, ids=DTYPE_IDS)
def test_every_key_dtype(t, how, with_nulls):
    left = pa.table({"k": random_array(t, 120, nulls=with_nulls, seed=1, cardinality=25),
                     "a": np.arange(120)})
    right = pa.table({"k": random_array(t, 90, nulls=with_nulls, seed=2, cardinality=25),
                      "b": np.arange(90)})
    check_join(left, right, how, on="k")
    if with_nulls:
        check_join(left, right, how, on="k", nulls_equal=True)


@pytest.mark.parametrize("t", DTYPES, ids=DTYPE_IDS)
def test_every_dtype_in_a_multi_key(t):
    left = random_table(150, {"k1": pa.int16(), "k2": t, "a": pa.int64()}, nulls=True, seed=4, cardinality=6)
    right = random_table(100, {"k1": pa.int16(), "k2": t, "b": pa.float64()}, nulls=True, seed=8, cardinality=6)
    for how in ("inner", "outer", "semi"):
        check_join(left, right, how, on=["k1", "k2"])
        check_join(left, right, how, on=["k1", "k2"], nulls_equal=True)


@pytest.mark.parametrize("lt, rt", [
    (pa.int32(), pa.int64()), (pa.int8(), pa.uint8()), (pa.uint16(), pa.int64()), (pa.uint32(), pa.uint64()),
    (pa.int64(), pa.float64()), (pa.int32(), pa.float32()), (pa.float32(), pa.float64()),
    (pa.string(), pa.large_string()), (pa.dictionary(pa.int8(), pa.string()), pa.string()),
    (pa.dictionary(pa.int32(), pa.large_string()), pa.dictionary(pa.int16(), pa.string())),
])
def test_promotion(lt, rt):
    vals = [1, 2, 3, 3, None, 7]
    def arr(t, v):
        if pa.types.is_dictionary(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
            a = pa.array([None if x is None else str(x) for x in v], pa.string())
            return a.dictionary_encode().cast(t) if pa.types.is_dictionary(t) else a.cast(t)
        return pa.array(v, pa.int64()).cast(t)
    left = pa.table({"k": arr(lt, vals), "a": range(6)})
    right = pa.table({"k": arr(rt, [3, 7, 7, 9, None]), "b": range(5)})
    for how in ("inner", "left", "right", "outer"):
        check_join(left, right, how, on="k")


def test_promoted_key_types():
    L = gpuframe.from_arrow(pa.table({"k": pa.array([1, 2], pa.int32())}))
    R = gpuframe.from_arrow(pa.table({"k": pa.array([2, 3], pa.int64())}))
    assert gpuframe.merge(L, R, on="k", how="outer").schema.field("k").type == pa.int64()
    Rf = gpuframe.from_arrow(pa.table({"k": pa.array([2.0, 2.5], pa.float32())}))
    out = gpuframe.merge(L, Rf, on="k", how="outer")
    assert out.schema.field("k").type == pa.float64()
    assert sorted(out.to_arrow().column("k").to_pylist()) == [1.0, 2.0, 2.5]


def test_uint64_with_int64_compares_values():
    big = 2**63 + 5
    left = pa.table({"k": pa.array([big, 5, 2**63 - 1, 0], pa.uint64()), "a": range(4)})
    # -(2**63) + 5 has the same bits as 2**63 + 5: it must not match
    right = pa.table({"k": pa.array([-(2**63) + 5, 5, -1, 2**63 - 1], pa.int64()), "b": range(4)})
    for how in ("inner", "left", "right", "semi", "anti"):
        check_join(left, right, how, on="k")
    L, R = gpuframe.from_arrow(left), gpuframe.from_arrow(right)
    with pytest.raises(TypeError, match="no type holds every value of both; pass left_on= and right_on="):
        gpuframe.merge(L, R, on="k", how="outer")
    R2 = gpuframe.from_arrow(right.rename_columns(["k2", "b"]))
    li, ri = gpuframe.join_indices(L, R2, left_on="k", right_on="k2", how="outer")
    assert sorted(zip(li.tolist(), ri.tolist()), key=str) == sorted(
        [(1, 1), (2, 3), (0, -1), (3, -1), (-1, 0), (-1, 2)], key=str)
    out = gpuframe.merge(L, R2, left_on="k", right_on="k2", how="outer").to_arrow()
    assert out.schema.field("k").type == pa.uint64() and out.schema.field("k2").type == pa.int64()
    li, ri = gpuframe.join_indices(L, R, on="k")
    assert sorted(zip(li.tolist(), ri.tolist())) == [(1, 1), (2, 3)]
    # multi-key (general path) too
    left2 = left.append_column("j", pa.array([1, 1, 1, 1]))
    right2 = right.append_column("j", pa.array([1, 1, 1, 1]))
    check_join(left2, right2, "left", on=["k", "j"])


@pytest.mark.parametrize("lt, rt", [
    (pa.int64(), pa.string()), (pa.float64(), pa.large_string()), (pa.bool_(), pa.int8()),
    (pa.date32(), pa.int32()), (pa.date32(), pa.timestamp("s")), (pa.timestamp("us"), pa.timestamp("ns")),
    (pa.timestamp("ns"), pa.timestamp("ns", tz="UTC")), (pa.timestamp("ns", tz="UTC"), pa.timestamp("ns", tz="Europe/Paris")),
])
def test_incompatible_key_types(lt, rt):
    L = gpuframe.from_arrow(pa.table({"lk": pa.array([], lt)}))
    R = gpuframe.from_arrow(pa.table({"rk": pa.array([], rt)}))
    with pytest.raises(TypeError) as ei:
        gpuframe.merge(L, R, left_on="lk", right_on="rk")
    msg = str(ei.value)
    assert "'lk'" in msg and "'rk'" in msg and str(lt) in msg and str(rt) in msg
    with pytest.raises(TypeError):
        gpuframe.join_indices(L, R, left_on="lk", right_on="rk")
    with pytest.raises(TypeError):
        gpuframe.join_size(L, R, left_on="lk", right_on="rk")


# --------------------------------------------------------------------------- validation
@pytest.fixture
def lr():
    L = gpuframe.from_arrow(pa.table({"k": [1, 2], "a": [1, 2], "b": [0, 0]}))
    R = gpuframe.from_arrow(pa.table({"k": [2, 3], "c": [3, 4], "b": [1, 1]}))
    return L, R


def test_missing_columns(lr):
    L, R = lr
    with pytest.raises(KeyError, match=r"on: the left table has no column 'zz'; its columns are \['k', 'a', 'b'\]"):
        gpuframe.merge(L, R, on="zz")
    with pytest.raises(KeyError, match=r"right_on: the right table has no column 'a'; its columns are"):
        gpuframe.merge(L, R, left_on="k", right_on="a")
    with pytest.raises(KeyError, match="left_on"):
        gpuframe.join_indices(L, R, left_on=["k", "q"], right_on=["k", "c"])


@pytest.mark.parametrize("fn", [gpuframe.merge, gpuframe.join_indices, gpuframe.join_size])
def test_bad_arguments(lr, fn):
    L, R = lr
    if fn is gpuframe.merge:     # merge alone has the cross product, which takes no keys
        with pytest.raises(ValueError, match=r"how='cross' takes no keys; got on='k'"):
            fn(L, R, on="k", how="cross")
        with pytest.raises(ValueError, match=r"how must be one of \['inner', .*'anti', 'cross'\], got 'full'"):
            fn(L, R, on="k", how="full")
    else:
        with pytest.raises(ValueError, match=r"how must be one of \['inner', 'left', 'right', 'outer', 'semi', "
                                             r"'anti'\], got 'cross'"):
            fn(L, R, on="k", how="cross")
    with pytest.raises(ValueError, match="pass either on= or left_on= and right_on=, not both"):
        fn(L, R, on="k", left_on="k", right_on="k")
    with pytest.raises(ValueError, match="left_on and right_on must be given together"):
        fn(L, R, left_on="k")
    with pytest.raises(ValueError, match=r"same number of columns, got 2 \(\['k', 'a'\]\) and 1 \(\['k'\]\)"):
        fn(L, R, left_on=["k", "a"], right_on=["k"])
    with pytest.raises(TypeError, match="on must be a column name or a list of column names, got 3"):
        fn(L, R, on=3)
    with pytest.raises(ValueError, match="on must name at least one column, got"):
        fn(L, R, on=[])
    with pytest.raises(TypeError, match="right must be a gpuframe.Table, got dict"):
        fn(L, {"k": [1]}, on="k")
    with pytest.raises(TypeError, match="nulls_equal must be a bool, got 'yes'"):
        fn(L, R, on="k", nulls_equal="yes")


def test_bad_suffixes(lr):
    L, R = lr
    with pytest.raises(TypeError, match=r"suffixes must be a pair of str like \('_x', '_y'\), got \('_x',\)"):
        gpuframe.merge(L, R, on="k", suffixes=("_x",))
    with pytest.raises(ValueError, match="suffixes must differ"):
        gpuframe.merge(L, R, on="k", suffixes=("_s", "_s"))
    out = gpuframe.merge(L, R, on="k", suffixes=("_l", "_r"))
    assert out.column_names == ["k", "a", "b_l", "c", "b_r"]


def test_no_common_columns():
    L = gpuframe.from_arrow(pa.table({"a": [1]}))
    R = gpuframe.from_arrow(pa.table({"b": [1]}))
    with pytest.raises(ValueError, match="no key columns: pass on= or left_on=/right_on="):
        gpuframe.merge(L, R)


def test_result_name_collision():
    L = gpuframe.from_arrow(pa.table({"k": [1], "v": [1], "v_x": [2]}))
    R = gpuframe.from_arrow(pa.table({"k": [1], "v": [3]}))
    with pytest.raises(ValueError, match=r"duplicate columns \['v_x'\]"):
        gpuframe.merge(L, R, on="k")


# --------------------------------------------------------------------------- null dictionary entries
def _dict_with_null_entry() -> pa.DictionaryArray:
    # rows 1 and 2 point at a dictionary ENTRY that is null (their indices are valid)
    return pa.DictionaryArray.from_arrays(pa.array([0, 1, 1], pa.int32()), pa.array(["a", None]))


@pytest.mark.parametrize("how", ["inner", "left", "right", "outer", "semi", "anti"])
@pytest.mark.parametrize("nulls_equal", [False, True])
def test_null_dictionary_entry_is_a_null_key(how, nulls_equal, cpu_path):
    left = pa.table({"k": _dict_with_null_entry(), "a": [0, 1, 2]})
    right = pa.table({"k": pa.array(["", "a", None]), "b": [10, 11, 12]})
    check_join(left, right, how, on="k", nulls_equal=nulls_equal)
    # both sides dictionaries whose only nulls are null entries
    check_join(left, pa.table({"k": _dict_with_null_entry(), "b": [5, 6, 7]}), how, on="k",
               nulls_equal=nulls_equal)


def test_null_dictionary_entry_never_matches_empty_string():
    L = gpuframe.from_arrow(pa.table({"k": _dict_with_null_entry(), "a": [0, 1, 2]}))
    R = gpuframe.from_arrow(pa.table({"k": pa.array(["", "a", None]), "b": [10, 11, 12]}))
    out = gpuframe.merge(L, R, on="k").to_arrow()
    assert out.to_pydict() == {"k": ["a"], "a": [0], "b": [11]}
    out = gpuframe.merge(L, R, on="k", how="left").to_arrow().sort_by("a")
    assert out.to_pydict() == {"k": ["a", None, None], "a": [0, 1, 2], "b": [11, None, None]}
    # a null index and a null entry in one column, with an offset
    idx = pa.array([1, None, 0, 1], pa.int8()).slice(1)
    mixed = pa.DictionaryArray.from_arrays(idx, pa.array(["", None]))
    L2 = gpuframe.from_arrow(pa.table({"k": mixed, "a": [0, 1, 2]}))
    assert gpuframe.merge(L2, R, on="k").to_arrow().to_pydict() == {"k": [""], "a": [1], "b": [10]}
    assert gpuframe.join_size(L2, R, on="k", nulls_equal=True) == 3
