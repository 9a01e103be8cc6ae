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
:meth:`_recv_frames`, :meth:`_drop_connection`, :meth:`_close_transport`). Everything else lives
here: the handshake and authentication, bootstrapping the mesh, tags, timeouts, failure
detection, and the blocking facade.

Failure model: every wait is bounded by ``timeout`` seconds per phase, and a peer whose
connection breaks fails the waits on it at once with :class:`PeerClosedError`. After any
error the communicator closes itself (transfers may still be posted into buffers that the
caller is about to free; closing the connections cancels them) and later calls raise
:class:`CommClosedError`: build a new one.

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
import atexit
import concurrent.futures
import hashlib
import hmac
import logging
import os
import secrets
import struct
import threading
import weakref
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, ClassVar, Coroutine, Optional, Sequence

import numpy as np

from gpuframe.core import memory
from gpuframe.core.device import CPU, Device

from .errors import BootstrapError, CommClosedError, CommError, CommTimeoutError, PeerClosedError, ProtocolError

logger = logging.getLogger("gpuframe.comm")

DEFAULT_TIMEOUT_S = 300.0
DEFAULT_CONNECT_TIMEOUT_S = 30.0
DEFAULT_HANDSHAKE_TIMEOUT_S = 10.0
DEFAULT_MAX_CONTROL_BYTES = 64 << 20
MAX_FRAMES_PER_MESSAGE = 1 << 20
MAX_PENDING_HANDSHAKES = 64   # incoming connections not yet past their hello, at once
MAX_PARKED_PER_RANK = 4       # hellos parked before connect(), per claimed rank (distinct tokens)
MAX_PARKED = 64               # hellos parked before connect(), in all
TOKEN_BYTES = 32

PROTOCOL_VERSION = 2
_HANDSHAKE = struct.Struct("<8sHHI32s")  # magic, protocol version, kind, rank, token
_HELLO_MAGIC = b"gpframe\x02"
_HELLO, _ACK = 1, 2
HANDSHAKE_BYTES = _HANDSHAKE.size

#: The numpy dtype strings a frame may have: plain numbers only (no objects, no structured or
#: datetime dtypes). Both byte orders; bool and the 1-byte integers have no byte order.
ALLOWED_FRAME_DTYPES = frozenset(
    s for t in ("?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8")
    for s in (np.dtype(t).newbyteorder("<").str, np.dtype(t).newbyteorder(">").str))

Frame = Any  # a 1-D contiguous numpy, CuPy or numba device array
Message = tuple[Any, list[Frame]]


def _env_float(name: str, default: float) -> float:
    text = os.environ.get(name, "")
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be a number of seconds, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"environment variable {name} must be > 0, got {text!r}")
    return value


def default_timeout() -> float:
    """Seconds a communicator waits for one phase of an operation (``GPUFRAME_COMM_TIMEOUT``)."""
    return _env_float("GPUFRAME_COMM_TIMEOUT", DEFAULT_TIMEOUT_S)


def default_handshake_timeout() -> float:
    """Seconds an incoming connection has to introduce itself (``GPUFRAME_COMM_HANDSHAKE_TIMEOUT``,
    default 10); TLS handshake included."""
    return _env_float("GPUFRAME_COMM_HANDSHAKE_TIMEOUT", DEFAULT_HANDSHAKE_TIMEOUT_S)


def default_max_control_bytes() -> int:
    """Largest envelope accepted from a peer (``GPUFRAME_COMM_MAX_CONTROL_BYTES``, default 64 MiB)."""
    text = os.environ.get("GPUFRAME_COMM_MAX_CONTROL_BYTES", "")
    if not text:
        return DEFAULT_MAX_CONTROL_BYTES
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"environment variable GPUFRAME_COMM_MAX_CONTROL_BYTES must be an int (bytes), "
                         f"got {text!r}") from None
    if value < 1024:
        raise ValueError(f"environment variable GPUFRAME_COMM_MAX_CONTROL_BYTES must be >= 1024, got {text!r}")
    return value


# ---------------------------------------------------------------------------------- sessions
def new_token() -> bytes:
    """A fresh random session token (32 bytes from :mod:`secrets`)."""
    return secrets.token_bytes(TOKEN_BYTES)


