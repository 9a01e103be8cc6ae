"""Review of the core data model and interop on the CPU: the edge cases a first pass missed
(validation of Table/Column constructors, odd-offset slices, strings whose offsets do not start
at 0, dictionaries with nulls in the indices or in the dictionary, time zones, settings)."""
from __future__ import annotations

import ctypes

import numpy as np
import pyarrow as pa
import pytest

import gpuframe as gf
from gpuframe import config
from gpuframe.backends import registry
from gpuframe.core.column import Column
from gpuframe.interop import arrow_c_abi as cd

from .common.data import random_array

# ------------------------------------------------------------------------------------- Table


def test_table_rejects_num_rows_that_disagrees_with_its_columns():
    a = Column.from_arrow(pa.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"same length \(num_rows=5\).*'a': 3"):
        gf.Table({"a": a}, 5)
    assert gf.Table({"a": a}, 3).num_rows == 3
    assert gf.Table({"a": a}, np.int64(3)).num_rows == 3


@pytest.mark.parametrize("bad", [-1, 2.0, "3", True])
def test_table_rejects_bad_num_rows(bad):
    with pytest.raises(ValueError, match=f"num_rows must be a non-negative int or None, got {bad!r}"):
        gf.Table({}, bad)


def test_table_length_mismatch_names_the_columns():
    a = Column.from_arrow(pa.array([1, 2, 3]))
    b = Column.from_arrow(pa.array([1, 2]))
    with pytest.raises(ValueError, match=r"got lengths \{'a': 3, 'b': 2\}"):
        gf.Table({"a": a, "b": b})


@pytest.mark.parametrize("bad", [pa.array([1, 2]), [1, 2], np.arange(2)], ids=["pyarrow", "list", "numpy"])
def test_table_rejects_non_columns_by_name(bad):
    with pytest.raises(TypeError, match=r"column 'x' must be a gpuframe Column.*got "):
        gf.Table({"ok": Column.from_arrow(pa.array([1, 2])), "x": bad})


def test_table_slice_accepts_numpy_integers_but_not_bools():
    t = gf.from_arrow(pa.table({"a": [1, 2, 3, 4]}))
    offs = np.array([1, 3], dtype=np.int64)
    assert t.slice(offs[0], offs[1] - offs[0])["a"].to_pylist() == [2, 3]
    with pytest.raises(ValueError, match="offset must be"):
        t.slice(True)
    with pytest.raises(ValueError, match="length must be"):
        t.slice(0, 1.5)


def test_zero_row_table_keeps_its_schema_through_slices_and_export():
    src = pa.table({"a": pa.array([], pa.int64()), "s": pa.array([], pa.string()),
                    "d": pa.array([], pa.dictionary(pa.int8(), pa.string())),
                    "t": pa.array([], pa.timestamp("ms", tz="Europe/Paris")), "b": pa.array([], pa.bool_())})
    t = gf.from_arrow(src)
    assert t.shape == (0, 5) and t.slice(0, 0).schema == src.schema
    assert pa.table(t).equals(src) and gf.from_arrow(pa.table(t)).to_arrow().equals(src)
    rb = pa.RecordBatch._import_from_c_device_capsule(*t.__arrow_c_device_array__())
    assert rb.schema == src.schema and rb.num_rows == 0


# ------------------------------------------------------------------------------------- Column.from_numpy


def test_from_numpy_refuses_values_that_are_not_the_physical_dtype():
    # reinterpreting int64 bytes as int32 silently gave [0, 0, 1] for [0, 1, 2]
    with pytest.raises(TypeError, match=r"int32 column stores int32 values, got values.dtype=int64"):
        Column.from_numpy(np.arange(3, dtype=np.int64), pa.int32())
    with pytest.raises(TypeError, match="fixed-width and bool"):
        Column.from_numpy(np.arange(3, dtype=np.int32), pa.dictionary(pa.int32(), pa.string()))
    with pytest.raises(TypeError, match="fixed-width and bool"):
        Column.from_numpy(np.arange(3, dtype=np.uint8), pa.string())
    with pytest.raises(ValueError, match="1-D"):
        Column.from_numpy(np.zeros((2, 2)))


