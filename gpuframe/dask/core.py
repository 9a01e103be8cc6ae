"""``gpuframe.dask.shuffle`` and ``gpuframe.dask.merge``: Dask places, gpuframe moves.

(The table operations, ``unique``, ``union``, ``intersect``, ``difference``, ``groupby_agg``,
``sort`` and the cross product, run the same way: :mod:`gpuframe.dask.tableops`.)

Dask keeps doing what it is good at (placing partitions on workers, scheduling, recovering
lost data); the all-to-all goes directly between the workers over a gpuframe communicator (UCX
or TCP), not through the scheduler or Dask's shuffle extension. Only supported Dask APIs are
used (see :mod:`gpuframe.dask._lazy` for the graph).

One operation, step by step:

1. validate against the collections' ``_meta`` (key names, key types, ``how``...): nothing is
   built when this fails; the result is a lazy collection (:mod:`gpuframe.dask._lazy`);
2. on compute, a stage task per input partition keeps it in its worker's store;
3. the barrier task gets the communicator session of the current workers (built once, cached,
   rebuilt when the workers change: :mod:`gpuframe.dask._worker_comms`);
4. and submits one task per worker, pinned to it, naming its staged partitions. Each task
   converts them to Tables, hash-partitions them by key, exchanges them with every other worker
   in one all-to-all, and (merge) joins what it received with :func:`gpuframe.merge`;
5. the barrier waits for the tasks while watching the worker set: a worker that dies fails the
   operation within seconds (its peers see the connection drop; the barrier sees the worker
   leave), the communicators are closed and the next run builds new ones;
6. one output task per bucket returns the piece its worker kept, of the input's partition type.

Output partitions: ``npartitions`` hash buckets (default: one per worker). Bucket ``b`` holds
every row whose key hashes to ``b`` (``partition_of(hash_rows(key), npartitions) == b``), lives
on worker ``b * nworkers // npartitions`` (workers sorted by address), and has a default
``RangeIndex``; the input index is dropped, as in ``gpuframe.from_pandas``. Divisions are
unknown.
"""
from __future__ import annotations

import contextlib
import logging
import time
import uuid
from typing import Any, Iterator, Optional, Sequence

from gpuframe._skew import DEFAULT_HEAVY_SHARE, check_heavy_share
from gpuframe.comm import CommError, PeerClosedError, resolve_backend
from gpuframe.comm.wire import schema_from_bytes, schema_to_bytes

from . import _convert, _lazy
from ._worker_comms import Session, _current_workers, ensure_plugin, invalidate, worker_comm

logger = logging.getLogger("gpuframe.dask")

__all__ = ["shuffle", "merge", "to_table", "WorkerLostError"]

_POLL_S = 0.25


class WorkerLostError(PeerClosedError):
    """A worker taking part in an operation left the cluster (died, or was retired) before it ended."""