def normalise_token(token: Any) -> bytes:
    """The 32 bytes that travel in the hello for a caller's ``token`` (bytes or a non-negative int)."""
    if isinstance(token, (bytes, bytearray, memoryview)):
        raw = bytes(token)
        if not raw:
            raise ValueError("token must not be empty")
    elif isinstance(token, (int, np.integer)) and not isinstance(token, bool) and int(token) >= 0:
        raw = int(token).to_bytes((int(token).bit_length() + 7) // 8 or 1, "little")
    else:
        raise ValueError(f"token must be bytes or a non-negative int, got {type(token).__name__}")
    return hashlib.blake2b(raw, digest_size=TOKEN_BYTES, person=b"gpuframe-token").digest()


def split_address(address: str) -> tuple[str, str]:
    """``(public part, secret)`` of a communicator address ``scheme://host:port#secret``."""
    public, _, secret = str(address).partition("#")
    return public, secret


def public_address(address: Optional[str]) -> Optional[str]:
    """An address without its secret: what error messages and logs show."""
    return None if address is None else split_address(address)[0]


def _token_from_addresses(addresses: Sequence[str]) -> bytes:
    secrets_ = [split_address(a)[1] for a in addresses]
    return hashlib.blake2b("\n".join(secrets_).encode(), digest_size=TOKEN_BYTES,
                           person=b"gpuframe-addrs").digest()


def _pack_handshake(kind: int, rank: int, token: bytes) -> bytes:
    return _HANDSHAKE.pack(_HELLO_MAGIC, PROTOCOL_VERSION, kind, rank, token)


def _parse_handshake(data: bytes, kind: int) -> tuple[int, bytes]:
    """``(rank, token)`` of a hello or acknowledgement; ValueError saying what is wrong."""
    what = "hello" if kind == _HELLO else "acknowledgement"
    if len(data) != _HANDSHAKE.size:
        raise ValueError(f"a gpuframe {what} has {_HANDSHAKE.size} bytes, got {len(data)}")
    magic, version, got_kind, rank, token = _HANDSHAKE.unpack(data)
    if magic != _HELLO_MAGIC:
        raise ValueError(f"not a gpuframe {what} (magic {magic!r}, expected {_HELLO_MAGIC!r})")
    if version != PROTOCOL_VERSION:
        raise ValueError(f"gpuframe protocol version {version}, expected {PROTOCOL_VERSION}")
    if got_kind != kind:
        raise ValueError(f"expected a {what} (kind {kind}), got kind {got_kind}")
    return int(rank), bytes(token)


def _check_timeout(value: Optional[float], name: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------- frames
@dataclass(frozen=True)
class FrameSpec:
    """What a receiver needs to allocate one frame: byte size, numpy dtype string, memory kind."""

    nbytes: int
    dtype: str
    device: str  # "cpu" or "cuda"

    @property
    def count(self) -> int:
        return self.nbytes // np.dtype(self.dtype).itemsize

    def to_wire(self) -> list:
        return [self.nbytes, self.dtype, self.device]

    @classmethod
    def from_wire(cls, item: Any) -> "FrameSpec":
        """A spec received from a peer, checked; ``ValueError`` saying what is wrong."""
        if not isinstance(item, (list, tuple)) or len(item) != 3:
            raise ValueError(f"a frame spec must be [nbytes, dtype, device], got {item!r:.100}")
        nbytes, dtype, device = item
        if isinstance(nbytes, bool) or not isinstance(nbytes, int) or not 0 <= nbytes < 2**62:
            raise ValueError(f"a frame's byte size must be an int in [0, 2**62), got {nbytes!r:.40}")
        if not isinstance(dtype, str) or dtype not in ALLOWED_FRAME_DTYPES:
            raise ValueError(f"frame dtype {dtype!r:.40} is not allowed (plain bool, int, uint and float "
                             f"dtypes only: {sorted(ALLOWED_FRAME_DTYPES)})")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"a frame's memory kind must be 'cpu' or 'cuda', got {device!r:.40}")
        itemsize = np.dtype(dtype).itemsize
        if nbytes % itemsize:
            raise ValueError(f"a frame of dtype {dtype} cannot have {nbytes} bytes (not a multiple of {itemsize})")
        return cls(nbytes, dtype, device)


def as_frame(obj: Any) -> Frame:
    """Check that ``obj`` can be a frame (1-D, contiguous, host or device); bytes become uint8."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return np.frombuffer(obj, dtype=np.uint8)
    if not hasattr(obj, "dtype") or not hasattr(obj, "shape"):
        raise TypeError(f"a frame must be a 1-D numpy/CuPy array or a bytes-like object, got {type(obj).__name__}")
    if len(obj.shape) != 1:
        raise ValueError(f"a frame must be 1-D, got an array of shape {tuple(obj.shape)}")
    flags = getattr(obj, "flags", None)
    contiguous = True
    if flags is not None:
        try:
            contiguous = bool(flags["C_CONTIGUOUS"])
        except (KeyError, TypeError):
            contiguous = bool(getattr(flags, "c_contiguous", True))
    if not contiguous:
        raise ValueError("a frame must be contiguous; pass a contiguous slice or copy it first")
    dtype = np.dtype(obj.dtype)
    if dtype.str not in ALLOWED_FRAME_DTYPES:
        raise TypeError(f"a frame must have a plain bool, int, uint or float dtype, got {dtype}")
    return obj


def frame_spec(frame: Frame) -> FrameSpec:
    dev = memory.array_device(frame)
    dtype = np.dtype(frame.dtype)
    return FrameSpec(int(frame.shape[0]) * dtype.itemsize, dtype.str, "cuda" if dev.is_cuda else "cpu")


def host_view(frame: Frame) -> Optional[np.ndarray]:
    """The numpy array behind ``frame`` when it is host memory (a simulator device array's
    backing array too), else ``None``."""
    if isinstance(frame, np.ndarray):
        return frame
    if memory._is_fake_cuda(frame):
        return frame._ary
    return None


def copy_into(dst: Frame, src: Frame) -> None:
    """Copy ``src`` into the existing array ``dst`` (same byte size; host or device, either way)."""
    if src.nbytes != dst.nbytes:
        raise CommError(f"frame size mismatch: expected {dst.nbytes} bytes, got {src.nbytes}")
    if not src.nbytes:
        return
    hd, hs = host_view(dst), host_view(src)
    if hd is not None:
        hd.view(np.uint8)[...] = (hs if hs is not None else memory.to_host(src)).view(np.uint8)
        return
    # dst is device memory (CuPy): use the array's own copy methods
    if hs is not None:
        dst.view(np.uint8).set(hs.view(np.uint8))
    else:
        dst.view(np.uint8)[...] = src.view(np.uint8)


# ---------------------------------------------------------------------------------- envelopes
def _msgpack():
    try:
        import msgpack
    except ImportError as exc:  # pragma: no cover - msgpack ships with distributed
        raise ImportError("gpuframe.comm needs msgpack: pip install msgpack") from exc
    return msgpack


def encode_envelope(header: Any, frames: Sequence[Frame]) -> bytes:
    specs = [frame_spec(f).to_wire() for f in frames]
    try:
        return _msgpack().packb({"h": header, "f": specs}, use_bin_type=True)
    except TypeError as exc:
        raise TypeError(f"a message header must be msgpack-serialisable (dict, list, str, bytes, numbers): {exc}") from None


def decode_envelope(payload: Any, max_frames: int = MAX_FRAMES_PER_MESSAGE) -> tuple[Any, list[FrameSpec]]:
    """Header and frame specs of a received envelope; ``ValueError`` saying what is wrong.

    msgpack decodes plain data only (no objects are built from the bytes); every frame spec is
    checked (:meth:`FrameSpec.from_wire`).
    """
    msgpack = _msgpack()
    try:
        doc = msgpack.unpackb(bytes(payload) if not isinstance(payload, bytes) else payload,
                              raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several types (ExtraData, FormatError, ValueError...)
        raise ValueError(f"the envelope is not valid msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(doc, dict) or set(doc) != {"h", "f"}:
        raise ValueError(f"an envelope must be a map with keys 'h' and 'f', got {doc!r:.100}")
    specs = doc["f"]
    if not isinstance(specs, list):
        raise ValueError(f"an envelope's frame list must be a list, got {type(specs).__name__}")
    if len(specs) > max_frames:
        raise ValueError(f"an envelope announces {len(specs)} frames, more than the limit of {max_frames}")
    return doc["h"], [FrameSpec.from_wire(s) for s in specs]


def tag_to_int(tag: tuple[int, ...]) -> int:
    """A stable 63-bit integer for a tuple of ints (the same in every process)."""
    digest = hashlib.blake2b(struct.pack(f"<{len(tag)}q", *tag), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


# ---------------------------------------------------------------------------------- loop thread
class EventLoopThread:
    """An asyncio event loop running in a daemon thread.

    Communicators created outside an event loop (plain scripts, one rank per process) share
    one of these per process: UCX binds its completion notifications to one loop.
    """

    _shared: ClassVar[Optional["EventLoopThread"]] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str = "gpuframe-comm") -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(ready.set)
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name=name, daemon=True)
        self.thread.start()
        ready.wait()

    @classmethod
    def shared(cls) -> "EventLoopThread":
        with cls._lock:
            if cls._shared is None:
                cls._shared = cls()
                atexit.register(_close_live_communicators)
            return cls._shared


_LIVE: "weakref.WeakSet[Communicator]" = weakref.WeakSet()


def _close_live_communicators() -> None:
    for comm in list(_LIVE):
        try:
            comm.close(timeout=5)
        except Exception:  # pragma: no cover - best effort at interpreter exit
            pass
    from .ucx import shutdown

    shutdown()


# ---------------------------------------------------------------------------------- communicator
@dataclass(eq=False)
class _Parked:
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


Allocator = Callable[[list[tuple[Any, list[FrameSpec]]]], list[list[Frame]]]


class Communicator(abc.ABC):
    """A full mesh of connections between ``size`` ranks, with point-to-point and all-to-all.

    Life cycle: ``address = comm.start(host)`` opens a listener; the addresses of all ranks are
    shared out of band (``gpuframe.dask`` does it through ``client.run``); then
    ``comm.connect(rank, addresses)`` builds the mesh. :func:`gpuframe.comm.local_mesh` does
    all of it for ranks living in one process.

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
        self.timeout = _check_timeout(timeout, "timeout", default_timeout())
        self.connect_timeout = _check_timeout(connect_timeout, "connect_timeout", DEFAULT_CONNECT_TIMEOUT_S)
        self.handshake_timeout = min(_check_timeout(handshake_timeout, "handshake_timeout",
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
        self._parked: dict[int, list[_Parked]] = {}  # claimed rank -> hellos received before connect()
        self._handshakes: set[asyncio.Task] = set()   # incoming connections not yet past their hello
        self._mesh_changed: Optional[asyncio.Event] = None
        self._coll_seq = 0
        self._p2p_send_seq: dict[tuple[int, int], int] = defaultdict(int)
        self._p2p_recv_seq: dict[tuple[int, int], int] = defaultdict(int)
        _LIVE.add(self)

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
        draw it at random per session (:func:`gpuframe.comm.base.new_token`). Without it, the
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

    # ------------------------------------------------------------------ lifecycle (async)
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
        session_token = normalise_token(token) if token is not None else _token_from_addresses(addresses)
        self._rank, self._size, self._addresses = rank, len(addresses), addresses
        self._token = session_token
        # Hellos parked before connect(): adopt, per higher rank, the newest one with this
        # session's token; close all the others.
        parked, self._parked = self._parked, {}
        adopt: dict[int, _Parked] = {}
        drop: list[_Parked] = []
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
                await asyncio.wait_for(self._send_raw(conn, _pack_handshake(_HELLO, self._rank, self._token)),
                                       max(deadline - loop.time(), 0.001))
                data = await asyncio.wait_for(self._recv_raw(conn, HANDSHAKE_BYTES),
                                              max(deadline - loop.time(), 0.001))
                try:
                    their_rank, their_token = _parse_handshake(data, _ACK)
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
                peer, token = _parse_handshake(data, _HELLO)
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
        entry = _Parked(token, conn, self._loop.time())
        entry.expiry = self._loop.call_later(self.connect_timeout, self._expire_parked, peer, entry)
        entries.append(entry)
        for old in same:
            await self._drop_connection(old.conn)
        if self._mesh_changed is not None:
            self._mesh_changed.set()

    def _expire_parked(self, peer: int, entry: "_Parked") -> None:
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
            await asyncio.wait_for(self._send_raw(conn, _pack_handshake(_ACK, self._rank, self._token)),
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
        _LIVE.discard(self)

    async def _break(self, exc: BaseException) -> None:
        """Close after an error: the state of in-flight transfers is unknown."""
        if self._state == "closed":
            return
        self._close_reason = exc
        try:
            await self.aclose()
        except Exception:  # pragma: no cover - closing is best effort here
            logger.debug("error while closing a broken communicator", exc_info=True)

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

    # ------------------------------------------------------------------ failure tracking
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

    # ------------------------------------------------------------------ tags
    def _next_collective(self, tag: Optional[int]) -> tuple[int, int]:
        if tag is None:
            self._coll_seq += 1
            return (0, self._coll_seq)
        _check_tag(tag)
        return (2, int(tag))

    # ------------------------------------------------------------------ messaging (async)
    async def asend(self, peer: int, header: Any, frames: Sequence[Frame], *, tag: int = 0,
                    timeout: Optional[float] = None) -> None:
        self._check_loop()
        self._check_open()
        self._check_peer(peer)
        _check_tag(tag)
        frames = [as_frame(f) for f in frames]
        envelope = encode_envelope(header, frames)
        seq = self._p2p_send_seq[(peer, tag)]
        self._p2p_send_seq[(peer, tag)] = seq + 1
        base = (1, int(tag), seq)
        limit = _check_timeout(timeout, "timeout", self.timeout)
        await self._run_all([(peer, self._send_control(peer, (*base, 1), envelope)),
                             (peer, self._send_frames(peer, (*base, 2), frames))], limit, "send")

    async def arecv(self, peer: int, *, tag: int = 0, timeout: Optional[float] = None) -> Message:
        self._check_loop()
        self._check_open()
        self._check_peer(peer)
        _check_tag(tag)
        seq = self._p2p_recv_seq[(peer, tag)]
        self._p2p_recv_seq[(peer, tag)] = seq + 1
        base = (1, int(tag), seq)
        limit = _check_timeout(timeout, "timeout", self.timeout)
        (payload,) = await self._run_all([(peer, self._recv_control(peer, (*base, 1)))],
                                         limit, "recv (envelope)")
        header, specs = await self._decode_or_break(peer, payload, "recv")
        buffers = [self._allocate(s) for s in specs]
        await self._run_all([(peer, self._recv_frames(peer, (*base, 2), buffers))],
                            limit, "recv (frames)")
        return header, buffers

    async def aall_to_all(self, messages: Sequence[Message], *, tag: Optional[int] = None,
                          allocator: Optional[Allocator] = None, timeout: Optional[float] = None,
                          stats: Optional[dict] = None) -> list[Message]:
        """Send ``messages[p]`` to every rank ``p`` and receive one message from each.

        Parameters
        ----------
        messages : sequence of (header, frames)
            One per rank, this rank's own included (it is returned as a copy).
        tag : int, optional
            Identifies this exchange. Without it, exchanges are numbered in call order, which
            must then be the same on every rank. Concurrent exchanges need distinct tags.
        allocator : callable, optional
            ``allocator([(header, [FrameSpec, ...]) per rank]) -> [[array, ...] per rank]``:
            called once every rank's sizes are known, returns the arrays that each incoming
            frame is written into (views into larger buffers are fine). Default: a fresh array
            per frame.
        timeout : float, optional
            Seconds each phase (sizes, then data) may wait; default ``self.timeout``.
        stats : dict, optional
            ``sizes_s`` (the first phase: it also absorbs the wait for the slowest rank to arrive)
            and ``data_s`` (allocation and the data transfer) are added to it.

        Returns
        -------
        list of (header, frames)
            ``result[p]`` is the message from rank ``p``.
        """
        self._check_loop()
        self._check_open()
        if len(messages) != self._size:
            raise ValueError(f"messages must hold one (header, frames) per rank ({self._size}), got {len(messages)}")
        out = []
        for p, msg in enumerate(messages):
            if not isinstance(msg, (tuple, list)) or len(msg) != 2:
                raise TypeError(f"messages[{p}] must be a (header, frames) pair, got {type(msg).__name__}")
            out.append((msg[0], [as_frame(f) for f in msg[1]]))
        op = self._next_collective(tag)
        limit = _check_timeout(timeout, "timeout", self.timeout)
        loop = asyncio.get_running_loop()
        me = self._rank
        peers = [p for p in range(self._size) if p != me]

        # Phase 1: sizes. Each rank learns the header and frame sizes of every message to it.
        t0 = loop.time()
        envelopes = {p: encode_envelope(out[p][0], out[p][1]) for p in peers}
        jobs: list[tuple[int, Awaitable[Any]]] = []
        for p in peers:
            jobs.append((p, self._send_control(p, (*op, p, 1), envelopes[p])))
            jobs.append((p, self._recv_control(p, (*op, me, 1))))
        results = await self._run_all(jobs, limit, "all_to_all (sizes)")
        incoming: list[tuple[Any, list[FrameSpec]]] = [None] * self._size  # type: ignore[list-item]
        for i, p in enumerate(peers):
            incoming[p] = await self._decode_or_break(p, results[2 * i + 1], "all_to_all (sizes)")
        incoming[me] = (out[me][0], [frame_spec(f) for f in out[me][1]])
        t1 = loop.time()

        # Allocate every destination before any data moves. A failure here leaves the peers
        # waiting for our data: close, so that they learn it at once instead of timing out.
        try:
            if allocator is not None:
                dest = allocator(incoming)
                _check_destinations(dest, incoming)
            else:
                dest = [[self._allocate(s) for s in specs] for _h, specs in incoming]
        except BaseException as exc:
            await self._break(exc)
            raise

        # Phase 2: data, all sends and receives at once; the local share is copied meanwhile.
        jobs = []
        for p in peers:
            jobs.append((p, self._send_frames(p, (*op, p, 2), out[p][1])))
            jobs.append((p, self._recv_frames(p, (*op, me, 2), dest[p])))
        local = asyncio.ensure_future(asyncio.to_thread(_copy_all, dest[me], out[me][1]))
        try:
            await self._run_all(jobs, limit, "all_to_all (data)")
        finally:
            await local
        if stats is not None:
            stats["sizes_s"] = stats.get("sizes_s", 0.0) + (t1 - t0)
            stats["data_s"] = stats.get("data_s", 0.0) + (loop.time() - t1)
        return [(incoming[p][0], dest[p]) for p in range(self._size)]

    def _allocate(self, spec: FrameSpec) -> Frame:
        device = self.device if spec.device == "cuda" else CPU
        return memory.empty(spec.count, np.dtype(spec.dtype), device)

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


def consume_exception(task: "asyncio.Future[Any]") -> None:
    """Done-callback: mark a task's exception as seen (it is reported another way, or moot)."""
    if not task.cancelled():
        task.exception()


def _check_tag(tag: Any) -> None:
    if isinstance(tag, bool) or not isinstance(tag, (int, np.integer)) or not 0 <= int(tag) < 2**62:
        raise ValueError(f"tag must be an int in [0, 2**62), got {tag!r}")


def _check_destinations(dest: Any, incoming: list[tuple[Any, list[FrameSpec]]]) -> None:
    if not isinstance(dest, (list, tuple)) or len(dest) != len(incoming):
        raise CommError(f"the allocator must return one list of arrays per rank ({len(incoming)}), got {dest!r:.80}")
    for p, (bufs, (_h, specs)) in enumerate(zip(dest, incoming)):
        if len(bufs) != len(specs):
            raise CommError(f"the allocator returned {len(bufs)} arrays for rank {p}, which sends {len(specs)} frames")
        for i, (b, s) in enumerate(zip(bufs, specs)):
            if b.nbytes != s.nbytes:
                raise CommError(f"the allocator's array {i} for rank {p} has {b.nbytes} bytes, the frame has {s.nbytes}")


def _copy_all(dest: list[Frame], frames: list[Frame]) -> None:
    for d, f in zip(dest, frames):
        copy_into(d, f)
