"""gpuframe's Dask operations as lazy expressions: one graph, computed when the user asks.

Every ``gpuframe.dask`` function returns ``new_collection(GpuframeOp(...))``: a Dask
expression (an :class:`~dask.dataframe.dask_expr._expr.Expr` subclass; nothing in Dask is
patched) that composes with other Dask operations and is optimised with them (a column
selection after it is pushed below it, so unneeded columns never reach the exchange). Its graph
has three layers:

1. **stage** (one task per input partition): keeps the partition in this worker's
   ``_STAGED`` store (no copy) and returns a small token naming the worker. Dask runs it where
   the partition is; the worker plugin drops the stored partition when Dask releases the token
   (after the barrier, or when the computation is cancelled).
2. **barrier** (one task, depends on every token): builds or reuses the communicators of the
   current workers (:mod:`gpuframe.dask._worker_comms`), then, through the worker's client,
   runs one task per worker pinned to it (the ``gpuframe.distributed`` function over that
   worker's staged partitions, as the eager operation did) and waits for them, failing within
   seconds with :class:`~gpuframe.dask.WorkerLostError` when a worker leaves. Each worker
   keeps the output pieces (one per output partition it owns) that Dask still wants
   (``get_task_status`` of the output keys: a partition culled from the graph is not kept;
   the restart plugin first releases those an earlier run left in memory, so that all come
   from this run) in ``_OUTPUTS``; the barrier pins each wanted output task to the worker
   holding its piece and returns where the pieces are. Timings go to the client as a
   ``gpuframe-stats`` event. A partition's rows depend on the inputs, not on where they sat
   (see docs/architecture.md), except for a merge that splits heavy keys.
3. **output** (one task per output partition): takes its piece out of the worker's store,
   lifts its own pin (should Dask ever recompute it after its worker died, it must not wait
   for that worker forever) and returns it, fetching it should it run on another worker.

A worker lost while the barrier runs restarts the operation (the scheduler plugin
:class:`~gpuframe.dask._worker_comms.GpuframeRestartPlugin` releases its tasks; Dask recomputes
what was lost and runs it again on the workers there are), up to ``GPUFRAME_DASK_RESTARTS``
times; then it fails with ``WorkerLostError`` and the client stays usable. An output lost after
the barrier ended is recomputed by Dask: the barrier and the stages run again when their
results are gone, and an output task whose piece went with its worker fails with
``WorkerLostError``.
"""
from __future__ import annotations

import functools
import logging
import time
import uuid
import weakref
from collections import OrderedDict
from typing import Any, Callable, Optional, Sequence

from dask._task_spec import Task, TaskRef
from dask.dataframe.dask_expr._expr import Expr, Projection, determine_column_projection

from gpuframe.comm import CommError

logger = logging.getLogger("gpuframe.dask")

STAGE = "gpuframe-stage-"
STATS_TOPIC = "gpuframe-stats"

# ----------------------------------------------------------------------------- worker side
_STAGED: dict[Any, Any] = {}      # stage task key -> the input partition (until Dask releases the key)
_OUTPUTS: dict[Any, Any] = {}     # (output name, bucket, rank, attempt) -> output piece (until its task reads it)


def is_stage_key(key: Any) -> bool:
    return isinstance(key, tuple) and bool(key) and isinstance(key[0], str) and key[0].startswith(STAGE)


async def release_staged(worker: Any, key: Any, delay: float = 5.0) -> None:
    """Drop a stored input partition that no operation will read (the worker plugin calls this
    when Dask releases its token on this worker).

    The operation's own task takes the partition out of the store; this only catches those
    left behind (a computation cancelled before its barrier ran). Not at once: a worker also
    releases its copy of a token when Dask's memory manager drops one of two replicas (the
    barrier's worker fetched one), while the operation still needs the partition. So the
    scheduler is asked, after ``delay`` and again while the token is still held somewhere or
    computed again.
    """
    import asyncio

    while key in _STAGED:
        await asyncio.sleep(delay)
        try:
            states = await worker.scheduler.get_task_status(keys=[key])
        except Exception:  # pragma: no cover - the worker is closing
            return
        if states.get(key) in (None, "released", "forgotten", "erred"):
            _STAGED.pop(key, None)
            return
        # held elsewhere, or being computed again (a restarted operation): ask again later


