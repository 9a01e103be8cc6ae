"""gpuframe on Dask: a shuffle and a merge whose all-to-all goes directly between workers.

``import gpuframe.dask`` also registers the ``ddf.gpuframe`` accessor::

    import gpuframe.dask
    joined = gpuframe.dask.merge(left, right, on="key")       # or left.gpuframe.merge(right, on="key")
    shuffled = ddf.gpuframe.shuffle("key", npartitions=8)

See :mod:`gpuframe.dask.core` for how an operation runs and :mod:`gpuframe.dask._worker_comms` for
how the communicators are bootstrapped on the workers. Needs ``pip install 'gpuframe[dask]'``
(plus ``'gpuframe[ucx]'`` for the UCX communicator).
"""
from __future__ import annotations

try:
    import dask.dataframe  # noqa: F401
    import distributed  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("gpuframe.dask needs dask[dataframe] and distributed: pip install 'gpuframe[dask]'") from exc

from . import accessor  # noqa: F401  (registers ddf.gpuframe)
from ._worker_comms import close_sessions, get_session
from .core import WorkerLostError, merge, shuffle

__all__ = ["WorkerLostError", "close_sessions", "get_session", "merge", "shuffle"]
