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
import logging
import os
import weakref
from typing import Any

import numpy as np

from .base import Communicator, Frame, consume_exception, host_view, tag_to_int
from .errors import CommError

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


def _parse(address: str) -> tuple[str, int]:
    text = address[len("ucx://"):] if address.startswith("ucx://") else address
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


class UCXCommunicator(Communicator):
    """:class:`~gpuframe.comm.Communicator` over UCX (ucxx)."""

    backend = "ucx"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._eps: dict[int, Any] = {}
        self._listener: Any = None
        self._ucxx: Any = None

    async def _listen(self, host: str) -> str:
        self._ucxx = import_ucxx()
        _ensure_initialised(self._ucxx)
        self._listener = self._ucxx.create_listener(self._accept, port=0, endpoint_error_handling=True,
                                                    connect_timeout=self.connect_timeout)
        return f"ucx://{host}:{self._listener.port}"

    async def _accept(self, ep: Any) -> None:
        hello = np.zeros(3, dtype=np.int64)
        try:
            await asyncio.wait_for(ep.recv(hello), self.connect_timeout)
        except Exception as exc:
            logger.warning("gpuframe.comm: an incoming UCX connection did not introduce itself: %r", exc)
            await self._drop_connection(ep)
            return
        if not self._on_hello(hello.tolist(), ep):
            await self._drop_connection(ep)

    async def _connect_peer(self, peer: int, address: str, timeout: float) -> None:
        host, port = _parse(address)
        ep = await self._ucxx.create_endpoint(host, port, endpoint_error_handling=True,
                                              connect_timeout=max(timeout, 0.1))
        await ep.send(self._hello())
        self._register(peer, ep)

    def _register(self, peer: int, ep: Any) -> None:
        old = self._eps.get(peer)
        if old is not None and old is not ep:
            raise CommError(f"rank {peer} connected twice", peer=peer, address=self.peer_name(peer))
        self._eps[peer] = ep
        ep.set_close_callback(self._peer_lost, cb_args=(peer, "UCX endpoint closed or failed"))

    def _peer_connected(self, peer: int) -> bool:
        return peer in self._eps

    async def _drop_connection(self, ep: Any) -> None:
        try:
            await ep.close()
        except Exception:  # pragma: no cover - best effort
            logger.debug("closing a UCX endpoint failed", exc_info=True)

    def _ep(self, peer: int) -> Any:
        try:
            return self._eps[peer]
        except KeyError:
            raise CommError("no UCX endpoint to this peer", peer=peer, address=self.peer_name(peer)) from None

    async def _send_control(self, peer: int, tag: tuple[int, ...], payload: bytes) -> None:
        await self._ep(peer).send_obj(payload, tag=tag_to_int(tag))

    async def _recv_control(self, peer: int, tag: tuple[int, ...]) -> bytes:
        return bytes(await self._ep(peer).recv_obj(tag=tag_to_int(tag)))

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
        await self._post([ep.recv(_wire(b), tag=tag_to_int((*tag, i))) for i, b in enumerate(buffers) if b.nbytes])

    async def _close_transport(self) -> None:
        eps, self._eps = list(self._eps.values()), {}
        for ep in eps:
            await self._drop_connection(ep)
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
