"""CPU backend: numba ``njit`` drivers over host numpy arrays (see ``gpuframe.kernels``)."""
from __future__ import annotations
