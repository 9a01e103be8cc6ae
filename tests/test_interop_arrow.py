"""Arrow interop on the CPU: pyarrow objects, the PyCapsule protocols in both directions, the
C structs we build (layout, addresses, release), requested schemas."""
from __future__ import annotations

import ctypes
import gc

import pyarrow as pa
import pytest

import gpuframe as gf
from gpuframe.core.column import Column
from gpuframe.interop import arrow_c_abi as cd
from gpuframe.interop.arrow import format_string

from .common.data import DTYPES, random_array, random_table
from .common.interop import (SLICE_IDS, SLICES, ArrayOnly, DeviceArrayOnly, StreamOnly, assert_released,
                             assert_same_memory, live_exports, sliced_array)

ALL = {f"c{i}": t for i, t in enumerate(DTYPES)}


def _table(n=30, nulls=True, offset=3, length=21):
    src = random_table(n, ALL, nulls=nulls, seed=7).slice(offset, length)
    return src, gf.from_arrow(src)


# ---------------------------------------------------------------------------------- from_arrow


def test_from_arrow_pyarrow_objects():
    src = random_table(12, {"a": pa.int64(), "s": pa.string()}, nulls=True)
    assert gf.from_arrow(src).to_arrow().equals(src)
    rb = src.to_batches()[0]
    assert gf.from_arrow(rb).to_arrow().equals(src)
    arr = src["s"].chunk(0)
    t = gf.from_arrow(arr)
    assert t.column_names == ["0"] and t["0"].to_arrow().equals(arr)
    t = gf.from_arrow(src["a"])
    assert t.column_names == ["0"] and t.num_rows == 12
    col = gf.from_arrow(src)["a"]
    assert gf.from_arrow(col)["0"] is col
    tbl = gf.from_arrow(src)
    assert gf.from_arrow(tbl) is tbl


def test_from_arrow_struct_array_becomes_columns():
    rb = random_table(9, {"a": pa.int16(), "s": pa.string()}, nulls=True).to_batches()[0]
    struct = rb.to_struct_array()
    t = gf.from_arrow(struct.slice(2))
    assert t.column_names == ["a", "s"] and t.to_arrow().equals(pa.Table.from_batches([rb.slice(2)]))
    chunked = pa.chunked_array([struct, struct.slice(4)])
    assert gf.from_arrow(chunked).num_rows == 14
    with_nulls = pa.StructArray.from_arrays([pa.array([1, 2])], names=["x"], mask=pa.array([False, True]))
    with pytest.raises(ValueError, match="1 null row"):
        gf.from_arrow(with_nulls)


def test_from_arrow_rejects_other_objects():
    with pytest.raises(TypeError, match="got list"):
        gf.from_arrow([1, 2, 3])


def test_from_arrow_multichunk_table_is_combined():
    src = pa.concat_tables([random_table(5, ALL, nulls=True, seed=s) for s in range(3)])
    assert src[0].num_chunks == 3
    t = gf.from_arrow(src)
    assert t.to_arrow().equals(src.combine_chunks())


def test_large_multichunk_fixed_columns_are_combined_in_parallel_blocks():
    """Past PARALLEL_CONCAT_BYTES, fixed-width chunks without nulls (a Parquet file's row
    groups) are copied into host-allocator memory on every thread; sliced chunks, every width;
    the nullable and bool columns take pyarrow's way. Same answer either way."""
    import numpy as np

    rng = np.random.default_rng(9)

    def chunk(rows: int) -> pa.Table:
        return pa.table({"i64": pa.array(rng.integers(-2**62, 2**62, rows)),
                         "f32": pa.array(rng.random(rows, dtype=np.float32)),
                         "u16": pa.array(rng.integers(0, 2**16, rows).astype(np.uint16)),
                         "ts": pa.array(rng.integers(0, 2**40, rows), pa.timestamp("us")),
                         "d": pa.array(rng.integers(0, 20_000, rows).astype(np.int32), pa.date32()),
                         "b": pa.array(rng.random(rows) < 0.5),
                         "n": pa.array(np.where(rng.random(rows) < 0.2, None, rng.random(rows)), pa.float64())})
    src = pa.concat_tables([chunk(300_000).slice(7, 290_000), chunk(250_001), chunk(3)])
    assert src["i64"].num_chunks == 3 and src["i64"].nbytes >= 4 << 20
    t = gf.from_arrow(src)
    assert t.to_arrow().equals(src.combine_chunks())


@pytest.mark.parametrize("case", SLICES, ids=SLICE_IDS)
def test_from_arrow_zero_copy_every_dtype(dtype, with_nulls, case):
    arr = sliced_array(dtype, case, with_nulls)
    t = gf.from_arrow(pa.table({"x": arr}))
    assert t["x"].to_arrow().equals(arr)
    assert_same_memory(arr, t["x"])


