"""UCX transport on ucxx's asyncio API: one listener per rank, a full mesh of endpoints.

Frames are handed to ucxx as they are: numpy arrays through the buffer protocol, CuPy arrays
through ``__cuda_array_interface__`` (UCX moves them over NVLink/InfiniBand with GPUDirect when
the transports allow). Receives go straight into the destination arrays.

UCX context: a process has one. Inside a Dask worker started with ``protocol="ucx"`` it exists
already, progressed by the worker's event loop, and this transport shares it (run the
communicator on the worker loop). Elsewhere the first communicator creates it (see
:func:`_ensure_initialised`).
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
import weakref
from typing import Any, Callable, Optional

import numpy as np

from .communicator import Communicator
from .envelope import tag_to_int
from .errors import CommError, ProtocolError
from .frames import Frame, host_view
from .loop import at_exit, consume_exception

logger = logging.getLogger("gpuframe.comm")

UCX_INSTALL_HINT = "pip install 'gpuframe[ucx]' (distributed-ucxx-cu12 / ucxx-cu12)"


def import_ucxx() -> Any:
    """Import ucxx, raising ImportError with the install command when it is missing."""
    os.environ.setdefault("UCX_WARN_UNUSED_ENV_VARS", "n")
    try:
        import ucxx
    except ImportError as exc:
        raise ImportError(f"the UCX communicator needs ucxx: {UCX_INSTALL_HINT}") from exc
    return ucxx


def ucx_available() -> bool:
    try:
        import_ucxx()
        return True
    except Exception:
        return False


_OWNED_CONTEXT = False  # True when this module initialised the process's ucxx context


def _ensure_initialised(ucxx: Any) -> None:
    """Initialise ucxx on the running loop unless the process already has a context.

    With distributed-ucxx installed, the context is created the way Dask's UCX comm creates it
    (``distributed_ucxx.ucxx.init_once``, with Dask's UCX configuration), so that a Dask client or
    scheduler started later in this process can share it (ucxx refuses a second context), in
    ``thread`` progress mode unless ``UCXPY_PROGRESS_MODE`` says otherwise: a progress thread
    drives it, so several event loops may use it. Without distributed-ucxx, ``thread`` progress
    with Python futures, which waits without spinning a core.

    A context that Dask created first (``blocking`` progress) is progressed by Dask's event loop;
    communicators sharing it should run on that loop, as ``gpuframe.dask`` does on its workers.
    """
    global _OWNED_CONTEXT
    from ucxx import core

    if getattr(core, "_ctx", None) is not None:
        return
    try:
        from distributed_ucxx.ucxx import init_once
    except ImportError:
        init_once = None
    if init_once is not None:
        # Thread progress: a progress thread drives the context, so that event loops other than
        # Dask's (ours, or the reverse) can use it safely; blocking progress is bound to a loop.
        saved = os.environ.get("UCXPY_PROGRESS_MODE")
        if saved is None:
            os.environ["UCXPY_PROGRESS_MODE"] = "thread"
        try:
            init_once()
        finally:
            if saved is None:
                os.environ.pop("UCXPY_PROGRESS_MODE", None)
        return
    kwargs: dict[str, Any] = {}
    if "UCXPY_PROGRESS_MODE" not in os.environ:
        kwargs["progress_mode"] = "thread"
        if "UCXPY_ENABLE_PYTHON_FUTURE" not in os.environ:
            kwargs["enable_python_future"] = True
    ucxx.init(**kwargs)
    _OWNED_CONTEXT = True


def shutdown() -> None:
    """Stop the notifier thread of a ucxx context this module started.

    ucxx's Python-future notifier thread keeps a process from exiting; call this once no UCX
    communicator is left (``gpuframe.dask`` does it when a worker closes, and the process's
    exit hook does it for communicators on the background loop).
    """
    global _OWNED_CONTEXT
    if not _OWNED_CONTEXT:
        return
    _OWNED_CONTEXT = False
    import ucxx

    ucxx.stop_notifier_thread()


at_exit(shutdown)  # after the communicators left open on the background loop are closed

def _parse(address: str) -> tuple[str, int]:
    text = address.partition("#")[0]
    text = text[len("ucx://"):] if text.startswith("ucx://") else text
    host, _, port = text.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ValueError(f"a UCX communicator address must look like 'ucx://host:port', got {address!r}") from None


def _wire(frame: Frame) -> Any:
    # Simulator device arrays wrap host memory: send that memory, never its fake device pointer.
    host = host_view(frame)
    return host if host is not None else frame


_POST_LOCKS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]" = weakref.WeakKeyDictionary()


def _post_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _POST_LOCKS.get(loop)
    if lock is None:
        lock = _POST_LOCKS[loop] = asyncio.Lock()
    return lock


_HANDSHAKE_TAG = tag_to_int((7, 0x6766))  # the hello and its acknowledgement
_CLOSE_PERIOD_NS = 200_000_000             # how long ucxx may wait for an endpoint to close, per attempt
CLOSE_WAIT_S = 2.0                         # how long closing waits for ucxx before leaving it behind
_PROBE_MAX_SLEEP_S = 0.002


def listener_binds_address(ucxx: Any) -> bool:
    """Whether this ucxx can bind a listener to one address (``create_listener(ip_address=...)``);
    ucxx 0.52 cannot: its listeners take every interface."""
    try:
        return "ip_address" in inspect.signature(ucxx.create_listener).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


_WARNED_WILDCARD = False


def _full_tag(ep: Any, tag: int) -> Any:
    """The UCX tag under which ``ep.recv(buffer, tag=tag)`` would receive (ucxx hashes the user tag
    with the endpoint's own receive tag, agreed at connection time)."""
    from ucxx._lib_async.utils import hash64bits
    from ucxx.types import Tag

    return Tag(hash64bits(ep._tags["msg_recv"], hash(tag)))


def _check_alive(ep: Any) -> None:
    inner = getattr(ep, "_ep", None)
    if inner is None:
        raise ConnectionResetError("the UCX endpoint is closed")
    inner.raise_on_error()
    if not inner.alive:
        raise ConnectionResetError("the UCX endpoint is closed")


class UCXCommunicator(Communicator):
    """:class:`~gpuframe.comm.Communicator` over UCX (ucxx).

    Every receive first probes for its message and checks the size UCX reports against the size
    announced (a shorter message would otherwise leave stale bytes in the buffer), then receives
    it with the probe's handle, straight into the destination.
    """

    backend = "ucx"

    def __init__(self, *, security: Any = None, **kwargs: Any) -> None:
        if security is not None:
            raise ValueError("security: the UCX communicator has no TLS; use backend='tcp' with security=... "
                             "for an encrypted transport")
        super().__init__(**kwargs)
        self._eps: dict[int, Any] = {}
        self._listener: Any = None
        self._ucxx: Any = None
        self.bound_host: Optional[str] = None  # the address the listener is bound to, when ucxx can bind

    async def _listen(self, host: str) -> str:
        global _WARNED_WILDCARD
        self._ucxx = import_ucxx()
        _ensure_initialised(self._ucxx)
        kwargs: dict[str, Any] = {}
        if listener_binds_address(self._ucxx):
            kwargs["ip_address"] = host
            self.bound_host = host
        elif not _WARNED_WILDCARD and host not in ("0.0.0.0", "::", ""):
            _WARNED_WILDCARD = True
            logger.warning("gpuframe.comm: this ucxx cannot bind a listener to %s; the UCX listener accepts "
                           "connections on every interface (each must still present the session token)", host)
        self._listener = self._ucxx.create_listener(self._accept, port=0, endpoint_error_handling=True,
                                                    connect_timeout=self.handshake_timeout, **kwargs)
        return f"ucx://{host}:{self._listener.port}"

    async def _accept(self, ep: Any) -> None:
        async def prepare() -> Any:
            return ep

        await self._serve_incoming(prepare, lambda: self._drop_connection(ep), "a UCX endpoint")

    async def _open(self, peer: int, address: str, timeout: float) -> Any:
        host, port = _parse(address)
        return await self._ucxx.create_endpoint(host, port, endpoint_error_handling=True,
                                                connect_timeout=max(timeout, 0.1))

    async def _send_raw(self, ep: Any, data: bytes) -> None:
        await ep.send(np.frombuffer(data, dtype=np.uint8), tag=_HANDSHAKE_TAG)

    async def _recv_raw(self, ep: Any, nbytes: int) -> bytes:
        buf = np.empty(nbytes, dtype=np.uint8)
        await self._recv_exact(ep, [(buf, _HANDSHAKE_TAG)], check_alive=True,
                               describe=lambda i, got: f"a handshake message of {got} bytes, expected {nbytes}")
        return buf.tobytes()

    def _register(self, peer: int, ep: Any) -> None:
        old = self._eps.get(peer)
        if old is not None and old is not ep:
            raise CommError(f"rank {peer} connected twice", peer=peer, address=self.peer_name(peer))
        self._eps[peer] = ep
        ep.set_close_callback(self._peer_lost, cb_args=(peer, "UCX endpoint closed or failed"))

    def _peer_connected(self, peer: int) -> bool:
        return peer in self._eps

    async def _drop_connection(self, ep: Any) -> None:
        await self._close_endpoints([ep])

    async def _close_endpoints(self, eps: list) -> None:
        """Close endpoints off the event loop, waiting at most ``CLOSE_WAIT_S`` (ucxx's close can
        block for as long as its period while the peer does not answer)."""
        if not eps:
            return

        def close_all() -> None:
            for ep in eps:
                try:
                    ep.abort(period=_CLOSE_PERIOD_NS, max_attempts=1)
                except Exception:  # pragma: no cover - best effort
                    logger.debug("closing a UCX endpoint failed", exc_info=True)

        task = asyncio.ensure_future(asyncio.to_thread(close_all))
        task.add_done_callback(consume_exception)
        try:
            await asyncio.wait_for(asyncio.shield(task), CLOSE_WAIT_S)
        except asyncio.TimeoutError:
            logger.warning("gpuframe.comm: closing %d UCX endpoint(s) takes more than %g s; not waiting",
                           len(eps), CLOSE_WAIT_S)

    def _ep(self, peer: int) -> Any:
        try:
            return self._eps[peer]
        except KeyError:
            raise CommError("no UCX endpoint to this peer", peer=peer, address=self.peer_name(peer)) from None

    # ------------------------------------------------------------------ exact receives
    async def _recv_exact(self, ep: Any, items: list[tuple[Any, int]], *, check_alive: bool = False,
                          describe: Callable[[int, int], str]) -> None:
        """Receive one message per ``(buffer, tag)`` into ``buffer``, each of exactly the buffer's
        size: probe for it, check the length UCX reports, then receive it with the probe's handle.

        A message of another size raises ``ProtocolError`` (``describe(i, got)`` says what).
        """
        worker = ep._ctx.worker
        pending = [(i, buf, _full_tag(ep, tag)) for i, (buf, tag) in enumerate(items)]
        tasks: list[asyncio.Future] = []
        pause = 0.0
        try:
            while pending:
                matched, waiting = [], []
                for i, buf, full in pending:
                    info = worker.tag_probe(full, remove=True)
                    if not info.matched:
                        waiting.append((i, buf, full))
                        continue
                    if int(info.length) != buf.nbytes:
                        raise ProtocolError(describe(i, int(info.length)))
                    matched.append((buf, info))
                for j in range(0, len(matched), 24):
                    async with _post_lock():
                        if worker.enable_python_future:
                            worker.populate_python_futures_pool()
                        batch = [asyncio.ensure_future(ep.recv_with_handle(_wire(b), info))
                                 for b, info in matched[j:j + 24]]
                        for t in batch:
                            t.add_done_callback(consume_exception)
                        tasks += batch
                        await asyncio.sleep(0)
                pending = waiting
                if pending:
                    if check_alive:
                        _check_alive(ep)
                    pause = 0.0 if matched else min(max(pause * 2, 2e-5), _PROBE_MAX_SLEEP_S)
                    await asyncio.sleep(pause)
            if tasks:
                await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            raise

    # ------------------------------------------------------------------ messaging
    async def _send_control(self, peer: int, tag: tuple[int, ...], payload: bytes) -> None:
        await self._ep(peer).send(np.frombuffer(payload, dtype=np.uint8), tag=tag_to_int(tag))

    async def _recv_control(self, peer: int, tag: tuple[int, ...]) -> bytes:
        ep = self._ep(peer)
        worker = ep._ctx.worker
        full = _full_tag(ep, tag_to_int(tag))
        pause = 0.0
        while True:
            info = worker.tag_probe(full, remove=True)
            if info.matched:
                break
            pause = min(max(pause * 2, 2e-5), _PROBE_MAX_SLEEP_S)
            await asyncio.sleep(pause)
        length = int(info.length)
        if not 0 < length <= self.max_control_bytes:
            raise ProtocolError(f"peer rank {peer} broke the protocol: an envelope of {length} bytes (1 to "
                                f"max_control_bytes={self.max_control_bytes}, GPUFRAME_COMM_MAX_CONTROL_BYTES)",
                                peer=peer, address=self.peer_name(peer))
        buf = np.empty(length, dtype=np.uint8)
        await ep.recv_with_handle(buf, info)
        return buf.tobytes()

    async def _post(self, coros: list) -> None:
        """Run transfer coroutines concurrently, posted in small batches.

        In python-future mode ucxx hands every request a future from a pool of 100 that its
        notifier thread refills between batches (warning when it runs dry); refilling before
        each batch of at most 24 requests keeps it from running dry.
        """
        if not coros:
            return
        worker = self._ucxx.core._get_ctx().worker
        if not worker.enable_python_future:
            await asyncio.gather(*coros)
            return
        lock = _post_lock()
        tasks: list[asyncio.Future] = []
        try:
            for i in range(0, len(coros), 24):
                async with lock:  # one batch at a time per process: each refill covers one batch
                    worker.populate_python_futures_pool()
                    batch = [asyncio.ensure_future(c) for c in coros[i:i + 24]]
                    for t in batch:
                        t.add_done_callback(consume_exception)
                    tasks += batch
                    await asyncio.sleep(0)  # the batch posts its requests (takes its futures) now
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            for c in coros[len(tasks):]:
                c.close()
            raise

    async def _send_frames(self, peer: int, tag: tuple[int, ...], frames: list[Frame]) -> None:
        ep = self._ep(peer)
        await self._post([ep.send(_wire(f), tag=tag_to_int((*tag, i))) for i, f in enumerate(frames) if f.nbytes])

    async def _recv_frames(self, peer: int, tag: tuple[int, ...], buffers: list[Frame]) -> None:
        ep = self._ep(peer)
        items = [(b, tag_to_int((*tag, i))) for i, b in enumerate(buffers) if b.nbytes]
        index = [i for i, b in enumerate(buffers) if b.nbytes]

        def describe(j: int, got: int) -> str:
            i = index[j]
            return (f"peer rank {peer} broke the protocol: frame {i} with tag {tag} has {got} bytes, its "
                    f"envelope announced {buffers[i].nbytes}")

        try:
            await self._recv_exact(ep, items, describe=describe)
        except ProtocolError as exc:
            err = ProtocolError(exc._message(), peer=peer, address=self.peer_name(peer))
            self._peer_misbehaved(peer, err)
            raise err from None

    async def _close_transport(self) -> None:
        eps, self._eps = list(self._eps.values()), {}
        for ep in eps:
            try:
                ep.remove_close_callback()
            except Exception:  # pragma: no cover
                pass
        await self._close_endpoints(eps)
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _is_disconnect(self, exc: BaseException) -> bool:
        from ucxx import exceptions as ux

        gone = tuple(getattr(ux, n) for n in (
            "UCXCloseError", "UCXConnectionResetError", "UCXCanceled", "UCXCanceledError",
            "UCXNotConnectedError", "UCXEndpointTimeoutError", "UCXUnreachableError",
            "UCXFirstEndpointFailureError", "UCXLastEndpointFailureError",
            "UCXFirstLinkFailureError", "UCXLastLinkFailureError", "UCXIOError") if hasattr(ux, n))
        return isinstance(exc, gone)
