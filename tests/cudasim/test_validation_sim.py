"""Validation of CUDA-resident columns under numba's CUDA simulator: the device-side checks (the
same numba.cuda kernels a GPU runs, scalars back), malformed ArrowDeviceArray structs refused
before any pointer is read, and received device frames."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import gpuframe as gf
from gpuframe.comm.wire import MalformedMessageError, pack_table, unpack_table
from gpuframe.core import memory
from gpuframe.core.column import Column
from gpuframe.core.device import cudasim_enabled
from gpuframe.core.validate import InvalidColumnError, check_column
from gpuframe.interop import arrow_c_abi as cd

from ..common.data import DTYPES, random_table
from ..common.interop import DeviceArrayOnly

pytestmark = [pytest.mark.cudasim,
              pytest.mark.skipif(not cudasim_enabled(), reason="runs on the simulator lane (NUMBA_ENABLE_CUDASIM=1)")]

N = 300  # the simulator runs every thread in Python: keep it small


def _bad_string(n=N, row=117):
    offs = np.arange(n + 1, dtype=np.int32)
    offs[row + 1] = offs[row] - 1  # row `row` goes backwards
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offs), pa.py_buffer(b"x" * n)])


def _bad_dictionary(n=N, row=201, value=7):
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 3, n).astype(np.int32)
    idx[row] = value
    valid = np.ones(n, dtype=bool)
    valid[5] = False
    return pa.DictionaryArray.from_arrays(pa.array(idx, mask=~valid), pa.array(["a", "b", "c"]), safe=False)


def test_every_valid_type_passes_on_the_device(cuda_device):
    t = random_table(N, {f"c{i}": d for i, d in enumerate(DTYPES)}, nulls=True, seed=5).slice(3, N - 10)
    dev = gf.from_arrow(t, device=cuda_device)
    for name, col in dev.items():
        assert col.device.is_cuda
        check_column(col, name)
    assert dev.to_arrow().equals(t.combine_chunks())


@pytest.mark.parametrize("make,match", [
    (_bad_string, r"column 'k': string offsets must not decrease: row 117 has offsets 117 -> 116"),
    (_bad_dictionary, r"column 'k': dictionary index of row 201 must be in \[0, 3\) .*got 7"),
    (lambda: _bad_dictionary(value=-1), r"column 'k': dictionary index of row 201 must be in \[0, 3\) .*got -1"),
])
def test_device_checks_find_bad_offsets_and_indices(cuda_device, make, match):
    col = Column.from_arrow(make(), "k", validate=False).to(cuda_device)
    assert col.device.is_cuda and not isinstance(col.data.array, np.ndarray)
    with pytest.raises(InvalidColumnError, match=match):
        check_column(col, "k")
    check_column(col, "k", validate=False)  # structure only


def test_device_check_ignores_null_rows_and_counts_nulls(cuda_device):
    arr = _bad_dictionary(row=5, value=10 ** 6)  # row 5 is null: its index may hold anything
    col = Column.from_arrow(arr, "k", validate=False).to(cuda_device)
    check_column(col, "k")
    wrong = Column(col.dtype, col.length, col.data, col.validity, None, col.dictionary, col.offset, null_count=4)
    with pytest.raises(InvalidColumnError, match=r"null_count does not match the validity bitmap: stated 4, "
                                                 r"the bitmap has 1"):
        check_column(wrong, "k")


def test_c_device_import_checks_contents_on_the_device(cuda_device):
    bad = Column.from_arrow(_bad_string(), "k", validate=False).to(cuda_device)
    t = gf.Table([("k", bad)])
    with pytest.raises(ValueError, match=r"column 'k': string offsets must not decrease: row 117"):
        gf.from_arrow(DeviceArrayOnly(t))
    assert gf.from_arrow(DeviceArrayOnly(t), validate=False).num_rows == N


def _capsules(t):
    s, a = t.__arrow_c_device_array__()
    return s, a, cd.ArrowDeviceArray.from_address(cd.capsule_pointer(a, cd.DEVICE_ARRAY_CAPSULE))


class _Caps:
    def __init__(self, caps):
        self.caps = caps

    def __arrow_c_device_array__(self, requested_schema=None, **kwargs):
        return self.caps


def _set_buffer(arr, i, value):
    arr.buffers[i] = value


@pytest.mark.parametrize("mutate,match", [
    (lambda top, c: setattr(c, "n_buffers", 7), r"column 's' of type string: expected 3 buffers, the ArrowArray has 7"),
    (lambda top, c: setattr(c, "n_buffers", 2), r"expected 3 buffers, the ArrowArray has 2"),
    (lambda top, c: _set_buffer(c, 1, None), r"column 's' of type string: buffer 1 is NULL, expected memory for"),
    (lambda top, c: setattr(c, "n_children", 2), r"expected 0 children, the ArrowArray has 2"),
    (lambda top, c: setattr(c, "length", -4), r"length must be >= 0, got -4"),
    (lambda top, c: setattr(c, "offset", -1), r"offset must be >= 0, got -1"),
    (lambda top, c: setattr(c, "null_count", 10 ** 6), r"null_count must be in \[-1, \d+\]"),
    (lambda top, c: setattr(top, "n_children", 5), r"the table \(struct array\): expected 2 children, the ArrowArray has 5"),
    (lambda top, c: setattr(top, "children", None), r"the children pointer is NULL"),
    (lambda top, c: setattr(top, "n_buffers", 0), r"expected 1 buffers, the ArrowArray has 0"),
])
def test_malformed_device_structs_are_refused_before_reading(cuda_device, mutate, match):
    t = gf.from_arrow(pa.table({"s": pa.array(["ab", None, "c"] * 10), "d": pa.array(["x", "y"] * 15).dictionary_encode()}),
                      device=cuda_device)
    s, a, d = _capsules(t)
    mutate(d.array, d.array.children[0].contents)
    with pytest.raises(ValueError, match=match):
        gf.from_arrow(_Caps((s, a)))


def test_device_dictionary_struct_without_dictionary_is_refused(cuda_device):
    t = gf.from_arrow(pa.table({"d": pa.array(["x", "y"] * 15).dictionary_encode()}), device=cuda_device)
    s, a, d = _capsules(t)
    d.array.children[0].contents.dictionary = None
    with pytest.raises(ValueError, match=r"column 'd' of type dictionary<.*>: a dictionary type needs a dictionary "
                                         r"ArrowArray, got NULL"):
        gf.from_arrow(_Caps((s, a)))


def test_received_device_frames_are_checked_on_the_device(cuda_device):
    src = gf.from_arrow(pa.table({"s": pa.array([f"w{i}" for i in range(60)]),
                                  "d": pa.array(["x", "y", "z"] * 20).dictionary_encode()}), device=cuda_device)
    header, frames = pack_table(src)
    received = [memory.to_device(memory.to_host(f).copy(), cuda_device) for f in frames]
    assert unpack_table(header, received).equals(src)
    for k, value, match in [(0, None, r"received column 's': string offsets must not decrease: row 9"),
                            (2, 3, r"received column 'd': dictionary index of row 10 must be in \[0, 3\)")]:
        host = [memory.to_host(f).copy() for f in frames]
        host[k][10] = host[k][9] - 1 if value is None else value
        received = [memory.to_device(h, cuda_device) for h in host]
        assert not isinstance(received[k], np.ndarray)
        with pytest.raises(MalformedMessageError, match=match):
            unpack_table(header, received)
