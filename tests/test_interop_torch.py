"""DLPack and PyTorch on the CPU: zero-copy export (data_ptr == Buffer.ptr + offset*itemsize),
null refusal / masks, bool and string handling, from_dlpack."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import gpuframe as gf
from gpuframe.core.column import Column
from gpuframe.core.dtypes import Layout

from .common.data import random_array, random_table
from .common.interop import SLICE_IDS, SLICES, sliced_array

torch = pytest.importorskip("torch")

TORCH_DTYPE = {
    pa.int8(): torch.int8, pa.int16(): torch.int16, pa.int32(): torch.int32, pa.int64(): torch.int64,
    pa.uint8(): torch.uint8, pa.uint16(): torch.uint16, pa.uint32(): torch.uint32, pa.uint64(): torch.uint64,
    pa.float32(): torch.float32, pa.float64(): torch.float64, pa.bool_(): torch.bool, pa.date32(): torch.int32,
}


def _expected_torch_dtype(dtype: pa.DataType):
    if pa.types.is_timestamp(dtype):
        return torch.int64
    if pa.types.is_dictionary(dtype):
        return TORCH_DTYPE[dtype.index_type]
    return TORCH_DTYPE[dtype]


def _physical(arr: pa.Array) -> pa.Array:
    """What the tensor holds: integer counts for dates/timestamps, indices for dictionaries."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return arr.indices
    if pa.types.is_timestamp(t):
        return arr.cast(pa.int64())
    if pa.types.is_date32(t):
        return arr.cast(pa.int32())
    return arr


@pytest.mark.parametrize("case", SLICES, ids=SLICE_IDS)
def test_to_torch_every_dtype(dtype, with_nulls, case):
    arr = sliced_array(dtype, case, with_nulls)
    t = gf.from_arrow(pa.table({"x": arr}))
    col = t["x"]
    if col.layout == Layout.STRING:
        with pytest.raises(TypeError, match="column 'x' has type .*string"):
            t.to_torch()
        return
    if col.has_nulls:
        with pytest.raises(ValueError, match=r"column 'x' has \d+ null"):
            t.to_torch()
        values, valid = t.to_torch(nulls="mask")["x"]
        assert valid.dtype == torch.bool and valid.tolist() == [v.is_valid for v in arr]
    else:
        values = t.to_torch()["x"]
        valid = torch.ones(len(arr), dtype=torch.bool)
        masked = t.to_torch(nulls="mask")["x"]
        assert isinstance(masked, torch.Tensor) and masked.tolist() == values.tolist()  # no mask without nulls
    assert values.dtype == _expected_torch_dtype(dtype) and values.shape == (len(arr),)
    assert values.device.type == "cpu"
    phys = _physical(arr)
    expected = phys.fill_null(False if pa.types.is_boolean(dtype) else 0).to_pylist()
    got = values.tolist()
    assert [g for g, ok in zip(got, valid.tolist()) if ok] == [e for e, ok in zip(expected, valid.tolist()) if ok]
    if col.layout != Layout.BOOL and len(arr):
        # zero-copy: the tensor starts at the column's first value inside our buffer
        assert values.data_ptr() == col.data.ptr + col.offset * col.data.dtype.itemsize


def test_to_torch_table_and_errors():
    src = random_table(20, {"i": pa.int64(), "f": pa.float32(), "d": pa.dictionary(pa.int16(), pa.string())})
    t = gf.from_arrow(src)
    out = t.to_torch()
    assert list(out) == ["i", "f", "d"]
    assert out["d"].dtype == torch.int16
    assert out["i"].tolist() == src["i"].to_pylist()
    with pytest.raises(ValueError, match="nulls must be 'raise' or 'mask', got 'drop'"):
        t.to_torch(nulls="drop")
    mixed = gf.from_arrow(pa.table({"i": [1, 2], "s": ["a", "b"]}))
    with pytest.raises(TypeError, match="column 's'"):
        mixed.to_torch()
    assert gf.Table({}).to_torch() == {}


