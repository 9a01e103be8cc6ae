"""Gather on a CUDA device: ``check_indices`` and ``gather_column`` (see :mod:`gpuframe.ops.gather`)."""
from __future__ import annotations

from typing import Any, Optional

from ...core import memory
from ...core.column import Column
from ...core.device import launch_context
from .._common import gather_column as _gather
from ._target import CudaTarget

__all__ = ["check_indices", "gather_column"]


def check_indices(indices: Any, num_rows: int) -> tuple[int, int]:
    dev = memory.array_device(indices)
    with launch_context(dev):
        return CudaTarget(dev).check_indices(indices, num_rows)


def gather_column(column: Column, indices: Any, missing: Optional[int]) -> Column:
    dev = column.device
    with launch_context(dev):
        return _gather(CudaTarget(dev), column, indices, missing)
