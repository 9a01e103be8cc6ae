"""Interop of CUDA tables under numba's CUDA simulator.

There is no device memory here: a simulated buffer is host memory behind a FakeCUDAArray. The
ArrowDeviceArray export is checked field by field (device_type CUDA, device_id, buffer addresses
== Buffer.ptr, offsets, null counts, children, dictionary), and the handshake is checked by a round
trip through our own importer, which must see the very same buffers (no copy).
"""
from __future__ import annotations

import ctypes

import numpy as np
import pyarrow as pa
import pytest

import gpuframe as gf
from gpuframe.core.column import Column
from gpuframe.core.device import cudasim_enabled
from gpuframe.core.dtypes import Layout
from gpuframe.interop import arrow_c_abi as cd
from gpuframe.interop.arrow import format_string

from ..common.data import DTYPES, random_table
from ..common.interop import (SLICE_IDS, SLICES, ArrayOnly, DeviceArrayOnly, StreamOnly, assert_released,
                              live_exports, sliced_array)

pytestmark = [pytest.mark.cudasim,
              pytest.mark.skipif(not cudasim_enabled(), reason="checks the simulator's export (run with NUMBA_ENABLE_CUDASIM=1)")]

ALL = {f"c{i}": t for i, t in enumerate(DTYPES)}


def _cuda_table(nulls=True, n=40, offset=5, length=27):
    src = random_table(n, ALL, nulls=nulls, seed=11).slice(offset, length)
    return src.combine_chunks(), gf.from_arrow(src, device="cuda")


def _check_node(ca: cd.ArrowArray, col: Column) -> None:
    assert (ca.length, ca.offset) == (col.length, col.offset)
    assert ca.null_count in (col.null_count, -1)
    assert (ca.buffers[0] or None) == (col.validity.ptr if col.validity is not None else None)
    if col.layout == Layout.STRING:
        assert ca.n_buffers == 3 and ca.buffers[1] == col.offsets.ptr and ca.buffers[2] == col.data.ptr
    else:
        assert ca.n_buffers == 2 and ca.buffers[1] == col.data.ptr
    if col.dictionary is not None:
        _check_node(ca.dictionary.contents, col.dictionary)
    else:
        assert not ca.dictionary


@pytest.mark.parametrize("nulls", [False, True])
def test_cuda_device_array_struct_contents(nulls):
    src, t = _cuda_table(nulls)
    s_cap, a_cap = t.__arrow_c_device_array__()
    d = cd.ArrowDeviceArray.from_address(cd.capsule_pointer(a_cap, cd.DEVICE_ARRAY_CAPSULE))
    assert d.device_type == cd.ARROW_DEVICE_CUDA == 2 and d.device_id == 0
    assert not d.sync_event  # the simulator has no stream to wait on (documented)
    a = d.array
    assert (a.length, a.offset, a.null_count, a.n_buffers, a.n_children) == (t.num_rows, 0, 0, 1, t.num_columns)
    s = cd.ArrowSchema.from_address(cd.capsule_pointer(s_cap, cd.SCHEMA_CAPSULE))
    assert ctypes.string_at(s.format) == b"+s"
    for i, (name, col) in enumerate(t.items()):
        assert col.device.is_cuda
        assert ctypes.string_at(s.children[i].contents.name).decode() == name
        assert ctypes.string_at(s.children[i].contents.format).decode() == format_string(col.dtype)
        _check_node(a.children[i].contents, col)
    assert pa.Schema._import_from_c_capsule(s_cap) == src.schema


@pytest.mark.parametrize("case", SLICES, ids=SLICE_IDS)
def test_cuda_round_trip_through_our_importer(dtype, with_nulls, case):
    arr = sliced_array(dtype, case, with_nulls)
    t = gf.from_arrow(pa.table({"x": arr}), device="cuda")
    before = live_exports()
    back = gf.from_arrow(DeviceArrayOnly(t))
    assert back.device == t.device and back["x"].device.is_cuda
    col, got = t["x"], back["x"]
    # the same simulated buffers, not copies
    assert got.data.ptr == col.data.ptr and got.offset == col.offset
    if col.validity is not None:
        assert got.validity.ptr == col.validity.ptr
    if col.offsets is not None:
        assert got.offsets.ptr == col.offsets.ptr
    out = back.to_arrow()["x"].chunk(0)
    out.validate(full=True)
    assert out.equals(arr)
    # a single column exports as a non-struct device array
    one = gf.from_arrow(DeviceArrayOnly(col))
    assert one.column_names == ["0"] and one["0"].data.ptr == col.data.ptr
    assert live_exports() > before  # our imports hold the producer's arrays
    del back, got, one
    assert_released(before)


