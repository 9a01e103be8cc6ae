"""Malformed input never reaches a kernel (issue 13, findings 2 and 3).

The crash reproductions run in a subprocess: before validation they ended the process with
SIGSEGV/SIGBUS; now they must exit normally with a ValueError naming the column.
"""
from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest

import gpuframe as gf
from gpuframe.comm.errors import CommError
from gpuframe.comm.wire import MalformedMessageError, pack_table, unpack_table
from gpuframe.core.buffer import Buffer
from gpuframe.core.column import Column
from gpuframe.core.device import CPU
from gpuframe.core.validate import InvalidColumnError, check_column, check_structure, count_set_bits
from gpuframe.interop import arrow_c_abi as cd

from .common.interop import ArrayOnly, DeviceArrayOnly, StreamOnly

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- malformed inputs
def bad_offsets_string(large: bool = False) -> pa.Array:
    """Passes pyarrow's basic validation (the last offset is within the text), but row 1's
    offsets go 2**30 -> 3: a kernel reads 2**30 bytes past the text."""
    odt = np.int64 if large else np.int32
    offs = np.array([0, 1 << 30, 3], dtype=odt)
    return pa.Array.from_buffers(pa.large_string() if large else pa.string(), 2,
                                 [None, pa.py_buffer(offs), pa.py_buffer(b"abcdef")])


def bad_index_dictionary(index=10 ** 9) -> pa.Array:
    idx = pa.array([0, index], type=pa.int32())
    return pa.DictionaryArray.from_arrays(idx, pa.array(["a", "b"]), safe=False)


CRASH_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, pyarrow as pa, gpuframe as gf
    case, op = sys.argv[1], sys.argv[2]
    if case == "string":
        offs = np.array([0, 1 << 30, 3], dtype=np.int32)
        arr = pa.Array.from_buffers(pa.string(), 2, [None, pa.py_buffer(offs), pa.py_buffer(b"abcdef")])
    else:
        arr = pa.DictionaryArray.from_arrays(pa.array([0, 10**9], type=pa.int32()), pa.array(["a", "b"]), safe=False)
    t = gf.from_arrow(pa.table({"k": arr, "v": pa.array([1, 2])}))
    if op == "take":
        gf.take(t, np.array([1, 0], dtype=np.int64)).to_arrow()
    elif op == "hash_partition":
        gf.hash_partition(t, "k", 4)
    else:
        r = gf.from_arrow(pa.table({"k": pa.array(["a", "b", "c"]), "w": pa.array([1, 2, 3])}))
        gf.merge(t, r, on="k")
    print("NO ERROR")
