"""Validation on a real CUDA GPU: the device-side checks (numba.cuda kernels, scalars back) and
the C device import's bound check of every wrapped pointer against its allocation
(``cuMemGetAddressRange``). Marked ``gpu``; skipped without one."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import gpuframe as gf
from gpuframe.core.column import Column
from gpuframe.core.validate import InvalidColumnError, check_column
from gpuframe.interop import arrow_c_abi as cd

from ..common.interop import DeviceArrayOnly

pytestmark = pytest.mark.gpu

N = 1_000_000


def _bad_string(row):
    offs = np.arange(N + 1, dtype=np.int64)
    offs[row + 1] = offs[row] - 1
    return pa.Array.from_buffers(pa.large_string(), N, [None, pa.py_buffer(offs), pa.py_buffer(b"x" * N)])


def _bad_dictionary(row, value):
    idx = (np.arange(N) % 3).astype(np.int32)
    idx[row] = value
    return pa.DictionaryArray.from_arrays(pa.array(idx), pa.array(["a", "b", "c"]), safe=False)


@pytest.mark.parametrize("make,match", [
    (lambda: _bad_string(765_432), r"string offsets must not decrease: row 765432 has offsets 765432 -> 765431"),
    (lambda: _bad_dictionary(999_999, 3), r"dictionary index of row 999999 must be in \[0, 3\) .*got 3"),
    (lambda: _bad_dictionary(17, -9), r"dictionary index of row 17 must be in \[0, 3\) .*got -9"),
])
def test_device_checks_on_a_gpu(make, match):
    col = Column.from_arrow(make(), "k", validate=False).to("cuda")
    with pytest.raises(InvalidColumnError, match=match):
        check_column(col, "k")
    with pytest.raises(ValueError, match=match):
        gf.from_arrow(DeviceArrayOnly(gf.Table([("k", col)])))


def test_valid_device_columns_pass():
    t = pa.table({"s": pa.array([f"v{i % 97}" if i % 5 else None for i in range(N)]),
                  "d": pa.array([f"v{i % 7}" for i in range(N)]).dictionary_encode()})
    g = gf.from_arrow(t, device="cuda")
    back = gf.from_arrow(DeviceArrayOnly(g))
    assert back.device.is_cuda and back.to_arrow().equals(t)


@pytest.mark.parametrize("field,value", [("length", 10 ** 9), ("offset", 10 ** 9)])
def test_lengths_past_the_allocation_are_refused(field, value):
    g = gf.from_arrow(pa.table({"x": pa.array(np.arange(1000, dtype=np.int64))}), device="cuda")
    s, a = g.__arrow_c_device_array__()
    d = cd.ArrowDeviceArray.from_address(cd.capsule_pointer(a, cd.DEVICE_ARRAY_CAPSULE))
    child = d.array.children[0].contents
    setattr(child, field, value)
    if field == "length":
        d.array.length = value

    class P:
        def __arrow_c_device_array__(self, requested_schema=None, **kw):
            return s, a

    with pytest.raises(ValueError, match=r"allocation ends|not in device memory"):
        gf.from_arrow(P())