# ---------------------------------------------------------------------------------- export: addresses


@pytest.mark.parametrize("case", SLICES, ids=SLICE_IDS)
def test_capsule_exports_keep_addresses(dtype, with_nulls, case):
    arr = sliced_array(dtype, case, with_nulls)
    tbl = gf.from_arrow(pa.table({"x": arr, "y": random_array(pa.int32(), len(arr), nulls=True)}))
    col = tbl["x"]
    before = live_exports()
    # Column: __arrow_c_device_array__ (pa.array prefers it), __arrow_c_array__, __arrow_c_stream__
    via_array = pa.array(col)
    assert via_array.equals(arr)
    assert_same_memory(via_array, col)
    via_c_array = pa.Array._import_from_c_capsule(*col.__arrow_c_array__())
    assert via_c_array.equals(arr)
    assert_same_memory(via_c_array, col)
    chunked = pa.chunked_array(col)
    assert chunked.num_chunks == 1 and chunked.chunk(0).equals(arr)
    assert_same_memory(chunked.chunk(0), col)
    # Table: pa.table (stream), pa.record_batch (device array), and the raw capsule importers
    for imported in (pa.table(tbl).column("x").chunk(0),
                     pa.record_batch(tbl).column(0),
                     pa.RecordBatch._import_from_c_device_capsule(*tbl.__arrow_c_device_array__()).column(0),
                     pa.RecordBatch._import_from_c_capsule(*tbl.__arrow_c_array__()).column(0)):
        imported.validate(full=True)
        assert imported.equals(arr)
        assert_same_memory(imported, col)
    del via_array, via_c_array, chunked, imported
    assert_released(before)


def test_table_capsules_roundtrip_every_dtype():
    src, t = _table()
    expected = src.combine_chunks()
    assert pa.table(t).equals(expected)
    assert pa.record_batch(t).equals(expected.to_batches()[0])
    assert pa.RecordBatchReader.from_stream(t).read_all().equals(expected)
    assert pa.Schema._import_from_c_capsule(t.__arrow_c_schema__()) == src.schema
    for name in t.column_names:
        assert pa.DataType._import_from_c_capsule(t[name].__arrow_c_schema__()) == t[name].dtype


@pytest.mark.parametrize("wrapper", [StreamOnly, ArrayOnly, DeviceArrayOnly])
@pytest.mark.parametrize("nulls", [False, True])
def test_from_arrow_protocol_only_objects(wrapper, nulls):
    src, t = _table(nulls=nulls)
    expected = src.combine_chunks()
    before = live_exports()
    for producer in (t, pa.record_batch(expected.to_batches()[0])) + ((expected,) if wrapper is StreamOnly else ()):
        got = gf.from_arrow(wrapper(producer))
        assert got.to_arrow().equals(expected)
        if producer is t:  # our own export, imported back: still the same memory
            for name in t.column_names:
                assert_same_memory(got[name].to_arrow(), t[name])
    # a non-struct array becomes one column named after its field
    col = t["c11"]
    got = gf.from_arrow(wrapper(col))
    assert got.column_names == ["0"] and got["0"].to_arrow().equals(src["c11"].chunk(0))
    del got
    assert_released(before)


def test_from_arrow_stream_of_plain_arrays_is_combined():
    chunked = pa.chunked_array([pa.array(["a", None]), pa.array(["b"])])
    t = gf.from_arrow(StreamOnly(chunked))
    assert t["0"].to_pylist() == ["a", None, "b"]
    reader_src = pa.Table.from_batches([pa.record_batch({"a": [1, 2]}), pa.record_batch({"a": [3]})])
    assert gf.from_arrow(StreamOnly(reader_src))["a"].to_pylist() == [1, 2, 3]


def test_from_arrow_capsule_with_unsupported_type_names_the_column():
    rb = pa.record_batch({"ok": [1], "bad": pa.array([[1]], pa.list_(pa.int64()))})
    for wrapper in (StreamOnly, ArrayOnly, DeviceArrayOnly):
        with pytest.raises(TypeError, match=r"'bad' has unsupported type list<item: int64>"):
            gf.from_arrow(wrapper(rb))


# ---------------------------------------------------------------------------------- the C structs


def _schema(capsule) -> cd.ArrowSchema:
    return cd.ArrowSchema.from_address(cd.capsule_pointer(capsule, cd.SCHEMA_CAPSULE))