def test_cuda_import_outlives_the_source_table():
    src, t = _cuda_table()
    caps = t.__arrow_c_device_array__()
    del t
    back = gf.from_arrow(DeviceArrayOnly(type("P", (), {"__arrow_c_device_array__": lambda self, *a, **k: caps})()))
    del caps
    assert back.to_arrow().equals(src)


def test_foreign_addresses_are_refused():
    _, t = _cuda_table()
    s_cap, a_cap = t.__arrow_c_device_array__()
    d = cd.ArrowDeviceArray.from_address(cd.capsule_pointer(a_cap, cd.DEVICE_ARRAY_CAPSULE))
    child = d.array.children[0].contents
    bogus = (ctypes.c_uint8 * 64)()
    child.buffers[1] = ctypes.addressof(bogus)
    producer = type("P", (), {"__arrow_c_device_array__": lambda self, *a, **k: (s_cap, a_cap)})()
    with pytest.raises(ValueError, match="only device arrays exported by gpuframe"):
        gf.from_arrow(producer)


def test_cuda_cpu_interfaces_export_host_copies():
    src, t = _cuda_table()
    assert pa.table(t).equals(src)
    assert pa.RecordBatch._import_from_c_capsule(*t.__arrow_c_array__()).equals(src.to_batches()[0])
    assert pa.array(ArrayOnly(t["c11"])).equals(src["c11"].chunk(0))
    assert pa.chunked_array(t["c3"]).chunk(0).equals(src["c3"].chunk(0))
    for wrapper in (StreamOnly, ArrayOnly):
        back = gf.from_arrow(wrapper(t))
        assert back.device == gf.Device("cpu") and back.to_arrow().equals(src)
    assert gf.from_arrow(DeviceArrayOnly(t)).device.is_cuda


def test_cuda_requested_schema_casts_on_device():
    _, t = _cuda_table(nulls=False)
    sub = t.select(["c2", "c11"])
    want = pa.schema([("a", pa.int64()), ("b", pa.large_string())])
    s_cap, a_cap = sub.__arrow_c_device_array__(want.__arrow_c_schema__())
    back = gf.from_arrow(type("P", (), {"__arrow_c_device_array__": lambda self, *a, **k: (s_cap, a_cap)})())
    assert back.device.is_cuda and back.schema == want
    assert back["a"].to_pylist() == t["c2"].to_pylist() and back["b"].to_pylist() == t["c11"].to_pylist()


def test_cuda_repr_and_host_conversions(tmp_path):
    src, t = _cuda_table()
    text = repr(t)
    assert text.startswith(f"gpuframe.Table: {t.num_rows} rows x {t.num_columns} columns on cuda:0")
    assert "... 22 more rows" in text
    empty = t.slice(0, 0)
    assert "(no rows)" in repr(empty) and "cuda:0" in repr(empty)
    pd = pytest.importorskip("pandas")
    df = t.select(["c3", "c11"]).to_pandas()
    assert isinstance(df, pd.DataFrame) and df["c11"].tolist()[:3] == src["c11"].to_pylist()[:3]
    t.to_parquet(tmp_path / "c.parquet")
    assert gf.read_parquet(tmp_path / "c.parquet", device="cuda").to_arrow().equals(src)


def test_dlpack_of_cuda_columns_is_refused_under_the_simulator():
    _, t = _cuda_table(nulls=False)
    col = t["c3"]
    assert col.__dlpack_device__() == (2, 0)
    with pytest.raises(BufferError, match="simulator"):
        col.__dlpack__()
    torch = pytest.importorskip("torch")
    with pytest.raises(BufferError, match="simulator"):
        t.select(["c3"]).to_torch()
    with pytest.raises(gf.NoGPUError, match="simulator"):
        gf.from_dlpack(col)
    assert torch.equal(t.select(["c3"]).to("cpu").to_torch()["c3"], torch.tensor(col.to_pylist()))


def test_cpu_export_unchanged_under_the_simulator():
    src = random_table(10, {"a": pa.int64()})
    t = gf.from_arrow(src)
    d = cd.ArrowDeviceArray.from_address(cd.capsule_pointer(t.__arrow_c_device_array__()[1], cd.DEVICE_ARRAY_CAPSULE))
    assert d.device_type == cd.ARROW_DEVICE_CPU and d.device_id == -1
    assert np.array_equal(pa.record_batch(t).column(0).to_numpy(), src["a"].to_numpy())