def test_from_numpy_physical_types():
    ts = Column.from_numpy(np.array([1, 2], dtype=np.int64), pa.timestamp("us", tz="UTC"))
    assert ts.to_arrow().equals(pa.array([1, 2], pa.int64()).cast(pa.timestamp("us", tz="UTC")))
    dt = np.array(["2024-01-01T00:00:00", "1969-12-31T23:59:59"], dtype="datetime64[ns]")
    col = Column.from_numpy(dt)
    assert col.dtype == pa.timestamp("ns") and col.values().dtype == np.int64
    assert col.to_arrow().equals(pa.array(dt))
    assert Column.from_numpy(np.array([0, 2, 0]), pa.bool_()).to_pylist() == [False, True, False]


def test_from_numpy_refuses_a_mask_of_another_length():
    # a short mask left the last rows reading bits past its end (silently null)
    with pytest.raises(ValueError, match=r"valid must have one flag per value \(3\), got shape \(2,\)"):
        Column.from_numpy(np.arange(3, dtype=np.int64), valid=[True, False])


# ------------------------------------------------------------------------------------- layouts


def test_string_column_whose_offsets_do_not_start_at_zero():
    offsets = pa.array([5, 6, 8, 8, 11], pa.int32()).buffers()[1]
    arr = pa.Array.from_buffers(pa.string(), 4, [None, offsets, pa.py_buffer(b"xxxxxabcdefgh")])
    col = Column.from_arrow(arr)
    assert col.to_pylist() == ["a", "bc", "", "def"]
    assert col.nbytes == 5 * 4 + 6
    assert col.slice(1, 2).to_pylist() == ["bc", ""]
    assert col.slice(1, 2).nbytes == 3 * 4 + 2
    back = gf.from_arrow(pa.table(gf.from_arrow(pa.table({"s": arr}))))
    assert back["s"].to_pylist() == ["a", "bc", "", "def"]


def test_dictionary_nulls_in_indices_and_in_dictionary():
    d = pa.DictionaryArray.from_arrays(pa.array([0, 1, 2, 1, None, 0], pa.int32()), pa.array(["a", None, "c"]))
    for arr in (d, d.slice(1, 4), d.slice(3, 3)):
        col = Column.from_arrow(arr)
        # Arrow counts a dictionary array's nulls in its indices; a null dictionary entry is a
        # value of the dictionary column
        assert col.null_count == arr.null_count and col.offset == arr.offset
        assert col.dictionary.null_count == 1
        out = col.to_arrow()
        out.validate(full=True)
        assert out.equals(arr) and col.to_pylist() == arr.to_pylist()
        valid = col.validity_bytes()
        expect = np.array([v is not None for v in arr.indices.to_pylist()], dtype=np.uint8)
        if arr.null_count:
            np.testing.assert_array_equal(valid, expect)
        else:
            assert valid is None
    # a dictionary whose only nulls are dictionary entries has no index validity
    only_dict = pa.DictionaryArray.from_arrays(pa.array([1, 0], pa.int8()), pa.array(["x", None]))
    col = Column.from_arrow(only_dict)
    assert col.validity is None and col.null_count == 0 and col.to_pylist() == [None, "x"]


@pytest.mark.parametrize("tz", [None, "UTC", "America/New_York", "+05:30"])
@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_timestamps_keep_unit_and_zone_through_every_interface(unit, tz):
    t = pa.timestamp(unit, tz=tz)
    arr = pa.array([0, None, 1_700_000_000, -5], pa.int64()).cast(t).slice(1, 3)
    tbl = gf.from_arrow(pa.table({"ts": arr}))
    assert tbl["ts"].dtype == t and tbl["ts"].values().dtype == np.int64
    assert pa.table(tbl)["ts"].type == t
    assert pa.RecordBatch._import_from_c_device_capsule(*tbl.__arrow_c_device_array__()).schema.field("ts").type == t
    assert pa.array(tbl["ts"]).equals(arr)
    s_cap = tbl.__arrow_c_schema__()
    fmt = cd.ArrowSchema.from_address(cd.capsule_pointer(s_cap, cd.SCHEMA_CAPSULE)).children[0].contents.format

    assert ctypes.string_at(fmt).decode() == f"ts{unit[0]}:{tz or ''}"