def test_device_array_struct_layout_cpu():
    src, t = _table(nulls=True)
    s_cap, a_cap = t.__arrow_c_device_array__()
    d = cd.ArrowDeviceArray.from_address(cd.capsule_pointer(a_cap, cd.DEVICE_ARRAY_CAPSULE))
    assert ctypes.sizeof(cd.ArrowDeviceArray) == 80 + 8 + 4 + 4 + 8 + 24  # as in the C header
    assert cd.ArrowDeviceArray.device_id.offset == 80 and cd.ArrowDeviceArray.sync_event.offset == 96
    assert d.device_type == cd.ARROW_DEVICE_CPU and d.device_id == -1 and not d.sync_event
    a = d.array
    assert (a.length, a.offset, a.null_count, a.n_buffers, a.n_children) == (t.num_rows, 0, 0, 1, t.num_columns)
    assert not a.buffers[0]
    s = _schema(s_cap)
    assert ctypes.string_at(s.format) == b"+s" and s.n_children == t.num_columns
    for i, (name, col) in enumerate(t.items()):
        ca, cs = a.children[i].contents, s.children[i].contents
        assert ctypes.string_at(cs.name).decode() == name
        assert ctypes.string_at(cs.format).decode() == format_string(col.dtype)
        assert cs.flags & cd.ARROW_FLAG_NULLABLE
        assert (ca.length, ca.offset) == (col.length, col.offset)
        assert ca.null_count in (col.null_count, -1)
        assert (ca.buffers[0] or None) == (col.validity.ptr if col.validity is not None else None)
        if col.layout.value == "string":
            assert ca.n_buffers == 3 and ca.buffers[1] == col.offsets.ptr and ca.buffers[2] == col.data.ptr
        else:
            assert ca.n_buffers == 2 and ca.buffers[1] == col.data.ptr
        if col.dictionary is not None:
            assert ca.dictionary and ca.dictionary.contents.buffers[2] == col.dictionary.data.ptr
            assert ctypes.string_at(cs.dictionary.contents.format) == b"u"


@pytest.mark.parametrize("dtype_, fmt", [
    (pa.int8(), "c"), (pa.uint64(), "L"), (pa.float32(), "f"), (pa.float64(), "g"), (pa.bool_(), "b"),
    (pa.string(), "u"), (pa.large_string(), "U"), (pa.date32(), "tdD"), (pa.timestamp("ms"), "tsm:"),
    (pa.timestamp("ns", tz="Europe/Paris"), "tsn:Europe/Paris"), (pa.dictionary(pa.int16(), pa.string()), "s"),
])
def test_format_strings_match_pyarrow(dtype_, fmt):
    assert format_string(dtype_) == fmt
    # pyarrow reads our schema back as the same type
    col = Column.from_arrow(pa.array([], dtype_))
    assert pa.DataType._import_from_c_capsule(col.__arrow_c_schema__()) == dtype_


def test_unconsumed_capsules_release_everything():
    _, t = _table()
    before = live_exports()
    caps = [t.__arrow_c_device_array__(), t.__arrow_c_array__(), t.__arrow_c_stream__(),
            t["c11"].__arrow_c_device_array__(), t["c16"].__arrow_c_schema__()]
    assert live_exports() > before
    del caps
    assert_released(before)


def test_capsule_keeps_buffers_alive_after_table_dies():
    src = random_table(50, {"a": pa.int64(), "s": pa.string()}, nulls=True)
    t = gf.from_arrow(pa.table({"a": pa.array(src["a"].to_pylist()), "s": pa.array(src["s"].to_pylist())}))
    caps = t.__arrow_c_device_array__()
    del t
    gc.collect()
    rb = pa.RecordBatch._import_from_c_device_capsule(*caps)
    del caps
    gc.collect()
    assert rb.to_pydict() == src.to_pydict()


def test_moved_struct_is_released_by_consumer():
    _, t = _table()
    before = live_exports()
    s_cap, a_cap = t.__arrow_c_device_array__()
    rb = pa.RecordBatch._import_from_c_device_capsule(s_cap, a_cap)  # moves the structs
    del s_cap, a_cap
    assert live_exports() > before  # pyarrow still holds the array
    del rb
    assert_released(before)


def test_stream_struct_callbacks():
    _, t = _table(n=10, offset=0, length=10)
    cap = t.__arrow_c_stream__()
    st = cd.ArrowArrayStream.from_address(cd.capsule_pointer(cap, cd.STREAM_CAPSULE))
    sch = cd.ArrowSchema()
    assert st.get_schema(ctypes.pointer(st), ctypes.pointer(sch)) == 0
    assert ctypes.string_at(sch.format) == b"+s" and sch.n_children == t.num_columns
    sch.release(ctypes.pointer(sch))
    assert not sch.release
    arr = cd.ArrowArray()
    assert st.get_next(ctypes.pointer(st), ctypes.pointer(arr)) == 0
    assert arr.release and arr.length == 10
    arr.release(ctypes.pointer(arr))
    end = cd.ArrowArray()
    assert st.get_next(ctypes.pointer(st), ctypes.pointer(end)) == 0 and not end.release  # end of stream
    assert not st.get_last_error(ctypes.pointer(st))