def _stage(key: Any, part: Any) -> tuple:
    from distributed import get_worker

    try:
        address = get_worker().address
    except ValueError:
        raise RuntimeError("gpuframe.dask operations run on a distributed cluster (its workers exchange the data "
                           "directly): compute this collection with a distributed.Client, not with Dask's "
                           "local schedulers") from None
    _STAGED[key] = part
    return (address, key, len(part))


def _take(key: Any) -> Any:
    """Take a staged input partition out of the store (the operation's task reads each once)."""
    try:
        return _STAGED.pop(key)
    except KeyError:
        from distributed import get_worker

        from .core import WorkerLostError

        raise WorkerLostError(f"gpuframe.dask: worker {get_worker().address} no longer holds the input partition "
                              f"{key!r} (it was released or the worker restarted); compute the collection again",
                              address=get_worker().address) from None


def _op_task(session_id: str, tag: int, plan: dict, worker: str, layout: dict) -> dict:
    """One worker's part of an operation (pinned to ``worker``): run it, keep the wanted pieces."""
    from .core import _HostShare, _task_comm

    comm = _task_comm(session_id, worker)
    sides = [[_take(k) for k in keys] for keys in layout["staged"]]
    with _HostShare(comm):
        result = _BODIES[plan["what"]](comm, tag, plan["spec"], sides, layout)
    if len(result["parts"]) != len(layout["pieces"]):   # pragma: no cover - a body's bug, never silent
        raise RuntimeError(f"gpuframe.dask.{plan['what']}: internal error: {len(result['parts'])} output pieces "
                           f"for partitions {layout['pieces']}")
    rows = []
    for bucket, piece in zip(layout["pieces"], result["parts"]):
        rows.append(len(piece))
        if bucket in layout["wanted"]:
            _OUTPUTS[(plan["name"], bucket, comm.rank, layout["attempt"])] = piece
    result["stats"]["worker"] = worker
    result["stats"]["ended_at"] = time.time()      # wall clock: a benchmark's memory timeline splits here
    return {"stats": result["stats"], "rows": rows}


class Deferred:
    """An output partition not yet converted: bucket ``bucket`` of a :class:`gpuframe._bounded.BucketStore`
    (in memory, or on disk where the bounded exchange spilled it), made a partition of ``kind``
    when its output task takes it."""

    __slots__ = ("store", "bucket", "kind", "meta")

    def __init__(self, store: Any, bucket: int, kind: str, meta: Any) -> None:
        self.store, self.bucket, self.kind, self.meta = store, bucket, kind, meta

    def __len__(self) -> int:
        return self.store.rows(self.bucket)

    def load(self) -> Any:
        """The partition (the bucket stays in the store until :meth:`release`)."""
        from . import _convert

        return _convert.from_table(self.store.read(self.bucket), self.kind, self.meta)

    def release(self) -> None:
        self.store.drop(self.bucket)


def _pop_output(key: tuple) -> Any:
    piece = _OUTPUTS.get(key)
    if isinstance(piece, Deferred):
        out = piece.load()        # a failure here (memory, disk) leaves the piece for a retry
        if _OUTPUTS.pop(key, None) is not None:
            piece.release()
        return out
    return _OUTPUTS.pop(key, None)


def _drop_outputs(name: str, attempt: str) -> int:
    stale = [k for k in _OUTPUTS if k[0] == name and k[3] == attempt]
    for k in stale:
        del _OUTPUTS[k]
    return len(stale)


def _piece_buckets(what: str, rank: int, size: int, buckets: int) -> list[int]:
    """The output partition of each piece rank ``rank`` produces, in order: one per bucket it
    owns (none when there are more workers than output partitions)."""
    from gpuframe.distributed import owned_buckets

    return list(range(*owned_buckets(rank, size, buckets)))


