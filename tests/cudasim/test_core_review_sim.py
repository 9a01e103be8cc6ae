"""Review of the core data model and the C device import on a CUDA device (numba's simulator, or
a real GPU): struct windows in an imported ArrowDeviceArray, moving unusual layouts (strings whose
offsets do not start at 0, dictionaries with null entries, time zones, every bit offset) to the
device and back, and null counts that travel unknown."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import gpuframe as gf
from gpuframe.core import memory
from gpuframe.core.column import Column
from gpuframe.interop import arrow_c_abi as cd

from ..common.data import DTYPES, random_array, random_table

pytestmark = pytest.mark.cudasim

ALL = {f"c{i}": t for i, t in enumerate(DTYPES)}


def _producer(caps):
    return type("P", (), {"__arrow_c_device_array__": lambda self, *a, **k: caps})()


def _device_struct(caps) -> cd.ArrowDeviceArray:
    return cd.ArrowDeviceArray.from_address(cd.capsule_pointer(caps[1], cd.DEVICE_ARRAY_CAPSULE))


@pytest.mark.parametrize("nulls", [False, True])
@pytest.mark.parametrize("window", [(2, 5), (0, 27), (9, 0), (19, 8)])
def test_struct_offset_and_length_select_the_childrens_rows(cuda_device, nulls, window):
    # A producer may export a record batch as a struct whose own offset/length pick a window of
    # longer children (Arrow C data interface: the parent's offset applies to the children).
    src = random_table(40, ALL, nulls=nulls, seed=3).slice(5, 27).combine_chunks()
    t = gf.from_arrow(src, device=cuda_device)
    caps = t.__arrow_c_device_array__()
    d = _device_struct(caps)
    start, length = window
    d.array.offset, d.array.length = start, length
    back = gf.from_arrow(_producer(caps))
    assert back.device.is_cuda and back.num_rows == length
    want = src.slice(start, length)
    for name in src.column_names:
        col = back[name]
        assert len(col) == length
        assert col.null_count == want[name].null_count
        out = col.to_arrow()
        out.validate(full=True)
        assert out.equals(want[name].combine_chunks()), name


def test_struct_window_past_the_children_is_refused(cuda_device):
    t = gf.from_arrow(random_table(10, {"a": pa.int64()}), device=cuda_device)
    caps = t.__arrow_c_device_array__()
    d = _device_struct(caps)
    d.array.offset, d.array.length = 4, 7
    with pytest.raises(ValueError, match=r"column 'a': the struct selects rows \[4, 11\) but the child array has 10"):
        gf.from_arrow(_producer(caps))


def test_string_with_nonzero_first_offset_to_device_and_back(cuda_device):
    offsets = pa.array([5, 6, 8, 8, 11, 12], pa.int32()).buffers()[1]
    validity = pa.array([True, True, False, True, True]).buffers()[1]
    arr = pa.Array.from_buffers(pa.string(), 5, [validity, offsets, pa.py_buffer(b"xxxxxabcdefghZ")], 1)
    for piece in (arr, arr.slice(1, 3), arr.slice(4, 1), arr.slice(2, 0)):
        dev = Column.from_arrow(piece).to(cuda_device)
        # only the slice's characters travel, and the offsets are rebased onto them
        offs = memory.to_host(dev.offsets.array)
        assert offs[0] == 0 and dev.data.size == offs[-1]
        assert dev.null_count == piece.null_count
        assert dev.to_arrow().equals(piece) and dev.to("cpu").to_pylist() == piece.to_pylist()


def test_dictionary_with_null_entries_to_device_and_back(cuda_device):
    d = pa.DictionaryArray.from_arrays(pa.array([0, 1, 2, 1, None, 0, 2], pa.int16()), pa.array(["a", None, "c"]))
    for piece in (d, d.slice(1, 5), d.slice(3, 2)):
        dev = Column.from_arrow(piece).to(cuda_device)
        assert dev.dictionary.device == cuda_device and dev.dictionary.null_count == 1
        assert dev.null_count == piece.null_count
        out = dev.to_arrow()
        out.validate(full=True)
        assert out.equals(piece)
        np.testing.assert_array_equal(memory.to_host(dev.values()), Column.from_arrow(piece).values())


@pytest.mark.parametrize("tz", [None, "Asia/Kolkata"])
def test_timestamps_with_zone_on_device(cuda_device, tz):
    arr = pa.array([1, None, -3, 2**40], pa.int64()).cast(pa.timestamp("ms", tz=tz)).slice(1, 3)
    t = gf.from_arrow(pa.table({"ts": arr}), device=cuda_device)
    assert t["ts"].dtype == pa.timestamp("ms", tz=tz) and t["ts"].device == cuda_device
    assert t.to_arrow()["ts"].chunk(0).equals(arr)
    assert pa.table(t).schema.field("ts").type == pa.timestamp("ms", tz=tz)


@pytest.mark.parametrize("offset", [1, 7, 8, 9, 13])
def test_every_bit_offset_to_device_and_back(cuda_device, offset):
    for dtype in (pa.bool_(), pa.uint16(), pa.large_string()):
        arr = random_array(dtype, 48, nulls=True, seed=offset).slice(offset, 30)
        host = Column.from_arrow(arr)
        dev = host.to(cuda_device)
        assert dev.offset == offset % 8
        np.testing.assert_array_equal(memory.to_host(dev.validity_bytes()), host.validity_bytes())
        if dtype == pa.bool_():
            np.testing.assert_array_equal(memory.to_host(dev.bool_bytes()), host.bool_bytes())
        sub = dev.slice(3, 17)
        assert sub.to_arrow().equals(arr.slice(3, 17)) and sub.null_count == arr.slice(3, 17).null_count
        assert sub.to("cpu").to(cuda_device).to_arrow().equals(arr.slice(3, 17))


def test_unknown_null_count_travels_unknown_and_is_counted_on_device(cuda_device):
    arr = random_array(pa.int32(), 50, nulls=True, seed=9)
    sub = Column.from_arrow(arr).slice(3, 40)
    assert sub._null_count == -1  # a slice does not count its nulls until asked
    dev = sub.to(cuda_device)
    assert dev._null_count == -1
    assert dev.null_count == arr.slice(3, 40).null_count


def test_zero_row_table_to_device_and_back(cuda_device):
    src = random_table(5, ALL, nulls=True).slice(5, 0).combine_chunks()
    t = gf.from_arrow(src, device=cuda_device)
    assert t.device == cuda_device and t.shape == (0, len(ALL))
    assert t.to("cpu").to_arrow().equals(src) and t.to_arrow().equals(src)


def test_cumsum_exclusive_widens_on_device(cuda_device):
    counts = memory.to_device(np.array([3, 0, 2, 5], dtype=np.int32), cuda_device)
    out = memory.cumsum_exclusive(counts)
    assert memory.array_device(out) == cuda_device
    host = memory.to_host(out)
    assert host.dtype == np.int64 and host.tolist() == [0, 3, 3, 5, 10]
    empty = memory.cumsum_exclusive(memory.to_device(np.zeros(0, np.int64), cuda_device))
    assert memory.to_host(empty).tolist() == [0]
