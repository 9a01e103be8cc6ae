"""A uint64 key joined with a signed key: the range check (a uint64 value >= 2**63, or a negative
signed one, matches nothing) looks only at non-null rows. A null row's stored value is whatever
the buffer holds; under ``nulls_equal=True`` the row must still match the other side's nulls,
whatever that value is (here >= 2**63 on the uint64 side and negative on the int64 side)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import gpuframe


def _array(typ: pa.DataType, values: list, valid: list) -> pa.Array:
    """An array built from buffers, so that its null slots hold ``values`` too."""
    data = pa.py_buffer(np.array(values, dtype=typ.to_pandas_dtype()).tobytes())
    bits = pa.py_buffer(np.packbits(np.array(valid, np.uint8), bitorder="little").tobytes())
    arr = pa.Array.from_buffers(typ, len(values), [bits, data], null_count=len(valid) - sum(valid))
    arr.validate(full=True)
    return arr


# left uint64: row 0 = 2**63 + 5 (out of int64's range), row 1 = 5, rows 2 and 3 null holding
# 2**63 + 7 (negative as an int64 word) and 3
LEFT = ([2**63 + 5, 5, 2**63 + 7, 3], [1, 1, 0, 0])
# right int64: row 0 = 5, row 1 null holding -4, row 2 = -1 (out of uint64's range), row 3 null
# holding 9
RIGHT = ([5, -4, -1, 9], [1, 0, 1, 0])
NULL_PAIRS = [(2, 1), (2, 3), (3, 1), (3, 3)]


def range_tables(extra_key: bool = False) -> tuple[pa.Table, pa.Table]:
    """The two sides (a second key column ``j``, all ones, for the multi-key path)."""
    left = pa.table({"k": _array(pa.uint64(), *LEFT), "a": pa.array(range(4), pa.int64())})
    right = pa.table({"k2": _array(pa.int64(), *RIGHT), "b": pa.array(range(4), pa.int64())})
    if extra_key:
        left = left.append_column("j", pa.array([1] * 4, pa.int64()))
        right = right.append_column("j2", pa.array([1] * 4, pa.int64()))
    return left, right


def expected_pairs(how: str, nulls_equal: bool) -> list[tuple[int, int]]:
    pairs = [(1, 0)] + (NULL_PAIRS if nulls_equal else [])
    if how == "outer":
        left_hit = {i for i, _ in pairs}
        right_hit = {j for _, j in pairs}
        pairs += [(i, -1) for i in range(4) if i not in left_hit]
        pairs += [(-1, j) for j in range(4) if j not in right_hit]
    return sorted(pairs)


def pairs_of(li, ri) -> list[tuple[int, int]]:
    return sorted(zip(np.asarray(li).tolist(), np.asarray(ri).tolist()))


@pytest.mark.parametrize("extra_key", [False, True], ids=["one-key", "two-keys"])
@pytest.mark.parametrize("nulls_equal", [True, False])
@pytest.mark.parametrize("how", ["inner", "outer"])
def test_null_rows_are_not_range_checked(how, nulls_equal, extra_key):
    left, right = range_tables(extra_key)
    on = (["k", "j"], ["k2", "j2"]) if extra_key else ("k", "k2")
    L, R = gpuframe.from_arrow(left), gpuframe.from_arrow(right)
    li, ri = gpuframe.join_indices(L, R, left_on=on[0], right_on=on[1], how=how, nulls_equal=nulls_equal)
    assert pairs_of(li, ri) == expected_pairs(how, nulls_equal)
    assert gpuframe.join_size(L, R, left_on=on[0], right_on=on[1], how=how,
                              nulls_equal=nulls_equal) == len(expected_pairs(how, nulls_equal))
    # the same, sides swapped (the signed key on the left)
    li, ri = gpuframe.join_indices(R, L, left_on=on[1], right_on=on[0], how=how, nulls_equal=nulls_equal)
    assert pairs_of(ri, li) == expected_pairs(how, nulls_equal)


def test_inner_merge_keeps_the_matching_null_rows():
    left, right = range_tables()
    out = gpuframe.merge(gpuframe.from_arrow(left), gpuframe.from_arrow(right), left_on="k", right_on="k2",
                         how="inner", nulls_equal=True).to_arrow()
    assert sorted(zip(out.column("a").to_pylist(), out.column("b").to_pylist())) == [(1, 0)] + NULL_PAIRS
