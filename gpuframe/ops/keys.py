"""Join keys: which key types may be joined, and their promoted type.

A pair of key columns (one from each side) belongs to one *family*; the family fixes how both
sides are compared (the word each backend makes of a row, see :mod:`gpuframe.kernels.join`):

============  ===========================================  ===================================
family        types                                        word
============  ===========================================  ===================================
``int``       int8..int64, uint8..uint64 (mixed allowed)   the int64 value (uint64: its bits)
``float``     float32/64, or a float with an integer       float64 bits (compared canonically:
                                                           ``-0.0 == 0.0``, NaN == NaN)
``bool``      bool with bool                               0 / 1
``date32``    date32 with date32                           the int32 day number
``timestamp`` timestamps of the same unit and time zone    the int64 value
``string``    string, large_string, dictionary<_, string>  (general path: utf8 byte spans)
============  ===========================================  ===================================

``uint64`` paired with a signed integer compares values, never bits: a uint64 value of 2**63
or more, or a negative signed value, can equal nothing on the other side, so such rows never
match (they still appear, unmatched, in outer joins). Any other pairing raises ``TypeError``
naming both columns and their types.

This module only checks and promotes the types (:func:`resolve_key_pairs`); turning the key
columns into what the kernels compare is the backend's work (``gpuframe.backends._keys``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa

from ..backends.contract import KeyPair
from ..core.table import Table

__all__ = ["KeyPair", "pair_for", "resolve_key_pairs"]


# --------------------------------------------------------------------------- type rules
def _family(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        return "string" if (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)) else "other"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_date32(t):
        return "date32"
    if pa.types.is_timestamp(t):
        return "timestamp"
    return "other"


def _incompatible(lname: str, lt: pa.DataType, rname: str, rt: pa.DataType, why: str) -> TypeError:
    return TypeError(f"cannot join left key {lname!r} ({lt}) with right key {rname!r} ({rt}): {why}")


def _string_out_type(lt: pa.DataType, rt: pa.DataType) -> pa.DataType:
    def base(t: pa.DataType) -> pa.DataType:
        return t.value_type if pa.types.is_dictionary(t) else t

    lb, rb = base(lt), base(rt)
    return pa.large_string() if (pa.types.is_large_string(lb) or pa.types.is_large_string(rb)) else pa.string()


def _pair(lname: str, lt: pa.DataType, rname: str, rt: pa.DataType) -> KeyPair:
    lf, rf = _family(lt), _family(rt)
    if "other" in (lf, rf):
        raise _incompatible(lname, lt, rname, rt, "that type cannot be a join key")
    numeric = {"int", "float"}
    if lf in numeric and rf in numeric:
        if lf == "int" and rf == "int":
            ln, rn = np.dtype(lt.to_pandas_dtype()), np.dtype(rt.to_pandas_dtype())
            signed = (np.issubdtype(ln, np.signedinteger), np.issubdtype(rn, np.signedinteger))
            mixed64 = (ln == np.uint64 and signed[1]) or (rn == np.uint64 and signed[0])
            if mixed64:
                return KeyPair(lname, rname, lt, rt, "int", lt, range_checked=True)
            return KeyPair(lname, rname, lt, rt, "int", pa.from_numpy_dtype(np.promote_types(ln, rn)))
        out = pa.float32() if (pa.types.is_float32(lt) and pa.types.is_float32(rt)) else pa.float64()
        return KeyPair(lname, rname, lt, rt, "float", out)
    if lf != rf:
        raise _incompatible(lname, lt, rname, rt, f"a {lf} key cannot match a {rf} key")
    if lf == "timestamp":
        if lt.unit != rt.unit:
            raise _incompatible(lname, lt, rname, rt, f"timestamp units differ ({lt.unit} vs {rt.unit}); cast one side first")
        if lt.tz != rt.tz:
            raise _incompatible(lname, lt, rname, rt, f"time zones differ ({lt.tz} vs {rt.tz}); cast one side first")
        return KeyPair(lname, rname, lt, rt, "timestamp", lt)
    if lf == "string":
        return KeyPair(lname, rname, lt, rt, "string", _string_out_type(lt, rt))
    return KeyPair(lname, rname, lt, rt, lf, lt)


def resolve_key_pairs(left: Table, right: Table, left_on: Sequence[str], right_on: Sequence[str]) -> list[KeyPair]:
    """Check that each ``left_on[i]`` can be joined with ``right_on[i]`` and promote the types.

    Raises
    ------
    TypeError
        Incompatible key types; the message names both columns and both types.
    """
    return [_pair(ln, left[ln].dtype, rn, right[rn].dtype) for ln, rn in zip(left_on, right_on)]


def pair_for(name: str, dtype: pa.DataType) -> KeyPair:
    """The key pair of a column with itself (grouping, unique, set operations: rows of one
    type compared with each other).

    Raises
    ------
    TypeError
        A type that cannot be a key; the message names the column and its type.
    """
    if _family(dtype) == "other":
        raise TypeError(f"column {name!r} ({dtype}) cannot be compared as a key: keys are integers, floats, bool, "
                        "strings, string dictionaries, date32 and timestamps")
    return _pair(name, dtype, name, dtype)