def test_tensor_writes_are_visible_in_the_column():
    t = gf.from_arrow(pa.table({"a": np.arange(8, dtype=np.int64)}).slice(2))
    tensor = t.to_torch()["a"]
    tensor[0] = 100
    assert t["a"].to_pylist()[0] == 100


def test_bool_is_unpacked_copy():
    arr = pa.array([True, False, True, True, False, False, True, False, True]).slice(3)
    t = gf.from_arrow(pa.table({"b": arr}))
    out = t.to_torch()["b"]
    assert out.dtype == torch.bool and out.tolist() == arr.to_pylist()
    with pytest.raises(BufferError, match="copy=False"):
        t["b"].__dlpack__(copy=False)


# ------------------------------------------------------------------------------- Column.__dlpack__


def test_column_dlpack_protocol():
    arr = pa.array(np.arange(20, dtype=np.float64)).slice(5, 10)
    col = Column.from_arrow(arr)
    assert col.__dlpack_device__() == (1, 0)
    via_torch = torch.from_dlpack(col)
    via_numpy = np.from_dlpack(col)
    assert via_torch.tolist() == arr.to_pylist() == via_numpy.tolist()
    expected_ptr = col.data.ptr + 5 * 8
    assert via_torch.data_ptr() == expected_ptr and via_numpy.ctypes.data == expected_ptr
    nulls = Column.from_arrow(pa.array([1, None]))
    with pytest.raises(ValueError, match="null"):
        nulls.__dlpack__()
    with pytest.raises(TypeError, match="strings have no tensor form"):
        Column.from_arrow(pa.array(["a"])).__dlpack__()


# ------------------------------------------------------------------------------- from_dlpack


@pytest.mark.parametrize("tdtype", [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8,
                                    torch.float32, torch.float64])
def test_from_dlpack_torch_zero_copy(tdtype):
    x = torch.arange(10).to(tdtype)
    col = gf.from_dlpack(x)
    assert isinstance(col, Column) and col.data.ptr == x.data_ptr()
    assert col.to_pylist() == x.tolist()
    x[3] = 42
    assert col.to_pylist()[3] == 42  # shared memory


def test_from_dlpack_variants():
    arr = np.arange(5, dtype=np.uint32)
    col = gf.from_dlpack(arr)
    assert col.dtype == pa.uint32() and col.data.ptr == arr.ctypes.data
    strided = torch.arange(10)[::3]
    assert gf.from_dlpack(strided).to_pylist() == [0, 3, 6, 9]  # made contiguous: a copy
    b = gf.from_dlpack(torch.tensor([True, False, True]))
    assert b.dtype == pa.bool_() and b.to_pylist() == [True, False, True]
    t = gf.from_dlpack(torch.arange(3), name="v")
    assert isinstance(t, gf.Table) and t.column_names == ["v"] and t["v"].to_pylist() == [0, 1, 2]
    assert gf.from_dlpack(torch.empty(0)).length == 0
    # a gpuframe column round-trips through DLPack without copying
    col = Column.from_arrow(pa.array([1, 2, 3], pa.int16()))
    assert gf.from_dlpack(col).data.ptr == col.data.ptr


def test_from_dlpack_errors():
    with pytest.raises(ValueError, match="1-D tensor, got shape \\(2, 2\\)"):
        gf.from_dlpack(torch.zeros(2, 2))
    with pytest.raises(TypeError, match="float16"):
        gf.from_dlpack(torch.zeros(2, dtype=torch.float16))
    with pytest.raises(TypeError, match="complex"):
        gf.from_dlpack(np.zeros(2, dtype=np.complex64))
    with pytest.raises(TypeError, match="__dlpack__"):
        gf.from_dlpack([1, 2])
    with pytest.raises(TypeError, match="name must be a str"):
        gf.from_dlpack(torch.arange(2), name=3)


def test_dictionary_exports_indices():
    arr = random_array(pa.dictionary(pa.int32(), pa.string()), 30, seed=3, cardinality=4).slice(7)
    t = gf.from_arrow(pa.table({"d": arr}))
    out = t.to_torch()["d"]
    assert out.tolist() == arr.indices.to_pylist()
    assert out.data_ptr() == t["d"].data.ptr + t["d"].offset * 4