@pytest.mark.parametrize("offset", [1, 3, 7, 8, 9, 15])
def test_bitmaps_at_every_bit_offset(offset):
    for dtype in (pa.bool_(), pa.int16(), pa.string(), pa.dictionary(pa.int16(), pa.string())):
        arr = random_array(dtype, 40, nulls=True, seed=offset).slice(offset, 40 - offset - 2)
        col = Column.from_arrow(arr)
        assert col.offset == offset and col.null_count == arr.null_count
        expect = np.array([v.is_valid for v in arr], dtype=np.uint8)
        got = col.validity_bytes()
        np.testing.assert_array_equal(got if got is not None else np.ones(len(arr), np.uint8), expect)
        sub = col.slice(3, 11)
        assert sub.to_arrow().equals(arr.slice(3, 11)) and sub.null_count == arr.slice(3, 11).null_count
        exported = pa.array(col)
        exported.validate(full=True)
        assert exported.equals(arr)


def test_slice_of_a_column_without_nulls_knows_it_has_none():
    col = Column.from_arrow(pa.array([1, None, 3, 4, 5]))
    sub = col.slice(2, 3)
    assert sub.null_count == 0 and not sub.has_nulls
    assert col.slice(0, 2).null_count == 1


# ------------------------------------------------------------------------------------- settings and registry


@pytest.mark.parametrize("text, expected", [
    ("1", True), ("true", True), ("yes", True), ("0", False), ("", False), ("false", False),
    ("FALSE", False), ("no", False), ("off", False), (" Off ", False),
])
def test_env_flag(monkeypatch, text, expected):
    monkeypatch.setenv("GPUFRAME_TEST_FLAG", text)
    assert config._env_flag("GPUFRAME_TEST_FLAG") is expected


def test_config_set_validates_before_changing_anything():
    before = config.get("raise_on_fallback")
    with pytest.raises(TypeError, match="'raise_on_fallback' must be a bool, got 'yes'"):
        config.set(raise_on_fallback="yes")
    with pytest.raises(KeyError, match="unknown gpuframe setting 'nope'"):
        config.set(raise_on_fallback=not before, nope=1)
    assert config.get("raise_on_fallback") is before
    with config.options(raise_on_fallback=not before):
        assert config.get("raise_on_fallback") is (not before)
    assert config.get("raise_on_fallback") is before


def test_register_rejects_unknown_backends():
    with pytest.raises(ValueError, match=r"backend must be one of \['cpu', 'cuda'\], got 'gpu'"):
        registry.register("gpu", "x")


# ------------------------------------------------------------------------------------- C ABI


def test_c_struct_layouts_match_the_arrow_headers():
    # abi.h on a 64-bit machine: ArrowSchema 72 bytes, ArrowArray 80, ArrowArrayStream 40 and
    # ArrowDeviceArray {ArrowArray array; int64 device_id; int32 device_type; void* sync_event;
    # int64 reserved[3]} = 128 bytes (the C Device Data Interface says so)
    assert ctypes.sizeof(cd.ArrowSchema) == 72 and ctypes.sizeof(cd.ArrowArray) == 80
    assert ctypes.sizeof(cd.ArrowArrayStream) == 40
    D = cd.ArrowDeviceArray
    assert ctypes.sizeof(D) == 128
    assert (D.array.offset, D.device_id.offset, D.device_type.offset, D.sync_event.offset,
            D.reserved.offset) == (0, 80, 88, 96, 104)
    assert (cd.ArrowArray.buffers.offset, cd.ArrowArray.release.offset, cd.ArrowArray.private_data.offset) == (40, 64, 72)
    assert (cd.ArrowSchema.flags.offset, cd.ArrowSchema.release.offset) == (24, 56)
    # a CPU export: device_type 1, device_id -1, no event, reserved bytes zeroed
    t = gf.from_arrow(pa.table({"a": [1, 2]}))
    d = D.from_address(cd.capsule_pointer(t.__arrow_c_device_array__()[1], cd.DEVICE_ARRAY_CAPSULE))
    assert (d.device_type, d.device_id, d.sync_event, list(d.reserved)) == (1, -1, None, [0, 0, 0])
