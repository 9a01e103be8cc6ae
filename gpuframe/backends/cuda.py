"""CUDA backend: launchers for the ``numba.cuda`` kernels in ``gpuframe.kernels``.

On a real GPU, memory comes from CuPy; under ``NUMBA_ENABLE_CUDASIM=1`` the same launchers
run on numba's simulator.
"""
from __future__ import annotations
from . import impl_partition  # noqa: F401,E402  (hash_rows, partition_ids, hash_partition, check_indices, gather_column)
from . import impl_join  # noqa: F401,E402  (join)
