"""Session tokens, the secrets in addresses, and the fixed-size hello every connection starts with.

A connection starts with a hello (magic, protocol version, kind, rank, 32-byte session token) of
exactly :data:`HANDSHAKE_BYTES`; the listener answers an admitted peer with an acknowledgement of
the same shape carrying the token, so the dialer checks the listener too. The token is random per
session: the caller's ``token`` (:func:`new_token`), or one derived from the random secrets that
:meth:`Communicator.start` puts in every address (``tcp://host:port#<secret>``).
:mod:`gpuframe.comm.mesh` runs the exchange.
"""
from __future__ import annotations

import hashlib
import secrets
import struct
from typing import Any, Optional, Sequence

import numpy as np

TOKEN_BYTES = 32

PROTOCOL_VERSION = 2
_HANDSHAKE = struct.Struct("<8sHHI32s")  # magic, protocol version, kind, rank, token
_HELLO_MAGIC = b"gpframe\x02"
HELLO, ACK = 1, 2  # the two kinds: a dialer's hello, the listener's acknowledgement
HANDSHAKE_BYTES = _HANDSHAKE.size


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


def token_from_addresses(addresses: Sequence[str]) -> bytes:
    """The session token when ``connect()`` is given none: a digest of the secrets in every address."""
    secrets_ = [split_address(a)[1] for a in addresses]
    return hashlib.blake2b("\n".join(secrets_).encode(), digest_size=TOKEN_BYTES,
                           person=b"gpuframe-addrs").digest()


def pack_handshake(kind: int, rank: int, token: bytes) -> bytes:
    """The :data:`HANDSHAKE_BYTES` of a hello (``kind=HELLO``) or acknowledgement (``kind=ACK``)."""
    return _HANDSHAKE.pack(_HELLO_MAGIC, PROTOCOL_VERSION, kind, rank, token)


def parse_handshake(data: bytes, kind: int) -> tuple[int, bytes]:
    """``(rank, token)`` of a hello or acknowledgement; ValueError saying what is wrong."""
    what = "hello" if kind == HELLO else "acknowledgement"
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

