"""Row hashing on the CPU (``hash_rows``; the hash contract is in :mod:`gpuframe.ops.hashing`)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ...core.column import Column
from .._common import hash_columns
from ._target import CPU_TARGET, _cpu_threads

__all__ = ["hash_rows"]


def hash_rows(columns: Sequence[Column], seed: np.uint64) -> np.ndarray:
    with _cpu_threads(len(columns[0])):
        return hash_columns(CPU_TARGET, columns, seed)
