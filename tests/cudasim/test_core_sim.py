"""Core data model on a CUDA device (numba's simulator, or a real GPU): moving columns and tables
to the device and back, slices with odd offsets, device-side views."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import gpuframe as gf
from gpuframe.core import memory
from gpuframe.core.column import Column
from gpuframe.core.device import CPU, Device, NoGPUError, cudasim_enabled
from gpuframe.core.dtypes import Layout

from ..common.data import DTYPES, random_table
from ..common.interop import SLICE_IDS, SLICES, sliced_array

pytestmark = pytest.mark.cudasim


def _on_device(buf) -> bool:
    return buf is None or (buf.device.is_cuda and not isinstance(buf.array, np.ndarray))


@pytest.mark.parametrize("case", SLICES, ids=SLICE_IDS)
def test_column_to_device_and_back(cuda_device, dtype, with_nulls, case):
    arr = sliced_array(dtype, case, with_nulls)
    col = Column.from_arrow(arr, "x")
    dev = col.to(cuda_device)
    assert dev.device == cuda_device and dev.dtype == dtype and len(dev) == len(arr)
    assert all(_on_device(b) for b in (dev.data, dev.validity, dev.offsets))
    assert dev.to(cuda_device) is dev
    # only the slice travels, and bitmaps keep their bit position within the first byte
    assert dev.offset == arr.offset % 8
    if dev.layout in (Layout.FIXED, Layout.DICTIONARY):
        assert dev.data.size == dev.offset + len(arr)
    if dev.layout == Layout.STRING:
        # the copied offsets are rebased to start at 0 and cover exactly the copied characters
        full = memory.to_host(dev.offsets.array)
        assert len(full) == dev.offset + len(arr) + 1 and full[0] == 0 and dev.data.size == full[-1]
    assert dev.null_count == arr.null_count
    back = dev.to("cpu")
    assert back.device == CPU and isinstance(back.data.array, np.ndarray)
    out = back.to_arrow()
    out.validate(full=True)
    assert out.equals(arr)
    assert dev.to_arrow().equals(arr)  # to_arrow copies to the host by itself


def test_device_views_match_host_views(cuda_device, dtype, with_nulls):
    arr = sliced_array(dtype, (40, 3, 29), with_nulls)
    host = Column.from_arrow(arr)
    dev = host.to(cuda_device)
    hv, dv = host.validity_bytes(), dev.validity_bytes()
    assert (hv is None) == (dv is None)
    if hv is not None:
        assert memory.array_device(dv) == cuda_device
        np.testing.assert_array_equal(memory.to_host(dv), hv)
    if host.layout in (Layout.FIXED, Layout.DICTIONARY):
        np.testing.assert_array_equal(memory.to_host(dev.values()), host.values())
    elif host.layout == Layout.BOOL:
        np.testing.assert_array_equal(memory.to_host(dev.bool_bytes()), host.bool_bytes())
    else:  # strings: offsets are rebased on the device, the characters they point at are equal
        ho, do = host.offsets_view(), memory.to_host(dev.offsets_view())
        np.testing.assert_array_equal(do - do[0], ho - ho[0])
        hc, dc = host.chars(), memory.to_host(dev.chars())
        assert bytes(dc[do[0]:do[-1]]) == bytes(hc[ho[0]:ho[-1]])


def test_slice_on_device_then_back(cuda_device, dtype, with_nulls):
    arr = sliced_array(dtype, (45, 0, 45), with_nulls)
    dev = Column.from_arrow(arr).to(cuda_device)
    for start, length in [(0, 0), (1, 13), (9, 36), (44, 1)]:
        sl = dev.slice(start, length)
        assert sl.device == cuda_device
        assert sl.to_arrow().equals(arr.slice(start, length))
        assert sl.null_count == arr.slice(start, length).null_count


@pytest.mark.parametrize("nulls", [False, True])
def test_table_to_device_and_back(cuda_device, nulls):
    src = random_table(60, {f"c{i}": t for i, t in enumerate(DTYPES)}, nulls=nulls).slice(11, 37)
    t = gf.from_arrow(src)
    d = t.to(cuda_device)
    assert d.device == cuda_device and d.to(cuda_device) is d and d.shape == t.shape
    assert d.to("cpu").to_arrow().equals(src.combine_chunks())
    assert d.to_arrow().equals(src.combine_chunks())
    assert gf.from_arrow(src, device="cuda").to_arrow().equals(src.combine_chunks())
    assert d.slice(5, 10).to_arrow().equals(src.slice(5, 10).combine_chunks())
    assert d.equals(t.to(cuda_device))
    assert d.nbytes == t.nbytes


def test_memory_helpers_on_device(cuda_device):
    a = memory.empty(5, np.int32, cuda_device)
    z = memory.zeros(5, np.int64, cuda_device)
    assert memory.array_device(a) == cuda_device and memory.to_host(z).sum() == 0
    c = memory.cumsum_exclusive(memory.to_device(np.array([1, 2, 3]), cuda_device))
    assert memory.array_device(c) == cuda_device and memory.to_host(c).tolist() == [0, 1, 3, 6]
    host = np.arange(4, dtype=np.int64)
    d = memory.to_device(host, cuda_device)
    assert memory.data_ptr(d) != 0 and memory.to_host(d).tolist() == [0, 1, 2, 3]


@pytest.mark.skipif(not cudasim_enabled(), reason="the simulator has exactly one device")
def test_simulator_has_one_device():
    with pytest.raises(NoGPUError, match="one device"):
        Column.from_arrow(pa.array([1])).to(Device("cuda", 1))


def test_zero_row_column_on_device(cuda_device):
    for t in (pa.int64(), pa.string(), pa.bool_(), pa.dictionary(pa.int8(), pa.string())):
        col = Column.from_arrow(pa.array([], t)).to(cuda_device)
        assert col.device == cuda_device and col.to_arrow().equals(pa.array([], t))
