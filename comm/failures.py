"""Failure handling: what a communicator does when a peer dies, stalls or breaks the protocol.

Every wait is bounded by ``timeout`` seconds per phase, and a peer whose connection breaks fails
the waits on it at once with :class:`PeerClosedError`. A peer that sends something malformed
raises :class:`ProtocolError` naming it. After any error the communicator closes itself
(transfers may still be posted into buffers that the caller is about to free; closing the
connections cancels them) and later calls raise :class:`CommClosedError`: build a new one. The
exception: a :class:`MismatchError` (e.g. tables of different schemas), which every rank sees
before any data is posted and raises without closing.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable

from .envelope import decode_envelope
from .errors import CommClosedError, CommError, CommTimeoutError, PeerClosedError, ProtocolError
from .frames import FrameSpec
from .loop import consume_exception

logger = logging.getLogger("gpuframe.comm")


class FailureHandling:
    """Per-peer failure state, bounded waits on peers, and closing after an error.

    A part of :class:`~gpuframe.comm.communicator.Communicator`, which holds the state used here
    (``_failed``, ``_fail_futures``, ``_state``, ``_close_reason``) and the transport primitives.
    """

    async def _break(self, exc: BaseException) -> None:
        """Close after an error: the state of in-flight transfers is unknown."""
        if self._state == "closed":
            return
        self._close_reason = exc
        try:
            await self.aclose()
        except Exception:  # pragma: no cover - closing is best effort here
            logger.debug("error while closing a broken communicator", exc_info=True)

    def _fail_future(self, peer: int) -> asyncio.Future:
        fut = self._fail_futures.get(peer)
        if fut is None:
            fut = self._fail_futures[peer] = self._loop.create_future()
        return fut

    def _fail_peer(self, peer: int, exc: CommError) -> None:
        """Record that ``peer`` is gone; wakes every wait on it. Call on the loop thread."""
        if peer in self._failed:
            return
        self._failed[peer] = exc
        fut = self._fail_future(peer)
        if not fut.done():
            fut.set_result(exc)

    def _peer_lost(self, peer: int, detail: str) -> None:
        """Thread-safe: a transport noticed that ``peer``'s connection broke."""
        if self._state == "closed" or self._loop.is_closed():
            return
        exc = PeerClosedError(f"the connection to peer rank {peer} broke: {detail}", peer=peer,
                              address=self.peer_name(peer))
        try:
            self._loop.call_soon_threadsafe(self._fail_peer, peer, exc)
        except RuntimeError:  # loop closed meanwhile
            pass

    def _peer_misbehaved(self, peer: int, exc: CommError) -> None:
        """A peer broke the protocol (call on the loop thread): fail its waits and close the
        communicator at once, so that every rank of the operation learns it quickly."""
        if self._state == "closed":
            return
        logger.error("gpuframe.comm: rank %d: %s", self._rank, exc)
        self._fail_peer(peer, exc)
        if self._close_reason is None:
            self._close_reason = exc
        task = asyncio.ensure_future(self._break(exc))
        task.add_done_callback(consume_exception)

    def _decode(self, peer: int, payload: Any, what: str) -> tuple[Any, list[FrameSpec]]:
        try:
            return decode_envelope(payload)
        except ValueError as exc:
            raise ProtocolError(f"{what}: malformed envelope from peer rank {peer}: {exc}", peer=peer,
                                address=self.peer_name(peer)) from None

    async def _decode_or_break(self, peer: int, payload: Any, what: str) -> tuple[Any, list[FrameSpec]]:
        try:
            return self._decode(peer, payload, what)
        except ProtocolError as exc:
            self._fail_peer(peer, exc)
            await self._break(exc)
            raise

    def _peer_error(self, peer: int, what: str) -> CommError:
        """A fresh error (one per raise) saying that ``peer`` is gone, in the context of ``what``."""
        known = self._failed[peer]
        return type(known)(f"{what}: {known._message()}", peer=known.peer, address=known.address)

    async def _guarded(self, peer: int, coro: Awaitable[Any], deadline: float, limit: float, what: str) -> Any:
        loop = asyncio.get_running_loop()
        if peer in self._failed:
            if asyncio.iscoroutine(coro):
                coro.close()
            raise self._peer_error(peer, what)
        task = asyncio.ensure_future(coro)
        task.add_done_callback(consume_exception)
        watcher = self._fail_future(peer)
        done, _ = await asyncio.wait({task, watcher}, timeout=max(deadline - loop.time(), 0.0),
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            exc = task.exception()
            if exc is None:
                return task.result()
            raise self._translate(peer, exc, what) from exc
        task.cancel()
        if watcher in done:
            raise self._peer_error(peer, what)
        raise CommTimeoutError(f"{what}: peer rank {peer} did not answer within {limit:g} s",
                               peer=peer, address=self.peer_name(peer))

    def _translate(self, peer: int, exc: BaseException, what: str) -> CommError:
        if isinstance(exc, CommError):
            return exc
        if peer in self._failed:
            return self._peer_error(peer, what)
        if self._state == "closed":
            return CommClosedError(f"{what}: the communicator was closed meanwhile ({self._close_reason})",
                                   peer=peer, address=self.peer_name(peer))
        if self._is_disconnect(exc):
            err: CommError = PeerClosedError(f"{what}: peer rank {peer} closed the connection "
                                             f"({type(exc).__name__}: {exc})", peer=peer,
                                             address=self.peer_name(peer))
            self._fail_peer(peer, err)
            return err
        return CommError(f"{what} failed: {type(exc).__name__}: {exc}", peer=peer, address=self.peer_name(peer))

    async def _run_all(self, jobs: list[tuple[int, Awaitable[Any]]], limit: float, what: str) -> list[Any]:
        """Run transfers concurrently, all within ``limit`` seconds; on the first failure cancel
        the rest and close."""
        deadline = asyncio.get_running_loop().time() + limit
        tasks = [asyncio.ensure_future(self._guarded(p, c, deadline, limit, what)) for p, c in jobs]
        if not tasks:
            return []
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        errors = [t.exception() for t in done if t.exception() is not None]
        if not errors:
            return [t.result() for t in tasks]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        protocol = [e for e in errors if isinstance(e, ProtocolError)]
        closed = [e for e in errors if isinstance(e, PeerClosedError)]
        first = protocol[0] if protocol else closed[0] if closed else errors[0]
        if isinstance(first, CommTimeoutError):
            late = sorted({p for (p, _), t in zip(jobs, tasks)
                           if t.done() and isinstance(t.exception(), CommTimeoutError)})
            if len(late) > 1:
                first = CommTimeoutError(
                    f"{what}: peer ranks {late} ({[self.peer_name(p) for p in late]}) did not answer "
                    f"within {limit:g} s", peer=late[0], address=self.peer_name(late[0]))
        await self._break(first)
        raise first
