"""Core data model on the CPU: Device, Buffer, Column (Arrow layout, views, slices), Table."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import gpuframe as gf
from gpuframe.core import memory
from gpuframe.core.buffer import Buffer
from gpuframe.core.column import Column, pack_bits
from gpuframe.core.device import CPU, CUDA_INSTALL_HINT, Device, NoGPUError, as_device, cuda_available
from gpuframe.core.dtypes import Layout, layout_of, physical_numpy_dtype

from .common.data import DTYPES, random_array, random_table
from .common.interop import SLICE_IDS, SLICES, assert_same_memory, sliced_array

# ------------------------------------------------------------------------------------- devices


@pytest.mark.parametrize("text, expected", [
    (None, CPU), ("cpu", CPU), (" CPU ", CPU), ("cuda", Device("cuda", 0)), ("gpu", Device("cuda", 0)),
    ("cuda:3", Device("cuda", 3)), (Device("cuda", 1), Device("cuda", 1)),
])
def test_as_device(text, expected):
    assert as_device(text) == expected


@pytest.mark.parametrize("bad", ["tpu", "cuda:x", "cuda:-1", 3])
def test_as_device_rejects(bad):
    with pytest.raises(ValueError, match="device must be"):
        as_device(bad)


def test_device_validation_and_str():
    assert str(Device("cuda", 2)) == "cuda:2" and repr(CPU) == "Device('cpu')"
    with pytest.raises(ValueError, match="kind"):
        Device("tpu")
    with pytest.raises(ValueError, match="id"):
        Device("cpu", 1)


@pytest.mark.skipif(cuda_available(), reason="checks the error raised when no GPU is present")
def test_no_gpu_error_names_the_install_command():
    tbl = gf.from_arrow(pa.table({"a": [1, 2, 3]}))
    for move in (lambda: tbl.to("cuda"), lambda: tbl["a"].to("cuda:0"),
                 lambda: gf.from_arrow(pa.table({"a": [1]}), device="cuda")):
        with pytest.raises(NoGPUError) as err:
            move()
        msg = str(err.value)
        assert "no CUDA GPU was found" in msg and CUDA_INSTALL_HINT in msg
        assert "pip install 'gpuframe[cuda12]'" in msg
    assert not gf.cuda_available()


# ------------------------------------------------------------------------------------- buffers


def test_buffer_basics():
    arr = np.arange(10, dtype=np.int32)
    buf = Buffer(arr)
    assert buf.device == CPU and buf.size == 10 and buf.nbytes == 40 and buf.dtype == np.int32
    assert buf.ptr == arr.ctypes.data == memory.data_ptr(arr)
    assert buf.to(CPU) is buf
    assert buf.to_numpy() is arr
    assert "int32" in repr(buf) and "cpu" in repr(buf)


def test_memory_helpers_cpu():
    assert memory.empty(3, np.int64, CPU).shape == (3,)
    assert memory.zeros(4, np.uint8, CPU).sum() == 0
    out = memory.cumsum_exclusive(np.array([2, 0, 3]))
    assert out.tolist() == [0, 2, 2, 5]
    with pytest.raises(TypeError, match="numpy, cupy or numba"):
        memory.array_device([1, 2])


# ------------------------------------------------------------------------------------- columns


def _expected_validity(arr: pa.Array):
    if arr.null_count == 0:
        return None
    return np.array([v.is_valid for v in arr], dtype=np.uint8)


@pytest.mark.parametrize("case", SLICES, ids=SLICE_IDS)
def test_column_from_arrow_roundtrip(dtype, with_nulls, case):
    arr = sliced_array(dtype, case, with_nulls)
    col = Column.from_arrow(arr, "x")
    assert col.dtype == dtype and len(col) == len(arr) and col.offset == arr.offset
    assert col.null_count == arr.null_count and col.has_nulls == (arr.null_count > 0)
    assert col.layout == layout_of(dtype) and col.device == CPU
    back = col.to_arrow()
    back.validate(full=True)
    assert back.equals(arr)
    assert_same_memory(back, col)  # zero-copy both ways
    assert col.to_pylist() == arr.to_pylist()


@pytest.mark.parametrize("case", SLICES, ids=SLICE_IDS)
def test_column_views(dtype, with_nulls, case):
    arr = sliced_array(dtype, case, with_nulls)
    col = Column.from_arrow(arr, "x")
    valid = col.validity_bytes()
    expected_valid = _expected_validity(arr)
    if expected_valid is None:
        assert valid is None
    else:
        np.testing.assert_array_equal(valid, expected_valid)
    lay = col.layout
    if lay == Layout.FIXED:
        vals = col.values()
        assert vals.dtype == physical_numpy_dtype(dtype) and len(vals) == len(arr)
        phys = arr.cast(pa.int64()) if pa.types.is_timestamp(dtype) else (
            arr.cast(pa.int32()) if pa.types.is_date32(dtype) else arr)
        mask = np.asarray(expected_valid if expected_valid is not None else np.ones(len(arr)), dtype=bool)
        np.testing.assert_array_equal(vals[mask], phys.filter(pa.array(mask)).to_numpy(zero_copy_only=False))
        if len(vals):  # numpy gives empty slices the base address
            assert vals.ctypes.data == col.data.ptr + col.offset * vals.itemsize  # a view, not a copy
    elif lay == Layout.BOOL:
        bits = col.bool_bytes()
        filled = arr.fill_null(False).to_numpy(zero_copy_only=False)
        mask = expected_valid.astype(bool) if expected_valid is not None else np.ones(len(arr), bool)
        np.testing.assert_array_equal(bits.astype(bool)[mask], filled[mask])
        with pytest.raises(TypeError, match="fixed-width"):
            col.values()
    elif lay == Layout.STRING:
        offs = col.offsets_view()
        assert len(offs) == len(arr) + 1
        chars = col.chars()
        for i, v in enumerate(arr.to_pylist()):
            if v is not None:
                assert bytes(chars[offs[i]:offs[i + 1]]).decode() == v
    else:  # dictionary: indices view + dictionary column
        idx = col.values()
        expected = arr.indices.to_numpy(zero_copy_only=False)
        mask = expected_valid.astype(bool) if expected_valid is not None else np.ones(len(arr), bool)
        np.testing.assert_array_equal(idx[mask], expected[mask])
        assert col.dictionary.to_arrow().equals(arr.dictionary)


def test_views_reject_wrong_layout():
    s = Column.from_arrow(pa.array(["a"]))
    i = Column.from_arrow(pa.array([1]))
    with pytest.raises(TypeError, match="string column"):
        i.offsets_view()
    with pytest.raises(TypeError, match="bool column"):
        s.bool_bytes()


@pytest.mark.parametrize("start, length", [(0, 0), (1, 7), (3, 20), (9, 28), (37, 0)])
def test_column_slice_matches_pyarrow(dtype, with_nulls, start, length):
    arr = random_array(dtype, 37, nulls=with_nulls, seed=4)
    col = Column.from_arrow(arr).slice(start, length)
    out = col.to_arrow()
    out.validate(full=True)
    assert out.equals(arr.slice(start, length))
    assert col.null_count == arr.slice(start, length).null_count
    # slicing twice composes offsets
    if length > 2:
        assert col.slice(1, length - 2).to_arrow().equals(arr.slice(start + 1, length - 2))


def test_column_slice_bounds():
    col = Column.from_arrow(pa.array([1, 2, 3]))
    with pytest.raises(IndexError, match="outside a column of 3 rows"):
        col.slice(2, 2)
    with pytest.raises(IndexError):
        col.slice(-1, 1)


def test_chunked_array_is_combined_single_chunk_is_not():
    one = pa.chunked_array([pa.array([1, 2, 3], pa.int64())])
    col = Column.from_arrow(one)
    assert col.data.ptr == one.chunk(0).buffers()[1].address  # zero-copy
    many = pa.chunked_array([pa.array([1, None]), pa.array([3]), pa.array([], pa.int64())])
    col = Column.from_arrow(many)
    assert col.to_pylist() == [1, None, 3] and col.null_count == 1
    empty = pa.chunked_array([], type=pa.string())
    assert Column.from_arrow(empty).to_pylist() == []
    dicts = pa.chunked_array([pa.array(["a", "b"]).dictionary_encode(), pa.array(["c", None, "a"]).dictionary_encode()])
    assert Column.from_arrow(dicts).to_pylist() == ["a", "b", "c", None, "a"]


@pytest.mark.parametrize("bad", [
    pa.array([[1], [2]], pa.list_(pa.int32())),
    pa.array([{"a": 1}], pa.struct([("a", pa.int32())])),
    pa.array([1], pa.decimal128(5, 2)),
    pa.array([None], pa.null()),
    pa.array([1], pa.date64()),
    pa.array([1], pa.duration("s")),
    pa.array([1], pa.float16()) if hasattr(pa, "float16") else pa.array([1], pa.int8()).cast(pa.float16()),
    pa.array([1, 2], pa.int64()).dictionary_encode(),
], ids=["list", "struct", "decimal", "null", "date64", "duration", "float16", "dict_of_int"])
def test_unsupported_types_name_the_column(bad):
    with pytest.raises(TypeError) as err:
        Column.from_arrow(bad, "my_col")
    assert "'my_col'" in str(err.value) and str(bad.type) in str(err.value)
    with pytest.raises(TypeError, match="'my_col'"):
        gf.from_arrow(pa.table({"ok": pa.array([1] * len(bad)), "my_col": bad}))


def test_ordered_dictionary_keeps_its_flag():
    t = pa.dictionary(pa.int8(), pa.string(), ordered=True)
    arr = pa.array(["b", "a", None]).dictionary_encode().cast(t)
    assert Column.from_arrow(arr).to_arrow().type == t


def test_from_numpy():
    col = Column.from_numpy(np.array([1.5, 2.5, 3.5]), valid=[True, False, True])
    assert col.to_pylist() == [1.5, None, 3.5] and col.null_count == 1
    arr = np.arange(6, dtype=np.int16)
    col = Column.from_numpy(arr)
    assert col.data.ptr == arr.ctypes.data and col.validity is None
    col = Column.from_numpy(np.array([True, False, True]))
    assert col.dtype == pa.bool_() and col.to_pylist() == [True, False, True]
    np.testing.assert_array_equal(col.data.array, pack_bits([True, False, True]))


def test_column_nbytes():
    col = Column.from_arrow(pa.array(["ab", None, "cde"]))
    assert col.nbytes == 1 + 4 * 4 + 5
    assert Column.from_arrow(pa.array([1, 2], pa.int32())).nbytes == 8


# ------------------------------------------------------------------------------------- tables


def test_table_basics():
    src = random_table(10, {"a": pa.int64(), "s": pa.string(), "d": pa.dictionary(pa.int32(), pa.string())}, nulls=True)
    t = gf.from_arrow(src)
    assert t.shape == (10, 3) and len(t) == 10 and t.num_rows == 10
    assert t.column_names == ["a", "s", "d"] and t.schema.names == ["a", "s", "d"]
    assert t.device == CPU and t[0] is t["a"] and t[-1] is t["d"] and "s" in t
    assert t.to(CPU) is t and t.to("cpu") is t
    assert t.select(["d", "a"]).column_names == ["d", "a"]
    assert t.select("s").column_names == ["s"]
    assert t.rename({"a": "x"}).column_names == ["x", "s", "d"]
    assert t.with_column("n", t["a"]).column_names == ["a", "s", "d", "n"]
    assert t.equals(gf.from_arrow(src)) and not t.equals(t.slice(1))
    assert t.nbytes == sum(c.nbytes for c in t.columns)
    with pytest.raises(KeyError, match="no column named 'zz'"):
        t["zz"]
    with pytest.raises(IndexError, match="out of range"):
        t[3]


def test_table_slice():
    src = random_table(20, {"a": pa.int32(), "b": pa.bool_()}, nulls=True)
    t = gf.from_arrow(src)
    assert t.slice(3, 9).to_arrow().equals(src.slice(3, 9))
    assert t.slice(15).num_rows == 5 and t.slice(25).num_rows == 0 and t.slice(5, 100).num_rows == 15
    with pytest.raises(ValueError, match="offset must be"):
        t.slice(-1)
    with pytest.raises(ValueError, match="length must be"):
        t.slice(0, -2)


def test_table_validation():
    a = Column.from_arrow(pa.array([1, 2]))
    b = Column.from_arrow(pa.array([1, 2, 3]))
    with pytest.raises(ValueError, match="same length"):
        gf.Table({"a": a, "b": b})
    with pytest.raises(TypeError, match="column names must be str"):
        gf.Table({1: a})
    with pytest.raises(ValueError, match="unique.*'a'"):
        gf.Table([("a", a), ("a", a)])
    with pytest.raises(ValueError, match="unique"):
        gf.from_arrow(pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["x", "x"]))


def test_empty_tables():
    t = gf.Table({})
    assert t.shape == (0, 0) and t.to_arrow().num_columns == 0
    t = gf.from_arrow(pa.table({"a": pa.array([], pa.int64()), "s": pa.array([], pa.string())}))
    assert t.shape == (0, 2) and t.to_arrow().schema.names == ["a", "s"]


@pytest.mark.parametrize("nulls", [False, True])
def test_every_dtype_table_roundtrip(nulls):
    src = random_table(33, {f"c{i}": t for i, t in enumerate(DTYPES)}, nulls=nulls).slice(3, 27)
    t = gf.from_arrow(src)
    assert t.to_arrow().equals(src.combine_chunks())
    assert t.schema == src.schema
