"""Interop on a real CUDA GPU (CuPy): the ArrowDeviceArray export with its sync event, import of
device pointers without copying (UnownedMemory), DLPack with CuPy and PyTorch, cuDF if present.

Every test is marked ``gpu`` and skips without a GPU (see tests/conftest.py).
"""
from __future__ import annotations

import ctypes

import numpy as np
import pyarrow as pa
import pytest

import gpuframe as gf
from gpuframe.core.column import Column
from gpuframe.core.device import Device, NoGPUError, gpu_count
from gpuframe.core.dtypes import Layout
from gpuframe.interop import arrow_c_abi as cd

from ..common.data import DTYPES, random_table
from ..common.interop import DeviceArrayOnly, assert_released, live_exports, sliced_array

pytestmark = pytest.mark.gpu

ALL = {f"c{i}": t for i, t in enumerate(DTYPES)}


@pytest.fixture
def cp():
    return pytest.importorskip("cupy")


def _gpu_table(nulls=True, n=300, offset=13, length=250):
    src = random_table(n, ALL, nulls=nulls, seed=5).slice(offset, length)
    return src.combine_chunks(), gf.from_arrow(src, device="cuda")


def test_columns_live_in_cupy_arrays(cp):
    _, t = _gpu_table()
    for col in t.columns:
        assert isinstance(col.data.array, cp.ndarray) and col.device == Device("cuda", 0)


def test_device_array_export_has_cuda_fields_and_a_real_event(cp):
    src, t = _gpu_table()
    s_cap, a_cap = t.__arrow_c_device_array__()
    d = cd.ArrowDeviceArray.from_address(cd.capsule_pointer(a_cap, cd.DEVICE_ARRAY_CAPSULE))
    assert d.device_type == cd.ARROW_DEVICE_CUDA and d.device_id == 0
    assert d.sync_event, "a CUDA export must carry a cudaEvent_t*"
    event = ctypes.c_void_p.from_address(d.sync_event).value
    assert event
    cp.cuda.runtime.eventSynchronize(event)  # a valid event handle: synchronising on it works
    assert cp.cuda.runtime.eventQuery(event) == 0  # cudaSuccess: recorded work is complete
    for i, col in enumerate(t.columns):
        child = d.array.children[i].contents
        # Arrow's buffer order: string [validity, offsets, data]; others [validity, data/indices]
        if col.layout == Layout.STRING:
            assert child.buffers[1] == col.offsets.ptr and child.buffers[2] == col.data.ptr
        else:
            assert child.buffers[1] == col.data.ptr
        assert child.offset == col.offset
        if col.validity is not None:
            assert child.buffers[0] == col.validity.ptr
    assert pa.Schema._import_from_c_capsule(s_cap) == src.schema


def test_device_round_trip_wraps_the_same_device_memory(cp):
    src, t = _gpu_table()
    before = live_exports()
    back = gf.from_arrow(DeviceArrayOnly(t))
    assert back.device == t.device
    for name in t.column_names:
        a, b = t[name], back[name]
        assert isinstance(b.data.array, cp.ndarray)
        assert b.data.ptr == a.data.ptr and b.offset == a.offset  # no copy
        if a.layout == Layout.STRING:
            assert b.offsets.ptr == a.offsets.ptr
    assert back.to_arrow().equals(src)
    del back, b
    assert_released(before)


def test_every_dtype_on_gpu(cp, dtype, with_nulls):
    arr = sliced_array(dtype, (200, 11, 150), with_nulls)
    col = Column.from_arrow(arr).to("cuda")
    assert col.device.is_cuda and col.to_arrow().equals(arr)
    back = gf.from_arrow(DeviceArrayOnly(col))["0"]
    assert back.data.ptr == col.data.ptr and back.to_arrow().equals(arr)


def test_cupy_dlpack_shares_memory(cp):
    _, t = _gpu_table(nulls=False)
    col = t["c3"]  # int64
    assert col.__dlpack_device__() == (2, 0)
    x = cp.from_dlpack(col)
    assert x.data.ptr == col.data.ptr + col.offset * 8
    np.testing.assert_array_equal(cp.asnumpy(x), np.asarray(col.to_pylist()))
    back = gf.from_dlpack(x)
    assert back.device.is_cuda and back.data.ptr == x.data.ptr
    b = gf.from_dlpack(cp.asarray([True, False, True]))
    assert b.dtype == pa.bool_() and b.to_pylist() == [True, False, True]


def test_torch_cuda_tensors_share_memory(cp):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("this torch build has no CUDA")
    src, t = _gpu_table(nulls=False)
    out = t.select([n for n in t.column_names if t[n].layout != Layout.STRING]).to_torch()
    for name, tensor in out.items():
        col = t[name]
        assert tensor.device.type == "cuda"
        if col.layout != Layout.BOOL:
            assert tensor.data_ptr() == col.data.ptr + col.offset * col.data.dtype.itemsize
    assert out["c3"].cpu().tolist() == src["c3"].to_pylist()
    with_nulls = gf.from_arrow(random_table(50, {"a": pa.int32()}, nulls=True), device="cuda")
    with pytest.raises(ValueError, match="null"):
        with_nulls.to_torch()
    values, valid = with_nulls.to_torch(nulls="mask")["a"]
    assert valid.device.type == "cuda" and int((~valid).sum()) == with_nulls["a"].null_count
    x = torch.arange(10, device="cuda")
    col = gf.from_dlpack(x)
    assert col.device.is_cuda and col.data.ptr == x.data_ptr()


def test_repr_and_host_conversions_on_gpu(cp):
    src, t = _gpu_table()
    assert "on cuda:0" in repr(t) and "(no rows)" in repr(t.slice(0, 0))
    assert pa.table(t).equals(src)


def test_missing_device_id_is_refused():
    with pytest.raises(NoGPUError, match="only"):
        gf.from_arrow(pa.table({"a": [1]}), device=f"cuda:{gpu_count()}")


def test_cudf_round_trip(cp):
    cudf = pytest.importorskip("cudf")
    src = random_table(100, {"a": pa.int64(), "f": pa.float64(), "s": pa.string()}, nulls=True)
    df = cudf.DataFrame.from_arrow(src)
    t = gf.from_cudf(df)
    assert t.device.is_cuda and t.column_names == ["a", "f", "s"]
    assert t.to_arrow().cast(src.schema).equals(src)  # cuDF may pick other string/offset widths
    back = t.to_cudf()
    assert list(back.columns) == ["a", "f", "s"]
    assert back.to_arrow(preserve_index=False).cast(src.schema).equals(src)
