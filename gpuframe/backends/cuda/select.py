"""Row selection on a CUDA device: the rows of a boolean mask (a flag kernel, a scan and a
scatter, nothing through the host), and columns stacked one after another."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from ...core import memory
from ...core.column import Column
from ...core.device import CPU, launch_context

__all__ = ["mask_rows", "concat_columns", "cross_maps"]


def mask_rows(mask: Column) -> Any:
    """The int64 row numbers (on the device) where the bool column ``mask`` is true (a null
    counts as false)."""
    from gpuframe.kernels.group import cuda_kernels

    from .join import _select_rows
    from .launch import launch

    dev = mask.device
    n = len(mask)
    with launch_context(dev):
        valid = mask.validity_bytes()
        flags = memory.empty(n, np.uint8, dev)
        launch(cuda_kernels().mask_flags, n, mask.bool_bytes(), memory.empty(1, np.uint8, dev) if valid is None
               else valid, valid is not None, flags)
        rows, _ = _select_rows(flags, 1, dev)
        return rows


def concat_columns(columns: Sequence[Column], dtype: pa.DataType) -> Column:
    """The columns (all of ``dtype``) one after another. Today through the host: pyarrow
    concatenates (dictionaries unified) and the result is copied back to the device."""
    from ..cpu.select import concat_columns as host_concat

    dev = columns[0].device
    return host_concat([c.to(CPU) for c in columns], dtype).to(dev)


def cross_maps(nl: int, nr: int, device: Any) -> tuple[Any, Any]:
    """The gather maps of the cross product of ``nl`` x ``nr`` rows, left-major, made on ``device``."""
    from gpuframe.kernels.group import cuda_kernels

    from .launch import launch

    total = nl * nr
    with launch_context(device):
        lidx = memory.empty(total, np.int64, device)
        ridx = memory.empty(total, np.int64, device)
        launch(cuda_kernels().cross_maps, total, np.int64(max(nr, 1)), lidx, ridx)
    return lidx, ridx
