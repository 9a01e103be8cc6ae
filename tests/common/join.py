"""Reference join for the tests: a plain-Python hash join over Arrow values, with SQL null
semantics (or nulls_equal), NaN == NaN, -0.0 == 0.0 and comparison by value across types."""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any, Optional, Sequence

import pyarrow as pa

_NULL = ("<null>",)
_NAN = ("<nan>",)


def _canon(v: Any) -> Any:
    if v is None:
        return _NULL
    if isinstance(v, float):
        if math.isnan(v):
            return _NAN
        if v == 0.0:
            return 0.0
    return v


def ref_pairs(left: pa.Table, right: pa.Table, left_on: Sequence[str], right_on: Sequence[str],
              how: str, nulls_equal: bool = False) -> Counter:
    """Multiset of ``(left_row or None, right_row or None)``; for semi/anti ``(left_row, None)``."""
    lk = list(zip(*[left.column(c).to_pylist() for c in left_on])) if left.num_rows else []
    rk = list(zip(*[right.column(c).to_pylist() for c in right_on])) if right.num_rows else []
    index: dict = defaultdict(list)
    for j, key in enumerate(rk):
        if not nulls_equal and any(v is None for v in key):
            continue
        index[tuple(_canon(v) for v in key)].append(j)
    out: Counter = Counter()
    matched_right = set()
    for i, key in enumerate(lk):
        if not nulls_equal and any(v is None for v in key):
            hits = []
        else:
            hits = index.get(tuple(_canon(v) for v in key), [])
        if how == "semi":
            if hits:
                out[(i, None)] += 1
            continue
        if how == "anti":
            if not hits:
                out[(i, None)] += 1
            continue
        for j in hits:
            out[(i, j)] += 1
            matched_right.add(j)
        if not hits and how in ("left", "outer"):
            out[(i, None)] += 1
    if how in ("right", "outer"):
        for j in range(len(rk)):
            if j not in matched_right:
                out[(None, j)] += 1
    return out


def pairs_of(left_idx: Any, right_idx: Optional[Any]) -> Counter:
    """Multiset of gather-map pairs, ``-1`` -> None."""
    import numpy as np

    li = np.asarray(left_idx).tolist()
    ri = [None] * len(li) if right_idx is None else np.asarray(right_idx).tolist()
    return Counter((None if a == -1 else a, None if (b is None or b == -1) else b) for a, b in zip(li, ri))


def norm_value(v: Any) -> Any:
    """A hashable, order-free stand-in for one cell (NaN equal to NaN)."""
    if isinstance(v, float) and math.isnan(v):
        return _NAN
    if isinstance(v, float) and v == 0.0:
        return 0.0
    return v


def rows_multiset(table: pa.Table, columns: Sequence[str]) -> Counter:
    cols = [table.column(c).to_pylist() for c in columns]
    return Counter(tuple(norm_value(v) for v in row) for row in zip(*cols)) if cols else Counter()
