"""The :class:`Communicator` interface and the protocol every transport shares.

A communicator connects ``size`` processes (ranks) in a full mesh. Messages are a small
*header* (anything msgpack can encode: dicts, lists, str, bytes, numbers) plus a list of
*frames*: 1-D contiguous arrays on the host (numpy) or on a GPU (CuPy, or anything with
``__cuda_array_interface__``). Frames go out as they are, without a copy.

Every message travels in two parts: an *envelope* (the header plus each frame's size, dtype and
memory kind) and then the frames. The receiver allocates the frames from the envelope before the
data arrives, so the transport writes straight into their final memory. :meth:`all_to_all` does
this for all peers at once (all-to-all-v): every rank first learns the sizes of every message
destined to it, allocates (optionally through a caller's ``allocator`` that hands out views of
larger buffers, see :mod:`gpuframe.comm.exchange`), then sends and receives all frames
concurrently.

The transports implement the primitives (:meth:`_listen`, :meth:`_open`, :meth:`_send_raw`,
:meth:`_recv_raw`, :meth:`_send_control`, :meth:`_recv_control`, :meth:`_send_frames`,
:meth:`_recv_frames`, :meth:`_drop_connection`, :meth:`_close_transport`). Everything else is
shared, one module per responsibility:

* this module: the constructor and its settings, the blocking facade, the primitives' contract;
* :mod:`gpuframe.comm.mesh`: the handshake and authentication, bootstrapping the mesh, closing;
* :mod:`gpuframe.comm.failures`: timeouts and failure detection, closing after an error;
* :mod:`gpuframe.comm.messaging`: send, recv and all_to_all, and their tags;
* :mod:`gpuframe.comm.handshake`, :mod:`gpuframe.comm.envelope`, :mod:`gpuframe.comm.frames`,
  :mod:`gpuframe.comm.limits`, :mod:`gpuframe.comm.loop`: the wire formats, the limits and the
  event loop they use.

Failure model: every wait is bounded by ``timeout`` seconds per phase, and a peer whose
connection breaks fails the waits on it at once with :class:`PeerClosedError`. After any
error the communicator closes itself (transfers may still be posted into buffers that the
caller is about to free; closing the connections cancels them) and later calls raise
:class:`CommClosedError`: build a new one; except after a :class:`MismatchError` (e.g. tables of
different schemas), which every rank raises before any data is posted.


Trust model: nothing that arrives from the network is unpickled or evaluated. A connection
starts with a fixed-size hello (magic, protocol version, rank, 32-byte session token) read
within ``handshake_timeout`` seconds; only a peer that presents the session's token is admitted,
and only then is anything else it sends parsed. The token is random per session: the caller's
``token`` (``gpuframe.dask`` and :func:`~gpuframe.comm.local_mesh` draw one with
:mod:`secrets`), or else one derived from the random secrets that :meth:`Communicator.start`
puts in every address (``tcp://host:port#<secret>``: share addresses as you would share a
password). Hellos that arrive before :meth:`Communicator.connect` sets the token are parked,
a few per claimed rank and never more than ``MAX_PARKED`` in all, never evicting one another,
and closed after ``connect_timeout``; ``connect`` adopts those with the right token and closes
the rest. Admitted peers are acknowledged with the token, so the dialer checks the listener too.
After the handshake, envelopes are bounded (``max_control_bytes``), decoded with msgpack (plain
data only), and every frame spec is checked: byte size a multiple of the item size, dtype from
:data:`ALLOWED_FRAME_DTYPES` (no objects, no structured dtypes). Received frames must have
exactly the announced sizes. A peer that breaks any of this raises :class:`ProtocolError`
naming it, and the communicator closes at once so that the other ranks fail fast as well.
"""
from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import secrets
from collections import defaultdict
from typing import Any, ClassVar, Coroutine, Optional, Sequence

import numpy as np

from gpuframe.core.device import Device

