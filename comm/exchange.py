"""All-to-all exchange of tables, assembled on arrival into one table per rank.

:func:`exchange_tables` sends ``outgoing[p]`` (a list of tables, e.g. one hash partition of each
local input partition) to every rank ``p``. The sizes go first; then every rank allocates the
*final* column buffers of the concatenation of everything it will receive, and the transport
writes each incoming value and text frame straight into its place in them: no concatenation
copy after the exchange. Only the small buffers that need fixing up on arrival (validity and
bool bitmaps, which start at arbitrary bits; string offsets, which need rebasing; dictionaries)
are received into scratch memory and assembled afterwards.

Where that scratch lives follows the received table's device. For a host table it is host
memory and the fix-ups are numpy. For a device table the bitmaps and offsets are received into
device scratch (one buffer per column and kind, each piece's frame a slice of it; on the own
rank a device-to-device copy) and assembled by the kernels of :mod:`gpuframe.kernels.assemble`
(bitmaps concatenated at bit offsets, offsets rebased, dictionary indices shifted and checked),
so n rows cost O(1) bytes between host and device: the pieces' descriptors and a flag.
Dictionaries (their entries, not the indices) are still received into host scratch, compared
and concatenated there, and copied to the device once.
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

from . import device_assembly
from .communicator import Communicator
from .errors import CommError, MismatchError
from .frames import FrameSpec
from .wire import (MalformedMessageError, _unpack_column, check_header, check_received_column, check_received_table,
                   column_frame_kinds, describe_schema_difference, pack_tables, same_schema)


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
    # a device table's frames in the column's device scratch: the first byte (bitmaps) or
    # element (offsets) of this piece's frame, -1 when it sent none
    vstart: int = -1
    bstart: int = -1
    ostart: int = -1
    dvstart: int = -1             # its dictionary's validity, offsets and text (DICTIONARY)
    dostart: int = -1
    dchar: int = 0
    dchars: int = 0               # bytes of its dictionary's text


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
        self.rows_from: list[int] = []
        self.parts: list[list[_Part]] = [[] for _ in schema]
        self.data: list[Any] = [None] * len(schema)   # assembled values / indices / text
        # a device table: bitmaps and offsets go to device scratch, assembled by kernels
        self.on_device = bool(getattr(device, "is_cuda", False))
        # (column, kind) -> [elements, dtype], then the device array; kinds: "validity", "bits",
        # "offsets", and a dictionary's "dvalidity", "doffsets", "dchars"
        self.dscratch: dict[tuple[int, str], Any] = {}

    def allocate(self, incoming: list[tuple[Any, list[FrameSpec]]]) -> list[list[Any]]:
        # Check every header and lay the pieces out, in rank order.
        messages = []
        for peer, (header, specs) in enumerate(incoming):
            schema, pieces = check_header(header, f"the message from rank {peer}")
            if not same_schema(schema, self.schema):
                raise MismatchError(f"rank {peer} sent tables with another schema: "
                                f"{describe_schema_difference(self.schema, schema)}", peer=peer)
            messages.append((pieces, specs))
        #: rows received from each rank (the received table holds them in rank order)
        self.rows_from = [sum(int(p["n"]) for p in pieces) for pieces, _ in messages]
        total = sum(self.rows_from)
        self.total = total

        # Lay every frame out without allocating: values and text go to slices of one buffer per
        # column on the table's device, bitmaps, offsets and dictionaries to scratch (a host
        # table's: host scratch; a device table's: slices of one device buffer per column and kind).
        char_totals = [0] * len(self.schema)
        scratch: list[_Scratch] = []
        dest: list[list[Any]] = []
        row = 0

        def to_scratch(spec: FrameSpec, part: _Part, attr: str) -> _Scratch:
            s = _Scratch(spec, part, attr)
            scratch.append(s)
            return s

        def fix_up(spec: FrameSpec, part: _Part, c: int, kind: str, dtype: np.dtype, count: int) -> Any:
            """The destination of a frame assembled on arrival: host scratch for a host table, a
            slice of the column's device scratch for a device table (its size checked first:
            the kernels read each piece's frame at the place the header implies)."""
            fld = self.schema[c]
            _expect(spec, count * dtype.itemsize, fld.name, part.peer, f"{kind} ({count} {dtype})")
            if not self.on_device:
                return to_scratch(spec, part, kind)
            acc = self.dscratch.setdefault((c, kind), [0, dtype])
            start = acc[0]
            setattr(part, _START[kind], start)
            acc[0] += count
            return ("scratch", (c, kind), start, count)

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
                        out.append(fix_up(_next_spec(it, fld.name, peer), part, c, "validity", np.dtype(np.uint8),
                                          (int(meta["vbit"]) + n + 7) // 8))
                    if lay == Layout.FIXED or lay == Layout.DICTIONARY:
                        spec = _next_spec(it, fld.name, peer)
                        out.append(("slice", c, row * physical_numpy_dtype(fld.type).itemsize, spec.nbytes))
                        _expect(spec, n * physical_numpy_dtype(fld.type).itemsize, fld.name, peer)
                        if lay == Layout.DICTIONARY and self.on_device and \
                                layout_of(fld.type.value_type) == Layout.STRING:
                            # a device table's dictionary: to device scratch, its text straight
                            # after the previous piece's (the text of the concatenated dictionary)
                            dm = meta["dict"]
                            dn = int(dm["n"])
                            if dm["vbit"] is not None:
                                out.append(fix_up(_next_spec(it, fld.name, peer), part, c, "dvalidity",
                                                  np.dtype(np.uint8), (int(dm["vbit"]) + dn + 7) // 8))
                            out.append(fix_up(_next_spec(it, fld.name, peer), part, c, "doffsets",
                                              offsets_dtype(fld.type.value_type), dn + 1))
                            chars = _next_spec(it, fld.name, peer)
                            acc = self.dscratch.setdefault((c, "dchars"), [0, np.dtype(np.uint8)])
                            part.dchar, part.dchars = acc[0], chars.nbytes
                            acc[0] += chars.nbytes
                            out.append(("scratch", (c, "dchars"), part.dchar, chars.nbytes))
                        elif lay == Layout.DICTIONARY:
                            for _k in column_frame_kinds(fld.type.value_type, meta["dict"]):
                                part.dict_frames.append(None)
                                out.append(to_scratch(_next_spec(it, fld.name, peer), part, "dict_frames"))
                    elif lay == Layout.BOOL:
                        out.append(fix_up(_next_spec(it, fld.name, peer), part, c, "bits", np.dtype(np.uint8),
                                          (int(meta["dbit"]) + n + 7) // 8))
                    else:  # STRING: offsets to scratch, text placed once its total is known
                        out.append(fix_up(_next_spec(it, fld.name, peer), part, c, "offsets",
                                          offsets_dtype(fld.type), n + 1))
                        chars = _next_spec(it, fld.name, peer)
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
        device_scratch_bytes = sum(count * dt.itemsize for count, dt in self.dscratch.values())
        what = f"the receive buffers ({len(incoming)} ranks)"
        if self.on_device:
            memory.ensure_available("exchange_tables", column_bytes + device_scratch_bytes, self.device, rows=total,
                                    what=what)
            memory.ensure_available("exchange_tables", scratch_bytes, CPU, rows=total, what=what + " in host scratch")
        else:
            memory.ensure_available("exchange_tables", column_bytes + scratch_bytes, CPU, rows=total, what=what)

        for c, (nbytes, dt) in enumerate(sizes):
            if dt is not None:
                self.data[c] = _recv_empty(nbytes // dt.itemsize, dt, self.device)
        for key, (count, dt) in list(self.dscratch.items()):
            self.dscratch[key] = memory.empty(count, dt, self.device)
        for s in scratch:
            s.allocate()
        return [[self._resolve(d) for d in out] for out in dest]

    def _resolve(self, d: Any) -> Any:
        if isinstance(d, _Scratch):
            return d.buffer
        if d[0] == "scratch":
            _kind, key, start, count = d
            return self.dscratch[key][start:start + count]
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
        validity, nulls = self._device_validity(c, parts) if self.on_device else self._validity(parts)
        if lay == Layout.FIXED:
            return Column(fld.type, self.total, Buffer(self.data[c], self.device), validity, None, None, 0, nulls)
        if self.on_device and lay in (Layout.BOOL, Layout.STRING):
            return self._device_column(c, fld, parts, validity, nulls)
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

    # ---------------------------------------------------------------- a device table's fix-ups
    def _device_validity(self, c: int, parts: list[_Part]) -> tuple[Optional[Buffer], int]:
        """:meth:`_validity` by a kernel, from the pieces' bitmaps in device scratch."""
        if not any(p.vstart >= 0 for p in parts):
            return None, 0
        desc = device_assembly.descriptors([p.row for p in parts], self.total, src=[p.vstart for p in parts],
                                           bit=[int(p.meta["vbit"]) if p.vstart >= 0 else 0 for p in parts])
        bits = device_assembly.concat_bits(desc, self.dscratch[(c, "validity")], self.total, self.device)
        nulls = sum(int(p.meta["nulls"]) for p in parts)
        return Buffer(bits, self.device), nulls

    def _device_column(self, c: int, fld: pa.Field, parts: list[_Part], validity: Optional[Buffer],
                       nulls: int) -> Column:
        """A BOOL or STRING column of a device table, its bitmap or offsets assembled by kernels."""
        rows = [p.row for p in parts]
        if layout_of(fld.type) == Layout.BOOL:
            if self.total:
                desc = device_assembly.descriptors(rows, self.total, src=[p.bstart for p in parts],
                                                   bit=[int(p.meta["dbit"]) for p in parts])
                bits = device_assembly.concat_bits(desc, self.dscratch[(c, "bits")], self.total, self.device)
            else:
                bits = memory.empty(0, np.uint8, self.device)
            return Column(fld.type, self.total, Buffer(bits, self.device), validity, None, None, 0, nulls)
        text = self.data[c]
        desc = device_assembly.descriptors(rows, self.total, src=[p.ostart for p in parts],
                                           bit=[int(p.meta["base"]) for p in parts], add=[p.char for p in parts])
        offs = device_assembly.rebase_offsets(desc, self.dscratch.get((c, "offsets")), self.total,
                                              int(text.shape[0]), offsets_dtype(fld.type), self.device)
        return Column(fld.type, self.total, Buffer(text, self.device), validity, Buffer(offs, self.device), None, 0,
                      nulls)

    def _device_shift(self, fld: pa.Field, parts: list[_Part], sizes: list[int], indices: Any, wide: Any,
                      validity: Optional[Buffer]) -> Any:
        """The indices of a device table's dictionary column shifted by a kernel (into a new
        ``wide`` array, or in place), each piece's non-null indices checked against its own
        dictionary first, as the host path does."""
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if sizes else []
        desc = device_assembly.descriptors([p.row for p in parts], self.total, add=starts, lim=sizes)
        out = indices if wide is None else memory.empty(self.total, wide, self.device)
        bad = device_assembly.shift_indices(desc, indices, out, None if validity is None else validity.array,
                                            self.device)
        if bad:
            p = parts[bad - 1]
            raise MalformedMessageError(
                f"received column {fld.name!r}: a dictionary index of rank {p.peer}'s piece (rows {p.row} to "
                f"{p.row + p.n - 1}) must be in [0, {sizes[bad - 1]}) (its dictionary of {sizes[bad - 1]} "
                f"entries), got one outside", peer=p.peer)
        return out

    def _device_dictionary_column(self, c: int, fld: pa.Field, parts: list[_Part], validity: Optional[Buffer],
                                  nulls: int) -> Column:
        """:meth:`_dictionary_column` of a device table, on the device: the pieces' dictionaries
        compared (every piece carries the same one: one copy of it) or concatenated (offsets
        rebased; their text arrived concatenated), indices shifted and checked by kernels."""
        value_type = fld.type.value_type
        dtype = fld.type
        indices = self.data[c]
        if not parts:
            dictionary = Column.from_arrow(pa.array([], type=value_type)).to(self.device)
            return Column(dtype, self.total, Buffer(indices, self.device), validity, None, dictionary, 0, nulls)
        dsizes = [int(p.meta["dict"]["n"]) for p in parts]
        bases = [int(p.meta["dict"]["base"]) for p in parts]
        doffs = self.dscratch[(c, "doffsets")]
        dchars = self.dscratch.get((c, "dchars"))
        if dchars is None or not int(dchars.shape[0]):
            dchars = memory.empty(0, np.uint8, self.device)
        odt = offsets_dtype(value_type)
        first = parts[0]
        # as _same_strings on the host: same lengths, no null entries (or all empty), same bytes
        same = all(n == dsizes[0] for n in dsizes) and (
            dsizes[0] == 0 or (all(int(p.meta["dict"]["nulls"]) == 0 for p in parts)
                               and all(p.dchars == first.dchars for p in parts)
                               and not device_assembly.differs(
                                   device_assembly.descriptors([0] * len(parts), 0, src=[p.dostart for p in parts],
                                                               bit=bases), doffs, dsizes[0] + 1, self.device)
                               and not (first.dchars and device_assembly.differs(
                                   device_assembly.descriptors([0] * len(parts), 0, src=[p.dchar for p in parts]),
                                   dchars, first.dchars, self.device))))
        if same:
            # the usual case: every partition of a categorical shares its categories
            desc = device_assembly.descriptors([0], dsizes[0], src=[first.dostart], bit=[bases[0]], add=[0])
            offs = device_assembly.rebase_offsets(desc, doffs, dsizes[0], first.dchars, odt, self.device)
            text = dchars[first.dchar:first.dchar + first.dchars]
            dictionary = Column(value_type, dsizes[0], Buffer(text, self.device), None, Buffer(offs, self.device),
                                None, 0, 0)
            return Column(dtype, self.total, Buffer(indices, self.device), validity, None, dictionary, 0, nulls)
        # Different dictionaries: concatenate them and shift each piece's indices.
        total = sum(dsizes)
        total_chars = int(dchars.shape[0])
        if total_chars > np.iinfo(odt).max:
            raise CommError(f"dictionary column {fld.name!r} would receive {total_chars} bytes of dictionary text, "
                            f"more than a {value_type} dictionary can address")
        wide = None
        if total > np.iinfo(indices.dtype).max:
            wide = np.dtype(np.int32) if total <= np.iinfo(np.int32).max else np.dtype(np.int64)
            dtype = pa.dictionary(pa.from_numpy_dtype(wide), value_type, fld.type.ordered)
        indices = self._device_shift(fld, parts, dsizes, indices, wide, validity)
        starts = np.concatenate([[0], np.cumsum(dsizes)[:-1]]).astype(np.int64)
        desc = device_assembly.descriptors(starts, total, src=[p.dostart for p in parts], bit=bases,
                                           add=[p.dchar for p in parts])
        offs = device_assembly.rebase_offsets(desc, doffs, total, total_chars, odt, self.device)
        dvalid, dnulls = None, 0
        if any(p.dvstart >= 0 for p in parts):   # null entries stay null
            desc = device_assembly.descriptors(starts, total, src=[p.dvstart for p in parts],
                                               bit=[int(p.meta["dict"]["vbit"]) if p.dvstart >= 0 else 0
                                                    for p in parts])
            dvalid = Buffer(device_assembly.concat_bits(desc, self.dscratch[(c, "dvalidity")], total, self.device),
                            self.device)
            dnulls = sum(int(p.meta["dict"]["nulls"]) for p in parts if p.dvstart >= 0)
        dictionary = Column(value_type, total, Buffer(dchars, self.device), dvalid, Buffer(offs, self.device), None,
                            0, dnulls)
        return Column(dtype, self.total, Buffer(indices, self.device), validity, None, dictionary, 0, nulls)

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
        if self.on_device and layout_of(value_type) == Layout.STRING:
            return self._device_dictionary_column(c, fld, parts, validity, nulls)
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
            wide = None
            if total > np.iinfo(indices.dtype).max:
                wide = np.dtype(np.int32) if total <= np.iinfo(np.int32).max else np.dtype(np.int64)
                dtype = pa.dictionary(pa.from_numpy_dtype(wide), value_type, fld.type.ordered)
            if self.on_device:
                indices = self._device_shift(fld, parts, sizes, indices, wide, validity)
            else:
                # Each piece's indices must address its own dictionary: once shifted, an index past
                # it would silently read another rank's entries. (Checked in the received dtype:
                # checking the widened copy against fld.type failed every widened column.)
                vhost = None if validity is None else Buffer(validity.array, CPU)
                for p, d in zip(parts, dicts):
                    if p.n:
                        piece = Column(fld.type, p.n, Buffer(indices, CPU), vhost, None, d, p.row, -1)
                        check_received_column(piece, fld.name, p.peer)
                host = indices if wide is None else indices.astype(wide)
                start = 0
                for p, size in zip(parts, sizes):
                    if start and p.n:
                        host[p.row:p.row + p.n] += host.dtype.type(start)
                    start += size
                indices = host
            chars = np.concatenate([memory.to_host(d.chars())[_first(d):_last(d)] for d in dicts]) \
                if total else np.zeros(0, np.uint8)
            char_starts = np.cumsum([0] + [_last(d) - _first(d) for d in dicts])
            odt = offsets_dtype(value_type)
            offs = _concat_offsets([(memory.to_host(d.offsets_view()), _first(d), int(cs), d.length)
                                    for d, cs in zip(dicts, char_starts)], total, odt, int(char_starts[-1]))
            dvalid, dnulls = None, 0
            if any(d.validity is not None for d in dicts):   # null entries stay null
                entry_starts = np.cumsum([0] + sizes[:-1])
                dvalid = Buffer(_concat_bitmaps([(None if d.validity is None else memory.to_host(d.validity.array),
                                                  None if d.validity is None else 0, d.length, int(st))
                                                 for d, st in zip(dicts, entry_starts)], total), CPU)
                dnulls = sum(d.null_count for d in dicts if d.validity is not None)
            dictionary = Column(value_type, total, Buffer(chars, CPU), dvalid, Buffer(offs, CPU), None, 0, dnulls)
        dictionary = dictionary.to(self.device)
        return Column(dtype, self.total, Buffer(indices, self.device), validity, None, dictionary, 0, nulls)


def _host(spec: FrameSpec) -> np.ndarray:
    return host_empty(spec.count, np.dtype(spec.dtype))


# _Part's field per scratch kind
_START = {"validity": "vstart", "bits": "bstart", "offsets": "ostart", "dvalidity": "dvstart", "doffsets": "dostart"}


def _expect(spec: FrameSpec, nbytes: int, name: str, peer: int, what: str = "values") -> None:
    if spec.nbytes != nbytes:
        raise CommError(f"column {name!r}: rank {peer} sent {spec.nbytes} bytes of {what}, its header says "
                        f"{nbytes}", peer=peer)


def _next_spec(it: Any, name: str, peer: int) -> FrameSpec:
    spec = next(it, None)
    if spec is None:
        raise CommError(f"column {name!r}: rank {peer} sent fewer frames than its header describes", peer=peer)
    return spec


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
        #: after :meth:`result`: whether any rank (this one included) said it has more to send
        #: (the ``more`` flag of :func:`start_exchange`); False when no rank set it
        self.more = False

    def result(self) -> Table:
        """The received table (everything sent to this rank, concatenated in rank order)."""
        received = self._future.result()
        self.more = _any_more(received)
        if self._stats is not None:
            comm, stats = self._comm, self._stats
            others = [p for p in range(comm.size) if p != comm.rank]
            stats["bytes_sent"] = stats.get("bytes_sent", 0) + sum(f.nbytes for p in others
                                                                   for f in self._messages[p][1])
            stats["bytes_received"] = stats.get("bytes_received", 0) + sum(f.nbytes for p in others
                                                                           for f in received[p][1])
        return self._assembler.finish()

    @property
    def rows_from(self) -> list[int]:
        """After :meth:`result`: the rows received from each rank, in rank order (the received
        table's rows ``sum(rows_from[:p])`` on came from rank ``p``)."""
        return list(self._assembler.rows_from)


def _any_more(received: list) -> bool:
    """Whether any rank's message carries ``more=True`` (checked: a bool when present)."""
    more = False
    for peer, (header, _frames) in enumerate(received):
        flag = header.get("more", False) if isinstance(header, dict) else False
        if not isinstance(flag, bool):
            raise MalformedMessageError(f"the message from rank {peer}: 'more' must be a bool, got "
                                        f"{type(flag).__name__}", peer=peer)
        more = more or flag
    return more


def start_exchange(comm: Communicator, outgoing: Sequence[Sequence[Table]], *,
                   schema: Optional[pa.Schema] = None, tag: Optional[int] = None,
                   timeout: Optional[float] = None, device: Optional[Device] = None,
                   stats: Optional[dict] = None, more: Optional[bool] = None) -> PendingExchange:
    """Start :func:`exchange_tables` and return at once; call ``.result()`` for the table.

    Exchanges in flight together on one communicator need distinct tags (or none at all, the
    same number of them started in the same order on every rank). The outgoing tables must
    stay alive and unchanged until ``.result()`` returns.

    ``more`` (an exchange in rounds): sent with every message; after ``.result()``, the pending
    exchange's ``more`` attribute says whether any rank set it, the same answer on every rank.
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
    if more is not None:
        for header, _frames in messages:
            header["more"] = bool(more)
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
