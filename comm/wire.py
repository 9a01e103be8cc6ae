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

Everything received is checked before a kernel can see it: every header field (types and
ranges), every frame against the size and dtype its header implies, and then each column's
layout and contents with :mod:`gpuframe.core.validate` (monotonic offsets within the text,
dictionary indices in range, null counts; on the device for device frames). A malformed message
raises :class:`MalformedMessageError` (a :class:`CommError` and a ``ValueError``) naming the
column and what is wrong.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

import numpy as np
import pyarrow as pa

from gpuframe.core import memory
from gpuframe.core.buffer import Buffer
from gpuframe.core.column import Column
from gpuframe.core.device import CPU, Device
from gpuframe.core.dtypes import Layout, is_supported, layout_of, offsets_dtype, physical_numpy_dtype
from gpuframe.core.table import Table
from gpuframe.core.validate import InvalidColumnError, check_column

from .errors import CommError

WIRE_VERSION = 1


class MalformedMessageError(CommError, ValueError):
    """A received table message does not describe a valid table (a header field out of range, a
    frame of the wrong size or dtype, offsets or indices that would read out of bounds)."""


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


def check_header(header: Any, where: str = "message", peer: Optional[int] = None) -> tuple[pa.Schema, list[dict]]:
    """The schema and pieces of a table message, after checking every header field's type and range."""
    if not isinstance(header, dict) or header.get("v") != WIRE_VERSION or "schema" not in header:
        raise CommError(f"{where} is not a gpuframe table message (wire version {WIRE_VERSION})", peer=peer)
    raw = header["schema"]
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise MalformedMessageError(f"{where}: the schema must be bytes, got {type(raw).__name__}", peer=peer)
    try:
        schema = schema_from_bytes(bytes(raw))
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
        raise MalformedMessageError(f"{where}: the schema could not be read: {exc}", peer=peer) from None
    for fld in schema:
        if not is_supported(fld.type):
            raise MalformedMessageError(f"{where}: column {fld.name!r} has type {fld.type}, which gpuframe does "
                                        f"not store", peer=peer)
    pieces = header.get("pieces")
    if not isinstance(pieces, (list, tuple)):
        raise MalformedMessageError(f"{where}: 'pieces' must be a list, got {type(pieces).__name__}", peer=peer)
    for k, piece in enumerate(pieces):
        if not isinstance(piece, dict):
            raise MalformedMessageError(f"{where}: piece {k} must be a dict, got {type(piece).__name__}", peer=peer)
        n = _int_field(piece, "n", f"{where}, piece {k}", peer)
        cols = piece.get("cols")
        if not isinstance(cols, (list, tuple)) or len(cols) != len(schema):
            got = len(cols) if isinstance(cols, (list, tuple)) else type(cols).__name__
            raise MalformedMessageError(f"{where}, piece {k}: expected {len(schema)} column descriptions, got {got}",
                                        peer=peer)
        for fld, meta in zip(schema, cols):
            _check_meta(fld.type, meta, n, f"{where}, piece {k}, column {fld.name!r}", peer)
    return schema, list(pieces)


def _int_field(meta: Any, key: str, where: str, peer: Optional[int], lo: int = 0, hi: Optional[int] = None,
               optional: bool = False) -> Optional[int]:
    if not isinstance(meta, dict) or key not in meta:
        raise MalformedMessageError(f"{where}: header field {key!r} is missing", peer=peer)
    v = meta[key]
    if v is None and optional:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
        rng = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise MalformedMessageError(f"{where}: header field {key!r} must be an int {rng}, got {v!r}", peer=peer)
    return v


def _check_meta(dtype: pa.DataType, meta: Any, n: int, where: str, peer: Optional[int]) -> None:
    """Types and ranges of one packed column's header fields (``n`` rows expected)."""
    if not isinstance(meta, dict):
        raise MalformedMessageError(f"{where}: the column description must be a dict, got {type(meta).__name__}",
                                    peer=peer)
    got = _int_field(meta, "n", where, peer)
    if n >= 0 and got != n:
        raise MalformedMessageError(f"{where}: expected {n} rows (the piece's), the column says {got}", peer=peer)
    vbit = _int_field(meta, "vbit", where, peer, 0, 7, optional=True)
    _int_field(meta, "nulls", where, peer, 0, got if vbit is not None else 0)
    lay = layout_of(dtype)
    if lay == Layout.BOOL:
        _int_field(meta, "dbit", where, peer, 0, 7)
    elif lay == Layout.STRING:
        _int_field(meta, "base", where, peer, 0, int(np.iinfo(offsets_dtype(dtype)).max))
    elif lay == Layout.DICTIONARY:
        _check_meta(dtype.value_type, meta.get("dict"), -1, f"{where} (dictionary)", peer)


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


def _rebase_inplace(offs: Any, base: int, device: Device, where: str = "column", peer: Optional[int] = None) -> Any:
    """String offsets made relative to their text frame (in place on the host; via the host on
    a device, where offsets are small next to the text)."""
    if base == 0:
        return offs
    host = memory.to_host(offs)  # ``offs`` itself when it is a numpy array
    if host.shape[0] and int(host.min()) < base:
        # would turn negative (or wrap around): never a valid slice of the sender's text
        raise MalformedMessageError(f"{where}: string offsets must be >= their base {base}, got {int(host.min())}",
                                    peer=peer)
    host -= host.dtype.type(base)
    return offs if host is offs else memory.to_device(host, device)


