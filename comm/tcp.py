"""TCP transport: our own framing over non-blocking sockets (TLS through asyncio when asked).

For machines without ucxx. One connection per pair of ranks; a reader task per connection
delivers each incoming message to the receive waiting for its tag. Nothing that arrives is
unpickled: after the fixed-size handshake (see :mod:`gpuframe.comm.handshake`) every message is

* a 12-byte prefix ``<kind: u8, tag length: u8, reserved: u16, count: u64>``,
* the tag: ``tag length`` little-endian int64,
* CONTROL (kind 1): ``count`` payload bytes (at most ``max_control_bytes``), the envelope;
* FRAMES (kind 2): ``count`` frame sizes (uint64, at most ``MAX_FRAMES_PER_MESSAGE``), then the
  frames back to back.

Frames leave without a copy (``sock_sendall`` of a memoryview of each host array) and, when the
receive is posted (the usual case: the receiver has the envelope and has allocated), are read
straight into their destination (``sock_recv_into``). Frames that arrive before the application
asks for them (receives of several tags out of order) are read into scratch memory sized by
their already received envelope, and copied once. Every frame size is checked against the
envelope before a byte of it is read. Device frames are staged through host memory on both
sides: use the UCX communicator for GPU data.

TLS: pass ``security=`` (an ``ssl.SSLContext`` usable on both sides, a ``(server, client)`` pair
of them, or a Dask ``distributed.Security``); addresses are then ``tls://`` and plain TCP peers
are refused. The TLS handshake counts toward the handshake timeout. With TLS the payload is
copied by the encryption, as it must be.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from gpuframe.core import memory

from .communicator import Communicator
from .envelope import decode_envelope
from .errors import CommError, CommTimeoutError, PeerClosedError, ProtocolError
from .frames import Frame, copy_into, host_view
from .limits import MAX_FRAMES_PER_MESSAGE
from .loop import consume_exception

logger = logging.getLogger("gpuframe.comm")

_PREFIX = struct.Struct("<BBHQ")
_CONTROL, _FRAMES = 1, 2
MAX_TAG_LENGTH = 8
MAX_UNCLAIMED_MESSAGES = 4096  # envelopes received and not yet asked for, per peer
_TLS_CHUNK = 4 << 20


def _to_host(frame: Frame) -> np.ndarray:
    host = host_view(frame)
    return host if host is not None else memory.to_host(frame)


def _bytes_view(arr: np.ndarray) -> memoryview:
    return memoryview(arr).cast("B") if arr.nbytes else memoryview(b"")


def tls_contexts(security: Any) -> tuple[Optional[ssl.SSLContext], Optional[ssl.SSLContext]]:
    """``(server context, client context)`` for ``security`` (None, an SSLContext, a pair, or a
    Dask ``Security`` with TLS configured for workers)."""
    if security is None:
        return None, None
    if isinstance(security, ssl.SSLContext):
        return security, security
    if (isinstance(security, (tuple, list)) and len(security) == 2
            and all(isinstance(c, ssl.SSLContext) for c in security)):
        return security[0], security[1]
    if hasattr(security, "get_listen_args") and hasattr(security, "get_connection_args"):
        server = security.get_listen_args("worker").get("ssl_context")
        client = security.get_connection_args("worker").get("ssl_context")
        if server is None or client is None:
            raise ValueError("security: this Dask Security has no TLS settings for workers "
                             "(tls_ca_file, tls_worker_cert, tls_worker_key)")
        return server, client
    raise TypeError("security must be None, an ssl.SSLContext, a (server, client) pair of them or a "
                    f"distributed.Security, got {type(security).__name__}")


def _parse(address: str) -> tuple[str, str, int]:
    text = address.partition("#")[0]
    scheme, sep, rest = text.partition("://")
    host, _, port = rest.rpartition(":")
    if not sep or scheme not in ("tcp", "tls") or not host:
        raise ValueError(f"a TCP communicator address must look like 'tcp://host:port' or 'tls://host:port', "
                         f"got {text!r}")
    try:
        return scheme, host.strip("[]"), int(port)
    except ValueError:
        raise ValueError(f"a TCP communicator address must end with ':port', got {text!r}") from None


# ---------------------------------------------------------------------------------- channels
class _Channel:
    """A byte stream with whole-message sends and exact receives."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.lock = asyncio.Lock()

    async def send(self, pieces: list) -> None:
        raise NotImplementedError

    async def recv_into(self, view: memoryview) -> None:
        raise NotImplementedError

    async def recv_exactly(self, n: int) -> bytes:
        buf = bytearray(n)
        await self.recv_into(memoryview(buf))
        return bytes(buf)

    def abort(self) -> None:
        raise NotImplementedError


