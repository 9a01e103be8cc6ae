"""One communicator per Dask worker, built on demand and cached per client and worker set.

Client side, :func:`get_session` returns a :class:`Session` for the client's current workers:
it reuses the cached one while the set of workers (address and server id, so a restarted worker
counts as new) is unchanged and no operation broke it, and otherwise closes the old one and
builds a new one in two ``client.run`` rounds:

1. every worker creates a communicator on its own event loop and opens a listener (UCX:
   ``ucx://host:port``; TCP: ``tcp://host:port``, or ``tls://host:port`` with the worker's own
   TLS settings when the cluster uses ``tls://``) on the host of its Dask address;
2. every worker receives the full address list and a random session token (:mod:`secrets`,
   drawn per session by the client, sent through Dask's own, possibly TLS, connections) and
   connects (rank = position of its address in the sorted worker list); peers authenticate
   with the token before anything else they send is read.

Worker side, communicators live in ``_COMMS`` (module state in each worker process) under the
session id; the tasks of an operation look theirs up by that id.
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from distributed import SchedulerPlugin, WorkerPlugin

from gpuframe.comm import BootstrapError, CommError, create_communicator, resolve_backend

logger = logging.getLogger("gpuframe.dask")

# ----------------------------------------------------------------------------- worker side
_COMMS: dict[str, Any] = {}


def _worker_host(dask_worker: Any) -> str:
    from distributed.comm import get_address_host

    return get_address_host(dask_worker.address)


def _worker_security(backend: str, dask_worker: Any) -> Any:
    """The worker's Dask ``Security`` when the cluster talks TLS and the backend can use it."""
    if not str(getattr(dask_worker, "address", "")).startswith("tls://"):
        return None
    if backend != "tcp":
        logger.warning("gpuframe.dask: the cluster uses TLS but the %s communicator cannot; the data of "
                       "gpuframe operations travels unencrypted between workers (use backend='tcp')", backend)
        return None
    return dask_worker.security


async def _start_comm(session_id: str, backend: str, timeout: Optional[float], connect_timeout: float,
                      dask_worker: Any = None) -> str:
    kwargs: dict[str, Any] = {}
    security = _worker_security(backend, dask_worker)
    if security is not None:
        kwargs["security"] = security
    comm = create_communicator(backend, loop=asyncio.get_running_loop(), timeout=timeout,
                               connect_timeout=connect_timeout, **kwargs)
    address = await comm.astart(_worker_host(dask_worker))
    _COMMS[session_id] = comm
    return address


async def _connect_comm(session_id: str, workers: list[str], addresses: list[str], token: bytes,
                        dask_worker: Any = None) -> int:
    comm = _COMMS[session_id]
    rank = workers.index(dask_worker.address)
    comm.labels = list(workers)
    await comm.aconnect(rank, addresses, token=token)
    return rank


async def _close_comm(session_id: str, dask_worker: Any = None) -> bool:
    comm = _COMMS.pop(session_id, None)
    if comm is None:
        return False
    await comm.aclose()
    return True


class GpuframeCommsPlugin(WorkerPlugin):
    """Closes this worker's gpuframe communicators when the worker closes, and drops the input
    partitions a lazy operation keeps (:mod:`gpuframe.dask._lazy`) when Dask releases them.

    At module level, so that it is pickled by reference (a worker registering it must not try to
    pickle this module's state: its communicators)."""

    idempotent = True
    name = "gpuframe-comms"

    def setup(self, worker: Any) -> None:
        self.worker = worker

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        # called for every task transition on the worker: the cheap tests first
        if finish not in ("released", "forgotten") or not isinstance(key, tuple):
            return
        from ._lazy import _STAGED, is_stage_key, release_staged

        worker = getattr(self, "worker", None)
        if worker is not None and is_stage_key(key) and key in _STAGED:
            worker.loop.add_callback(release_staged, worker, key)

    async def teardown(self, worker: Any) -> None:
        for session_id in list(_COMMS):
            try:
                await _close_comm(session_id)
            except Exception:  # pragma: no cover - the worker is going away anyway
                logger.debug("closing gpuframe session %s failed", session_id, exc_info=True)
        from gpuframe.comm.ucx import shutdown

        shutdown()  # ucxx's notifier thread (if we started it) would keep the process alive