from .errors import CommClosedError, CommError, CommTimeoutError
from .failures import FailureHandling
from .frames import Allocator, Frame, Message
from .handshake import public_address
from .limits import (DEFAULT_CONNECT_TIMEOUT_S, check_timeout, default_handshake_timeout, default_max_control_bytes,
                     default_timeout)
from .loop import EventLoopThread, track
from .mesh import MeshBootstrap, ParkedHello
from .messaging import Messaging


class Communicator(MeshBootstrap, FailureHandling, Messaging, abc.ABC):
    """A full mesh of connections between ``size`` ranks, with point-to-point and all-to-all.

    Life cycle: ``address = comm.start(host)`` opens a listener; the addresses of all ranks are
    shared out of band (``gpuframe.dask`` does it through ``client.run``); then
    ``comm.connect(rank, addresses)`` builds the mesh. :func:`gpuframe.comm.local_mesh` does
    all of it for ranks living in one process.

    The coroutines behind the blocking methods run on ``loop``: ``astart``, ``aconnect`` and
    ``aclose`` come from :class:`~gpuframe.comm.mesh.MeshBootstrap`, ``asend``, ``arecv`` and
    ``aall_to_all`` from :class:`~gpuframe.comm.messaging.Messaging`; failures are handled by
    :class:`~gpuframe.comm.failures.FailureHandling`.

    Parameters
    ----------
    loop : asyncio.AbstractEventLoop, optional
        Loop that runs the transport. Default: a per-process background loop thread. Inside a
        Dask worker, pass the worker's loop (``gpuframe.dask`` does).
    timeout : float, optional
        Seconds one phase of an operation may wait for a peer (default ``GPUFRAME_COMM_TIMEOUT``
        or 300).
    connect_timeout : float, optional
        Seconds :meth:`connect` may take to build the mesh (default 30). Connections parked
        before :meth:`connect` are closed after this long.
    device : Device, optional
        Where received device frames are allocated (default ``cuda:0``; host frames always land
        in host memory).
    handshake_timeout : float, optional
        Seconds an incoming connection has to introduce itself, TLS handshake included (default
        ``GPUFRAME_COMM_HANDSHAKE_TIMEOUT`` or 10, at most ``connect_timeout``).
    max_control_bytes : int, optional
        Largest envelope accepted from a peer (default ``GPUFRAME_COMM_MAX_CONTROL_BYTES`` or 64 MiB).
    """

    backend: ClassVar[str] = ""

    def __init__(self, *, loop: Optional[asyncio.AbstractEventLoop] = None, timeout: Optional[float] = None,
                 connect_timeout: Optional[float] = None, device: Optional[Device] = None,
                 handshake_timeout: Optional[float] = None, max_control_bytes: Optional[int] = None) -> None:
        self._loop = loop if loop is not None else EventLoopThread.shared().loop
        self.timeout = check_timeout(timeout, "timeout", default_timeout())
        self.connect_timeout = check_timeout(connect_timeout, "connect_timeout", DEFAULT_CONNECT_TIMEOUT_S)
        self.handshake_timeout = min(check_timeout(handshake_timeout, "handshake_timeout",
                                                   default_handshake_timeout()), self.connect_timeout)
        if max_control_bytes is None:
            max_control_bytes = default_max_control_bytes()
        if isinstance(max_control_bytes, bool) or not isinstance(max_control_bytes, int) or max_control_bytes < 1024:
            raise ValueError(f"max_control_bytes must be an int >= 1024, got {max_control_bytes!r}")
        self.max_control_bytes = int(max_control_bytes)
        self.device = device if device is not None else Device("cuda", 0)
        self._rank = -1
        self._size = 0
        self._token = b""
        self._addresses: list[str] = []
        self.labels: Optional[list[str]] = None  # human names of the ranks (Dask worker addresses)
        self.address: Optional[str] = None
        self._secret = secrets.token_hex(16)  # goes into this rank's address (see the module docstring)
        self._state = "new"
        self._close_reason: Optional[BaseException] = None
        self._failed: dict[int, CommError] = {}
        self._fail_futures: dict[int, asyncio.Future] = {}
        self._parked: dict[int, list[ParkedHello]] = {}  # claimed rank -> hellos received before connect()
        self._handshakes: set[asyncio.Task] = set()   # incoming connections not yet past their hello
        self._mesh_changed: Optional[asyncio.Event] = None
        self._coll_seq = 0
        self._p2p_send_seq: dict[tuple[int, int], int] = defaultdict(int)
        self._p2p_recv_seq: dict[tuple[int, int], int] = defaultdict(int)
        track(self)

    # ------------------------------------------------------------------ properties
    @property
    def rank(self) -> int:
        """This process's rank in ``[0, size)`` (``-1`` before :meth:`connect`)."""
        return self._rank

    @property
    def size(self) -> int:
        """Number of ranks (``0`` before :meth:`connect`)."""
        return self._size

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def closed(self) -> bool:
        return self._state == "closed"

    def peer_name(self, peer: int) -> Optional[str]:
        if self.labels is not None and 0 <= peer < len(self.labels):
            return self.labels[peer]
        if 0 <= peer < len(self._addresses):
            return public_address(self._addresses[peer])
        return None

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(rank={self._rank}, size={self._size}, "
                f"address={public_address(self.address)!r}, state={self._state!r})")

    # ------------------------------------------------------------------ blocking facade
    def submit(self, coro: Coroutine[Any, Any, Any]) -> "concurrent.futures.Future[Any]":
        """Run one of this communicator's coroutines on its loop; a future of its result.

        For callers on other threads that want to overlap work with a transfer (see
        :func:`gpuframe.comm.exchange.start_exchange`).
        """
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            coro.close()
            raise RuntimeError(
                "a blocking Communicator method was called from the communicator's own event loop; "
                "await the async variant (astart, aconnect, asend, arecv, aall_to_all, aclose) instead")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _run(self, coro: Coroutine[Any, Any, Any], timeout: Optional[float] = None) -> Any:
        fut = self.submit(coro)
        try:
            return fut.result(timeout)
        except TimeoutError:
            if fut.done():  # the operation itself raised a TimeoutError (CommTimeoutError is one)
                raise
            fut.cancel()
            raise CommTimeoutError(f"operation did not finish within {timeout:g} s") from None

    def start(self, host: Optional[str] = None) -> str:
        """Open the listener; return the address other ranks connect to."""
        return self._run(self.astart(host))

    def connect(self, rank: int, addresses: Sequence[str], *, token: Optional[Any] = None) -> None:
        """Connect to every other rank (``addresses[i]`` is rank ``i``'s :meth:`start` address).

        ``token`` (bytes or int, the same on every rank) authenticates the ranks to each other;
        draw it at random per session (:func:`gpuframe.comm.new_token`). Without it, the
        token is derived from the random secrets in the addresses.
        """
        self._run(self.aconnect(rank, addresses, token=token))

    def send(self, peer: int, header: Any, frames: Sequence[Frame], *, tag: int = 0,
             timeout: Optional[float] = None) -> None:
        """Send one message to ``peer``; returns when the frames may be reused."""
        self._run(self.asend(peer, header, frames, tag=tag, timeout=timeout))

    def recv(self, peer: int, *, tag: int = 0, timeout: Optional[float] = None) -> Message:
        """Receive the next message from ``peer`` with ``tag``: ``(header, frames)``."""
        return self._run(self.arecv(peer, tag=tag, timeout=timeout))

    def all_to_all(self, messages: Sequence[Message], *, tag: Optional[int] = None,
                   allocator: Optional[Allocator] = None, timeout: Optional[float] = None,
                   stats: Optional[dict] = None) -> list[Message]:
        """Exchange one message with every rank (all-to-all-v); see :meth:`aall_to_all`."""
        return self._run(self.aall_to_all(messages, tag=tag, allocator=allocator, timeout=timeout, stats=stats))

    def close(self, timeout: Optional[float] = None) -> None:
        """Close every connection and the listener. Idempotent."""
        if self._loop.is_closed():
            self._state = "closed"
            return
        self._run(self.aclose(), timeout)

    # ------------------------------------------------------------------ checks
    def _check_loop(self) -> None:
        if asyncio.get_running_loop() is not self._loop:
            raise RuntimeError("Communicator coroutines must run on the communicator's loop "
                               "(use the blocking methods from other threads)")

    def _check_open(self) -> None:
        if self._state == "connected":
            return
        if self._state == "closed":
            reason = self._close_reason
            peer = reason.peer if isinstance(reason, CommError) else None
            address = reason.address if isinstance(reason, CommError) else None
            raise CommClosedError(f"the communicator is closed ({reason}); build a new one", peer=peer,
                                  address=address) from reason
        raise CommError(f"the communicator is not connected yet (state {self._state!r}); call connect() first")

    def _check_peer(self, peer: int) -> None:
        if isinstance(peer, bool) or not isinstance(peer, (int, np.integer)) or not 0 <= peer < self._size:
            raise ValueError(f"peer must be a rank in [0, {self._size}), got {peer!r}")
        if peer == self._rank:
            raise ValueError(f"peer must be another rank; {peer} is this rank")

    # ------------------------------------------------------------------ transport primitives
    @abc.abstractmethod
    async def _listen(self, host: str) -> str:
        """Start accepting connections; return this rank's address."""

    @abc.abstractmethod
    async def _open(self, peer: int, address: str, timeout: float) -> Any:
        """Open a connection to a lower rank's listener (TLS handshake included); return it."""

    @abc.abstractmethod
    async def _send_raw(self, conn: Any, data: bytes) -> None:
        """Send the bytes of a hello or acknowledgement on a connection not yet registered."""

    @abc.abstractmethod
    async def _recv_raw(self, conn: Any, nbytes: int) -> bytes:
        """Receive exactly ``nbytes`` (a hello or acknowledgement) on a connection not yet
        registered; raise when the peer closes or sends another size."""

    @abc.abstractmethod
    def _register(self, peer: int, conn: Any) -> None:
        """Adopt an established connection to ``peer``."""

    @abc.abstractmethod
    def _peer_connected(self, peer: int) -> bool:
        """Whether a connection to ``peer`` is registered."""

    @abc.abstractmethod
    async def _drop_connection(self, conn: Any) -> None:
        """Close a connection that is not (or no longer) part of the mesh; bounded in time and
        never blocking the event loop."""

    @abc.abstractmethod
    async def _send_control(self, peer: int, tag: tuple[int, ...], payload: bytes) -> None:
        """Send a small bytes message."""

    @abc.abstractmethod
    async def _recv_control(self, peer: int, tag: tuple[int, ...]) -> bytes:
        """Receive the small bytes message sent with ``tag``."""

    @abc.abstractmethod
    async def _send_frames(self, peer: int, tag: tuple[int, ...], frames: list[Frame]) -> None:
        """Send the frames (without copying them where the transport allows)."""

    @abc.abstractmethod
    async def _recv_frames(self, peer: int, tag: tuple[int, ...], buffers: list[Frame]) -> None:
        """Receive the frames sent with ``tag`` into ``buffers`` (sizes known from the envelope).

        Each frame must arrive with exactly its buffer's size, else :class:`ProtocolError`. The
        frames of a message use its envelope's tag with the last element 2 instead of 1."""

    @abc.abstractmethod
    async def _close_transport(self) -> None:
        """Close every connection and the listener; cancel in-flight transfers."""

    def _is_disconnect(self, exc: BaseException) -> bool:
        """Whether a transport exception means the peer is gone."""
        return False
