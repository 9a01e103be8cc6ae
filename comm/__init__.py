"""gpuframe.comm: communicators that move tables between processes.

* :class:`Communicator`: the interface (``rank``, ``size``, ``send``, ``recv``, ``all_to_all``,
  ``close``), with a UCX implementation (:class:`UCXCommunicator`, on ucxx) and a TCP one
  (:class:`TCPCommunicator`, gpuframe's own framing over sockets, TLS on request) for machines
  without ucxx. Nothing received is unpickled; peers authenticate with a random session token
  (see :mod:`gpuframe.comm.communicator`, the protocol every transport shares).
* :mod:`gpuframe.comm.wire`: a Table as a msgpack-able header plus its buffers as frames.
* :func:`exchange_tables`: the all-to-all-v of tables used by the shuffle.

The backend is chosen by :func:`default_backend`: the ``GPUFRAME_COMM`` environment variable
(``ucx`` or ``tcp``) when set, else ``ucx`` when ucxx imports, else ``tcp``.
"""
from __future__ import annotations

import asyncio
import os
from typing import Any, Optional

from .communicator import Communicator
from .errors import (BootstrapError, CommClosedError, CommError, CommTimeoutError, MismatchError, PeerClosedError,
                     ProtocolError)
from .exchange import exchange_tables
from .frames import ALLOWED_FRAME_DTYPES, FrameSpec
from .handshake import new_token
from .limits import default_timeout
from .loop import EventLoopThread
from .tcp import TCPCommunicator
from .ucx import UCXCommunicator, ucx_available
from .wire import pack_table, pack_tables, unpack_table, unpack_tables

BACKENDS = ("ucx", "tcp")
_CLASSES: dict[str, type[Communicator]] = {"ucx": UCXCommunicator, "tcp": TCPCommunicator}


def resolve_backend(backend: Optional[str] = None) -> str:
    """``backend`` checked, or the default: ``$GPUFRAME_COMM``, else ``ucx`` if ucxx imports, else ``tcp``."""
    if backend is None:
        env = os.environ.get("GPUFRAME_COMM", "").strip().lower()
        if env:
            if env not in BACKENDS:
                raise ValueError(f"environment variable GPUFRAME_COMM must be one of {list(BACKENDS)}, got {env!r}")
            backend = env
        else:
            backend = "ucx" if ucx_available() else "tcp"
    if not isinstance(backend, str) or backend.lower() not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)} or None, got {backend!r}")
    backend = backend.lower()
    if backend == "ucx" and not ucx_available():
        from .ucx import UCX_INSTALL_HINT

        raise ImportError(f"the 'ucx' communicator needs ucxx, which does not import here: {UCX_INSTALL_HINT}; "
                          "or use backend='tcp' (GPUFRAME_COMM=tcp)")
    return backend


def default_backend() -> str:
    """The backend :func:`create_communicator` uses when none is named."""
    return resolve_backend(None)


def create_communicator(backend: Optional[str] = None, **kwargs: Any) -> Communicator:
    """A new, unstarted communicator of ``backend`` (see :func:`resolve_backend`).

    ``kwargs`` go to the :class:`Communicator` constructor (``loop``, ``timeout``,
    ``connect_timeout``, ``handshake_timeout``, ``max_control_bytes``, ``device``; ``security``
    for TLS on the TCP backend).
    """
    return _CLASSES[resolve_backend(backend)](**kwargs)


def local_mesh(size: int, backend: Optional[str] = None, *, host: str = "127.0.0.1",
               **kwargs: Any) -> list[Communicator]:
    """``size`` connected communicators in this process (rank ``i`` is ``result[i]``).

    For tests, examples, and programs that drive one rank per thread. They share the
    process's communicator loop thread and a fresh random session token.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    cls = _CLASSES[resolve_backend(backend)]
    loop = EventLoopThread.shared().loop

    async def build() -> list[Communicator]:
        comms = [cls(loop=loop, **kwargs) for _ in range(size)]
        token = new_token()
        try:
            addresses = [await c.astart(host) for c in comms]
            await asyncio.gather(*(c.aconnect(r, addresses, token=token) for r, c in enumerate(comms)))
        except BaseException:
            await asyncio.gather(*(c.aclose() for c in comms), return_exceptions=True)
            raise
        return comms

    return asyncio.run_coroutine_threadsafe(build(), loop).result()


__all__ = [
    "ALLOWED_FRAME_DTYPES", "BACKENDS", "BootstrapError", "CommClosedError", "CommError", "CommTimeoutError",
    "Communicator", "EventLoopThread", "FrameSpec", "MismatchError", "PeerClosedError", "ProtocolError", "TCPCommunicator",
    "UCXCommunicator", "create_communicator", "default_backend", "default_timeout", "exchange_tables",
    "local_mesh", "new_token",
    "pack_table", "pack_tables", "resolve_backend", "unpack_table", "unpack_tables",
]