class GpuframeRestartPlugin(SchedulerPlugin):
    """On the scheduler: restarts a lazy gpuframe operation that loses a worker while it runs.

    A barrier registers its operation (``gpuframe_op_start``: its key and workers) and
    unregisters it when done. When one of those workers leaves, :meth:`remove_worker` releases
    the operation's output tasks, its barrier and every stage task (so that no copy of a lost
    input's token survives on another worker), as Dask's p2p shuffle restarts itself: Dask then
    recomputes the lost inputs where it can and runs the operation again on the workers there
    are. The barrier, told by its communicators or by the scheduler that a worker left, asks
    ``gpuframe_op_restarted`` and ends with ``Reschedule`` (its result, if any, is discarded) or,
    past ``GPUFRAME_DASK_RESTARTS`` restarts of one operation (default 3), with the clear
    ``WorkerLostError``.
    """

    idempotent = True
    name = "gpuframe-restart"

    def __init__(self) -> None:
        self.active: dict[Any, set[str]] = {}
        self.restarts: dict[Any, int] = {}
        self.restarted: set[Any] = set()
        self.limit = int(os.environ.get("GPUFRAME_DASK_RESTARTS", "3"))

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        scheduler.handlers["gpuframe_op_start"] = self.op_start
        scheduler.handlers["gpuframe_op_end"] = self.op_end
        scheduler.handlers["gpuframe_op_restarted"] = self.op_restarted

    @staticmethod
    def _key(key: Any) -> Any:
        return tuple(key) if isinstance(key, list) else key

    def op_start(self, barrier: Any = None, workers: Any = (), outputs: Any = ()) -> bool:
        self.active[self._key(barrier)] = set(workers)
        self._release_stale(outputs)
        return True

    def _release_stale(self, outputs: Any) -> None:
        """Release the output partitions of an earlier run of this operation that are still in
        memory, and everything in memory computed from them, so Dask recomputes them from the
        run now starting.

        An operation's partitions are cut by that run's placement of the inputs (a sort's
        splitters come from each worker's rows; the rows that stay put under skew stay where
        they were), so a partition kept from one run and one made by another need not fit
        together: rows would be lost or repeated. The barrier runs again while some of its
        outputs are still in memory when a computation wants a partition the previous one
        released (``dask.compute(*ddf.to_delayed())`` then ``ddf.compute()``: a fresh-clone CI
        run lost 13 of 300 rows so), when the user holds some partitions, or when a worker
        holding some was lost.
        """
        scheduler = self.scheduler
        stale: list[Any] = []
        todo = [scheduler.tasks.get(self._key(k)) for k in outputs]
        seen: set[Any] = set()
        while todo:
            ts = todo.pop()
            if ts is None or ts.key in seen or ts.state != "memory":
                continue
            seen.add(ts.key)
            stale.append(ts.key)
            todo.extend(ts.dependents)
        if stale:
            stimulus_id = f"gpuframe-stale-outputs-{time.time()}"
            logger.info("gpuframe.dask: recomputing %d partition(s) kept from an earlier run", len(stale))
            scheduler.transitions({k: "released" for k in stale}, stimulus_id=stimulus_id)
            scheduler.stimulus_queue_slots_maybe_opened(stimulus_id=stimulus_id)

    def op_end(self, barrier: Any = None) -> None:
        key = self._key(barrier)
        self.active.pop(key, None)
        self.restarts.pop(key, None)
        self.restarted.discard(key)

    def op_restarted(self, barrier: Any = None) -> bool:
        key = self._key(barrier)
        if key in self.restarted:
            self.restarted.discard(key)
            return True
        return False

    def remove_worker(self, scheduler: Any, worker: str, *, stimulus_id: str, **kwargs: Any) -> None:
        for key, workers in list(self.active.items()):
            if worker not in workers:
                continue
            del self.active[key]
            done = self.restarts.get(key, 0)
            ts = scheduler.tasks.get(key)
            if ts is None or done >= self.limit:
                continue
            recs: dict[Any, str] = {}
            for dt in ts.dependents:
                if dt.state == "erred":
                    recs = {}
                    break
                recs[dt.key] = "released"
            else:
                recs[key] = "released"
                for dt in ts.dependencies:
                    recs[dt.key] = "released"
            if not recs:
                continue
            self.restarts[key] = done + 1
            self.restarted.add(key)
            scheduler.log_event("gpuframe-restart", {"operation": str(key), "worker": worker, "restart": done + 1})
            logger.warning("gpuframe.dask: worker %s left during operation %s: restarting it (%d of at most %d)",
                           worker, key[0] if isinstance(key, tuple) else key, done + 1, self.limit)
            scheduler.transitions(recs, stimulus_id=stimulus_id)
            scheduler.stimulus_queue_slots_maybe_opened(stimulus_id=stimulus_id)


