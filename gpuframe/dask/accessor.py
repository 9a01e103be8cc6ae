"""The ``ddf.gpuframe`` accessor, registered through Dask's supported extension API.

``import gpuframe.dask`` registers it (``dask.dataframe.extensions.register_dataframe_accessor``);
nothing in Dask is patched.
"""
from __future__ import annotations

from typing import Any, Optional

from dask.dataframe.extensions import register_dataframe_accessor

from .core import merge, shuffle


@register_dataframe_accessor("gpuframe")
class GpuframeAccessor:
    """``ddf.gpuframe.shuffle(on)`` and ``ddf.gpuframe.merge(right, on=...)``."""

    def __init__(self, ddf: Any) -> None:
        self._ddf = ddf

    def shuffle(self, on: Any, npartitions: Optional[int] = None, **kwargs: Any) -> Any:
        """:func:`gpuframe.dask.shuffle` of this DataFrame."""
        return shuffle(self._ddf, on, npartitions, **kwargs)

    def merge(self, right: Any, on: Any = None, **kwargs: Any) -> Any:
        """:func:`gpuframe.dask.merge` with this DataFrame as the left side."""
        return merge(self._ddf, right, on, **kwargs)