class _SocketChannel(_Channel):
    """Plain TCP: the loop's ``sock_sendall`` / ``sock_recv_into``, no copies."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop, where: str) -> None:
        super().__init__(where)
        self.sock = sock
        self.loop = loop

    async def send(self, pieces: list) -> None:
        async with self.lock:
            for p in pieces:
                if len(p):
                    await self.loop.sock_sendall(self.sock, p)

    async def recv_into(self, view: memoryview) -> None:
        n = len(view)
        pos = 0
        while pos < n:
            got = await self.loop.sock_recv_into(self.sock, view[pos:])
            if not got:
                raise ConnectionResetError(f"the connection closed after {pos} of {n} bytes")
            pos += got

    def abort(self) -> None:
        try:
            fd = self.sock.fileno()
            if fd >= 0:
                self.loop.remove_reader(fd)
                self.loop.remove_writer(fd)
        except Exception:  # pragma: no cover - the loop may be closing
            pass
        try:
            self.sock.close()
        except OSError:  # pragma: no cover
            pass


class _StreamChannel(_Channel):
    """TLS: asyncio streams (encryption copies the payload anyway)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: str) -> None:
        super().__init__(where)
        self.reader = reader
        self.writer = writer

    async def send(self, pieces: list) -> None:
        async with self.lock:
            for p in pieces:
                view = memoryview(p)
                for i in range(0, len(view), _TLS_CHUNK):
                    self.writer.write(view[i:i + _TLS_CHUNK])
                    await self.writer.drain()

    async def recv_into(self, view: memoryview) -> None:
        n = len(view)
        pos = 0
        while pos < n:
            chunk = await self.reader.read(min(n - pos, 1 << 20))
            if not chunk:
                raise ConnectionResetError(f"the connection closed after {pos} of {n} bytes")
            view[pos:pos + len(chunk)] = chunk
            pos += len(chunk)

    def abort(self) -> None:
        try:
            self.writer.transport.abort()
        except Exception:  # pragma: no cover
            pass


# ---------------------------------------------------------------------------------- communicator
@dataclass(eq=False)
class _Post:
    """Buffers a receive waits to have filled."""

    buffers: list
    done: asyncio.Future