def worker_comm(session_id: str) -> Any:
    """The communicator of ``session_id`` in this worker process (called by operation tasks)."""
    comm = _COMMS.get(session_id)
    if comm is None:
        from distributed import get_worker

        raise CommError(f"worker {get_worker().address} has no gpuframe communicator for session {session_id} "
                        "(the worker restarted or the session was closed); run the operation again")
    return comm


# ----------------------------------------------------------------------------- client side
@dataclass
class Session:
    """The communicators of one client's workers (one rank per worker, sorted by address)."""

    client_id: str
    backend: str
    session_id: str
    workers: list[str]
    identity: tuple
    broken: bool = False
    ranks: dict[str, int] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.workers)

    def close(self, client: Any) -> None:
        """Close the communicators on the workers that are still there (best effort)."""
        alive = [w for w in self.workers if w in _current_workers(client)]
        if alive:
            try:
                client.run(_close_comm, self.session_id, workers=alive, on_error="ignore")
            except Exception:  # pragma: no cover - the workers may be going away
                logger.debug("closing gpuframe session %s failed", self.session_id, exc_info=True)


_SESSIONS: dict[tuple[str, str], Session] = {}
_PLUGGED: set[str] = set()  # clients whose workers have the teardown plugin
_LOCK = threading.RLock()


def _current_workers(client: Any) -> dict[str, Any]:
    """The scheduler's workers at this moment, by address, asked of the scheduler itself.

    Not ``client.scheduler_info()``: it returns an attribute that the client's own periodic
    refresh also writes, with a zero-worker answer (distributed 2026.7.1), so a call now and
    then sees no workers at all (1 in ~80,000 calls here, 3 workers): a running operation then
    reported its workers as lost (a CI run failed on it).
    """
    return dict(client.sync(client.scheduler.identity, n_workers=-1)["workers"])


def _identity(workers: dict[str, Any]) -> tuple:
    return tuple(sorted((addr, str(info.get("id", ""))) for addr, info in workers.items()))


def get_session(client: Any, backend: Optional[str] = None, *, timeout: Optional[float] = None,
                connect_timeout: float = 60.0, shared: bool = False) -> Session:
    """The session for ``client``'s current workers, built or rebuilt when needed.

    Parameters
    ----------
    client : distributed.Client
    backend : "ucx", "tcp" or None
        Communicator backend (default: ``GPUFRAME_COMM``, else ucx when ucxx imports, else tcp).
    timeout : float, optional
        Per-phase timeout of the communicators' operations.
    connect_timeout : float
        Seconds the workers may take to build the mesh.
    shared : bool
        Look for (and publish) the session in the scheduler's metadata, so that the barriers of
        lazy operations, which run on any worker, share one set of communicators.
    """
    backend = resolve_backend(backend)
    workers = _current_workers(client)
    if not workers:
        # a nanny restarting a lost worker leaves the cluster empty for a moment
        try:
            client.wait_for_workers(1, timeout=connect_timeout)
        except Exception:  # distributed raises TimeoutError (or its own subclass)
            raise CommError(f"the Dask cluster has no workers (waited {connect_timeout:g} s for one)") from None
        workers = _current_workers(client)
        if not workers:
            raise CommError("the Dask cluster has no workers")
    ident = _identity(workers)
    key = (client.id, backend)
    with _LOCK:
        old = _SESSIONS.get(key)
        if shared:
            # the published session is the one in use (another worker's barrier may have built
            # it, or given up on a broken one): ours is only reused while it is that one
            published = _published(client, backend)
            if published is not None and published.identity == ident:
                if old is None or old.session_id != published.session_id:
                    _SESSIONS[key] = old = published
                return old
            if published is not None and (old is None or published.session_id != old.session_id):
                published.close(client)         # built for workers that have changed since
        elif old is not None and not old.broken and old.identity == ident:
            return old
        if old is not None:
            _SESSIONS.pop(key, None)
            old.close(client)
        ensure_plugin(client)
        session = _build(client, backend, sorted(workers), ident, timeout, connect_timeout)
        _SESSIONS[key] = session
        if shared:
            _publish(client, session)
        return session


