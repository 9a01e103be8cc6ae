"""The broadcast join of :func:`gpuframe.dask.merge`: one side in one partition, no exchange.

Where one side of a merge is a single partition (a dimension table: users, items, a
calendar) and the join keeps only the other side's unmatched rows (``inner``, ``semi`` and
``anti`` with the right side small, ``left`` with the right side small, ``right`` with the left
side small, ``inner`` either way), nothing has to be shuffled: each partition of the large side
is joined with the whole small side where it lies, and Dask moves the small partition to the
workers that need it, once each. The output has the large side's partitions (one output
partition per input partition, in order, each with a default ``RangeIndex``; divisions
unknown), the same columns and dtypes as the shuffled merge (:func:`gpuframe.dask.merge`'s
``_meta``), and rows equal to :func:`gpuframe.merge` of the concatenated inputs.

It is a ``Blockwise`` expression: Dask fuses it with the operations before and after it on the
same partitions (two broadcast joins in a row and a column selection run as one task per
partition), and a column selection after it is pushed into both inputs.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Optional

from dask._task_spec import Task
from dask.dataframe.dask_expr._expr import Blockwise, Projection, determine_column_projection

from gpuframe.comm.wire import schema_from_bytes

from . import _convert
from .core import host_share, merge_needs, plan_join

__all__ = ["BroadcastMerge", "broadcast_side"]

# how -> the sides that may be broadcast (0 left, 1 right): the other side's rows must be
# joined with all of it, and no row of the broadcast side may be kept for not matching
_BROADCASTABLE = {"inner": (1, 0), "semi": (1,), "anti": (1,), "left": (1,), "right": (0,), "outer": ()}


def broadcast_side(how: str, nparts: tuple[int, int], broadcast: Optional[bool]) -> Optional[int]:
    """The side (0 left, 1 right) a merge broadcasts, or ``None`` to shuffle both.

    ``broadcast=None`` broadcasts a side of one partition when ``how`` allows it (both sides in
    one partition: a single task, whatever ``how``); ``True`` broadcasts the side ``how`` allows
    (``inner``: the one with fewer partitions), gathered into one partition first if it has
    more; ``False`` never broadcasts.
    """
    if broadcast is False:
        return None
    if nparts == (1, 1):
        return 1
    sides = _BROADCASTABLE[how]
    if broadcast is None:
        return next((s for s in sides if nparts[s] == 1), None)
    if not sides:
        raise ValueError(f"broadcast=True needs how in {[h for h, s in _BROADCASTABLE.items() if s]} (the "
                         f"broadcast side's unmatched rows cannot be kept), got how={how!r}")
    return min(sides, key=lambda s: nparts[s])


def _chunk(left: Any, right: Any, spec: dict, hosts: dict) -> Any:
    """One output partition: a partition of one side joined with the whole other side, on the
    task's share of its host's cores (``hosts``: worker processes per host when the graph was
    built; each of a worker's threads runs a task of its own)."""
    from gpuframe.ops.join import merge

    kind = spec["kind"]
    lt = _convert.to_table(left, kind, schema_from_bytes(spec["left_schema"]))
    rt = _convert.to_table(right, kind, schema_from_bytes(spec["right_schema"]))
    try:
        from distributed import get_worker
        from distributed.comm import get_address_host

        worker = get_worker()
        share = host_share(hosts.get(get_address_host(worker.address), 1), worker.state.nthreads)
    except (ImportError, ValueError):      # not in a Dask worker (a local scheduler): all cores
        share = contextlib.nullcontext()
    with share:
        out = merge(lt, rt, **spec["merge"])
    return _convert.from_table(out, kind, spec["meta"])


class BroadcastMerge(Blockwise):
    """``merge`` of ``left`` and ``right`` with side ``small`` (0 or 1, one partition) broadcast;
    ``hosts``: worker processes per host, for each task's share of its host's cores."""

    _parameters = ["left", "right", "merge_kw", "small", "hosts"]
    _is_length_preserving = False

    @property
    def _funcname(self) -> str:
        return "gpuframe-broadcast-merge"

    @functools.cached_property
    def _planned(self) -> tuple[dict, Any]:
        return plan_join(self.left._meta, self.right._meta, self.operand("merge_kw"))

    @functools.cached_property
    def _meta(self) -> Any:
        return self._planned[1]

    @property
    def _frames(self) -> list[Any]:      # project_join's view of the inputs
        return [self.left, self.right]

    @property
    def _big(self) -> Any:
        return self.right if self.operand("small") == 0 else self.left

    def _broadcast_dep(self, dep: Any) -> bool:
        small = self.left if self.operand("small") == 0 else self.right
        return dep._name == small._name and dep.npartitions == 1

    def _divisions(self) -> tuple:
        return (None,) * (self._big.npartitions + 1)

    def _task(self, name: Any, index: int) -> Task:
        return Task(name, _chunk, self._blockwise_arg(self.left, index), self._blockwise_arg(self.right, index),
                    self._planned[0], self.operand("hosts"))

    def _simplify_up(self, parent: Any, dependents: Any) -> Any:
        if not isinstance(parent, Projection):
            return None
        columns = determine_column_projection(self, parent, dependents)
        columns = [columns] if not isinstance(columns, list) else columns
        needs = merge_needs(self, columns, self.operand("merge_kw"))
        frames = [self.left, self.right]
        if needs is None or all(set(n) >= set(f.columns) for n, f in zip(needs, frames)):
            return None
        new = [f[[c for c in f.columns if c in n]] if set(n) < set(f.columns) else f for n, f in zip(needs, frames)]
        result = type(self)(new[0], new[1], self.operand("merge_kw"), self.operand("small"), self.operand("hosts"))
        return result[parent.operand("columns")]
