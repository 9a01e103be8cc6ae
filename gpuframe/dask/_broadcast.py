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

import functools
import os
from typing import Any, Optional

from dask._task_spec import Task
from dask.dataframe.dask_expr._expr import Blockwise, Projection, determine_column_projection

from gpuframe.comm.wire import schema_from_bytes, schema_to_bytes

from . import _convert

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


def _plan(left_meta: Any, right_meta: Any, merge_kw: dict) -> tuple[dict, Any]:
    from gpuframe.distributed import check_merge

    kind = _convert.frame_kind(left_meta)
    lschema, rschema = _convert.schema_of(left_meta, kind), _convert.schema_of(right_meta, kind)
    out_schema = check_merge(lschema, rschema, **merge_kw)
    meta = _convert.merge_meta(out_schema, kind, left_meta, right_meta, merge_kw["how"], merge_kw["suffixes"])
    spec = {"kind": kind, "merge": merge_kw, "left_schema": schema_to_bytes(lschema),
            "right_schema": schema_to_bytes(rschema), "meta": meta}
    return spec, meta


def _threads_share(hosts: dict) -> Optional[int]:
    """This task's share of the host's cores: ``hosts`` counts the worker processes on each
    host (when the graph was built), and each of their threads runs a task of its own.
    ``None`` outside a Dask worker."""
    try:
        from distributed import get_worker
        from distributed.comm import get_address_host

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    local = max(1, hosts.get(get_address_host(worker.address), 1))
    return max(1, (os.cpu_count() or 1) // (local * max(1, worker.state.nthreads)))


def _chunk(left: Any, right: Any, spec: dict, hosts: dict) -> Any:
    """One output partition: a partition of one side joined with the whole other side."""
    import numba

    from gpuframe.ops.join import merge

    kind = spec["kind"]
    lt = _convert.to_table(left, kind, schema_from_bytes(spec["left_schema"]))
    rt = _convert.to_table(right, kind, schema_from_bytes(spec["right_schema"]))
    share = _threads_share(hosts)
    old = numba.get_num_threads()
    if share is not None:
        numba.set_num_threads(min(share, numba.config.NUMBA_NUM_THREADS))
    try:
        out = merge(lt, rt, **spec["merge"])
    finally:
        numba.set_num_threads(old)
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
        return _plan(self.left._meta, self.right._meta, self.operand("merge_kw"))

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
        from .core import _keys_of, project_join

        if not isinstance(parent, Projection):
            return None
        columns = determine_column_projection(self, parent, dependents)
        columns = [columns] if not isinstance(columns, list) else columns
        kw = self.operand("merge_kw")
        lkeys = _keys_of(kw["on"]) or _keys_of(kw["left_on"])
        rkeys = _keys_of(kw["on"]) or _keys_of(kw["right_on"])
        needs = project_join(self, columns, lkeys, rkeys, kw["suffixes"])
        frames = [self.left, self.right]
        if all(set(n) >= set(f.columns) for n, f in zip(needs, frames)):
            return None
        new = [f[[c for c in f.columns if c in n]] if set(n) < set(f.columns) else f for n, f in zip(needs, frames)]
        # only when the smaller join names the selected columns as the full one does
        if not set(columns) <= set(_plan(new[0]._meta, new[1]._meta, kw)[1].columns):
            return None
        result = type(self)(new[0], new[1], kw, self.operand("small"), self.operand("hosts"))
        return result[parent.operand("columns")]
