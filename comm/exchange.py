"""All-to-all exchange of tables, assembled on arrival into one table per rank.

:func:`exchange_tables` sends ``outgoing[p]`` (a list of tables, e.g. one hash partition of each
local input partition) to every rank ``p``. The sizes go first; then every rank allocates the
*final* column buffers of the concatenation of everything it will receive, and the transport
writes each incoming value and text frame straight into its place in them: no concatenation
copy after the exchange. Only the small buffers that need fixing up on arrival (validity and
bool bitmaps, which start at arbitrary bits; string offsets, which need rebasing; dictionaries)
are received into host scratch memory and assembled afterwards.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import pyarrow as pa

from gpuframe.core import memory
from gpuframe.core.buffer import Buffer
from gpuframe.core.column import Column
from gpuframe.core.device import CPU, Device
from gpuframe.core.dtypes import Layout, layout_of, offsets_dtype, physical_numpy_dtype
from gpuframe.core.hostalloc import host_empty
from gpuframe.core.table import Table

from .communicator import Communicator
from .errors import CommError
from .frames import FrameSpec
from .wire import (_unpack_column, check_header, check_received_column, check_received_table, column_frame_kinds,
                   describe_schema_difference, pack_tables, same_schema)


def _recv_empty(n: int, dtype: Any, device: Any) -> Any:
    """A receive buffer: host memory from the host allocator (fresh pages cost about 1 s per GiB
    to fault in on some hosts, every exchange again), device memory from CuPy's pool."""
    if getattr(device, "is_cuda", False):
        return memory.empty(n, dtype, device)
    return host_empty(n, dtype)


@dataclass
class _Part:
    """One received piece of one column."""

    n: int
    row: int                      # first row in the assembled column
    meta: dict
    validity: Any = None          # host scratch bitmap
    bits: Any = None              # host scratch bitmap (BOOL data)
    offsets: Any = None           # host scratch offsets (STRING)
    char: int = 0                 # first byte in the assembled text buffer (STRING)
    dict_frames: list = field(default_factory=list)  # host scratch (DICTIONARY)
    peer: int = -1                # the rank that sent it


class _Scratch:
    """A frame received into host scratch memory, allocated after the memory guard passed."""

    __slots__ = ("spec", "part", "attr", "index", "buffer")

    def __init__(self, spec: FrameSpec, part: _Part, attr: str) -> None:
        self.spec = spec
        self.part = part
        self.attr = attr
        self.index = len(part.dict_frames) - 1 if attr == "dict_frames" else -1
        self.buffer: Any = None

    def allocate(self) -> None:
        self.buffer = _host(self.spec)
        if self.attr == "dict_frames":
            self.part.dict_frames[self.index] = self.buffer
        else:
            setattr(self.part, self.attr, self.buffer)