""")


@pytest.mark.parametrize("op", ["take", "hash_partition", "merge"])
@pytest.mark.parametrize("case", ["string", "dictionary"])
def test_issue_crash_cases_raise_a_clean_value_error(case, op):
    """Issue 13 finding 2: each of these ended the process with SIGSEGV or SIGBUS."""
    p = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, case, op], capture_output=True, text=True,
                       timeout=300, cwd=ROOT, env={**os.environ, "PYTHONFAULTHANDLER": "0"})
    assert p.returncode == 1, f"exit {p.returncode} (negative: killed by a signal)\n{p.stderr[-2000:]}"
    last = p.stderr.strip().splitlines()[-1]
    assert "InvalidColumnError" in last and "column 'k'" in last, last
    assert isinstance(InvalidColumnError("k", "x"), ValueError)
    if case == "string":
        assert "string offsets must not decrease: row 1 has offsets 1073741824 -> 3" in last
    else:
        assert "dictionary index of row 1 must be in [0, 2)" in last and "got 1000000000" in last


# ----------------------------------------------------------------------------- every import door
def _doors(arr: pa.Array):
    batch = pa.record_batch([arr], names=["k"])
    return {
        "array": lambda: gf.from_arrow(arr),
        "chunked": lambda: gf.from_arrow(pa.chunked_array([arr])),
        "table": lambda: gf.from_arrow(pa.Table.from_batches([batch])),
        "record_batch": lambda: gf.from_arrow(batch),
        "struct": lambda: gf.from_arrow(pa.StructArray.from_arrays([arr], names=["k"])),
        "column": lambda: Column.from_arrow(arr, "k"),
        "c_array": lambda: gf.from_arrow(ArrayOnly(batch)),
        "c_array_column": lambda: gf.from_arrow(ArrayOnly(arr)),
        "c_device_array": lambda: gf.from_arrow(DeviceArrayOnly(batch)),
        "c_device_array_column": lambda: gf.from_arrow(DeviceArrayOnly(arr)),
        "c_stream": lambda: gf.from_arrow(StreamOnly(pa.Table.from_batches([batch]))),
        "c_stream_column": lambda: gf.from_arrow(StreamOnly(pa.chunked_array([arr]))),
    }


DOORS = list(_doors(pa.array([1])))


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("make,match", [
    (bad_offsets_string, r"string offsets must not decrease: row 1 has offsets 1073741824 -> 3"),
    (lambda: bad_offsets_string(large=True), r"string offsets must not decrease"),
    (bad_index_dictionary, r"dictionary index of row 1 must be in \[0, 2\) .*got 1000000000"),
    (lambda: bad_index_dictionary(-5), r"dictionary index of row 1 must be in \[0, 2\) .*got -5"),
])
def test_every_import_door_checks_contents(door, make, match):
    arr = make()
    with pytest.raises(ValueError, match=match) as info:
        _doors(arr)[door]()
    assert "column '" in str(info.value)
    # validate=False: the O(rows) checks are skipped for a trusted producer (nothing runs a kernel here)
    if door.startswith("column"):
        col = Column.from_arrow(arr, "k", validate=False)
        assert len(col) == 2


def test_validate_false_skips_contents_only():
    t = gf.from_arrow(pa.table({"k": bad_index_dictionary()}), validate=False)
    assert t.num_rows == 2
    # the structural checks stay: a column whose buffer is too small is refused either way
    col = Column(pa.int64(), 10, Buffer(np.zeros(4, np.int64), CPU))
    for v in (True, False):
        with pytest.raises(InvalidColumnError, match=r"column 'x': data buffer is too small: expected at least "
                                                     r"10 values \(offset 0 \+ length 10\), got 4"):
            check_column(col, "x", validate=v)


def test_valid_data_is_unchanged_and_zero_copy():
    arr = pa.array(["a", None, "ccc"] * 5).slice(2, 9)
    col = Column.from_arrow(arr, "s")
    assert col.data.array.ctypes.data == arr.buffers()[2].address
    assert col.to_arrow().equals(arr)
    d = pa.array(["x", "y", None, "x"]).dictionary_encode()
    assert gf.from_arrow(d).column(0).to_arrow().equals(d)


# ----------------------------------------------------------------------------- each check
def test_string_first_offset_negative_and_last_past_text():
    first_neg = Column(pa.string(), 1, Buffer(np.zeros(3, np.uint8), CPU), None,
                       Buffer(np.array([-2, 1], np.int32), CPU))
    with pytest.raises(InvalidColumnError, match=r"column 's': the first string offset must be >= 0, got -2"):
        check_column(first_neg, "s")
    # a C producer whose last offset is past its text cannot be caught (the C interface carries no
    # buffer sizes); a Column whose text buffer is smaller than its last offset is refused
    col = Column(pa.string(), 1, Buffer(np.zeros(3, np.uint8), CPU), None,
                 Buffer(np.array([0, 7], np.int32), CPU))
    with pytest.raises(InvalidColumnError, match=r"the last string offset must be <= the text size 3, got 7"):
        check_column(col, "s")


def test_null_rows_may_hold_any_dictionary_index():
    valid = np.array([1, 0, 1], dtype=bool)
    idx = pa.Array.from_buffers(pa.int32(), 3, [pa.py_buffer(np.packbits(valid, bitorder="little")),
                                                pa.py_buffer(np.array([1, 10 ** 9, 0], np.int32))], 1)
    arr = pa.DictionaryArray.from_arrays(idx, pa.array(["a", "b"]), safe=False)
    arr.validate(full=True)  # valid Arrow: the null slot's value is undefined
    t = gf.from_arrow(arr)
    assert t.column(0).to_pylist() == ["b", None, "a"]
    assert gf.hash_partition(t, "0", 2)[0].num_rows == 3


@pytest.mark.parametrize("itype", [pa.uint8(), pa.uint32(), pa.uint64(), pa.int8(), pa.int64()])
def test_dictionary_index_types(itype):
    hi = np.iinfo(itype.to_pandas_dtype()).max
    idx = pa.array([0, 1, hi], type=itype)
    arr = pa.DictionaryArray.from_arrays(idx, pa.array(["a", "b"]), safe=False)
    with pytest.raises(ValueError, match=rf"dictionary index of row 2 must be in \[0, 2\) .*got {hi}$"):
        gf.from_arrow(arr)
    ok = pa.DictionaryArray.from_arrays(pa.array([0, 1, 1], type=itype), pa.array(["a", "b"]))
    assert gf.from_arrow(ok).column(0).to_pylist() == ["a", "b", "b"]


def test_dictionary_of_bad_strings_is_refused():
    arr = pa.DictionaryArray.from_arrays(pa.array([0, 1], pa.int32()), bad_offsets_string(), safe=False)
    with pytest.raises(ValueError, match=r"column '0 \(dictionary\)': string offsets must not decrease"):
        gf.from_arrow(arr)


def test_stated_null_count_must_match_the_bitmap():
    bm = np.packbits(np.array([1, 0, 1, 1], bool), bitorder="little")
    arr = pa.Array.from_buffers(pa.int64(), 4, [pa.py_buffer(bm), pa.py_buffer(np.arange(4))], null_count=3)
    with pytest.raises(ValueError, match=r"null_count does not match the validity bitmap: stated 3, the bitmap has 1"):
        gf.from_arrow(pa.table({"x": arr}))
    # not stated (-1): counted, nothing to compare
    ok = pa.Array.from_buffers(pa.int64(), 4, [pa.py_buffer(bm), pa.py_buffer(np.arange(4))], null_count=-1)
    assert gf.from_arrow(ok).column(0).null_count == 1


def test_count_set_bits_matches_unpackbits():
    rng = np.random.default_rng(0)
    for _ in range(300):
        bm = rng.integers(0, 256, int(rng.integers(1, 30))).astype(np.uint8)
        off = int(rng.integers(0, bm.size * 8))
        ln = int(rng.integers(0, bm.size * 8 - off + 1))
        assert count_set_bits(bm, off, ln) == int(np.unpackbits(bm, bitorder="little")[off:off + ln].sum())


@pytest.mark.parametrize("col,match", [
    (lambda: Column(pa.int32(), 3, Buffer(np.zeros(3, np.int64), CPU)), r"data buffer has dtype int64, expected int32"),
    (lambda: Column(pa.int32(), 3, Buffer(np.zeros(3, np.int32), CPU), offset=1),
     r"data buffer is too small: expected at least 4 values \(offset 1 \+ length 3\), got 3"),
    (lambda: Column(pa.int32(), 9, Buffer(np.zeros(9, np.int32), CPU), Buffer(np.zeros(1, np.uint8), CPU),
                    null_count=1), r"validity buffer is too small: expected at least 2 bytes"),
    (lambda: Column(pa.bool_(), 9, Buffer(np.zeros(1, np.uint8), CPU)), r"data buffer is too small: expected at least 2"),
    (lambda: Column(pa.string(), 2, Buffer(np.zeros(3, np.uint8), CPU), None, Buffer(np.zeros(2, np.int32), CPU)),
     r"offsets buffer is too small: expected at least 3 offsets"),
    (lambda: Column(pa.large_string(), 1, Buffer(np.zeros(3, np.uint8), CPU), None, Buffer(np.zeros(2, np.int32), CPU)),
     r"offsets buffer has dtype int32, expected int64"),
    (lambda: Column(pa.string(), 1, Buffer(np.zeros(3, np.uint8), CPU), None, None), r"offsets buffer is missing"),
    (lambda: Column(pa.dictionary(pa.int32(), pa.string()), 1, Buffer(np.zeros(1, np.int32), CPU)),
     r"type dictionary<.*> needs a dictionary, got none"),
    (lambda: Column(pa.dictionary(pa.int32(), pa.string()), 1, Buffer(np.zeros(1, np.int32), CPU),
                    dictionary=Column.from_arrow(pa.array([1]))), r"dictionary has type int64, expected string"),
    (lambda: Column(pa.int32(), -1, Buffer(np.zeros(3, np.int32), CPU)), r"length must be >= 0, got -1"),
    (lambda: Column(pa.int32(), 1, Buffer(np.zeros(3, np.int32), CPU), offset=-2), r"offset must be >= 0, got -2"),
    (lambda: Column(pa.int32(), 2, Buffer(np.zeros(3, np.int32), CPU), Buffer(np.zeros(1, np.uint8), CPU),
                    null_count=5), r"null_count must be in \[-1, 2\] \(length 2\), got 5"),
])
def test_structural_checks(col, match):
    with pytest.raises(InvalidColumnError, match=r"column 'c': " + match):
        check_structure(col(), "c")


# ----------------------------------------------------------------------------- C structs
def _raw_capsules(arr_or_batch):
    """A (schema, device array) capsule pair of pyarrow's CPU export, and the struct inside."""
    s, a = arr_or_batch.__arrow_c_device_array__()
    d = cd.ArrowDeviceArray.from_address(cd.capsule_pointer(a, cd.DEVICE_ARRAY_CAPSULE))
    return s, a, d


