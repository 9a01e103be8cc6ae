"""gpuframe on Dask: a shuffle, a merge and table operations whose all-to-all goes directly between workers.

``import gpuframe.dask`` also registers the ``ddf.gpuframe`` accessor::

    import gpuframe.dask
    joined = gpuframe.dask.merge(left, right, on="key")       # or left.gpuframe.merge(right, on="key")
    shuffled = ddf.gpuframe.shuffle("key", npartitions=8)
    totals = gpuframe.dask.groupby_agg(ddf, "key", {"total": ("v", "sum")})
    totals = ddf.gpuframe.groupby("key").agg(total=("v", "sum"))   # the same
    ordered = gpuframe.dask.sort(ddf, "v", descending=True)
    both = gpuframe.dask.union(a, b)                         # also intersect, difference, unique
    table = gpuframe.dask.to_table(joined)                   # computed, as one gpuframe.Table here

Every function returns a lazy collection: nothing runs until ``compute``/``persist``, and the
operation is one node of the Dask graph, composed and optimised with the others (a column
selection after it is pushed below it). See :mod:`gpuframe.dask._lazy` for the graph,
:mod:`gpuframe.dask.core` for how an operation runs on the workers and
:mod:`gpuframe.dask._worker_comms` for how the communicators are bootstrapped. Needs ``pip install 'gpuframe[dask]'``
(plus ``'gpuframe[ucx]'`` for the UCX communicator).
"""
from __future__ import annotations

try:
    import dask.dataframe  # noqa: F401
    import distributed  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("gpuframe.dask needs dask[dataframe] and distributed: pip install 'gpuframe[dask]'") from exc

from . import accessor  # noqa: F401  (registers ddf.gpuframe)
from ._lazy import wait_stats
from ._worker_comms import close_sessions, get_session
from .core import WorkerLostError, merge, shuffle, to_table
from .tableops import difference, groupby_agg, intersect, sort, union, unique

__all__ = ["WorkerLostError", "close_sessions", "difference", "get_session", "groupby_agg", "intersect", "merge",
           "shuffle", "sort", "to_table", "union", "unique", "wait_stats"]
