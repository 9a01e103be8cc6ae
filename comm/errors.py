"""Typed communication errors.

Every failure of a :class:`~gpuframe.comm.Communicator` operation surfaces as a
:class:`CommError`. Errors that can be pinned on one peer carry its rank (and, when the
communicator was bootstrapped by Dask, the worker address) so that a user sees *which* process
failed, and they are raised within the communicator's timeout instead of hanging.
"""
from __future__ import annotations

from typing import Optional


class CommError(RuntimeError):
    """A communication operation failed.

    Parameters
    ----------
    message : str
    peer : int, optional
        Rank of the peer involved, when one is known.
    address : str, optional
        Address of that peer (its listener, or its Dask worker address).
    """

    def __init__(self, message: str, *, peer: Optional[int] = None, address: Optional[str] = None) -> None:
        self.peer = peer
        self.address = address
        where = ""
        if peer is not None:
            where = f" [peer rank {peer}" + (f" at {address}" if address else "") + "]"
        super().__init__(message + where)

    def __reduce__(self):  # keep the peer when the error is pickled from a Dask worker
        return (_rebuild, (type(self), self._message(), self.peer, self.address))

    def _message(self) -> str:
        text = str(self)
        cut = text.rfind(" [peer rank ")
        return text if cut < 0 or self.peer is None else text[:cut]


def _rebuild(cls, message, peer, address):
    return cls(message, peer=peer, address=address)


class PeerClosedError(CommError):
    """A peer closed its connection, or its process died, before an operation with it finished."""


class CommTimeoutError(CommError, TimeoutError):
    """A peer did not complete its part of an operation within the communicator's timeout."""


class BootstrapError(CommError):
    """The full mesh of connections could not be built (a peer is unreachable or too slow)."""


class ProtocolError(CommError):
    """A peer sent something that breaks the protocol: a malformed, truncated or oversized
    message, a frame dtype outside the allow-list, or frames that do not match their envelope.

    The connection can no longer be trusted: the communicator closes itself at once, so that
    every other rank of the operation fails quickly too."""


class MismatchError(CommError):
    """The ranks' messages disagree in a way that every rank sees from the first (sizes) phase of
    an exchange, such as tables of different schemas: if any two ranks' schemas differ, every
    rank receives at least one schema unlike its own. Every rank raises it before any data is
    posted, so the communicator stays open and usable (unlike after the other errors)."""


class CommClosedError(CommError):
    """The local communicator is closed (by :meth:`close`, or after an earlier error left it
    in an undefined state); build a new one."""
