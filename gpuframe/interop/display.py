"""Readable ``repr`` of a Table: device, schema and the first rows.

Only the rows shown are read: on CUDA the head slice is copied to the host (``Column.to`` moves
only a slice's bytes), never the whole table.
"""
from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:  # pragma: no cover
    from ..core.table import Table

MAX_ROWS = 5
MAX_COLUMNS = 12
MAX_WIDTH = 32


def _width(s: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in s)


def _fit(s: str) -> str:
    if _width(s) <= MAX_WIDTH:
        return s
    out = ""
    for ch in s:
        if _width(out + ch) > MAX_WIDTH - 1:
            break
        out += ch
    return out + "…"


def _pad(s: str, width: int) -> str:
    return s + " " * (width - _width(s))


def type_name(dtype: pa.DataType) -> str:
    """A short name for a column type (``dict<int32,string>``, ``timestamp[ns,UTC]``, ...)."""
    if pa.types.is_dictionary(dtype):
        return f"dict<{type_name(dtype.index_type)},{type_name(dtype.value_type)}>"
    if pa.types.is_timestamp(dtype):
        return f"timestamp[{dtype.unit}{',' + dtype.tz if dtype.tz else ''}]"
    return {"float": "float32", "double": "float64", "date32[day]": "date32"}.get(str(dtype), str(dtype))


def _cells(arr: pa.Array) -> list[str]:
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return ["null" if v is None else _fit(repr(v)) for v in arr.to_pylist()]
    if pa.types.is_floating(arr.type):  # shortest round-trip text, "1.0" distinct from an integer
        scalar = np.float32 if pa.types.is_float32(arr.type) else np.float64
        return ["null" if v is None else _fit(str(scalar(v))) for v in arr.to_pylist()]
    text = pc.cast(arr, pa.string()) if len(arr) else pa.array([], pa.string())
    return ["null" if v is None else _fit(v) for v in text.to_pylist()]


def table_repr(table: "Table") -> str:
    """The text ``repr(Table)`` shows: a header line, then names, types and the first rows."""
    n, m = table.num_rows, table.num_columns
    header = f"gpuframe.Table: {n} row{'s' * (n != 1)} x {m} column{'s' * (m != 1)} on {table.device}"
    if m == 0:
        return header
    names = table.column_names[:MAX_COLUMNS]
    head = table.select(names).slice(0, MAX_ROWS).to_arrow()
    cols = [[_fit(name), type_name(head.schema.field(i).type)] + _cells(head.column(i).combine_chunks())
            for i, name in enumerate(names)]
    widths = [max(_width(c) for c in col) for col in cols]
    rows = list(zip(*cols))
    lines = [header]
    for r, row in enumerate(rows):
        lines.append("  ".join(_pad(c, w) for c, w in zip(row, widths)).rstrip())
        if r == 1:
            lines.append("  ".join("-" * w for w in widths))
    if m > MAX_COLUMNS:
        lines.append(f"... {m - MAX_COLUMNS} more column{'s' * (m - MAX_COLUMNS != 1)}: "
                     + ", ".join(table.column_names[MAX_COLUMNS:]))
    if n == 0:
        lines.append("(no rows)")
    elif n > MAX_ROWS:
        lines.append(f"... {n - MAX_ROWS} more row{'s' * (n - MAX_ROWS != 1)}")
    return "\n".join(lines)
