"""pandas interop: from_pandas / Table.to_pandas round trips, zero-copy numeric columns, nulls."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import gpuframe as gf

from .common.data import random_array
from .common.interop import SLICE_IDS, SLICES, sliced_array

pd = pytest.importorskip("pandas")


@pytest.mark.parametrize("case", SLICES, ids=SLICE_IDS)
def test_arrow_to_pandas_and_back(dtype, with_nulls, case):
    arr = sliced_array(dtype, case, with_nulls)
    t = gf.from_arrow(pa.table({"x": arr}))
    df = t.to_pandas()
    assert list(df.columns) == ["x"] and len(df) == len(arr)
    assert isinstance(df.index, pd.RangeIndex)
    # values as pandas sees them, against pyarrow's own conversion of the same array
    expected = pa.table({"x": arr}).to_pandas()["x"]
    got = df["x"]
    assert [None if pd.isna(v) else v for v in got.tolist()] == [None if pd.isna(v) else v for v in expected.tolist()]
    # an empty object/categorical column carries no type in pandas: give it (see from_pandas)
    untyped = len(arr) == 0 and (pa.types.is_date32(dtype) or pa.types.is_dictionary(dtype))
    back = gf.from_pandas(df, schema=pa.schema([("x", dtype)]) if untyped else None)
    assert back.column_names == ["x"] and back.num_rows == len(arr)
    # pandas changes some physical types (strings -> large_string, dates -> object, ints with
    # nulls -> nullable ints): compare values after casting to the original type
    assert back["x"].to_arrow().cast(dtype).equals(arr)


def test_from_pandas_zero_copy_numeric():
    df = pd.DataFrame({"i": np.arange(100, dtype=np.int64), "f": np.linspace(0, 1, 100),
                       "u": np.arange(100, dtype=np.uint16)})
    t = gf.from_pandas(df)
    for name in df.columns:
        assert t[name].data.ptr == df[name].to_numpy().ctypes.data, name
        assert t[name].validity is None


def test_from_pandas_types_and_nulls():
    df = pd.DataFrame({
        "i": [1, 2, 3],
        "ni": pd.array([1, None, 3], dtype="Int64"),
        "f": [1.0, np.nan, 3.0],
        "s": ["a", None, "ß"],
        "c": pd.Categorical(["x", "y", "x"]),
        "t": pd.date_range("2024-01-01", periods=3, tz="UTC"),
        "b": [True, False, True],
    }, index=[7, 8, 9])
    t = gf.from_pandas(df)
    assert t.column_names == list(df.columns)  # the index is dropped
    assert t["ni"].to_pylist() == [1, None, 3] and t["ni"].dtype == pa.int64()
    assert t["f"].to_pylist() == [1.0, None, 3.0]  # NaN is missing in pandas
    assert t["s"].to_pylist() == ["a", None, "ß"]
    assert pa.types.is_dictionary(t["c"].dtype) and t["c"].to_pylist() == ["x", "y", "x"]
    assert pa.types.is_timestamp(t["t"].dtype) and t["t"].dtype.tz == "UTC"
    assert t["b"].dtype == pa.bool_()
    back = t.to_pandas()
    assert back["c"].dtype == "category"
    assert back["t"].equals(df["t"].reset_index(drop=True))


def test_preserve_index():
    df = pd.DataFrame({"a": [1, 2]}, index=pd.Index([10, 20], name="key"))
    assert gf.from_pandas(df).column_names == ["a"]
    t = gf.from_pandas(df, preserve_index=True)
    assert t.column_names == ["a", "key"] and t["key"].to_pylist() == [10, 20]
    unnamed = gf.from_pandas(pd.DataFrame({"a": [1]}, index=[5]), preserve_index=True)
    assert unnamed.column_names == ["a", "__index_level_0__"]
    with pytest.raises(TypeError, match="preserve_index must be a bool"):
        gf.from_pandas(df, preserve_index="yes")


def test_series_and_bad_input():
    t = gf.from_pandas(pd.Series([1, 2], name="v"))
    assert t.column_names == ["v"]
    assert gf.from_pandas(pd.Series([1.5]))["0"].to_pylist() == [1.5]
    with pytest.raises(TypeError, match="pandas DataFrame or Series, got dict"):
        gf.from_pandas({"a": [1]})
    with pytest.raises(TypeError, match="schema must be a pyarrow.Schema"):
        gf.from_pandas(pd.DataFrame({"a": [1]}), schema={"a": "int64"})


def test_empty_object_column_needs_a_schema():
    df = pd.DataFrame({"d": pd.Series([], dtype=object)})
    with pytest.raises(TypeError, match="'d' has unsupported type null"):
        gf.from_pandas(df)
    assert gf.from_pandas(df, schema=pa.schema([("d", pa.date32())]))["d"].dtype == pa.date32()


def test_unsupported_pandas_column_names_the_column():
    df = pd.DataFrame({"ok": [1], "nested": [[1, 2]]})
    with pytest.raises(TypeError, match="'nested' has unsupported type list"):
        gf.from_pandas(df)


def test_integers_with_nulls_keep_every_digit():
    big = 2**62 + 1  # not representable in float64
    t = gf.from_arrow(pa.table({"i": pa.array([big, None], pa.int64()), "u": pa.array([2**64 - 1, None], pa.uint64()),
                                "b": pa.array([True, None]), "plain": pa.array([1, 2], pa.int64())}))
    df = t.to_pandas()
    assert str(df["i"].dtype) == "Int64" and df["i"][0] == big and df["i"].isna().tolist() == [False, True]
    assert str(df["u"].dtype) == "UInt64" and df["u"][0] == 2**64 - 1
    assert str(df["b"].dtype) == "boolean"
    assert df["plain"].dtype == np.int64  # no nulls: NumPy dtype
    assert gf.from_pandas(df)["i"].to_pylist() == [big, None]
    # an explicit types_mapper wins
    df2 = t.to_pandas(types_mapper={pa.int64(): pd.ArrowDtype(pa.int64())}.get)
    assert isinstance(df2["i"].dtype, pd.ArrowDtype)


def test_zero_rows_and_zero_columns():
    t = gf.from_arrow(pa.table({"a": pa.array([], pa.int32()), "s": pa.array([], pa.string())}))
    df = t.to_pandas()
    assert list(df.columns) == ["a", "s"] and len(df) == 0
    assert gf.from_pandas(df).num_rows == 0
    assert gf.Table({}).to_pandas().shape == (0, 0)


def test_to_pandas_kwargs_pass_through():
    t = gf.from_arrow(pa.table({"d": random_array(pa.date32(), 4)}))
    assert t.to_pandas(date_as_object=False)["d"].dtype.kind == "M"
    assert t.to_pandas()["d"].dtype == object