class TCPCommunicator(Communicator):
    """:class:`~gpuframe.comm.Communicator` over TCP (optionally TLS) with gpuframe's own framing.

    Parameters
    ----------
    security : ssl.SSLContext, (SSLContext, SSLContext), distributed.Security, optional
        TLS for the listener and the dialer (see the module docstring). Default: plain TCP.
    **kwargs
        See :class:`~gpuframe.comm.Communicator`.
    """

    backend = "tcp"

    def __init__(self, *, security: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ssl_server, self._ssl_client = tls_contexts(security)
        self._channels: dict[int, _Channel] = {}
        self._readers: dict[int, asyncio.Task] = {}
        self._box: dict[tuple[int, tuple[int, ...]], asyncio.Future] = {}
        self._unclaimed: dict[int, int] = {}
        self._envelopes: dict[tuple[int, tuple[int, ...]], Any] = {}  # frames key -> payload or "taken"
        self._posts: dict[tuple[int, tuple[int, ...]], asyncio.Future] = {}
        self._staged: dict[tuple[int, tuple[int, ...]], list[np.ndarray]] = {}
        self._listen_sock: Optional[socket.socket] = None
        self._accept_task: Optional[asyncio.Task] = None

    @property
    def tls(self) -> bool:
        return self._ssl_server is not None

    # ------------------------------------------------------------------ listener
    async def _listen(self, host: str) -> str:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        if not infos:  # pragma: no cover - getaddrinfo raises instead
            raise CommError(f"cannot resolve the listen host {host!r}")
        family, _type, proto, _name, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
            sock.listen(256)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._listen_sock = sock
        self._accept_task = asyncio.ensure_future(self._accept_loop(sock))
        port = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"{'tls' if self.tls else 'tcp'}://{shown}:{port}"

    @property
    def listen_address(self) -> Optional[tuple]:
        """The socket address the listener is bound to (``(host, port)``), or None."""
        return None if self._listen_sock is None else self._listen_sock.getsockname()

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                raw, addr = await loop.sock_accept(sock)
            except asyncio.CancelledError:
                raise
            except OSError as exc:
                if self._state == "closed" or sock.fileno() < 0:
                    return
                logger.warning("gpuframe.comm: accepting a TCP connection failed: %r", exc)
                await asyncio.sleep(0.01)
                continue
            raw.setblocking(False)
            try:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover
                pass
            where = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
            task = asyncio.ensure_future(self._serve_incoming(self._prepare(raw, where), raw.close, where))
            task.add_done_callback(consume_exception)

    def _prepare(self, raw: socket.socket, where: str) -> Any:
        async def prepare() -> _Channel:
            if self._ssl_server is None:
                return _SocketChannel(raw, asyncio.get_running_loop(), where)
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader(limit=1 << 20)
            protocol = asyncio.StreamReaderProtocol(reader)
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol, raw, ssl=self._ssl_server, ssl_handshake_timeout=self.handshake_timeout)
            return _StreamChannel(reader, asyncio.StreamWriter(transport, protocol, reader, loop), where)

        return prepare

    # ------------------------------------------------------------------ connections
    async def _open(self, peer: int, address: str, timeout: float) -> _Channel:
        scheme, host, port = _parse(address)
        where = f"{host}:{port}"
        if scheme == "tls" and self._ssl_client is None:
            raise ValueError(f"{scheme}://{where} needs TLS: create the communicator with security=...")
        if scheme == "tcp" and self._ssl_client is not None:
            raise ValueError(f"refusing plain TCP to tcp://{where}: this communicator requires TLS")
        loop = asyncio.get_running_loop()
        if self._ssl_client is not None:
            reader, writer = await asyncio.open_connection(
                host, port, ssl=self._ssl_client, limit=1 << 20,
                ssl_handshake_timeout=max(min(timeout, self.handshake_timeout), 0.1))
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return _StreamChannel(reader, writer, where)
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _type, proto, _name, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, sockaddr)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except BaseException:
            sock.close()
            raise
        return _SocketChannel(sock, loop, where)

    async def _send_raw(self, ch: _Channel, data: bytes) -> None:
        await ch.send([data])

    async def _recv_raw(self, ch: _Channel, nbytes: int) -> bytes:
        return await ch.recv_exactly(nbytes)

    def _register(self, peer: int, ch: _Channel) -> None:
        if peer in self._channels and self._channels[peer] is not ch:
            raise CommError(f"rank {peer} connected twice", peer=peer, address=self.peer_name(peer))
        self._channels[peer] = ch
        self._readers[peer] = asyncio.ensure_future(self._read_loop(peer, ch))

    def _peer_connected(self, peer: int) -> bool:
        return peer in self._channels

    async def _drop_connection(self, ch: _Channel) -> None:
        ch.abort()

    def _channel(self, peer: int) -> _Channel:
        try:
            return self._channels[peer]
        except KeyError:
            raise CommError("no TCP connection to this peer", peer=peer, address=self.peer_name(peer)) from None

    # ------------------------------------------------------------------ reading
    def _protocol_error(self, peer: int, text: str) -> ProtocolError:
        return ProtocolError(f"peer rank {peer} broke the protocol: {text}", peer=peer, address=self.peer_name(peer))

    async def _read_loop(self, peer: int, ch: _Channel) -> None:
        try:
            while True:
                kind, ntag, _reserved, count = _PREFIX.unpack(await ch.recv_exactly(_PREFIX.size))
                if not 1 <= ntag <= MAX_TAG_LENGTH:
                    raise self._protocol_error(peer, f"a message tag of {ntag} ints (1 to {MAX_TAG_LENGTH} expected)")
                tag = struct.unpack(f"<{ntag}q", await ch.recv_exactly(8 * ntag))
                if kind == _CONTROL:
                    await self._read_control(peer, ch, tag, count)
                elif kind == _FRAMES:
                    await self._read_frames(peer, ch, tag, count)
                else:
                    raise self._protocol_error(peer, f"unknown message kind {kind}")
        except asyncio.CancelledError:
            raise
        except ProtocolError as exc:
            self._reader_failed(peer, exc)
            self._peer_misbehaved(peer, exc)
        except (ConnectionError, OSError, EOFError) as exc:
            err = PeerClosedError(f"the connection to peer rank {peer} broke: {type(exc).__name__}: {exc}",
                                  peer=peer, address=self.peer_name(peer))
            self._reader_failed(peer, err)
            self._fail_peer(peer, err)
        except CommError as exc:
            self._reader_failed(peer, exc)
            self._fail_peer(peer, exc)
        except Exception as exc:  # anything else means the stream can no longer be trusted
            err = self._protocol_error(peer, f"reading failed: {type(exc).__name__}: {exc}")
            self._reader_failed(peer, err)
            self._peer_misbehaved(peer, err)

    def _reader_failed(self, peer: int, exc: CommError) -> None:
        for (p, _tag), slot in list(self._posts.items()):
            if p == peer and slot.done() and not slot.result().done.done():
                slot.result().done.set_exception(exc)

    async def _read_control(self, peer: int, ch: _Channel, tag: tuple[int, ...], count: int) -> None:
        if count > self.max_control_bytes:
            raise self._protocol_error(peer, f"an envelope of {count} bytes, more than max_control_bytes="
                                             f"{self.max_control_bytes} (GPUFRAME_COMM_MAX_CONTROL_BYTES)")
        if tag[-1] != 1:
            raise self._protocol_error(peer, f"an envelope with tag {tag} (envelope tags end with 1)")
        if self._unclaimed.get(peer, 0) >= MAX_UNCLAIMED_MESSAGES:
            raise self._protocol_error(peer, f"more than {MAX_UNCLAIMED_MESSAGES} envelopes nobody asked for")
        frames_key = (peer, (*tag[:-1], 2))
        slot = self._slot(peer, tag)
        if slot.done() or frames_key in self._envelopes:
            raise self._protocol_error(peer, f"a second envelope with tag {tag}")
        payload = bytearray(count)
        await ch.recv_into(memoryview(payload))
        self._envelopes[frames_key] = payload
        self._unclaimed[peer] = self._unclaimed.get(peer, 0) + 1
        slot.set_result(payload)
        # Let a receive waiting for this envelope take it before we read on: its frames, usually
        # right behind, then go straight into the buffers it allocates instead of scratch memory.
        await asyncio.sleep(0)

    async def _read_frames(self, peer: int, ch: _Channel, tag: tuple[int, ...], count: int) -> None:
        if count > MAX_FRAMES_PER_MESSAGE:
            raise self._protocol_error(peer, f"a message of {count} frames, more than {MAX_FRAMES_PER_MESSAGE}")
        sizes = np.frombuffer(await ch.recv_exactly(8 * count), dtype="<u8") if count else np.zeros(0, "<u8")
        key = (peer, tag)
        envelope = self._envelopes.pop(key, None)
        if envelope is None:
            raise self._protocol_error(peer, f"frames with tag {tag} before their envelope")
        slot = self._posts.get(key)
        if (slot is None or not slot.done()) and not isinstance(envelope, str):
            # The application has not asked for this message yet (out of order): stage it.
            try:
                _header, specs = decode_envelope(envelope)
            except ValueError as exc:
                raise self._protocol_error(peer, f"malformed envelope for tag {tag}: {exc}") from None
            self._check_sizes(peer, tag, sizes, [s.nbytes for s in specs])
            staged = [np.empty(int(n), dtype=np.uint8) for n in sizes]
            for buf in staged:
                await ch.recv_into(_bytes_view(buf))
            slot = self._posts.get(key)
            if slot is not None and slot.done():  # the receive was posted while we read
                post = slot.result()
                self._check_sizes(peer, tag, sizes, [b.nbytes for b in post.buffers])
                for dst, src in zip(post.buffers, staged):
                    copy_into(dst, src)
                if not post.done.done():
                    post.done.set_result(None)
            else:
                self._staged[key] = staged
            return
        if slot is None:
            slot = self._post_slot(key)
        try:
            post: _Post = await asyncio.wait_for(asyncio.shield(slot), self.timeout)
        except asyncio.TimeoutError:
            raise CommTimeoutError(f"frames from peer rank {peer} waited {self.timeout:g} s for their receive",
                                   peer=peer, address=self.peer_name(peer)) from None
        self._check_sizes(peer, tag, sizes, [b.nbytes for b in post.buffers])
        for buf in post.buffers:
            if not buf.nbytes:
                continue
            host = host_view(buf)
            if host is not None:
                await ch.recv_into(_bytes_view(host))
            else:  # device memory: through the host
                scratch = np.empty(buf.nbytes, dtype=np.uint8)
                await ch.recv_into(_bytes_view(scratch))
                copy_into(buf, scratch)
        if not post.done.done():
            post.done.set_result(None)

    def _check_sizes(self, peer: int, tag: tuple[int, ...], got: np.ndarray, expected: list[int]) -> None:
        if len(got) != len(expected):
            raise self._protocol_error(peer, f"{len(got)} frames with tag {tag}, its envelope announced "
                                             f"{len(expected)}")
        for i, (g, e) in enumerate(zip(got.tolist(), expected)):
            if g != e:
                raise self._protocol_error(peer, f"frame {i} with tag {tag} has {g} bytes, its envelope "
                                                 f"announced {e}")

    def _slot(self, peer: int, tag: tuple[int, ...]) -> asyncio.Future:
        key = (peer, tag)
        fut = self._box.get(key)
        if fut is None:
            fut = self._box[key] = asyncio.get_running_loop().create_future()
        return fut

    def _post_slot(self, key: tuple[int, tuple[int, ...]]) -> asyncio.Future:
        fut = self._posts.get(key)
        if fut is None:
            fut = self._posts[key] = asyncio.get_running_loop().create_future()
        return fut

    # ------------------------------------------------------------------ messaging
    async def _send_control(self, peer: int, tag: tuple[int, ...], payload: bytes) -> None:
        head = _PREFIX.pack(_CONTROL, len(tag), 0, len(payload)) + struct.pack(f"<{len(tag)}q", *tag)
        await self._channel(peer).send([head, payload])

    async def _recv_control(self, peer: int, tag: tuple[int, ...]) -> bytes:
        fut = self._slot(peer, tag)
        try:
            payload = await fut
        finally:
            if fut.done():
                self._box.pop((peer, tag), None)
        self._unclaimed[peer] = max(self._unclaimed.get(peer, 1) - 1, 0)
        frames_key = (peer, (*tag[:-1], 2))
        if frames_key in self._envelopes:
            self._envelopes[frames_key] = "taken"  # its frames go straight into the buffers posted next
        return bytes(payload)

    async def _send_frames(self, peer: int, tag: tuple[int, ...], frames: list[Frame]) -> None:
        hosts = [_to_host(f) for f in frames]
        sizes = np.array([h.nbytes for h in hosts], dtype="<u8")
        head = (_PREFIX.pack(_FRAMES, len(tag), 0, len(hosts)) + struct.pack(f"<{len(tag)}q", *tag)
                + sizes.tobytes())
        await self._channel(peer).send([head, *(_bytes_view(h) for h in hosts if h.nbytes)])

    async def _recv_frames(self, peer: int, tag: tuple[int, ...], buffers: list[Frame]) -> None:
        key = (peer, tag)
        staged = self._staged.pop(key, None)
        if staged is not None:
            if [s.nbytes for s in staged] != [b.nbytes for b in buffers]:  # pragma: no cover - checked on arrival
                raise CommError("staged frames do not match the receive buffers", peer=peer,
                                address=self.peer_name(peer))
            for dst, src in zip(buffers, staged):
                copy_into(dst, src)
            return
        post = _Post(list(buffers), asyncio.get_running_loop().create_future())
        post.done.add_done_callback(consume_exception)
        slot = self._post_slot(key)
        slot.set_result(post)
        try:
            await post.done
        finally:
            self._posts.pop(key, None)

    # ------------------------------------------------------------------ closing
    async def _close_transport(self) -> None:
        if self._accept_task is not None:
            self._accept_task.cancel()
            await asyncio.gather(self._accept_task, return_exceptions=True)
            self._accept_task = None
        if self._listen_sock is not None:
            self._listen_sock.close()
            self._listen_sock = None
        readers, self._readers = list(self._readers.values()), {}
        for task in readers:
            task.cancel()
        if readers:
            await asyncio.gather(*readers, return_exceptions=True)
        channels, self._channels = list(self._channels.values()), {}
        for ch in channels:
            ch.abort()
        for fut in self._box.values():
            if not fut.done():
                fut.cancel()
        self._box.clear()
        for slot in self._posts.values():
            if slot.done() and not slot.result().done.done():
                slot.result().done.cancel()
            elif not slot.done():
                slot.cancel()
        self._posts.clear()
        self._staged.clear()
        self._envelopes.clear()

    def _is_disconnect(self, exc: BaseException) -> bool:
        return isinstance(exc, (ConnectionError, EOFError, asyncio.IncompleteReadError))