def _barrier(plan: dict, out_keys: list, *tokens: tuple) -> dict:
    from distributed import get_worker, worker_client

    from .core import WorkerLostError, _run
    from ._worker_comms import get_session

    t0 = time.perf_counter()
    with worker_client(separate_thread=True) as client:
        session = get_session(client, plan["backend"], timeout=plan["timeout"], shared=True)
        staged: dict[str, list[list[Any]]] = {w: [[] for _ in plan["sides"]] for w in session.workers}
        index: dict[str, list[int]] = {w: [] for w in session.workers}
        for side, (start, stop) in enumerate(plan["sides"]):
            for i, (worker, key, _rows) in enumerate(tokens[start:stop]):
                if worker not in staged:
                    raise WorkerLostError(f"gpuframe.dask.{plan['what']}: worker {worker}, which holds input partition "
                                          f"{i}, left the cluster before the operation ran", address=worker)
                staged[worker][side].append(key)
                if side == 0:
                    index[worker].append(i)
        me = get_worker().get_current_task()
        # the restart plugin first releases partitions kept from an earlier run (they need not
        # fit this run's: all of them come from this one), then no output is in memory
        restartable = _scheduler_call(client, "gpuframe_op_start", barrier=me, workers=session.workers,
                                      outputs=list(out_keys))
        states = client.sync(client.scheduler.get_task_status, keys=list(out_keys))
        kept = [b for b, k in enumerate(out_keys) if states.get(k) == "memory"]
        if kept and not restartable:
            _scheduler_call(client, "gpuframe_op_end", barrier=me)
            raise RuntimeError(f"gpuframe.dask.{plan['what']}: output partition(s) {kept} of an earlier run are still "
                               "in memory and cannot be recomputed with the others (the scheduler has no "
                               "gpuframe-restart plugin: install gpuframe where the scheduler runs); release them "
                               "(del the futures or collections that hold them) and compute again")
        wanted = {b for b, k in enumerate(out_keys) if states.get(k) not in (None, "memory", "erred")}
        # every input partition's rank and rows, per side (bodies that move whole partitions use it)
        rank_of = {w: r for r, w in enumerate(session.workers)}
        placement = [[(rank_of[w], rows) for w, _key, rows in tokens[start:stop]] for start, stop in plan["sides"]]
        attempt = uuid.uuid4().hex[:12]
        tag = (uuid.uuid4().int & (2**40 - 1)) * 8          # merge_pieces uses tag .. tag + 6
        budget = _budget(client, session.workers, plan["spec"]) if "memory_budget" in plan["spec"] else 0
        layouts = []
        for rank, w in enumerate(session.workers):
            layouts.append({"staged": staged[w], "index": index[w], "attempt": attempt, "wanted": wanted,
                            "buckets": plan["buckets"], "placement": placement, "budget": budget,
                            "pieces": _piece_buckets(plan["what"], rank, session.size, plan["buckets"])})
        try:
            futures = _run(client, session, _op_task, tag, plan, [[] for _ in session.workers], plan["what"],
                           lead=layouts)
            results = client.gather(futures)
            for f in futures:      # done with: Dask must not recompute one should its worker die later
                f.release()
        except BaseException as exc:
            try:
                client.run(_drop_outputs, plan["name"], attempt, on_error="ignore")
            except Exception:  # pragma: no cover - best effort; the workers may be going away
                logger.debug("gpuframe.dask: dropping the pieces of a failed operation failed", exc_info=True)
            if restartable and isinstance(exc, CommError) and _restarted(client, me, session):
                from distributed import Reschedule

                raise Reschedule() from exc
            _scheduler_call(client, "gpuframe_op_end", barrier=me)
            raise
        _scheduler_call(client, "gpuframe_op_end", barrier=me)
        # one worker owns each output partition: its output task runs there
        owners = {b: (rank, w) for rank, (w, layout) in enumerate(zip(session.workers, layouts))
                  for b in layout["pieces"]}
        pins = {out_keys[b]: [owners[b][1]] for b in wanted}
        if pins:
            client.sync(client.scheduler.set_restrictions, worker=pins)
        stats = _summary([r["stats"] for r in results])
        stats["operation_s"] = time.perf_counter() - t0
        try:
            get_worker().log_event(STATS_TOPIC, {"op_id": plan["op_id"], "stats": stats})
        except Exception:  # pragma: no cover - statistics are best effort
            logger.debug("gpuframe.dask: could not send the operation's statistics", exc_info=True)
    return {"attempt": attempt, "owners": owners}


