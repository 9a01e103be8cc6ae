"""Wire format of a Table: a msgpack-able header plus the column buffers as frames.

``pack_tables(tables)`` describes one or more tables with the same schema (the *pieces* of
one message) and lists their buffers, without copying anything: every frame is a slice of a
column's own ``Buffer`` array (numpy on the host, CuPy on a GPU).

Header::

    {"v": 1, "schema": <Arrow IPC schema bytes>,
     "pieces": [{"n": rows, "cols": [column meta, ...]}, ...]}

Column meta and its frames, in order:

* ``{"n", "nulls", "vbit"}``: when ``vbit`` is not None, a validity frame comes first: the
  bytes of the bitmap that cover the rows, whose first row is bit ``vbit`` of byte 0.
* FIXED (ints, floats, dates, timestamps): one frame of exactly ``n`` values.
* BOOL: one bitmap frame, first row at bit ``"dbit"``.
* STRING: the ``n + 1`` offsets (absolute in the sender's buffer; ``"base"`` is the first
  one), then exactly the ``offsets[n] - base`` bytes of text.
* DICTIONARY: ``n`` indices, then the whole dictionary column (meta under ``"dict"``).

:func:`unpack_tables` turns received frames into Buffers without copying them; it rebases
string offsets in place and re-aligns a bitmap that does not start at bit 0 (1/64 of the size of
the values it describes).
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

import numpy as np
import pyarrow as pa

from gpuframe.core import memory
from gpuframe.core.buffer import Buffer
from gpuframe.core.column import Column
from gpuframe.core.device import CPU, Device
from gpuframe.core.dtypes import Layout, layout_of, physical_numpy_dtype
from gpuframe.core.table import Table

from .errors import CommError

WIRE_VERSION = 1


# ---------------------------------------------------------------------------------- schema
def schema_to_bytes(schema: pa.Schema) -> bytes:
    return schema.serialize().to_pybytes()


def schema_from_bytes(data: bytes) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(data))


def same_schema(a: pa.Schema, b: pa.Schema) -> bool:
    return a.names == b.names and all(x.type == y.type for x, y in zip(a, b))


def describe_schema_difference(a: pa.Schema, b: pa.Schema) -> str:
    if a.names != b.names:
        return f"column names {a.names} vs {b.names}"
    diffs = [f"{x.name!r}: {x.type} vs {y.type}" for x, y in zip(a, b) if x.type != y.type]
    return "column types " + ", ".join(diffs)


# ---------------------------------------------------------------------------------- pack
def _host_scalar(arr: Any, i: int) -> int:
    return int(memory.to_host(arr[i:i + 1])[0])


def _empty_like_buffer(dtype: np.dtype, device: Device) -> Any:
    return memory.empty(0, dtype, device)


def _push_bits(buf: Buffer, offset: int, length: int, frames: list) -> int:
    start = offset // 8
    stop = (offset + length + 7) // 8
    frames.append(buf.array[start:stop])
    return offset % 8


def _pack_column(col: Column, frames: list) -> dict:
    n = col.length
    lay = col.layout
    meta: dict[str, Any] = {"n": n, "nulls": 0, "vbit": None}
    if col.validity is not None and col.null_count > 0:
        meta["nulls"] = col.null_count
        meta["vbit"] = _push_bits(col.validity, col.offset, n, frames)
    dev = col.device
    if lay == Layout.FIXED or lay == Layout.DICTIONARY:
        if col.data is None:
            frames.append(_empty_like_buffer(physical_numpy_dtype(col.dtype), dev))
        else:
            frames.append(col.values())
        if lay == Layout.DICTIONARY:
            meta["dict"] = _pack_column(col.dictionary, frames)
    elif lay == Layout.BOOL:
        if col.data is None:
            frames.append(_empty_like_buffer(np.dtype(np.uint8), dev))
            meta["dbit"] = 0
        else:
            meta["dbit"] = _push_bits(col.data, col.offset, n, frames)
    else:  # STRING
        offs = col.offsets_view()
        first = _host_scalar(offs, 0)
        last = _host_scalar(offs, n)
        frames.append(offs)
        frames.append(col.chars()[first:last])
        meta["base"] = first
    return meta


def pack_tables(tables: Sequence[Table], schema: Optional[pa.Schema] = None) -> tuple[dict, list]:
    """Header and frames for ``tables`` (same schema), without copying any buffer.

    Parameters
    ----------
    tables : sequence of Table
        The pieces of one message; may be empty when ``schema`` is given.
    schema : pyarrow.Schema, optional
        The schema every piece must have (default: the first table's).

    Returns
    -------
    header : dict
        msgpack-able description (see the module docstring).
    frames : list of arrays
        Slices of the tables' own buffers, in header order.
    """
    if schema is None:
        if not tables:
            raise ValueError("pack_tables needs at least one table or a schema, got neither")
        schema = tables[0].schema
    frames: list = []
    pieces = []
    for i, t in enumerate(tables):
        if not isinstance(t, Table):
            raise TypeError(f"tables[{i}] must be a gpuframe Table, got {type(t).__name__}")
        if not same_schema(t.schema, schema):
            raise ValueError(f"tables[{i}] has a different schema from the others: "
                             f"{describe_schema_difference(schema, t.schema)}")
        pieces.append({"n": t.num_rows, "cols": [_pack_column(c, frames) for c in t.columns]})
    return {"v": WIRE_VERSION, "schema": schema_to_bytes(schema), "pieces": pieces}, frames


def pack_table(table: Table) -> tuple[dict, list]:
    """Header and frames of one table (zero-copy); see :func:`pack_tables`."""
    return pack_tables([table])


# ---------------------------------------------------------------------------------- frame plan
def column_frame_kinds(dtype: pa.DataType, meta: dict) -> list[str]:
    """The kind of each frame of one packed column, in order (see the module docstring)."""
    kinds = ["validity"] if meta["vbit"] is not None else []
    lay = layout_of(dtype)
    if lay == Layout.FIXED:
        kinds.append("data")
    elif lay == Layout.BOOL:
        kinds.append("bits")
    elif lay == Layout.STRING:
        kinds += ["offsets", "chars"]
    else:
        kinds.append("indices")
        kinds += ["dict:" + k for k in column_frame_kinds(dtype.value_type, meta["dict"])]
    return kinds


def check_header(header: Any, where: str = "message") -> tuple[pa.Schema, list[dict]]:
    if not isinstance(header, dict) or header.get("v") != WIRE_VERSION or "schema" not in header:
        raise CommError(f"{where} is not a gpuframe table message (wire version {WIRE_VERSION})")
    return schema_from_bytes(header["schema"]), list(header["pieces"])


# ---------------------------------------------------------------------------------- unpack
def realign_bits(frame: Any, bit: int, length: int) -> np.ndarray:
    """Host bitmap of ``length`` bits starting at bit ``bit`` of ``frame``, moved to bit 0."""
    host = memory.to_host(frame)
    if bit == 0:
        return host
    bits = np.unpackbits(host, count=bit + length, bitorder="little")[bit:]
    return np.packbits(bits, bitorder="little")


def _bitmap_buffer(frame: Any, bit: int, length: int, device: Device) -> Buffer:
    if bit == 0:
        return Buffer(frame, device)
    return Buffer(memory.to_device(realign_bits(frame, bit, length), device), device)


def _rebase_inplace(offs: Any, base: int, device: Device) -> Any:
    """String offsets made relative to their text frame (in place on the host; via the host on
    a device, where offsets are small next to the text)."""
    if base == 0:
        return offs
    host = memory.to_host(offs)  # ``offs`` itself when it is a numpy array
    host -= host.dtype.type(base)
    return offs if host is offs else memory.to_device(host, device)


def _unpack_column(dtype: pa.DataType, meta: dict, frames: Iterator[Any], device: Device) -> Column:
    n = int(meta["n"])
    validity = None
    if meta["vbit"] is not None:
        validity = _bitmap_buffer(next(frames), int(meta["vbit"]), n, device)
    lay = layout_of(dtype)
    nulls = int(meta["nulls"]) if validity is not None else 0
    if lay == Layout.FIXED:
        return Column(dtype, n, Buffer(next(frames), device), validity, None, None, 0, nulls)
    if lay == Layout.BOOL:
        data = _bitmap_buffer(next(frames), int(meta["dbit"]), n, device)
        return Column(dtype, n, data, validity, None, None, 0, nulls)
    if lay == Layout.STRING:
        offs = _rebase_inplace(next(frames), int(meta["base"]), device)
        chars = next(frames)
        return Column(dtype, n, Buffer(chars, device), validity, Buffer(offs, device), None, 0, nulls)
    indices = next(frames)
    dictionary = _unpack_column(dtype.value_type, meta["dict"], frames, device)
    return Column(dtype, n, Buffer(indices, device), validity, None, dictionary, 0, nulls)


def unpack_tables(header: Any, frames: Sequence[Any], device: Optional[Device] = None) -> list[Table]:
    """Tables from a received message; frames become the columns' Buffers (no copy).

    The frames must belong to the caller (as those returned by ``Communicator.recv`` do): string
    offsets are rebased in place.
    """
    schema, pieces = check_header(header)
    frames = list(frames)
    dev = device if device is not None else (memory.array_device(frames[0]) if frames else CPU)
    it = iter(frames)
    out = []
    for piece in pieces:
        cols = [(field.name, _unpack_column(field.type, meta, it, dev)) for field, meta in zip(schema, piece["cols"])]
        out.append(Table(cols, int(piece["n"])))
    leftover = sum(1 for _ in it)
    if leftover:
        raise CommError(f"a table message carried {leftover} frames more than its header describes")
    return out


def unpack_table(header: Any, frames: Sequence[Any]) -> Table:
    """The single table of a message made by :func:`pack_table`."""
    tables = unpack_tables(header, frames)
    if len(tables) != 1:
        raise CommError(f"expected a message with one table, got {len(tables)}")
    return tables[0]