def test_c_struct_null_count_past_length_is_refused():
    s, a, d = _raw_capsules(pa.array([1, None, 3]))
    d.array.null_count = 7
    with pytest.raises(ValueError):
        gf.from_arrow(_Caps(s, a))


class _Caps:
    def __init__(self, s, a):
        self.caps = (s, a)

    def __arrow_c_device_array__(self, requested_schema=None, **kwargs):
        return self.caps


def test_parquet_and_pandas_take_validate(tmp_path):
    import pyarrow.parquet as pq

    tbl = pa.table({"s": pa.array(["a", None, "bb"]), "d": pa.array(["x", "y", "x"]).dictionary_encode()})
    pq.write_table(tbl, tmp_path / "t.parquet")
    for v in (True, False):
        assert gf.read_parquet(tmp_path / "t.parquet", validate=v).to_arrow().equals(tbl)
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": [1, 2], "s": ["x", None]})
    for v in (True, False):
        assert gf.from_pandas(df, validate=v).num_rows == 2


# ----------------------------------------------------------------------------- received tables
def _packed(n=7):
    src = gf.from_arrow(pa.table({
        "i": pa.array(range(n), pa.int64()),
        "s": pa.array([f"w{i}" if i % 3 else None for i in range(n)]),
        "d": pa.array([["p", "q", "r"][i % 3] for i in range(n)]).dictionary_encode(),
    })).slice(2, 4)   # rows 2..5: "w2", None, "w4", "w5"; the text starts at byte 2 (base 2)
    header, frames = pack_table(src)
    return src, header, [np.array(f, copy=True) for f in frames]


