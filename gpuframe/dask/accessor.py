"""The ``ddf.gpuframe`` accessor, registered through Dask's supported extension API.

``import gpuframe.dask`` registers it (``dask.dataframe.extensions.register_dataframe_accessor``);
nothing in Dask is patched.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from dask.dataframe.extensions import register_dataframe_accessor

from .core import merge, shuffle, to_table
from .tableops import difference, groupby_agg, intersect, sort, union, unique


@register_dataframe_accessor("gpuframe")
class GpuframeAccessor:
    """``ddf.gpuframe.shuffle(on)``, ``.merge(right, on=...)``, ``.union(other)``, ``.intersect(other)``,
    ``.difference(other)``, ``.unique(subset)``, ``.groupby(by).agg(**aggs)``, ``.sort(by)`` and
    ``.to_table()``.

    Keyword arguments (``client``, ``backend``, ``seed``, ``timeout``, ``stats``...) are passed on
    to the :mod:`gpuframe.dask` function of the same name.
    """

    def __init__(self, ddf: Any) -> None:
        self._ddf = ddf

    def shuffle(self, on: Any, npartitions: Optional[int] = None, **kwargs: Any) -> Any:
        """:func:`gpuframe.dask.shuffle` of this DataFrame."""
        return shuffle(self._ddf, on, npartitions, **kwargs)

    def to_table(self, **kwargs: Any) -> Any:
        """:func:`gpuframe.dask.to_table` of this DataFrame (computed, as one gpuframe.Table here)."""
        return to_table(self._ddf, **kwargs)

    def merge(self, right: Any, on: Any = None, **kwargs: Any) -> Any:
        """:func:`gpuframe.dask.merge` with this DataFrame as the left side."""
        return merge(self._ddf, right, on, **kwargs)

    def union(self, other: Any, *, distinct: bool = True, **kwargs: Any) -> Any:
        """:func:`gpuframe.dask.union` with this DataFrame as the left side."""
        return union(self._ddf, other, distinct=distinct, **kwargs)

    def intersect(self, other: Any, **kwargs: Any) -> Any:
        """:func:`gpuframe.dask.intersect` with this DataFrame as the left side."""
        return intersect(self._ddf, other, **kwargs)

    def difference(self, other: Any, **kwargs: Any) -> Any:
        """:func:`gpuframe.dask.difference` with this DataFrame as the left side."""
        return difference(self._ddf, other, **kwargs)

    def unique(self, subset: Any = None, **kwargs: Any) -> Any:
        """:func:`gpuframe.dask.unique` of this DataFrame."""
        return unique(self._ddf, subset, **kwargs)

    def sort(self, by: Any, *, descending: Any = False, nulls_last: bool = True, **kwargs: Any) -> Any:
        """:func:`gpuframe.dask.sort` of this DataFrame."""
        return sort(self._ddf, by, descending=descending, nulls_last=nulls_last, **kwargs)

    def groupby(self, by: Any, *, dropna: bool = False, **kwargs: Any) -> "GroupBy":
        """Group by ``by``; ``.agg(out=(column, op), ...)`` runs :func:`gpuframe.dask.groupby_agg`.

        ``kwargs`` (``client``, ``backend``, ``seed``, ``timeout``, ``stats``) are given here, so
        that ``agg``'s keywords are all output names.
        """
        return GroupBy(self._ddf, by, dropna=dropna, **kwargs)


class GroupBy:
    """``ddf.gpuframe.groupby(by)``: call :meth:`agg` to run the aggregation."""

    def __init__(self, ddf: Any, by: Any, *, dropna: bool = False, **kwargs: Any) -> None:
        self._ddf, self._by, self._dropna, self._kwargs = ddf, by, dropna, kwargs

    def agg(self, aggs: Optional[Mapping[str, tuple[str, str]]] = None, **named: tuple[str, str]) -> Any:
        """:func:`gpuframe.dask.groupby_agg` with ``{**aggs, **named}`` (``{out: (column, op)}``)."""
        if aggs is not None and not isinstance(aggs, Mapping):
            raise TypeError(f"aggs must be a mapping {{output name: (column, op)}} or None, got {type(aggs).__name__}")
        return groupby_agg(self._ddf, self._by, {**(aggs or {}), **named}, dropna=self._dropna, **self._kwargs)

    def __repr__(self) -> str:
        return f"<gpuframe.dask GroupBy by={self._by!r}>"