def _budget(client: Any, workers: Sequence[str], spec: dict) -> int:
    """The exchange's memory budget in bytes (0: none), one for every worker: a fraction is of
    the smallest ``memory_limit`` among them (a worker without one: its host's memory shared
    among the workers on it)."""
    from distributed.comm import get_address_host

    from gpuframe._bounded import DEFAULT_FRACTION, budget_bytes
    from gpuframe.core.memlimits import system_memory

    from ._worker_comms import _current_workers

    setting = spec["memory_budget"]
    if setting == 0:
        return 0
    info = _current_workers(client)
    limits = [int(info.get(w, {}).get("memory_limit") or 0) for w in workers]
    if not all(limits):
        hosts = [get_address_host(w) for w in workers]
        total = system_memory()[0]
        limits = [lim or total // hosts.count(h) for lim, h in zip(limits, hosts)]
    return budget_bytes(setting, min(limits), DEFAULT_FRACTION)


def _scheduler_call(client: Any, handler: str, **kwargs: Any) -> Any:
    """A call to the restart plugin's handler (None when the scheduler has no such plugin)."""
    try:
        return client.sync(getattr(client.scheduler, handler), **kwargs)
    except Exception:
        logger.debug("gpuframe.dask: scheduler call %s failed", handler, exc_info=True)
        return None


def _restarted(client: Any, barrier: Any, session: Any, wait_s: float = 10.0) -> bool:
    """Whether the scheduler restarted this operation (a worker of it left).

    A broken connection can reach a peer before the scheduler removes the dead worker: wait up
    to ``wait_s`` for the scheduler to see a worker of the session gone, then ask the plugin.
    """
    from ._worker_comms import _current_workers

    deadline = time.monotonic() + wait_s
    while True:
        current = _current_workers(client)
        if any(w not in current for w in session.workers):
            return bool(_scheduler_call(client, "gpuframe_op_restarted", barrier=barrier))
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


_SUMMED = ("bytes_sent", "bytes_received", "spilled_bytes")
_MAXED = ("partition_s", "exchange_s", "sizes_s", "data_s", "merge_s", "skew_s", "local_s", "convert_s", "rounds",
          "budget")


def _summary(per_worker: list[dict]) -> dict:
    """The slowest worker's phase times and the totals of bytes, with the per-worker figures."""
    stats: dict = {"workers": per_worker}
    for k in _MAXED:
        stats[k] = max((s.get(k, 0.0) for s in per_worker), default=0.0)
    for k in _SUMMED:
        stats[k] = sum(s.get(k, 0) for s in per_worker)
    return stats


def _output(result: dict, name: str, bucket: int) -> Any:
    from distributed import get_client, get_worker

    from .core import WorkerLostError

    worker = get_worker()
    rank, w = result["owners"][bucket]
    key = (name, bucket, rank, result["attempt"])
    if w == worker.address:
        piece = _pop_output(key)
    else:     # not where the barrier pinned it (a recomputation): fetched from its owner
        try:
            piece = get_client().run(_pop_output, key, workers=[w], on_error="return").get(w)
        except Exception:
            piece = None
        if isinstance(piece, BaseException):
            piece = None
    if piece is None:
        raise WorkerLostError(f"gpuframe.dask: output partition {bucket} of {name} is gone (worker {w}, which "
                              "held it, left or restarted after the operation ran); compute the collection "
                              "again", address=w)
    try:
        client = get_client()
        client.sync(client.scheduler.set_restrictions, worker={worker.get_current_task(): None})
    except Exception:  # pragma: no cover - only a recomputation after a worker's death would wait
        logger.warning("gpuframe.dask: could not lift the placement of an output task", exc_info=True)
    return piece


# ----------------------------------------------------------------------------- client side
_BODIES: dict[str, Callable] = {}          # what -> body(comm, tag, spec, sides, layout) -> {"parts", "stats"}
_PLANS: dict[str, Callable] = {}           # what -> plan(metas, params) -> (spec, meta)
# what -> needs(expr, columns) -> None (nothing to push), the input column lists each input must
# keep, or (those lists, new parameters) when the operation itself can compute fewer outputs
_PROJECT: dict[str, Callable] = {}


def register(what: str, body: Callable, plan: Callable, project: Optional[Callable] = None) -> None:
    _BODIES[what] = body
    _PLANS[what] = plan
    if project is not None:
        _PROJECT[what] = project


class GpuframeOp(Expr):
    """A gpuframe.dask operation (see :mod:`gpuframe.dask._lazy`)."""

    _parameters = ["left", "right", "what", "params"]
    _defaults = {"right": None}

    @property
    def _funcname(self) -> str:
        return f"gpuframe-{self.operand('what')}"

    @functools.cached_property
    def _planned(self) -> tuple[dict, Any]:
        metas = [f._meta for f in self._frames]
        return _PLANS[self.operand("what")](metas, self.operand("params"))

    @property
    def _frames(self) -> list[Any]:
        return [f for f in (self.operand("left"), self.operand("right")) if f is not None]

    @functools.cached_property
    def _meta(self) -> Any:
        return self._planned[1]

    def _divisions(self) -> tuple:
        return (None,) * (self.operand("params")["buckets"] + 1)

    def _simplify_up(self, parent: Any, dependents: Any) -> Any:
        project = _PROJECT.get(self.operand("what"))
        if project is None or not isinstance(parent, Projection):
            return None
        columns = determine_column_projection(self, parent, dependents)
        columns = [columns] if not isinstance(columns, list) else columns
        needs = project(self, columns)
        if needs is None:
            return None
        params = self.operand("params")
        if isinstance(needs, tuple):       # (input columns, the operation's parameters for fewer outputs)
            needs, params = needs
        frames = self._frames
        if params is self.operand("params") and all(set(n) >= set(f.columns) for n, f in zip(needs, frames)):
            return None
        new = [f[[c for c in f.columns if c in n]] if set(n) < set(f.columns) else f for n, f in zip(needs, frames)]
        result = type(self)(new[0], new[1] if len(new) > 1 else None, self.operand("what"), params)
        return result[parent.operand("columns")]

    def _layer(self) -> dict:
        spec, _meta = self._planned
        params = self.operand("params")
        name = self._name
        stage = STAGE + name
        tokens, sides, dsk = [], [], {}
        for s, frame in enumerate(self._frames):
            start = len(tokens)
            for i in range(frame.npartitions):
                key = (stage, s, i)
                dsk[key] = Task(key, _stage, key, TaskRef((frame._name, i)))
                tokens.append(TaskRef(key))
            sides.append((start, len(tokens)))
        out_keys = [(name, b) for b in range(params["buckets"])]
        plan = {"what": self.operand("what"), "spec": spec, "name": name, "sides": sides,
                "buckets": params["buckets"], "backend": params["backend"], "timeout": params["timeout"],
                "op_id": params["op_id"]}
        barrier = ("gpuframe-barrier-" + name,)
        dsk[barrier] = Task(barrier, _barrier, plan, out_keys, *tokens)
        for b, key in enumerate(out_keys):
            dsk[key] = Task(key, _output, TaskRef(barrier), name, b)
        return dsk


def collection(what: str, frames: list[Any], params: dict, stats: Optional[dict] = None, client: Any = None) -> Any:
    """The lazy Dask DataFrame of operation ``what`` on ``frames`` (checked already); ``stats`` is
    filled through ``client``'s event subscription (default: the current client)."""
    from dask.dataframe.dask_expr import new_collection

    op = GpuframeOp(frames[0].expr, frames[1].expr if len(frames) > 1 else None, what, params)
    if stats is not None:
        watch_stats(stats, params["op_id"], client)
    return new_collection(op)


# ----------------------------------------------------------------------------- statistics
_WATCHERS: "OrderedDict[str, list[dict]]" = OrderedDict()     # op id -> the users' stats dicts
_MAX_WATCHED = 1024
_SUBSCRIBED: "weakref.WeakSet[Any]" = weakref.WeakSet()


def watch_stats(stats: dict, op_id: str, client: Any = None) -> None:
    """Fill ``stats`` with the figures of operation ``op_id`` when it runs (a ``gpuframe-stats``
    event, which ``client`` subscribes to)."""
    from .core import _client

    if not isinstance(stats, dict):
        raise TypeError(f"stats must be a dict or None, got {type(stats).__name__}")
    client = _client(client)
    if client not in _SUBSCRIBED:
        client.subscribe_topic(STATS_TOPIC, _on_stats)
        _SUBSCRIBED.add(client)
    _WATCHERS.setdefault(op_id, []).append(stats)
    while len(_WATCHERS) > _MAX_WATCHED:
        _WATCHERS.popitem(last=False)


def _on_stats(event: Any) -> None:
    _when, msg = event
    for stats in _WATCHERS.get(msg.get("op_id"), ()):
        stats.clear()
        stats.update(msg["stats"])


def wait_stats(stats: dict, timeout: float = 10.0) -> dict:
    """Wait until ``stats`` (given to a gpuframe.dask function) has been filled by its operation."""
    deadline = time.monotonic() + timeout
    while "workers" not in stats:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no gpuframe statistics arrived within {timeout:g} s (was the collection computed?)")
        time.sleep(0.005)
    return stats