def _frame_index(header, col, kind):
    from gpuframe.comm.wire import column_frame_kinds, schema_from_bytes

    schema = schema_from_bytes(header["schema"])
    i = 0
    for f, meta in zip(schema, header["pieces"][0]["cols"]):
        kinds = column_frame_kinds(f.type, meta)
        if f.name == col:
            return i + kinds.index(kind)
        i += len(kinds)
    raise KeyError(col)


def test_unpack_roundtrip_is_unchanged():
    src, header, frames = _packed()
    assert unpack_table(header, frames).equals(src)


@pytest.mark.parametrize("mutate,match", [
    (lambda h, f: h["pieces"][0]["cols"][0].__setitem__("n", 99), r"expected 4 rows \(the piece's\), the column says 99"),
    (lambda h, f: h["pieces"][0]["cols"][1].__setitem__("vbit", 9), r"header field 'vbit' must be an int \[0, 7\], got 9"),
    (lambda h, f: h["pieces"][0]["cols"][1].__setitem__("nulls", -1), r"header field 'nulls' must be an int"),
    (lambda h, f: h["pieces"][0]["cols"][1].__setitem__("base", "0"), r"header field 'base' must be an int"),
    (lambda h, f: h["pieces"][0]["cols"][2].pop("dict"), r"column 'd' \(dictionary\): the column description must be a dict"),
    (lambda h, f: h["pieces"][0].__setitem__("cols", []), r"expected 3 column descriptions, got 0"),
    (lambda h, f: h.__setitem__("schema", b"junk"), r"the schema could not be read"),
    (lambda h, f: f.pop(), r"the message ended before its"),
    (lambda h, f: f.append(np.zeros(1, np.uint8)), r"carried 1 frames more than its header describes"),
    (lambda h, f: f.__setitem__(0, f[0][:2]), r"column 'i'.*values frame must hold 4 int64 elements, got 2"),
    (lambda h, f: f.__setitem__(0, f[0].view(np.int32)), r"values frame must be a 1-D int64 array"),
])
def test_unpack_refuses_malformed_headers_and_frames(mutate, match):
    _, header, frames = _packed()
    mutate(header, frames)
    with pytest.raises(MalformedMessageError, match=match) as info:
        unpack_table(header, frames, peer=3)
    assert isinstance(info.value, ValueError) and isinstance(info.value, CommError)
    assert info.value.peer == 3 and "[peer rank 3]" in str(info.value)