def _frame(frames: Iterator[Any], what: str, dtype: Any, count: Optional[int], where: str,
           peer: Optional[int]) -> Any:
    """The next frame, checked: a 1-D array of ``dtype`` with exactly ``count`` elements (any when None)."""
    f = next(frames, None)
    if f is None:
        raise MalformedMessageError(f"{where}: the message ended before its {what} frame", peer=peer)
    dtype = np.dtype(dtype)
    got_dt = getattr(f, "dtype", None)
    shape = getattr(f, "shape", None)
    if got_dt is None or np.dtype(got_dt) != dtype or shape is None or len(shape) != 1:
        raise MalformedMessageError(f"{where}: the {what} frame must be a 1-D {dtype} array, got "
                                    f"{type(f).__name__} of dtype {got_dt} and shape {shape}", peer=peer)
    if count is not None and int(shape[0]) != count:
        raise MalformedMessageError(f"{where}: the {what} frame must hold {count} {dtype} elements, got "
                                    f"{int(shape[0])}", peer=peer)
    return f


def _unpack_column(dtype: pa.DataType, meta: dict, frames: Iterator[Any], device: Device,
                   where: str = "column", peer: Optional[int] = None) -> Column:
    """One column from its (checked) header fields and frames; the frames are checked against the
    header, the column is not (the caller runs :func:`gpuframe.core.validate.check_column`)."""
    n = int(meta["n"])
    validity = None
    u8 = np.uint8
    if meta["vbit"] is not None:
        vbit = int(meta["vbit"])
        validity = _bitmap_buffer(_frame(frames, "validity", u8, (vbit + n + 7) // 8, where, peer), vbit, n, device)
    lay = layout_of(dtype)
    nulls = int(meta["nulls"]) if validity is not None else 0
    if lay == Layout.FIXED:
        values = _frame(frames, "values", physical_numpy_dtype(dtype), n, where, peer)
        return Column(dtype, n, Buffer(values, device), validity, None, None, 0, nulls)
    if lay == Layout.BOOL:
        dbit = int(meta["dbit"])
        data = _bitmap_buffer(_frame(frames, "bits", u8, (dbit + n + 7) // 8, where, peer), dbit, n, device)
        return Column(dtype, n, data, validity, None, None, 0, nulls)
    if lay == Layout.STRING:
        offs = _rebase_inplace(_frame(frames, "offsets", offsets_dtype(dtype), n + 1, where, peer),
                               int(meta["base"]), device, where, peer)
        chars = _frame(frames, "text", u8, None, where, peer)
        return Column(dtype, n, Buffer(chars, device), validity, Buffer(offs, device), None, 0, nulls)
    indices = _frame(frames, "indices", physical_numpy_dtype(dtype), n, where, peer)
    dictionary = _unpack_column(dtype.value_type, meta["dict"], frames, device, f"{where} (dictionary)", peer)
    return Column(dtype, n, Buffer(indices, device), validity, None, dictionary, 0, nulls)


def check_received_column(col: Column, name: str, peer: Optional[int] = None, validate: bool = True) -> Column:
    """:func:`gpuframe.core.validate.check_column` of a column built from received frames, its
    error re-raised as :class:`MalformedMessageError` (naming the column and the peer)."""
    try:
        return check_column(col, name, validate=validate)
    except InvalidColumnError as exc:
        raise MalformedMessageError(f"received {exc}", peer=peer) from None


def check_received_table(table: Table, peer: Optional[int] = None, validate: bool = True) -> Table:
    """:func:`check_received_column` for every column of a table assembled from received frames."""
    for name, col in table.items():
        check_received_column(col, name, peer, validate)
    return table


def unpack_tables(header: Any, frames: Sequence[Any], device: Optional[Device] = None, *,
                  peer: Optional[int] = None, validate: bool = True) -> list[Table]:
    """Tables from a received message; frames become the columns' Buffers (no copy).

    The frames must belong to the caller (as those returned by ``Communicator.recv`` do): string
    offsets are rebased in place.

    Every header field and frame is checked, then every column (structure always; contents unless
    ``validate`` is False, on the device for device frames): a malformed message raises
    :class:`MalformedMessageError` naming the column (and ``peer``, when given).
    """
    schema, pieces = check_header(header, peer=peer)
    frames = list(frames)
    try:
        dev = device if device is not None else (memory.array_device(frames[0]) if frames else CPU)
    except TypeError as exc:
        raise MalformedMessageError(f"a table message frame is not an array: {exc}", peer=peer) from None
    it = iter(frames)
    out = []
    for k, piece in enumerate(pieces):
        cols = []
        for field, meta in zip(schema, piece["cols"]):
            col = _unpack_column(field.type, meta, it, dev, f"piece {k}, column {field.name!r}", peer)
            cols.append((field.name, check_received_column(col, field.name, peer, validate)))
        out.append(Table(cols, int(piece["n"])))
    leftover = sum(1 for _ in it)
    if leftover:
        raise MalformedMessageError(f"a table message carried {leftover} frames more than its header describes",
                                    peer=peer)
    return out


def unpack_table(header: Any, frames: Sequence[Any], *, peer: Optional[int] = None, validate: bool = True) -> Table:
    """The single table of a message made by :func:`pack_table` (checked as in :func:`unpack_tables`)."""
    tables = unpack_tables(header, frames, peer=peer, validate=validate)
    if len(tables) != 1:
        raise MalformedMessageError(f"expected a message with one table, got {len(tables)}", peer=peer)
    return tables[0]