# ----------------------------------------------------------------------------- worker tasks
@contextlib.contextmanager
def host_share(local: int, nthreads: int = 1) -> Iterator[None]:
    """Run this thread's numba kernels on its share of the host's cores: ``local`` worker
    processes on the host, ``nthreads`` task threads in each.

    Every worker process would otherwise start a parallel region on all cores of the host, so
    ``k`` workers on one host oversubscribe it ``k`` times (and spinning OpenMP threads of one
    process steal the cores the other needs). ``numba.set_num_threads`` is per thread, so this
    only affects the task's own thread.
    """
    import os

    import numba

    share = max(1, (os.cpu_count() or 1) // (max(1, local) * max(1, nthreads)))
    old = numba.get_num_threads()
    numba.set_num_threads(min(share, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        numba.set_num_threads(old)


def _HostShare(comm: Any) -> Any:
    """:func:`host_share` for a task of an operation over ``comm`` (the workers on this host
    counted from its labels)."""
    from distributed.comm import get_address_host

    labels = comm.labels or []
    mine = get_address_host(labels[comm.rank]) if labels else None
    return host_share(sum(1 for w in labels if get_address_host(w) == mine) or 1)


def _task_comm(session_id: str, worker: str) -> Any:
    """This task's communicator, after checking that the task runs where it was placed.

    A result partition lost with its worker makes Dask rerun that one task elsewhere; it cannot
    redo an all-to-all alone, so it fails at once with a clear message instead of waiting for peers.
    """
    from distributed import get_worker

    here = get_worker().address
    if here != worker:
        raise WorkerLostError(f"a gpuframe.dask task placed on worker {worker} was rescheduled to {here} (the "
                              "worker left, and its part of a gpuframe shuffle or merge with it); a gpuframe "
                              "operation cannot be recomputed piece by piece: run the operation again",
                              address=worker)
    return worker_comm(session_id)


def _shuffle_body(comm: Any, tag: int, spec: dict, sides: Sequence[Sequence[Any]], layout: dict) -> dict:
    from gpuframe.distributed import shuffle_pieces

    parts = sides[0]
    stats: dict = {"rank": comm.rank, "rows_in": sum(len(p) for p in parts)}
    schema = schema_from_bytes(spec["schema"])
    if layout.get("budget"):
        return _bounded_shuffle_body(comm, tag, spec, parts, layout, schema, stats)
    t0 = time.perf_counter()
    tables = [_convert.to_table(p, spec["kind"], schema) for p in parts]
    stats["convert_s"] = time.perf_counter() - t0
    out = shuffle_pieces(tables, spec["on"], comm, schema=schema, buckets=spec["buckets"], seed=spec["seed"],
                         tag=tag, timeout=spec["timeout"], device=_device(tables, spec["kind"]), stats=stats,
                         memory_budget=0)
    t1 = time.perf_counter()
    out_parts = [_convert.from_table(t, spec["kind"], spec["meta"]) for t in out]
    stats["convert_s"] += time.perf_counter() - t1
    stats["rows_out"] = sum(t.num_rows for t in out)
    return {"parts": out_parts, "stats": stats}


def _bounded_shuffle_body(comm: Any, tag: int, spec: dict, parts: list, layout: dict, schema: Any,
                          stats: dict) -> dict:
    """The shuffle under ``layout["budget"]`` bytes (:mod:`gpuframe._bounded`): the input
    partitions converted a slice at a time (the task drops its reference to each once its rows
    are sent), the exchange in rounds, the received rows past what the rounds leave of the
    budget spilled to the worker's local directory; every output partition is converted (and
    read back from disk) only when its output task asks for it."""
    import itertools
    import os

    from distributed import get_worker

    from gpuframe._bounded import BucketStore, data_bytes, keep_bytes, round_bytes, shuffle_rounds
    from gpuframe.distributed import owned_buckets

    kind = spec["kind"]
    budget = int(layout["budget"])
    cap = round_bytes(budget)
    stats["convert_s"] = 0.0

    def convert(df: Any) -> Any:
        t0 = time.perf_counter()
        table = _convert.to_table(df, kind, schema)
        stats["convert_s"] += time.perf_counter() - t0
        return table

    def sources() -> Any:
        while parts:
            df = parts.pop(0)
            n = len(df)
            start, step = 0, min(n, 4096)
            while start < n:
                table = convert(df.iloc[start:start + step])
                start += step
                yield table
                # the next slice's rows from this one's size (strings vary along a partition),
                # growing at most fourfold a slice
                per_row = max(data_bytes(table) // max(table.num_rows, 1), 1)
                step = max(1, min(cap // per_row, 4 * step))
                del table
            del df

    gen = sources()
    first = next(gen, None)          # the device of the converted partitions
    device = first.device if first is not None else _device([], kind)
    lo, hi = owned_buckets(comm.rank, comm.size, spec["buckets"])
    store = BucketStore(range(lo, hi), schema, device, memory=keep_bytes(budget),
                        directory=os.path.join(get_worker().local_directory, "gpuframe-spill"))
    shuffle_rounds(itertools.chain([first] if first is not None else [], gen), spec["on"], comm, schema=schema,
                   buckets=spec["buckets"], seed=spec["seed"], budget=budget, store=store, tag=tag,
                   timeout=spec["timeout"], device=device, stats=stats)
    stats["budget"] = budget
    out_parts = [_lazy.Deferred(store, b, kind, spec["meta"]) for b in range(lo, hi)]
    stats["rows_out"] = sum(len(p) for p in out_parts)
    return {"parts": out_parts, "stats": stats}


def _merge_body(comm: Any, tag: int, spec: dict, sides: Sequence[Sequence[Any]], layout: dict) -> dict:
    from gpuframe.distributed import merge_pieces

    stats: dict = {"rank": comm.rank, "rows_in": sum(len(p) for side in sides for p in side)}
    lschema, rschema = schema_from_bytes(spec["left_schema"]), schema_from_bytes(spec["right_schema"])
    t0 = time.perf_counter()
    left = [_convert.to_table(p, spec["kind"], lschema) for p in sides[0]]
    right = [_convert.to_table(p, spec["kind"], rschema) for p in sides[1]]
    stats["convert_s"] = time.perf_counter() - t0
    out = merge_pieces(left, right, comm, left_schema=lschema, right_schema=rschema, buckets=spec["buckets"],
                       seed=spec["seed"], tag=tag, timeout=spec["timeout"], device=_device(left + right, spec["kind"]),
                       stats=stats, **spec["merge"])
    t1 = time.perf_counter()
    out_parts = [_convert.from_table(t, spec["kind"], spec["meta"]) for t in out]
    stats["convert_s"] += time.perf_counter() - t1
    stats["rows_out"] = sum(t.num_rows for t in out)
    return {"parts": out_parts, "stats": stats}


def _device(tables: Sequence[Any], kind: str) -> Any:
    from gpuframe.core.device import CPU, Device

    for t in tables:
        return t.device
    return CPU if kind == _convert.PANDAS else Device("cuda", 0)


# ----------------------------------------------------------------------------- client side
def _client(client: Any) -> Any:
    if client is not None:
        return client
    try:
        from distributed import default_client
    except ImportError as exc:
        raise ImportError("gpuframe.dask needs dask distributed: pip install 'gpuframe[dask]'") from exc
    try:
        return default_client()
    except ValueError:
        raise ValueError("gpuframe.dask needs a distributed.Client (create one, or pass client=)") from None


def _check_ddf(ddf: Any, name: str) -> str:
    import dask.dataframe as dd

    if not isinstance(ddf, dd.DataFrame):
        raise TypeError(f"{name} must be a dask.dataframe.DataFrame, got {type(ddf).__name__}")
    return _convert.frame_kind(ddf._meta, name)


def _check_npartitions(npartitions: Any) -> Optional[int]:
    if npartitions is None:
        return None
    if isinstance(npartitions, bool) or not isinstance(npartitions, int) or npartitions < 1:
        raise ValueError(f"npartitions must be a positive int or None, got {npartitions!r}")
    return npartitions


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
    return seed


def _run(client: Any, session: Session, task: Any, tag: int, spec: dict, args_by_worker: list[list[Any]],
         what: str, lead: Sequence[Any] = ()) -> list[Any]:
    """Submit one pinned task per worker, wait, and fail fast on errors or lost workers."""
    op = uuid.uuid4().hex[:12]
    futures = []
    for rank, worker in enumerate(session.workers):
        # Strict placement: the scheduler never runs the task elsewhere, and work stealing never
        # moves it (the stealing extension only hands a task with worker restrictions to a thief
        # among those workers, unless the restrictions are loose). Should the worker die before
        # the task runs, _wait sees it leave and fails the operation with WorkerLostError.
        futures.append(client.submit(task, session.session_id, tag, spec, worker, *lead[rank:rank + 1],
                                     *args_by_worker[rank], key=f"gpuframe-{what}-{op}-{rank}",
                                     workers=[worker], allow_other_workers=False, pure=False))
    try:
        _wait(client, session, futures, what)
    except BaseException:
        client.cancel(futures, force=True)
        invalidate(session, client)
        raise
    _release_placement(client, futures)
    return futures


def _release_placement(client: Any, futures: list[Any]) -> None:
    """Lift the placement of finished tasks.

    Their results stay where they are; the restriction only matters should Dask recompute one
    (its worker died after the operation): a task pinned to a dead worker would wait forever,
    a free one runs elsewhere and fails at once with a clear WorkerLostError (see _task_comm).
    """
    try:
        client.sync(client.scheduler.set_restrictions, worker={f.key: None for f in futures})
    except Exception:  # pragma: no cover - best effort: only a later recomputation would hang
        logger.warning("gpuframe.dask: could not lift the placement of finished tasks", exc_info=True)


def _wait(client: Any, session: Session, futures: list[Any], what: str) -> None:
    from distributed import wait

    pending = list(futures)
    while True:
        try:
            wait(pending, timeout=_POLL_S, return_when="FIRST_COMPLETED")
        except TimeoutError:
            pass
        failed = [f for f in futures if f.status == "error"]
        if failed:
            exc = failed[0].exception()
            rank = futures.index(failed[0])
            if isinstance(exc, CommError):
                raise type(exc)(f"gpuframe.dask.{what} failed on worker {session.workers[rank]} (rank {rank}): "
                                f"{exc._message()}", peer=exc.peer, address=exc.address) from exc
            raise exc.with_traceback(failed[0].traceback())
        pending = [f for f in futures if f.status != "finished"]
        if not pending:
            return
        current = _current_workers(client)
        lost = [w for w in session.workers if w not in current]
        if lost:
            rank = session.workers.index(lost[0])
            raise WorkerLostError(f"gpuframe.dask.{what}: worker {lost[0]} left the cluster during the operation",
                                  peer=rank, address=lost[0])


# ----------------------------------------------------------------------------- to_table
def to_table(ddf: Any, *, client: Any = None, direct: Optional[bool] = None) -> Any:
    """Compute ``ddf`` and bring it to this process as one :class:`gpuframe.Table`.

    The graph is optimised and computed once, as ``ddf.compute()`` does, but each partition
    comes straight from the worker that made it, and the partitions are concatenated once, here
    (``ddf.compute()`` first gathers every partition on one worker to concatenate them there,
    and its DataFrame then still has to become a Table). The Table's rows are the partitions'
    in partition order, its columns those of :func:`gpuframe.from_pandas` (or
    :func:`gpuframe.from_cudf`) of ``ddf._meta``, on the device the partitions convert to
    (CPU for pandas partitions, the GPU for cuDF ones; ``Table.to`` moves it).

    ``direct``: whether the partitions come from the workers straight to this process (``True``)
    or through the scheduler (``False``, Dask's default for a client outside the cluster, which
    moves every byte twice). Default: the client's ``direct_to_workers`` where it was set, else
    ``True`` when every worker is on this host (a ``LocalCluster``: the workers' addresses are
    this machine's), else ``False`` (the workers may not accept connections from here).

    Raises ``TypeError`` for anything but a Dask DataFrame of pandas or cuDF partitions or a
    ``direct`` that is not a bool or None, and ``ValueError`` without a distributed client.
    """
    from gpuframe.ops.select import concat

    kind = _check_ddf(ddf, "ddf")
    if direct is not None and not isinstance(direct, bool):
        raise TypeError(f"direct must be True, False or None, got {direct!r}")
    client = _client(client)
    if direct is None:
        direct = client.direct_to_workers
    if direct is None:
        direct = _workers_are_local(client)
    schema = _convert.schema_of(ddf._meta, kind)
    futures = client.compute(ddf.to_delayed(optimize_graph=True))
    parts = client.gather(futures, direct=direct)
    del futures             # the workers may drop the partitions while they are converted here
    tables = [_convert.to_table(df, kind, schema) for df in parts]
    del parts
    return concat(tables)


def _local_hosts() -> set[str]:
    import socket

    import psutil

    hosts = {"localhost", socket.gethostname()}
    for addrs in psutil.net_if_addrs().values():
        hosts.update(a.address.split("%")[0] for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6))
    return hosts


def _workers_are_local(client: Any) -> bool:
    """Whether every worker listens on an address of this machine."""
    from distributed.comm import get_address_host

    workers = _current_workers(client)
    try:
        return bool(workers) and {get_address_host(w) for w in workers} <= _local_hosts()
    except (ValueError, OSError):         # an address scheme without a host (inproc): ask the scheduler
        return False


# ----------------------------------------------------------------------------- shuffle
def shuffle(ddf: Any, on: Any, npartitions: Optional[int] = None, *, client: Any = None,
            backend: Optional[str] = None, seed: int = 0, timeout: Optional[float] = None,
            memory_budget: Any = None, stats: Optional[dict] = None) -> Any:
    """Hash-shuffle a Dask DataFrame by ``on`` with gpuframe's all-to-all between the workers.

    Parameters
    ----------
    ddf : dask.dataframe.DataFrame
        Partitions are pandas (CPU) or cuDF (GPU) DataFrames.
    on : str or list of str
        Key columns. Every row with the same key ends in the same output partition.
    npartitions : int, optional
        Output partitions (hash buckets); default one per worker (the workers there are when
        the collection is built).
    client : distributed.Client, optional
        Default: the current client.
    backend : "ucx" or "tcp", optional
        Communicator (default ``GPUFRAME_COMM``, else ucx when ucxx imports, else tcp).
    seed : int, default 0
        Hash seed.
    timeout : float, optional
        Seconds each phase of the exchange may wait for a peer (default ``GPUFRAME_COMM_TIMEOUT``).
    memory_budget : int, float or str, optional
        The memory the exchange may hold on each worker: bytes (``"2GiB"``), a fraction of the
        smallest ``memory_limit`` among the workers (``0.25``), or ``0`` for none (one exchange,
        everything in memory). Default: the ``exchange_memory_budget`` setting
        (:mod:`gpuframe.config`), else a quarter of the memory limit. Under a budget the exchange
        runs in rounds, and the received rows past 3/8 of the budget wait on disk (the worker's
        local directory) until their output partition is computed: a shuffle of more data than
        the workers' memory completes. See :mod:`gpuframe._bounded`.
    stats : dict, optional
        Filled when the operation runs (:func:`gpuframe.dask.wait_stats` waits for it) with the
        per-worker timings (``workers``), the slowest worker's ``partition_s``, ``exchange_s``,
        ``convert_s``, ``bytes_sent``, the whole operation's ``operation_s``, and under a budget
        ``rounds``, ``spilled_bytes`` (summed over the workers) and ``budget`` (bytes).

    Returns
    -------
    dask.dataframe.DataFrame
        Lazy (nothing runs until it is computed), same partition type and dtypes as ``ddf``,
        ``npartitions`` partitions with a default index; see the module docstring.

    Raises
    ------
    KeyError, TypeError, ValueError
        Bad arguments (checked on ``ddf._meta`` before anything runs on the cluster).
    gpuframe.comm.CommError
        A worker failed, left or timed out (:class:`WorkerLostError`,
        :class:`~gpuframe.comm.PeerClosedError`, :class:`~gpuframe.comm.CommTimeoutError`).
    """
    from gpuframe.distributed import _key_list

    kind = _check_ddf(ddf, "ddf")
    schema = _convert.schema_of(ddf._meta, kind)
    keys = _key_list(schema, on, "on")
    npartitions = _check_npartitions(npartitions)
    seed = _check_seed(seed)
    from gpuframe._bounded import budget_setting

    params = _params(client, npartitions, backend, timeout, on=keys, seed=seed,
                     memory_budget=budget_setting(memory_budget))
    return _lazy.collection("shuffle", [ddf], params, stats, client)


def _params(client: Any, npartitions: Optional[int], backend: Optional[str], timeout: Optional[float],
            **op: Any) -> dict:
    """An operation's parameters, with its output partitions fixed now (default: one per worker)."""
    backend = resolve_backend(backend)
    client = _client(client)
    ensure_plugin(client)      # before any input is staged: it drops them when Dask releases them
    if npartitions is None:
        npartitions = len(_current_workers(client)) or 1
    return dict(op, buckets=npartitions, backend=backend, timeout=timeout, op_id=uuid.uuid4().hex)


def _plan_shuffle(metas: list[Any], params: dict) -> tuple[dict, Any]:
    kind = _convert.frame_kind(metas[0])
    meta = _convert.shuffle_meta(metas[0])
    spec = {"kind": kind, "on": params["on"], "buckets": params["buckets"], "seed": params["seed"],
            "timeout": params["timeout"], "schema": schema_to_bytes(_convert.schema_of(metas[0], kind)),
            "meta": meta, "memory_budget": params.get("memory_budget")}
    return spec, meta


def _project_shuffle(expr: Any, columns: list[Any]) -> list[list[Any]]:
    return [list(expr.operand("params")["on"]) + list(columns)]


# ----------------------------------------------------------------------------- merge
def merge(left: Any, right: Any, on: Any = None, *, how: str = "inner", left_on: Any = None,
          right_on: Any = None, suffixes: tuple[str, str] = ("_x", "_y"), nulls_equal: bool = False,
          npartitions: Optional[int] = None, client: Any = None, backend: Optional[str] = None,
          seed: int = 0, timeout: Optional[float] = None, stats: Optional[dict] = None,
          heavy_share: Optional[float] = DEFAULT_HEAVY_SHARE, broadcast: Optional[bool] = None) -> Any:
    """Join two Dask DataFrames with :func:`gpuframe.merge` semantics, shuffled by gpuframe.

    Both sides are hash-partitioned by their keys on the workers that hold them and exchanged
    directly between workers; each worker then joins the rows of its buckets locally. Heavy
    keys (a key with ``heavy_share`` of a side's rows per worker or more, found from a sample)
    are not shuffled: the side with more of their rows keeps them on the workers that hold them
    and the other side's rows of those keys go to every worker (with ``npartitions`` at least
    the number of workers; see :func:`gpuframe.distributed.merge`).

    Parameters
    ----------
    left, right : dask.dataframe.DataFrame
        Of the same partition type (pandas or cuDF).
    on, how, left_on, right_on, suffixes, nulls_equal
        As in :func:`gpuframe.merge`. ``how="cross"`` takes no keys: the side with fewer rows
        in all is gathered on every worker that owns an output partition; output partition
        ``b`` of ``p`` is the larger side's input partitions ``i`` with ``i * p // count == b``
        (moved there whole), in order, crossed with it (nothing is hash-partitioned; ``seed``
        is unused).
    npartitions, client, backend, seed, timeout, stats
        As in :func:`shuffle` (``stats`` also gets ``merge_s`` and ``skew_s``, and per worker the
        heavy-key figures of :func:`gpuframe.distributed.merge`; a broadcast merge fills it at once
        with ``{"broadcast": "left" or "right", "workers": []}`` and no timings).
    heavy_share : float or None, default 0.125
        As in :func:`gpuframe.distributed.merge`; ``None`` shuffles every key. Which keys are
        heavy comes from a sample and where their rows stay from where the inputs sit, so with
        heavy keys the rows an output partition holds may differ from one run to the next:
        compute (or persist) all partitions together rather than one by one in separate
        computations, or pass ``None``.
    broadcast : bool or None, default None
        ``None``: a side in a single partition that ``how`` lets be broadcast (``inner`` either
        side, ``left``, ``semi`` and ``anti`` the right side, ``right`` the left side; any
        ``how`` when both sides are single partitions) is sent whole to the other side's
        partitions, each joined with it where it lies, and nothing is shuffled (the output has
        the other side's partitions, in order; ``npartitions``, ``backend``, ``seed`` and
        ``heavy_share`` do not apply; see :mod:`gpuframe.dask._broadcast`), unless
        ``npartitions`` is given. ``True``: the side ``how`` lets be broadcast (``inner``: the
        one with fewer partitions) is, gathered into one partition first if it has more
        (``ValueError`` for ``how="outer"`` or with ``npartitions``). ``False``: always shuffle.

    Returns
    -------
    dask.dataframe.DataFrame
        Lazy; its rows equal ``gpuframe.merge`` of the concatenated inputs (in another order). Integer and bool columns that can hold nulls (nullable inputs, or any
        column of a non-inner join) are pandas nullable dtypes (``Int64``, ``boolean``).

    Raises
    ------
    KeyError, TypeError, ValueError
        A missing key column, mismatched key types, a bad ``how``... (checked on the ``_meta``
        of both sides before anything runs on the cluster).
    gpuframe.comm.CommError
        A worker failed, left or timed out.
    """
    from gpuframe.distributed import check_merge

    lkind = _check_ddf(left, "left")
    rkind = _check_ddf(right, "right")
    if lkind != rkind:
        raise TypeError(f"left and right must have the same partition type, got {lkind} and {rkind}")
    lschema = _convert.schema_of(left._meta, lkind)
    rschema = _convert.schema_of(right._meta, rkind)
    kw: dict[str, Any] = {"on": on, "left_on": left_on, "right_on": right_on, "how": how, "suffixes": suffixes,
                          "nulls_equal": nulls_equal}
    # gpuframe.merge on empty tables of both metas checks everything (key names and types, how,
    # suffixes) with gpuframe's own rules, and gives the output schema.
    out_schema = check_merge(lschema, rschema, **kw)
    npartitions = _check_npartitions(npartitions)
    seed = _check_seed(seed)
    heavy_share = check_heavy_share(heavy_share)
    if how == "cross":
        from .tableops import cross

        return cross(left, right, kind=lkind, lschema=lschema, rschema=rschema, out_schema=out_schema,
                     suffixes=suffixes, npartitions=npartitions, client=client, backend=backend, timeout=timeout,
                     stats=stats)
    if on is None and left_on is None and right_on is None:   # fixed now: a projection must not change them
        kw["on"] = [n for n in lschema.names if n in rschema.names]
    if broadcast is not None and not isinstance(broadcast, bool):
        raise TypeError(f"broadcast must be True, False or None, got {broadcast!r}")
    from ._broadcast import broadcast_side

    if broadcast and npartitions is not None:
        raise ValueError(f"npartitions={npartitions} names the buckets of a shuffle; broadcast=True keeps the "
                         "other side's partitions: pass one of them")
    small = broadcast_side(how, (left.npartitions, right.npartitions), broadcast) if npartitions is None else None
    if small is not None:
        return _broadcast_merge(left, right, kw, small, client, stats)
    params = _params(client, npartitions, backend, timeout, merge=dict(kw, heavy_share=heavy_share), seed=seed)
    return _lazy.collection("merge", [left, right], params, stats, client)


def _broadcast_merge(left: Any, right: Any, kw: dict, small: int, client: Any, stats: Optional[dict]) -> Any:
    from dask.dataframe.dask_expr import new_collection
    from distributed.comm import get_address_host

    from ._broadcast import BroadcastMerge

    frames = [left, right]
    if frames[small].npartitions > 1:
        frames[small] = frames[small].repartition(npartitions=1)
    hosts: dict[str, int] = {}
    try:
        for w in _current_workers(_client(client)):
            hosts[get_address_host(w)] = hosts.get(get_address_host(w), 0) + 1
    except ValueError:       # no distributed client: Dask's local schedulers run it too
        pass
    if stats is not None:
        if not isinstance(stats, dict):
            raise TypeError(f"stats must be a dict or None, got {type(stats).__name__}")
        stats.clear()
        stats.update({"broadcast": ("left", "right")[small], "workers": []})
    return new_collection(BroadcastMerge(frames[0].expr, frames[1].expr, kw, small, hosts))


def plan_join(left_meta: Any, right_meta: Any, kw: dict) -> tuple[dict, Any]:
    """The spec of a join's task (partition kind, both sides' schemas, the output meta) and its
    output meta, for :func:`gpuframe.merge` arguments ``kw`` (checked by its own rules)."""
    from gpuframe.distributed import check_merge

    kind = _convert.frame_kind(left_meta)
    lschema, rschema = _convert.schema_of(left_meta, kind), _convert.schema_of(right_meta, kind)
    out_schema = check_merge(lschema, rschema, **kw)
    meta = _convert.merge_meta(out_schema, kind, left_meta, right_meta, kw["how"], kw["suffixes"])
    spec = {"kind": kind, "merge": kw, "left_schema": schema_to_bytes(lschema),
            "right_schema": schema_to_bytes(rschema), "meta": meta}
    return spec, meta


def _join_kw(merge_params: dict) -> dict:
    return {k: v for k, v in merge_params.items() if k != "heavy_share"}


def _plan_merge(metas: list[Any], params: dict) -> tuple[dict, Any]:
    spec, meta = plan_join(metas[0], metas[1], _join_kw(params["merge"]))
    spec.update(buckets=params["buckets"], seed=params["seed"], timeout=params["timeout"], merge=params["merge"])
    return spec, meta


def _keys_of(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def project_join(expr: Any, columns: list[Any], lkeys: list[Any], rkeys: list[Any],
                 suffixes: Sequence[str]) -> Optional[list[list[Any]]]:
    """The columns each side of a join must keep for the output ``columns`` (Dask's rule: a
    column is kept when it is a key, selected, or selected under its suffix, and then the
    other side's column of that name too, so that the suffix still applies)."""
    left, right = (f._meta for f in expr._frames)
    wanted = set(columns)
    keep_l = [c for c in left.columns if c in lkeys or c in wanted or f"{c}{suffixes[0]}" in wanted]
    keep_r = [c for c in right.columns if c in rkeys or c in wanted or f"{c}{suffixes[1]}" in wanted]
    keep_l += [c for c in left.columns if f"{c}{suffixes[1]}" in wanted and c not in keep_l]
    keep_r += [c for c in right.columns if f"{c}{suffixes[0]}" in wanted and c not in keep_r]
    return [keep_l, keep_r]


def merge_needs(expr: Any, columns: list[Any], kw: dict) -> Optional[list[list[Any]]]:
    """The columns each input of the join ``expr`` (its ``_frames``; :func:`gpuframe.merge`
    arguments ``kw``) must keep for the output ``columns``, or ``None`` where the join of fewer
    columns would not name the selected ones as the full one does."""
    lkeys = _keys_of(kw["on"]) or _keys_of(kw["left_on"])
    rkeys = _keys_of(kw["on"]) or _keys_of(kw["right_on"])
    needs = project_join(expr, columns, lkeys, rkeys, kw["suffixes"])
    left, right = (f._meta for f in expr._frames)
    small = plan_join(left[needs[0]], right[needs[1]], kw)[1]
    return needs if set(columns) <= set(small.columns) else None


def _project_merge(expr: Any, columns: list[Any]) -> Optional[list[list[Any]]]:
    return merge_needs(expr, columns, _join_kw(expr.operand("params")["merge"]))


_lazy.register("shuffle", _shuffle_body, _plan_shuffle, _project_shuffle)
_lazy.register("merge", _merge_body, _plan_merge, _project_merge)