def test_unpack_refuses_bad_offsets_and_indices_validate_false_keeps_structure():
    _, header, frames = _packed()
    k = _frame_index(header, "s", "offsets")
    frames[k][2] = frames[k][1] - 1 if frames[k][1] > header["pieces"][0]["cols"][1]["base"] else 10 ** 6
    with pytest.raises(MalformedMessageError, match=r"received column 's': string offsets must not decrease"):
        unpack_table(header, [f.copy() for f in frames])

    _, header, frames = _packed()
    frames[_frame_index(header, "d", "indices")][1] = 3   # dictionary of 3 entries
    with pytest.raises(MalformedMessageError, match=r"received column 'd': dictionary index of row 1 must be in "
                                                    r"\[0, 3\) .*got 3"):
        unpack_table(header, [f.copy() for f in frames])
    # validate=False: contents are not checked, the frame sizes still are
    assert unpack_table(header, [f.copy() for f in frames], validate=False).num_rows == 4
    frames[0] = frames[0][:1]
    with pytest.raises(MalformedMessageError, match="values frame must hold 4"):
        unpack_table(header, frames, validate=False)


def test_unpack_refuses_an_offset_below_its_base():
    _, header, frames = _packed()
    base = header["pieces"][0]["cols"][1]["base"]
    assert base > 0
    frames[_frame_index(header, "s", "offsets")][0] = base - 1 - (1 << 31) + 1  # would wrap when rebased
    with pytest.raises(MalformedMessageError, match=rf"string offsets must be >= their base {base}"):
        unpack_table(header, frames)


def test_unpack_refuses_a_null_count_that_the_bitmap_does_not_have():
    _, header, frames = _packed()
    header["pieces"][0]["cols"][1]["nulls"] = 3
    with pytest.raises(MalformedMessageError, match=r"received column 's': null_count does not match the validity "
                                                    r"bitmap: stated 3, the bitmap has 1"):
        unpack_table(header, frames)


# ----------------------------------------------------------------------------- fuzz
def test_fuzz_import_and_unpack_in_a_subprocess(tmp_path):
    """A few thousand corrupted inputs: clean error or correct data, never a crash (a crash kills
    the subprocess, not pytest), never wrong data (see benchmarks/fuzz_import.py)."""
    out = tmp_path / "fuzz.json"
    p = subprocess.run([sys.executable, "-m", "benchmarks.fuzz_import", "--cases", "3000", "--seed", "13",
                        "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    res = json.loads(out.read_text())
    assert res["n_failures"] == 0
    counts = res["counts"]
    # the fuzz did exercise both doors, with both verdicts
    for key in ("arrow:accepted", "arrow:rejected", "wire:accepted", "wire:rejected", "control:accepted"):
        assert counts.get(key, 0) > 50, counts


def test_check_received_table_names_column_and_peer():
    """What the exchange's assembler should call on the table it built from received frames."""
    from gpuframe.comm.wire import check_received_table

    good = gf.from_arrow(pa.table({"a": pa.array([1, 2])}))
    assert check_received_table(good, peer=1) is good
    bad = gf.from_arrow(pa.table({"a": pa.array([1, 2]), "d": bad_index_dictionary()}), validate=False)
    with pytest.raises(MalformedMessageError, match=r"received column 'd': dictionary index of row 1 .* "
                                                    r"\[peer rank 2\]"):
        check_received_table(bad, peer=2)
    assert check_received_table(bad, peer=2, validate=False) is bad
