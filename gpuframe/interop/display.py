"""Readable ``repr`` of a Table: device, schema and the first rows."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..core.table import Table

MAX_ROWS = 5
MAX_WIDTH = 24


def _cell(v: object) -> str:
    s = "null" if v is None else str(v)
    return s if len(s) <= MAX_WIDTH else s[: MAX_WIDTH - 1] + "…"


def table_repr(table: "Table") -> str:
    head = table.slice(0, MAX_ROWS)
    rows = head.to_arrow().to_pylist() if table.num_columns else []
    names = table.column_names
    types = [str(c.dtype) for c in table.columns]
    cells = [[_cell(r[n]) for n in names] for r in rows]
    widths = [max([len(n), len(t)] + [len(r[i]) for r in cells]) for i, (n, t) in enumerate(zip(names, types))]
    lines = [f"gpuframe.Table: {table.num_rows} rows x {table.num_columns} columns on {table.device}"]
    if names:
        lines.append("  ".join(n.ljust(w) for n, w in zip(names, widths)))
        lines.append("  ".join(t.ljust(w) for t, w in zip(types, widths)))
        lines.append("  ".join("-" * w for w in widths))
        for r in cells:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)))
        if table.num_rows > MAX_ROWS:
            lines.append(f"... {table.num_rows - MAX_ROWS} more rows")
    return "\n".join(lines)
