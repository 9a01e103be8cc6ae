"""gpuframe: CUDA-accelerated Arrow tables with hash join, hash partition and a UCX shuffle.

The same code runs on the CPU backend (numba) and on CUDA GPUs (numba.cuda + CuPy).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import config
from .core.buffer import Buffer
from .core.column import Column
from .core.device import Device, NoGPUError, cuda_available
from .core.table import Table
from .errors import FallbackError, PerformanceWarning
from .interop.arrow import from_arrow

__version__ = "0.1.0"

_LAZY = {
    "from_pandas": ("gpuframe.interop.pandas", "from_pandas"),
    "read_parquet": ("gpuframe.interop.parquet", "read_parquet"),
    "from_cudf": ("gpuframe.interop.cudf", "from_cudf"),
    "from_dlpack": ("gpuframe.interop.dlpack", "from_dlpack"),
    "merge": ("gpuframe.ops.join", "merge"),
    "join_indices": ("gpuframe.ops.join", "join_indices"),
    "join_size": ("gpuframe.ops.join", "join_size"),
    "hash_partition": ("gpuframe.ops.partition", "hash_partition"),
    "take": ("gpuframe.ops.gather", "take"),
    "info": ("gpuframe.sysinfo", "info"),
    "sort": ("gpuframe.ops.sort", "sort"),
    "sort_indices": ("gpuframe.ops.sort", "sort_indices"),
    "unique": ("gpuframe.ops.setops", "unique"),
    "union": ("gpuframe.ops.setops", "union"),
    "intersect": ("gpuframe.ops.setops", "intersect"),
    "difference": ("gpuframe.ops.setops", "difference"),
    "concat": ("gpuframe.ops.select", "concat"),
    "filter": ("gpuframe.ops.select", "filter"),
    "groupby_agg": ("gpuframe.ops.groupby", "groupby_agg"),
    "read_csv": ("gpuframe.interop.csv", "read_csv"),
}


def __getattr__(name: str) -> Any:
    # Lazy so that `import gpuframe` stays fast (numba compiles nothing until first use).
    try:
        mod, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'gpuframe' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(mod), attr)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # pragma: no cover
    from .sysinfo import info
    from .interop.csv import read_csv
    from .interop.cudf import from_cudf
    from .interop.dlpack import from_dlpack
    from .interop.pandas import from_pandas
    from .interop.parquet import read_parquet
    from .ops.gather import take
    from .ops.join import join_indices, join_size, merge
    from .ops.groupby import groupby_agg
    from .ops.partition import hash_partition
    from .ops.select import concat, filter
    from .ops.setops import difference, intersect, union, unique
    from .ops.sort import sort, sort_indices

__all__ = [
    "Buffer", "Column", "Device", "FallbackError", "NoGPUError", "PerformanceWarning", "Table",
    "concat", "config", "cuda_available", "difference", "filter", "from_arrow", "from_cudf", "from_dlpack",
    "from_pandas", "groupby_agg", "hash_partition", "info", "intersect", "join_indices", "join_size", "merge",
    "read_csv", "read_parquet", "sort", "sort_indices", "take", "union", "unique",
]
