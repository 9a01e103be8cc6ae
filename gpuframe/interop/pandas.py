"""pandas interop, through pyarrow (pandas is optional: ``pip install 'gpuframe[pandas]'``)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

import pyarrow as pa

from ..core.device import DeviceLike
from ..core.table import Table
from .arrow_import import from_arrow

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = ["from_pandas", "to_pandas"]

PANDAS_INSTALL = "pip install 'gpuframe[pandas]'"


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:
        raise ImportError(f"this needs pandas; install it with: {PANDAS_INSTALL}") from exc
    return pandas


def from_pandas(df: "pandas.DataFrame", device: DeviceLike = None, *, preserve_index: bool = False,
                schema: Optional[pa.Schema] = None, validate: bool = True) -> Table:
    """A :class:`Table` from a pandas DataFrame (or Series), converted by pyarrow.

    Parameters
    ----------
    df : pandas.DataFrame or pandas.Series
        A Series becomes a one-column table named after it (``"0"`` when unnamed).
    device : "cpu", "cuda", "cuda:N" or Device, optional
        Where the result lives (default: the CPU).
    preserve_index : bool, default False
        Keep the index as column(s) (named ``__index_level_0__`` ... when unnamed); by default it
        is dropped.
    schema : pyarrow.Schema, optional
        The Arrow types to convert to (as in ``pyarrow.Table.from_pandas``). Needed where pandas
        holds no type: an empty ``object`` column (e.g. dates) or an empty categorical has type
        ``null`` otherwise, which gpuframe refuses.
    validate : bool, default True
        Check the contents of every column pyarrow produced (as :func:`gpuframe.from_arrow`);
        ``False`` skips the O(rows) checks, the structural ones always run.

    Returns
    -------
    Table

    Notes
    -----
    pyarrow wraps numeric NumPy columns without nulls in place, so on the CPU those columns share
    memory with the DataFrame; anything else (strings, columns with nulls, extension dtypes) is
    converted, a copy. As in ``pyarrow.Table.from_pandas``, ``NaN`` in a float column becomes null,
    and pandas strings arrive as ``large_string`` and categoricals as dictionary columns.
    """
    pd = _pandas()
    if not isinstance(preserve_index, bool):
        raise TypeError(f"preserve_index must be a bool, got {preserve_index!r}")
    if isinstance(df, pd.Series):
        df = df.to_frame(name="0" if df.name is None else str(df.name))
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"from_pandas expects a pandas DataFrame or Series, got {type(df).__name__}")
    if schema is not None and not isinstance(schema, pa.Schema):
        raise TypeError(f"schema must be a pyarrow.Schema or None, got {type(schema).__name__}")
    tbl = pa.Table.from_pandas(df, preserve_index=preserve_index, schema=schema)
    return from_arrow(tbl.replace_schema_metadata(None), device, validate=validate)


def _masked_dtypes(pd: Any) -> dict[pa.DataType, Any]:
    return {
        pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(),
        pa.int64(): pd.Int64Dtype(), pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(),
        pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype(), pa.bool_(): pd.BooleanDtype(),
    }


def to_pandas(table: Table, **kwargs: Any) -> "pandas.DataFrame":
    """The table as a pandas DataFrame (``Table.to_pandas``), converted by pyarrow.

    Parameters
    ----------
    table : Table
        On any device (CUDA data is copied to the host first).
    **kwargs
        Passed to ``pyarrow.Array.to_pandas`` for each column (``types_mapper``,
        ``date_as_object``, ``timestamp_as_object``, ...).

    Returns
    -------
    pandas.DataFrame
        With a default RangeIndex and the table's column names and order.

    Notes
    -----
    Unless ``types_mapper`` is given, an integer or bool column *with nulls* becomes a pandas
    nullable column (``Int64``, ``UInt8``, ``boolean``, ...) instead of pyarrow's default
    float64/object, so that no integer is rounded (an int64 above 2**53 does not survive
    float64). Columns without nulls keep NumPy dtypes.
    """
    pd = _pandas()
    masked = _masked_dtypes(pd)
    user_mapper: Optional[Callable[[pa.DataType], Any]] = kwargs.pop("types_mapper", None)
    series = {}
    for name, col in table.items():
        arr = col.to_arrow()
        mapper = user_mapper
        if mapper is None and arr.null_count and arr.type in masked:
            mapper = masked.get
        s = arr.to_pandas(types_mapper=mapper, **kwargs)
        series[name] = s
    if not series:
        return pd.DataFrame(index=pd.RangeIndex(table.num_rows))
    return pd.DataFrame(series, copy=False)