def test_capsule_pointer_checks_the_name():
    s_cap, _ = gf.from_arrow(pa.table({"a": [1]})).__arrow_c_array__()
    with pytest.raises(TypeError, match="arrow_device_array"):
        cd.capsule_pointer(s_cap, cd.DEVICE_ARRAY_CAPSULE)
    with pytest.raises(TypeError, match="PyCapsule"):
        cd.capsule_pointer(object(), cd.SCHEMA_CAPSULE)


# ---------------------------------------------------------------------------------- requested schema


def test_requested_schema_rename_and_cast():
    t = gf.from_arrow(pa.table({"a": pa.array([1, None, 3], pa.int32()), "s": ["x", "y", None]}))
    renamed = pa.table(t, schema=pa.schema([("A", pa.int32()), ("S", pa.string())]))
    assert renamed.column_names == ["A", "S"]
    assert renamed.column("A").chunk(0).buffers()[1].address == t["a"].data.ptr  # a rename copies nothing
    cast = pa.table(t, schema=pa.schema([("a", pa.int64()), ("s", pa.large_string())]))
    assert cast.schema.types == [pa.int64(), pa.large_string()] and cast["a"].to_pylist() == [1, None, 3]
    rb = pa.record_batch(t, schema=pa.schema([("a", pa.float64()), ("s", pa.string())]))
    assert rb.schema.types == [pa.float64(), pa.string()]
    arr = pa.array(t["a"], type=pa.int64())
    assert arr.type == pa.int64() and arr.to_pylist() == [1, None, 3]
    assert pa.Array._import_from_c_capsule(*t["a"].__arrow_c_array__(pa.float32().__arrow_c_schema__())).type == pa.float32()
    assert pa.chunked_array(t["a"], type=pa.int8()).type == pa.int8()
    same = pa.array(t["a"], type=pa.int32())
    assert same.buffers()[1].address == t["a"].data.ptr


def test_requested_schema_errors():
    t = gf.from_arrow(pa.table({"s": ["x", "1"]}))
    with pytest.raises(ValueError, match="could not cast"):
        pa.array(t["s"], type=pa.int64())
    with pytest.raises(ValueError, match="could not cast"):
        t.__arrow_c_device_array__(pa.schema([("s", pa.int64())]).__arrow_c_schema__())
    with pytest.raises(ValueError, match="requested schema has 2 fields"):
        t.__arrow_c_array__(pa.schema([("a", pa.int64()), ("b", pa.int64())]).__arrow_c_schema__())


def test_device_array_kwargs():
    t = gf.from_arrow(pa.table({"a": [1]}))
    t.__arrow_c_device_array__(None, some_future_keyword=None)  # None is accepted
    t["a"].__arrow_c_device_array__(None, stream=None)
    with pytest.raises(NotImplementedError, match="stream"):
        t.__arrow_c_device_array__(None, stream=1)
    with pytest.raises(NotImplementedError, match="foo"):
        t["a"].__arrow_c_device_array__(foo=3)


def test_zero_row_and_zero_column_exports():
    t = gf.from_arrow(pa.table({"a": pa.array([], pa.int64()), "s": pa.array([], pa.string())}))
    assert pa.table(t).num_rows == 0 and pa.record_batch(t).schema.names == ["a", "s"]
    empty = gf.Table({})
    assert pa.table(empty).num_columns == 0
    assert pa.record_batch(empty).num_columns == 0


def test_other_consumers_read_our_export():
    pl = pytest.importorskip("polars")
    duckdb = pytest.importorskip("duckdb")
    src = random_table(20, {"a": pa.int64(), "s": pa.string(), "f": pa.float64()}, nulls=True)
    t = gf.from_arrow(src)
    assert pl.DataFrame(t).to_arrow().cast(src.schema).equals(src)
    con = duckdb.connect()
    got = con.sql("select sum(a) as s, count(s) as n from t").fetchall()
    assert got == [(sum(v for v in src["a"].to_pylist() if v is not None), src["s"].length() - src["s"].null_count)]
    # and we read theirs
    back = gf.from_arrow(pl.DataFrame(src))
    assert back.to_arrow().cast(src.schema).equals(src)


def test_cudf_missing_raises_the_install_command():
    try:
        import cudf  # noqa: F401
    except Exception:
        pass
    else:
        pytest.skip("cuDF is installed")
    t = gf.from_arrow(pa.table({"a": [1]}))
    with pytest.raises(ImportError, match=r"pip install 'gpuframe\[cudf\]'"):
        t.to_cudf()
    with pytest.raises(ImportError, match=r"pip install 'gpuframe\[cudf\]'"):
        gf.from_cudf(object())
