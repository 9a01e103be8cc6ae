"""Building the mesh: the listener's side of the handshake, dialling, and closing.

Rank ``r`` dials every lower rank and is dialled by every higher one: one connection per pair.
Nothing a connection sends is parsed before it presents the session token in a fixed-size hello
(:mod:`gpuframe.comm.handshake`), read within ``handshake_timeout`` seconds; at most
``MAX_PENDING_HANDSHAKES`` run at once. Hellos that arrive before :meth:`Communicator.connect`
sets the token are parked, a few per claimed rank and never more than ``MAX_PARKED`` in all, never
evicting one another, and closed after ``connect_timeout``; ``connect`` adopts those with the
right token and closes the rest. Admitted peers are acknowledged with the token, so the dialer
checks the listener too.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional, Sequence

from .errors import BootstrapError, CommClosedError, CommError
from .handshake import (ACK, HANDSHAKE_BYTES, HELLO, normalise_token, pack_handshake, parse_handshake, public_address,
                        token_from_addresses)
from .limits import MAX_PARKED, MAX_PARKED_PER_RANK, MAX_PENDING_HANDSHAKES
from .loop import consume_exception, untrack

logger = logging.getLogger("gpuframe.comm")


@dataclass(eq=False)
class ParkedHello:
    """A connection that introduced itself before connect() (its token not yet checkable)."""

    token: bytes
    conn: Any
    since: float
    expiry: Optional[asyncio.TimerHandle] = None

    def cancel_expiry(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None


async def _maybe_await(value: Any) -> None:
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        await value


class MeshBootstrap:
    """Opening the listener, connecting the mesh (both sides of the handshake), closing it.

    A part of :class:`~gpuframe.comm.communicator.Communicator`, which holds the state used here
    and the transport primitives (``_listen``, ``_open``, ``_send_raw``, ``_recv_raw``,
    ``_register``, ``_drop_connection``, ``_close_transport``).
    """

    async def astart(self, host: Optional[str] = None) -> str:
        self._check_loop()
        if self._state != "new":
            raise CommError(f"start() was already called on this communicator (state {self._state!r})")
        self._mesh_changed = asyncio.Event()
        self.address = f"{await self._listen(host or '127.0.0.1')}#{self._secret}"
        self._state = "listening"
        return self.address

    async def aconnect(self, rank: int, addresses: Sequence[str], *, token: Optional[Any] = None) -> None:
        self._check_loop()
        if self._state != "listening":
            raise CommError(f"connect() needs a started, unconnected communicator (state {self._state!r})")
        addresses = [str(a) for a in addresses]
        if not addresses:
            raise ValueError("addresses must list every rank's address, got an empty list")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < len(addresses):
            raise ValueError(f"rank must be an int in [0, {len(addresses)}), got {rank!r}")
        if addresses[rank] != self.address:
            raise ValueError(f"addresses[{rank}] must be this communicator's address "
                             f"{public_address(self.address)!r}, got {public_address(addresses[rank])!r}")
        session_token = normalise_token(token) if token is not None else token_from_addresses(addresses)
        self._rank, self._size, self._addresses = rank, len(addresses), addresses
        self._token = session_token
        # Hellos parked before connect(): adopt, per higher rank, the newest one with this
        # session's token; close all the others.
        parked, self._parked = self._parked, {}
        adopt: dict[int, ParkedHello] = {}
        drop: list[ParkedHello] = []
        for peer, entries in parked.items():
            for entry in entries:
                entry.cancel_expiry()
                good = hmac.compare_digest(entry.token, self._token) and rank < peer < self._size
                if good and (peer not in adopt or adopt[peer].since <= entry.since):
                    if peer in adopt:
                        drop.append(adopt[peer])
                    adopt[peer] = entry
                else:
                    drop.append(entry)
        if drop:
            logger.warning("gpuframe.comm: rank %d closes %d connection(s) that introduced themselves before "
                           "connect() without this session's token", rank, len(drop))
        for entry in drop:
            await self._drop_connection(entry.conn)
        for peer, entry in adopt.items():
            await self._welcome(peer, entry.conn)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        # Rank r dials every lower rank and is dialled by every higher one: one connection per pair.
        dials = [asyncio.ensure_future(self._dial(p, addresses[p], deadline)) for p in range(rank)]
        try:
            if dials:
                await asyncio.gather(*dials)
            while not all(self._peer_connected(p) for p in range(rank + 1, self._size)):
                missing = [p for p in range(rank + 1, self._size) if not self._peer_connected(p)]
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise BootstrapError(
                        f"rank {rank}: ranks {missing} did not connect within {self.connect_timeout:g} s "
                        f"(addresses {[public_address(addresses[p]) for p in missing]})")
                self._mesh_changed.clear()
                try:
                    await asyncio.wait_for(self._mesh_changed.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
        except BaseException as exc:
            for d in dials:
                d.cancel()
            await self._break(exc)
            raise
        self._state = "connected"
        logger.debug("rank %d/%d connected (%s)", rank, self._size, self.backend)

    async def _dial(self, peer: int, address: str, deadline: float) -> None:
        """Connect to ``peer``, introduce ourselves, wait for its acknowledgement; retry until the
        deadline while the connection is refused or closed (e.g. its listener had no room)."""
        loop = asyncio.get_running_loop()
        shown = public_address(address)
        last = "no attempt"
        pause = 0.02
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise BootstrapError(f"rank {self._rank}: could not connect to rank {peer} at {shown} within "
                                     f"{self.connect_timeout:g} s (last attempt: {last})", peer=peer, address=shown)
            conn = None
            try:
                conn = await asyncio.wait_for(self._open(peer, address, remaining), remaining)
                await asyncio.wait_for(self._send_raw(conn, pack_handshake(HELLO, self._rank, self._token)),
                                       max(deadline - loop.time(), 0.001))
                data = await asyncio.wait_for(self._recv_raw(conn, HANDSHAKE_BYTES),
                                              max(deadline - loop.time(), 0.001))
                try:
                    their_rank, their_token = parse_handshake(data, ACK)
                except ValueError as exc:
                    raise BootstrapError(f"rank {self._rank}: {shown} is not a gpuframe communicator of this "
                                         f"version: {exc}", peer=peer, address=shown) from None
                if their_rank != peer or not hmac.compare_digest(their_token, self._token):
                    raise BootstrapError(f"rank {self._rank}: {shown} answered as rank {their_rank} of another "
                                         f"session (expected rank {peer} of this one)", peer=peer, address=shown)
                self._register(peer, conn)
                return
            except (BootstrapError, asyncio.CancelledError):
                if conn is not None:
                    await self._drop_connection(conn)
                raise
            except Exception as exc:
                if conn is not None:
                    await self._drop_connection(conn)
                if isinstance(exc, asyncio.TimeoutError):
                    last = "timed out"
                    continue
                last = f"{type(exc).__name__}: {exc}"
                if self._fatal_dial_error(exc):
                    raise BootstrapError(f"rank {self._rank}: cannot connect to rank {peer} at {shown}: {last}",
                                         peer=peer, address=shown) from exc
            await asyncio.sleep(min(pause, max(deadline - loop.time(), 0)))
            pause = min(pause * 2, 0.5)

    def _fatal_dial_error(self, exc: BaseException) -> bool:
        """Whether retrying a failed dial is pointless (a TLS or configuration error)."""
        import ssl

        return isinstance(exc, (ssl.SSLError, ssl.CertificateError, ValueError, TypeError))

    # ------------------------------------------------------------------ incoming connections
    async def _serve_incoming(self, prepare: Callable[[], Awaitable[Any]], abort: Callable[[], Any],
                              where: str) -> None:
        """Run the handshake of an incoming connection (called by a transport's listener).

        ``prepare()`` finishes opening the connection (TLS handshake) and returns it; ``abort()``
        closes the raw connection when ``prepare`` did not finish. The hello must arrive within
        ``handshake_timeout``; no more than ``MAX_PENDING_HANDSHAKES`` run at once.
        """
        if self._state == "closed" or len(self._handshakes) >= MAX_PENDING_HANDSHAKES:
            if self._state != "closed":
                logger.warning("gpuframe.comm: refusing a connection from %s: %d handshakes in progress",
                               where, len(self._handshakes))
            await _maybe_await(abort())
            return
        task = asyncio.current_task()
        if task is not None:
            self._handshakes.add(task)
        conn = None
        try:
            async def handshake() -> bytes:
                nonlocal conn
                conn = await prepare()
                return await self._recv_raw(conn, HANDSHAKE_BYTES)

            try:
                data = await asyncio.wait_for(handshake(), self.handshake_timeout)
                peer, token = parse_handshake(data, HELLO)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
                    why = f"no hello within {self.handshake_timeout:g} s"
                else:
                    why = f"{type(exc).__name__}: {exc}"
                logger.warning("gpuframe.comm: closing an incoming connection from %s: %s", where, why)
                if conn is not None:
                    await self._drop_connection(conn)
                else:
                    await _maybe_await(abort())
                return
            await self._on_hello(peer, token, conn, where)
        except asyncio.CancelledError:
            if conn is not None:
                await self._drop_connection(conn)
            else:
                await _maybe_await(abort())
            raise
        finally:
            if task is not None:
                self._handshakes.discard(task)

    async def _on_hello(self, peer: int, token: bytes, conn: Any, where: str) -> None:
        """An incoming connection introduced itself as ``peer`` with ``token``."""
        if self._state == "closed":
            await self._drop_connection(conn)
            return
        if self._size:  # connect() set the token: check it now
            if not hmac.compare_digest(token, self._token) or not self._rank < peer < self._size:
                logger.warning("gpuframe.comm: rank %d closes a connection from %s that claims rank %d without "
                               "this session's token", self._rank, where, peer)
                await self._drop_connection(conn)
                return
            if self._peer_connected(peer):
                logger.warning("gpuframe.comm: rank %d closes a second connection from rank %d", self._rank, peer)
                await self._drop_connection(conn)
                return
            await self._welcome(peer, conn)
            return
        # Before connect(): nothing to check the token against. Park a bounded number of hellos;
        # a newcomer only replaces a parked connection with the same token (a redial of the same
        # session), never one with another token: a stranger cannot evict the real rank.
        entries = self._parked.setdefault(peer, [])
        same = [e for e in entries if hmac.compare_digest(e.token, token)]
        total = sum(len(v) for v in self._parked.values())
        if not same and (len(entries) >= MAX_PARKED_PER_RANK or total >= MAX_PARKED):
            logger.warning("gpuframe.comm: closing a connection from %s claiming rank %d before connect(): "
                           "%d already wait for that rank (%d in all)", where, peer, len(entries), total)
            if not entries:
                self._parked.pop(peer, None)
            await self._drop_connection(conn)
            return
        for old in same:
            entries.remove(old)
            old.cancel_expiry()
        entry = ParkedHello(token, conn, self._loop.time())
        entry.expiry = self._loop.call_later(self.connect_timeout, self._expire_parked, peer, entry)
        entries.append(entry)
        for old in same:
            await self._drop_connection(old.conn)
        if self._mesh_changed is not None:
            self._mesh_changed.set()

    def _expire_parked(self, peer: int, entry: "ParkedHello") -> None:
        entries = self._parked.get(peer)
        if not entries or entry not in entries:
            return
        entries.remove(entry)
        if not entries:
            self._parked.pop(peer, None)
        logger.warning("gpuframe.comm: closing a connection claiming rank %d: connect() did not adopt it within "
                       "%g s", peer, self.connect_timeout)
        task = asyncio.ensure_future(self._drop_connection(entry.conn))
        task.add_done_callback(consume_exception)

    async def _welcome(self, peer: int, conn: Any) -> None:
        """Acknowledge an authenticated connection and adopt it."""
        try:
            await asyncio.wait_for(self._send_raw(conn, pack_handshake(ACK, self._rank, self._token)),
                                   self.handshake_timeout)
        except Exception as exc:
            logger.warning("gpuframe.comm: rank %d could not acknowledge rank %d: %r", self._rank, peer, exc)
            await self._drop_connection(conn)
            return
        if self._peer_connected(peer) or self._state == "closed":
            await self._drop_connection(conn)
            return
        self._register(peer, conn)
        if self._mesh_changed is not None:
            self._mesh_changed.set()

    async def aclose(self) -> None:
        if self._state == "closed":
            return
        self._state = "closed"
        if self._close_reason is None:
            self._close_reason = CommClosedError("the communicator was closed")
        for peer in range(self._size):
            self._fail_peer(peer, CommClosedError("the communicator was closed", peer=peer,
                                                  address=self.peer_name(peer)))
        handshakes, self._handshakes = list(self._handshakes), set()
        for task in handshakes:
            task.cancel()
        if handshakes:
            await asyncio.gather(*handshakes, return_exceptions=True)
        parked, self._parked = self._parked, {}
        for entries in parked.values():
            for entry in entries:
                entry.cancel_expiry()
                await self._drop_connection(entry.conn)
        await self._close_transport()
        untrack(self)
