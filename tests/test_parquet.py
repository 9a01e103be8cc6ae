"""read_parquet / Table.to_parquet round trips and errors."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import gpuframe as gf

from .common.data import DTYPES, random_table
from .common.interop import SLICE_IDS, SLICES, sliced_array

ALL = {f"c{i}": t for i, t in enumerate(DTYPES)}


@pytest.mark.parametrize("case", SLICES, ids=SLICE_IDS)
def test_roundtrip_every_dtype(tmp_path, dtype, with_nulls, case):
    arr = sliced_array(dtype, case, with_nulls)
    t = gf.from_arrow(pa.table({"x": arr, "n": pa.array(range(len(arr)), pa.int64())}))
    path = tmp_path / "t.parquet"
    t.to_parquet(path)
    back = gf.read_parquet(path)
    assert back.column_names == ["x", "n"] and back.device == gf.Device("cpu")
    assert back.schema == t.schema  # pyarrow stores the Arrow schema: types come back exactly
    assert back.to_arrow().equals(t.to_arrow())


def test_columns_selection_and_order(tmp_path):
    src = random_table(50, ALL, nulls=True)
    path = tmp_path / "all.parquet"
    gf.from_arrow(src).to_parquet(path, row_group_size=16, compression="zstd")
    assert pq.ParquetFile(path).metadata.num_row_groups == 4  # kwargs reach pyarrow
    back = gf.read_parquet(str(path), columns=["c16", "c0", "c11"])
    assert back.column_names == ["c16", "c0", "c11"]
    assert back.to_arrow().equals(src.select(["c16", "c0", "c11"]))  # row groups are combined


def test_missing_columns_are_named(tmp_path):
    path = tmp_path / "a.parquet"
    gf.from_arrow(pa.table({"a": [1], "b": [2]})).to_parquet(path)
    with pytest.raises(KeyError, match=r"\['zz', 'yy'\] are not in"):
        gf.read_parquet(path, columns=["a", "zz", "yy"])
    with pytest.raises(TypeError, match="sequence of column names"):
        gf.read_parquet(path, columns="a")
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        gf.read_parquet(tmp_path / "nope.parquet")
    with pytest.raises(TypeError, match="path must be"):
        gf.read_parquet(42)


def test_directory_dataset_with_partitions(tmp_path):
    src = pa.table({"k": ["x", "y", "x", "y"], "v": [1, 2, 3, 4]})
    pq.write_to_dataset(src, tmp_path / "ds", partition_cols=["k"])
    t = gf.read_parquet(tmp_path / "ds", columns=["v", "k"])
    got = sorted(zip(t["v"].to_pylist(), t["k"].to_pylist()))
    assert got == [(1, "x"), (2, "y"), (3, "x"), (4, "y")]


def test_unsupported_type_in_file_names_the_column(tmp_path):
    path = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"ok": [1], "lists": [[1, 2]]}), path)
    with pytest.raises(TypeError, match="'lists' has unsupported type"):
        gf.read_parquet(path)
    assert gf.read_parquet(path, columns=["ok"])["ok"].to_pylist() == [1]


def test_zero_columns_and_rows(tmp_path):
    path = tmp_path / "empty.parquet"
    gf.from_arrow(pa.table({"a": pa.array([], pa.float32())})).to_parquet(path)
    t = gf.read_parquet(path)
    assert t.shape == (0, 1) and t["a"].dtype == pa.float32()
