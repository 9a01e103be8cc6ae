"""Row hashing on a CUDA device (``hash_rows``; the hash contract is in :mod:`gpuframe.ops.hashing`)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ...core.column import Column
from ...core.device import launch_context
from .._common import hash_columns
from ._target import CudaTarget

__all__ = ["hash_rows"]


def hash_rows(columns: Sequence[Column], seed: np.uint64) -> Any:
    dev = columns[0].device
    with launch_context(dev):
        return hash_columns(CudaTarget(dev), columns, seed)