class _Assembler:
    """Allocates the destination of every incoming frame, then builds the received table."""

    def __init__(self, schema: pa.Schema, device: Device) -> None:
        self.schema = schema
        self.device = device
        self.total = 0
        self.parts: list[list[_Part]] = [[] for _ in schema]
        self.data: list[Any] = [None] * len(schema)   # assembled values / indices / text

    def allocate(self, incoming: list[tuple[Any, list[FrameSpec]]]) -> list[list[Any]]:
        # Check every header and lay the pieces out, in rank order.
        messages = []
        for peer, (header, specs) in enumerate(incoming):
            schema, pieces = check_header(header, f"the message from rank {peer}")
            if not same_schema(schema, self.schema):
                raise CommError(f"rank {peer} sent tables with another schema: "
                                f"{describe_schema_difference(self.schema, schema)}", peer=peer)
            messages.append((pieces, specs))
        total = sum(int(p["n"]) for pieces, _ in messages for p in pieces)
        self.total = total

        # Lay every frame out without allocating: values and text go to slices of one buffer per
        # column on the table's device, bitmaps, offsets and dictionaries to host scratch.
        char_totals = [0] * len(self.schema)
        scratch: list[_Scratch] = []
        dest: list[list[Any]] = []
        row = 0

        def to_scratch(spec: FrameSpec, part: _Part, attr: str) -> _Scratch:
            s = _Scratch(spec, part, attr)
            scratch.append(s)
            return s

        for peer, (pieces, specs) in enumerate(messages):
            out: list[Any] = []
            it = iter(specs)
            for piece in pieces:
                n = int(piece["n"])
                for c, (fld, meta) in enumerate(zip(self.schema, piece["cols"])):
                    part = _Part(n=n, row=row, meta=meta, peer=peer)
                    self.parts[c].append(part)
                    lay = layout_of(fld.type)
                    if meta["vbit"] is not None:
                        out.append(to_scratch(next(it), part, "validity"))
                    if lay == Layout.FIXED or lay == Layout.DICTIONARY:
                        spec = next(it)
                        out.append(("slice", c, row * physical_numpy_dtype(fld.type).itemsize, spec.nbytes))
                        _expect(spec, n * physical_numpy_dtype(fld.type).itemsize, fld.name, peer)
                        if lay == Layout.DICTIONARY:
                            for _k in column_frame_kinds(fld.type.value_type, meta["dict"]):
                                part.dict_frames.append(None)
                                out.append(to_scratch(next(it), part, "dict_frames"))
                    elif lay == Layout.BOOL:
                        out.append(to_scratch(next(it), part, "bits"))
                    else:  # STRING: offsets to scratch, text placed once its total is known
                        out.append(to_scratch(next(it), part, "offsets"))
                        chars = next(it)
                        part.char = char_totals[c]
                        char_totals[c] += chars.nbytes
                        out.append(("slice", c, part.char, chars.nbytes))
                row += n
            if next(it, None) is not None:
                raise CommError(f"rank {peer} sent more frames than its header describes", peer=peer)
            dest.append(out)
        sizes: list[tuple[int, Any]] = []     # (bytes, dtype) of each column's buffer
        for c, fld in enumerate(self.schema):
            lay = layout_of(fld.type)
            if lay in (Layout.FIXED, Layout.DICTIONARY):
                dt = physical_numpy_dtype(fld.type)
                sizes.append((total * dt.itemsize, dt))
            elif lay == Layout.STRING:
                odt = offsets_dtype(fld.type)
                if char_totals[c] > np.iinfo(odt).max:
                    raise CommError(
                        f"string column {fld.name!r} would receive {char_totals[c]} bytes of text, more than "
                        f"a {fld.type} column can address; cast it to large_string before the exchange")
                sizes.append((char_totals[c], np.dtype(np.uint8)))
            else:
                sizes.append((0, None))

        # The memory guard, before anything is allocated.
        column_bytes = sum(nb for nb, _ in sizes)
        scratch_bytes = sum(s.spec.nbytes for s in scratch)
        what = f"the receive buffers ({len(incoming)} ranks)"
        if getattr(self.device, "is_cuda", False):
            memory.ensure_available("exchange_tables", column_bytes, self.device, rows=total, what=what)
            memory.ensure_available("exchange_tables", scratch_bytes, CPU, rows=total, what=what + " in host scratch")
        else:
            memory.ensure_available("exchange_tables", column_bytes + scratch_bytes, CPU, rows=total, what=what)

        for c, (nbytes, dt) in enumerate(sizes):
            if dt is not None:
                self.data[c] = _recv_empty(nbytes // dt.itemsize, dt, self.device)
        for s in scratch:
            s.allocate()
        return [[self._resolve(d) for d in out] for out in dest]

    def _resolve(self, d: Any) -> Any:
        if isinstance(d, _Scratch):
            return d.buffer
        _kind, c, start, nbytes = d
        data = self.data[c]
        width = data.dtype.itemsize
        return data[start // width:(start + nbytes) // width]

    # ------------------------------------------------------------------ after the data arrived
    def finish(self) -> Table:
        cols = []
        for c, fld in enumerate(self.schema):
            cols.append((fld.name, self._column(c, fld)))
        # Every received column is checked like an Arrow import (offsets, indices, null counts;
        # on the device for device columns) before any kernel reads it.
        return check_received_table(Table(cols, self.total))

    def _column(self, c: int, fld: pa.Field) -> Column:
        parts = self.parts[c]
        lay = layout_of(fld.type)
        validity, nulls = self._validity(parts)
        if lay == Layout.FIXED:
            return Column(fld.type, self.total, Buffer(self.data[c], self.device), validity, None, None, 0, nulls)
        if lay == Layout.BOOL:
            bits = _concat_bitmaps([(p.bits, int(p.meta["dbit"]), p.n, p.row) for p in parts], self.total)
            data = Buffer(memory.to_device(bits, self.device), self.device)
            return Column(fld.type, self.total, data, validity, None, None, 0, nulls)
        if lay == Layout.STRING:
            offs = _concat_offsets([(p.offsets, int(p.meta["base"]), p.char, p.n) for p in parts],
                                   self.total, offsets_dtype(fld.type), int(self.data[c].shape[0]))
            return Column(fld.type, self.total, Buffer(self.data[c], self.device), validity,
                          Buffer(memory.to_device(offs, self.device), self.device), None, 0, nulls)
        return self._dictionary_column(c, fld, parts, validity, nulls)

    def _validity(self, parts: list[_Part]) -> tuple[Optional[Buffer], int]:
        if not any(p.validity is not None for p in parts):
            return None, 0
        bits = _concat_bitmaps([(p.validity, None if p.validity is None else int(p.meta["vbit"]), p.n, p.row)
                                for p in parts], self.total)
        nulls = sum(int(p.meta["nulls"]) for p in parts)
        return Buffer(memory.to_device(bits, self.device), self.device), nulls

    def _dictionary_column(self, c: int, fld: pa.Field, parts: list[_Part], validity: Optional[Buffer],
                           nulls: int) -> Column:
        value_type = fld.type.value_type
        dicts = [_unpack_column(value_type, p.meta["dict"], iter(p.dict_frames), CPU) for p in parts]
        indices = self.data[c]
        dtype = fld.type
        if not dicts:
            dictionary = Column.from_arrow(pa.array([], type=value_type))
        elif all(_same_strings(dicts[0], d) for d in dicts[1:]):
            dictionary = dicts[0]  # the usual case: every partition of a categorical shares its categories
        else:
            # Different dictionaries: concatenate them and shift each piece's indices.
            sizes = [d.length for d in dicts]
            total = sum(sizes)
            host = memory.to_host(indices)  # the same array on the CPU
            if total > np.iinfo(host.dtype).max:
                wide = np.dtype(np.int32) if total <= np.iinfo(np.int32).max else np.dtype(np.int64)
                host = host.astype(wide)
                dtype = pa.dictionary(pa.from_numpy_dtype(wide), value_type, fld.type.ordered)
            # Each piece's indices must address its own dictionary: once shifted, an index past
            # it would silently read another rank's entries.
            vhost = None if validity is None else Buffer(memory.to_host(validity.array), CPU)
            for p, d in zip(parts, dicts):
                if p.n:
                    piece = Column(fld.type, p.n, Buffer(host, CPU), vhost, None, d, p.row, -1)
                    check_received_column(piece, fld.name, p.peer)
            start = 0
            for p, size in zip(parts, sizes):
                if start and p.n:
                    host[p.row:p.row + p.n] += host.dtype.type(start)
                start += size
            indices = memory.to_device(host, self.device)
            chars = np.concatenate([memory.to_host(d.chars())[_first(d):_last(d)] for d in dicts]) \
                if total else np.zeros(0, np.uint8)
            char_starts = np.cumsum([0] + [_last(d) - _first(d) for d in dicts])
            odt = offsets_dtype(value_type)
            offs = _concat_offsets([(memory.to_host(d.offsets_view()), _first(d), int(cs), d.length)
                                    for d, cs in zip(dicts, char_starts)], total, odt, int(char_starts[-1]))
            dictionary = Column(value_type, total, Buffer(chars, CPU), None, Buffer(offs, CPU), None, 0, 0)
        dictionary = dictionary.to(self.device)
        return Column(dtype, self.total, Buffer(indices, self.device), validity, None, dictionary, 0, nulls)


def _host(spec: FrameSpec) -> np.ndarray:
    return host_empty(spec.count, np.dtype(spec.dtype))


def _expect(spec: FrameSpec, nbytes: int, name: str, peer: int) -> None:
    if spec.nbytes != nbytes:
        raise CommError(f"column {name!r}: rank {peer} sent {spec.nbytes} bytes of values, its header says "
                        f"{nbytes}", peer=peer)


def _first(col: Column) -> int:
    return int(memory.to_host(col.offsets_view()[0:1])[0])


def _last(col: Column) -> int:
    return int(memory.to_host(col.offsets_view()[col.length:col.length + 1])[0])


def _same_strings(a: Column, b: Column) -> bool:
    if a.length != b.length or a.has_nulls or b.has_nulls:
        return a.length == b.length == 0
    oa, ob = memory.to_host(a.offsets_view()), memory.to_host(b.offsets_view())
    if not np.array_equal(oa - oa[0], ob - ob[0]):
        return False
    return np.array_equal(memory.to_host(a.chars())[oa[0]:oa[-1]], memory.to_host(b.chars())[ob[0]:ob[-1]])


def _concat_bitmaps(parts: list[tuple[Optional[np.ndarray], Optional[int], int, int]], total: int) -> np.ndarray:
    """One LSB-first bitmap from pieces ``(bitmap or None (all set), first bit, rows, first row)``."""
    flags = np.ones(total, dtype=np.uint8)
    for bitmap, bit, n, row in parts:
        if bitmap is not None and n:
            flags[row:row + n] = np.unpackbits(bitmap, count=bit + n, bitorder="little")[bit:]
    return np.packbits(flags, bitorder="little")


def _concat_offsets(parts: list[tuple[np.ndarray, int, int, int]], total: int, odt: np.dtype,
                    total_chars: int) -> np.ndarray:
    """Offsets of the concatenated text from pieces ``(offsets (n+1), base, first byte, rows)``."""
    out = np.empty(total + 1, dtype=odt)
    row = 0
    for offs, base, char, n in parts:
        if n:
            np.subtract(offs[:n], base, out=out[row:row + n], casting="unsafe")
            out[row:row + n] += odt.type(char)
        row += n
    out[total] = total_chars
    return out


class PendingExchange:
    """An :func:`exchange_tables` in flight (from :func:`start_exchange`); :meth:`result` waits.

    The transfer runs on the communicator's event loop while the calling thread does other work
    (a merge partitions its right side while the left one travels).
    """

    def __init__(self, comm: Communicator, messages: list, assembler: _Assembler, future: Any,
                 stats: Optional[dict]) -> None:
        self._comm = comm
        self._messages = messages
        self._assembler = assembler
        self._future = future
        self._stats = stats

    def result(self) -> Table:
        """The received table (everything sent to this rank, concatenated in rank order)."""
        received = self._future.result()
        if self._stats is not None:
            comm, stats = self._comm, self._stats
            others = [p for p in range(comm.size) if p != comm.rank]
            stats["bytes_sent"] = stats.get("bytes_sent", 0) + sum(f.nbytes for p in others
                                                                   for f in self._messages[p][1])
            stats["bytes_received"] = stats.get("bytes_received", 0) + sum(f.nbytes for p in others
                                                                           for f in received[p][1])
        return self._assembler.finish()


def start_exchange(comm: Communicator, outgoing: Sequence[Sequence[Table]], *,
                   schema: Optional[pa.Schema] = None, tag: Optional[int] = None,
                   timeout: Optional[float] = None, device: Optional[Device] = None,
                   stats: Optional[dict] = None) -> PendingExchange:
    """Start :func:`exchange_tables` and return at once; call ``.result()`` for the table.

    Exchanges in flight together on one communicator need distinct tags (or none at all, the
    same number of them started in the same order on every rank). The outgoing tables must
    stay alive and unchanged until ``.result()`` returns.
    """
    if len(outgoing) != comm.size:
        raise ValueError(f"outgoing must hold one list of tables per rank ({comm.size}), got {len(outgoing)}")
    first = next((t for ts in outgoing for t in ts), None)
    if schema is None:
        if first is None:
            raise ValueError("exchange_tables needs a schema when this rank sends no table")
        schema = first.schema
    if device is None:
        device = first.device if first is not None else CPU
    messages = [pack_tables(list(ts), schema) for ts in outgoing]
    assembler = _Assembler(schema, device)
    coro = comm.aall_to_all(messages, tag=tag, allocator=assembler.allocate, timeout=timeout, stats=stats)
    return PendingExchange(comm, messages, assembler, comm.submit(coro), stats)


def exchange_tables(comm: Communicator, outgoing: Sequence[Sequence[Table]], *,
                    schema: Optional[pa.Schema] = None, tag: Optional[int] = None,
                    timeout: Optional[float] = None, device: Optional[Device] = None,
                    stats: Optional[dict] = None) -> Table:
    """Send ``outgoing[p]`` to rank ``p`` and return everything received, as one table.

    Parameters
    ----------
    comm : Communicator
        A connected communicator; every rank calls this together.
    outgoing : sequence of sequences of Table
        ``outgoing[p]`` is the list of tables (all with one schema) for rank ``p``; this rank's
        own list included.
    schema : pyarrow.Schema, optional
        The schema of every table (default: the first outgoing table's); needed when this rank
        sends no table at all.
    tag : int, optional
        Identifies the exchange (see :meth:`Communicator.aall_to_all`).
    timeout : float, optional
        Seconds each phase may wait for a peer.
    device : Device, optional
        Where the received table lives (default: the device of the outgoing tables).
    stats : dict, optional
        ``bytes_sent`` and ``bytes_received`` (to and from other ranks), ``sizes_s`` and ``data_s``
        (the two phases, see ``Communicator.aall_to_all``) are added to it.

    Returns
    -------
    Table
        The received tables concatenated in rank order (and, within a rank, in list order).

    Raises
    ------
    CommError
        A peer failed, timed out, or sent tables with another schema.
    """
    return start_exchange(comm, outgoing, schema=schema, tag=tag, timeout=timeout, device=device,
                          stats=stats).result()
