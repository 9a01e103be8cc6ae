"""TCP transport on Dask distributed's own comm layer (``distributed.comm`` listen/connect).

For machines without ucxx. One Dask TCP comm per pair of ranks; a reader task per connection
delivers each incoming message to the receive waiting for its tag. Frames are written without
a copy (Dask serialises numpy arrays as out-of-band buffers); Dask's reader allocates its own
host memory, so received frames are copied once into their destination. Device frames are
staged through host memory on both sides: use the UCX communicator for GPU data.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np

from gpuframe.core import memory

from .base import Communicator, Frame, copy_into, host_view
from .errors import CommError

logger = logging.getLogger("gpuframe.comm")

DASK_INSTALL_HINT = "pip install 'gpuframe[dask]'"


def _distributed() -> Any:
    try:
        import distributed.comm as dcomm
    except ImportError as exc:
        raise ImportError(f"the TCP communicator needs dask distributed: {DASK_INSTALL_HINT}") from exc
    return dcomm


def _to_host(frame: Frame) -> np.ndarray:
    host = host_view(frame)
    return host if host is not None else memory.to_host(frame)


class TCPCommunicator(Communicator):
    """:class:`~gpuframe.comm.Communicator` over Dask's TCP comm."""

    backend = "tcp"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._comms: dict[int, Any] = {}
        self._readers: dict[int, asyncio.Task] = {}
        self._box: dict[tuple[int, tuple[int, ...]], asyncio.Future] = {}
        self._listener: Any = None

    async def _listen(self, host: str) -> str:
        dcomm = _distributed()
        self._listener = dcomm.listen(f"tcp://{host}:0", self._accept, deserialize=True)
        await self._listener.start()
        return self._listener.contact_address

    async def _accept(self, comm: Any) -> None:
        try:
            msg = await asyncio.wait_for(comm.read(), self.connect_timeout)
            hello = msg.get("hello") if isinstance(msg, dict) else None
        except Exception as exc:
            logger.warning("gpuframe.comm: an incoming TCP connection did not introduce itself: %r", exc)
            comm.abort()
            return
        if hello is None or not self._on_hello(list(hello), comm):
            comm.abort()

    async def _connect_peer(self, peer: int, address: str, timeout: float) -> None:
        dcomm = _distributed()
        comm = await dcomm.connect(address, timeout=max(timeout, 0.1), deserialize=True)
        await comm.write({"hello": self._hello().tolist()})
        self._register(peer, comm)

    def _register(self, peer: int, comm: Any) -> None:
        if peer in self._comms and self._comms[peer] is not comm:
            raise CommError(f"rank {peer} connected twice", peer=peer, address=self.peer_name(peer))
        self._comms[peer] = comm
        self._readers[peer] = asyncio.ensure_future(self._read_loop(peer, comm))

    def _peer_connected(self, peer: int) -> bool:
        return peer in self._comms

    async def _drop_connection(self, comm: Any) -> None:
        comm.abort()

    async def _read_loop(self, peer: int, comm: Any) -> None:
        dcomm = _distributed()
        try:
            while True:
                msg = await comm.read()
                self._slot(peer, tuple(msg["t"])).set_result(msg)
        except asyncio.CancelledError:
            raise
        except dcomm.CommClosedError as exc:
            self._peer_lost(peer, f"TCP connection closed ({exc})")
        except Exception as exc:  # a malformed message: the stream can no longer be trusted
            logger.error("gpuframe.comm: reading from rank %d failed: %r", peer, exc)
            self._peer_lost(peer, f"reading failed: {type(exc).__name__}: {exc}")

    def _slot(self, peer: int, tag: tuple[int, ...]) -> asyncio.Future:
        key = (peer, tag)
        fut = self._box.get(key)
        if fut is None:
            fut = self._box[key] = asyncio.get_running_loop().create_future()
        return fut

    async def _take(self, peer: int, tag: tuple[int, ...]) -> Any:
        fut = self._slot(peer, tag)
        try:
            return await fut
        finally:
            if fut.done():
                self._box.pop((peer, tag), None)

    def _comm(self, peer: int) -> Any:
        try:
            return self._comms[peer]
        except KeyError:
            raise CommError("no TCP connection to this peer", peer=peer, address=self.peer_name(peer)) from None

    async def _send_control(self, peer: int, tag: tuple[int, ...], payload: bytes) -> None:
        await self._comm(peer).write({"t": list(tag), "b": payload})

    async def _recv_control(self, peer: int, tag: tuple[int, ...]) -> bytes:
        return bytes((await self._take(peer, tag))["b"])

    async def _send_frames(self, peer: int, tag: tuple[int, ...], frames: list[Frame]) -> None:
        from distributed.protocol import to_serialize

        await self._comm(peer).write({"t": list(tag), "f": [to_serialize(_to_host(f)) for f in frames]})

    async def _recv_frames(self, peer: int, tag: tuple[int, ...], buffers: list[Frame]) -> None:
        msg = await self._take(peer, tag)
        frames = msg["f"]
        if len(frames) != len(buffers):
            raise CommError(f"expected {len(buffers)} frames, got {len(frames)}", peer=peer,
                            address=self.peer_name(peer))
        for dst, src in zip(buffers, frames):
            copy_into(dst, np.asarray(src))

    async def _close_transport(self) -> None:
        readers, self._readers = list(self._readers.values()), {}
        for task in readers:
            task.cancel()
        comms, self._comms = list(self._comms.values()), {}
        for comm in comms:
            comm.abort()
        if readers:
            await asyncio.gather(*readers, return_exceptions=True)
        for fut in self._box.values():
            if not fut.done():
                fut.cancel()
        self._box.clear()
        if self._listener is not None:
            self._listener.stop()
            self._listener = None

    def _is_disconnect(self, exc: BaseException) -> bool:
        try:
            dcomm = _distributed()
        except ImportError:  # pragma: no cover
            return False
        return isinstance(exc, (dcomm.CommClosedError, ConnectionError, asyncio.CancelledError))
