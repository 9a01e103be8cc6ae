"""Gather on the CPU: ``check_indices`` and ``gather_column`` (see :mod:`gpuframe.ops.gather`)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ...core.column import Column
from .._common import gather_column as _gather
from ._target import CPU_TARGET, _cpu_threads

__all__ = ["check_indices", "gather_column"]


def check_indices(indices: np.ndarray, num_rows: int) -> tuple[int, int]:
    with _cpu_threads(len(indices)):
        return CPU_TARGET.check_indices(indices, num_rows)


def gather_column(column: Column, indices: np.ndarray, missing: Optional[int]) -> Column:
    with _cpu_threads(len(indices)):
        return _gather(CPU_TARGET, column, indices, missing)
