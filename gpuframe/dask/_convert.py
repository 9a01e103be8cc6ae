"""Partitions <-> gpuframe Tables, for Dask DataFrames of pandas (CPU) or cuDF (GPU) partitions.

* pandas partitions become CPU tables with :func:`gpuframe.from_pandas` (numeric columns
  without nulls are wrapped in place) and come back with ``Table.to_pandas``.
* cuDF partitions (dask-cuDF) become GPU tables with :func:`gpuframe.from_cudf`, which wraps
  the device memory through the Arrow C device interface, and come back with
  ``Table.to_cudf``. cuDF is only imported on that path, and only on the workers.

Every partition is converted with one Arrow schema taken from the collection's ``_meta``
(made non-empty by Dask), so that all partitions, and all workers, agree on the column types
even where a partition alone is ambiguous (an all-null object column). Results are made to
match the output ``meta`` dtypes exactly (:func:`conform`).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import pyarrow as pa

from gpuframe.core.table import Table

PANDAS = "pandas"
CUDF = "cudf"


def frame_kind(meta: Any, name: str = "ddf") -> str:
    """``"pandas"`` or ``"cudf"``: the partition type of a Dask DataFrame (from its ``_meta``)."""
    module = type(meta).__module__.split(".")[0]
    if module == "pandas" and type(meta).__name__ == "DataFrame":
        return PANDAS
    if module == "cudf" and type(meta).__name__ == "DataFrame":
        return CUDF
    raise TypeError(f"{name} must be a Dask DataFrame of pandas or cuDF partitions, "
                    f"got partitions of type {type(meta).__module__}.{type(meta).__name__}")


def _nonempty(meta: Any) -> Any:
    from dask.dataframe.utils import meta_nonempty

    return meta_nonempty(meta)


def schema_of(meta: Any, kind: str) -> pa.Schema:
    """The Arrow schema every partition of a collection with this ``_meta`` is converted to."""
    if kind == PANDAS:
        from gpuframe.interop.pandas import from_pandas

        return from_pandas(_nonempty(meta)).schema
    from gpuframe.interop.cudf import from_cudf

    return from_cudf(_nonempty(meta)).schema


def to_table(df: Any, kind: str, schema: pa.Schema) -> Table:
    """One partition as a Table (zero-copy where the memory allows)."""
    if kind == PANDAS:
        from gpuframe.interop.pandas import from_pandas

        return from_pandas(df, schema=schema)
    from gpuframe.interop.cudf import from_cudf

    from gpuframe.comm.wire import describe_schema_difference, same_schema

    table = from_cudf(df)
    if not same_schema(table.schema, schema):
        raise TypeError("a cuDF partition does not match the collection's meta: "
                        f"{describe_schema_difference(schema, table.schema)}")
    return table


def from_table(table: Table, kind: str, meta: Any) -> Any:
    """A Table as a partition of the output collection (dtypes as in ``meta``)."""
    if kind == PANDAS:
        return conform(table.to_pandas(), meta)
    return conform(table.to_cudf(), meta)


def conform(df: Any, meta: Any) -> Any:
    """``df`` with the column dtypes of ``meta`` (e.g. ``int64`` -> ``Int64`` where meta says so)."""
    if list(df.columns) != list(meta.columns):
        raise ValueError(f"internal error: output columns {list(df.columns)} differ from meta {list(meta.columns)}")
    wrong = {c: meta.dtypes[c] for c in meta.columns if df.dtypes[c] != meta.dtypes[c]}
    return df.astype(wrong) if wrong else df


def empty_frame(schema: pa.Schema, kind: str) -> Any:
    """A zero-row partition of ``schema`` as the output conversion makes it."""
    from gpuframe.interop.arrow import from_arrow

    table = from_arrow(schema.empty_table())
    return table.to_pandas() if kind == PANDAS else table.to_cudf()


def _is_masked(dtype: Any) -> bool:
    # pandas' nullable Int*/UInt*/boolean (cuDF columns are always nullable: nothing to do)
    return type(dtype).__name__ in {f"{p}{w}Dtype" for p in ("Int", "UInt") for w in (8, 16, 32, 64)} | {"BooleanDtype"}


def _masked_of(dtype: Any) -> Any:
    import pandas as pd

    text = str(dtype)
    if text == "bool":
        return pd.BooleanDtype()
    if text.startswith("int") or text.startswith("uint"):
        return pd.api.types.pandas_dtype(text.capitalize() if text.startswith("int") else "U" + text[1:].capitalize())
    return dtype


def shuffle_meta(meta: Any) -> Any:
    """Output meta of a shuffle: the input's columns and dtypes, default index."""
    return meta.reset_index(drop=True)


def merge_meta(out_schema: pa.Schema, kind: str, left_meta: Any, right_meta: Any, how: str,
               suffixes: Sequence[Optional[str]]) -> Any:
    """Output meta of a merge from gpuframe's output schema.

    An output column takes the dtype of the input column it comes from (found by name, with a
    suffix stripped) when its Arrow type is unchanged; integer and bool columns are made pandas
    nullable (``Int64``, ``boolean``) where nulls can appear: the input column was nullable, or
    the join is not inner (unmatched rows). cuDF columns are nullable already.
    """
    meta = empty_frame(out_schema, kind)
    if kind != PANDAS:
        return meta
    sources = _sources(list(meta.columns), left_meta, right_meta, suffixes)
    dtypes = {}
    for col in meta.columns:
        dt = meta.dtypes[col]
        src = sources.get(col)
        if src is not None and _same_kind(src, dt):
            dt = src
        if (how not in ("inner", "semi", "anti") or (src is not None and _is_masked(src))) and not _is_masked(dt):
            dt = _masked_of(dt)
        dtypes[col] = dt
    return meta.astype(dtypes)


def _same_kind(src: Any, dt: Any) -> bool:
    import pandas as pd

    try:
        return pd.api.types.pandas_dtype(src).kind == pd.api.types.pandas_dtype(dt).kind or (
            _is_masked(src) and str(src).lower() == str(dt).lower())
    except TypeError:
        return False


def _sources(columns: list[str], left: Any, right: Any, suffixes: Sequence[Optional[str]]) -> dict[str, Any]:
    out = {}
    for col in columns:
        for frame, suffix in ((left, suffixes[0]), (right, suffixes[1])):
            if suffix and col.endswith(suffix) and col[:-len(suffix)] in frame.columns:
                out[col] = frame.dtypes[col[:-len(suffix)]]
                break
        else:
            if col in left.columns:
                out[col] = left.dtypes[col]
            elif col in right.columns:
                out[col] = right.dtypes[col]
    return out