def _metadata_key(backend: str) -> list[str]:
    return ["gpuframe-session", backend]


def _published(client: Any, backend: str) -> Optional[Session]:
    """The session a lazy operation's barrier (on any worker) built and published on the scheduler."""
    try:
        desc = client.get_metadata(_metadata_key(backend), None)
    except Exception:  # pragma: no cover - best effort: a new session is built instead
        return None
    if not isinstance(desc, dict):
        return None
    return Session(client.id, backend, desc["session_id"], list(desc["workers"]), tuple(map(tuple, desc["identity"])),
                   ranks=dict(desc["ranks"]))


def _publish(client: Any, session: Session) -> None:
    desc = {"session_id": session.session_id, "workers": session.workers, "identity": [list(i) for i in session.identity],
            "ranks": session.ranks}
    try:
        client.set_metadata(_metadata_key(session.backend), desc)
    except Exception:  # pragma: no cover - best effort: the next barrier builds its own
        logger.debug("gpuframe.dask: could not publish session %s", session.session_id, exc_info=True)


def _unpublish(client: Any, session: Session) -> None:
    try:
        desc = client.get_metadata(_metadata_key(session.backend), None)
        if isinstance(desc, dict) and desc.get("session_id") == session.session_id:
            client.set_metadata(_metadata_key(session.backend), None)
    except Exception:  # pragma: no cover - best effort
        logger.debug("gpuframe.dask: could not withdraw session %s", session.session_id, exc_info=True)


def ensure_plugin(client: Any) -> None:
    """Register the worker plugin and the scheduler's restart plugin (once per client)."""
    with _LOCK:
        if client.id not in _PLUGGED:
            client.register_plugin(GpuframeCommsPlugin(), name="gpuframe-comms")
            try:
                client.register_plugin(GpuframeRestartPlugin(), name="gpuframe-restart")
            except Exception:  # e.g. a scheduler without gpuframe installed: no restarts then
                logger.warning("gpuframe.dask: could not register the restart plugin on the scheduler; an "
                               "operation that loses a worker fails instead of restarting", exc_info=True)
            _PLUGGED.add(client.id)


def _build(client: Any, backend: str, workers: list[str], ident: tuple, timeout: Optional[float],
           connect_timeout: float) -> Session:
    session_id = f"gpuframe-{uuid.uuid4().hex}"
    token = secrets.token_bytes(32)  # per session, never derived from anything a stranger can see
    try:
        addresses = client.run(_start_comm, session_id, backend, timeout, connect_timeout, workers=workers)
        addr_list = [addresses[w] for w in workers]
        ranks = client.run(_connect_comm, session_id, workers, addr_list, token, workers=workers)
    except Exception as exc:
        try:
            client.run(_close_comm, session_id, workers=workers, on_error="ignore")
        except Exception:  # pragma: no cover
            pass
        if isinstance(exc, CommError):
            raise
        raise BootstrapError(f"could not build the gpuframe {backend} communicators on workers {workers}: "
                             f"{type(exc).__name__}: {exc}") from exc
    logger.debug("gpuframe session %s: %d workers over %s", session_id, len(workers), backend)
    return Session(client.id, backend, session_id, workers, ident, ranks=dict(ranks))


def invalidate(session: Session, client: Any) -> None:
    """Forget ``session`` after a failed operation and close what is left of it."""
    session.broken = True
    with _LOCK:
        if _SESSIONS.get((session.client_id, session.backend)) is session:
            _SESSIONS.pop((session.client_id, session.backend), None)
    _unpublish(client, session)
    session.close(client)


def close_sessions(client: Any = None) -> None:
    """Close the cached communicators (of one client, or all)."""
    with _LOCK:
        keys = [k for k in _SESSIONS if client is None or k[0] == client.id]
        sessions = [_SESSIONS.pop(k) for k in keys]
    for s in sessions:
        if client is not None:
            s.close(client)
