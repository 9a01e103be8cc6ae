"""CPU backend: numba ``njit`` drivers over host numpy arrays (see ``gpuframe.kernels``)."""
from __future__ import annotations
from . import impl_partition  # noqa: F401,E402  (hash_rows, partition_ids, hash_partition, check_indices, gather_column)
from . import impl_join  # noqa: F401,E402  (join)
